"""Writes tests/data/method-pins-2026-12-07.json: the metrics of tiny AT, KD and AT+KD runs (WRN-10-1 students of a
WRN-10-2 teacher trained for one epoch, 256 images of the embedded sample, one thread, CPU) as the code of 2026-12-07
(before the one-loop refactor) computed them. ``tests/test_method_pins.py`` trains the same runs with today's code: on
the CPU model that made the pins they must agree bit for bit.

    PYTHONPATH=<checkout of the code to pin> python tests/data/make_method_pins.py
"""

import json
import sys
import tempfile
from pathlib import Path

import torch

from atlib.methods import method_terms
from atlib.training import engine
from atlib.training.config import RunConfig
from atlib.training.provenance import cpu_model
from atlib.training.store import RunStore

DATA = dict(dataset="sample", train_subset=256, test_subset=128, batch_size=64, device="cpu")
TEACHER = dict(student="wrn-10-2", epochs=1, **DATA)
METHODS = ("at", "kd", "at+kd")
STUDENT = dict(student="wrn-10-1", epochs=2, **DATA)
KEYS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "terms", "details")
OUT = Path(__file__).resolve().parent / "method-pins-2026-12-07.json"


def train_pins(results: Path) -> dict:
    """{method: metrics rows (``KEYS``)} of the pinned runs trained into ``results``."""
    torch.set_num_threads(1)
    teacher = engine.train(RunConfig(**TEACHER), results=results, progress=False, log=None)["run_id"]
    out = {}
    for method in METHODS:
        config = RunConfig(method=method, terms=method_terms(method), teacher=teacher, **STUDENT)
        run_id = engine.train(config, results=results, progress=False, log=None)["run_id"]
        out[method] = [{k: r[k] for k in KEYS} for r in RunStore(results).read_metrics(run_id)]
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pins = train_pins(Path(tmp))
    OUT.write_text(json.dumps({"cpu": cpu_model(), "teacher": TEACHER, "student": STUDENT, "metrics": pins},
                              indent=1))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
