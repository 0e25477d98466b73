"""Tables and figures next to the paper's numbers, and the Markdown report that links them.

- ``collect`` gathers every cell's run records (one row per cell and seed) from the results store.
- ``summarize`` reduces seeds as the paper does: the median, with n and the spread (min..max), beside the paper's
  value and the difference (ours - paper).
- ``write_table`` writes ``tables/<name>.csv`` and ``tables/<name>.md``; the figure functions write PNGs.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; notebooks display the PNGs they wrote
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..attention import attention_image  # noqa: E402
from ..data import ImageSet, normalize  # noqa: E402
from ..training.provenance import segments  # noqa: E402
from ..training.store import RunStore, StoreError  # noqa: E402
from .grids import FIGURE_6_ROW, FIGURE_6_RUNS, TABLE_TITLES, Cell, table1_row
from .settings import Settings
from .suite import run_id_for

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
    for cell in cells:
        for seed in settings.seeds:
            run_id = run_id_for(cell, settings, seed)
            status, epochs = run_progress(store, run_id)
            record = store.read_record(run_id) if status == "finished" else None
            value = math.nan if record is None else record.get(cell.metric, math.nan)
            now, of = current_error(store, run_id, epochs) if status == "in progress" else (math.nan, None)
            rows.append({"table": cell.table, "row": cell.row, "column": cell.column, "paper": cell.paper,
                         "seed": seed, "run_id": run_id, "test_error": value, "status": status,
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


def _fmt(value, digits=2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(summary: pd.DataFrame, title: str, note: str = "") -> str:
    lines = [f"### {title}", ""]
    if note:
        lines += [f"*{note}*", ""]
    lines += ["| row | column | ours (median) | n | spread (min..max) | paper | ours - paper |",
              "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples(index=False):
        spread = f"{_fmt(r.ours_min)}..{_fmt(r.ours_max)}" if r.n > 1 else "-"
        diff = "-" if math.isnan(r.ours_minus_paper) else f"{r.ours_minus_paper:+.2f}"
        status = getattr(r, "status", "")
        ours = _fmt(r.ours_median) if r.n else f"*{status}*"
        if r.n and status:
            ours += f" ({status})"
        lines.append(f"| {r.row} | {r.column} | {ours} | {r.n} | {spread} | {_fmt(r.paper)} | {diff} |")
    return "\n".join(lines) + "\n"


# -- what is missing, and how to train it ----------------------------------------------------------------------------
def missing_runs(cells: Sequence[Cell], settings: Settings) -> list[dict]:
    """Every unfinished run behind ``cells`` (each run once): cell label, seed, run id, status, epochs done, the
    command that trains it, its estimated GPU seconds (None: nothing comparable measured) and whether its teacher
    is missing too."""
    from ..training.command import train_command
    from .suite import config_for, teacher_config
    from .plan import measured_rates, run_seconds
    store, rates, out, seen = RunStore(settings.store_root), measured_rates(), [], set()
    for cell in cells:
        for seed in settings.seeds:
            config = config_for(cell, settings, seed)
            run_id = config.run_id(teacher_label=config.teacher_arch)
            status, epochs = run_progress(store, run_id)
            if status == "finished" or run_id in seen:
                continue
            seen.add(run_id)
            seconds, approximate = run_seconds(config, rates)
            if seconds is not None and status == "in progress":
                seconds *= 1 - epochs / config.epochs
            teacher = teacher_config(cell.teacher, settings) if cell.teacher else None
            out.append({"label": f"{cell.row} | {cell.column}" + (f" (seed {seed})" if len(settings.seeds) > 1
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


# -- models and images ---------------------------------------------------------------------------------------------
def load_trained(cell_or_run_id: Cell | str, settings: Settings, seed: int | None = None) -> torch.nn.Module:
    """The final weights of a finished run (by cell and seed, or run id), as an eval-mode model on the CPU."""
    store = RunStore(settings.store_root)
    run_id = cell_or_run_id if isinstance(cell_or_run_id, str) else run_id_for(
        cell_or_run_id, settings, settings.seeds[0] if seed is None else seed)
    return store.load_model(run_id)


def pick_images(data: ImageSet, count: int = 4, seed: int = 0) -> ImageSet:
    """``count`` test images of different classes (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)
    chosen, classes = [], set()
    for i in order.tolist():
        if int(data.labels[i]) not in classes:
            chosen.append(i)
            classes.add(int(data.labels[i]))
        if len(chosen) == count:
            break
    idx = torch.tensor(chosen)
    return ImageSet(data.images[idx], data.labels[idx], data.classes)


