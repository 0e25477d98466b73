"""The campaign in the background (``python -m atlib campaign start / status / stop / commit``): detached lanes,
one campaign per store, a stop in the middle of an epoch that loses nothing but that epoch, and a resumed run that
ends exactly where an uninterrupted one does."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from atlib import cli
from atlib.paper import background, campaign
from atlib.paper.settings import settings_from_profile
from atlib.paper.suite import teacher_config
from atlib.training import deadline, engine
from atlib.training.store import RunStore

TINY = dict(profile="tiny", dataset="sample", epochs=3, seeds=[0], train_subset=384, test_subset=64, device="cpu",
            progress=False)


def write_profile(tmp_path: Path, **kw) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "results_dir": str(tmp_path / "results"), **kw}))
    return path


def settings_of(profile: Path):
    return settings_from_profile(str(profile))


def atlib(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "atlib", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def wait_for(condition, timeout: float = 90.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def comparable(rows: list[dict]) -> list[dict]:
    """Metrics rows without what depends on the machine's speed or the clock."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "at", "environment")} for r in rows]


def train_teacher_into(settings, *stores: Path) -> None:
    """The suite's WRN-16-2 teacher, trained once in this process and copied into each store (the lanes then start
    with the headline pair)."""
    config = teacher_config("wrn-16-2", settings)
    first = stores[0]
    engine.train(config, results=first, progress=False, log=None)
    for other in stores[1:]:
        shutil.copytree(first / "runs" / config.run_id(), other / "runs" / config.run_id())


def headline_ids(settings) -> list[str]:
    return [j.run_id for j in campaign.headline_jobs(settings)]


# -- the deadline argument ------------------------------------------------------------------------------------------
def test_deadline_is_seconds_or_an_end_time():
    now = time.time()
    assert background.parse_deadline("90", now) == now + 90
    end = background.parse_deadline("2030-01-02T03:04", now)
    assert time.localtime(end)[:5] == (2030, 1, 2, 3, 4)
    clock = background.parse_deadline("04:30", now)  # today or tomorrow, always ahead
    assert 0 < clock - now <= 86400 and time.localtime(clock)[3:5] == (4, 30)
    for bad in ("0", "-5", "soon", "1999-01-01T00:00"):
        with pytest.raises(background.CampaignError, match="deadline"):
            background.parse_deadline(bad, now)


# -- one campaign per store, stale state, nothing running -------------------------------------------------------------
@pytest.mark.slow  # starts a background campaign (about 45 s)
def test_one_campaign_per_store_and_stale_state(tmp_path):
    profile = write_profile(tmp_path)
    settings = settings_of(profile)
    out = atlib("campaign", "stop", "--profile", str(profile)).stdout
    assert "no campaign is running" in out
    out = atlib("campaign", "status", "--profile", str(profile)).stdout
    assert out.startswith("campaign: not running") and "no run of the suite has a finished epoch yet" in out

    # a campaign whose processes are gone (machine restarted): its state is stale and start takes it over
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    settings.store_root.mkdir(parents=True)
    background.state_path(settings).write_text(json.dumps({"pids": [gone.pid], "started": time.time(),
                                                           "until": time.time() + 60, "lanes": 1, "threads": 1,
                                                           "nice": 19, "profile": str(profile), "log": "x"}))
    assert "stale state" in atlib("campaign", "status", "--profile", str(profile)).stdout
    try:
        # a deadline far enough off that a loaded machine cannot reach it before the checks below (stop ends it)
        out = atlib("campaign", "start", "--profile", str(profile), "--deadline", "900", "--lanes", "1", "--nice", "0").stdout
        pid = background.read_state(settings)["pids"][0]
        assert f"pid {pid}" in out and pid != gone.pid
        assert f"took over a stale campaign.json: pids {gone.pid} gone" in background.log_path(settings).read_text()
        second = atlib("campaign", "start", "--profile", str(profile), "--deadline", "900", check=False)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and f"already running" in second.stderr and str(pid) in second.stderr
        assert background.alive(pid)
        assert "campaign: running (pid" in atlib("campaign", "status", "--profile", str(profile)).stdout
    finally:
        stopped = atlib("campaign", "stop", "--profile", str(profile)).stdout
    assert f"stopped pid {pid}" in stopped and not background.alive(pid)
    assert not background.state_path(settings).exists()


