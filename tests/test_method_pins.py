"""The methods train as they did before the one-loop refactor: tiny AT, KD and AT+KD runs give the metrics the code of
2026-12-07 gave (``tests/data/method-pins-2026-12-07.json``, written by ``tests/data/make_method_pins.py``): bit for
bit on the CPU model that made them, to float32 noise on another."""

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
    now = make_method_pins.train_pins(tmp_path)
    assert sorted(now) == sorted(pinned["metrics"]) == sorted(make_method_pins.METHODS)
    if cpu_model() == pinned["cpu"]:
        assert now == pinned["metrics"]
        return
    for method, rows in now.items():  # another CPU's kernels may round differently
        for row, then in zip(rows, pinned["metrics"][method], strict=True):
            assert (row["epoch"], row["lr"], sorted(row["terms"])) == (then["epoch"], then["lr"], sorted(then["terms"]))
            for key in ("train_loss", "test_loss"):
                assert row[key] == pytest.approx(then[key], rel=1e-3), (method, key)
