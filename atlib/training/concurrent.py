"""Concurrent runs: several independent runs trained at once on one GPU, each on its own CUDA stream.

    records = train_concurrently([config_seed0, config_seed1, config_seed2], results="results")

One graphed run of a CIFAR-sized network at batch 128 leaves much of a large GPU idle: its kernels are small and run
one after another. Here each run is the engine's own ``engine.train_steps`` generator; the driver advances them in
turn, one SGD step at a time, with each run's work queued on its own CUDA stream, so the GPU may execute kernels of
several runs at once. Nothing is shared between runs but the process: each has its own data, generator, model,
optimizer, teacher and captured graph, computes exactly what ``engine.train`` computes (the same code in the same
order) and writes the same files under the same run id. An interrupted set resumes together or run by run.

Unlike a cohort (``atlib.training.cohorts``: one grouped network, WRN students with CE/KD/AT terms or BN-free NIN
students with any term but F-ActT) any runs can be combined: any architecture, any method. On a CPU the runs are
merely interleaved (no speed-up): the tests use that to show the records equal those of runs trained one by one.

Global RNG state: the CPU generator is swapped per run around every step (each run sees its own sequence, as if it
ran alone); CUDA's global generator is left alone (no training step draws from it).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch

from ..paths import DEFAULT_RESULTS
from .config import RunConfig
from .distributed import setup, teardown
from .engine import EPOCH, TrainingError, progress_bar, resolve_device, train_steps

logger = logging.getLogger(__name__)


def _check(configs: list[RunConfig]) -> torch.device:
    if not configs:
        raise TrainingError("train_concurrently needs at least one run configuration")
    devices = sorted({c.device for c in configs})
    if len(devices) > 1:
        raise TrainingError(f"concurrent runs must share one device, got devices {devices}")
    seen: dict[str, int] = {}
    for i, c in enumerate(configs):
        key = json.dumps(c.identity(), sort_keys=True, default=str)
        if key in seen:
            raise TrainingError(f"runs {seen[key]} and {i} are the same run ({c.student} / {c.method}, seed "
                                f"{c.seed}): each run may appear once")
        seen[key] = i
    return resolve_device(devices[0])


def run_streams(device: torch.device, k: int) -> list:
    """One CUDA stream per run on a GPU (None elsewhere); enter each with ``on_stream``."""
    return [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in range(k)]


def on_stream(stream):
    """Queue the device work inside on ``stream`` (nothing to switch on a CPU: None)."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def train_concurrently(configs, results: str | Path = DEFAULT_RESULTS, progress: bool = True, restart: bool = False,
                       log: Callable[[str], None] | None = logger.info, graph: bool | None = None,
                       channels_last: bool | None = None) -> list[dict]:
    """Train ``configs`` at once (finished ones are returned as they are); returns their records in order.

    ``graph`` and ``channels_last`` as in ``engine.train``. A run that fails with a ``TrainingError`` (diverged,
    missing teacher) stops alone: the others finish, then one ``TrainingError`` names every failed run; any other
    error (or an interrupt) stops them all, each keeping its last checkpoint. ``progress`` shows one bar of epochs
    over all runs."""
    configs = list(configs)
    ctx, device = setup(_check(configs))
    try:
        if ctx.enabled:
            raise TrainingError(f"concurrent runs are for one process; under torchrun ({ctx.world_size} processes) "
                                f"train runs one at a time")
        return _drive(configs, Path(results), progress, restart, log, device, ctx, graph, channels_last)
    finally:
        teardown(ctx)


def _drive(configs, results, progress, restart, log, device, ctx, graph, channels_last) -> list[dict]:
    """Advance every run's ``train_steps`` by one step in turn, each under its own stream, until all are done."""
    k = len(configs)
    steps = [train_steps(c, results, False, restart, log, device, ctx, graph, channels_last, concurrent=k)
             for c in configs]
    streams = run_streams(device, k)
    caller_rng = torch.get_rng_state()
    rng = [caller_rng.clone() for _ in configs]
    records: list[dict | None] = [None] * k
    failures: list[str] = []
    epochs_seen = [0] * k
    bar = progress_bar(progress, sum(c.epochs for c in configs), f"{k} concurrent runs", unit="epoch")
    active = list(range(k))
    try:
        while active:
            for i in list(active):
                torch.set_rng_state(rng[i])
                try:
                    with on_stream(streams[i]):
                        signal = next(steps[i])
                except StopIteration as done:
                    records[i] = done.value
                    active.remove(i)
                    if bar is not None:
                        bar.update(configs[i].epochs - epochs_seen[i])
                    continue
                except TrainingError as e:
                    failures.append(str(e))
                    active.remove(i)
                    continue
                finally:
                    rng[i] = torch.get_rng_state()
                if signal == EPOCH:
                    epochs_seen[i] += 1
                    if bar is not None:
                        bar.update(1)
    finally:
        for s in steps:
            s.close()
        if bar is not None:
            bar.close()
        torch.set_rng_state(caller_rng)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    if failures:
        raise TrainingError(f"{len(failures)} of {k} concurrent runs failed (the others finished and are stored): "
                            + " | ".join(failures))
    return records
