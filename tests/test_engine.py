"""Engine: training on the embedded sample, records, resume, no retraining, divergence, corrupt checkpoints."""

import json
import math

import pytest
import torch

from atlib.methods import method_terms
from atlib.training import engine
from atlib.training.config import ConfigError, RunConfig, scaled_milestones
from atlib.training.store import CorruptCheckpointError, RunStore
from interrupts import interrupted_on_call
from teacher_runs import copy_teacher


def tiny(student="wrn-10-1", **kw):
    base = dict(student=student, dataset="sample", epochs=2, train_subset=256, device="cpu")
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def teacher_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    record = engine.train(tiny("wrn-10-2", epochs=1), results=root, progress=False, log=None)
    return root, record["run_id"]


@pytest.mark.slow  # trains WRN-16-1 on the sample for a while (about 100 s of CPU)
def test_short_training_lowers_loss_and_beats_chance(tmp_path):
    record = engine.train(RunConfig(student="wrn-16-1", dataset="sample", epochs=3, device="cpu"),
                          results=tmp_path, progress=False, log=None)
    metrics = RunStore(tmp_path).read_metrics(record["run_id"])
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert record["test_error"] == metrics[-1]["test_error"] < 80.0  # chance is 90%


def test_metrics_rows_carry_terms_groups_config_and_speed(teacher_results):
    root, teacher = teacher_results
    cfg = tiny(method="at", terms=method_terms("at"), teacher=teacher, epochs=1)
    record = engine.train(cfg, results=root, progress=False, log=None)
    store = RunStore(root)
    (row,) = store.read_metrics(record["run_id"])
    for key in ["epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "seconds", "images_per_s"]:
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), key
    assert set(row["terms"]) == {"ce", "at"} and set(row["details"]) == {"at/g1", "at/g2", "at/g3"}
    assert row["train_loss"] == pytest.approx(row["terms"]["ce"] + row["terms"]["at"], rel=1e-6)
    assert row["config"]["teacher"] == teacher and row["config"]["teacher_arch"] == "wrn-10-2"
    assert row["config"]["terms"]["at"] == {"beta": 1000.0, "p": 2, "kind": "sum"}
    run_dir = store.run_dir(record["run_id"])
    assert record["run_id"].startswith("wrn-10-1_at_from-wrn-10-2_s0-")
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "metrics.jsonl", "record.json", "weights.pt"]
    assert json.loads((run_dir / "config.json").read_text())["student"] == "wrn-10-1"


def test_teacher_is_frozen_in_eval_mode(teacher_results):
    root, teacher = teacher_results
    cfg = tiny(method="kd", terms=method_terms("kd"), teacher=teacher[:12])  # a unique prefix works too
    resolved, run_id, model = engine.prepare(cfg, RunStore(root))
    assert resolved.teacher == teacher
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.train(cfg, results=root, progress=False, log=None)
    after = RunStore(root).load_weights(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_progress_bar_shows_loss_and_speed(tmp_path, capsys):
    engine.train(tiny(epochs=1, train_subset=1280), results=tmp_path, progress=True, log=None)
    err = capsys.readouterr().err
    assert "loss=" in err and "img/s" in err


def test_finished_run_is_not_retrained(tmp_path, monkeypatch):
    cfg = tiny(epochs=1)
    first = engine.train(cfg, results=tmp_path, progress=False, log=None)

    def no_training(*args, **kwargs):
        raise AssertionError("an epoch was run for a finished configuration")
    monkeypatch.setattr(engine, "train_epoch_steps", no_training)
    again = engine.train(cfg, results=tmp_path, progress=False, log=None)
    assert again == first
    assert len(RunStore(tmp_path).read_metrics(first["run_id"])) == 1


def interrupt_at_epoch(cfg, results, epoch):
    """Train ``cfg`` and raise KeyboardInterrupt when epoch ``epoch`` (1-based) starts."""
    with interrupted_on_call(engine, "train_epoch_steps", epoch):
        engine.train(cfg, results=results, progress=False, log=None)


@pytest.mark.slow  # trains a run twice (about 25 s); test_resume_fixture.py resumes a pinned checkpoint in the fast set
def test_in_process_resume_matches_uninterrupted(tmp_path):
    cfg = tiny(epochs=3)
    full = engine.train(cfg, results=tmp_path / "a", progress=False, log=None)
    interrupt_at_epoch(cfg, tmp_path / "b", 3)
    store = RunStore(tmp_path / "b")
    assert store.status(full["run_id"]) == "interrupted" and len(store.read_metrics(full["run_id"])) == 2
    resumed = engine.train(cfg, results=tmp_path / "b", progress=False, log=None)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "at")} for r in rows]
    assert strip(store.read_metrics(full["run_id"])) == strip(RunStore(tmp_path / "a").read_metrics(full["run_id"]))
    assert resumed["test_error"] == full["test_error"]
    a, b = RunStore(tmp_path / "a").load_weights(full["run_id"]), store.load_weights(full["run_id"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_message_and_keeps_records(tmp_path, monkeypatch):
    from atlib import losses
    real_ce = losses.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, labels):
        calls["n"] += 1
        value = real_ce(logits, labels)
        return value * float("nan") if calls["n"] > 2 else value  # 2 batches per epoch: epoch 2 diverges
    monkeypatch.setattr(losses, "cross_entropy", poisoned)
    cfg = tiny(epochs=3)
    with pytest.raises(engine.TrainingError, match=r"diverged at epoch 2: non-finite training loss"):
        engine.train(cfg, results=tmp_path, progress=False, log=None)
    store = RunStore(tmp_path)
    run_id = store.list_runs()[0]["run_id"]
    assert [m["epoch"] for m in store.read_metrics(run_id)] == [1]
    assert store.load_checkpoint(run_id)["epoch"] == 1


def test_corrupt_checkpoint_is_reported_then_restart_discards_it(tmp_path):
    cfg = tiny(epochs=2)
    interrupt_at_epoch(cfg, tmp_path, 2)
    store = RunStore(tmp_path)
    run_id = store.list_runs()[0]["run_id"]
    ckpt = store.run_dir(run_id) / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="checkpoint.pt is corrupt or truncated"):
        engine.train(cfg, results=tmp_path, progress=False, log=None)
    assert ckpt.exists()  # reported, not silently retrained over
    record = engine.train(cfg, results=tmp_path, progress=False, log=None, restart=True)
    assert record["epochs"] == 2 and len(store.read_metrics(run_id)) == 2


