"""Concurrent runs (``training.concurrent``) are ordinary runs: on a CPU, interleaving them step by step gives the very
same weights and metrics as training them one by one (bit for bit); an interrupted set resumes, together or run by
run; a failing run stops alone; ``schedule``/``plan``/``run_cells`` gather a cell's seeds into concurrent sets."""

import json

import pytest

from atlib.cli import main
from atlib.methods import method_terms
from atlib.paper import schedule as schedule_mod
from atlib.paper.grids import make_cell
from atlib.paper.plan import estimate, format_plan, group_shape, load_rates, plan_groups, shape_key, shape_label
from atlib.paper.schedule import ConcurrentSet, concurrent_size, is_cohort, run_cells, schedule
from atlib.paper.settings import Settings
from atlib.training import engine
from atlib.training.concurrent import train_concurrently
from atlib.training.config import RunConfig
from atlib.training.store import RunStore
from interrupts import interrupted_on_call
from teacher_runs import copy_teacher, train_teacher

COMMON = dict(dataset="sample", train_subset=160, test_subset=100, batch_size=64, device="cpu", lr_milestones=[1])
TIMING = ("seconds", "images_per_s", "at", "environment")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return train_teacher(tmp_path_factory.mktemp("concurrent_teacher"),
                         RunConfig(student="wrn-10-2", epochs=2, **COMMON))


def _results_with_teacher(teacher, dest):
    copy_teacher(teacher, dest)
    return dest


def _configs(teacher_id):
    """Different networks, methods, lengths and seeds: a student, AT from the teacher, a double-backprop run."""
    return [RunConfig(student="wrn-10-1", epochs=3, seed=1, **COMMON),
            RunConfig(student="wrn-10-1", method="at", terms=method_terms("at"), teacher=teacher_id, epochs=2,
                      **COMMON),
            RunConfig(student="nin-thin-nobn", method="min-l2", terms=method_terms("min-l2"), epochs=2, **COMMON)]


def _same_run(root_a, root_b, run_id):
    a, b = RunStore(root_a), RunStore(root_b)
    wa, wb = a.load_weights(run_id), b.load_weights(run_id)
    assert set(wa) == set(wb) and all(wa[k].equal(wb[k]) for k in wa), run_id
    rows_a, rows_b = a.read_metrics(run_id), b.read_metrics(run_id)
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}


@pytest.mark.slow  # trains runs twice (about 55 s of CPU)
def test_concurrent_runs_equal_runs_trained_one_by_one(teacher, tmp_path):
    together_root = _results_with_teacher(teacher, tmp_path / "together")
    alone_root = _results_with_teacher(teacher, tmp_path / "alone")
    configs = _configs(teacher[1])
    together = train_concurrently(configs, results=together_root, progress=False, log=None)
    alone = [engine.train(c, results=alone_root, progress=False, log=None) for c in configs]
    for t, a in zip(together, alone):
        assert t["run_id"] == a["run_id"] and t["test_error"] == a["test_error"]
        assert t["environment"]["concurrent_runs"] == 3 and "concurrent_runs" not in a["environment"]
        _same_run(together_root, alone_root, t["run_id"])
    again = train_concurrently(configs, results=together_root, progress=False, log=None)
    assert again == together  # finished runs are returned, not retrained


@pytest.mark.slow  # trains runs twice (about 70 s of CPU)
def test_interrupted_set_resumes_together_or_run_by_run(teacher, tmp_path):
    configs = _configs(teacher[1])
    full = _results_with_teacher(teacher, tmp_path / "full")
    records = train_concurrently(configs, results=full, progress=False, log=None)
    for name in ("together", "one_by_one"):
        root = _results_with_teacher(teacher, tmp_path / name)
        # the runs step in turn: the first is inside its epoch 2 when the second's (the 5th epoch started) begins
        with interrupted_on_call(engine, "train_epoch_steps", 5):
            train_concurrently(configs, results=root, progress=False, log=None)
        store = RunStore(root)
        assert [len(store.read_metrics(r["run_id"])) for r in records] == [1, 1, 1]
        if name == "together":
            train_concurrently(configs, results=root, progress=False, log=None)
        else:
            for c in configs:
                engine.train(c, results=root, progress=False, log=None)
        for r in records:
            _same_run(full, root, r["run_id"])


def test_a_failing_run_stops_alone(teacher, tmp_path):
    root = _results_with_teacher(teacher, tmp_path)
    good = _configs(teacher[1])[:2]
    missing = RunConfig(student="wrn-10-1", method="kd", terms=method_terms("kd"), teacher="no-such-run", epochs=2,
                        **COMMON)
    with pytest.raises(engine.TrainingError, match=r"1 of 3 concurrent runs failed.*no-such-run"):
        train_concurrently([good[0], missing, good[1]], results=root, progress=False, log=None)
    runs = {r["run_id"]: r["status"] for r in RunStore(root).list_runs() if r["run_id"] != teacher[1]}
    assert sorted(runs) == sorted(r["run_id"] for r in train_concurrently(good, results=root, progress=False,
                                                                          log=None))
    assert set(runs.values()) == {"finished"}


