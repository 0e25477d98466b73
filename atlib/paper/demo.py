"""The CPU demo (profile ``cpu-demo``): attention transfer shown on a laptop, in a low-data setting of its own.

NOT the paper's protocol. A WRN-16-1 student learns from the committed WRN-16-2 teacher of the ``one-seed`` profile
(200 epochs on full CIFAR-10) while itself training on the embedded class-balanced CIFAR-10 sample (2,500 training
images) for a few epochs; student alone, AT, KD and AT+KD, several seeds (KD and AT+KD on fewer: ``SEEDS_OF``). The
profile file says why its sizes are what they are.

- ``cells``: the four runs as table cells; ``seeds_of``: the seeds each one is trained with (``demo_runs``).
- ``train``: trains (or loads, or resumes) the runs seed by seed, ``settings.concurrent`` at a time, each in its own
  process on one CPU thread (so the numbers do not depend on how many run at once), then evaluates each run's final
  weights on the whole CIFAR-10 test set where a data root holds it (``final_test``; modules ``demo_training``,
  ``demo_final_test``).
- ``per_seed`` / ``paired``: the final test error of every run by seed, and each method's paired differences to the
  student of the same seed (same initialisation seed, same data order) with their median, a 95% t interval of
  their mean, the exact sign test and a verdict that follows from the interval (``atlib.paper.stats``;
  ``demo_tables``).
- ``curves_figure`` (test error vs epoch on the sample's test images, mean and range over seeds), ``maps_figure``
  (Figure 6 style: student, AT student and teacher on the same test images; ``demo_figures``), ``write_report``
  (``results/cpu-demo/REPORT.md``, here).

This module holds ``describe`` and ``write_report``; the names of the modules above stay importable from here
(notebooks and tests call them as ``demo.<name>``).
"""

from __future__ import annotations

from pathlib import Path

from ..training.store import RunStore
# the demo modules' names are re-exported: notebooks and tests call them as demo.<name>
from .demo_figures import curves, curves_figure, maps_figure, teacher_maps_figure
from .demo_final_test import (RUN_THREADS, data_root_with_cifar, evaluate_final, evaluate_images, final_images,
                              final_result, final_test, final_test_words, stored_final, test_set_images,
                              torch_threads)
from .demo_runs import (CIFAR_TEST_IMAGES, COLUMNS, FINAL_TEST_FILE, MAP_SEED_INDEX, ROW, SAMPLE_TEST_IMAGES, SEEDS_OF,
                        STUDENT, TEACHER, TRAINING_FILE, batch_words, cells, check, configs, finished, jobs, seeds_of,
                        teacher_model, teacher_record, test_images_words, training_images_words)
from .demo_tables import LEVEL, paired, per_seed, table_markdown, verdict, write_table
from .demo_training import cpu_name, duration_words, train, training_note
from .provenance_tables import provenance_markdown, provenance_rows
from .settings import Settings
from .suite import teacher_config


def describe(settings: Settings) -> str:
    """The first line of everything the demo shows: what it is, how it departs from the paper's protocol, and which
    test set its numbers come from."""
    check(settings)
    theirs = teacher_config(TEACHER, settings.teacher_settings())
    teacher_data = "full CIFAR-10" if theirs.dataset == "cifar10" and not theirs.train_subset else \
        f"{theirs.train_subset or 2500:,} images of {theirs.dataset}"
    counts = sorted({len(seeds_of(settings, c)) for c, _ in COLUMNS}, reverse=True)
    seeds = f"{counts[0]} seeds" if len(counts) == 1 else \
        f"{counts[0]} seeds (KD and AT+KD: {counts[-1]})"
    return (f"Low-data CPU variant, not the paper's protocol: a {STUDENT.upper()} student trained on "
            f"{training_images_words(settings)} for {settings.epochs} epoch{'s' * (settings.epochs != 1)} "
            f"(learning rate schedule scaled{batch_words(settings)}), "
            f"learning from the `{settings.teachers_from}` profile's {TEACHER.upper()} teacher ({theirs.epochs} "
            f"epochs on {teacher_data}); {seeds}; final test error on {final_test_words(settings)}. The "
            f"paper trains the student 200 epochs on all 50,000 images (Table 1: 8.77% alone, 7.93% with AT).")


