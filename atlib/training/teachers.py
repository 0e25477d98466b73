"""A run's teacher: a finished run of a store, or a weights file, loaded frozen; and the run's resolved identity.

- ``load_teacher(config, store)``: the frozen teacher model, its architecture and its canonical reference.
- ``prepare(config, store)``: the configuration with the teacher resolved, its run id, and the teacher.

A teacher run is referred to by its run id. A teacher file is referred to by its content, ``sha256:<16 hex digits>``
(its location goes to the runtime field ``teacher_file``), so the same file in two directories makes one run id."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from ..models import external, model_from_state
from ..models.pretrained import WeightsError, read_state_dict
from .config import RunConfig
from .devices import TrainingError
from .store import RunStore, StoreError

CONTENT_PREFIX = "sha256:"


def file_identity(path: Path) -> str:
    """A teacher file's canonical reference: the first 16 hex digits of its content's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return CONTENT_PREFIX + digest.hexdigest()[:16]


def _teacher_path(config: RunConfig) -> Path | None:
    """The teacher's weights file, if the teacher is given as one (by path, or by content with ``teacher_file``)."""
    if config.teacher.startswith(CONTENT_PREFIX):
        if config.teacher_file is None or not Path(config.teacher_file).is_file():
            raise TrainingError(f"teacher {config.teacher} is a file's content hash but its file "
                                f"({config.teacher_file}) is not there: pass the file with --teacher")
        path = Path(config.teacher_file)
        if file_identity(path) != config.teacher:
            raise TrainingError(f"teacher file {path} is not the teacher {config.teacher} (its content changed)")
        return path
    path = Path(config.teacher).expanduser()
    return path if path.is_file() else None


def _from_file(config: RunConfig, path: Path) -> tuple[dict, str]:
    arch = config.teacher_arch
    sibling = path.parent / "config.json"
    if arch is None and sibling.is_file():
        arch = json.loads(sibling.read_text())["student"]
    if arch is None:
        raise TrainingError(f"teacher file {config.teacher} has no run config beside it: pass --teacher-arch")
    try:
        return read_state_dict(path), arch
    except WeightsError as e:
        raise TrainingError(f"cannot read teacher weights: {e}") from None


def _from_store(config: RunConfig, store: RunStore) -> tuple[dict, str, str]:
    try:
        run_id = store.find_run(config.teacher)
    except StoreError as e:
        raise TrainingError(f"teacher {config.teacher!r} is neither a file nor a run in {store.root}: {e}") from None
    if store.status(run_id) != "finished":
        raise TrainingError(f"teacher run {run_id} is not finished (status {store.status(run_id)}); train it first")
    return store.load_weights(run_id), store.read_config(run_id)["student"], run_id


def load_teacher(config: RunConfig, store: RunStore) -> tuple[nn.Module, str, str]:
    """The frozen teacher: ``(model, architecture, canonical reference)``.

    ``config.teacher`` is a finished run id (or unique prefix) in ``store``, or a path to a weights file (a state
    dict, or a checkpoint holding one under ``"model"``); for a bare file ``config.teacher_arch`` names the
    architecture unless a ``config.json`` of a run lies beside it. The class count comes from the weights. A run id
    is looked up in ``config.teacher_store`` where set (e.g. the CPU demo learns from the one-seed profile's teacher).
    """
    if config.teacher_store is not None:
        store = RunStore(config.teacher_store)
    path = _teacher_path(config)
    if path is not None:
        (state, arch), canonical = _from_file(config, path), file_identity(path)
    else:
        state, arch, canonical = _from_store(config, store)
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
    path = _teacher_path(config)
    resolved = RunConfig.from_dict({**config.to_dict(), "teacher": canonical, "teacher_arch": arch,
                                    "teacher_file": None if path is None else str(path.resolve())})
    return resolved, resolved.run_id(), teacher


def teacher_classes(teacher: nn.Module) -> int:
    """The number of classes a teacher predicts (its last linear layer's outputs)."""
    return [m.out_features for m in teacher.modules() if isinstance(m, nn.Linear)][-1]


def teacher_on_device(teacher: nn.Module, config: RunConfig, num_classes: int, device, memory_format) -> nn.Module:
    """The teacher moved to the run's device and memory format; TrainingError if it predicts other classes."""
    classes = teacher_classes(teacher)
    if classes != num_classes:
        raise TrainingError(f"teacher {config.teacher} has {classes} classes but {config.dataset} data has "
                            f"{num_classes}")
    return teacher.to(device, memory_format=memory_format)