@pytest.mark.parametrize("configs, message", [
    ([], "at least one run"),
    ([RunConfig(student="wrn-10-1", epochs=2, **COMMON)] * 2, "runs 0 and 1 are the same run"),
    ([RunConfig(student="wrn-10-1", epochs=2, **COMMON),
      RunConfig(student="wrn-10-1", epochs=2, seed=1, **{**COMMON, "device": "auto"})], "share one device"),
])
def test_refusals(configs, message, tmp_path):
    with pytest.raises(engine.TrainingError, match=message):
        train_concurrently(configs, results=tmp_path, progress=False, log=None)


def _run(student="nin-thin-nobn", method="min-l2", seed=0, teacher_arch=None):
    return RunConfig(student=student, method=method, terms=method_terms(method), seed=seed, teacher_arch=teacher_arch,
                     teacher=None if teacher_arch is None else f"{teacher_arch}-run")


def test_schedule_gathers_seeds_of_one_shape_into_concurrent_sets():
    runs = [_run(seed=s) for s in range(5)] + [_run(method="symmetry", seed=s) for s in range(3)] \
        + [_run(student="wrn-16-1", method="at", seed=s, teacher_arch="wrn-16-2") for s in range(8)] \
        + [_run(method="student", seed=7)]
    groups = schedule(runs, size=8, concurrent=4)
    assert [len(g) for g in groups] == [4, 1, 3, 8, 1]
    assert [type(g) for g in groups] == [ConcurrentSet, list, ConcurrentSet, list, list]
    assert [is_cohort(g) for g in groups] == [False, False, False, True, False]
    assert {c.method for c in groups[0] + groups[1]} == {"min-l2"} and [c.seed for c in groups[1]] == [4]
    assert schedule(runs, size=8) == schedule(runs, size=8, concurrent=1)
    assert sum(len(g) for g in schedule(runs, size=1, concurrent=5)) == len(runs)
    shape = group_shape(groups[0], shared=False)
    assert shape["concurrent"] is True and shape["k"] == 4 and shape_label(shape) == \
        "4 concurrent: nin-thin-nobn [4 x min-l2]"
    assert "concurrent" not in group_shape(groups[3], shared=False)  # cohort keys stay as older rate files have them


def test_plan_estimates_concurrent_sets_from_their_rate_or_one_run_alone(tmp_path):
    settings = Settings(profile="paper", dataset="cifar10", seeds=[0, 1, 2, 3, 4], cohort=16, concurrent=5)
    rows = plan_groups(settings, ["table3"])
    sets = [r for r in rows if r["shape"].get("concurrent")]
    assert sets and all(r["runs"] == 5 for r in sets) and sum(r["runs"] for r in rows) == \
        sum(r["runs"] for r in plan_groups(Settings(profile="paper", dataset="cifar10", seeds=[0, 1, 2, 3, 4],
                                                    cohort=16), ["table3"]))
    measured, single = sets[0]["shape"], {**sets[1]["shape"], "k": 1, "methods": sets[1]["shape"]["methods"][:1]}
    del single["concurrent"]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [{"label": "a", "shape": measured, "images_per_s": 50_000.0},
                                             {"label": "b", "shape": single, "images_per_s": 10_000.0}]}))
    timed = estimate(rows, load_rates(bench))
    by_key = {shape_key(r["shape"]): r for r in timed}
    first, second = by_key[shape_key(measured)], by_key[shape_key(sets[1]["shape"])]
    assert first["rate"] == 50_000.0 and not first["approximate"]
    assert second["rate"] == 10_000.0 and second["approximate"]  # never measured together: one run alone
    assert "5 concurrent" in format_plan(timed)


def test_cli_plan_takes_concurrent(capsys):
    assert main(["plan", "--profile", "paper", "--tables", "table3", "--concurrent", "5"]) == 0
    assert "5 concurrent: nin-thin-nobn [5 x min-l2]" in capsys.readouterr().out
    assert main(["plan", "--profile", "paper", "--concurrent", "0"]) == 2
    assert "--concurrent must be at least 1, got 0" in capsys.readouterr().err


def test_run_cells_trains_a_concurrent_set(tmp_path, monkeypatch):
    monkeypatch.setattr(schedule_mod, "concurrent_size", lambda settings: 2)  # as on a GPU
    cell = make_cell("t", "row", "col", None, "wrn-10-1")
    settings = Settings(profile="p", dataset="sample", epochs=1, seeds=[0, 1], train_subset=128, test_subset=64,
                        device="cpu", results_dir=str(tmp_path), progress=False)
    lines = []
    records = run_cells([cell], settings, log=lines.append)
    assert [r["environment"]["concurrent_runs"] for r in records] == [2, 2]
    assert any("concurrent of 2" in line for line in lines)


def test_concurrent_setting_is_checked():
    with pytest.raises(ValueError, match="concurrent must be a positive integer, got concurrent=0"):
        concurrent_size(Settings(profile="p", concurrent=0))
    assert concurrent_size(Settings(profile="p", concurrent=4, device="cpu")) == 1
    assert concurrent_size(Settings(profile="p", concurrent=4), on_gpu=True) == 4
