"""The campaign's checkpoints survive changes of the code: a WRN-16-1 run stopped after epoch 1 by the code of
2026-12-07 (``tests/data/resume-2026-12-07``, written by ``tests/data/make_resume_fixture.py``) resumes with today's
code and ends with the numbers of a run trained without a stop, as they were pinned that day: bit for bit on the CPU
model that made it. On another CPU float32 kernels round differently, so there the same run in float64
(``tests/data/resume-float64``) must give its pinned numbers to 1e-7."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from atlib.training import engine
from atlib.training.config import RunConfig
from atlib.training.provenance import cpu_model
from atlib.training.store import RunStore

FIXTURE = Path(__file__).parent / "data" / "resume-2026-12-07"
FIXTURE_FLOAT64 = Path(__file__).parent / "data" / "resume-float64"
sys.path.insert(0, str(FIXTURE.parent))
import make_method_pins  # noqa: E402  (its float64(): batches and models in float64)
KEYS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _resume_and_straight(fixture: Path, tmp_path: Path) -> tuple[dict, list, list, dict]:
    """The fixture's run resumed from its checkpoint and the same run trained without a stop, both on this machine:
    (expected.json, resumed metrics, straight metrics, the resumed run's record)."""
    expected = json.loads((fixture / "expected.json").read_text())
    config = RunConfig(**expected["config"])
    run_id = expected["run_id"]
    assert config.run_id() == run_id  # the run's identity has not changed either
    shutil.copytree(fixture / run_id, tmp_path / "resumed" / "runs" / run_id)
    lines = []
    record = engine.train(config, results=tmp_path / "resumed", progress=False, log=lines.append, channels_last=True)
    assert lines[0] == f"{run_id}: resuming after epoch 1/3"
    resumed = [{k: r[k] for k in KEYS} for r in RunStore(tmp_path / "resumed").read_metrics(run_id)]
    assert record["test_error"] == resumed[-1]["test_error"]
    engine.train(config, results=tmp_path / "straight", progress=False, log=None, channels_last=True)
    straight = [{k: r[k] for k in KEYS} for r in RunStore(tmp_path / "straight").read_metrics(run_id)]
    return expected, resumed, straight, record


def test_a_checkpoint_of_2026_12_07_resumes_to_the_uninterrupted_numbers(tmp_path, one_thread):
    expected, resumed, straight, _ = _resume_and_straight(FIXTURE, tmp_path)
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in straight] == [1, 2, 3]
    run_id = expected["run_id"]
    made_on = json.loads((FIXTURE / run_id / "metrics.jsonl").read_text().splitlines()[0])["environment"]
    if cpu_model() != made_on["device_name"]:
        pytest.skip(f"resumed; its float32 numbers were pinned on {made_on['device_name']}, this is {cpu_model()}: "
                    f"the float64 fixture checks the numbers here")
    assert resumed == straight == expected["metrics"]  # the same CPU model as on 2026-12-07: bit for bit


def test_a_float64_checkpoint_resumes_to_the_uninterrupted_numbers_on_any_cpu(tmp_path, one_thread):
    with make_method_pins.float64():
        expected, resumed, straight, _ = _resume_and_straight(FIXTURE_FLOAT64, tmp_path)
    run_id = expected["run_id"]
    assert torch.load(FIXTURE_FLOAT64 / run_id / "checkpoint.pt", weights_only=True)["student"]["fc.weight"].dtype \
        == torch.float64
    for rows in (resumed, straight):
        assert len(rows) == len(expected["metrics"]) == 3
        for now, then in zip(rows, expected["metrics"]):
            for key in ("epoch", "lr", "train_error", "test_error"):
                assert now[key] == then[key], (now["epoch"], key)
            for key in ("train_loss", "test_loss"):
                assert now[key] == pytest.approx(then[key], rel=1e-7), (now["epoch"], key)
