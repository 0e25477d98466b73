"""Claims on runs in a shared store, so that several processes can drain one suite together
(``atlib.paper.workers``, ``python -m atlib work``).

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


def _holder_gone(store: RunStore, run_id: str) -> bool:
    """Whether the claim's holder was a process of this machine that no longer exists (killed, or stopped by
    ``campaign stop`` with SIGKILL): its claim is stale at once, not after ``stale_after``."""
    owner = owner_of(store, run_id)
    if not owner or owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    if owner["pid"] == os.getpid():
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone too
        return Path(f"/proc/{owner['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


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
    if age < stale_after and not _holder_gone(store, run_id):
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
        if age is not None and age < stale_after and not _holder_gone(store, run_id):
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


@contextlib.contextmanager
def holding(run_id: str, claim: Claim):
    """While training ``run_id`` under ``claim``: the engine's ``check(run_id)`` stops it if the claim is lost."""
    _held[run_id] = claim
    try:
        yield claim
    finally:
        _held.pop(run_id, None)
