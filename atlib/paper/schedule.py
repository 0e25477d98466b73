"""How a suite trains: which runs train together (cohorts of narrow WRN students as one grouped network, single runs
of one shape at once on CUDA streams, the rest alone), and ``run_cells``, which trains a notebook's cells (or, where
the settings do not train, returns the stored records).
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Iterable

from ..training import cohorts, engine
from ..training import concurrent as concurrent_runs  # `concurrent` is also a count below
from ..training.config import RunConfig
from ..training.store import RunStore
from .grids import Cell
from .settings import Settings
from .suite import cell_runs, check_borrowed_teachers, data_available, suite_jobs

logger = logging.getLogger(__name__)


def _positive_int(name: str, value, allowed: str = "a positive integer") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")
    return value


def _on_gpu(settings: Settings) -> bool:
    """Whether the settings' device is a CUDA GPU."""
    return engine.resolve_device(settings.device).type == "cuda"


def cohort_size(settings: Settings) -> int:
    if settings.cohort is not None:
        return _positive_int("cohort", settings.cohort, "a positive integer or null")
    return 16 if _on_gpu(settings) else 1


def concurrent_size(settings: Settings, on_gpu: bool | None = None) -> int:
    """How many single runs ``run_cells`` trains at once: ``Settings.concurrent`` on a GPU (``on_gpu`` None: the
    settings' device decides), 1 elsewhere (interleaving runs on a CPU gains nothing)."""
    n = _positive_int("concurrent", settings.concurrent)
    return n if (_on_gpu(settings) if on_gpu is None else on_gpu) else 1


# Cohorts pay only for narrow students: on an H200 (results/benchmarks/h200-2026-11-26) 7-16 WRN-16-1 students as one
# grouped network trained at 61-73k images/s in all against 29-39k for one graphed run, while 2-5 students, and
# cohorts of WRN-16-2 / WRN-40-x, ran slower in all than one graphed run of the same network.
COHORT_STUDENTS = ("wrn-16-1",)
MIN_COHORT = 7


def run_shape(config: RunConfig) -> tuple:
    """What makes runs alike in speed and length (all but the seed and the teacher's weights)."""
    return (config.student, config.teacher_arch, config.method, json.dumps(config.terms, sort_keys=True),
            config.precision, config.dataset, config.epochs, config.train_subset, config.batch_size)


def schedule(configs: list[RunConfig], size: int, share_batches: bool = False,
             concurrent: int = 1) -> list[list[RunConfig]]:
    """Groups of runs to train together, in order. Runs that may share a cohort (``cohort_key``, a student in
    ``COHORT_STUDENTS``, the same seed when batches are shared) are cut into chunks of at most ``size`` with one
    teacher architecture each; runs without a teacher fill free places. Chunks under ``MIN_COHORT`` runs (or all,
    with ``size`` 1) train alone. Then, with ``concurrent`` > 1, runs left alone are gathered by ``run_shape``
    (typically one cell's seeds) into sets of at most ``concurrent`` that train at once (``is_cohort`` tells the
    two kinds of group apart); a set takes the place of its first run."""
    families: dict[tuple, list[RunConfig]] = {}
    for i, config in enumerate(configs):
        key = cohorts.cohort_key(config) if size > 1 and config.student in COHORT_STUDENTS else None
        label = (i,) if key is None else (key, config.seed if share_batches else None)
        families.setdefault(label, []).append(config)
    out = []
    for members in families.values():
        by_teacher: dict[str | None, list[RunConfig]] = {}
        for config in members:
            by_teacher.setdefault(config.teacher_arch, []).append(config)
        free = by_teacher.pop(None, [])
        chunks = [runs[i:i + size] for runs in by_teacher.values() for i in range(0, len(runs), size)]
        for chunk in chunks:
            while free and len(chunk) < size:
                chunk.append(free.pop(0))
        chunks += [free[i:i + size] for i in range(0, len(free), size)]
        for chunk in chunks:
            out += [chunk] if len(chunk) >= min(MIN_COHORT, size) or len(chunk) == 1 else [[c] for c in chunk]
    return _gather_singles(out, concurrent) if concurrent > 1 else out


