"""The demo's numbers: the final test error of every run by seed, each method's paired differences to the
student of the same seed with their t interval, sign test and verdict (``atlib.paper.stats``), and
``tables/cpu-demo.*``."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd

from . import stats
from .demo_final_test import final_result, final_test_words, test_set_images
from .demo_runs import COLUMNS, SAMPLE_TEST_IMAGES, cells, seeds_of
from .settings import Settings
from .suite import run_id_for


def per_seed(settings: Settings) -> pd.DataFrame:
    """Final test error (%) of every run on the test set ``final_test`` names: one row per seed, one column per
    method (NaN where not trained at that seed, or not finished)."""
    rows = []
    for seed in settings.seeds:
        row = {"seed": seed}
        for cell in cells():
            found = final_result(settings, run_id_for(cell, settings, seed)) \
                if seed in seeds_of(settings, cell.column) else None
            row[cell.column] = math.nan if found is None else found["test_error"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["seed"] + [c for c, _ in COLUMNS])


LEVEL = 0.95  # the confidence level of the intervals


def paired(errors: pd.DataFrame) -> pd.DataFrame:
    """Per method: median error over seeds, and its paired differences to the student of the same seed (method -
    student, in points; negative = better): per seed, median, min, max, mean, the 95% Student-t interval of the mean
    (n >= 2), in how many seeds it was lower / higher, the exact two-sided sign test, and the verdict from the
    interval (``stats.interval_verdict``; "cannot tell" with fewer than 2 seeds)."""
    rows = []
    for column, _ in COLUMNS:
        done = errors[column].dropna().tolist()
        row = {"method": column, "median_error": _median(done), "n": len(done), "diffs": [], "seeds": [],
               "median_diff": math.nan, "min_diff": math.nan, "max_diff": math.nan, "mean_diff": math.nan,
               "sd_diff": math.nan, "t": math.nan, "low": math.nan, "high": math.nan, "helped": None, "worse": None,
               "sign_p": math.nan, "sign_min_p": math.nan, "verdict": None}
        if column != "student":
            both = errors[["seed", "student", column]].dropna()
            diffs = [round(d, 10) for d in (both[column] - both["student"]).tolist()]  # (errors have 2 decimals)
            row.update(n=len(diffs), diffs=diffs, seeds=[int(s) for s in both["seed"]], verdict=stats.CANNOT_TELL)
            if diffs:
                sign = stats.sign_test(diffs)
                row.update(median_diff=_median(diffs), min_diff=min(diffs), max_diff=max(diffs),
                           mean_diff=statistics.fmean(diffs), helped=sign.below, worse=sign.above, sign_p=sign.p,
                           sign_min_p=sign.smallest_p)
            if len(diffs) >= 2:
                ci = stats.t_interval(diffs, LEVEL)
                row.update(sd_diff=ci.sd, t=ci.t, low=ci.low, high=ci.high,
                           verdict=stats.interval_verdict(ci.low, ci.high))
        rows.append(row)
    return pd.DataFrame(rows)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _p(p: float) -> str:
    return f"{p:.3g}"


def verdict(row: pd.Series) -> str:
    """Plain sentences on whether the method beat the student, following from the interval."""
    n, name = int(row["n"]), row["method"]
    if n == 0:
        return f"{name}: not measured yet."
    diffs = ", ".join(f"{d:+.2f}" for d in row["diffs"])
    lower = f"lower than the student's in {int(row['helped'])} of {n} seed{'s' * (n != 1)}"
    if n < 2:
        return (f"{name}: cannot tell at this scale: one seed ({diffs} points) gives no interval.")
    interval = f"{LEVEL:.0%} interval of the mean difference {row['low']:+.2f} .. {row['high']:+.2f} points"
    sign = f"sign test p = {_p(row['sign_p'])}"
    if row["verdict"] == stats.HELPED:
        head = f"{name} helped: its error was lower by {-row['mean_diff']:.2f} points on average, and the whole " \
               f"{interval} lies below 0"
    elif row["verdict"] == stats.HURT:
        head = f"{name} did not help: its error was higher by {row['mean_diff']:.2f} points on average, and the " \
               f"whole {interval} lies above 0"
    else:
        head = f"{name}: cannot tell at this scale: the {interval} includes 0 (mean {row['mean_diff']:+.2f})"
    return f"{head}; {lower} ({diffs}), {sign}."


def table_markdown(errors: pd.DataFrame, summary: pd.DataFrame, test_images: int | None = None) -> str:
    """Per-seed errors and their median; per method the paired differences, their median, mean and interval, the
    sign test and the verdict; the binomial standard error of one run's error on ``test_images`` images."""
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"  # noqa: E731
    names = [c for c, _ in COLUMNS]
    lines = ["| seed | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for _, r in errors.iterrows():
        lines.append(f"| {int(r['seed'])} | " + " | ".join(fmt(r[c]) for c in names) + " |")
    lines.append("| **median** | " + " | ".join(f"**{fmt(v)}**" for v in summary["median_error"]) + " |")
    lines += ["", "Paired differences to the student of the same seed (method - student, points; negative: the "
              "method's error was lower):", "",
              f"| method | seeds | differences by seed | median | mean | {LEVEL:.0%} t interval of the mean | "
              f"lower / higher | sign test p (two-sided) | verdict |", "|---|---:|---|---:|---:|---|---|---:|---|"]
    for _, r in summary.iloc[1:].iterrows():
        if not r["n"]:
            lines.append(f"| {r['method']} | 0 | - | - | - | - | - | - | not measured yet |")
            continue
        interval = "-" if math.isnan(r["low"]) else f"{r['low']:+.2f} .. {r['high']:+.2f}"
        lines.append(f"| {r['method']} | {int(r['n'])} | " + ", ".join(f"{d:+.2f}" for d in r["diffs"]) +
                     f" | {r['median_diff']:+.2f} | {r['mean_diff']:+.2f} | {interval} | {int(r['helped'])} / "
                     f"{int(r['worse'])} | {_p(r['sign_p'])} | {r['verdict']} |")
    lines += [""] + [f"- {verdict(r)}" for _, r in summary.iloc[1:].iterrows()]
    notes = [f"The interval is the Student-t {LEVEL:.0%} confidence interval of the mean paired difference, mean +- "
             f"t(0.975, n-1) * sd / sqrt(n) over the n seeds (sd with n - 1; t = " +
             ", ".join(sorted({f'{r["t"]:.3f} for n = {int(r["n"])}' for _, r in summary.iloc[1:].iterrows()
                               if not math.isnan(r["t"])})) +
             "); the verdict follows from it alone: *helped* if it lies wholly below 0, *did not help* if wholly "
             "above 0, *cannot tell at this scale* if it includes 0. The sign test is exact (binomial, ties "
             "dropped) and two-sided; with n seeds its smallest possible p is 2 * 0.5^n (0.0625 for 5, 0.25 for 3)."]
    student = summary.iloc[0]["median_error"]
    if test_images and not math.isnan(student):
        se = stats.binomial_se(student, test_images)
        notes.append(f"Test-set noise: one run's error of {student:.2f}% (the median student) measured on "
                     f"{test_images:,} test images has a binomial standard error of sqrt(p(1-p)/n) = {se:.2f} points"
                     + ("" if test_images == SAMPLE_TEST_IMAGES else
                        f" (on the sample's {SAMPLE_TEST_IMAGES:,} it would be "
                        f"{stats.binomial_se(student, SAMPLE_TEST_IMAGES):.2f})") +
                     "; the seed-to-seed spread of training adds to it, and the interval accounts for both.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def write_table(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """``tables/cpu-demo.csv`` (per seed) and ``tables/cpu-demo.md``; returns (per seed, paired summary, md path)."""
    errors = per_seed(settings)
    summary = paired(errors)
    out = settings.root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    errors.to_csv(out / "cpu-demo.csv", index=False, float_format="%.2f")
    md = out / "cpu-demo.md"
    md.write_text(f"Final test error (%) by seed on {final_test_words(settings)}.\n\n" +
                  table_markdown(errors, summary, test_set_images(settings)))
    return errors, summary, md
