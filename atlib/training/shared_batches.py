"""Runs that share their batches: several runs of one seed trained side by side, each teacher pass made once.

    records = train_shared([config_at, config_kd, config_at_kd], results="results")

Runs that share a seed and a schedule see the same batches in the same order (their data generators start from the
same seed). Trained alone, each would draw those batches and, with a teacher, run the teacher on them: AT, KD and
AT+KD from one teacher make the same teacher pass three times. Here the runs step in turn on each batch, drawn once,
and a teacher's outputs for a batch are computed once (``SharedTeacher``). Each run keeps its own student, objective,
optimizer, data generator state, metrics, checkpoint, weights and record under its own run id, and its numbers are
bit for bit those of training it alone (tested on the CPU): the shared work is the same arithmetic on the same
inputs. On one CPU thread the CPU demo's AT, KD and AT+KD of one seed (WRN-16-1 from the WRN-16-2) took 0.76x the
time of the three one after another (``benchmarks/cpu_demo_jobs.py``, results/benchmarks/cpu-demo-jobs-2026-12-07).

Members may differ in ``FREE_FIELDS`` only (method, loss terms, teacher, student); everything else (seed, data,
batch size, schedule, precision) they share. A group resumes from its members' checkpoints when all are at one epoch;
otherwise (or with one run left) its runs train one by one with ``engine.train_steps``, to the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..paths import DEFAULT_RESULTS
from .config import RunConfig, first_difference
from .devices import TrainingError, resolve_device
from .engine import SingleRun, build_run, train_epoch_steps, train_steps
from .loop import epochs, run_to_end
from .sources import make_source
from .steps import StepRunner
from .store import RunStore
from .teachers import prepare

FREE_FIELDS = ("student", "method", "terms", "teacher", "teacher_arch", "teacher_file", "teacher_store")


class SharedTeacher(nn.Module):
    """A frozen teacher whose outputs for an input batch are computed once and handed to every run that asks for the
    same batch (the same tensor object) without gradients. With gradients (input-gradient terms) it runs as usual."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher
        self._last: tuple | None = None  # (input, outputs) of the last batch: only one batch is kept

    def forward(self, x: torch.Tensor):
        if torch.is_grad_enabled() or x.requires_grad:
            return self.teacher(x)
        if self._last is None or self._last[0] is not x:
            self._last = (x, self.teacher(x))
        return self._last[1]


class SharedParts:
    """What the runs of a group share: one data source and one ``SharedTeacher`` per teacher."""

    def __init__(self):
        self._source = None
        self._teachers: dict[str, SharedTeacher] = {}

    def source(self, config: RunConfig, device: torch.device):
        if self._source is None:
            self._source = make_source(config, device)
        return self._source

    def teacher_pass(self, reference: str, teacher: nn.Module) -> SharedTeacher:
        return self._teachers.setdefault(reference, SharedTeacher(teacher))


def check_shareable(configs: list[RunConfig]) -> None:
    """TrainingError (one line) unless the runs can share their batches: equal in all but ``FREE_FIELDS``."""
    differs = first_difference(configs, FREE_FIELDS)
    if differs is not None:
        name, value, other = differs
        raise TrainingError(f"runs sharing their batches must share {name}: {value!r} vs {other!r}")


