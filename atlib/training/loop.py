"""The one epoch loop of atlib: single runs, WRN cohorts and Table 3's grouped NINs all train through ``epochs``.

    records = yield from epochs(members, store, start_epoch, log, progress)

Per epoch: the learning rate of the schedule (momentum restarted at each drop, as the authors' code does by rebuilding
its optimizer), the active loss terms, one pass over the training batches, the test, one metrics line and one
checkpoint per run, a log line, then the deadline and the claims. At the end each run's weights and record. What
differs between a single run, K runs trained as one network and K runs sharing their batches is the *members* object
passed in (``Members`` below: ``engine.SingleRun``, ``cohorts.CohortRuns``, ``shared_batches.SharedBatchRuns``), which
computes the steps, the statistics and the checkpoints.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import time
from typing import Callable, Protocol

import torch

from . import claims, deadline
from .config import RunConfig
from .devices import TrainingError
from .distributed import Dist, barrier
from .provenance import segments
from .steps import StepRunner, zero_momentum
from .store import RunStore

STEP, EPOCH = "step", "epoch"  # what a training generator yields: after each SGD step, after each recorded epoch


class Members(Protocol):
    """One or more runs trained in step with each other, as the loop sees them: one network and optimizer (a single
    run, a cohort) or several (runs sharing their batches)."""
    ids: list[str]                # the runs' ids, in order
    configs: list[RunConfig]      # their configurations (they share the schedule)
    optimizers: list[torch.optim.Optimizer]
    runners: list[StepRunner]     # run the step bodies; their sums are the epoch's statistics
    num_train: int                # training images per epoch and run
    label: str                    # how logs and deadlines name them
    device: torch.device
    environment: dict             # where and how they train (every metrics line carries it)

    def set_epoch(self, epoch: int) -> tuple: ...       # activate the epoch's terms; returns them (a graph key)
    def train_mode(self) -> None: ...
    def train_epoch(self, bar): ...                    # generator: yields STEP, returns per-run mean statistics
    def evaluate(self) -> list[dict]: ...               # per-run test loss and errors
    def checkpoints(self, epochs_done: int) -> list[dict]: ...  # per-run single-run checkpoints
    def final_states(self) -> list[tuple[dict, int]]: ...       # per-run (state dict, trainable parameters)
    def epoch_message(self, rows: list[dict]) -> str: ...


def run_to_end(steps):
    """Exhaust a step generator (``engine.train_steps``) and return what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def rng_state(generator: torch.Generator, device: torch.device) -> dict:
    """Every RNG state a run's checkpoint keeps: its data generator's, torch's CPU one and, on CUDA, the device's."""
    state = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    """Restore what ``rng_state`` kept."""
    generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "img"):
    """A tqdm bar (None when not ``enabled``)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def set_learning_rate(optimizer: torch.optim.Optimizer, config: RunConfig, epoch: int) -> float:
    """The schedule's lr for 0-based ``epoch``, set on every parameter group; momentum restarts at each drop (the
    authors rebuild the optimizer there) when ``config.reset_momentum_at_drops``."""
    lr = config.lr_at(epoch)
    if epoch > 0 and lr != config.lr_at(epoch - 1) and config.reset_momentum_at_drops:
        zero_momentum(optimizer)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def epoch_row(epoch: int, lr: float, stats: dict, test: dict, seconds: float, images_per_s: float, run_id: str,
              full_config: dict, environment: dict) -> dict:
    """One line of ``metrics.jsonl``: the epoch's train and test figures with the whole configuration."""
    stats = dict(stats)
    return {
        "epoch": epoch + 1, "lr": lr,
        "train_loss": stats.pop("loss"), "train_error": stats.pop("error"), **test,
        "terms": {k: v for k, v in stats.items() if "/" not in k},
        "details": {k: v for k, v in stats.items() if "/" in k},
        "seconds": seconds, "images_per_s": images_per_s,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),  # when the epoch ended (provenance per segment)
        "run_id": run_id, "config": full_config, "environment": environment,
    }


def check_finite(run_id: str, epoch: int, stats: dict, test: dict | None, store: RunStore) -> None:
    """TrainingError if a run's epoch gave a non-finite training statistic or (``test`` given) test loss; its records
    of the epochs before are kept."""
    bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
    what = f"non-finite training loss {bad}" if bad else \
        None if test is None or math.isfinite(test["test_loss"]) else f"test loss is {test['test_loss']}"
    if what is not None:
        raise TrainingError(f"{run_id} diverged at epoch {epoch + 1}: {what}; the records of epochs 1..{epoch} are "
                            f"kept in {store.run_dir(run_id)}")