def _show_image(ax, image_uint8: torch.Tensor) -> None:
    ax.imshow(image_uint8.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _show_map(ax, image_uint8, amap) -> None:
    ax.imshow(image_uint8.permute(1, 2, 0).numpy(), alpha=1.0)
    ax.imshow(amap.numpy(), cmap="jet", alpha=0.55, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, parents made) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path




# -- figures -------------------------------------------------------------------------------------------------------
ATTENTION_FUNCTIONS = [("F_sum", 1, "sum"), ("F_sum^2", 2, "sum"), ("F_sum^4", 4, "sum"), ("F_max^2", 2, "max")]


def figure_attention_functions(model: torch.nn.Module, images: ImageSet, path: Path,
                               groups: Sequence[int] = (1, 2)) -> Path:
    """Figure 4: attention maps of each image under F_sum, F_sum^2, F_sum^4, F_max^2 at the given (0-based)
    groups (default: the mid- and top-level groups of a 3-group network)."""
    with torch.no_grad():
        _, outs = model(normalize(images.images))
    n = len(images)
    cols = 1 + len(groups) * len(ATTENTION_FUNCTIONS)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n), squeeze=False)
    for i in range(n):
        _show_image(axes[i, 0], images.images[i])
        axes[0, 0].set_title("image", fontsize=8)
        c = 1
        for g in groups:
            for name, p, kind in ATTENTION_FUNCTIONS:
                amap = attention_image(outs[g][i:i + 1], p=p, kind=kind, size=tuple(images.images.shape[-2:]))[0]
                _show_map(axes[i, c], images.images[i], amap)
                axes[0, c].set_title(f"group {g + 1}\n{name}", fontsize=8)
                c += 1
    return save_figure(fig, path)


