"""The training engine: runs one ``RunConfig`` to completion, resumably, recording every epoch.

    record = train(RunConfig(student="wrn-16-1", method="at", terms=method_terms("at"), teacher="<run-id>"))

- A finished run (``record.json`` present) is returned without training.
- An interrupted run resumes from ``checkpoint.pt`` (model, optimizer, epoch and every RNG state), and ends with the
  same numbers as an uninterrupted run (bit-exact on CPU).
- Each epoch appends one JSON line to ``metrics.jsonl`` carrying the whole configuration.
- The reported error is the last epoch's test error (as the paper does), never the best epoch's.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data import (FOLDER_KINDS, ImageSet, eval_batches, folder_batches, load_dataset, load_folders, to_device,
                    train_batches)
from ..losses import full_precision
from ..models import build_model, count_parameters, external, model_from_state
from ..models.pretrained import WeightsError, freeze, load_pretrained, read_state_dict, set_train_mode
from ..objective import Objective, build_objective
from ..paths import DEFAULT_RESULTS
from . import claims, deadline
from .config import RunConfig
from .distributed import Dist, all_reduce_sum, average_gradients, barrier, setup, teardown
from .provenance import device_name, provenance, segments
from .steps import StepRunner, zero_momentum
from .store import RunStore, StoreError

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run cannot proceed (diverged, missing teacher, ...); the message says which and why."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TrainingError(f"device {name!r} requested but MPS is not available")
    return device


def load_teacher(config: RunConfig, store: RunStore) -> tuple[nn.Module, str, str]:
    """The frozen teacher: ``(model, architecture, canonical reference)``.

    ``config.teacher`` is a finished run id (or unique prefix) in ``store``, or a path to a weights file (a state
    dict, or a checkpoint holding one under ``"model"``); for a bare file ``config.teacher_arch`` names the
    architecture unless a ``config.json`` of a run lies beside it. The class count comes from the weights. A run id
    is looked up in ``config.teacher_store`` where set (e.g. the CPU demo learns from the one-seed profile's teacher).
    """
    ref = config.teacher
    if config.teacher_store is not None:
        store = RunStore(config.teacher_store)
    path = Path(ref).expanduser()
    if path.is_file():
        arch = config.teacher_arch
        sibling = path.parent / "config.json"
        if arch is None and sibling.is_file():
            arch = json.loads(sibling.read_text())["student"]
        if arch is None:
            raise TrainingError(f"teacher file {ref} has no run config beside it: pass --teacher-arch")
        try:
            state = read_state_dict(path)
        except WeightsError as e:
            raise TrainingError(f"cannot read teacher weights: {e}") from None
        canonical = str(path.resolve())
    else:
        try:
            run_id = store.find_run(ref)
        except StoreError as e:
            raise TrainingError(f"teacher {ref!r} is neither a file nor a run in {store.root}: {e}") from None
        if store.status(run_id) != "finished":
            raise TrainingError(f"teacher run {run_id} is not finished (status {store.status(run_id)}); train it first")
        arch = store.read_config(run_id)["student"]
        state = store.load_weights(run_id)
        canonical = run_id
    if config.teacher_arch is not None and config.teacher_arch != arch:
        raise TrainingError(f"teacher_arch {config.teacher_arch!r} does not match the teacher's architecture {arch!r}")
    if arch.startswith("resnet-") and not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}  # torchvision's own key names
    if arch.startswith(external.PREFIX) and not any(k.startswith("body.") for k in state):
        state = {f"body.{k}": v for k, v in state.items()}  # a plain torchvision state dict
    try:
        model = model_from_state(arch, state)
    except (RuntimeError, TypeError) as e:
        raise TrainingError(f"teacher weights do not fit {arch}: {' '.join(str(e).split())[:200]}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model, arch, canonical


def prepare(config: RunConfig, store: RunStore) -> tuple[RunConfig, str, nn.Module | None]:
    """Resolve the teacher reference to its canonical form and compute the run id."""
    if config.needs_teacher and config.teacher is None:
        raise TrainingError(f"method {config.method!r} needs a teacher: pass a teacher run id or weights file")
    if config.teacher is None:
        return config, config.run_id(), None
    teacher, arch, canonical = load_teacher(config, store)
    resolved = RunConfig.from_dict({**config.to_dict(), "teacher": canonical, "teacher_arch": arch})
    return resolved, resolved.run_id(teacher_label=arch), teacher


def _subset(data: ImageSet, n: int | None) -> ImageSet:
    return data if n is None else ImageSet(data.images[:n], data.labels[:n], data.classes)


class CifarSource:
    """CIFAR-10 (or the embedded sample) resident on the device, augmented there in batches."""

    def __init__(self, config: RunConfig, device: torch.device, ctx: Dist):
        train_set, test_set = load_dataset(config.dataset, config.data_root)
        train_set, test_set = _subset(train_set, config.train_subset), _subset(test_set, config.test_subset)
        self.train, self.config, self.device, self.ctx = to_device(train_set, device), config, device, ctx
        self.test = to_device(ImageSet(test_set.images[ctx.rank::ctx.world_size],
                                       test_set.labels[ctx.rank::ctx.world_size], test_set.classes), device)
        self.num_classes, self.num_train = len(train_set.classes), len(train_set)
        self.memory_format = torch.contiguous_format  # the engine sets channels_last on a GPU

    def train_batches(self, generator: torch.Generator):
        c, ctx = self.config, self.ctx
        local = c.batch_size // ctx.world_size
        for x, y in train_batches(self.train, c.batch_size, generator, self.device, augment=c.augment != "none",
                                  flip_only=c.augment == "flip", drop_last=ctx.enabled,
                                  memory_format=self.memory_format):
            yield (x[ctx.rank * local:(ctx.rank + 1) * local], y[ctx.rank * local:(ctx.rank + 1) * local]) \
                if ctx.enabled else (x, y)

    def eval_batches(self):
        return eval_batches(self.test, self.config.eval_batch_size, self.device, self.memory_format)


class FolderSource:
    """Image folders (``folder``, ``cub``, ``imagenet``) read by a DataLoader; global batches split over ranks."""

    def __init__(self, config: RunConfig, device: torch.device, ctx: Dist):
        if config.data_root is None:
            raise TrainingError(f"dataset {config.dataset!r} needs a data root (--data-root): the folder holding "
                                f"{'CUB_200_2011 files' if config.dataset == 'cub' else 'train/ and val/'}")
        if config.train_subset is not None or config.test_subset is not None:
            raise TrainingError("train_subset/test_subset apply to CIFAR-10 only; make a smaller image folder instead")
        data = load_folders(config.data_root, config.dataset, config.image_size)
        self.train, self.val, self.config, self.device, self.ctx = data.train, data.val, config, device, ctx
        self.num_classes, self.num_train = data.num_classes, len(data.train)
        if self.num_train < config.batch_size:
            raise TrainingError(f"{config.data_root} has {self.num_train} training images, fewer than one batch "
                                f"of {config.batch_size}")

    def _to_device(self, batches):
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, generator: torch.Generator):
        return self._to_device(folder_batches(self.train, self.config.batch_size, generator, self.ctx.rank,
                                              self.ctx.world_size, self.config.workers, train=True))

    def eval_batches(self):
        return self._to_device(folder_batches(self.val, self.config.eval_batch_size, None, self.ctx.rank,
                                              self.ctx.world_size, self.config.workers, train=False))


def make_source(config: RunConfig, device: torch.device, ctx: Dist):
    if ctx.enabled and config.batch_size % ctx.world_size:
        raise TrainingError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes")
    return (FolderSource if config.dataset in FOLDER_KINDS else CifarSource)(config, device, ctx)


def autocast(device: torch.device, precision: str):
    """The forward's precision context: bf16 autocast for ``precision`` "bf16", else nothing."""
    if precision == "bf16":  # no weight-cast cache: a CUDA graph must not capture cached casts
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


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


def make_optimizer(params, config: RunConfig, device: torch.device, fused: bool | None = None) -> torch.optim.SGD:
    """The authors' SGD (momentum, weight decay). ``fused`` (None: on CUDA) updates all parameters in one kernel
    instead of a few multi-tensor launches; same arithmetic (bit-identical to the default on CPU in float64)."""
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           fused=device.type == "cuda" if fused is None else fused)


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