def _this_call(seconds: float | None, trained_now: int | None, of: int) -> str:
    """What the notebook call that wrote the report did. Its duration only when it trained something, so that a
    report rebuilt from stored runs is the same file every time."""
    if trained_now == 0:
        return f" This notebook trained none of the {of} runs (all were stored)."
    if seconds is None:
        return ""
    trained = f" and trained {trained_now} of the {of} runs" if trained_now is not None else ""
    return f" This notebook ran in {duration_words(seconds)}{trained}."


# -- the report ----------------------------------------------------------------------------------------------------
def write_report(settings: Settings, table_md: Path, figures: dict[str, Path | None],
                 seconds: float | None = None, trained_now: int | None = None) -> Path:
    """``REPORT.md``: what this is and which test set (first line), the tables with their statistics and verdicts,
    how long training took and on what, where the runs were trained, figures."""
    root = settings.root
    lines = [f"**{describe(settings)}**", "", f"# atlib CPU demo: attention transfer with little data "
             f"(profile `{settings.profile}`)", ""]
    lines += ["Each seed trains its runs from the same initialisation seed and the same order of batches, so "
              "each method is compared with the student of its own seed (a paired difference).", ""]
    lines += [table_md.read_text().strip(), "", f"Data: [cpu-demo.csv]({table_md.with_suffix('.csv').relative_to(root)})",
              ""]
    rows = _provenance(settings)
    trained = [r for r in rows if r["seconds"] is not None]
    if trained:
        final = sum(_final_seconds(settings, r["run_id"]) for r in trained)
        jobs_seconds = _job_seconds(settings, [r["run_id"] for r in trained])
        together = "" if len(jobs_seconds) == len(trained) else \
            f" as {len(jobs_seconds)} jobs (the runs of a seed that learn from the teacher trained together, on " \
            f"shared batches, and count once)"
        lines += [f"Training these {len(trained)} runs took {sum(jobs_seconds) / 60:.1f} minutes of run time in "
                  f"all{together} (their records' wall time, each epoch's evaluation included"
                  + (f"; the final evaluations on the CIFAR-10 test set {final / 60:.1f} more" if final else "")
                  + "; jobs that trained side by side overlap)." + _this_call(seconds, trained_now, len(trained))
                  + (" " + training_note(settings) if training_note(settings) else ""), ""]
    lines += ["## Where each run was trained", "",
              provenance_markdown(rows, f"last epoch's error ({test_images_words(settings)})"), ""]
    lines += ["## Figures", ""]
    for caption, png in figures.items():
        if png is None:
            lines += [f"### {caption}", "", "*Not built yet: its runs are not trained.*", ""]
        else:
            lines += [f"### {caption}", "", f"![{caption}]({Path(png).relative_to(root)})", ""]
    path = root / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def _provenance(settings: Settings) -> list[dict]:
    """``provenance_rows`` of the demo's runs (each column at its own seeds), seed by seed."""
    rows = []
    for seed, cell in jobs(settings):
        one = Settings(**{**settings.__dict__, "seeds": [seed]})
        rows += provenance_rows([cell], one)
    return rows


def _job_seconds(settings: Settings, run_ids: list[str]) -> list[float]:
    """The wall time of each training job of ``run_ids``: a run alone, or runs that shared their batches (their
    records say with whom, and each carries the group's time)."""
    store, seen, out = RunStore(settings.store_root), set(), []
    for run_id in run_ids:
        record = store.read_record(run_id)
        group = tuple(record.get("environment", {}).get("shared_batches") or [run_id])
        if group not in seen:
            seen.add(group)
            out.append(record.get("train_seconds", 0.0))
    return out


def _final_seconds(settings: Settings, run_id: str) -> float:
    found = stored_final(RunStore(settings.store_root), run_id, final_images(settings))
    return found.get("seconds", 0.0) if found and final_test(settings) == "cifar10" else 0.0
