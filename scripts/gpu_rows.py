"""Train the `one-seed` profile's WRN-16-2 -> WRN-16-1 rows on one GPU within a time budget (a lent GPU session).

    python scripts/gpu_rows.py --deadline 420 --data-root /tmp/cifar --results results \
        --rates results/benchmarks/h200-2026-11-26/2-single-runs.json --out $OUT

(``--results results``: the committed ``one-seed`` teacher is found there and not trained again.)

1. the WRN-16-2 teacher (200 epochs, one captured-graph run), unless already finished;
2. the WRN-16-1 rows (seed 0) as single captured-graph runs in value order: AT, student, KD, AT+KD, F-ActT; each
   starts if at least MIN_START seconds are left, and the one the deadline interrupts keeps its checkpoint (small
   cohorts of 2-4 grouped students measured slower than single graphed runs on an H200; ``--rates`` only prints
   each run's estimate);
   or, with ``--concurrent``, all five rows (AT, student, KD, AT+KD, F-ActT) at once, each on its own CUDA stream
   (``atlib.concurrent``), until they finish or the deadline comes.

At the deadline the runs in progress are interrupted (their checkpoints stay, resumable). Finished runs' records
are written under ``--results`` like any other run; with ``--out`` they are also packed into ``DIR/runs.tar``
(config, metrics, record, weights) and the unfinished runs' checkpoints into
``DIR/checkpoints.tar`` (to carry to the next call and resume there; never to be committed).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tarfile
import time
from pathlib import Path

from atlib.concurrent import train_concurrently
from atlib.engine import train
from atlib.experiments import TABLES, config_for, settings_from_profile, teacher_config
from atlib.store import RunStore

ROWS = ["at", "student", "kd", "at+kd", "fact"]
MIN_START = 45  # seconds: a run started later would bring back too few epochs to be worth its checkpoint
SAFETY = 1.15  # measured short-epoch rates are optimistic: evaluation, checkpoints, captures


class Deadline(Exception):
    pass


def _alarm(signum, frame):
    raise Deadline()


def single_rate(rates_path: str | None, method: str) -> float | None:
    """Measured images/s of this row as a single captured-graph run (benchmarks/throughput.py --json)."""
    if not rates_path or not Path(rates_path).is_file():
        return None
    # the engine's CUDA default is NHWC (channels_last)
    wanted = {"student": "engine graph channels_last: WRN-16-1",
              "at": "engine graph channels_last: AT 16-2 -> 16-1"}.get(method)
    for row in json.loads(Path(rates_path).read_text())["results"]:
        if row["label"] == wanted and row.get("images_per_s"):
            return row["images_per_s"]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, required=True, help="seconds from now")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--results", default="results")
    parser.add_argument("--rates", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--profile", default="one-seed")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--concurrent", action="store_true", help="train all five rows at once, one CUDA stream "
                        "each")
    args = parser.parse_args()
    t0 = time.monotonic()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(args.deadline)))
    settings = settings_from_profile(args.profile, data_root=args.data_root, results_dir=args.results,
                                     device=args.device, progress=False)
    teacher = teacher_config("wrn-16-2", settings)
    cells = {c.column: c for c in TABLES["table1"]() if c.row == "WRN-16-1 / WRN-16-2"}
    columns = {"student": "student", "at": "AT", "kd": "KD", "at+kd": "AT+KD", "fact": "F-ActT"}
    try:
        record = train(teacher, results=settings.root, progress=False, log=print)
        print(f"teacher {record['run_id']}: {record['test_error']:.2f}% after {time.monotonic() - t0:.0f} s",
              flush=True)
        if args.concurrent:
            rows = [config_for(cells[columns[m]], settings, 0) for m in ROWS]
            for r in train_concurrently(rows, results=settings.root, progress=False, log=print):
                print(f"{r['run_id']}: {r['test_error']:.2f}% after {time.monotonic() - t0:.0f} s", flush=True)
            return 0
        for method in ROWS:  # in value order; the run the deadline interrupts keeps its checkpoint
            left = args.deadline - (time.monotonic() - t0)
            rate = single_rate(args.rates, method)
            need = None if rate is None else SAFETY * teacher.epochs * source_images(teacher) / rate
            print(f"{method}: measured {rate} img/s -> needs {need} s; {left:.0f} s left", flush=True)
            if left < MIN_START:
                print(f"{method}: not started ({left:.0f} s left < {MIN_START} s)", flush=True)
                continue
            r = train(config_for(cells[columns[method]], settings, 0), results=settings.root, progress=False,
                      log=print)
            print(f"{r['run_id']}: {r['test_error']:.2f}% after {time.monotonic() - t0:.0f} s", flush=True)
    except Deadline:
        print(f"deadline reached after {time.monotonic() - t0:.0f} s; unfinished runs keep their checkpoints",
              flush=True)
    finally:
        signal.alarm(0)
        if args.out:
            pack(settings.root, Path(args.out) / "runs.tar")
            pack_checkpoints(settings.root, Path(args.out) / "checkpoints.tar")
    return 0


def source_images(config) -> int:
    from atlib.plan import TRAIN_IMAGES
    return config.train_subset or TRAIN_IMAGES[config.dataset]


def _run_dirs(root: Path) -> list[Path]:
    return sorted((Path(root) / "runs").glob("*"))


def _tar(dest: Path, root: Path, members: dict[Path, list[str]]) -> None:
    """Into tar ``dest``: each run directory's named files that exist, under ``<profile>/runs/<run id>/``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w") as tar:
        for run_dir, names in members.items():
            for name in names:
                if (run_dir / name).is_file():
                    tar.add(run_dir / name, arcname=f"{run_dir.relative_to(root.parent)}/{name}")


def pack(root: Path, dest: Path) -> None:
    """Finished runs' config, metrics, record and final weights (WRN-16-1: 0.7 MB; figures and later runs read
    them) into one tar file; unfinished runs' config and metrics."""
    store = RunStore(root)
    runs = _run_dirs(root)
    _tar(dest, root, {d: ["config.json", "metrics.jsonl", "record.json", "weights.pt"] for d in runs})
    for d in runs:
        print(f"packed {d.name}: {store.status(d.name)}", flush=True)


def pack_checkpoints(root: Path, dest: Path) -> None:
    """Unfinished runs' checkpoints (to resume in a later call: extract into the same results directory)."""
    store = RunStore(root)
    unfinished = [d for d in _run_dirs(root)
                  if store.status(d.name) != "finished" and (d / "checkpoint.pt").is_file()]
    _tar(dest, root, {d: ["config.json", "metrics.jsonl", "checkpoint.pt"] for d in unfinished})
    for d in unfinished:
        print(f"checkpoint of {d.name}: {len(store.read_metrics(d.name))} epochs", flush=True)


if __name__ == "__main__":
    sys.exit(main())
