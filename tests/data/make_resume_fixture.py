"""Writes tests/data/resume-2026-12-07/: a WRN-16-1 run (the campaign's architecture) stopped after epoch 1 of 3 by
the code of 2026-12-07 (its checkpoint, config and metrics), and the metrics of the same run trained without a stop
(``expected.json``). ``tests/test_resume_fixture.py`` resumes the checkpoint with today's code: a refactor of the
engine must keep resuming the campaign's checkpoints and give the same numbers.

    python tests/data/make_resume_fixture.py      # only to pin a new format on purpose
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from atlib.training import engine
from atlib.training.config import RunConfig
from atlib.training.deadline import DeadlineReached, epoch_deadline
from atlib.training.store import RunStore

CONFIG = dict(student="wrn-16-1", dataset="sample", epochs=3, train_subset=256, test_subset=128, batch_size=64,
              device="cpu")
KEYS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")
OUT = Path(__file__).resolve().parent / "resume-2026-12-07"


def main() -> None:
    torch.set_num_threads(1)
    config = RunConfig(**CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        straight = engine.train(config, results=Path(tmp) / "a", progress=False, log=None, channels_last=True)
        rows = RunStore(Path(tmp) / "a").read_metrics(straight["run_id"])
        with epoch_deadline(-1e9):  # stop after the first epoch, as a campaign's deadline or `campaign stop` does
            try:
                engine.train(config, results=Path(tmp) / "b", progress=False, log=None, channels_last=True)
            except DeadlineReached:
                pass
        run_dir = RunStore(Path(tmp) / "b").run_dir(straight["run_id"])
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(run_dir, OUT / straight["run_id"])
    (OUT / "expected.json").write_text(json.dumps({"config": CONFIG, "run_id": straight["run_id"],
                                                   "metrics": [{k: r[k] for k in KEYS} for r in rows]}, indent=1))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
