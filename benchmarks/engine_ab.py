"""Wall time of ``engine.train`` in two checkouts of atlib, alternating, on the CPU (is the CPU path still as fast?).

    git worktree add /tmp/before <old commit>
    python benchmarks/engine_ab.py /tmp/before . [--rounds 3] [--method student] [--student wrn-16-1]

Each round trains the same configuration (embedded sample, 2 epochs, device cpu) once with each checkout, each in
a fresh Python process (``sys.path`` points at that checkout), and prints seconds and the final test error (equal
errors: the same training). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, tempfile, time
sys.path.insert(0, sys.argv[1])
try:  # the package's layout since 2026-12-06, else the flat one before it
    from atlib.training import engine
    from atlib.training.config import RunConfig
except ImportError:
    from atlib import engine
    from atlib.config import RunConfig
from atlib.methods import method_terms
method, student = sys.argv[2], sys.argv[3]
common = dict(dataset="sample", epochs=2, device="cpu", lr_milestones=[1])
with tempfile.TemporaryDirectory() as d:
    teacher = None
    if method != "student":
        teacher = engine.train(RunConfig(student="wrn-10-2", epochs=1, train_subset=256, dataset="sample",
                                         device="cpu"), results=d, progress=False, log=None)["run_id"]
    cfg = RunConfig(student=student, method=method, terms=method_terms(method), teacher=teacher, **common)
    t = time.perf_counter()
    record = engine.train(cfg, results=d, progress=False, log=None)
    print(f"{time.perf_counter() - t:.2f} {record['test_error']}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="student")
    parser.add_argument("--student", default="wrn-16-1")
    args = parser.parse_args()
    checkouts = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    print(f"# engine.train, {args.student} {args.method}, embedded sample (2,500 images), 2 epochs, cpu; "
          f"seconds and last-epoch test error per run")
    for r in range(args.rounds):
        for name, path in checkouts.items():
            out = subprocess.run([sys.executable, "-c", CHILD, path, args.method, args.student], check=True,
                                 capture_output=True, text=True).stdout.split()
            print(f"round {r + 1} {name:<7} {float(out[0]):7.2f} s  test error {out[1]}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