def test_teacher_weights_file_and_missing_teacher(teacher_results, tmp_path):
    root, teacher = teacher_results
    weights = RunStore(root).run_dir(teacher) / "weights.pt"
    cfg = tiny(method="at", terms=method_terms("at"), teacher=str(weights), epochs=1)
    resolved, run_id, model = engine.prepare(cfg, RunStore(tmp_path))
    assert resolved.teacher_arch == "wrn-10-2"
    # the teacher is its content: the same file elsewhere is the same run; another file's content another run
    assert resolved.teacher.startswith("sha256:") and resolved.teacher_file == str(weights.resolve())
    assert "teacher_file" not in resolved.identity()
    elsewhere = tmp_path / "copy" / "teacher.pt"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(weights.read_bytes())
    copied = tiny(method="at", terms=method_terms("at"), teacher=str(elsewhere), teacher_arch="wrn-10-2", epochs=1)
    assert engine.prepare(copied, RunStore(tmp_path))[1] == run_id
    state = torch.load(weights, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, elsewhere)
    assert engine.prepare(copied, RunStore(tmp_path))[1] != run_id
    assert engine.prepare(resolved, RunStore(tmp_path))[1] == run_id  # a resolved config resolves to itself
    with pytest.raises(engine.TrainingError, match="'no-such-run'"):
        engine.prepare(tiny(method="at", terms=method_terms("at"), teacher="no-such-run"), RunStore(root))
    with pytest.raises(engine.TrainingError, match="needs a teacher"):
        engine.prepare(tiny(method="at", terms=method_terms("at")), RunStore(root))


def test_schedule_and_config_identity():
    assert scaled_milestones(200) == [60, 120, 160] and scaled_milestones(15) == [4, 9, 12]
    cfg = RunConfig(student="wrn-16-1")
    assert [cfg.lr_at(e) for e in (0, 59, 60, 120, 160, 199)] == pytest.approx([0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008])
    assert cfg.run_id() == RunConfig(student="wrn-16-1", device="cuda", data_root="/x").run_id()
    assert cfg.run_id() != RunConfig(student="wrn-16-1", seed=1).run_id()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    for bad, match in [({"epochs": 0}, "epochs=0"), ({"precision": "fp8"}, "'fp8'"), ({"augment": "zca"}, "'zca'"),
                       ({"terms": {"at": {"p": -1}}}, "p=-1"), ({"student": "wrn-16"}, "'wrn-16'")]:
        with pytest.raises(ConfigError, match=match):
            RunConfig(**{"student": "wrn-16-1", **bad})


@pytest.mark.slow  # torch.compile: about 25 s of CPU with a warm compile cache, longer without
def test_compiled_run_equals_eager_run(teacher_results, tmp_path, float64):
    """``train(compile=True)`` (student and teacher forward through torch.compile) trains what the eager path
    trains: float64, with a smaller last batch (another shape) and evaluation (eval mode) between epochs."""
    runs = {}
    for compiled in (False, True):
        results = tmp_path / str(compiled)
        teacher = copy_teacher(teacher_results, results)
        cfg = tiny(method="at", terms=method_terms("at"), teacher=teacher, epochs=2, train_subset=80, test_subset=64,
                   batch_size=32)  # 80 = 2 batches of 32 + one of 16
        record = engine.train(cfg, results=results, progress=False, log=None, compile=compiled)
        assert record["environment"]["compiled"] is compiled
        runs[compiled] = (RunStore(results).read_metrics(record["run_id"]), RunStore(results).load_weights(
            record["run_id"]))
    (eager_rows, eager_weights), (rows, weights) = runs[False], runs[True]
    for row, eager in zip(rows, eager_rows):
        for name in ("train_loss", "test_loss"):
            assert row[name] == pytest.approx(eager[name], rel=1e-9), name
        assert row["terms"] == pytest.approx(eager["terms"], rel=1e-9) and row["terms"]["at"] > 0
        assert row["test_error"] == eager["test_error"]
    for key, value in eager_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-9, atol=1e-11, msg=key)


def test_compile_refuses_double_backpropagation_with_one_line(tmp_path):
    with pytest.raises(engine.TrainingError, match=r"compile: the terms \['min_l2'\] backpropagate through an input "
                                                   r"gradient"):
        engine.train(tiny("nin-thin-nobn", method="min-l2", terms=method_terms("min-l2"), epochs=1),
                     results=tmp_path, progress=False, log=None, compile=True)
    assert RunStore(tmp_path).list_runs() == []  # refused before anything was written
