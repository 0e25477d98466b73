"""The CPU demo (profile ``cpu-demo``): attention transfer shown on a laptop, in a low-data setting of its own.

NOT the paper's protocol. A WRN-16-1 student learns from the committed WRN-16-2 teacher of the ``one-seed`` profile
(200 epochs on full CIFAR-10) while itself training on the embedded class-balanced CIFAR-10 sample (2,500 training
images, 1,000 test images) for a few epochs; student alone, AT, KD and AT+KD, several seeds. The profile file says
why its sizes are what they are.

- ``cells``: the four runs as table cells (``schedule.run_cells`` trains them, resumes them, skips finished ones).
- ``per_seed`` / ``paired``: the test error of every run by seed, and each method's paired difference to the
  student of the same seed (same initialisation seed, same data order), with how many seeds it helped in.
- ``curves_figure`` (test error vs epoch, mean and range over seeds), ``maps_figure`` (Figure 6 style: student, AT
  student and teacher on the same test images), ``write_report`` (``results/cpu-demo/REPORT.md``).
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path

import pandas as pd

from ..training.store import RunStore
from .grids import TEACHERS, Cell, _cell
from .settings import Settings
from .suite import run_id_for, teacher_config

logger = logging.getLogger(__name__)

TEACHER = "wrn-16-2"
STUDENT = "wrn-16-1"
ROW = "WRN-16-1 / WRN-16-2"
COLUMNS = [("student", "student"), ("AT", "at"), ("KD", "kd"), ("AT+KD", "at+kd")]  # (column, method)
MAP_SEED_INDEX = 0  # the maps show the runs of the profile's first seed


def cells() -> list[Cell]:
    """Student, AT, KD and AT+KD (the methods' default options: beta 1000, p 2, all groups; T 4, alpha 0.9)."""
    return [_cell("cpu-demo", ROW, column, None, STUDENT, method, teacher=None if method == "student" else TEACHER)
            for column, method in COLUMNS]


def check(settings: Settings) -> None:
    """ValueError (one line) unless the settings borrow a finished teacher (``teachers_from``): the demo never
    trains its teacher. ``MissingTeacherError`` (with the command that trains it) if it is not there."""
    from .suite import check_borrowed_teachers
    if settings.teachers_from is None:
        raise ValueError("the CPU demo learns from another profile's finished teacher: set teachers_from (the "
                         "cpu-demo profile uses one-seed)")
    check_borrowed_teachers(cells(), settings)


def describe(settings: Settings) -> str:
    """The first line of everything the demo shows: what it is and how it departs from the paper's protocol."""
    check(settings)
    theirs = teacher_config(TEACHER, settings.teacher_settings())
    teacher_data = "full CIFAR-10" if theirs.dataset == "cifar10" and not theirs.train_subset else \
        f"{theirs.train_subset or 2500:,} images of {theirs.dataset}"
    return (f"Low-data CPU variant, not the paper's protocol: a {STUDENT.upper()} student trained on "
            f"{_images(settings)} for {settings.epochs} epoch{'s' * (settings.epochs != 1)} (learning rate schedule "
            f"scaled{_batch(settings)}), "
            f"learning from the `{settings.teachers_from}` profile's {TEACHER.upper()} teacher ({theirs.epochs} "
            f"epochs on {teacher_data}); {len(settings.seeds)} seeds; test error on {_test_images(settings)}. The "
            f"paper trains the student 200 epochs on all 50,000 images (Table 1: 8.77% alone, 7.93% with AT).")


def _batch(settings: Settings) -> str:
    return f", batch {settings.batch_size}" if settings.batch_size else ""


def _images(settings: Settings) -> str:
    if settings.dataset == "sample":
        if settings.train_subset:
            return f"the first {settings.train_subset:,} images of the embedded CIFAR-10 sample"
        return "2,500 CIFAR-10 training images (the embedded class-balanced sample, 250 per class)"
    return f"the first {settings.train_subset:,} CIFAR-10 training images" if settings.train_subset else \
        "all CIFAR-10 training images"


def _test_images(settings: Settings) -> str:
    n = settings.test_subset or (1000 if settings.dataset == "sample" else 10000)
    return f"{n:,} CIFAR-10 test images"


# -- training ------------------------------------------------------------------------------------------------------
# Channels-last (NHWC) activations: the same arithmetic in another memory layout (tests/test_cohorts.py),
# measured 1.34x faster for a WRN-16-1 training step and 1.17x for one with the WRN-16-2 teacher on 2 CPU cores (fp32,
# batch 128). engine.train keeps NCHW on CPUs by default; the demo asks for NHWC.
CHANNELS_LAST = True


def train(settings: Settings, log=logger.info) -> list[dict | None]:
    """Train (or load, or resume) the demo's runs seed by seed (student, AT, KD, AT+KD of one seed before the next
    seed), so an interrupted demo has whole seeds first. Where ``settings.trains_missing()`` is false only the
    finished runs are returned (None for the others). Records seed by seed, each seed in ``COLUMNS`` order."""
    from ..training.engine import train as train_run
    from .schedule import _stored_records
    from .suite import config_for
    check(settings)
    demo_cells = cells()
    if not settings.trains_missing():
        stored = _stored_records(demo_cells, settings, log)  # cell by cell; returned seed by seed
        n = len(settings.seeds)
        return [stored[c * n + s] for s in range(n) for c in range(len(demo_cells))]
    records = []
    for seed in settings.seeds:
        for cell in demo_cells:
            record = train_run(config_for(cell, settings, seed), results=settings.store_root,
                               progress=settings.progress, log=None, channels_last=CHANNELS_LAST)
            log(f"seed {seed} {cell.column:8s} {record['run_id']}: test error {record['test_error']:.2f}% "
                f"({record.get('train_seconds', 0):.0f} s)")
            records.append(record)
    return records


# -- numbers -------------------------------------------------------------------------------------------------------
def per_seed(settings: Settings) -> pd.DataFrame:
    """Test error (%) of every run: one row per seed, one column per method (NaN where not finished)."""
    store = RunStore(settings.store_root)
    rows = []
    for seed in settings.seeds:
        row = {"seed": seed}
        for cell in cells():
            run_id = run_id_for(cell, settings, seed)
            record = store.read_record(run_id) if store.status(run_id) == "finished" else None
            row[cell.column] = math.nan if record is None else record["test_error"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["seed"] + [c for c, _ in COLUMNS])


def finished(settings: Settings) -> int:
    """How many of the demo's runs are finished in the store."""
    store = RunStore(settings.store_root)
    return sum(store.status(run_id_for(c, settings, seed)) == "finished" for c in cells() for seed in settings.seeds)


def paired(errors: pd.DataFrame) -> pd.DataFrame:
    """Per method: median error over seeds, and its paired difference to the student of the same seed (method -
    student, negative = better): per seed, median, min, max, and in how many seeds it was lower. The sign-test
    p-value is the chance that every one of n seeds comes out better if the method changed nothing (0.5^n, one
    sided), given only where it did help in every seed."""
    rows = []
    for column, _ in COLUMNS:
        done = errors[column].dropna().tolist()
        if column == "student":
            rows.append({"method": column, "median_error": _median(done), "n": len(done), "diffs": [],
                         "median_diff": math.nan, "min_diff": math.nan, "max_diff": math.nan, "helped": None,
                         "sign_p": math.nan})
            continue
        both = errors[["student", column]].dropna()
        diffs = (both[column] - both["student"]).tolist()
        n, helped = len(diffs), sum(d < 0 for d in diffs)
        rows.append({"method": column, "median_error": _median(done), "n": n, "diffs": diffs,
                     "median_diff": _median(diffs), "min_diff": min(diffs, default=math.nan),
                     "max_diff": max(diffs, default=math.nan), "helped": helped,
                     "sign_p": 0.5 ** n if n and helped == n else math.nan})
    return pd.DataFrame(rows)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def verdict(row: pd.Series) -> str:
    """One plain sentence on whether the method beat the student."""
    n, helped = int(row["n"]), int(row["helped"])
    if n == 0:
        return f"{row['method']}: not measured yet."
    gain = f"median paired difference {row['median_diff']:+.2f} points (range {row['min_diff']:+.2f} .. " \
           f"{row['max_diff']:+.2f})"
    if helped == n:
        return (f"{row['method']} helped in every seed ({n} of {n}): {gain}; sign test p = {row['sign_p']:.3g}"
                + (" (one seed: no statistic)." if n == 1 else "."))
    if helped == 0:
        return f"{row['method']} did not help in any seed (0 of {n}): {gain}."
    return f"{row['method']} helped in {helped} of {n} seeds only: {gain}."


def table_markdown(errors: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Per-seed errors, the median, the paired differences, and one verdict line per method."""
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"  # noqa: E731
    names = [c for c, _ in COLUMNS]
    lines = ["| seed | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for _, r in errors.iterrows():
        lines.append(f"| {int(r['seed'])} | " + " | ".join(fmt(r[c]) for c in names) + " |")
    lines.append("| **median** | " + " | ".join(f"**{fmt(v)}**" for v in summary["median_error"]) + " |")
    lines.append("| paired difference to the student, median (min .. max) | - | " + " | ".join(
        f"{r['median_diff']:+.2f} ({r['min_diff']:+.2f} .. {r['max_diff']:+.2f})" if r["n"] else "-"
        for _, r in summary.iloc[1:].iterrows()) + " |")
    lines.append("| seeds where it beat the student | - | " + " | ".join(
        f"{int(r['helped'])} of {int(r['n'])}" for _, r in summary.iloc[1:].iterrows()) + " |")
    lines += [""] + [f"- {verdict(r)}" for _, r in summary.iloc[1:].iterrows()]
    n = len(errors)
    lines += ["", f"With {n} seed{'s' * (n != 1)} the sign test's smallest possible p is 0.5^{n} = {0.5 ** n:.3g}: "
              f"a method better in every seed is a consistent paired effect at this scale, not a proof."]
    return "\n".join(lines) + "\n"


def write_table(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """``tables/cpu-demo.csv`` (per seed) and ``tables/cpu-demo.md``; returns (per seed, paired summary, md path)."""
    errors = per_seed(settings)
    summary = paired(errors)
    out = settings.root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    errors.to_csv(out / "cpu-demo.csv", index=False, float_format="%.2f")
    md = out / "cpu-demo.md"
    md.write_text("Test error (%) by seed; differences in points (method - student; negative: the method beat "
                  "the student of the same seed).\n\n" + table_markdown(errors, summary))
    return errors, summary, md


# -- figures -------------------------------------------------------------------------------------------------------
def curves(settings: Settings) -> dict[str, list[list[dict]]]:
    """Per method, the per-epoch metrics of each seed's run that has any."""
    store = RunStore(settings.store_root)
    found = {}
    for cell in cells():
        runs = [store.read_metrics(run_id_for(cell, settings, seed)) for seed in settings.seeds]
        found[cell.column] = [rows for rows in runs if rows]
    return found


def curves_figure(settings: Settings) -> Path | None:
    """Test error vs epoch per method: the mean over seeds (line) and their range (band); None before any epoch."""
    from .report import _save, plt
    found = {name: runs for name, runs in curves(settings).items() if runs}
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, (name, runs) in enumerate(found.items()):
        epochs = min(len(r) for r in runs)  # an unfinished seed shortens its method's curve
        values = [[r[e]["test_error"] for r in runs] for e in range(epochs)]
        x = [runs[0][e]["epoch"] for e in range(epochs)]
        ax.plot(x, [statistics.fmean(v) for v in values], color=f"C{i}", linewidth=2,
                label=f"{name} (mean of {len(runs)} seed{'s' * (len(runs) != 1)})")
        ax.fill_between(x, [min(v) for v in values], [max(v) for v in values], color=f"C{i}", alpha=0.18)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{ROW}, low-data CPU variant: test error, mean and range over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, settings.root / "figures" / "cpu-demo_test_error.png")


def teacher_model(settings: Settings):
    """The borrowed teacher (eval mode, CPU)."""
    from ..training.engine import model_from_state
    theirs = settings.teacher_settings()
    store = RunStore(theirs.store_root)
    return model_from_state(TEACHERS[TEACHER][0], store.load_weights(teacher_config(TEACHER, theirs).run_id()))


def maps_figure(settings: Settings, count: int = 5) -> Path | None:
    """Figure 6 style: top-level attention maps (F_sum^2) of the student, the AT student (first seed) and the
    teacher on the same test images of the embedded sample; None until the student and AT runs are finished."""
    from ..data import normalize
    from .report import example_images, figure_attention_comparison, load_trained
    seed = settings.seeds[MAP_SEED_INDEX]
    store = RunStore(settings.store_root)
    by_column = {c.column: c for c in cells()}
    ids = {name: run_id_for(by_column[column], settings, seed) for name, column in
           (("student", "student"), ("AT student", "AT"))}
    if any(store.status(i) != "finished" for i in ids.values()):
        return None
    models = {f"{name} (seed {seed})": load_trained(run_id, settings) for name, run_id in ids.items()}
    models["teacher"] = teacher_model(settings)
    images = example_images(count)
    return figure_attention_comparison(models, images.images, normalize(images.images),
                                       settings.root / "figures" / "cpu-demo_attention_maps.png")


def _this_call(seconds: float | None, trained_now: int | None, of: int) -> str:
    """What the notebook call that wrote the report did. Its duration only when it trained something, so that a
    report rebuilt from stored runs is the same file every time."""
    if trained_now == 0:
        return f" This notebook trained none of the {of} runs (all were stored)."
    if seconds is None:
        return ""
    trained = f" and trained {trained_now} of the {of} runs" if trained_now is not None else ""
    return f" This notebook ran in {_duration(seconds)}{trained}."


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} minutes"


