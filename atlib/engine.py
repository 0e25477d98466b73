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
import math
import platform
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import RunConfig
from .data import ImageSet, eval_batches, load_dataset, num_batches, to_device, train_batches
from .models import build_model, count_parameters
from .objective import Objective, build_objective
from .store import RunStore, StoreError

DEFAULT_RESULTS = "results"


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
    architecture unless a ``config.json`` of a run lies beside it."""
    ref = config.teacher
    path = Path(ref).expanduser()
    if path.is_file():
        arch = config.teacher_arch
        sibling = path.parent / "config.json"
        if arch is None and sibling.is_file():
            import json
            arch = json.loads(sibling.read_text())["student"]
        if arch is None:
            raise TrainingError(f"teacher file {ref} has no run config beside it: pass --teacher-arch")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read the file is reported the same way
            raise TrainingError(f"cannot read teacher weights {path}: {' '.join(str(e).split())[:200]}") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
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
    model = build_model(arch, init="standard")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise TrainingError(f"teacher weights do not fit {arch}: {' '.join(str(e).split())[:200]}") from None
    model.eval()
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


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(model: nn.Module, data: ImageSet, config: RunConfig, device: torch.device) -> dict[str, float]:
    """Test loss and error (%) of ``model`` in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    with torch.no_grad(), _autocast(device, config.precision):
        for x, y in eval_batches(data, config.eval_batch_size, device):
            logits, _ = model(x)
            loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            wrong += (logits.argmax(1) != y).sum()
    n = len(data)
    return {"test_loss": loss_sum.item() / n, "test_error": 100.0 * wrong.item() / n}


def train_epoch(student: nn.Module, teacher: nn.Module | None, objective: Objective, optimizer, data: ImageSet,
                generator: torch.Generator, config: RunConfig, device: torch.device, bar=None) -> dict[str, float]:
    """One epoch of SGD; returns mean train loss, train error (%) and the mean of every term and detail."""
    student.train()
    objective.train()
    sums: dict[str, torch.Tensor] = {}
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    augment = config.augment != "none"
    flip_only = config.augment == "flip"
    for x, y in train_batches(data, config.batch_size, generator, device, augment=augment, flip_only=flip_only):
        with _autocast(device, config.precision):
            out = objective(student, teacher, x, y)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        b = y.shape[0]
        seen += b
        for name, value in {"loss": out.total, **out.terms, **out.details}.items():
            sums[name] = sums.get(name, 0) + value.detach().double() * b
        wrong += (out.logits.detach().argmax(1) != y).sum()
        if bar is not None:
            bar.update(b)
    means = {name: (total / seen).item() for name, total in sums.items()}
    if not all(math.isfinite(v) for v in means.values()):
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        raise FloatingPointError(f"non-finite training loss {bad}")
    means["error"] = 100.0 * wrong.item() / seen
    return means


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)


def train(config: RunConfig, results: str | Path = DEFAULT_RESULTS, progress: bool = True, restart: bool = False,
          log: Callable[[str], None] | None = print) -> dict:
    """Train ``config`` (or return its record if finished). Returns the record dict."""
    log = log or (lambda _msg: None)
    store = RunStore(results)
    config, run_id, teacher = prepare(config, store)
    if store.status(run_id) == "finished" and not restart:
        log(f"{run_id}: finished, test error {store.read_record(run_id)['test_error']:.2f}% (not retrained)")
        return store.read_record(run_id)
    device = resolve_device(config.device)
    train_set, test_set = load_dataset(config.dataset, config.data_root)
    train_set, test_set = _subset(train_set, config.train_subset), _subset(test_set, config.test_subset)
    train_set, test_set = to_device(train_set, device), to_device(test_set, device)
    if restart:
        store.delete_run_state(run_id)
    store.write_config(run_id, config.identity())

    torch.manual_seed(config.seed)
    student = build_model(config.student, init=config.init).to(device)
    objective = build_objective(config.terms, student, teacher).to(device)
    if teacher is not None:
        teacher = teacher.to(device)
    params = list(student.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)

    start_epoch = 0
    checkpoint = store.load_checkpoint(run_id)  # CorruptCheckpointError is reported to the caller, never ignored
    if checkpoint is not None:
        student.load_state_dict(checkpoint["student"])
        objective.load_state_dict(checkpoint["objective"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        _set_rng_state(checkpoint["rng"], generator, device)
        start_epoch = int(checkpoint["epoch"])
        log(f"{run_id}: resuming after epoch {start_epoch}/{config.epochs}")
    else:
        log(f"{run_id}: training {config.student} ({count_parameters(student):,} params), method {config.method}"
            f", {config.epochs} epochs on {device}")
    store.truncate_metrics(run_id, start_epoch)

    environment = {"device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
                   "python": platform.python_version()}
    full_config = config.to_dict()
    for epoch in range(start_epoch, config.epochs):
        lr = config.lr_at(epoch)
        if epoch > 0 and lr != config.lr_at(epoch - 1) and config.reset_momentum_at_drops:
            optimizer.state.clear()  # the authors rebuild the optimizer at each drop: momentum restarts at zero
        for group in optimizer.param_groups:
            group["lr"] = lr
        bar = _progress_bar(progress, len(train_set), f"{run_id[:40]} {epoch + 1}/{config.epochs}")
        t0 = time.perf_counter()
        try:
            stats = train_epoch(student, teacher, objective, optimizer, train_set, generator, config, device, bar)
        except FloatingPointError as e:
            raise TrainingError(f"{run_id} diverged at epoch {epoch + 1}: {e}; the records of epochs 1..{epoch} "
                                f"are kept in {store.run_dir(run_id)}") from None
        finally:
            if bar is not None:
                bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        test = evaluate(student, test_set, config, device)
        seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1, "lr": lr,
            "train_loss": stats.pop("loss"), "train_error": stats.pop("error"), **test,
            "terms": {k: v for k, v in stats.items() if "/" not in k},
            "details": {k: v for k, v in stats.items() if "/" in k},
            "seconds": seconds, "images_per_s": len(train_set) / train_seconds,
            "run_id": run_id, "config": full_config, "environment": environment,
        }
        store.append_metrics(run_id, row)
        store.save_checkpoint(run_id, {"epoch": epoch + 1, "student": student.state_dict(),
                                       "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                                       "rng": _rng_state(generator, device)})
        if not progress:
            continue
        log(f"{run_id} epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, train error "
            f"{row['train_error']:.2f}%, test error {row['test_error']:.2f}%, {row['images_per_s']:.0f} img/s")

    metrics = store.read_metrics(run_id)
    last = metrics[-1]
    record = {
        "run_id": run_id, "status": "finished", "epochs": config.epochs,
        "test_error": last["test_error"], "test_loss": last["test_loss"],
        "train_error": last["train_error"], "train_loss": last["train_loss"],
        "train_seconds": sum(m["seconds"] for m in metrics),
        "parameters": count_parameters(student), "config": config.identity(), "environment": environment,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    store.save_weights(run_id, {k: v.detach().cpu() for k, v in student.state_dict().items()})
    store.write_record(run_id, record)
    store.delete_checkpoint(run_id)
    log(f"{run_id}: finished, test error {record['test_error']:.2f}% (last epoch)")
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
