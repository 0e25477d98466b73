"""Where, when and how each run behind a table was trained: one row per finished run, and which epochs ran
where (a run may move between machines at an epoch boundary)."""

from __future__ import annotations

import statistics
from typing import Sequence

from ..training.provenance import segments
from ..training.store import RunStore
from .grids import Cell
from .settings import Settings
from .suite import cell_runs
from .summary import fmt_number, run_progress


def provenance_rows(cells: Sequence[Cell], settings: Settings) -> list[dict]:
    """Where, when and how each finished run behind ``cells`` was trained (one row per run)."""
    store, rows, seen = RunStore(settings.store_root), [], {}
    for run in cell_runs(cells, settings):
        cell, run_id = run.cell, run.run_id
        if run_id in seen:
            seen[run_id]["cells"].append(_where(cell))
            continue
        if store.status(run_id) != "finished":
            continue
        record = store.read_record(run_id)
        env = record.get("environment", {})
        rate = record.get("images_per_s")
        if rate is None:  # records before 2026-12-05: the median epoch, as finish_run computes it now
            rates = [m["images_per_s"] for m in store.read_metrics(run_id)]
            rate = statistics.median(rates) if rates else None
        if "cohort" in env:
            how = f"cohort of {env['cohort']['size']}"
        elif env.get("concurrent_runs", 1) > 1:
            how = f"{env['concurrent_runs']} concurrent"
        else:
            how = "single"
        graph = "graph" if env.get("cuda_graph") else "eager"
        layout = "NHWC" if env.get("channels_last") else "NCHW"
        precision = env.get("precision", record.get("config", {}).get("precision", "-"))
        if env.get("tf32_conv") is not None and env.get("device") == "cuda":
            precision += " (TF32 convs)" if env["tf32_conv"] else " (no TF32)"
        row = {"cells": [_where(cell)], "run_id": run_id,
               "test_error": record.get("test_error"), "device": env.get("device_name", env.get("device", "-")),
               "torch": env.get("torch", "-"), "cuda": env.get("cuda") or "-", "cudnn": env.get("cudnn") or "-",
               "precision": precision, "commit": env.get("commit", "not recorded"),
               "finished": record.get("finished_at", "-"), "seconds": record.get("train_seconds"),
               "images_per_s": rate,
               "how": f"{how}, {graph}, {layout}" + (", teacher ahead" if env.get("teacher_ahead") else "")}
        seen[run_id] = row
        rows.append(row)
    return rows


def _where(cell: Cell) -> str:
    return f"{cell.table}: {cell.row}" + ("" if cell.column == "error" else f", {cell.column}")


def provenance_markdown(rows: list[dict], error_header: str = "error") -> str:
    """One row per run: its record's (last-epoch) test error under ``error_header``, and where and how it trained."""
    if not rows:
        return "No run of this profile has finished yet.\n"
    lines = [f"| cell(s) | run | {error_header} | device | torch | CUDA / cuDNN | precision | code commit | "
             "finished (UTC) | wall | images/s | trained as |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wall = "-" if r["seconds"] is None else f"{r['seconds'] / 60:.1f} min"
        rate = "-" if r["images_per_s"] is None else f"{r['images_per_s']:,.0f}"
        lines.append(f"| {'<br>'.join(r['cells'])} | `{r['run_id']}` | {fmt_number(r['test_error'])} | {r['device']} | "
                     f"{r['torch']} | {r['cuda']} / {r['cudnn']} | {r['precision']} | {r['commit']} | "
                     f"{r['finished'].replace('T', ' ').replace('+00:00', '')} | {wall} | {rate} | {r['how']} |")
    if any(r["commit"] == "not recorded" for r in rows):
        lines += ["", "*not recorded*: trained before records carried the commit, CUDA/cuDNN versions and TF32 "
                  "(2026-12-05); the benchmark folder of that GPU session names its commit."]
    return "\n".join(lines) + "\n"


def segment_rows(cells: Sequence[Cell], settings: Settings) -> list[dict]:
    """Which epochs of each run (finished or in progress) ran where: one row per ``provenance.segments`` stretch."""
    store, out, seen = RunStore(settings.store_root), [], set()
    for run in cell_runs(cells, settings):
        run_id = run.run_id
        status, epochs = run_progress(store, run_id)
        if run_id in seen or status == "not run yet":
            continue
        seen.add(run_id)
        rows = store.read_metrics(run_id)
        rows = rows if status == "finished" else rows[:epochs]
        out += [{"run_id": run_id, "status": status, **seg} for seg in segments(rows)]
    return out


def segments_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["Which epochs ran where (a run may continue on another machine at an epoch boundary):", "",
             "| run | epochs | device | threads | torch | code commit | layout | dates (UTC) | images/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        how = r["how"]
        dates = " .. ".join(dict.fromkeys(d[:16].replace("T", " ") for d in (r["from"], r["to"]) if d)) or \
            "not recorded"
        layout = "-" if how["channels_last"] is None else ("NHWC" if how["channels_last"] else "NCHW")
        lines.append(f"| `{r['run_id']}` | {r['first']}-{r['last']}{'' if r['status'] == 'finished' else ' (so far)'}"
                     f" | {how['device_name'] or '-'} | {how['threads'] or '-'}"
                     f"{' + teacher ahead' if how.get('teacher_ahead') else ''} | {how['torch'] or '-'} | "
                     f"{how['commit'] or 'not recorded'} | {layout} | {dates} | {r['images_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"