# -- the report ----------------------------------------------------------------------------------------------------
def write_report(settings: Settings, table_md: Path, figures: dict[str, Path | None],
                 seconds: float | None = None, trained_now: int | None = None) -> Path:
    """``REPORT.md``: what this is (first line), the table with its verdicts, where the runs were trained, figures."""
    from .report import provenance_markdown, provenance_rows
    root = settings.root
    lines = [f"**{describe(settings)}**", "", f"# atlib CPU demo: attention transfer with little data "
             f"(profile `{settings.profile}`)", ""]
    lines += ["Each seed trains the four runs from the same initialisation seed and the same order of batches, so "
              "each method is compared with the student of its own seed (a paired difference).", ""]
    lines += [table_md.read_text().strip(), "", f"Data: [cpu-demo.csv]({table_md.with_suffix('.csv').relative_to(root)})",
              ""]
    trained = [r for r in provenance_rows(cells(), settings) if r["seconds"] is not None]
    if trained:
        lines += [f"Training these {len(trained)} runs took {sum(r['seconds'] for r in trained) / 60:.1f} minutes "
                  f"in all (their records' wall time, evaluation included)."
                  + _this_call(seconds, trained_now, len(trained)), ""]
    lines += ["## Where each run was trained", "", provenance_markdown(provenance_rows(cells(), settings)), ""]
    lines += ["## Figures", ""]
    for caption, png in figures.items():
        if png is None:
            lines += [f"### {caption}", "", "*Not built yet: its runs are not trained.*", ""]
        else:
            lines += [f"### {caption}", "", f"![{caption}]({Path(png).relative_to(root)})", ""]
    path = root / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def teacher_record(settings: Settings) -> dict:
    """The borrowed teacher's record (its run id, test error on the full CIFAR-10 test set, provenance)."""
    theirs = settings.teacher_settings()
    return RunStore(theirs.store_root).read_record(teacher_config(TEACHER, theirs).run_id())


def teacher_maps_figure(settings: Settings, count: int = 4) -> Path:
    """Figure 4 style: the teacher's attention maps (F_sum, F_sum^2, F_sum^4, F_max^2) at each of its groups."""
    from .report import example_images, figure_attention_functions
    return figure_attention_functions(teacher_model(settings), example_images(count),
                                      settings.root / "figures" / "cpu-demo_teacher_attention.png", groups=(0, 1, 2))