def figure_attention_comparison(models: dict[str, torch.nn.Module], display: torch.Tensor, inputs: torch.Tensor,
                                path: Path, group: int = -1, p: float = 2) -> Path:
    """Figure 6 style: the same images' attention maps (F_sum^p of ``group``) under each named model.
    ``display`` is uint8 (N, 3, H, W) for showing, ``inputs`` what the models take (normalised)."""
    maps = {}
    with torch.no_grad():
        for name, model in models.items():
            _, outs = model(inputs)
            maps[name] = attention_image(outs[group], p=p, size=tuple(display.shape[-2:]))
    n = display.shape[0]
    fig, axes = plt.subplots(n, 1 + len(models), figsize=(1.8 * (1 + len(models)), 1.8 * n), squeeze=False)
    for i in range(n):
        _show_image(axes[i, 0], display[i])
        for c, name in enumerate(models, start=1):
            _show_map(axes[i, c], display[i], maps[name][i])
            axes[0, c].set_title(name, fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    return save_figure(fig, path)


def figure_training_curves(curves: dict[str, Sequence[dict]], path: Path, title: str = "",
                           test_key: str = "test_error", train_key: str | None = "train_error") -> Path:
    """Figure 7b: train (dashed) and test (solid) error vs epoch for each named run's metrics rows
    (Figure 7a: ``test_key="test_error_top5", train_key=None``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, rows) in enumerate(curves.items()):
        epochs = [r["epoch"] for r in rows]
        color = f"C{i}"
        if train_key:
            ax.plot(epochs, [r[train_key] for r in rows], "--", color=color, label=f"{name} (train)")
        ax.plot(epochs, [r[test_key] for r in rows], "-", color=color, linewidth=2, label=f"{name} (test)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("error (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def metrics_of(cell: Cell, settings: Settings, seed: int | None = None) -> list[dict]:
    seed = settings.seeds[0] if seed is None else seed
    return RunStore(settings.store_root).read_metrics(run_id_for(cell, settings, seed))


def figure_table(summary: pd.DataFrame, path: Path, title: str) -> Path:
    """Ours vs the paper for every cell of a table (bars: ours median with min..max; markers: the paper)."""
    labels = [f"{r}\n{c}" if c != "error" else r for r, c in zip(summary["row"], summary["column"])]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(labels)), 4))
    x = range(len(labels))
    ours = summary["ours_median"]
    lo, hi = ours - summary["ours_min"], summary["ours_max"] - ours
    ax.bar(x, ours, color="C0", alpha=0.7, label="ours (median)", yerr=[lo.fillna(0), hi.fillna(0)], capsize=2)
    ax.scatter(x, summary["paper"], color="C3", zorder=3, label="paper")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=75, fontsize=7)
    ax.set_ylabel("test error (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def example_images(count: int = 4, seed: int = 0) -> ImageSet:
    """``count`` CIFAR-10 test images of different classes, from the embedded sample (real test images: no data
    root needed, so figures of committed runs build anywhere)."""
    from ..data import load_dataset
    return pick_images(load_dataset("sample")[1], count, seed)


FIGURE_7B_RUNS = ("student", "AT", "F-ActT")  # Table 1, WRN-16-1 / WRN-16-2 (the row of Figure 6)


def training_curves_figure(settings: Settings) -> Path | None:
    """Figure 7b (train and test error vs epoch of the WRN-16-1 student, AT and F-ActT runs) from whichever of
    them have recorded epochs; None if none has."""
    row, store = table1_row(FIGURE_6_ROW), RunStore(settings.store_root)
    curves = {name: metrics_of(row[name], settings) for name in FIGURE_7B_RUNS}
    curves = {name: rows for name, rows in curves.items() if rows}
    if not curves:
        return None
    unfinished = [n for n in curves if store.status(run_id_for(row[n], settings, settings.seeds[0])) != "finished"]
    title = "WRN-16-1 student, WRN-16-2 teacher" + (f" ({', '.join(unfinished)} in progress)" if unfinished else "")
    return figure_training_curves(curves, settings.root / "figures" / "fig7b_training_curves.png", title)


def attention_comparison(settings: Settings, count: int = 5) -> Path | None:
    """Figure 6 style: top-level attention maps of the WRN-16-1 student, the AT student and the WRN-16-2 teacher
    on the same test images, for whichever of them are finished (None if fewer than two)."""
    row, store = table1_row(FIGURE_6_ROW), RunStore(settings.store_root)
    finished = {name: row[column] for name, column in FIGURE_6_RUNS.items()
                if store.status(run_id_for(row[column], settings, settings.seeds[0])) == "finished"}
    if len(finished) < 2:
        return None
    images = example_images(count)
    models = {name: load_trained(cell, settings) for name, cell in finished.items()}
    return figure_attention_comparison(models, images.images, normalize(images.images),
                                       settings.root / "figures" / "fig6_attention_student_at_teacher.png")


def folder_images(dataset, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` evaluation images of different classes from an image-folder dataset: (uint8 for display,
    normalised model inputs)."""
    from ..data.folders import IMAGENET_MEAN, IMAGENET_STD
    chosen, classes = [], set()
    for i, label in enumerate(dataset.targets):
        if label not in classes:
            chosen.append(i)
            classes.add(label)
        if len(chosen) == count:
            break
    inputs = torch.stack([dataset[i][0] for i in chosen])
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    display = ((inputs * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    return display, inputs


def large_image_figures(settings: Settings) -> dict[str, Path]:
    """Figure 7a (ImageNet top-5 error vs epoch, ResNet-18 with and without AT) and Figure 6-style maps of the
    Table 4 student, AT student and teacher, for whichever of those runs are finished."""
    from ..data.folders import load_folders
    from .grids import FOLDER_DATA, table4, table5
    from .suite import data_available
    store, figures = RunStore(settings.store_root), {}
    finished = lambda cell: store.status(run_id_for(cell, settings, settings.seeds[0])) == "finished"  # noqa: E731
    t5 = {c.row: c for c in table5() if c.column == "top-5"}
    curves = {name: t5[row] for name, row in (("ResNet-18", "ResNet-18"),
                                              ("ResNet-18 + AT", "ResNet-18 + AT (last 2 groups from epoch 60)"))}
    if all(finished(c) for c in curves.values()):
        png = figure_training_curves({n: metrics_of(c, settings) for n, c in curves.items()},
                                     settings.root / "figures" / "fig7a_imagenet_top5.png",
                                     "ImageNet, ResNet-18 (top-5 validation error)", "test_error_top5", None)
        figures["Figure 7a: ImageNet top-5 error vs epoch"] = png
    for column, data in (("CUB", "cub"), ("Scenes", "scenes")):
        cells = {c.row: c for c in table4() if c.column == column}
        if not data_available(data, settings) or not all(finished(c) for c in cells.values()):
            continue
        root_field, kind = FOLDER_DATA[data]
        val = load_folders(getattr(settings, root_field), kind).val
        display, inputs = folder_images(val, count=4)
        models = {"student": load_trained(cells["student ResNet-18"], settings),
                  "AT student": load_trained(cells["AT"], settings),
                  "teacher": load_trained(cells["teacher ResNet-34"], settings)}
        png = figure_attention_comparison(models, display, inputs,
                                          settings.root / "figures" / f"fig6_attention_{data}.png")
        figures[f"Figure 6 style: top-level attention on {column}"] = png
    return figures


# -- provenance ------------------------------------------------------------------------------------------------------
def provenance_rows(cells: Sequence[Cell], settings: Settings) -> list[dict]:
    """Where, when and how each finished run behind ``cells`` was trained (one row per run)."""
    store, rows, seen = RunStore(settings.store_root), [], {}
    for cell in cells:
        for seed in settings.seeds:
            run_id = run_id_for(cell, settings, seed)
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
                   "images_per_s": rate, "how": f"{how}, {graph}, {layout}"}
            seen[run_id] = row
            rows.append(row)
    return rows


def _where(cell: Cell) -> str:
    return f"{cell.table}: {cell.row}" + ("" if cell.column == "error" else f", {cell.column}")


def provenance_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No run of this profile has finished yet.\n"
    lines = ["| cell(s) | run | error | device | torch | CUDA / cuDNN | precision | code commit | finished (UTC) | "
             "wall | images/s | trained as |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wall = "-" if r["seconds"] is None else f"{r['seconds'] / 60:.1f} min"
        rate = "-" if r["images_per_s"] is None else f"{r['images_per_s']:,.0f}"
        lines.append(f"| {'<br>'.join(r['cells'])} | `{r['run_id']}` | {_fmt(r['test_error'])} | {r['device']} | "
                     f"{r['torch']} | {r['cuda']} / {r['cudnn']} | {r['precision']} | {r['commit']} | "
                     f"{r['finished'].replace('T', ' ').replace('+00:00', '')} | {wall} | {rate} | {r['how']} |")
    if any(r["commit"] == "not recorded" for r in rows):
        lines += ["", "*not recorded*: trained before records carried the commit, CUDA/cuDNN versions and TF32 "
                  "(2026-12-05); the benchmark folder of that GPU session names its commit."]
    return "\n".join(lines) + "\n"


def segment_rows(cells: Sequence[Cell], settings: Settings) -> list[dict]:
    """Which epochs of each run (finished or in progress) ran where: one row per ``provenance.segments`` stretch."""
    store, out, seen = RunStore(settings.store_root), [], set()
    for cell in cells:
        for seed in settings.seeds:
            run_id = run_id_for(cell, settings, seed)
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
                     f" | {how['device_name'] or '-'} | {how['threads'] or '-'} | {how['torch'] or '-'} | "
                     f"{how['commit'] or 'not recorded'} | {layout} | {dates} | {r['images_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


# -- the paper's headline ------------------------------------------------------------------------------------------
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


# -- the paper's claims ----------------------------------------------------------------------------------------------
def _medians(cells: Sequence[Cell], settings: Settings) -> dict[tuple[str, str], tuple[float, int, float, float]]:
    """(row, column) -> (median, n, min, max) over finished seeds (median NaN where none)."""
    summary = summarize(collect(cells, settings))
    return {(r.row, r.column): (r.ours_median, r.n, r.ours_min, r.ours_max) for r in summary.itertuples()}


def _value(m: tuple) -> str:
    median, n, lo, hi = m
    return f"{median:.2f}" + (f" (n={n}, {lo:.2f}..{hi:.2f})" if n > 1 else "")


def claims(settings: Settings) -> list[dict]:
    """The paper's claims about CIFAR-10, each with our verdict ("agrees", "disagrees", "agrees so far",
    "not measured yet"), the evidence and the number of seeds behind it."""
    from .grids import TABLE1_PAIRS, groups_ablation, table1, table2
    t1, t2, g = _medians(table1(), settings), _medians(table2(), settings), _medians(groups_ablation(), settings)
    out = []

    def verdict(measured: int, needed: int, broken: bool) -> str:
        if broken:
            return "disagrees"
        if measured == 0:
            return "not measured yet"
        return "agrees" if measured == needed else f"agrees so far ({measured} of {needed} measured)"

    rows = [row for row, *_ in TABLE1_PAIRS]
    evidence, measured, broken, seeds = [], 0, False, []
    for row in rows:
        at, st = t1[(row, "AT")], t1[(row, "student")]
        if at[1] and st[1]:
            measured += 1
            seeds += [at[1], st[1]]
            broken |= not at[0] < st[0]
            evidence.append(f"{row}: AT {_value(at)} vs student {_value(st)} ({at[0] - st[0]:+.2f})")
    out.append({"claim": "AT lowers the student's error in every Table 1 row",
                "verdict": verdict(measured, len(rows), broken), "evidence": evidence, "seeds": seeds})

    functions = ["F_sum (p=1)", "F_sum^2", "F_sum^4", "F_max^1"]
    have = {f: t2[(f, "error")] for f in functions if t2[(f, "error")][1]}
    best = min(have, key=lambda f: have[f][0]) if have else None
    broken = "F_sum^2" in have and best != "F_sum^2"
    out.append({"claim": "F_sum^2 is the best attention function of Table 2 (F_sum, F_sum^2, F_sum^4, F_max^1)",
                "verdict": verdict(len(have) if "F_sum^2" in have else 0, len(functions), broken),
                "evidence": [f"{f}: {_value(m)}" for f, m in have.items()]
                + [f"{r} (ours only): {_value(m)}" for (r, _), m in t2.items()
                   if "not in the paper" in r and m[1]],
                "seeds": [m[1] for m in have.values()]})

    singles = {r: g[(r, "error")] for r in ("group 1", "group 2", "group 3") if g[(r, "error")][1]}
    every = g[("groups 1-3", "error")]
    broken = bool(every[1]) and any(not every[0] < m[0] for m in singles.values())
    out.append({"claim": "AT at all groups beats AT at any single group (section 4.1.1)",
                "verdict": verdict(len(singles) if every[1] else 0, 3, broken),
                "evidence": ([f"groups 1-3: {_value(every)}"] if every[1] else [])
                + [f"{r}: {_value(m)}" for r, m in singles.items()],
                "seeds": [m[1] for m in singles.values()] + ([every[1]] if every[1] else [])})

    methods = ["student", "AT", "F-ActT", "KD", "AT+KD"]
    best_rows, measured, evidence, seeds = 0, 0, [], []
    for row in rows:
        ms = {m: t1[(row, m)] for m in methods}
        if all(v[1] for v in ms.values()):
            measured += 1
            seeds += [v[1] for v in ms.values()]
            winner = min(ms, key=lambda m: ms[m][0])
            best_rows += winner == "AT+KD"
            evidence.append(f"{row}: best {winner} {_value(ms[winner])}, AT+KD {_value(ms['AT+KD'])}")
    broken = measured - best_rows > 1  # the paper: best in 3 of the 4 rows
    out.append({"claim": "AT+KD is the best method in 3 of the 4 Table 1 rows",
                "verdict": verdict(measured, len(rows), broken) + (f": best in {best_rows} of {measured}"
                                                                     if measured else ""),
                "evidence": evidence, "seeds": seeds})
    return out


def claims_markdown(found: list[dict]) -> str:
    lines = ["| the paper's claim | ours | evidence (test error %, median; n and spread where n > 1) |",
             "|---|---|---|"]
    for c in found:
        note = ""
        if c["seeds"] and max(c["seeds"]) == 1:
            note = " *(one seed per cell: within seed noise, not a verdict)*"
        lines.append(f"| {c['claim']} | {c['verdict']}{note} | {'; '.join(c['evidence']) or '-'} |")
    return "\n".join(lines) + "\n"


# -- the report ----------------------------------------------------------------------------------------------------
def write_report(settings: Settings, tables: dict[str, Path], figures: dict[str, Path]) -> Path:
    """``REPORT.md``: what the numbers are first, then each table (inlined Markdown, linked CSV, the command for
    every missing run), the paper's claims against ours, where each run was trained, and each figure (None: not
    built yet)."""
    from .grids import TABLES, teacher_cells
    root = settings.root
    cells = [c for grid in TABLES.values() for c in grid()] + teacher_cells()
    runs = {run_id_for(c, settings, seed) for c in cells for seed in settings.seeds}
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
