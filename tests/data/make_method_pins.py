"""The metrics of tiny AT, KD and AT+KD runs (WRN-10-1 students of a WRN-10-2 teacher trained for one epoch, 256
images of the embedded sample, one thread, CPU), which ``tests/test_method_pins.py`` trains again with today's code:

- ``method-pins-2026-12-07.json``, float32, as the code of 2026-12-07 before the one-loop refactor computed them: on
  the CPU model that made them (AMD EPYC without AVX-512) today's code must agree bit for bit. On another CPU float32
  kernels round differently and 8 SGD steps at lr 0.1 amplify it (0.2% in a test loss on an EPYC with AVX-512).
- ``method-pins-float64.json``, the same runs in float64 (``float64()``), written after the refactor by code that
  agreed bit for bit with the float32 pins: on any CPU the runs must give them to 1e-7.

    PYTHONPATH=<checkout of the code to pin> python tests/data/make_method_pins.py [--float64]
"""

import contextlib
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
OUT_FLOAT64 = Path(__file__).resolve().parent / "method-pins-float64.json"


@contextlib.contextmanager
def float64():
    """Models and batches in float64 (as tests/conftest.py's ``float64`` fixture)."""
    import atlib.data.batches as batches
    normalize, dtype = batches.normalize, torch.get_default_dtype()
    batches.normalize = lambda x: normalize(x).double()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        batches.normalize = normalize
        torch.set_default_dtype(dtype)


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
    wide = "--float64" in sys.argv[1:]
    out = OUT_FLOAT64 if wide else OUT
    with tempfile.TemporaryDirectory() as tmp, float64() if wide else contextlib.nullcontext():
        pins = train_pins(Path(tmp))
    out.write_text(json.dumps({"cpu": cpu_model(), "teacher": TEACHER, "student": STUDENT, "metrics": pins},
                              indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