def finish_run(store: RunStore, run_id: str, config: RunConfig, state: dict, parameters: int,
               environment: dict) -> dict:
    """Write the final weights and ``record.json`` (from the last metrics line); drop the checkpoint."""
    metrics = store.read_metrics(run_id)
    last = metrics[-1]
    record = {
        "run_id": run_id, "status": "finished", "epochs": config.epochs,
        **{k: last[k] for k in ("test_error", "test_error_top5", "test_loss", "train_error", "train_loss")
           if k in last},
        "train_seconds": sum(m["seconds"] for m in metrics),  # wall time of the epochs, evaluation included
        "images_per_s": statistics.median(m["images_per_s"] for m in metrics),  # training images/s, median epoch
        "parameters": parameters, "config": config.identity(), "environment": environment,
        "segments": segments(metrics),  # which epochs ran where (a run may move between machines at an epoch)
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    store.save_weights(run_id, {k: v.detach().cpu() for k, v in state.items()})
    store.write_record(run_id, record)
    store.delete_checkpoint(run_id)
    return record


def _train_one_epoch(members: Members, epoch: int, progress: bool):
    """The training pass of one epoch: returns per-run statistics and the pass's seconds."""
    c = members.configs[0]
    bar = progress_bar(progress, members.num_train * len(members.ids), f"{members.label[:40]} {epoch + 1}/{c.epochs}")
    t0 = time.perf_counter()
    try:
        stats = yield from members.train_epoch(bar)
    finally:
        if bar is not None:
            bar.close()
    if members.device.type == "cuda":
        torch.cuda.current_stream(members.device).synchronize()  # this run's work only (see training.concurrent)
    return stats, t0


def _record_epoch(members: Members, store: RunStore, rows: list[dict], ctx: Dist, epoch: int) -> None:
    """Each run's metrics line and checkpoint (rank 0 only; nothing if a run's claim was taken over meanwhile)."""
    if not ctx.enabled:
        for run_id in members.ids:
            claims.check(run_id)  # taken over by another process meanwhile: drop this epoch, write nothing
    if ctx.is_main:
        for run_id, row, checkpoint in zip(members.ids, rows, members.checkpoints(epoch + 1)):
            store.append_metrics(run_id, row)
            store.save_checkpoint(run_id, checkpoint)
    barrier(ctx)


def epochs(members: Members, store: RunStore, start_epoch: int, log: Callable[[str], None], progress: bool,
           ctx: Dist = Dist()):
    """Train ``members`` from ``start_epoch`` to the end as a generator (yields ``STEP`` after every step, ``EPOCH``
    after every recorded epoch); returns their records in order. Under torchrun every process runs it; rank 0
    alone writes to the store."""
    c = members.configs[0]
    full_configs = [config.to_dict() for config in members.configs]
    step_key, durations = None, []
    for epoch in range(start_epoch, c.epochs):
        epoch_start = time.perf_counter()
        lr = [set_learning_rate(optimizer, c, epoch) for optimizer in members.optimizers][0]
        key = (lr, members.set_epoch(epoch))  # a captured step bakes in lr and the active terms
        if key != step_key:
            for runner in members.runners:
                runner.invalidate()
            step_key = key
        members.environment["cuda_graph"] = any(runner.graph for runner in members.runners)
        members.train_mode()
        stats, t0 = yield from _train_one_epoch(members, epoch, progress)
        train_seconds = time.perf_counter() - t0
        for run_id, s in zip(members.ids, stats):
            check_finite(run_id, epoch, s, None, store)  # before the test: a diverged run is not tested
        tests = members.evaluate()
        for run_id, s, t in zip(members.ids, stats, tests):
            check_finite(run_id, epoch, s, t, store)
        seconds, rate = time.perf_counter() - t0, members.num_train / train_seconds
        rows = [epoch_row(epoch, lr, s, t, seconds, rate, run_id, full, members.environment)
                for run_id, s, t, full in zip(members.ids, stats, tests, full_configs)]
        _record_epoch(members, store, rows, ctx, epoch)
        log(members.epoch_message(rows))  # one line per epoch, bar or not (a background campaign's log has no bar)
        if not ctx.enabled:  # (processes could disagree on the time left)
            durations.append(time.perf_counter() - epoch_start)
            deadline.check(members.label, deadline.next_epoch_seconds(durations), epoch + 1, c.epochs)
            for run_id in members.ids:
                claims.check(run_id)  # taken over by another process (see training.claims): stop at this boundary
        yield EPOCH
    if not ctx.is_main:
        barrier(ctx)  # wait for rank 0's records, then return the same ones
        return [store.read_record(run_id) for run_id in members.ids]
    records = [finish_run(store, run_id, config, state, parameters, members.environment)
               for run_id, config, (state, parameters) in zip(members.ids, members.configs, members.final_states())]
    barrier(ctx)
    for record in records:
        log(f"{record['run_id']}: finished, test error {record['test_error']:.2f}% (last epoch)")
    return records
