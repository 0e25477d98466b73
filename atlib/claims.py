"""Several processes drain one profile's suite together: one per GPU on a machine, or one per machine on a shared
filesystem (a SLURM job array). ``python -m atlib work --profile paper`` in each; launching stays with the usual
tools (README "Many GPUs or machines").

A process **claims** a run before training it: ``runs/<id>/claim.json`` created with ``O_EXCL`` (atomic; exactly one
process gets it), holding who owns it. While the run trains, a heartbeat thread refreshes the file's modification time
every ``heartbeat`` seconds. A claim not refreshed for ``stale_after`` seconds belongs to a process that died (killed,
machine lost): another process takes it over (under a takeover lock, so only one does) and resumes the run from its
last checkpoint. A finished run is never trained again (the engine returns its record). If a live process finds its
claim taken over (its heartbeat stalled longer than ``stale_after``), it stops at the next epoch boundary
(``ClaimLost``), leaving the run to its new owner.

Clocks: staleness compares the claim file's modification time with this machine's clock; on a shared filesystem the
machines' clocks must agree to well under ``stale_after`` (NTP does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from .experiments import Settings, suite_jobs
from .store import RunStore

logger = logging.getLogger(__name__)

CLAIM_FILE = "claim.json"
TAKEOVER_DIR = "claim.takeover"  # a directory: mkdir is atomic, so one process at a time replaces a stale claim
HEARTBEAT_S = 30.0
STALE_S = 600.0   # ten minutes without a heartbeat: the holder is gone


class ClaimLost(Exception):
    """This process's claim on a run was taken over by another process; it stops training that run."""