# -- stop in the middle of an epoch, start again: the same numbers as without the stop ------------------------------
@pytest.mark.slow  # two background campaigns of two lanes (about 95 s)
def test_stopped_and_restarted_campaign_equals_an_uninterrupted_run(tmp_path, capsys):
    profile = write_profile(tmp_path)
    settings = settings_of(profile)
    store_root = settings.store_root
    reference = tmp_path / "reference"
    train_teacher_into(settings, store_root, reference)
    at_id, student_id = headline_ids(settings)
    store = RunStore(store_root)

    atlib("campaign", "start", "--profile", str(profile), "--deadline", "300", "--lanes", "2", "--nice", "0",
          "--no-teacher-ahead")
    try:
        # each lane leads a session (hence a scheduler autogroup and a process group) of its own
        pids = background.read_state(settings)["pids"]
        assert all(os.getsid(p) == p and os.getpgid(p) == p for p in pids)
        # stop while the AT run is inside its second epoch (its first is checkpointed)
        wait_for(lambda: campaign.progress_of(store, at_id)[1] >= 1, what="the AT run's first epoch")
        time.sleep(0.3)
        # in this process: a new interpreter takes seconds to start, in which a fast CPU may finish the run
        assert cli.main(["campaign", "stop", "--profile", str(profile)]) == 0
        out = capsys.readouterr().out
    except BaseException:
        atlib("campaign", "stop", "--profile", str(profile))
        raise
    assert "stopped pid" in out and f"runs/{at_id}" in out  # names the changed run directories
    status, epochs_done = campaign.progress_of(store, at_id)
    assert status == "in progress" and 1 <= epochs_done < 3
    assert not (store.run_dir(at_id) / "claim.json").exists()  # the claim was released

    status_line = atlib("campaign", "status", "--profile", str(profile)).stdout
    assert f"{at_id}: epoch {epochs_done}/3" in status_line and "h left at its rate" in status_line

    # restarted as lanes start by default on a CPU, the AT run's teacher one batch ahead on a second thread: another
    # execution path, the same numbers
    atlib("campaign", "start", "--profile", str(profile), "--deadline", "300", "--lanes", "2", "--nice", "0")
    try:
        wait_for(lambda: all(store.status(i) == "finished" for i in (at_id, student_id)), what="the headline pair")
    finally:
        atlib("campaign", "stop", "--profile", str(profile))
    log = background.log_path(settings).read_text()
    assert f"{at_id}: resuming after epoch {epochs_done}/3" in log
    assert f"{at_id} epoch 3/3: train loss" in log and "it/s" not in log  # one line per epoch, no progress bar

    # the same two runs, uninterrupted, in this process (one thread, channels-last: the lanes' execution path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in campaign.headline_jobs(settings):
            engine.train(job.config, results=reference, progress=False, log=None, channels_last=True)
    finally:
        torch.set_num_threads(threads)
    ref = RunStore(reference)
    for run_id in (at_id, student_id):
        assert comparable(store.read_metrics(run_id)) == comparable(ref.read_metrics(run_id))
        assert store.read_record(run_id)["test_error"] == ref.read_record(run_id)["test_error"]
        rows = store.read_metrics(run_id)
        assert all(r["environment"]["threads"] == 1 and r["environment"]["channels_last"] for r in rows)
        assert all(r["at"].endswith("Z") for r in rows)  # when each epoch ended: provenance per segment
    ahead = [[r["environment"].get("teacher_ahead", False) for r in store.read_metrics(i)] for i in (at_id, student_id)]
    assert ahead[0] == [False] * epochs_done + [True] * (3 - epochs_done) and not any(ahead[1])


@pytest.mark.slow  # starts a background campaign (about 30 s)
def test_stop_at_epoch_end_finishes_and_keeps_the_epoch_in_flight(tmp_path, capsys):
    profile = write_profile(tmp_path, train_subset=768)
    settings = settings_of(profile)
    train_teacher_into(settings, settings.store_root)
    at_id, student_id = headline_ids(settings)
    store = RunStore(settings.store_root)
    atlib("campaign", "start", "--profile", str(profile), "--deadline", "300", "--lanes", "2", "--nice", "0")
    try:
        wait_for(lambda: campaign.progress_of(store, at_id)[1] >= 1, what="the AT run's first epoch")
        assert cli.main(["campaign", "stop", "--profile", str(profile), "--at-epoch-end"]) == 0  # waits for the lanes
    except BaseException:
        atlib("campaign", "stop", "--profile", str(profile))
        raise
    out = capsys.readouterr().out
    assert "finishes the epoch in flight" in out and "stopped pid" in out
    assert background.read_state(settings) is None
    status, epochs_done = campaign.progress_of(store, at_id)
    assert status == "in progress" and epochs_done == 2  # the second epoch, in flight at the stop, was kept
    assert (store.run_dir(at_id) / "checkpoint.pt").is_file()
    assert not (store.run_dir(at_id) / "claim.json").exists()
    log = background.log_path(settings).read_text()
    assert f"{at_id}: stopped after epoch 2/3, as asked" in log and "at the end of their epochs" in log


def test_a_stop_request_ends_training_at_the_next_epoch_boundary(monkeypatch):
    monkeypatch.setattr(deadline, "_stop_requested", False)
    deadline.check("run", 1e9, 1, 3)  # no deadline, no request: goes on
    deadline.request_stop()
    assert deadline.stop_requested()
    deadline.check("run", 0.0, 3, 3)  # after the last epoch the run finishes (its record), it is not stopped
    with pytest.raises(deadline.DeadlineReached, match="stopped after epoch 1/3, as asked"):
        deadline.check("run", 0.0, 1, 3)


