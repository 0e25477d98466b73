"""The methods train as they did before the one-loop refactor: tiny AT, KD and AT+KD runs give the metrics the code of
2026-12-07 gave (``tests/data/method-pins-2026-12-07.json``, written by ``tests/data/make_method_pins.py``) bit for
bit on the CPU model that made them, and on any CPU the float64 pins (``method-pins-float64.json``) to 1e-7."""

import json
import sys
from pathlib import Path

import pytest
import torch

from atlib.training.provenance import cpu_model

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_method_pins  # noqa: E402


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def test_at_kd_and_at_kd_train_as_pinned(tmp_path, one_thread):
    pinned = json.loads((DATA / "method-pins-2026-12-07.json").read_text())
    if cpu_model() != pinned["cpu"]:
        pytest.skip(f"float32 pins made on {pinned['cpu']}, this is {cpu_model()}: the float64 pins test this CPU")
    now = make_method_pins.train_pins(tmp_path)
    assert sorted(now) == sorted(pinned["metrics"]) == sorted(make_method_pins.METHODS)
    assert now == pinned["metrics"]


def test_at_kd_and_at_kd_train_as_pinned_in_float64(tmp_path, one_thread):
    pinned = json.loads((DATA / "method-pins-float64.json").read_text())
    with make_method_pins.float64():
        now = make_method_pins.train_pins(tmp_path)
    assert sorted(now) == sorted(pinned["metrics"]) == sorted(make_method_pins.METHODS)
    for method, rows in now.items():
        assert len(rows) == len(pinned["metrics"][method]) == make_method_pins.STUDENT["epochs"]
        for row, then in zip(rows, pinned["metrics"][method]):
            assert row.keys() == then.keys() and row["terms"].keys() == then["terms"].keys(), method
            for key in ("epoch", "lr", "train_error", "test_error"):
                assert row[key] == then[key], (method, row["epoch"], key)
            for key in ("train_loss", "test_loss"):
                assert row[key] == pytest.approx(then[key], rel=1e-7), (method, row["epoch"], key)
            for term, value in row["terms"].items():
                assert value == pytest.approx(then["terms"][term], rel=1e-7), (method, row["epoch"], term)
