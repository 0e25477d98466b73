"""Runs sharing their batches (``training.shared_batches``): each run's numbers are those of training it alone."""


import pytest
import torch

from atlib.training import engine, shared_batches
from atlib.training.config import RunConfig
from atlib.training.devices import TrainingError
from atlib.methods import method_terms
from atlib.training.shared_batches import SharedTeacher, train_shared
from atlib.training.store import RunStore
from interrupts import interrupted_on_call

VOLATILE = ("seconds", "images_per_s", "at", "environment")  # when, how fast and with whom: not the run's numbers


def tiny(method="student", teacher=None, **kw):
    base = dict(student="wrn-10-1", method=method, terms=method_terms(method), teacher=teacher, dataset="sample",
                epochs=3, lr_milestones=[2], train_subset=192, test_subset=100, device="cpu", batch_size=64,
                eval_batch_size=50)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    record = engine.train(tiny(student="wrn-10-2", epochs=1, lr_milestones=[]), results=root, progress=False,
                          log=None)
    return str(root / "runs" / record["run_id"] / "weights.pt")


def group(teacher_file):
    return [tiny("at", teacher_file), tiny("kd", teacher_file), tiny("at+kd", teacher_file), tiny("student")]


def numbers(root, run_id):
    """A run's metrics without the volatile fields, and its final weights."""
    store = RunStore(root)
    metrics = [{k: v for k, v in m.items() if k not in VOLATILE} for m in store.read_metrics(run_id)]
    return metrics, store.load_weights(run_id)


def assert_same_runs(records, root_a, root_b):
    for record in records:
        (ma, wa), (mb, wb) = numbers(root_a, record["run_id"]), numbers(root_b, record["run_id"])
        assert ma == mb
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_runs_sharing_batches_equal_runs_alone_bit_for_bit(tmp_path, teacher):
    """AT, KD, AT+KD and a student of one seed, trained side by side on shared batches with one teacher pass per
    batch, give exactly the metrics and weights each gives alone; the records say who shared the time."""
    alone = [engine.train(c, results=tmp_path / "alone", progress=False, log=None) for c in group(teacher)]
    shared = train_shared(group(teacher), results=tmp_path / "shared", progress=False)
    assert [r["run_id"] for r in shared] == [r["run_id"] for r in alone]
    assert_same_runs(alone, tmp_path / "alone", tmp_path / "shared")
    assert all(r["environment"]["shared_batches"] == [s["run_id"] for s in shared] for r in shared)
    # finished: nothing is trained again
    assert train_shared(group(teacher), results=tmp_path / "shared", progress=False) == shared


def test_an_interrupted_group_resumes_to_the_same_numbers(tmp_path, teacher):
    configs = group(teacher)[:2]
    full = train_shared(configs, results=tmp_path / "full", progress=False)
    with interrupted_on_call(shared_batches, "train_epoch_steps", 3):  # stopped as epoch 3 starts: 2 epochs kept
        train_shared(configs, results=tmp_path / "cut", progress=False)
    store = RunStore(tmp_path / "cut")
    assert [len(store.read_metrics(r["run_id"])) for r in full] == [2, 2]
    logged = []
    resumed = train_shared(configs, results=tmp_path / "cut", progress=False, log=logged.append)
    assert "2 runs sharing batches: resuming after epoch 2/3" in logged
    assert [r["test_error"] for r in resumed] == [r["test_error"] for r in full]
    assert_same_runs(full, tmp_path / "full", tmp_path / "cut")


def test_runs_at_different_epochs_train_one_by_one(tmp_path, teacher):
    at, kd = group(teacher)[:2]
    with interrupted_on_call(engine, "train_epoch_steps", 2):
        engine.train(at, results=tmp_path / "cut", progress=False, log=None)  # AT at epoch 1, KD not started
    logged = []
    records = train_shared([at, kd], results=tmp_path / "cut", progress=False, log=logged.append)
    assert not any("sharing" in line for line in logged)
    assert all("shared_batches" not in r["environment"] for r in records)
    full = [engine.train(c, results=tmp_path / "full", progress=False, log=None) for c in (at, kd)]
    assert_same_runs(full, tmp_path / "full", tmp_path / "cut")


def test_runs_that_cannot_share_batches_are_refused_in_one_line(tmp_path, teacher):
    with pytest.raises(TrainingError, match="must share seed: 0 vs 1"):
        train_shared([tiny("at", teacher), tiny("kd", teacher, seed=1)], results=tmp_path)
    with pytest.raises(TrainingError, match="must share epochs: 3 vs 4"):
        train_shared([tiny("at", teacher), tiny("kd", teacher, epochs=4)], results=tmp_path)
    with pytest.raises(TrainingError, match="the same run twice"):
        train_shared([tiny("at", teacher), tiny("at", teacher)], results=tmp_path)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_the_shared_teacher_runs_once_per_batch_and_never_under_gradients():
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(x)
            return x.sum()
    shared = SharedTeacher(Counting())
    x, y = torch.ones(2, 3), torch.zeros(2, 3)
    with torch.no_grad():
        assert shared(x) == shared(x) == 6 and len(calls) == 1
        assert shared(y) == 0 and len(calls) == 2 and shared(y) == 0 and len(calls) == 2
        assert shared(x) == 6 and len(calls) == 3  # only the last batch is kept
    assert shared(x) == 6 and shared(x) == 6 and len(calls) == 5  # with gradients: every call runs the teacher