class Claim:
    """This process's claim on one run; ``release()`` (or leaving the ``with`` block) gives it up."""

    def __init__(self, path: Path, owner: dict, heartbeat: float):
        self.path, self.owner, self.heartbeat = path, owner, heartbeat
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {path.parent.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            if self._holder() not in (self.owner["token"], None):  # None: unreadable now; try again next beat
                self.lost = True
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.lost = True
                return
            except OSError as e:  # e.g. a network filesystem's transient error: keep beating
                logger.warning(f"{self.path}: heartbeat failed ({e}); retrying")

    def _holder(self) -> str | None:
        """The token in the claim file: "" if there is no file, None if it cannot be read right now."""
        try:
            return json.loads(self.path.read_text()).get("token", "")
        except FileNotFoundError:
            return ""
        except (OSError, ValueError):
            return None

    def held(self) -> bool:
        """Whether the claim file still names this process's claim."""
        return self._holder() == self.owner["token"]

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.held():
            self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a run directory holding nothing else (its run never started)
            self.path.parent.rmdir()

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def owner_of(store: RunStore, run_id: str) -> dict | None:
    """The current claim on ``run_id`` (None if unclaimed or unreadable)."""
    try:
        return json.loads((store.run_dir(run_id) / CLAIM_FILE).read_text())
    except (OSError, ValueError):
        return None


def _create(path: Path, owner: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def try_claim(store: RunStore, run_id: str, name: str, stale_after: float = STALE_S,
              heartbeat: float = HEARTBEAT_S) -> Claim | None:
    """Claim ``run_id`` for this process (``name`` says who, e.g. host:pid); None if a live process holds it."""
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    owner = {"owner": name, "host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
             "since": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    if _create(path, owner):
        return Claim(path, owner, heartbeat)
    age = _age(path)
    if age is None:  # released between our two looks: try once more
        return Claim(path, owner, heartbeat) if _create(path, owner) else None
    if age < stale_after:
        return None
    lock = run_dir / TAKEOVER_DIR
    try:
        lock.mkdir()
    except FileExistsError:
        lock_age = _age(lock)
        if lock_age is not None and lock_age > stale_after:  # a taker died mid-takeover: move its lock aside
            aside = run_dir / f"{TAKEOVER_DIR}.stale.{owner['token']}"
            with contextlib.suppress(OSError):  # another process may have moved or removed it first
                lock.rename(aside)
                aside.rmdir()
        return None
    try:
        age = _age(path)  # again, under the lock: the claim may have been refreshed or replaced meanwhile
        if age is not None and age < stale_after:
            return None
        previous = owner_of(store, run_id)
        path.unlink(missing_ok=True)
        if not _create(path, owner):
            return None
        logger.info(f"{run_id}: took over the stale claim of {previous.get('owner') if previous else 'a process'} "
                    f"(no heartbeat for {age:.0f} s)")
        return Claim(path, owner, heartbeat)
    finally:
        with contextlib.suppress(OSError):
            lock.rmdir()


# -- the claim the engine checks at epoch boundaries ---------------------------------------------------------------
_held: dict[str, Claim] = {}


def check(run_id: str) -> None:
    """Called by the engine after each epoch's checkpoint: ``ClaimLost`` if this process held a claim on ``run_id``
    and another process has taken it over."""
    claim = _held.get(run_id)
    if claim is not None and (claim.lost or not claim.held()):
        raise ClaimLost(f"{run_id}: another process took over this run; stopping here (its checkpoint is kept)")


# -- the worker ----------------------------------------------------------------------------------------------------
def suite(settings: Settings) -> list:
    """The runs a worker trains for these settings, teachers first: the paper's CIFAR suite (and the large-image
    tables whose data is set), or the CPU demo's runs for a profile that borrows its teachers."""
    from .experiments import LARGE_TABLES, TABLES, data_available, teacher_cells
    if settings.teachers_from is not None:
        from .demo import cells
        chosen = cells()
    else:
        chosen = [c for grid in TABLES.values() for c in grid()] + teacher_cells()
        chosen += [c for grid in LARGE_TABLES.values() for c in grid() if data_available(c, settings)]
    teachers, students = suite_jobs(chosen, settings)
    return teachers + students


def demo_channels_last(settings: Settings) -> bool | None:
    """The memory layout ``demo.train`` asks for, for the demo's runs (None: the engine's default)."""
    if settings.teachers_from is None:
        return None
    from .demo import CHANNELS_LAST
    return CHANNELS_LAST


def work(settings: Settings, name: str | None = None, stale_after: float = STALE_S, heartbeat: float = HEARTBEAT_S,
         poll: float = 5.0, log: Callable[[str], None] = logger.info) -> list[str]:
    """Train the suite's runs that no live process holds, one at a time, until every run is finished (waiting while
    the rest are held by others or wait for their teacher). Returns the run ids this process finished."""
    from .engine import TrainingError, train
    from .experiments import check_borrowed_teachers
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    if not settings.trains_missing():
        raise ValueError(f"profile {settings.profile!r} does not train here (train: {settings.train!r}, device "
                         f"{settings.device!r}: the authors' 200-epoch runs train on GPUs only); pass --device cuda, "
                         f"or --train yes")
    store = RunStore(settings.store_root)
    jobs = suite(settings)
    if settings.teachers_from is not None:
        from .demo import cells
        check_borrowed_teachers(cells(), settings)
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
                raise TrainingError(f"{name}: {len(failed)} run(s) failed here ({reasons}); {done} of {len(ids)} "
                                    f"finished")
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
                _held[run_id] = claim
                try:
                    record = train(config, results=settings.store_root, progress=settings.progress, log=log,
                                   channels_last=channels_last)
                except ClaimLost as e:
                    log(str(e))
                    continue
                except Exception as e:  # noqa: BLE001 - one failing run must not stop the others
                    failed[run_id] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                    logger.error(f"{name}: {run_id} failed ({failed[run_id]}); going on with the others")
                    continue
                finally:
                    _held.pop(run_id, None)
                mine.append(run_id)
                log(f"{name}: finished {run_id}: test error {record['test_error']:.2f}%")
            trained = True
            break  # look again from the top: teachers first
        if not trained:
            time.sleep(poll)