class SharedBatchRuns:
    """Single runs stepping in turn on each batch, drawn once, as the epoch loop's members (``loop.Members``)."""

    def __init__(self, runs: list[SingleRun]):
        self.runs = runs
        self.ids = [run.ids[0] for run in runs]
        self.configs = [run.config for run in runs]
        self.device, self.num_train = runs[0].device, runs[0].num_train
        self.label = f"{len(runs)} runs sharing batches ({self.ids[0]}, ...)"
        self.environment = {**runs[0].environment, "shared_batches": self.ids}  # provenance: who shared the time

    @property
    def optimizers(self) -> list:
        return [run.optimizer for run in self.runs]

    @property
    def runners(self) -> list[StepRunner]:
        return [run.runner for run in self.runs]

    def set_epoch(self, epoch: int) -> tuple:
        return tuple(run.set_epoch(epoch) for run in self.runs)

    def train_mode(self) -> None:
        for run in self.runs:
            run.train_mode()

    def train_epoch(self, bar):
        first = self.runs[0]
        stats = yield from train_epoch_steps(self.runners, first.source.train_batches(first.generator), self.device,
                                             bar)
        for run in self.runs[1:]:
            run.generator.set_state(first.generator.get_state())  # as if each had drawn the batches itself
        return stats

    def evaluate(self) -> list[dict]:
        return [run.evaluate()[0] for run in self.runs]

    def checkpoints(self, epochs_done: int) -> list[dict]:
        return [run.checkpoints(epochs_done)[0] for run in self.runs]

    def final_states(self) -> list[tuple[dict, int]]:
        return [run.final_states()[0] for run in self.runs]

    def epoch_message(self, rows: list[dict]) -> str:
        errors = ", ".join(f"{c.method} {row['test_error']:.2f}%" for c, row in zip(self.configs, rows))
        return (f"{len(self.runs)} runs sharing batches, epoch {rows[0]['epoch']}/{self.configs[0].epochs}: test "
                f"error {errors}; {rows[0]['images_per_s']:.0f} img/s each")


def train_shared_steps(configs: list[RunConfig], results: Path, progress: bool, restart: bool, log,
                       device: torch.device, channels_last: bool | None = None, concurrent: int = 1):
    """``train_shared``'s work as a generator (as ``engine.train_steps``): yields after every step and epoch,
    returns the records in ``configs`` order."""
    log = log or (lambda _msg: None)
    configs = list(configs)
    if not configs:
        raise TrainingError("runs sharing batches: none given")
    check_shareable(configs)
    store = RunStore(results)
    prepared = [prepare(c, store) for c in configs]
    ids = [run_id for _, run_id, _ in prepared]
    if len(set(ids)) != len(ids):
        raise TrainingError(f"runs sharing batches list the same run twice: "
                            f"{sorted({i for i in ids if ids.count(i) > 1})}")
    pending = [p for p in prepared if restart or store.status(p[1]) != "finished"]
    checkpoints = {} if restart else {run_id: store.load_checkpoint(run_id) for _, run_id, _ in pending}
    done_epochs = {int(ck["epoch"]) if ck else 0 for ck in checkpoints.values()} if checkpoints else {0}
    records = {}
    if len(pending) > 1 and len(done_epochs) == 1:
        shared = SharedParts()
        runs = [build_run(config, run_id, teacher, store, restart, log, device, channels_last=channels_last,
                          concurrent=concurrent, shared=shared) for config, run_id, teacher in pending]
        start = next(iter(done_epochs))
        if start:
            for run in runs:
                run.resume(checkpoints[run.ids[0]])
            log(f"{len(runs)} runs sharing batches: resuming after epoch {start}/{configs[0].epochs}")
        else:
            log(f"{len(runs)} runs sharing batches ({', '.join(c.method for c, _, _ in pending)}), "
                f"{configs[0].epochs} epochs on {device}: {', '.join(r.ids[0] for r in runs)}")
        for run_id in ids:
            if run_id in {r.ids[0] for r in runs}:
                store.truncate_metrics(run_id, start)
        trained = yield from epochs(SharedBatchRuns(runs), store, start, log, progress)
        records.update({record["run_id"]: record for record in trained})
    for config, run_id, _ in prepared:  # finished ones are read; any left (one run, or runs at different epochs)
        if run_id not in records:          # train one by one
            records[run_id] = yield from train_steps(config, results, progress, restart, log, device,
                                                     channels_last=channels_last, concurrent=concurrent)
    return [records[i] for i in ids]


def train_shared(configs, results: str | Path = DEFAULT_RESULTS, progress: bool = True, restart: bool = False,
                 log: Callable[[str], None] | None = None, channels_last: bool | None = None) -> list[dict]:
    """Train ``configs`` side by side on shared batches (see the module); returns their records in order. Finished
    runs are not retrained."""
    device = resolve_device(configs[0].device if configs else "auto")
    return run_to_end(train_shared_steps(list(configs), Path(results), progress, restart, log, device,
                                         channels_last))
