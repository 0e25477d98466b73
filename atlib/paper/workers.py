"""Several processes drain one profile's suite together: one per GPU on a machine, or one per machine on a shared
filesystem (a SLURM job array). ``python -m atlib work --profile paper`` in each; launching stays with the usual
tools (docs/campaign.md). Each process claims a run before training it (``atlib.training.claims``):
every run is trained exactly once, and a run whose process died is taken over and resumed from its checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

from ..training import deadline, engine
from ..training.claims import HEARTBEAT_S, STALE_S, ClaimLost, holding, try_claim
from ..training.store import RunStore
from .settings import Settings
from .suite import check_borrowed_teachers, suite_cells, suite_jobs

logger = logging.getLogger(__name__)


def suite(settings: Settings) -> list:
    """The runs a worker trains for these settings, teachers first: the cells of the profile's ``suite`` (the
    paper's, with the large-image tables whose data is set, or the CPU demo's)."""
    teachers, students = suite_jobs(suite_cells(settings), settings)
    return teachers + students


def work(settings: Settings, name: str | None = None, stale_after: float = STALE_S, heartbeat: float = HEARTBEAT_S,
         poll: float = 5.0, log: Callable[[str], None] = logger.info, configs: list | None = None,
         until: float | None = None, channels_last: bool | None = None, compile: bool = False,
         teacher_ahead: bool = False) -> list[str]:
    """Train the suite's runs that no live process holds, one at a time, until every run is finished (waiting while
    the rest are held by others or wait for their teacher). Returns the run ids this process finished.

    ``configs``: these runs in this order instead of the suite (the campaign's value order); ``until``: a
    ``time.time()`` by which to stop, at the last epoch boundary before it (``training.deadline``); ``channels_last``:
    the memory layout (None: the profile's ``channels_last``); ``compile``, ``teacher_ahead``: the engine's
    options of those names (execution paths)."""
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    if not settings.trains_missing():
        raise ValueError(f"profile {settings.profile!r} does not train here (train: {settings.train!r}, device "
                         f"{settings.device!r}: the authors' 200-epoch runs train on GPUs only); pass --device cuda, "
                         f"or --train yes")
    check_borrowed_teachers(suite_cells(settings), settings)  # or one line saying how to train them
    store = RunStore(settings.store_root)
    jobs = suite(settings) if configs is None else list(configs)
    ids = [c.run_id() for c in jobs]
    if channels_last is None:
        channels_last = settings.channels_last
    if until is None:
        return _work(settings, name, stale_after, heartbeat, poll, log, store, jobs, ids, channels_last, compile, None,
                     teacher_ahead)
    with deadline.epoch_deadline(deadline.clock() + (until - time.time())):
        return _work(settings, name, stale_after, heartbeat, poll, log, store, jobs, ids, channels_last, compile,
                     until, teacher_ahead)


def _work(settings, name, stale_after, heartbeat, poll, log, store, jobs, ids, channels_last, compile,
          until, teacher_ahead=False) -> list[str]:
    mine: list[str] = []
    longest_epoch = 0.0  # with a deadline, a run is started only if an epoch as long as the longest seen fits
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
        if deadline.stop_requested():
            log(f"{name}: stopped as asked; {len(mine)} run(s) finished by this process")
            return mine
        if until is not None and until - time.time() <= longest_epoch:
            log(f"{name}: deadline: {max(until - time.time(), 0):.0f} s left, less than an epoch "
                f"({longest_epoch:.0f} s); {len(mine)} run(s) finished by this process")
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
                                              log=log, channels_last=channels_last, compile=compile,
                                              teacher_ahead=teacher_ahead)
                except ClaimLost as e:
                    log(str(e))
                    continue
                except deadline.DeadlineReached as e:
                    log(f"{name}: deadline: {e}; {len(mine)} run(s) finished by this process")
                    return mine
                except Exception as e:  # noqa: BLE001 - one failing run must not stop the others
                    failed[run_id] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                    logger.error(f"{name}: {run_id} failed ({failed[run_id]}); going on with the others")
                    continue
                finally:
                    longest_epoch = max(longest_epoch, store.last_epoch_seconds(run_id))
                mine.append(run_id)
                log(f"{name}: finished {run_id}: test error {record['test_error']:.2f}%")
            trained = True
            break  # look again from the top: teachers first
        if not trained:
            time.sleep(poll)
