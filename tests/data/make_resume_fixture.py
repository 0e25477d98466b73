"""Writes tests/data/resume-2026-12-07/: a WRN-16-1 run (the campaign's architecture) stopped after epoch 1 of 3 by
the code of 2026-12-07 (its checkpoint, config and metrics), and the metrics of the same run trained without a stop
(``expected.json``). ``tests/test_resume_fixture.py`` resumes the checkpoint with today's code: a refactor of the
engine must keep resuming the campaign's checkpoints and give the same numbers. In float32 they are the same bit for
bit only on the CPU model that made them (an AMD EPYC without AVX-512): another CPU's kernels round differently and a
few steps at lr 0.1 amplify it. With ``--float64`` it writes tests/data/resume-float64/, the same run in float64
(``make_method_pins.float64``), whose numbers any CPU gives to 1e-7.

    python tests/data/make_resume_fixture.py [--float64]     # only to pin a new format on purpose
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
OUT_FLOAT64 = Path(__file__).resolve().parent / "resume-float64"


def main() -> None:
    if "--float64" in sys.argv[1:]:
        from make_method_pins import float64
        with float64():
            write(OUT_FLOAT64)
    else:
        write(OUT)


def write(out: Path) -> None:
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
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(run_dir, out / straight["run_id"])
    (out / "expected.json").write_text(json.dumps({"config": CONFIG, "run_id": straight["run_id"],
                                                   "metrics": [{k: r[k] for k in KEYS} for r in rows]}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