def train_epoch_steps(student: nn.Module, teacher: nn.Module | None, objective: Objective, optimizer, batches,
                      config: RunConfig, device: torch.device, bar=None, ctx: Dist = Dist(),
                      runner: StepRunner | None = None):
    """One epoch of SGD over ``batches`` as a generator: yields ``STEP`` after each step (see ``train_steps``) and
    returns mean train loss, train error (%) and the mean of every term and detail (over all processes). The caller
    sets train/eval modes. ``runner`` (eager if None) runs the steps."""
    if runner is None:
        runner = StepRunner(make_step(student, teacher, objective, optimizer, config, device, ctx), device)
    runner.reset()
    for x, y in batches:
        runner(x, y)
        if bar is not None:
            b = y.shape[0] * ctx.world_size
            bar.update(b)
            if bar.n // b % 10 == 1 and "loss" in runner.sums:  # every 10 batches: reading waits for the device
                bar.set_postfix(loss=f"{runner.sums['loss'].item() / runner.seen:.4f}", refresh=False)
        yield STEP
    sums = runner.totals()
    names = [n for n in sums if n != "wrong"]
    seen = torch.tensor(float(runner.seen), dtype=torch.float64, device=device)
    totals = all_reduce_sum(torch.stack([sums[n] for n in names] + [sums["wrong"], seen]), ctx).tolist()
    means = {name: total / totals[-1] for name, total in zip(names, totals)}
    if not all(math.isfinite(v) for v in means.values()):
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        raise FloatingPointError(f"non-finite training loss {bad}")
    means["error"] = 100.0 * totals[-2] / totals[-1]
    return means


