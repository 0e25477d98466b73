"""CLI: bad input exits 2 with one line; a SIGKILLed run resumes to the same numbers; `runs` lists runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atlib.paths import REPO_ROOT as REPO
from atlib.training import engine
from atlib.training.config import RunConfig
from atlib.training.store import RunStore



def atlib(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "atlib", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600, **kw)


TINY = ["--sample", "--train-subset", "256", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    proc = atlib("train", "--student", "wrn-10-2", "--epochs", "1", "--results", str(results), *TINY)
    assert proc.returncode == 0, proc.stderr
    return results, RunStore(results).list_runs()[0]["run_id"]


BAD = [
    (["train", "--student", "wrn-15-1"], "wrn-15-1"),
    (["train", "--student", "resnet-50"], "resnet-50"),
    (["train", "--student", "wrn-16-1", "--method", "attention"], "'attention'"),
    (["train", "--student", "wrn-16-1", "--method", "at", "--teacher", "no-such-run"], "'no-such-run'"),
    (["train", "--student", "wrn-16-1", "--method", "at"], "needs --teacher"),
    (["train", "--student", "wrn-16-1", "--method", "at", "--teacher", "x", "--p", "0"], "p=0"),
    (["train", "--student", "wrn-16-1", "--method", "at", "--teacher", "x", "--p", "-2"], "p=-2"),
    (["train", "--student", "wrn-16-1", "--method", "at", "--teacher", "x", "--beta", "-1"], "beta=-1"),
    (["train", "--student", "wrn-16-1", "--method", "at", "--teacher", "x", "--kind", "avg"], "'avg'"),
    (["train", "--student", "wrn-16-1", "--method", "kd", "--teacher", "x", "--T", "0"], "T=0"),
    (["train", "--student", "wrn-16-1", "--method", "kd", "--teacher", "x", "--alpha", "2"], "alpha=2"),
    (["train", "--student", "wrn-16-1", "--epochs", "0"], "epochs=0"),
    (["train", "--student", "wrn-16-1", "--epochs", "-3"], "epochs=-3"),
    (["train", "--student", "wrn-16-1", "--data-root", "/no/such/dir", "--epochs", "1", "--device", "cpu"],
     "/no/such/dir"),
    (["train", "--student", "wrn-16-1", "--device", "tpu"], "'tpu'"),
    (["train", "--student", "wrn-16-1", "--groups", "0"], "numbered from 1"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a[2:]) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    proc = atlib(*args, "--results", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing half-created


def test_group_out_of_range_for_the_models(teacher):
    results, teacher_id = teacher
    proc = atlib("train", "--student", "wrn-10-1", "--method", "at", "--teacher", teacher_id, "--groups", "4",
                 "--epochs", "1", "--results", str(results), *TINY)
    assert proc.returncode == 2 and "group index 3 out of range" in proc.stderr and "Traceback" not in proc.stderr


def _metrics(results, run_id):
    rows = RunStore(results).read_metrics(run_id)
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "at")} for r in rows]


@pytest.mark.slow  # trains a run twice in subprocesses (about 40 s)
def test_sigkill_then_resume_gives_identical_numbers(teacher, tmp_path):
    results, teacher_id = teacher
    weights = str(RunStore(results).run_dir(teacher_id) / "weights.pt")
    args = ["train", "--student", "wrn-10-1", "--method", "at", "--teacher", weights, "--epochs", "3", *TINY]
    clean = atlib(*args, "--results", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    run_id = RunStore(tmp_path / "clean").list_runs()[0]["run_id"]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "atlib", *args, "--results", str(killed_dir)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed_dir / "runs" / run_id / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    store = RunStore(killed_dir)
    assert store.status(run_id) == "interrupted"
    assert 1 <= len(store.read_metrics(run_id)) < 3

    resumed = atlib(*args, "--results", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(killed_dir, run_id) == _metrics(tmp_path / "clean", run_id)
    assert store.read_record(run_id)["test_error"] == RunStore(tmp_path / "clean").read_record(run_id)["test_error"]


def test_rerun_of_finished_run_and_runs_listing(teacher):
    results, teacher_id = teacher
    again = atlib("train", "--student", "wrn-10-2", "--epochs", "1", "--results", str(results), *TINY[:-1])
    assert again.returncode == 0 and "not retrained" in again.stdout
    listing = atlib("runs", "--results", str(results))
    assert listing.returncode == 0
    line = next(row for row in listing.stdout.splitlines() if row.startswith(teacher_id))
    record = json.loads((RunStore(results).run_dir(teacher_id) / "record.json").read_text())
    assert "finished" in line and f"{record['test_error']:.2f}%" in line


@pytest.mark.parametrize("pairs, needle", [
    (["bogus=1"], "does not declare parameter(s) ['bogus']"),
    (["seeds"], "--set takes key=value, got 'seeds'"),
    (["=3"], "--set takes key=value, got '=3'"),
    (["seeds=[0,"], "--set seeds: cannot read the value '[0,'"),
])
def test_reproduce_overrides_are_checked_before_anything_runs(pairs, needle, tmp_path, capsys):
    from atlib.cli import main
    assert main(["reproduce", "--profile", "smoke", "--results", str(tmp_path), "--set", *pairs]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "smoke").exists()


def test_repeated_set_flags_add_up():
    from atlib.cli import build_parser
    assert build_parser().parse_args(["reproduce", "--set", "a=1", "b=2", "--set", "c=3"]).set == ["a=1", "b=2", "c=3"]


def test_override_values_are_yaml():
    from atlib.cli import _overrides
    assert _overrides(["seeds=[0,1]", "epochs=3", "train=false", "data_root=null", "profile=mine"]) == {
        "seeds": [0, 1], "epochs": 3, "train": False, "data_root": None, "profile": "mine"}


def test_library_reports_through_logging_not_print(tmp_path, caplog):
    import ast
    import logging

    import atlib
    package = Path(atlib.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "cli.py":
            continue
        tree = ast.parse(path.read_text())
        names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
        assert "print" not in names, f"{path.relative_to(package.parent)} uses print"
    config = RunConfig(student="wrn-10-1", epochs=1, dataset="sample", train_subset=32, test_subset=20,
                       batch_size=16, device="cpu")
    with caplog.at_level(logging.INFO, logger="atlib"):
        engine.train(config, results=tmp_path, progress=False)
    assert any(r.name == "atlib.training.engine" and "training wrn-10-1" in r.getMessage() for r in caplog.records)
