"""Figures next to the paper's (PNG files), and the trained models and test images they show.

- ``load_trained``, ``pick_images``, ``example_images``, ``folder_images``: what a figure shows.
- ``figure_*``: one figure each from given models, images or metrics; ``training_curves_figure``,
  ``attention_comparison`` and ``large_image_figures`` build the report's figures from the results store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; notebooks display the PNGs they wrote
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..attention import attention_image  # noqa: E402
from ..data import ImageSet, normalize  # noqa: E402
from ..training.store import RunStore  # noqa: E402
from .grids import FIGURE_6_ROW, FIGURE_6_RUNS, Cell, table1_row  # noqa: E402
from .settings import Settings  # noqa: E402
from .suite import run_id_for  # noqa: E402


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


def show_image(ax, image_uint8: torch.Tensor) -> None:
    """A uint8 (3, H, W) image on ``ax``, without ticks."""
    ax.imshow(image_uint8.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def show_map(ax, image_uint8, amap) -> None:
    """An attention map over its image on ``ax``, without ticks."""
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
        show_image(axes[i, 0], images.images[i])
        axes[0, 0].set_title("image", fontsize=8)
        c = 1
        for g in groups:
            for name, p, kind in ATTENTION_FUNCTIONS:
                amap = attention_image(outs[g][i:i + 1], p=p, kind=kind, size=tuple(images.images.shape[-2:]))[0]
                show_map(axes[i, c], images.images[i], amap)
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
        show_image(axes[i, 0], display[i])
        for c, name in enumerate(models, start=1):
            show_map(axes[i, c], display[i], maps[name][i])
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
