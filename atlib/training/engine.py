"""The training engine: runs one ``RunConfig`` to completion, resumably, recording every epoch.

    record = train(RunConfig(student="wrn-16-1", method="at", terms=method_terms("at"), teacher="<run-id>"))

- A finished run (``record.json`` present) is returned without training.
- An interrupted run resumes from ``checkpoint.pt`` (model, optimizer, epoch and every RNG state), and ends with the
  same numbers as an uninterrupted run (bit-exact on CPU).
- Each epoch appends one JSON line to ``metrics.jsonl`` carrying the whole configuration.
- The reported error is the last epoch's test error (as the paper does), never the best epoch's.

The epochs themselves run in ``loop.epochs``, shared with cohorts; this module builds one run (``SingleRun``): its
data (``sources``), teacher (``teachers``), student, objective, optimizer and step (``make_step``).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..losses import full_precision
from ..models import build_model, count_parameters
from ..models.pretrained import WeightsError, freeze, load_pretrained, set_train_mode
from ..objective import Objective, build_objective
from ..paths import DEFAULT_RESULTS
from .config import RunConfig
from .devices import (TrainingError, autocast, channels_last_wanted, compile_models, environment, graph_wanted,
                      make_optimizer, resolve_device)
from .distributed import Dist, all_reduce_sum, average_gradients, barrier, setup, teardown
from .loop import EPOCH, STEP, epochs, progress_bar, rng_state, run_to_end, set_rng_state
from .sources import make_source
from .steps import StepRunner
from .store import RunStore
from .teacher_ahead import TeacherAhead
from .teachers import load_teacher, prepare, teacher_on_device

__all__ = ["EPOCH", "STEP", "SingleRun", "TrainingError", "build_run", "build_student", "compile_models", "evaluate",
           "load_teacher", "make_optimizer", "make_step", "prepare", "progress_bar", "resolve_device", "run_to_end",
           "train", "train_epoch_steps", "train_steps"]

logger = logging.getLogger(__name__)


def evaluate(model: nn.Module, source, config: RunConfig, device: torch.device, ctx: Dist = Dist()) -> dict:
    """Test loss, top-1 error (%) and, with more than 5 classes, top-5 error (%) of ``model`` in eval mode."""
    model.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, wrong top-1, wrong top-5, count
    with torch.no_grad(), autocast(device, config.precision):
        for x, y in source.eval_batches():
            logits, _ = model(x)
            logits = full_precision(logits)
            sums[0] += nn.functional.cross_entropy(logits, y, reduction="sum")
            sums[1] += (logits.argmax(1) != y).sum()
            k = min(5, logits.shape[1])
            sums[2] += (logits.topk(k, dim=1).indices != y[:, None]).all(dim=1).sum()
            sums[3] += y.shape[0]
    loss, wrong1, wrong5, n = all_reduce_sum(sums, ctx).tolist()
    out = {"test_loss": loss / n, "test_error": 100.0 * wrong1 / n}
    if source.num_classes > 5:
        out["test_error_top5"] = 100.0 * wrong5 / n
    return out


def make_step(student: nn.Module, teacher: nn.Module | None, objective: Objective, optimizer,
              config: RunConfig, device: torch.device, ctx: Dist = Dist()):
    """The step body of one run (see ``steps``): one SGD step on ``(x, y)``, returning the batch's sums of
    the loss, every term and detail, and the number of wrong predictions."""
    extra = [p for p in objective.parameters() if p.requires_grad]  # F-ActT adapters: not inside DDP

    def body(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(device, config.precision):
            out = objective(student, teacher, x, y)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        average_gradients(extra, ctx)
        optimizer.step()
        named = {"loss": out.total, **out.terms, **out.details}  # stacked: three kernels, not three per statistic
        stats = dict(zip(named, (torch.stack([v.detach() for v in named.values()]).double() * y.shape[0]).unbind()))
        stats["wrong"] = (out.logits.detach().argmax(1) != y).sum().double()
        return stats

    return body


def train_epoch_steps(runners: list[StepRunner], batches, device: torch.device, bar=None, ctx: Dist = Dist()):
    """One epoch of SGD over ``batches`` as a generator, each batch through every runner in turn (one per run; several
    when runs share their batches): yields ``STEP`` after each batch and returns, per runner, the mean train loss,
    train error (%) and the mean of every term and detail (over all processes)."""
    for runner in runners:
        runner.reset()
    for step, (x, y) in enumerate(batches):
        for runner in runners:
            runner(x, y)
        if bar is not None:
            bar.update(y.shape[0] * ctx.world_size * len(runners))
            if step % 10 == 0 and "loss" in runners[0].sums:  # every 10 batches: reading waits for the device
                bar.set_postfix(loss=f"{runners[0].sums['loss'].item() / runners[0].seen:.4f}", refresh=False)
        yield STEP
    return [_epoch_means(runner, device, ctx) for runner in runners]


def _epoch_means(runner: StepRunner, device: torch.device, ctx: Dist) -> dict:
    sums = runner.totals()
    names = [n for n in sums if n != "wrong"]
    seen = torch.tensor(float(runner.seen), dtype=torch.float64, device=device)
    totals = all_reduce_sum(torch.stack([sums[n] for n in names] + [sums["wrong"], seen]), ctx).tolist()
    means = {name: total / totals[-1] for name, total in zip(names, totals)}
    means["error"] = 100.0 * totals[-2] / totals[-1]
    return means


def build_student(config: RunConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The student as the configuration asks: seeded init, optional pretrained weights, frozen parts."""
    torch.manual_seed(config.seed)
    student = build_model(config.student, num_classes=num_classes, init=config.init)
    if config.pretrained is not None:
        try:
            load_pretrained(student, config.student, config.pretrained, config.weights_dir)
        except WeightsError as e:
            raise TrainingError(str(e)) from None
    freeze(student, config.freeze_groups, config.freeze_bn)
    return student.to(device)