STEP, EPOCH = "step", "epoch"  # what ``train_steps`` yields: after each SGD step, after each recorded epoch


def run_to_end(steps):
    """Exhaust a step generator (``train_steps``) and return what it returns."""
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


def graph_wanted(graph: bool | None, device: torch.device, ctx: Dist, source) -> bool:
    """Capture the step as a CUDA graph? ``graph`` None (auto): on a single CUDA process with device-resident
    CIFAR data. True where impossible is an error."""
    possible = device.type == "cuda" and not ctx.enabled and isinstance(source, CifarSource)
    if graph and not possible:
        raise TrainingError(f"CUDA graphs need one CUDA process and CIFAR data (device {device}, "
                            f"{ctx.world_size} processes, dataset {source.config.dataset})")
    return possible if graph is None else bool(graph)


def channels_last_wanted(channels_last: bool | None, device: torch.device, source) -> bool:
    """Keep activations channels-last (NHWC)? None (auto): on CUDA with CIFAR data, where cuDNN's NHWC kernels
    measured 1.3-1.4x faster for single runs on an H200. Same arithmetic, another memory layout."""
    if channels_last is None:
        return device.type == "cuda" and isinstance(source, CifarSource)
    if channels_last and not isinstance(source, CifarSource):
        raise TrainingError("channels_last is implemented for CIFAR data only")
    return bool(channels_last)


def compile_models(objective: Objective, *models: nn.Module | None) -> None:
    """Compile the models' forward in place with ``torch.compile`` (Inductor fuses BatchNorm, ReLU and the
    additions; the state dict keeps its names). TrainingError, before anything is compiled, for an objective built on
    input gradients: compiled graphs do not support the double backpropagation of Table 3's terms."""
    needs_grad = [n for n, t in objective.terms.items() if t.needs_student_input_grad]
    if needs_grad:
        raise TrainingError(f"compile: the terms {needs_grad} backpropagate through an input gradient, which "
                            f"torch.compile does not support; train this run without compiling (--compile)")
    for model in models:
        if model is not None:
            model.compile()


def train(config: RunConfig, results: str | Path = DEFAULT_RESULTS, progress: bool = True, restart: bool = False,
          log: Callable[[str], None] | None = logger.info, graph: bool | None = None,
          channels_last: bool | None = None, compile: bool = False) -> dict:
    """Train ``config`` (or return its record if finished). Returns the record dict.

    ``graph``: capture the training step as a CUDA graph (None: whenever possible, see ``graph_wanted``).
    ``channels_last``: NHWC activations (None: on CUDA, see ``channels_last_wanted``).
    ``compile``: compile the student's and teacher's forward (``compile_models``; off by default until measured).
    Under ``torchrun`` every process calls this with the same configuration; rank 0 alone writes to the store."""
    device, ctx = None, Dist()
    try:
        device = resolve_device(config.device)
        ctx, device = setup(device)
        return run_to_end(train_steps(config, Path(results), progress and ctx.is_main, restart,
                                      log if ctx.is_main else None, device, ctx, graph, channels_last,
                                      compile=compile))
    finally:
        teardown(ctx)


