"""The demo's figures: test error vs epoch per method (mean and range over seeds), Figure 6-style maps of the
student, AT student and teacher, and Figure 4-style maps of the teacher."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..training.store import RunStore
from .demo_runs import MAP_SEED_INDEX, ROW, cells, seeds_of, teacher_model, test_images_words
from .settings import Settings
from .suite import run_id_for


def curves(settings: Settings) -> dict[str, list[list[dict]]]:
    """Per method, the per-epoch metrics of each of its seeds' runs that has any."""
    store = RunStore(settings.store_root)
    found = {}
    for cell in cells():
        runs = [store.read_metrics(run_id_for(cell, settings, seed)) for seed in seeds_of(settings, cell.column)]
        found[cell.column] = [rows for rows in runs if rows]
    return found


def curves_figure(settings: Settings) -> Path | None:
    """Test error vs epoch per method, on the images each epoch is evaluated on: the mean over seeds (line) and
    their range (band); None before any epoch."""
    from .figures import plt, save_figure
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
    ax.set_ylabel(f"test error (%), {test_images_words(settings)}")
    ax.set_title(f"{ROW}, low-data CPU variant: test error, mean and range over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, settings.root / "figures" / "cpu-demo_test_error.png")


def maps_figure(settings: Settings, count: int = 5) -> Path | None:
    """Figure 6 style: top-level attention maps (F_sum^2) of the student, the AT student (first seed) and the
    teacher on the same test images of the embedded sample; None until the student and AT runs are finished."""
    from ..data import normalize
    from .figures import example_images, figure_attention_comparison, load_trained
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


def teacher_maps_figure(settings: Settings, count: int = 4) -> Path:
    """Figure 4 style: the teacher's attention maps (F_sum, F_sum^2, F_sum^4, F_max^2) at each of its groups."""
    from .figures import example_images, figure_attention_functions
    return figure_attention_functions(teacher_model(settings), example_images(count),
                                      settings.root / "figures" / "cpu-demo_teacher_attention.png", groups=(0, 1, 2))
