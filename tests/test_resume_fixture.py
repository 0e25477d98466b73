"""The campaign's checkpoints survive changes of the code: a WRN-16-1 run stopped after epoch 1 by the code of
2026-12-07 (``tests/data/resume-2026-12-07``, written by ``tests/data/make_resume_fixture.py``) resumes with today's
code and ends with the numbers of a run trained without a stop, now and as they were pinned that day."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from atlib.training import engine
from atlib.training.config import RunConfig
from atlib.training.provenance import cpu_model
from atlib.training.store import RunStore

FIXTURE = Path(__file__).parent / "data" / "resume-2026-12-07"
KEYS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_a_checkpoint_of_2026_12_07_resumes_to_the_uninterrupted_numbers(tmp_path, one_thread):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    config = RunConfig(**expected["config"])
    run_id = expected["run_id"]
    assert config.run_id() == run_id  # the run's identity has not changed either
    shutil.copytree(FIXTURE / run_id, tmp_path / "resumed" / "runs" / run_id)
    lines = []
    record = engine.train(config, results=tmp_path / "resumed", progress=False, log=lines.append, channels_last=True)
    assert lines[0] == f"{run_id}: resuming after epoch 1/3"
    resumed = [{k: r[k] for k in KEYS} for r in RunStore(tmp_path / "resumed").read_metrics(run_id)]

    engine.train(config, results=tmp_path / "straight", progress=False, log=None, channels_last=True)
    straight = [{k: r[k] for k in KEYS} for r in RunStore(tmp_path / "straight").read_metrics(run_id)]
    assert resumed == straight  # this machine, this code: identical
    assert record["test_error"] == straight[-1]["test_error"]

    pinned = expected["metrics"]
    made_on = json.loads((FIXTURE / run_id / "metrics.jsonl").read_text().splitlines()[0])["environment"]
    if cpu_model() == made_on["device_name"]:
        assert straight == pinned  # the same CPU model as on 2026-12-07: bit for bit
    else:  # another CPU's kernels may round differently: the same training to float32 noise
        for now, then in zip(straight, pinned):
            assert now["epoch"] == then["epoch"] and now["lr"] == then["lr"]
            for key in ("train_loss", "test_loss"):
                assert now[key] == pytest.approx(then[key], rel=1e-3), key
