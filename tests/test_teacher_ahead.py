"""The teacher one batch ahead on a second CPU thread (``training.teacher_ahead``): the same numbers as the plain path,
bit for bit, with the teacher's forward really moved off the training thread."""

import contextlib
import threading

import pytest
import torch
from torch import nn

from atlib.methods import method_terms
from atlib.training import engine
from atlib.training.devices import TrainingError
from atlib.training.steps import StepRunner
from atlib.training.store import RunStore
from atlib.training.teacher_ahead import TeacherAhead
from test_shared_batches import assert_same_runs, teacher, tiny  # noqa: F401 (teacher: a module-scoped fixture)


def teacher_forward_threads(monkeypatch) -> list[str]:
    """The name of the thread of every teacher forward made through a ``TeacherAhead`` from now on (the list fills)."""
    threads, original = [], engine.TeacherAhead.__init__

    def spying_init(self, model, context=None):
        original(self, model, context)
        model.register_forward_pre_hook(lambda module, args: threads.append(threading.current_thread().name))

    monkeypatch.setattr(engine.TeacherAhead, "__init__", spying_init)
    return threads


@pytest.mark.parametrize("method, precision", [("at", "fp32"), ("kd", "fp32"), ("at+kd", "fp32"), ("at", "bf16")])
def test_teacher_ahead_gives_the_plain_path_s_numbers_bit_for_bit(tmp_path, teacher, method, precision):
    """bf16: the worker thread runs the teacher under the run's autocast too (autocast is per thread)."""
    config = tiny(method, teacher, precision=precision)
    plain = engine.train(config, results=tmp_path / "plain", progress=False, log=None)
    ahead = engine.train(config, results=tmp_path / "ahead", progress=False, log=None, teacher_ahead=True)
    assert ahead["run_id"] == plain["run_id"]  # an execution path, not part of the run's identity
    assert_same_runs([plain], tmp_path / "plain", tmp_path / "ahead")
    assert ahead["environment"]["teacher_ahead"] is True and "teacher_ahead" not in plain["environment"]
    metrics = RunStore(tmp_path / "ahead").read_metrics(ahead["run_id"])
    assert all(m["environment"]["teacher_ahead"] for m in metrics)


def test_the_teacher_s_forward_runs_on_the_second_thread(tmp_path, teacher, monkeypatch):
    """Every forward of the teacher during training happens on the worker thread, none on the training thread."""
    threads = teacher_forward_threads(monkeypatch)
    engine.train(tiny("at", teacher), results=tmp_path, progress=False, log=None, teacher_ahead=True)
    assert len(threads) == 3 * 3  # 3 epochs of 192 images in batches of 64
    assert all(name.startswith("teacher-ahead") for name in threads), threads


def test_without_teacher_outputs_nothing_moves(tmp_path, teacher):
    """A student has no teacher and gradient AT needs the teacher's input gradient: both train as usual."""
    student = engine.train(tiny("student"), results=tmp_path, progress=False, log=None, teacher_ahead=True)
    grad = engine.train(tiny("grad-at", teacher, epochs=1, lr_milestones=[]), results=tmp_path, progress=False,
                        log=None, teacher_ahead=True)
    assert "teacher_ahead" not in student["environment"] and "teacher_ahead" not in grad["environment"]


def test_before_a_delayed_term_starts_no_teacher_pass_is_made(tmp_path, teacher, monkeypatch):
    """AT from epoch 3 on (the ImageNet schedule's kind): the teacher runs only in the epochs that use it."""
    calls = teacher_forward_threads(monkeypatch)
    terms = {"ce": {}, "at": {"beta": 1000, "p": 2, "start_epoch": 2}}
    engine.train(tiny("at", teacher, terms=terms), results=tmp_path, progress=False, log=None, teacher_ahead=True)
    assert len(calls) == 3  # epoch 3 of 3 only

def teacher_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("teacher-ahead")]


def test_an_interrupted_epoch_leaves_no_forward_running_and_resumes_to_the_same_numbers(tmp_path, teacher):
    full = engine.train(tiny("at", teacher), results=tmp_path / "full", progress=False, log=None)
    real, calls = StepRunner.__call__, []

    def interrupting(self, x, y):  # Ctrl-C in epoch 2's second step, its teacher thread at work
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, x, y)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt) as interrupted:
        patch.setattr(StepRunner, "__call__", interrupting)
        engine.train(tiny("at", teacher), results=tmp_path / "cut", progress=False, log=None, teacher_ahead=True)
    # the traceback (kept here) holds the interrupted frames: the thread ended with the epoch, not with them
    assert interrupted.tb is not None and not teacher_threads()
    engine.train(tiny("at", teacher), results=tmp_path / "cut", progress=False, log=None, teacher_ahead=True)
    assert_same_runs([full], tmp_path / "full", tmp_path / "cut")


class Slow(nn.Module):
    """A teacher whose forward waits for ``release`` (set at once unless asked) and counts finished calls."""

    def __init__(self, released=True):
        super().__init__()
        self.calls, self.started, self.release = 0, threading.Event(), threading.Event()
        if released:
            self.release.set()

    def forward(self, x):
        self.started.set()
        self.release.wait(10)
        self.calls += 1
        return x * 2


def test_a_batch_not_drawn_through_it_or_with_gradients_runs_the_teacher_at_once():
    slow = Slow()
    ahead = TeacherAhead(slow)
    x = torch.ones(2, 3)
    with torch.no_grad():
        assert torch.equal(ahead(x), x * 2)  # never drawn through ``batches``: computed here
    assert slow.calls == 1
    with contextlib.closing(ahead.batches([(x, None)])) as batches:
        drawn, _ = next(batches)
        assert ahead(drawn).requires_grad is False  # grad enabled here: the teacher runs again, on this thread
        with torch.no_grad():
            assert torch.equal(ahead(drawn), x * 2)  # the worker's result
        assert slow.calls == 3
    assert ahead.idle and not teacher_threads()


def test_the_same_tensor_drawn_twice_gets_one_forward_per_draw():
    slow, x = Slow(), torch.ones(2)
    ahead = TeacherAhead(slow)
    with contextlib.closing(ahead.batches([(x, None), (x, None)])) as batches, torch.no_grad():
        results = [ahead(drawn) for drawn, _ in batches]
    assert len(results) == 2 and slow.calls == 2


def test_closing_the_batches_mid_epoch_waits_for_the_forward_in_flight_and_stops_the_thread():
    slow = Slow(released=False)
    ahead = TeacherAhead(slow)
    batches = ahead.batches([(torch.ones(1) * i, None) for i in range(4)])
    next(batches)
    assert slow.started.wait(5)  # the first batch's forward is running, the second's queued
    threading.Timer(0.3, slow.release.set).start()
    batches.close()
    assert slow.calls == 1  # waited for the forward in flight; the queued one was cancelled
    assert ahead.idle and not teacher_threads()


def test_teacher_ahead_on_another_device_or_with_compile_is_refused_in_one_line(tmp_path, teacher):
    with pytest.raises(TrainingError, match="teacher_ahead is a CPU path.*cuda"):
        engine.build_run(tiny("at", teacher), "x", None, RunStore(tmp_path), False, None, torch.device("cuda"),
                         teacher_ahead=True)
    with pytest.raises(TrainingError, match="teacher_ahead and compile together"):
        engine.train(tiny("at", teacher), results=tmp_path, progress=False, log=None, teacher_ahead=True,
                     compile=True)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing written
