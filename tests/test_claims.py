"""Many processes, one suite (``training.claims``): claims are exclusive, stale ones are taken over, a process whose
claim was taken stops at an epoch boundary; three ``atlib work`` processes on a tiny profile, one killed with SIGKILL
mid-run, finish every run exactly once with the numbers of a single process, losing nothing."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from atlib.paper.settings import settings_from_profile
from atlib.paper.workers import work
from atlib.paths import REPO_ROOT as REPO
from atlib.training import claims
from atlib.training.claims import ClaimLost, try_claim
from atlib.training.store import CHECKPOINT_FILE, RunStore

TEACHER_RUN = "wrn-16-2_student_s0-650d9624"
TINY = {"epochs": 3, "train_subset": 256, "test_subset": 50, "seeds": [0]}


def _results(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "results" / "one-seed" / "runs" / TEACHER_RUN, tmp_path / "one-seed" / "runs" / TEACHER_RUN)
    return tmp_path


def test_a_claim_is_exclusive_until_released(tmp_path):
    store = RunStore(tmp_path)
    first = try_claim(store, "run-a", "one", heartbeat=0.05)
    assert first is not None and claims.owner_of(store, "run-a")["owner"] == "one"
    assert try_claim(store, "run-a", "two") is None
    time.sleep(1.5)  # longer than stale_after below: only the heartbeats (every 0.05 s) keep it fresh
    assert try_claim(store, "run-a", "two", stale_after=1.0) is None
    first.release()
    assert claims.owner_of(store, "run-a") is None
    second = try_claim(store, "run-a", "two")
    assert second is not None and second.held()
    second.release()


def test_a_stale_claim_is_taken_over_once_and_its_holder_stops(tmp_path):
    store = RunStore(tmp_path)
    dead = try_claim(store, "run-b", "dead", heartbeat=3600)  # never beats again: as if its process had died
    path = store.run_dir("run-b") / claims.CLAIM_FILE
    old = time.time() - 100
    os.utime(path, (old, old))
    assert try_claim(store, "run-b", "fresh", stale_after=1000) is None  # not stale yet at that age
    taker = try_claim(store, "run-b", "taker", stale_after=50)
    assert taker is not None and claims.owner_of(store, "run-b")["owner"] == "taker"
    assert try_claim(store, "run-b", "third", stale_after=50) is None  # only one takes over
    claims._held["run-b"] = dead
    try:
        with pytest.raises(ClaimLost, match="another process took over"):
            claims.check("run-b")
    finally:
        claims._held.pop("run-b")
    dead.release()  # the old holder's release leaves the new claim alone
    assert claims.owner_of(store, "run-b")["owner"] == "taker"
    taker.release()


def test_a_dead_takers_lock_is_moved_aside(tmp_path):
    store = RunStore(tmp_path)
    dead = try_claim(store, "run-c", "dead", heartbeat=3600)
    lock = store.run_dir("run-c") / claims.TAKEOVER_DIR
    lock.mkdir()  # a taker that died mid-takeover
    old = time.time() - 100
    for path in (store.run_dir("run-c") / claims.CLAIM_FILE, lock):
        os.utime(path, (old, old))
    assert try_claim(store, "run-c", "taker", stale_after=50) is None and not lock.exists()
    taker = try_claim(store, "run-c", "taker", stale_after=50)
    assert taker is not None and taker.held() and not dead.held()
    dead.release()
    taker.release()
    assert not store.run_dir("run-c").exists()  # nothing else was in it: released claims leave no directory


@pytest.mark.slow  # trains three runs of the tiny demo (about 35 s)
def test_a_failing_run_is_skipped_and_named_at_the_end(tmp_path, monkeypatch):
    from atlib.training import engine
    profile_settings = settings_from_profile("cpu-demo", results_dir=str(_results(tmp_path)), **TINY)
    real = engine.train

    def failing(config, **kwargs):
        if config.method == "at":
            raise engine.TrainingError("diverged (simulated)")
        return real(config, **kwargs)

    monkeypatch.setattr(engine, "train", failing)
    logged = []
    with pytest.raises(engine.TrainingError, match=r"1 run\(s\) failed here \(wrn-16-1_at_from-wrn-16-2_s0-\w+: "
                                                   r"TrainingError: diverged \(simulated\)\); 3 of 4 finished"):
        work(profile_settings, poll=0.1, log=logged.append)
    store = RunStore(profile_settings.store_root)
    assert sorted(r["status"] for r in store.list_runs()) == ["finished"] * 3
    assert not list(store.runs_root.glob(f"*/{claims.CLAIM_FILE}"))


def test_work_refuses_the_protocol_on_a_cpu(tmp_path):
    settings = settings_from_profile("one-seed", results_dir=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="does not train here"):
        work(settings, log=lambda _: None)


def _finished_lines(text: str) -> list[str]:
    return [line.split()[2].rstrip(":") for line in text.splitlines() if ": finished " in line]


@pytest.mark.slow
def test_three_processes_one_killed_finish_every_run_once_with_single_process_numbers(tmp_path):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "profiles" / "cpu-demo.yaml").read_text()),
                                       **TINY, "profile": "tiny"}))
    # one process alone: the reference numbers
    alone = _results(tmp_path / "alone")
    settings = settings_from_profile(str(profile), results_dir=str(alone))
    reference = work(settings, poll=0.2, log=lambda _: None)
    assert len(reference) == 4

    shared = _results(tmp_path / "shared")
    command = [sys.executable, "-m", "atlib", "work", "--profile", str(profile), "--results", str(shared),
               "--stale-after", "3", "--heartbeat", "0.3", "--poll", "0.3"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    workers = [subprocess.Popen(command + ["--name", f"w{i}"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for i in range(3)]
    store = RunStore(shared / "tiny")
    killed = victim = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline:  # kill a worker in the middle of a run
        for run_dir in sorted(store.runs_root.glob("*")) if store.runs_root.exists() else []:
            owner = claims.owner_of(store, run_dir.name)
            if owner and (run_dir / CHECKPOINT_FILE).exists() and store.status(run_dir.name) != "finished":
                worker = next((w for w in workers if w.pid == owner["pid"]), None)
                if worker is not None:
                    worker.send_signal(signal.SIGKILL)
                    killed, victim = worker, run_dir.name
                    break
        time.sleep(0.05)
    assert killed is not None, "no worker was caught in the middle of a run"
    outputs = {}
    for w in workers:
        out, err = w.communicate(timeout=300)
        outputs[w.pid] = out
        assert w.returncode == (-signal.SIGKILL if w is killed else 0), err[-2000:]

    every = {r["run_id"]: r for r in store.list_runs()}
    ids = sorted(reference)
    assert sorted(every) == ids and all(r["status"] == "finished" for r in every.values())
    finished = [i for out in outputs.values() for i in _finished_lines(out)]
    assert sorted(finished) == ids  # each run finished exactly once, by one process
    assert victim not in _finished_lines(outputs[killed.pid])
    survivors = "".join(out for pid, out in outputs.items() if pid != killed.pid)
    assert f"{victim}: took over the stale claim of w" in survivors, survivors
    assert f"{victim}: resuming after epoch" in survivors, survivors
    single = RunStore(alone / "tiny")
    for run_id in ids:  # the same numbers as one process alone, the killed run included
        assert store.read_record(run_id)["test_error"] == single.read_record(run_id)["test_error"], run_id
        timing = ("seconds", "images_per_s", "at", "config", "environment")  # config: runtime paths differ
        strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
        assert strip(store.read_metrics(run_id)) == strip(single.read_metrics(run_id)), run_id
        assert not (store.run_dir(run_id) / claims.CLAIM_FILE).exists()