def train_steps(config: RunConfig, results: Path, progress: bool, restart: bool, log, device: torch.device,
                ctx: Dist = Dist(), graph: bool | None = None, channels_last: bool | None = None,
                concurrent: int = 1, compile: bool = False):
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

    source = make_source(config, device, ctx)
    if teacher is not None:
        teacher_classes = [m.out_features for m in teacher.modules() if isinstance(m, nn.Linear)][-1]
        if teacher_classes != source.num_classes:
            raise TrainingError(f"teacher {config.teacher} has {teacher_classes} classes but {config.dataset} data "
                                f"has {source.num_classes}")
        teacher = teacher.to(device)
    # built before anything is written, so that a model or objective that cannot be built (a node name, mismatched
    # group counts, input-gradient terms to compile) leaves no run directory behind
    student = build_student(config, source.num_classes, device)
    objective = build_objective(config.terms, student, teacher)
    if compile:  # marks the forwards for compilation (it happens at their first call)
        compile_models(objective, student, teacher)
    if restart and ctx.is_main:
        store.delete_run_state(run_id)
    if ctx.is_main:
        store.write_config(run_id, config.identity())
    barrier(ctx)

    use_channels_last = channels_last_wanted(channels_last, device, source)
    if use_channels_last:
        source.memory_format = torch.channels_last
        student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    objective = objective.to(device)
    trainable = [p for p in student.parameters() if p.requires_grad] + list(objective.parameters())
    optimizer = make_optimizer(trainable, config, device)
    generator = torch.Generator().manual_seed(config.seed)

    start_epoch = 0
    checkpoint = store.load_checkpoint(run_id)  # CorruptCheckpointError is reported to the caller, never ignored
    if checkpoint is not None:
        student.load_state_dict(checkpoint["student"])
        objective.load_state_dict(checkpoint["objective"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"], generator, device)
        start_epoch = int(checkpoint["epoch"])
        log(f"{run_id}: resuming after epoch {start_epoch}/{config.epochs}")
    else:
        log(f"{run_id}: training {config.student} ({count_parameters(student):,} trainable params), method "
            f"{config.method}, {config.epochs} epochs on {device}" + (f" x {ctx.world_size} processes"
                                                                       if ctx.enabled else ""))
    if ctx.is_main:
        store.truncate_metrics(run_id, start_epoch)
    model = student
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda"
                                                    else None)

    use_graph = graph_wanted(graph, device, ctx, source)
    runner = StepRunner(make_step(model, teacher, objective, optimizer, config, device, ctx), device, use_graph,
                        log=log)
    environment = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
                   "python": platform.python_version(), "processes": ctx.world_size, "cuda_graph": use_graph,
                   "channels_last": use_channels_last, "compiled": compile, **provenance(device, config.precision)}
    if concurrent > 1:
        environment["concurrent_runs"] = concurrent  # images_per_s is then this run's share of the GPU
    full_config = config.to_dict()
    step_key = None
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        lr = config.lr_at(epoch)
        if epoch > 0 and lr != config.lr_at(epoch - 1) and config.reset_momentum_at_drops:
            zero_momentum(optimizer)  # the authors rebuild the optimizer at each drop: momentum restarts at zero
        for group in optimizer.param_groups:
            group["lr"] = lr
        objective.epoch = epoch
        key = (lr, tuple(objective.active_terms()))  # a captured step bakes in lr and the active terms
        if key != step_key:
            runner.invalidate()
            step_key = key
        environment["cuda_graph"] = runner.graph
        set_train_mode(student, config.freeze_groups, config.freeze_bn)
        objective.train()
        bar = progress_bar(progress, source.num_train, f"{run_id[:40]} {epoch + 1}/{config.epochs}")
        t0 = time.perf_counter()
        try:
            stats = yield from train_epoch_steps(model, teacher, objective, optimizer,
                                                 source.train_batches(generator), config, device, bar, ctx, runner)
        except FloatingPointError as e:
            raise TrainingError(f"{run_id} diverged at epoch {epoch + 1}: {e}; the records of epochs 1..{epoch} "
                                f"are kept in {store.run_dir(run_id)}") from None
        finally:
            if bar is not None:
                bar.close()
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()  # this run's work only (see atlib.training.concurrent)
        train_seconds = time.perf_counter() - t0
        test = evaluate(student, source, config, device, ctx)
        if not math.isfinite(test["test_loss"]):
            raise TrainingError(f"{run_id} diverged at epoch {epoch + 1}: test loss is {test['test_loss']}; the "
                                f"records of epochs 1..{epoch} are kept in {store.run_dir(run_id)}")
        row = epoch_row(epoch, lr, stats, test, time.perf_counter() - t0, source.num_train / train_seconds, run_id,
                        full_config, environment)
        if not ctx.enabled:
            claims.check(run_id)  # taken over by another process meanwhile: drop this epoch, write nothing
        if ctx.is_main:
            store.append_metrics(run_id, row)
            store.save_checkpoint(run_id, {"epoch": epoch + 1, "student": student.state_dict(),
                                           "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                                           "rng": rng_state(generator, device)})
        barrier(ctx)
        # one line per epoch, bar or not (a background campaign's log has no bar)
        log(f"{run_id} epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, train error "
            f"{row['train_error']:.2f}%, test error {row['test_error']:.2f}%, {row['images_per_s']:.0f} img/s")
        if not ctx.enabled:  # (processes could disagree on the time left)
            deadline.check(run_id, time.perf_counter() - epoch_start, epoch + 1, config.epochs)
            claims.check(run_id)  # taken over by another process (see atlib.training.claims): stop at this boundary
        yield EPOCH

    if not ctx.is_main:
        barrier(ctx)  # wait for rank 0's record, then return the same one
        return store.read_record(run_id)
    record = finish_run(store, run_id, config, student.state_dict(), count_parameters(student), environment)
    barrier(ctx)
    log(f"{run_id}: finished, test error {record['test_error']:.2f}% (last epoch)")
    return record


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
