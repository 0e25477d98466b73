"""How much to train: ``Settings`` (from a notebook's parameters or a profile under ``profiles/``).

Settings say which data, how many epochs and seeds, where to train, where runs are stored, whether missing runs are
trained here, and how runs are grouped on a GPU. ``settings_from_profile("one-seed")`` reads ``profiles/one-seed.yaml``.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..paths import PROFILE_DIR


class ProfileError(ValueError):
    """An unknown profile name or a profile file that is not a mapping of parameters."""


@dataclass
class Settings:
    """How much to train. Built from notebook parameters; ``profiles/*.yaml`` hold the named profiles."""

    profile: str = "smoke"
    dataset: str = "sample"
    epochs: int | None = None     # None: each protocol's own length (200 CIFAR, 40 fine-tuning, 100 ImageNet)
    batch_size: int | None = None  # None: each protocol's own (128 CIFAR, 64 fine-tuning, 256 ImageNet)
    eval_batch_size: int | None = None  # None: each protocol's own (1000 CIFAR); the test's batches, not training's
    image_size: int | None = None  # image folders only; None: 224
    seeds: list[int] = field(default_factory=lambda: [0])
    train_subset: int | None = None
    test_subset: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    data_root: str | None = None
    results_dir: str = "results"
    progress: bool = True
    cub_root: str | None = None       # CUB_200_2011 directory (Table 4)
    scenes_root: str | None = None    # MIT Indoor Scenes as train/ and val/ image folders (Table 4)
    imagenet_root: str | None = None  # ImageNet as train/ and val/ image folders (Table 5)
    weights_dir: str | None = None    # torchvision's ResNet-18/34 ImageNet weight files (Table 4)
    workers: int = 4                  # DataLoader worker processes for image folders
    cohort: int | None = None         # most runs trained together as one grouped network; None: 16 on CUDA, else 1
    share_batches: bool = False       # cohorts of one seed draw each batch once and run each teacher once per batch
    concurrent: int = 1               # GPU: single runs of one shape (seeds) trained at once on their own CUDA streams
    share_runs_with: str | None = None  # keep runs in results_dir/<this profile>/runs (identical configurations are
                                        # identical runs: `paper` reuses `one-seed`'s seed 0); None: its own
    train: bool | str = "auto"        # train missing runs? "auto": on a GPU, or when the settings are a cheap departure
                                      # from the protocol (never 200-epoch runs on a CPU); False: report only
    teachers_from: str | None = None  # students learn from this profile's finished teachers (its settings, its run
                                      # store), which are not trained here; None: teachers are trained by these settings
    suite: str = "paper"              # the cells workers and campaigns train: "paper" (every table) or "cpu-demo"
    channels_last: bool | None = None  # the runs' memory layout (None: the engine's default, channels-last on CUDA)

    def __post_init__(self):
        if self.train not in (True, False, "auto"):
            raise ValueError(f"train must be true, false or \"auto\", got train={self.train!r}")
        self.seeds = [int(s) for s in self.seeds]
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        for name in ("profile", "share_runs_with", "teachers_from"):
            value = getattr(self, name)
            if (name == "profile" or value is not None) and (not value or "/" in value or value in (".", "..")):
                raise ValueError(f"{name} must be a plain name, got {name}={value!r}")

    @property
    def root(self) -> Path:
        """``<results_dir>/<profile>``: tables, figures, notebooks and REPORT.md of this profile."""
        return Path(self.results_dir) / self.profile

    @property
    def store_root(self) -> Path:
        """The results store of this profile's runs (``<store_root>/runs/<run id>``): its own root, or that of the
        profile it shares runs with."""
        return Path(self.results_dir) / (self.share_runs_with or self.profile)

    def teacher_settings(self) -> "Settings":
        """The settings that define (and store) the teachers: those of ``teachers_from``, else these."""
        if self.teachers_from is None:
            return self
        teachers = settings_from_profile(self.teachers_from, results_dir=self.results_dir, data_root=self.data_root,
                                         device=self.device)
        if teachers.teachers_from is not None:
            raise ValueError(f"teachers_from={self.teachers_from!r} names a profile that borrows its own teachers")
        return teachers

    def check_paper_suite(self, command: str) -> None:
        """ValueError (one line) if these settings are not a profile of the paper's suite (``campaign``, ``plan``):
        a profile that borrows its teachers (the CPU demo) trains its own cells in its own notebook."""
        if self.teachers_from is not None:
            raise ValueError(f"{command} works on the paper's suite; profile {self.profile!r} borrows its teachers "
                             f"(teachers_from={self.teachers_from!r}) and trains its own runs: make reproduce "
                             f"PROFILE={self.profile}")

    def trains_missing(self) -> bool:
        """Whether ``run_cells`` trains runs that are not in the store (see ``train``)."""
        if self.train != "auto":
            return bool(self.train)
        return not self.follows_protocol or _on_gpu(self)

    @property
    def follows_protocol(self) -> bool:
        return not self.protocol_note()

    def protocol_note(self) -> str:
        """One line saying how these settings depart from the authors' protocol (empty if they do not)."""
        changes = []
        if self.dataset != "cifar10":
            changes.append(f"the embedded {self.dataset} data instead of full CIFAR-10")
        if self.epochs is not None:
            changes.append(f"{self.epochs} epochs instead of the protocol's (lr schedule scaled)")
        if self.train_subset is not None:
            changes.append(f"only {self.train_subset} training images")
        if self.batch_size is not None:
            changes.append(f"batch size {self.batch_size} instead of the protocol's")
        if self.image_size is not None:
            changes.append(f"{self.image_size}-pixel images instead of 224")
        if self.test_subset is not None:
            changes.append(f"only {self.test_subset} test images")
        if self.precision != "fp32":
            changes.append(f"{self.precision} precision")
        return "; ".join(changes)


PROFILE_KEYS = tuple(Settings.__dataclass_fields__)  # what a profile file (or an override) may set
SEQUENCE_KEY = "notebooks"  # a profile key read by the pipeline (which notebooks run), not a setting


def notebook_settings(profile: str = "one-seed", overrides: dict[str, Any] | None = None) -> Settings:
    """A notebook's settings: ``profile`` (a name under ``profiles/`` or a YAML file) with ``overrides`` (a dict of
    profile keys) applied. The notebooks' ``parameters`` cell holds the two; ``python -m atlib reproduce --profile
    smoke --set seeds=[0,1]`` runs each notebook with ``profile="smoke"`` and ``overrides={"seeds": [0, 1]}``, and
    ``papermill <notebook> <out> -p profile smoke`` does the same for one notebook. ValueError (one line) naming any
    key that is not a profile key."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(PROFILE_KEYS))
    if unknown:
        raise ValueError(f"overrides {unknown} are not profile keys; the keys are {', '.join(PROFILE_KEYS)}")
    path = profile_path(profile)
    params = load_profile(path)
    params.pop(SEQUENCE_KEY, None)
    unknown = sorted(set(params) - set(PROFILE_KEYS))
    if unknown:
        raise ProfileError(f"profile {path} has unknown key(s) {unknown}; the keys are {', '.join(PROFILE_KEYS)}")
    return Settings(**{**params, **overrides})


def describe_settings(settings: Settings, overrides: dict[str, Any] | None = None) -> str:
    """One line for a notebook to show: the profile, the overrides applied, how it departs from the authors'
    protocol and where its results go."""
    changed = f" with {', '.join(f'{k}={v!r}' for k, v in overrides.items())}" if overrides else ""
    note = settings.protocol_note() or "the authors' protocol"
    return f"profile {settings.profile}{changed}: {note}; results in {settings.root}"


def settings_from_profile(profile: str, **overrides) -> Settings:
    """``Settings`` of a profile (a name under ``profiles/`` or a YAML file) with ``overrides`` applied."""
    known = set(Settings.__dataclass_fields__)
    params = {k: v for k, v in load_profile(profile_path(profile)).items() if k in known}
    return Settings(**{**params, **overrides})


def profile_path(profile: str) -> Path:
    """``smoke`` -> ``profiles/smoke.yaml``; a path to a YAML file is used as it is."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = PROFILE_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(f"unknown profile {profile!r}; expected one of {known} or a path to a YAML file")
    return path


def load_profile(path: str | Path) -> dict[str, Any]:
    """A profile file's parameters (a YAML mapping). Read once while the file is unchanged: every cell's configuration
    asks for its teachers' profile (``Settings.teacher_settings``)."""
    path = Path(path)
    stat = path.stat()
    return copy.deepcopy(_read_profile(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _read_profile(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} must be a YAML mapping of notebook parameters")
    return data


def _on_gpu(settings: Settings) -> bool:
    from ..training.engine import resolve_device
    return resolve_device(settings.device).type == "cuda"