class SingleRun:
    """One run as the epoch loop's members (``loop.Members``): its student (in DDP under torchrun), objective,
    optimizer, data generator and step."""

    def __init__(self, config: RunConfig, run_id: str, student: nn.Module, teacher: nn.Module | None,
                 objective: Objective, source, device: torch.device, ctx: Dist, use_graph: bool, env: dict, log):
        self.ids, self.configs, self.label, self.device, self.environment = [run_id], [config], run_id, device, env
        self.config, self.student, self.teacher, self.objective, self.source, self.ctx = \
            config, student, teacher, objective, source, ctx
        self.num_train = source.num_train
        trainable = [p for p in student.parameters() if p.requires_grad] + list(objective.parameters())
        self.optimizer = make_optimizer(trainable, config, device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = student if not ctx.enabled else nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)
        self.runner = StepRunner(make_step(self.model, teacher, objective, self.optimizer, config, device, ctx),
                                 device, use_graph, log=log)

    @property
    def optimizers(self) -> list:
        return [self.optimizer]

    @property
    def runners(self) -> list[StepRunner]:
        return [self.runner]

    def resume(self, checkpoint: dict) -> int:
        """Load a checkpoint (``checkpoints``' format); returns the epochs it had done."""
        self.student.load_state_dict(checkpoint["student"])
        self.objective.load_state_dict(checkpoint["objective"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"], self.generator, self.device)
        return int(checkpoint["epoch"])

    def set_epoch(self, epoch: int) -> tuple:
        self.objective.epoch = epoch
        return tuple(self.objective.active_terms())

    def train_mode(self) -> None:
        set_train_mode(self.student, self.config.freeze_groups, self.config.freeze_bn)
        self.objective.train()

    def train_epoch(self, bar):
        batches = self.source.train_batches(self.generator)
        if not (isinstance(self.teacher, TeacherAhead) and self.objective.uses_teacher_outputs_now):
            return (yield from train_epoch_steps([self.runner], batches, self.device, bar, self.ctx))
        # the teacher's forward one batch ahead, on a second thread; an epoch cut short ends that thread at once
        with contextlib.closing(self.teacher.batches(batches)) as ahead:
            return (yield from train_epoch_steps([self.runner], ahead, self.device, bar, self.ctx))

    def evaluate(self) -> list[dict]:
        return [evaluate(self.student, self.source, self.config, self.device, self.ctx)]

    def checkpoints(self, epochs_done: int) -> list[dict]:
        return [{"epoch": epochs_done, "student": self.student.state_dict(),
                 "objective": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rng": rng_state(self.generator, self.device)}]

    def final_states(self) -> list[tuple[dict, int]]:
        return [(self.student.state_dict(), count_parameters(self.student))]

    def epoch_message(self, rows: list[dict]) -> str:
        (row,) = rows
        return (f"{self.label} epoch {row['epoch']}/{self.config.epochs}: train loss {row['train_loss']:.4f}, train "
                f"error {row['train_error']:.2f}%, test error {row['test_error']:.2f}%, "
                f"{row['images_per_s']:.0f} img/s")


def train(config: RunConfig, results: str | Path = DEFAULT_RESULTS, progress: bool = True, restart: bool = False,
          log: Callable[[str], None] | None = logger.info, graph: bool | None = None,
          channels_last: bool | None = None, compile: bool = False, teacher_ahead: bool = False) -> dict:
    """Train ``config`` (or return its record if finished). Returns the record dict.

    ``graph``: capture the training step as a CUDA graph (None: whenever possible, see ``devices.graph_wanted``).
    ``channels_last``: NHWC activations (None: on CUDA, see ``devices.channels_last_wanted``).
    ``compile``: compile the student's and teacher's forward (``compile_models``; off by default until measured).
    ``teacher_ahead``: on a CPU, the teacher's forward for the next batch on a second thread (``teacher_ahead``).
    Under ``torchrun`` every process calls this with the same configuration; rank 0 alone writes to the store."""
    device, ctx = None, Dist()
    try:
        device = resolve_device(config.device)
        ctx, device = setup(device)
        return run_to_end(train_steps(config, Path(results), progress and ctx.is_main, restart,
                                      log if ctx.is_main else None, device, ctx, graph, channels_last,
                                      compile=compile, teacher_ahead=teacher_ahead))
    finally:
        teardown(ctx)


def build_run(config: RunConfig, run_id: str, teacher, store: RunStore, restart: bool, log, device, ctx=Dist(),
              graph=None, channels_last=None, concurrent: int = 1, compile: bool = False, shared=None,
              teacher_ahead: bool = False) -> SingleRun:
    """Everything one run trains with; the run's config is written only once all of it could be built (a model or
    objective that cannot be built leaves no run directory behind). ``shared`` (``shared_batches.SharedParts``):
    the data and teacher passes of runs that share their batches. ``teacher_ahead``: on a CPU, the teacher's forward
    one batch ahead on a second thread where the objective uses its outputs (ignored without a teacher)."""
    if teacher_ahead and device.type != "cpu":
        raise TrainingError(f"teacher_ahead is a CPU path (a GPU overlaps the teacher by itself), got device {device}")
    if teacher_ahead and compile:
        raise TrainingError("teacher_ahead and compile together: torch.compile is not thread-safe (pick one)")
    source = make_source(config, device, ctx) if shared is None else shared.source(config, device)
    use_channels_last = channels_last_wanted(channels_last, device, source)
    fmt = torch.channels_last if use_channels_last else torch.contiguous_format
    if teacher is not None:
        teacher = teacher_on_device(teacher, config, source.num_classes, device, fmt)
    student = build_student(config, source.num_classes, device)
    objective = build_objective(config.terms, student, teacher)
    if compile:  # marks the forwards for compilation (it happens at their first call)
        compile_models(objective, student, teacher)
    if teacher is not None and shared is not None:
        teacher = shared.teacher_pass(config.teacher, teacher)  # one teacher pass per batch for all the runs
    ahead = teacher_ahead and teacher is not None and shared is None and objective.needs_teacher_outputs
    if ahead:
        teacher = TeacherAhead(teacher, lambda: autocast(device, config.precision))
    if restart and ctx.is_main:
        store.delete_run_state(run_id)
    if ctx.is_main:
        store.write_config(run_id, config.identity())
    barrier(ctx)
    source.memory_format = fmt
    student.to(memory_format=fmt)
    objective = objective.to(device)
    use_graph = graph_wanted(graph, device, ctx, source)
    env = environment(device, config.precision, ctx.world_size, use_graph, use_channels_last, compile,
                      **({"concurrent_runs": concurrent} if concurrent > 1 else {}),  # images_per_s: its share
                      **({"teacher_ahead": True} if ahead else {}))
    return SingleRun(config, run_id, student, teacher, objective, source, device, ctx, use_graph, env, log)


def train_steps(config: RunConfig, results: Path, progress: bool, restart: bool, log, device: torch.device,
                ctx: Dist = Dist(), graph: bool | None = None, channels_last: bool | None = None,
                concurrent: int = 1, compile: bool = False, teacher_ahead: bool = False):
    """``train``'s work as a generator on a resolved device: yields ``STEP`` after every SGD step and ``EPOCH``
    after every recorded epoch, returns the record. ``training.concurrent`` interleaves several of these, each on its
    own CUDA stream (``concurrent``: how many, noted in the records); ``train`` runs one to the end. All device work
    is queued on the current stream."""
    log = log or (lambda _msg: None)
    store = RunStore(results)
    config, run_id, teacher = prepare(config, store)
    if store.status(run_id) == "finished" and not restart:
        log(f"{run_id}: finished, test error {store.read_record(run_id)['test_error']:.2f}% (not retrained)")
        return store.read_record(run_id)
    run = build_run(config, run_id, teacher, store, restart, log, device, ctx, graph, channels_last, concurrent,
                    compile, teacher_ahead=teacher_ahead)
    start_epoch = 0
    checkpoint = store.load_checkpoint(run_id)  # CorruptCheckpointError is reported to the caller, never ignored
    if checkpoint is not None:
        start_epoch = run.resume(checkpoint)
        log(f"{run_id}: resuming after epoch {start_epoch}/{config.epochs}")
    else:
        log(f"{run_id}: training {config.student} ({count_parameters(run.student):,} trainable params), method "
            f"{config.method}, {config.epochs} epochs on {device}" + (f" x {ctx.world_size} processes"
                                                                       if ctx.enabled else ""))
    if ctx.is_main:
        store.truncate_metrics(run_id, start_epoch)
    (record,) = yield from epochs(run, store, start_epoch, log, progress, ctx)
    return record
