"""The paper's headline (Table 1, WRN-16-1 student vs AT from the WRN-16-2) with our runs so far, and README.md's
results rows kept up to date from it."""

from __future__ import annotations

import math
import statistics

from ..training.store import RunStore
from .grids import FIGURE_6_ROW, table1_row
from .settings import Settings
from .suite import run_id_for
from .summary import current_error, run_progress


HEADLINE_COLUMNS = ("student", "AT")  # Table 1, WRN-16-1 / WRN-16-2: the paper's main claim


def headline(settings: Settings) -> list[dict]:
    """The WRN-16-1 student and AT runs (first seed): status, epochs, error (final, or now), the paper's value."""
    row, store = table1_row(FIGURE_6_ROW), RunStore(settings.store_root)
    out = []
    for column in HEADLINE_COLUMNS:
        cell = row[column]
        run_id = run_id_for(cell, settings, settings.seeds[0])
        status, epochs = run_progress(store, run_id)
        if status == "finished":
            error, of = store.read_record(run_id)["test_error"], epochs
        elif status == "in progress":
            error, of = current_error(store, run_id, epochs)
        else:
            error, of = math.nan, None
        recent = store.read_metrics(run_id)[:epochs][-5:] if status == "in progress" else []
        left = (of - epochs) * statistics.median(r["seconds"] for r in recent) if recent and of else None
        out.append({"column": column, "run_id": run_id, "status": status, "epochs": epochs, "of": of,
                    "error": error, "paper": cell.paper, "seconds_left": left})
    return out


def headline_markdown(settings: Settings) -> str:
    """The paper's main claim (AT beats the student, Table 1's WRN-16-1 / WRN-16-2 row) with our runs so far."""
    runs = headline(settings)
    lines = ["| WRN-16-1, teacher WRN-16-2 | ours (test error %) | paper | status |", "|---|---|---|---|"]
    for r in runs:
        if r["status"] == "finished":
            ours, state = f"{r['error']:.2f}", "finished (200 epochs)"
        elif r["status"] == "in progress":
            ours = "-" if math.isnan(r["error"]) else f"{r['error']:.2f} now"
            left = "" if r["seconds_left"] is None else f", about {r['seconds_left'] / 3600:.0f} h left at its rate"
            state = f"training: epoch {r['epochs']}/{r['of']}{left}"
        else:
            ours, state = "-", "not run yet"
        lines.append(f"| {r['column']} | {ours} | {r['paper']:.2f} | {state} |")
    student, at = runs
    paper_gain = student["paper"] - at["paper"]
    if student["status"] == at["status"] == "finished":
        gain = student["error"] - at["error"]
        verdict = (f"**AT beats the student by {gain:.2f} points** (paper: {paper_gain:.2f})" if gain > 0 else
                   f"**AT does not beat the student here** (AT minus student: {-gain:+.2f} points; paper: AT better by "
                   f"{paper_gain:.2f})")
        lines += ["", verdict + ". One seed each: a single paired comparison, not a distribution over seeds (the "
                  "paper reports the median of 5 runs); a difference of a few tenths of a point is within seed "
                  "noise."]
    else:
        lines += ["", f"Not answered yet: the paper's AT gain is {paper_gain:.2f} points; the verdict comes when both "
                  "runs have finished their 200 epochs. Errors marked *now* are the last finished epoch's, before "
                  "the learning-rate drops at epochs 60, 120 and 160: not comparable to the paper's yet."]
    return "\n".join(lines) + "\n"


README_PROFILE = "one-seed"  # the profile whose headline pair README.md's results table shows
README_ROWS = {"student": "| WRN-16-1 student |", "AT": "| WRN-16-1 with AT from the WRN-16-2 |"}


def readme_value(run: dict) -> str:
    """A headline run (``headline``) as README's "ours" column: the final error, or the epoch reached and the error
    now."""
    if run["status"] == "finished":
        return f"{run['error']:.2f}"
    if run["status"] == "in progress":
        now = "" if math.isnan(run["error"]) else f" (test error now {run['error']:.2f}%)"
        return f"training: epoch {run['epochs']}/{run['of']}{now}"
    return "not trained yet"


def readme_with_headline(text: str, settings: Settings) -> str:
    """README.md's ``text`` with the "ours" column of its two headline rows (``README_ROWS``) set from the store."""
    runs = {r["column"]: r for r in headline(settings)}
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        for column, prefix in README_ROWS.items():
            if line.startswith(prefix):
                cells = line.rstrip("\n").split("|")  # ["", " cell ", " ours ", " paper ", ""]
                cells[2] = f" {readme_value(runs[column])} "
                lines[i] = "|".join(cells) + ("\n" if line.endswith("\n") else "")
    return "".join(lines)
