"""The campaign in the background of a CPU machine: start it, ask where it stands, stop it.

    python -m atlib campaign start --profile one-seed --device cpu --deadline 9000   # detaches, nice 19
    python -m atlib campaign status --profile one-seed                                # epoch k/200, error, rate, ETA
    python -m atlib campaign stop --profile one-seed                                  # within 10 s; changed run dirs

``start`` launches ``lanes`` detached processes ("lanes"), each training the campaign's runs in value order (the
headline pair first, see ``campaign.value_order``) with ``threads`` intra-op threads, until the deadline. The lanes
take runs through the store's claims (``training.claims``), so two lanes never train the same run and a lane is safe
beside ``python -m atlib work``. Each lane stops at the last epoch boundary before the deadline
(``training.deadline``); ``stop`` ends them at once (SIGTERM: the epoch in flight is discarded, the checkpoint of the
last whole epoch stays; the claim is released), or with ``at_epoch_end`` after each lane's epoch in flight (SIGUSR1:
``training.deadline.request_stop``). Lanes log one timestamped line per epoch to ``campaign.log`` beside
the store's runs.

One campaign per results store: ``campaign.json`` beside the runs names the lanes' pids. ``start`` refuses while one
of them lives and takes the file over when none does (a stale file: the machine was stopped or the lanes killed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..training.store import RunStore, atomic_write_bytes
from .settings import Settings

STATE_FILE = "campaign.json"
LOG_FILE = "campaign.log"
STOP_WAIT_S = 6.0  # SIGTERM, then SIGKILL for a lane still alive after this long (stop's promise: within 10 s)


class CampaignError(ValueError):
    """A background campaign cannot be started, stopped or read as asked (one line says why)."""


def state_path(settings: Settings) -> Path:
    return Path(settings.store_root) / STATE_FILE


def log_path(settings: Settings) -> Path:
    return Path(settings.store_root) / LOG_FILE


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields and fields[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # our own child (tests): reap it
            return False
    return True


def read_state(settings: Settings) -> dict | None:
    path = state_path(settings)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CampaignError(f"{path} cannot be read ({e}); remove it if no campaign runs") from None


def live_pids(state: dict | None) -> list[int]:
    return [pid for pid in (state or {}).get("pids", []) if alive(pid)]


def parse_deadline(text: str, now: float | None = None) -> float:
    """``--deadline``: seconds from now (``9000``) or an end time (``04:30`` today or tomorrow, or
    ``2026-12-07T04:30``, local time). Returns the end as a ``time.time()`` value."""
    now = time.time() if now is None else now
    text = str(text).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not seconds > 0:
            raise CampaignError(f"--deadline must be a positive number of seconds or an end time, got {text!r}")
        return now + seconds
    try:
        if "T" in text or "-" in text:
            end = dt.datetime.fromisoformat(text).timestamp()
        else:
            clock = dt.time.fromisoformat(text)
            today = dt.datetime.fromtimestamp(now).date()
            end = dt.datetime.combine(today, clock).timestamp()
            if end <= now:
                end += 86400
    except ValueError:
        raise CampaignError(f"--deadline must be seconds from now or an end time (HH:MM, or "
                            f"YYYY-MM-DDTHH:MM), got {text!r}") from None
    if not end > now:
        raise CampaignError(f"--deadline {text!r} is in the past")
    return end


def start(settings: Settings, profile: str, until: float, lanes: int = 2, threads: int = 1, nice: int = 19,
          extra: list[str] | None = None) -> dict:
    """Launch the lanes detached; returns the state written to ``campaign.json``. ``profile`` is the argument the
    lanes get (a name or a YAML path); ``extra`` more ``campaign lane`` arguments (device, data root, ...)."""
    if lanes < 1 or threads < 1:
        raise CampaignError(f"--lanes and --threads must be at least 1, got {lanes} and {threads}")
    previous = read_state(settings)
    running = live_pids(previous)
    if running:
        raise CampaignError(f"a campaign is already running on {settings.store_root} (pid "
                            f"{', '.join(map(str, running))}); `campaign stop` first")
    root = Path(settings.store_root)
    root.mkdir(parents=True, exist_ok=True)
    log = log_path(settings)
    pids = []
    with open(log, "a") as out:
        taken = " (took over a stale campaign.json: pids " + ", ".join(map(str, previous["pids"])) + " gone)" \
            if previous else ""
        out.write(f"{_now()} campaign start: {lanes} lane(s) x {threads} thread(s), nice {nice}, until "
                  f"{_clock(until)}{taken}\n")
        out.flush()
        for lane in range(lanes):
            command = [sys.executable, "-m", "atlib", "campaign", "lane", "--profile", profile,
                       "--results", str(settings.results_dir), "--until", repr(until), "--threads", str(threads),
                       "--nice", str(nice), "--name", f"lane-{lane + 1}", *(extra or [])]
            # each lane leads a session of its own, hence a scheduler autogroup of its own, which the kernel gives
            # an equal share of the machine: one shared session (the machine shared by thread) let an AT lane with
            # its teacher ahead take 254-275 img/s from the student's 308-332, 6% less work in all than separate
            # groups' 235-243 and 429-462 (2026-12-08, AVX-512 EPYC; docs/performance.md#the-teacher-one-batch-ahead)
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            pids.append(process.pid)
    state = {"pids": pids, "started": time.time(), "until": until, "lanes": lanes, "threads": threads,
             "nice": nice, "profile": profile, "log": str(log)}
    _write_json(state_path(settings), state)
    return state


def stop(settings: Settings, wait: float = STOP_WAIT_S, at_epoch_end: bool = False) -> tuple[list[int], list[Path]]:
    """Stop the lanes (SIGTERM; SIGKILL after ``wait`` s). ``at_epoch_end``: first let each lane finish and
    checkpoint the epoch in flight (SIGUSR1, then wait for the lanes to end). Returns (pids stopped, run directories
    changed since the campaign started); ([], []) when no campaign was started on this store."""
    state = read_state(settings)
    if state is None:
        return [], []
    running = live_pids(state)
    if at_epoch_end:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        while any(alive(p) for p in running):
            time.sleep(0.2)
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + wait
    while time.monotonic() < end and any(alive(p) for p in running):
        time.sleep(0.1)
    for pid in running:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    while any(alive(p) for p in running):
        time.sleep(0.05)
    with open(log_path(settings), "a") as out:
        how = " at the end of their epochs" if at_epoch_end else ""
        out.write(f"{_now()} campaign stop: " + (f"stopped pid {', '.join(map(str, running))}{how}\n" if running
                                                   else "no lane was running\n"))
    state_path(settings).unlink(missing_ok=True)
    return running, changed_runs(settings, state["started"])


def changed_runs(settings: Settings, since: float) -> list[Path]:
    """Run directories holding a file modified after ``since``."""
    runs = Path(settings.store_root) / "runs"
    if not runs.is_dir():
        return []
    return sorted(d for d in runs.iterdir() if d.is_dir()
                  and any(f.stat().st_mtime > since for f in d.iterdir() if f.is_file()))


@dataclass
class RunProgress:
    run_id: str
    epochs_done: int
    epochs: int
    test_error: float | None
    images_per_s: float | None
    seconds_left: float | None   # at this run's own measured rate (its last five epochs)
    finished: bool


def progress(settings: Settings, run_ids: list[tuple[str, int]]) -> list[RunProgress]:
    """Where each of ``run_ids`` ((run id, its epochs)) stands, for the runs that have at least one epoch."""
    store = RunStore(settings.store_root)
    out = []
    for run_id, epochs in run_ids:
        status = store.status(run_id)
        if status not in ("finished", "interrupted"):
            continue
        rows = store.read_metrics(run_id)
        if status != "finished":
            rows = rows[:checkpoint_epoch(store, run_id)]
        if not rows:
            continue
        recent = rows[-5:]
        epoch_s = statistics.median(r["seconds"] for r in recent)
        done = len(rows)
        out.append(RunProgress(run_id, done, epochs, rows[-1]["test_error"],
                               statistics.median(r["images_per_s"] for r in recent),
                               None if status == "finished" else (epochs - done) * epoch_s, status == "finished"))
    return out


def checkpoint_epoch(store: RunStore, run_id: str) -> int:
    from .campaign import progress_of
    return progress_of(store, run_id)[1]


def describe(settings: Settings, rows: list[RunProgress]) -> str:
    state = read_state(settings)
    running = live_pids(state)
    if running:
        head = (f"campaign: running (pid {', '.join(map(str, running))}; {state['lanes']} lane(s) x "
                f"{state['threads']} thread(s)), until {_clock(state['until'])}; log {state['log']}")
    elif state:
        head = f"campaign: not running (its processes {', '.join(map(str, state['pids']))} are gone: stale state)"
    else:
        head = "campaign: not running"
    lines = [head]
    if not rows:
        lines.append("no run of the suite has a finished epoch yet")
    for r in rows:
        err = "-" if r.test_error is None else f"{r.test_error:.2f}%"
        left = "finished" if r.finished else f"{r.seconds_left / 3600:.1f} h left at its rate"
        lines.append(f"  {r.run_id}: epoch {r.epochs_done}/{r.epochs}, test error {err}, "
                     f"{r.images_per_s:.0f} img/s, {left}")
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# -- committing the campaign's progress -------------------------------------------------------------------------------
def commit(settings: Settings, repo: str | os.PathLike | None = None) -> str | None:
    """Commit the store's changed run directories (git): per unfinished run its config, metrics and checkpoint of
    the last whole epoch; per finished run its config, record, compressed metrics and the weights a later run or a
    figure needs (``packs.kept_weights``), its checkpoint removed. ``repo``: the git repository (default: the one
    holding the store). Returns the commit message (None: nothing changed).
    Safe while the lanes run: every file is replaced atomically, and a resume cuts metrics to the checkpoint."""
    from .campaign import progress_of
    from .packs import RUN_FILES, kept_weights
    repo = Path(settings.store_root) if repo is None else repo  # the repository that holds the store
    if not Path(repo).is_dir():
        return None
    store = RunStore(settings.store_root)
    runs = Path(settings.store_root) / "runs"
    top = _top(repo)
    runs_rel = Path(os.path.relpath(runs.resolve(), top))
    lines = _git(repo, "status", "--porcelain", "--untracked-files=all", "--", str(runs.resolve())).splitlines()
    changed = sorted({Path(line[3:].strip().strip('"')).relative_to(runs_rel).parts[0] for line in lines})
    if not changed:
        return None
    keep = kept_weights(settings)
    summary, paths = [], []
    for run_id in changed:
        status, epochs_done = progress_of(store, run_id)
        directory = store.run_dir(run_id).resolve()
        if status == "finished":
            store.compress_metrics(run_id)
            error = store.read_record(run_id)["test_error"]
            summary.append(f"{run_id}: finished, test error {error:.2f}%")
        elif status == "in progress":
            rows = store.read_metrics(run_id)[:epochs_done]
            epochs = json.loads((directory / "config.json").read_text()).get("epochs", "?")
            summary.append(f"{run_id}: epoch {epochs_done}/{epochs}"
                           + (f" (test error {rows[-1]['test_error']:.2f}%)" if rows else ""))
        else:
            continue
        wanted = [n for n in RUN_FILES[status] if n != "weights.pt" or run_id in keep]
        paths += [str(directory / n) for n in wanted if (directory / n).is_file()]
        tracked = _git(repo, "ls-files", "--full-name", "--", str(directory)).split()
        gone = [t for t in tracked if not (Path(top) / t).is_file()]
        if gone:
            _git(repo, "rm", "-q", "--cached", "--", *gone)
    if not paths:
        return None
    paths += _readme_paths(settings, repo, top)
    _git(repo, "add", "-f", "--", *paths)
    if not _git(repo, "diff", "--cached", "--name-only").strip():
        return None
    message = "Campaign progress: " + "; ".join(summary)
    _git(repo, "commit", "-q", "-m", message)
    return message


def _readme_paths(settings: Settings, repo, top: str) -> list[str]:
    """README.md's headline rows brought up to date (``headline.readme_with_headline``) for the profile it shows, when
    README.md has no other uncommitted change (which a progress commit must not take along): its path, or []."""
    from . import headline
    readme = Path(top) / "README.md"
    if settings.profile != headline.README_PROFILE or not readme.is_file() or \
            _git(repo, "status", "--porcelain", "--", str(readme)).strip():
        return []
    text = readme.read_text()
    updated = headline.readme_with_headline(text, settings)
    if updated == text:
        return []
    atomic_write_bytes(readme, updated.encode())
    return [str(readme)]


def _top(repo) -> str:
    return _git(repo, "rev-parse", "--show-toplevel").strip()


def _git(repo, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise CampaignError(f"git {' '.join(args[:2])} failed: {' '.join(result.stderr.split())[:300]}")
    return result.stdout
