"""``RunConfig``: everything that defines one training run, serialisable to JSON.

Its identity (every field except the runtime ones: where the data lives, which device runs it) is hashed into the
run id, so the same experiment always lands in the same ``results/runs/<run-id>/`` directory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..data import DATASET_NAMES, FOLDER_KINDS
from ..models import canonical_name, parse_model_name
from ..objective import TERMS, validate_spec
from .store import make_run_id

# Fields that say where/how a run executes, not what it computes: left out of the run id.
RUNTIME_FIELDS = ("device", "data_root", "workers", "weights_dir", "teacher_store", "teacher_file")
DATASETS = tuple(DATASET_NAMES) + tuple(FOLDER_KINDS)  # cifar10, sample | folder, cub, imagenet (image folders)
PRECISIONS = ("fp32", "bf16")
AUGMENTATIONS = ("crop+flip", "flip", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
PAPER_EPOCHS = 200
PAPER_MILESTONES = (60, 120, 160)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it."""


def scaled_milestones(epochs: int, milestones=PAPER_MILESTONES, of_epochs: int = PAPER_EPOCHS) -> list[int]:
    """lr drops given for ``of_epochs`` epochs (default: the authors' 60/120/160 of 200), scaled to ``epochs``
    (rounded, kept >= 1, drops at or after the last epoch removed)."""
    scaled = {max(1, round(m * epochs / of_epochs)) for m in milestones}
    return sorted(m for m in scaled if m < epochs)


@dataclass
class RunConfig:
    student: str
    method: str = "student"
    terms: dict = field(default_factory=lambda: {"ce": {}})  # the method as weighted loss terms (objective spec)
    teacher: str | None = None           # a finished run id (or unique prefix), or a weights/checkpoint file path
    teacher_arch: str | None = None      # needed only when ``teacher`` is a file without a run directory
    epochs: int = PAPER_EPOCHS
    lr: float = 0.1
    lr_decay: float = 0.2
    lr_milestones: list[int] | None = None  # None: scaled from 60/120/160 of 200
    reset_momentum_at_drops: bool = True    # the authors' code rebuilds the optimizer at each lr drop
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    seed: int = 0
    precision: str = "fp32"
    dataset: str = "cifar10"            # "cifar10", "sample" (embedded), or image folders: "folder", "cub", "imagenet"
    augment: str = "crop+flip"          # "crop+flip" (authors), "flip" (Table 3), "none"
    train_subset: int | None = None     # use only the first N training images (the smoke profile and tests)
    test_subset: int | None = None      # evaluate on the first N test images only (the smoke profile and tests)
    init: str = "authors"
    eval_batch_size: int = 1000
    image_size: int = 224               # image folders only: training crop / evaluation centre crop
    pretrained: str | None = None       # "imagenet" (torchvision's ResNet weights) or a weights file; None: random
    freeze_bn: bool = False             # BN layers in eval mode with frozen affine parameters (Table 4 protocol)
    freeze_groups: int = 0              # freeze the stem and the first N residual groups (Table 4: 1)
    device: str = "auto"                # runtime: not part of the run id
    data_root: str | None = None        # runtime: the dataset's directory
    workers: int = 0                    # runtime: DataLoader worker processes (image folders only)
    weights_dir: str | None = None      # runtime: where "imagenet" weights files are looked up first
    teacher_store: str | None = None    # runtime: the results store holding the teacher run (None: the run's own)
    teacher_file: str | None = None     # runtime: where a teacher given as a file lies (``teacher`` is then its
                                        # content hash, "sha256:...": the same file anywhere is the same teacher)

    def __post_init__(self):
        for name in ("student", "teacher_arch"):  # torchvision:<model> -> torchvision:<model>@<its default nodes>
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("torchvision:"):
                try:
                    setattr(self, name, canonical_name(value))
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        if self.lr_milestones is None and isinstance(self.epochs, int) and self.epochs > 0:
            self.lr_milestones = scaled_milestones(self.epochs)
        self.validate()

    def validate(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got seed={self.seed!r}")
        for name in ("lr", "lr_decay", "weight_decay", "momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {name}={value!r}")
        for name in ("student", "teacher_arch"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_model_name(value)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        _choice("precision", self.precision, PRECISIONS)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("dataset", self.dataset, DATASETS)
        _positive_int("image_size", self.image_size)
        if isinstance(self.freeze_groups, bool) or not isinstance(self.freeze_groups, int) or self.freeze_groups < 0:
            raise ConfigError(f"freeze_groups must be an integer >= 0, got freeze_groups={self.freeze_groups!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"workers must be an integer >= 0, got workers={self.workers!r}")
        if self.pretrained is not None and not self.student.startswith("resnet-"):
            raise ConfigError(f"pretrained weights exist for resnet-18/34 only, not {self.student!r}")
        _choice("device", self.device.split(":")[0] if isinstance(self.device, str) else self.device, DEVICES)
        try:
            validate_spec(self.terms)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if any(not isinstance(m, int) or not 0 < m < self.epochs for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones must be epochs in 1..{self.epochs - 1}, got {self.lr_milestones!r}")

    @property
    def needs_teacher(self) -> bool:
        return any(TERMS[name].needs_teacher for name in self.terms if name in TERMS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (hashed into the run id)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s) {unknown}")
        return cls(**d)

    def run_id(self, teacher_label: str | None = None) -> str:
        """Readable part (student, method, teacher, seed) + hash of the identity."""
        readable = f"{self.student}_{self.method}"
        if self.teacher is not None:
            readable += f"_from-{teacher_label or self.teacher_arch or 'teacher'}"
        readable += f"_s{self.seed}"
        return make_run_id(self.identity(), readable)

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 0-based ``epoch``."""
        drops = sum(1 for m in self.lr_milestones if epoch >= m)
        return self.lr * self.lr_decay ** drops


def first_difference(configs: list["RunConfig"], free: tuple[str, ...]) -> tuple[str, Any, Any] | None:
    """The first field outside ``free`` in which a configuration differs from the first one, as (name, the first's
    value, its value); None if they agree (runs trained together must: cohorts, shared batches)."""
    first = configs[0].to_dict()
    for c in configs[1:]:
        other = c.to_dict()
        for name, value in first.items():
            if name not in free and other[name] != value:
                return name, value, other[name]
    return None


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {name}={value!r}")


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; expected one of {list(allowed)}")