class ConcurrentSet(list):
    """A group of single runs that train at once (``atlib.training.concurrent``), not a cohort."""


def _gather_singles(groups: list[list[RunConfig]], concurrent: int) -> list[list[RunConfig]]:
    open_sets: dict[tuple, ConcurrentSet] = {}
    out: list[list[RunConfig]] = []
    for group in groups:
        if len(group) > 1:  # a cohort
            out.append(group)
            continue
        shape = run_shape(group[0])
        if shape not in open_sets or len(open_sets[shape]) == concurrent:
            open_sets[shape] = ConcurrentSet()
            out.append(open_sets[shape])
        open_sets[shape].append(group[0])
    return [list(g) if isinstance(g, ConcurrentSet) and len(g) == 1 else g for g in out]


def is_cohort(group: list[RunConfig]) -> bool:
    return len(group) > 1 and not isinstance(group, ConcurrentSet)


def cells_with_data(cells: Iterable[Cell], settings: Settings) -> list[Cell]:
    """The cells whose data the settings locate (CIFAR-10 always; CUB, Scenes, ImageNet when their root is set)."""
    return [c for c in cells if data_available(c, settings)]


def run_cells(cells: Iterable[Cell], settings: Settings, log: Callable[[str], None] = logger.info) -> list[dict | None]:
    """Train every cell at every seed (teachers first), skipping finished runs and resuming interrupted ones.
    On a GPU, runs of one WRN architecture are trained in cohorts (``Settings.cohort``) and other runs of one
    shape (a cell's seeds) at once on their own CUDA streams (``Settings.concurrent``). Returns the records in cell
    order. Where ``settings.trains_missing()`` is false (the authors' protocol on a CPU, or ``train: false``),
    nothing is trained: the records of finished runs are returned, None for the others, and the log says how many
    are missing (the report says how to train each)."""
    cells = [c for c in cells if data_available(c, settings)]
    if not settings.trains_missing():
        return _stored_records(cells, settings, log)
    check_borrowed_teachers(cells, settings)
    teachers, students = suite_jobs(cells, settings)
    size, concurrent = cohort_size(settings), concurrent_size(settings)
    records = {}
    total, done = len(teachers) + len(students), 0
    for phase in (teachers, students):
        for group in schedule(phase, size, settings.share_batches, concurrent):
            ids = [c.run_id() for c in group]
            kind = "cohort" if is_cohort(group) else "concurrent"
            label = ids[0] if len(ids) == 1 else f"{kind} of {len(ids)}: {ids[0]}, ..."
            log(f"[{done + 1}-{done + len(ids)}/{total}] {label}")
            if len(group) == 1:
                found = [engine.train(group[0], results=settings.store_root, progress=settings.progress, log=None)]
            elif not is_cohort(group):
                found = concurrent_runs.train_concurrently(group, results=settings.store_root,
                                                           progress=settings.progress, log=None)
            else:
                found = cohorts.train_cohort(group, results=settings.store_root, progress=settings.progress,
                                             log=None, shared_batches=settings.share_batches)
            for run_id, record in zip(ids, found):
                records[run_id] = record
                log(f"  {run_id}: test error {record['test_error']:.2f}%")
            done += len(ids)
    return [records[run.run_id] for run in cell_runs(cells, settings)]


def _stored_records(cells: list[Cell], settings: Settings, log: Callable[[str], None]) -> list[dict | None]:
    store = RunStore(settings.store_root)
    ids = [run.run_id for run in cell_runs(cells, settings)]
    records = [store.read_record(i) if store.status(i) == "finished" else None for i in ids]
    missing = sum(r is None for r in records)
    if missing:
        if settings.follows_protocol:
            why, how = ", the authors' 200-epoch protocol", "the report says how to train each"
        else:
            why, how = "", "set train: auto to train them"
        log(f"{missing} of {len(records)} runs not trained yet: not training them here (train: {settings.train!r}, "
            f"device {settings.device!r}{why}); {how}")
    return records
