"""What the CPU demo's jobs cost on one CPU thread, and what sharing batches and smaller test batches save.

    python benchmarks/cpu_demo_jobs.py [--epochs 2] [--out results/benchmarks/cpu-demo-jobs-DATE]

The demo's own runs (profile ``cpu-demo``, seed 0; the one-seed profile's WRN-16-2 teacher), shortened to
``--epochs`` epochs, trained in a scratch store on one thread:
- AT, KD and AT+KD one after another (``engine.train_steps``), then the same three side by side on shared batches
  (``shared_batches``: one teacher pass per batch); their weights must come out equal (checked, reported);
- the student alone;
- a WRN-16-1 testing the sample's 1,000 test images in batches of 1000 (the CIFAR default) and of 100 (the demo's).
Writes ``<out>.json`` and ``<out>.txt`` with the CPU model and the load average before and after (other work on
the machine lowers every number). Nothing is asserted but the equality.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from atlib.data import eval_batches, load_sample
from atlib.models import build_model
from atlib.paper import demo_runs
from atlib.paper.settings import settings_from_profile
from atlib.training.config import RunConfig
from atlib.training.engine import resolve_device, train_steps
from atlib.training.loop import run_to_end
from atlib.training.provenance import cpu_model
from atlib.training.shared_batches import train_shared_steps
from atlib.training.store import RunStore


def demo_configs(epochs: int) -> dict[str, RunConfig]:
    """The demo's seed-0 runs by method, ``epochs`` long (the schedule's first drop after the first epoch)."""
    settings = settings_from_profile("cpu-demo", results_dir=str(Path(__file__).resolve().parents[1] / "results"))
    out = {}
    for config in demo_runs.configs(settings):
        if config.seed == 0:
            out[config.method] = RunConfig.from_dict({**config.to_dict(), "epochs": epochs,
                                                      "lr_milestones": [max(1, epochs // 2)]})
    return out


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def test_rate(batch: int, repeats: int = 3) -> float:
    """Images/s of a WRN-16-1 (eval mode, channels-last, one thread) over the sample's 1,000 test images."""
    _, test = load_sample()
    model = build_model("wrn-16-1", num_classes=10).eval().to(memory_format=torch.channels_last)
    best = 0.0
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x, _y in eval_batches(test, batch, "cpu", torch.channels_last):
                model(x)
            best = max(best, len(test) / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=f"results/benchmarks/cpu-demo-jobs-{time.strftime('%Y-%m-%d')}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = resolve_device("cpu")
    configs = demo_configs(args.epochs)
    taught = [configs[m] for m in ("at", "kd", "at+kd")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        alone_root, shared_root = Path(scratch) / "alone", Path(scratch) / "shared"
        alone = {}
        for config in taught + [configs["student"]]:
            alone[config.method], _ = timed(lambda c=config: run_to_end(
                train_steps(c, alone_root, False, False, None, device, channels_last=True)))
        shared, records = timed(lambda: run_to_end(
            train_shared_steps(taught, shared_root, False, False, None, device, channels_last=True)))
        equal = all(all(torch.equal(a[k], b[k]) for k in a) for a, b in (
            (RunStore(alone_root).load_weights(r["run_id"]), RunStore(shared_root).load_weights(r["run_id"]))
            for r in records))
    tests = {batch: test_rate(batch) for batch in (1000, 100)}
    one_by_one = sum(alone[m] for m in ("at", "kd", "at+kd"))
    result = {
        "cpu": cpu_model(), "torch": torch.__version__, "threads": 1, "epochs": args.epochs,
        "images_per_epoch": 2500, "seconds": {**{f"{m} alone": round(s, 1) for m, s in alone.items()},
                                              "at, kd, at+kd one by one": round(one_by_one, 1),
                                              "at, kd, at+kd on shared batches": round(shared, 1)},
        "shared_over_one_by_one": round(shared / one_by_one, 3), "shared_weights_equal_alone": equal,
        "test_images_per_s": {f"batch {b}": round(r) for b, r in tests.items()},
        "load_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    lines = [f"CPU demo jobs, {args.epochs} epochs of 2,500 images, one thread, {result['cpu']}, torch "
             f"{result['torch']} ({result['date']}; 1-minute load {load_before:.2f} before, "
             f"{result['load_1min']['after']:.2f} after)"]
    lines += [f"  {name:34s} {seconds:7.1f} s" for name, seconds in result["seconds"].items()]
    lines += [f"  shared / one by one: {result['shared_over_one_by_one']:.3f}; weights equal to alone: {equal}"]
    lines += [f"  test, WRN-16-1, {name}: {rate} img/s" for name, rate in result["test_images_per_s"].items()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
