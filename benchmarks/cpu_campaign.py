"""The fastest fp32 CPU path for the campaign's runs (WRN-16-1 student, and AT from WRN-16-2), chosen by measurement.

    python benchmarks/cpu_campaign.py [--images 2560] [--repeats 3] [--out results/benchmarks/cpu-campaign-DATE]
    python benchmarks/cpu_campaign.py --only lanes --seconds 120 --out results/benchmarks/cpu-lanes-DATE

Cases, each on the same random CIFAR-shaped images with the engine's own step (``throughput.engine_case``): memory
layout (NCHW / channels-last), ``torch.compile``, intra-op threads (all cores / one), bf16 autocast (reported; the
paper's cells train in fp32), the batches alone (data loading: reflect-pad crop + flip on the CPU), and two runs side
by side in two processes of one thread each (their images/s added up), which is how ``campaign start`` trains by
default (two lanes of one thread). Then the lanes as they train the headline pair (``--only lanes`` for these
alone): the AT lane, plain or with its teacher one batch ahead on a second thread (``training.teacher_ahead``),
beside a student lane and alone, each lane's rate over the same ``--seconds`` window. Writes ``<out>.json`` and
``<out>.txt`` with the CPU model and the load average before and after (other work on the machine lowers every
number). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (benchmarks/throughput.py: the engine's step as a benchmark case)

from atlib.data import train_batches  # noqa: E402
from atlib.training.provenance import cpu_model  # noqa: E402

RUNS = {"WRN-16-1 student": {"method": "student"}, "AT 16-2 -> 16-1": {"method": "at"}}
PATHS = [  # (label, threads: None = all cores, options)
    ("NCHW eager", None, {}),
    ("channels-last eager", None, {"channels_last": True}),
    ("channels-last compile", None, {"channels_last": True, "compile": True}),
    ("channels-last eager, 1 thread", 1, {"channels_last": True}),
    ("channels-last compile, 1 thread", 1, {"channels_last": True, "compile": True}),
    ("channels-last eager bf16", None, {"channels_last": True, "precision": "bf16"}),
]


def rate(options: dict, threads: int | None, images: int, repeats: int) -> float:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count())
    try:
        return throughput.measure("engine", options, _random_data(images), torch.device("cpu"), repeats)
    finally:
        torch.set_num_threads(saved)


def _random_data(images: int):
    from atlib.data import ImageSet
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    return ImageSet(x, y)


def batches_rate(images: int, repeats: int) -> float:
    data, g, rates = _random_data(images), torch.Generator().manual_seed(0), []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for x, y in train_batches(data, 128, g, torch.device("cpu")):
            x.contiguous(memory_format=torch.channels_last)
        rates.append(images / (time.perf_counter() - t0))
    return statistics.median(rates[1:])


SIDE_BY_SIDE = {"eager": {"channels_last": True}, "compile": {"channels_last": True, "compile": True},
                "teacher ahead": {"channels_last": True, "teacher_ahead": True}}
# The campaign's lanes as they train the headline pair: the AT lane (plain, or with its teacher one batch ahead on a
# second thread) beside a student lane, or alone (once the student is finished); each lane's own rate, measured over
# the same wall-clock window.
LANES = [("AT plain + student", ["eager", "eager"]), ("AT teacher ahead + student", ["teacher ahead", "eager"]),
         ("AT plain alone", ["eager"]), ("AT teacher ahead alone", ["teacher ahead"])]
LANE_RUNS = ["AT 16-2 -> 16-1", "WRN-16-1 student"]


def side_by_side(run: str, path: str, images: int, repeats: int) -> float:
    """Two processes, one thread each, the same case at the same time: their images/s added."""
    command = [sys.executable, __file__, "--one", run, "--path", path, "--images", str(images),
               "--repeats", str(repeats)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def timed_rate(options: dict, images: int, seconds: float) -> float:
    """One thread: after a warm-up epoch, whole epochs for ``seconds`` of wall-clock time; images per second."""
    torch.set_num_threads(1)
    epoch, students = throughput.BUILDERS["engine"](_random_data(images), torch.device("cpu"), options)
    epoch()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        epoch()
        done += students * images
    return done / (time.perf_counter() - t0)


def lanes(paths: list[str], images: int, seconds: float) -> list[float]:
    """The lanes as processes started together, each training for the same window: each one's images/s."""
    procs = [subprocess.Popen([sys.executable, __file__, "--one", run, "--path", path, "--images", str(images),
                               "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
             for run, path in zip(LANE_RUNS, paths)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write <out>.json and <out>.txt")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # side by side: one process's rate for this run
    parser.add_argument("--path", default="eager", choices=sorted(SIDE_BY_SIDE), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help="the lanes' measuring window (default 120)")
    parser.add_argument("--only", choices=["lanes"], help="lanes: only the campaign's lanes (AT plain / teacher "
                        "ahead, beside a student lane or alone)")
    args = parser.parse_args()
    if args.one:
        options = {**RUNS[args.one], **SIDE_BY_SIDE[args.path]}
        print(rate(options, 1, args.images, args.repeats) if args.seconds is None
              else timed_rate(options, args.images, args.seconds))
        return
    load_before = os.getloadavg()
    results = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), "images": args.images, "repeats": args.repeats,
               "lane_seconds": args.seconds or 120,
               "load_before": load_before, "rates": {}}
    lines = [f"CPU campaign paths: {results['cpu']}, {results['cores']} cores, torch {results['torch']}, "
             f"{results['date']}; batch 128, {args.images} images per timed epoch, "
             + (f"median of {args.repeats}" if args.only is None else f"lanes over {args.seconds or 120:.0f} s")
             + "; "
             f"load average before {load_before[0]:.2f}"]
    for label, paths in LANES:
        values = lanes(paths, args.images, args.seconds or 120)
        for run, value in zip(LANE_RUNS, values):
            results["rates"][f"lanes: {label} | {run}"] = value
        lines.append(f"{'lanes':<18} {label:<34} " + ", ".join(f"{run} {value:.0f}"
                                                              for run, value in zip(LANE_RUNS, values)) + " img/s")
        print(lines[-1], flush=True)
    for run, base in RUNS.items() if args.only is None else ():
        for label, threads, options in PATHS:
            value = rate({**base, **options}, threads, args.images, args.repeats)
            results["rates"][f"{run} | {label}"] = value
            lines.append(f"{run:<18} {label:<34} {value:8.0f} img/s")
            print(lines[-1], flush=True)
        for path in ("eager", "compile"):
            label = f"2 runs side by side, 1 thread, {path}"
            value = side_by_side(run, path, args.images, args.repeats)
            results["rates"][f"{run} | {label} (sum)"] = value
            lines.append(f"{run:<18} {label:<34} {value:8.0f} img/s (sum)")
            print(lines[-1], flush=True)
    if args.only is None:
        value = batches_rate(args.images, args.repeats)
        results["rates"]["batches alone (crop + flip, channels-last)"] = value
        lines.append(f"{'batches alone':<18} {'crop + flip, channels-last':<34} {value:8.0f} img/s")
        print(lines[-1])
    results["load_after"] = os.getloadavg()
    lines.append(f"load average after {results['load_after'][0]:.2f}")
    print(lines[-1])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(json.dumps(results, indent=1) + "\n")
        Path(f"{args.out}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