# -- a corrupt checkpoint: refused with one line naming the file, the rest goes on -----------------------------------
@pytest.mark.slow  # starts a background campaign (about 25 s)
def test_a_corrupt_checkpoint_is_refused_and_nothing_finished_is_lost(tmp_path):
    profile = write_profile(tmp_path, epochs=1, train_subset=64)
    settings = settings_of(profile)
    train_teacher_into(settings, settings.store_root)
    at_id, student_id = headline_ids(settings)
    store = RunStore(settings.store_root)
    teacher_dir = store.run_dir(teacher_config("wrn-16-2", settings).run_id())
    before = {p.name: p.read_bytes() for p in teacher_dir.iterdir()}
    (store.run_dir(at_id)).mkdir(parents=True)
    (store.run_dir(at_id) / "checkpoint.pt").write_bytes(b"not a checkpoint")
    atlib("campaign", "start", "--profile", str(profile), "--deadline", "300", "--lanes", "1", "--nice", "0")
    try:
        wait_for(lambda: store.status(student_id) == "finished", what="the student run")
    finally:
        atlib("campaign", "stop", "--profile", str(profile))
    log = background.log_path(settings).read_text()
    line = next(x for x in log.splitlines() if at_id in x and "failed" in x)
    assert str(store.run_dir(at_id) / "checkpoint.pt") in line and "corrupt or truncated" in line
    assert (store.run_dir(at_id) / "checkpoint.pt").read_bytes() == b"not a checkpoint"  # never trained over
    assert {p.name: p.read_bytes() for p in teacher_dir.iterdir()} == before


# -- committing the campaign's progress -------------------------------------------------------------------------------
README = """# results
| cell | ours | paper (median of 5 seeds) |
|---|---|---:|
| WRN-16-1 student | training on CPU: epoch K/200 | 8.77 |
| WRN-16-1 with AT from the WRN-16-2 | not trained yet | 7.93 |
"""


def test_commit_stages_what_the_campaign_changed(tmp_path, monkeypatch):
    from atlib.paper import headline
    profile = write_profile(tmp_path, epochs=2, train_subset=64)
    settings = settings_of(profile)
    monkeypatch.setattr(headline, "README_PROFILE", settings.profile)  # README.md shows this profile's headline pair
    repo = tmp_path
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for key, value in (("user.email", "t@example.com"), ("user.name", "t")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    (repo / "README.md").write_text(README)
    subprocess.run(["git", "-C", str(repo), "add", "README.md"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "readme"], check=True)
    train_teacher_into(settings, settings.store_root)
    at_id, student_id = headline_ids(settings)
    at = campaign.headline_jobs(settings)[0].config
    store = RunStore(settings.store_root)
    # an AT run stopped after one of its two epochs (what a lane leaves behind)
    from atlib.training.deadline import DeadlineReached, epoch_deadline
    with pytest.raises(DeadlineReached), epoch_deadline(-1e9):
        engine.train(at, results=settings.store_root, progress=False, log=None)
    message = background.commit(settings, repo)
    teacher_id = teacher_config("wrn-16-2", settings).run_id()
    assert message.startswith("Campaign progress: ") and f"{at_id}: epoch 1/2" in message
    assert f"{teacher_id}: finished, test error" in message
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    run_files = lambda run_id: sorted(Path(t).name for t in tracked if f"/{run_id}/" in t)  # noqa: E731
    assert run_files(at_id) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    assert run_files(teacher_id) == ["config.json", "metrics.jsonl.gz", "record.json", "weights.pt"]  # a teacher
    at_error = store.read_metrics(at_id)[0]["test_error"]
    committed = subprocess.run(["git", "-C", str(repo), "show", "HEAD:README.md"], capture_output=True,
                               text=True).stdout  # the headline rows now say how far the pair got
    assert committed == README.replace("| training on CPU: epoch K/200 |", "| not trained yet |").replace(
        "| not trained yet | 7.93", f"| training: epoch 1/2 (test error now {at_error:.2f}%) | 7.93")
    assert background.commit(settings, repo) is None  # nothing changed since

    engine.train(at, results=settings.store_root, progress=False, log=None)  # the AT run finishes
    (repo / "README.md").write_text(committed + "an edit of someone's, not committed yet\n")
    message = background.commit(settings, repo)
    assert f"{at_id}: finished, test error" in message
    assert subprocess.run(["git", "-C", str(repo), "show", "HEAD:README.md"], capture_output=True,
                          text=True).stdout == committed  # a README with other changes is not taken along
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    # its checkpoint and plain metrics leave the repository; its weights stay (Figure 6 shows the AT student)
    assert run_files(at_id) == ["config.json", "metrics.jsonl.gz", "record.json", "weights.pt"]
    assert cli.main(["campaign", "commit", "--profile", str(profile)]) == 0  # from the CLI: nothing left to commit


def test_start_refuses_compile_with_the_teacher_ahead_in_one_line(tmp_path, capsys):
    profile = write_profile(tmp_path)
    code = cli.main(["campaign", "start", "--profile", str(profile), "--deadline", "60", "--compile",
                     "--teacher-ahead"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--compile and --teacher-ahead together" in err
    assert background.read_state(settings_of(profile)) is None  # nothing started
