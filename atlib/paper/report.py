"""Tables next to the paper's numbers, with the command for every missing run, and the Markdown report that links
them.

- ``write_table`` writes ``tables/<name>.csv`` and ``tables/<name>.md`` (the summary of ``summary.py``, then how to
  train each missing run: ``missing_runs``, ``missing_markdown``).
- ``write_report`` writes ``REPORT.md``: the headline (``headline.py``), the tables, the paper's claims against ours
  (``verdicts.py``), where each run was trained (``provenance_tables.py``) and the figures (``figures.py``).

The names of those modules that notebooks reach as ``report.<name>`` stay importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..training.store import RunStore
# figures, headline and summary names are re-exported: notebooks and tests call them as report.<name>
from .figures import (ATTENTION_FUNCTIONS, FIGURE_7B_RUNS, attention_comparison, example_images,
                      figure_attention_comparison, figure_attention_functions, figure_table, figure_training_curves,
                      folder_images, large_image_figures, load_trained, metrics_of, pick_images, save_figure,
                      training_curves_figure)
from .grids import TABLE_TITLES, Cell
from .headline import HEADLINE_COLUMNS, headline, headline_markdown
from .provenance_tables import provenance_markdown, provenance_rows, segment_rows, segments_markdown
from .settings import Settings
from .suite import cell_runs, run_id_for  # run_id_for: re-exported (report.run_id_for)
from .summary import SUMMARY_COLUMNS, collect, current_error, markdown_table, run_progress, summarize
from .verdicts import claims, claims_markdown


# -- what is missing, and how to train it ----------------------------------------------------------------------------
def missing_runs(cells: Sequence[Cell], settings: Settings) -> list[dict]:
    """Every unfinished run behind ``cells`` (each run once): cell label, seed, run id, status, epochs done, the
    command that trains it, its estimated GPU seconds (None: nothing comparable measured) and whether its teacher
    is missing too."""
    from ..training.command import train_command
    from .suite import teacher_config
    from .plan import measured_rates, run_seconds
    store, rates, out, seen = RunStore(settings.store_root), measured_rates(), [], set()
    for run in cell_runs(cells, settings):
        cell, config, run_id = run.cell, run.config, run.run_id
        status, epochs = run_progress(store, run_id)
        if status == "finished" or run_id in seen:
            continue
        seen.add(run_id)
        seconds, approximate = run_seconds(config, rates)
        if seconds is not None and status == "in progress":
            seconds *= 1 - epochs / config.epochs
        teacher = teacher_config(cell.teacher, settings) if cell.teacher else None
        out.append({"label": f"{cell.row} | {cell.column}" + (f" (seed {run.seed})" if len(settings.seeds) > 1
                                                              else ""),
                    "run_id": run_id, "status": status, "epochs": epochs, "of": config.epochs,
                    "command": train_command(config, settings.store_root), "seconds": seconds,
                    "approximate": approximate,
                    "teacher_missing": teacher is not None and store.status(teacher.run_id()) != "finished"})
    return out


def _minutes(seconds: float | None, approximate: bool) -> str:
    if seconds is None:
        return "GPU time not measured yet"
    from .plan import MEASURED_ON
    return f"{'~' if approximate else ''}{seconds / 60:.1f} GPU-min on {MEASURED_ON}"


def missing_markdown(missing: list[dict], settings: Settings) -> str:
    """How to train each missing run: one command each, with its estimated GPU time."""
    if not missing:
        return ""
    total = sum(m["seconds"] or 0 for m in missing)
    running = sum(m["status"] == "in progress" for m in missing)
    lines = [f"**Not finished: {len(missing)} run(s)" + (f" ({running} in progress)" if running else "")
             + f", about {total / 3600:.1f} GPU-hours** (estimated from the throughput measured on {_measured_on()}"
             f"; `~`: from similar runs). All of them, in value order: on a GPU, a window at a time, `python -m "
             f"atlib campaign --profile {settings.profile} --deadline SECONDS` (or `make reproduce "
             f"PROFILE={settings.profile}`); on a CPU, in the background, `python -m atlib campaign start --profile "
             f"{settings.profile} --device cpu --deadline SECONDS`.", "",
             "<details><summary>The command that trains each run</summary>", ""]
    for m in missing:
        state = (f"in progress, epoch {m['epochs']}/{m['of']} (the same command resumes it)"
                 if m["status"] == "in progress" else "not run yet")
        teacher = "; needs its teacher first" if m["teacher_missing"] else ""
        command = f"`{m['command']}`" if m["command"] else "(no single command: run its notebook)"
        lines.append(f"- {m['label']}: {state}, {_minutes(m['seconds'], m['approximate'])}{teacher}: {command}")
    return "\n".join(lines + ["", "</details>"]) + "\n"


def _measured_on() -> str:
    from .plan import MEASURED_ON
    return f"{MEASURED_ON} (`results/benchmarks/h200-2026-11-26/`)"


def write_table(cells: Sequence[Cell], settings: Settings, name: str | None = None) -> tuple[pd.DataFrame, Path]:
    """Summarize ``cells`` and write ``tables/<name>.csv`` (+ ``.md``); returns the summary and the CSV path."""
    name = name or cells[0].table
    summary = summarize(collect(cells, settings))
    out = settings.root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / f"{name}.csv", index=False)
    text = markdown_table(summary, TABLE_TITLES.get(name, name), settings.protocol_note())
    missing = missing_markdown(missing_runs(cells, settings), settings)
    (out / f"{name}.md").write_text(text + (f"\n{missing}" if missing else ""))
    return summary, out / f"{name}.csv"


# -- the report ----------------------------------------------------------------------------------------------------
def write_report(settings: Settings, tables: dict[str, Path], figures: dict[str, Path]) -> Path:
    """``REPORT.md``: what the numbers are first, then each table (inlined Markdown, linked CSV, the command for
    every missing run), the paper's claims against ours, where each run was trained, and each figure (None: not
    built yet)."""
    from .grids import TABLES, teacher_cells
    root = settings.root
    cells = [c for grid in TABLES.values() for c in grid()] + teacher_cells()
    runs = {run.run_id for run in cell_runs(cells, settings)}
    store = RunStore(settings.store_root)
    done = sum(store.status(r) == "finished" for r in runs)
    lines = []
    note = settings.protocol_note()
    if note:
        lines.append(f"**These numbers are not comparable to the paper's: profile `{settings.profile}` departs from "
                     f"the authors' protocol ({note}). It exercises the pipeline only.**")
    else:
        lines.append(f"Profile `{settings.profile}`: the authors' protocol (200 epochs, full CIFAR-10), "
                     f"{len(settings.seeds)} seed(s) {settings.seeds}; {done} of the {len(runs)} runs behind these "
                     f"tables are trained, every other cell says *not run yet* and the command that trains it. "
                     f"Errors are last-epoch test errors, median over seeds.")
    lines += ["", f"# atlib report: profile `{settings.profile}`", ""]
    if not note:
        lines += ["## The paper's headline: does attention transfer beat the student?", "", headline_markdown(settings)]
        if any(r["status"] != "not run yet" for r in headline(settings)):
            curves = training_curves_figure(settings)  # Figure 7b: the curves so far
            lines += [f"![training curves so far]({curves.relative_to(root)})", ""]
    lines += ["Our numbers are the last-epoch test error (%), median over seeds, with n and the spread (min..max), "
              "beside the paper's value. Columns and rows follow the paper. One known difference of schedule: the "
              "authors' code lowers the learning rate at the start of (1-based) epochs 60, 120 and 160, i.e. 59/60/"
              "40/41 epochs at 0.1/0.02/0.004/0.0008; atlib gives 60/60/40/40, in every run here.", ""]
    for name, csv_path in tables.items():
        md = Path(csv_path).with_suffix(".md")
        lines += [md.read_text().strip(), "", f"Data: [{Path(csv_path).name}]({Path(csv_path).relative_to(root)})", ""]
    lines += ["## The paper's claims", "", claims_markdown(claims(settings)), ""]
    lines += ["## Where each run was trained", "", provenance_markdown(provenance_rows(cells, settings)), "",
              segments_markdown(segment_rows(cells, settings)), ""]
    lines += ["## Figures", ""]
    for caption, png in figures.items():
        if png is None:
            lines += [f"### {caption}", "", "*Not built yet: the runs it shows are not trained (see Table 1).*", ""]
            continue
        rel = Path(png).relative_to(root)
        lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    path = root / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
