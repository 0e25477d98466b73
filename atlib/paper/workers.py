"""Several processes drain one profile's suite together: one per GPU on a machine, or one per machine on a shared
filesystem (a SLURM job array). ``python -m atlib work --profile paper`` in each; launching stays with the usual
tools (README "Many GPUs or machines"). Each process claims a run before training it (``atlib.training.claims``):
every run is trained exactly once, and a run whose process died is taken over and resumed from its checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

from ..training import engine
from ..training.claims import HEARTBEAT_S, STALE_S, ClaimLost, holding, try_claim
from ..training.store import RunStore
from . import demo
from .grids import LARGE_TABLES, TABLES, teacher_cells
from .settings import Settings
from .suite import data_available, suite_jobs

logger = logging.getLogger(__name__)


def suite(settings: Settings) -> list:
    """The runs a worker trains for these settings, teachers first: the paper's CIFAR suite (and the large-image
    tables whose data is set), or the CPU demo's runs for a profile that borrows its teachers."""
    if settings.teachers_from is not None:
        chosen = demo.cells()
    else:
        chosen = [c for grid in TABLES.values() for c in grid()] + teacher_cells()
        chosen += [c for grid in LARGE_TABLES.values() for c in grid() if data_available(c, settings)]
    teachers, students = suite_jobs(chosen, settings)
    return teachers + students


def demo_channels_last(settings: Settings) -> bool | None:
    """The memory layout ``demo.train`` asks for, for the demo's runs (None: the engine's default)."""
    if settings.teachers_from is None:
        return None
    return demo.CHANNELS_LAST


def work(settings: Settings, name: str | None = None, stale_after: float = STALE_S, heartbeat: float = HEARTBEAT_S,
         poll: float = 5.0, log: Callable[[str], None] = logger.info) -> list[str]:
    """Train the suite's runs that no live process holds, one at a time, until every run is finished (waiting while
    the rest are held by others or wait for their teacher). Returns the run ids this process finished."""
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    if not settings.trains_missing():
        raise ValueError(f"profile {settings.profile!r} does not train here (train: {settings.train!r}, device "
                         f"{settings.device!r}: the authors' 200-epoch runs train on GPUs only); pass --device cuda, "
                         f"or --train yes")
    if settings.teachers_from is not None:
        demo.check(settings)  # its borrowed teacher is there, or one line saying how to train it
    store = RunStore(settings.store_root)
    jobs = suite(settings)
    ids = [c.run_id(teacher_label=c.teacher_arch) for c in jobs]
    channels_last = demo_channels_last(settings)
    mine: list[str] = []
    failed: dict[str, str] = {}  # run id -> why (this worker does not try them again, nor their students)
    while True:
        left = [(c, i) for c, i in zip(jobs, ids) if i not in failed and store.status(i) != "finished"]
        for config, run_id in left:
            if config.teacher in failed:
                failed[run_id] = f"its teacher {config.teacher} failed"
        left = [(c, i) for c, i in left if i not in failed]
        if not left:
            done = sum(store.status(i) == "finished" for i in ids)
            if failed:
                reasons = "; ".join(f"{i}: {why}" for i, why in failed.items())
                raise engine.TrainingError(f"{name}: {len(failed)} run(s) failed here ({reasons}); {done} of "
                                           f"{len(ids)} finished")
            log(f"{name}: all {len(ids)} runs finished ({len(mine)} by this process)")
            return mine
        trained = False
        for config, run_id in left:
            if config.teacher is not None and config.teacher_store is None and \
                    store.status(config.teacher) != "finished":
                continue  # its teacher is still training (here or elsewhere)
            claim = try_claim(store, run_id, name, stale_after, heartbeat)
            if claim is None:
                continue
            with claim:
                if store.status(run_id) == "finished":  # finished by another process between our two looks
                    continue
                log(f"{name}: training {run_id}")
                try:
                    with holding(run_id, claim):
                        record = engine.train(config, results=settings.store_root, progress=settings.progress,
                                              log=log, channels_last=channels_last)
                except ClaimLost as e:
                    log(str(e))
                    continue
                except Exception as e:  # noqa: BLE001 - one failing run must not stop the others
                    failed[run_id] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                    logger.error(f"{name}: {run_id} failed ({failed[run_id]}); going on with the others")
                    continue
                mine.append(run_id)
                log(f"{name}: finished {run_id}: test error {record['test_error']:.2f}%")
            trained = True
            break  # look again from the top: teachers first
        if not trained:
            time.sleep(poll)
