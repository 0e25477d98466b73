"""Our numbers cell by cell beside the paper's.

- ``collect`` gathers every cell's run records (one row per cell and seed) from the results store.
- ``summarize`` reduces seeds as the paper does: the median, with n and the spread (min..max), beside the paper's
  value and the difference (ours - paper).
- ``markdown_table`` shows a summary as a Markdown table.
"""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from ..training.store import RunStore, StoreError
from .grids import Cell
from .settings import Settings
from .suite import cell_runs

SUMMARY_COLUMNS = ["row", "column", "ours_median", "n", "ours_min", "ours_max", "paper", "ours_minus_paper",
                   "status"]


def run_progress(store: RunStore, run_id: str) -> tuple[str, int]:
    """("finished" | "in progress" | "not run yet", epochs done)."""
    from .campaign import progress_of
    status, epochs = progress_of(store, run_id)
    return ("not run yet" if status == "not started" else status), epochs


def collect(cells: Iterable[Cell], settings: Settings) -> pd.DataFrame:
    """One row per (cell, seed): the last-epoch test error of its run (NaN where the run has not finished), its
    status and epochs done."""
    store = RunStore(settings.store_root)
    rows = []
    for run in cell_runs(cells, settings):
        cell, run_id = run.cell, run.run_id
        status, epochs = run_progress(store, run_id)
        record = store.read_record(run_id) if status == "finished" else None
        value = math.nan if record is None else record.get(cell.metric, math.nan)
        now, of = current_error(store, run_id, epochs) if status == "in progress" else (math.nan, None)
        rows.append({"table": cell.table, "row": cell.row, "column": cell.column, "paper": cell.paper,
                     "seed": run.seed, "run_id": run_id, "test_error": value, "status": status,
                     "epochs": epochs, "of": of, "now": now})
    return pd.DataFrame(rows)


def current_error(store: RunStore, run_id: str, epochs: int) -> tuple[float, int | None]:
    """An unfinished run's test error at its last checkpointed epoch (NaN if unknown) and its length in epochs."""
    rows = store.read_metrics(run_id)[:epochs]
    try:
        of = int(store.read_config(run_id)["epochs"])
    except (StoreError, KeyError, TypeError, ValueError):
        of = None
    return (float(rows[-1]["test_error"]) if rows and rows[-1]["epoch"] == epochs else math.nan), of


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds with n, min and max, the paper's value and ours - paper, in the cells' order; ``status``
    says what is missing ("" when every seed is finished)."""
    out = []
    for (row, column), group in runs.groupby(["row", "column"], sort=False):
        errors = group["test_error"].dropna()
        median = float(errors.median()) if len(errors) else math.nan
        paper = group["paper"].iloc[0]
        paper = math.nan if paper is None else float(paper)
        out.append({"row": row, "column": column, "ours_median": median, "n": int(len(errors)),
                    "ours_min": float(errors.min()) if len(errors) else math.nan,
                    "ours_max": float(errors.max()) if len(errors) else math.nan,
                    "paper": paper, "ours_minus_paper": median - paper,
                    "status": _cell_status(group) if "status" in group else ""})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def _cell_status(group: pd.DataFrame) -> str:
    if (group["status"] == "finished").all():
        return ""
    running = group[group["status"] == "in progress"]
    parts = []
    if len(running):
        parts.append("in progress (" + ", ".join(_epoch_now(r) for r in running.to_dict("records")) + ")")
    waiting = int((group["status"] == "not run yet").sum())
    if waiting:
        parts.append("not run yet" if waiting == len(group) else f"{waiting} of {len(group)} seeds not run yet")
    return "; ".join(parts)


def _epoch_now(run: dict) -> str:
    """``epoch 57/200, test error now 14.20%`` (what is known of an unfinished run)."""
    of = run.get("of")
    text = f"epoch {run['epochs']}" + (f"/{int(of)}" if of is not None and not pd.isna(of) else "")
    now = run.get("now")
    return text + (f", test error now {now:.2f}%" if now is not None and not pd.isna(now) else "")


def fmt_number(value, digits=2) -> str:
    """``value`` with ``digits`` decimals; "-" for None or NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(summary: pd.DataFrame, title: str, note: str = "") -> str:
    lines = [f"### {title}", ""]
    if note:
        lines += [f"*{note}*", ""]
    lines += ["| row | column | ours (median) | n | spread (min..max) | paper | ours - paper |",
              "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples(index=False):
        spread = f"{fmt_number(r.ours_min)}..{fmt_number(r.ours_max)}" if r.n > 1 else "-"
        diff = "-" if math.isnan(r.ours_minus_paper) else f"{r.ours_minus_paper:+.2f}"
        status = getattr(r, "status", "")
        ours = fmt_number(r.ours_median) if r.n else f"*{status}*"
        if r.n and status:
            ours += f" ({status})"
        lines.append(f"| {r.row} | {r.column} | {ours} | {r.n} | {spread} | {fmt_number(r.paper)} | {diff} |")
    return "\n".join(lines) + "\n"

