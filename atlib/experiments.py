"""The paper's CIFAR-10 experiments as data: teachers, table grids, the paper's numbers, and profiles.

A ``Cell`` is one entry of a paper table: a row and column, the paper's value, and what to train (student, method,
method options, teacher, protocol). ``Settings`` (built from a notebook's parameters or a profile file) say how much
to train: dataset, epochs, seeds, device. ``config_for(cell, settings, seed)`` turns the two into a ``RunConfig``;
identical configurations (e.g. WRN-16-1 alone in two tables) share one run in the store.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .config import RunConfig, scaled_milestones
from .methods import method_terms

logger = logging.getLogger(__name__)

# -- training protocols -------------------------------------------------------------------------------------------
# Each protocol gives the full-length schedule ("epochs", lr "milestones" for that length) and RunConfig fields.
# "cifar": the authors' CIFAR protocol (Table 1, Table 2, group ablation).
# "table3": Table 3's NIN protocol: horizontally flipped data only (no random crop), weight decay off. The paper gives
#   no learning rate for it. The BN-free NIN does not train at the authors' lr 0.1 (in a probe on the embedded sample
#   it stayed at chance, or at 85.8% error after 3 epochs, with either init); we use 0.02 with the same schedule.
# "finetune": Table 4 (ours where the paper is silent: 40 epochs, lr 0.01 x0.1 at 20/30, batch 64, wd 1e-4): from
#   ImageNet weights, BN layers frozen, stem and first residual group frozen, a new head.
# "imagenet": Table 5, the authors' ImageNet code: 100 epochs, batch 256, lr 0.1 x0.1 at 30/60/90, wd 1e-4.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "cifar": {"epochs": 200, "milestones": (60, 120, 160)},
    "table3": {"epochs": 200, "milestones": (60, 120, 160), "augment": "flip", "weight_decay": 0.0, "lr": 0.02},
    "finetune": {"epochs": 40, "milestones": (20, 30), "lr": 0.01, "lr_decay": 0.1, "weight_decay": 1e-4,
                 "batch_size": 64, "eval_batch_size": 64, "reset_momentum_at_drops": False, "init": "standard",
                 "pretrained": "imagenet", "freeze_bn": True, "freeze_groups": 1},
    "imagenet": {"epochs": 100, "milestones": (30, 60, 90), "lr": 0.1, "lr_decay": 0.1, "weight_decay": 1e-4,
                 "batch_size": 256, "eval_batch_size": 256, "reset_momentum_at_drops": False, "init": "standard"},
}
AT_START_FRACTION = 0.6  # Table 5: AT on the last 2 groups is added at epoch 60 of 100

# Where a cell's data comes from: "cifar" (Settings.dataset / data_root) or an image-folder dataset, as
# (Settings field holding its root, folder kind).
FOLDER_DATA = {"cub": ("cub_root", "cub"), "scenes": ("scenes_root", "folder"),
               "imagenet": ("imagenet_root", "imagenet")}

# -- teachers: key -> (architecture, protocol, data) ---------------------------------------------------------------
TEACHERS: dict[str, tuple[str, str, str]] = {
    "wrn-16-2": ("wrn-16-2", "cifar", "cifar"),
    "wrn-40-1": ("wrn-40-1", "cifar", "cifar"),
    "wrn-40-2": ("wrn-40-2", "cifar", "cifar"),
    "nin-wide": ("nin-wide", "cifar", "cifar"),
    "nin-wide-nobn": ("nin-wide-nobn", "table3", "cifar"),      # Table 3 teacher of the KD and gradient-AT rows
    "nin-wide-norelu": ("nin-wide-norelu", "table3", "cifar"),  # Table 3 activation-AT teacher: BN, no ReLU
    "resnet-34-cub": ("resnet-34", "finetune", "cub"),           # Table 4 teachers: ResNet-34 fine-tuned likewise
    "resnet-34-scenes": ("resnet-34", "finetune", "scenes"),
    "resnet-34-imagenet": ("resnet-34", "imagenet", "imagenet"),  # Table 5 teacher, trained by the same protocol
}
CIFAR_TEACHERS = [k for k, (_, _, data) in TEACHERS.items() if data == "cifar"]


@dataclass(frozen=True)
class Cell:
    table: str
    row: str
    column: str
    paper: float | None          # the paper's test error (%), None where the paper has no such entry
    student: str                 # architecture of the network trained in this cell
    method: str = "student"
    options: tuple = ()          # method options as sorted (name, value) pairs, e.g. (("p", 4),)
    teacher: str | None = None   # key of TEACHERS
    protocol: str = "cifar"
    data: str = "cifar"          # "cifar" or a key of FOLDER_DATA
    metric: str = "test_error"   # the record field the table reports ("test_error_top5" for Table 5's top-5)

    @property
    def label(self) -> str:
        return f"{self.table} | {self.row} | {self.column}"


def _cell(table, row, column, paper, student, method="student", teacher=None, protocol="cifar", data="cifar",
          metric="test_error", **options):
    return Cell(table, row, column, paper, student, method, tuple(sorted(options.items())), teacher, protocol, data,
                metric)


def _teacher_cell(table, row, column, paper, key, metric="test_error"):
    arch, protocol, data = TEACHERS[key]
    return _cell(table, row, column, paper, arch, protocol=protocol, data=data, metric=metric)


# -- Table 1: activation-based AT, F-ActT, KD, AT+KD -------------------------------------------------------------
TABLE1_PAIRS = [  # (row label, student, teacher key, paper: student, AT, F-ActT, KD, AT+KD, teacher)
    ("NIN-thin / NIN-wide", "nin-thin", "nin-wide", (9.38, 8.93, 9.05, 8.55, 8.33, 7.28)),
    ("WRN-16-1 / WRN-16-2", "wrn-16-1", "wrn-16-2", (8.77, 7.93, 8.51, 7.41, 7.51, 6.31)),
    ("WRN-16-1 / WRN-40-1", "wrn-16-1", "wrn-40-1", (8.77, 8.25, 8.62, 8.39, 8.01, 6.58)),
    ("WRN-16-2 / WRN-40-2", "wrn-16-2", "wrn-40-2", (6.31, 5.85, 6.24, 6.08, 5.71, 5.23)),
]
TABLE1_COLUMNS = [("student", "student"), ("AT", "at"), ("F-ActT", "fact"), ("KD", "kd"), ("AT+KD", "at+kd")]


def table1_row(row: str) -> dict[str, Cell]:
    """One row of Table 1 by column: student, AT, F-ActT, KD, AT+KD, teacher."""
    return {c.column: c for c in table1() if c.row == row}


# The runs Figure 6 shows (top-level attention maps on the same images): Table 1's WRN-16-1 / WRN-16-2 row
FIGURE_6_ROW = "WRN-16-1 / WRN-16-2"
FIGURE_6_RUNS = {"student": "student", "AT student": "AT", "teacher": "teacher"}  # caption -> column


def table1() -> list[Cell]:
    cells = []
    for row, student, teacher, paper in TABLE1_PAIRS:
        for (column, method), value in zip(TABLE1_COLUMNS, paper):
            cells.append(_cell("table1", row, column, value, student, method,
                               teacher=None if method == "student" else teacher))
        cells.append(_teacher_cell("table1", row, "teacher", paper[-1], teacher))
    return cells


# -- Table 2: attention mapping functions, WRN-16-2 -> WRN-16-1 --------------------------------------------------
TABLE2_ROWS = [  # (row label, paper, AT options or None for no transfer)
    ("no attention transfer", 8.77, None),
    ("F_sum (p=1)", 7.99, {"p": 1, "kind": "sum"}),
    ("F_sum^2", 7.93, {"p": 2, "kind": "sum"}),
    ("F_sum^4", 8.09, {"p": 4, "kind": "sum"}),
    ("F_max^1", 8.08, {"p": 1, "kind": "max"}),
    ("F_max^2 (not in the paper)", None, {"p": 2, "kind": "max"}),
    ("F_sum^3 (not in the paper)", None, {"p": 3, "kind": "sum"}),
]


def table2() -> list[Cell]:
    return [_cell("table2", row, "error", paper, "wrn-16-1") if options is None else
            _cell("table2", row, "error", paper, "wrn-16-1", "at", teacher="wrn-16-2", **options)
            for row, paper, options in TABLE2_ROWS]


# -- which-group ablation (section 4.1.1), WRN-16-2 -> WRN-16-1 ----------------------------------------------------
GROUP_ROWS = [("no attention transfer", 8.77, None), ("group 1", 8.11, [0]), ("group 2", 7.96, [1]),
              ("group 3", 7.97, [2]), ("groups 1-3", 7.93, "all")]


def groups_ablation() -> list[Cell]:
    cells = []
    for row, paper, groups in GROUP_ROWS:
        if groups is None:
            cells.append(_cell("groups", row, "error", paper, "wrn-16-1"))
        elif groups == "all":
            cells.append(_cell("groups", row, "error", paper, "wrn-16-1", "at", teacher="wrn-16-2"))
        else:
            cells.append(_cell("groups", row, "error", paper, "wrn-16-1", "at", teacher="wrn-16-2",
                               groups=tuple(groups)))
    return cells


# -- Table 3: gradient-based transfer, NIN without BN --------------------------------------------------------------
TABLE3_ROWS = [  # (row label, paper, method, teacher key)
    ("baseline", 13.5, "student", None),
    ("min-l2", 12.5, "min-l2", None),
    ("gradient-based AT", 12.1, "grad-at", "nin-wide-nobn"),
    ("KD", 12.1, "kd", "nin-wide-nobn"),
    ("symmetry norm", 11.8, "symmetry", None),
    ("activation-based AT", 11.2, "at", "nin-wide-norelu"),
]


def table3() -> list[Cell]:
    return [_cell("table3", row, "error", paper, "nin-thin-nobn", method, teacher=teacher, protocol="table3")
            for row, paper, method, teacher in TABLE3_ROWS]


# -- Table 4: fine-tuning from ImageNet, ResNet-18 student / ResNet-34 teacher, AT on the last 2 groups ----------
TABLE4_COLUMNS = [("CUB", "cub"), ("Scenes", "scenes")]
TABLE4_ROWS = [  # (row label, method, paper CUB, paper Scenes)
    ("student ResNet-18", "student", 28.5, 28.2),
    ("KD", "kd", 27.0, 28.1),
    ("AT", "at", 27.0, 27.1),
]


def table4(datasets: Iterable[str] = ("cub", "scenes")) -> list[Cell]:
    cells = []
    for row, method, *paper in TABLE4_ROWS:
        for (column, data), value in zip(TABLE4_COLUMNS, paper):
            if data in datasets:
                options = {"groups": (2, 3)} if method == "at" else {}
                cells.append(_cell("table4", row, column, value, "resnet-18", method, protocol="finetune", data=data,
                                   teacher=None if method == "student" else f"resnet-34-{data}", **options))
    for (column, data), value in zip(TABLE4_COLUMNS, (26.5, 26.0)):
        if data in datasets:
            cells.append(_teacher_cell("table4", "teacher ResNet-34", column, value, f"resnet-34-{data}"))
    return cells


# -- Table 5: ImageNet, ResNet-18 with AT from ResNet-34 -----------------------------------------------------------
def table5() -> list[Cell]:
    cells = []
    for column, metric, paper in (("top-1", "test_error", (30.4, 29.3, 26.1, None)),
                                  ("top-5", "test_error_top5", (10.8, 10.0, 8.3, None))):
        common = dict(protocol="imagenet", data="imagenet", metric=metric)
        cells += [
            _cell("table5", "ResNet-18", column, paper[0], "resnet-18", **common),
            _cell("table5", "ResNet-18 + AT (last 2 groups from epoch 60)", column, paper[1], "resnet-18", "at",
                  teacher="resnet-34-imagenet", groups=(2, 3), **common),
            _teacher_cell("table5", "ResNet-34 (teacher)", column, paper[2], "resnet-34-imagenet", metric=metric),
            _cell("table5", "ResNet-18 + AT (all groups from epoch 0, as the released code)", column, paper[3],
                  "resnet-18", "at", teacher="resnet-34-imagenet", at_from_start=True, **common),
        ]
    return cells


LARGE_TABLES: dict[str, Callable[[], list[Cell]]] = {"table4": table4, "table5": table5}
TABLES: dict[str, Callable[[], list[Cell]]] = {
    "table1": table1, "table2": table2, "groups": groups_ablation, "table3": table3,
}
TABLE_TITLES = {
    "table1": "Table 1: activation-based AT vs F-ActT, KD and AT+KD on CIFAR-10 (test error %)",
    "table2": "Table 2: attention mapping functions, WRN-16-2 -> WRN-16-1 (test error %)",
    "groups": "Which-group ablation (section 4.1.1), WRN-16-2 -> WRN-16-1 (test error %)",
    "table3": "Table 3: gradient-based attention transfer, NIN without batch norm (test error %)",
    "table4": "Table 4: fine-tuning from ImageNet, ResNet-18 student, ResNet-34 teacher (test error %)",
    "table5": "Table 5: ImageNet, ResNet-18 with AT from ResNet-34 (single-crop validation error %)",
}


def teacher_cells() -> list[Cell]:
    """The CIFAR teachers (the large-image teachers are trained by the Table 4 and 5 notebooks)."""
    return [_teacher_cell("teachers", key, "error", None, key) for key in CIFAR_TEACHERS]


# -- settings and profiles -----------------------------------------------------------------------------------------
@dataclass
class Settings:
    """How much to train. Built from notebook parameters; ``profiles/*.yaml`` hold the named profiles."""

    profile: str = "smoke"
    dataset: str = "sample"
    epochs: int | None = None     # None: each protocol's own length (200 CIFAR, 40 fine-tuning, 100 ImageNet)
    batch_size: int | None = None  # None: each protocol's own (128 CIFAR, 64 fine-tuning, 256 ImageNet)
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


def settings_from_profile(profile: str, **overrides) -> Settings:
    """``Settings`` of a profile (a name under ``profiles/`` or a YAML file) with ``overrides`` applied."""
    from .pipeline import profile_path
    known = set(Settings.__dataclass_fields__)
    params = {k: v for k, v in load_profile(profile_path(profile)).items() if k in known}
    return Settings(**{**params, **overrides})


def load_profile(path: str | Path) -> dict[str, Any]:
    """A profile file's parameters (a YAML mapping)."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"profile {path} must be a YAML mapping of notebook parameters")
    return data


# -- from cells to configurations ----------------------------------------------------------------------------------
def data_available(cell_or_data: Cell | str, settings: Settings) -> bool:
    """Whether the settings say where this cell's data is (CIFAR always; image folders when their root is set)."""
    data = cell_or_data if isinstance(cell_or_data, str) else cell_or_data.data
    return data == "cifar" or getattr(settings, FOLDER_DATA[data][0]) is not None


def teacher_config(key: str, settings: Settings, seed: int | None = None) -> RunConfig:
    """The run of teacher ``key`` under ``settings`` (by its first seed unless ``seed`` is given). Settings that
    borrow their teachers (``teachers_from``) are not consulted here: see ``config_for``."""
    if key not in TEACHERS:
        raise ValueError(f"unknown teacher {key!r}; expected one of {sorted(TEACHERS)}")
    arch, protocol, data = TEACHERS[key]
    return _config(arch, "student", {}, None, None, protocol, data, settings,
                   settings.seeds[0] if seed is None else seed)


def config_for(cell: Cell, settings: Settings, seed: int) -> RunConfig:
    """The run of ``cell`` at ``seed``. Students learn from the teacher trained with the first seed (of the
    ``teachers_from`` profile where the settings name one)."""
    teacher_id = teacher_arch = None
    if cell.teacher is not None:
        teacher_id = teacher_config(cell.teacher, settings.teacher_settings()).run_id()
        teacher_arch = TEACHERS[cell.teacher][0]
    config = _config(cell.student, cell.method, dict(cell.options), teacher_id, teacher_arch, cell.protocol,
                     cell.data, settings, seed)
    if cell.teacher is not None and settings.teachers_from is not None:
        config.teacher_store = str(settings.teacher_settings().store_root)
    return config


def _config(student, method, options, teacher, teacher_arch, protocol, data, settings, seed) -> RunConfig:
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    protocol_fields = dict(PROTOCOLS[protocol])
    full_epochs, milestones = protocol_fields.pop("epochs"), protocol_fields.pop("milestones")
    if settings.batch_size is not None:
        protocol_fields["batch_size"] = settings.batch_size
    epochs = settings.epochs or full_epochs
    at_from_start = options.pop("at_from_start", False)
    terms = method_terms(method, **options)
    if protocol == "imagenet" and "at" in terms and not at_from_start:
        terms["at"]["start_epoch"] = round(AT_START_FRACTION * epochs)
    if data == "cifar":
        where = dict(dataset=settings.dataset, data_root=settings.data_root, train_subset=settings.train_subset,
                     test_subset=settings.test_subset)
    else:
        root_field, kind = FOLDER_DATA[data]
        where = dict(dataset=kind, data_root=getattr(settings, root_field), workers=settings.workers,
                     weights_dir=settings.weights_dir, image_size=settings.image_size or 224)
    return RunConfig(student=student, method=method, terms=terms, teacher=teacher, teacher_arch=teacher_arch,
                     epochs=epochs, lr_milestones=scaled_milestones(epochs, milestones, full_epochs), seed=seed,
                     precision=settings.precision, device=settings.device, **where, **protocol_fields)


def run_id_for(cell: Cell, settings: Settings, seed: int) -> str:
    config = config_for(cell, settings, seed)
    return config.run_id(teacher_label=config.teacher_arch)


def suite_jobs(cells: Iterable[Cell], settings: Settings) -> tuple[list[RunConfig], list[RunConfig]]:
    """The distinct runs behind ``cells`` at every seed whose data is available: (teachers, students)."""
    cells = [c for c in cells if data_available(c, settings)]
    keys = []
    for cell in cells:
        if cell.teacher is not None and cell.teacher not in keys and settings.teachers_from is None:
            keys.append(cell.teacher)
    teachers = _unique([teacher_config(key, settings) for key in keys])
    runs = _unique(teachers + [config_for(cell, settings, seed) for cell in cells for seed in settings.seeds])
    # a teacher's other seeds (Table 1's teacher column) train beside it, in its cohort where it has one
    as_teacher = [{**t.identity(), "seed": None} for t in teachers]
    first = [c for c in runs if {**c.identity(), "seed": None} in as_teacher]
    return first, [c for c in runs if c not in first]


def _unique(configs: list[RunConfig]) -> list[RunConfig]:
    unique: dict[str, RunConfig] = {}
    for config in configs:
        unique.setdefault(config.run_id(teacher_label=config.teacher_arch), config)
    return list(unique.values())


def _on_gpu(settings: Settings) -> bool:
    from .engine import resolve_device
    return resolve_device(settings.device).type == "cuda"


def _positive_int(name: str, value, allowed: str = "a positive integer") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")
    return value


def cohort_size(settings: Settings) -> int:
    if settings.cohort is not None:
        return _positive_int("cohort", settings.cohort, "a positive integer or null")
    return 16 if _on_gpu(settings) else 1


def concurrent_size(settings: Settings, on_gpu: bool | None = None) -> int:
    """How many single runs ``run_cells`` trains at once: ``Settings.concurrent`` on a GPU (``on_gpu`` None: the
    settings' device decides), 1 elsewhere (interleaving runs on a CPU gains nothing)."""
    n = _positive_int("concurrent", settings.concurrent)
    return n if (_on_gpu(settings) if on_gpu is None else on_gpu) else 1


# Cohorts pay only for narrow students: on an H200 (results/benchmarks/h200-2026-11-26) 7-16 WRN-16-1 students as one
# grouped network trained at 61-73k images/s in all against 29-39k for one graphed run, while 2-5 students, and
# cohorts of WRN-16-2 / WRN-40-x, ran slower in all than one graphed run of the same network.
COHORT_STUDENTS = ("wrn-16-1",)
MIN_COHORT = 7


def run_shape(config: RunConfig) -> tuple:
    """What makes runs alike in speed and length (all but the seed and the teacher's weights)."""
    return (config.student, config.teacher_arch, config.method, json.dumps(config.terms, sort_keys=True),
            config.precision, config.dataset, config.epochs, config.train_subset, config.batch_size)


def schedule(configs: list[RunConfig], size: int, share_batches: bool = False,
             concurrent: int = 1) -> list[list[RunConfig]]:
    """Groups of runs to train together, in order. Runs that may share a cohort (``cohort_key``, a student in
    ``COHORT_STUDENTS``, the same seed when batches are shared) are cut into chunks of at most ``size`` with one
    teacher architecture each; runs without a teacher fill free places. Chunks under ``MIN_COHORT`` runs (or all,
    with ``size`` 1) train alone. Then, with ``concurrent`` > 1, runs left alone are gathered by ``run_shape``
    (typically one cell's seeds) into sets of at most ``concurrent`` that train at once (``is_cohort`` tells the
    two kinds of group apart); a set takes the place of its first run."""
    from .cohort_training import cohort_key
    families: dict[tuple, list[RunConfig]] = {}
    for i, config in enumerate(configs):
        key = cohort_key(config) if size > 1 and config.student in COHORT_STUDENTS else None
        label = (i,) if key is None else (key, config.seed if share_batches else None)
        families.setdefault(label, []).append(config)
    out = []
    for members in families.values():
        by_teacher: dict[str | None, list[RunConfig]] = {}
        for config in members:
            by_teacher.setdefault(config.teacher_arch, []).append(config)
        free = by_teacher.pop(None, [])
        chunks = [runs[i:i + size] for runs in by_teacher.values() for i in range(0, len(runs), size)]
        for chunk in chunks:
            while free and len(chunk) < size:
                chunk.append(free.pop(0))
        chunks += [free[i:i + size] for i in range(0, len(free), size)]
        for chunk in chunks:
            out += [chunk] if len(chunk) >= min(MIN_COHORT, size) or len(chunk) == 1 else [[c] for c in chunk]
    return _gather_singles(out, concurrent) if concurrent > 1 else out


class ConcurrentSet(list):
    """A group of single runs that train at once (``atlib.concurrent``), not a cohort."""


def _gather_singles(groups: list[list[RunConfig]], concurrent: int) -> list[list[RunConfig]]:
    open_sets: dict[tuple, ConcurrentSet] = {}
    out: list[list[RunConfig]] = []
    for group in groups:
        if len(group) > 1:  # a cohort
            out.append(group)
            continue
        shape = run_shape(group[0])
        if shape not in open_sets or len(open_sets[shape]) == concurrent:
            open_sets[shape] = ConcurrentSet()
            out.append(open_sets[shape])
        open_sets[shape].append(group[0])
    return [list(g) if isinstance(g, ConcurrentSet) and len(g) == 1 else g for g in out]


def is_cohort(group: list[RunConfig]) -> bool:
    return len(group) > 1 and not isinstance(group, ConcurrentSet)


def run_cells(cells: Iterable[Cell], settings: Settings, log: Callable[[str], None] = logger.info) -> list[dict | None]:
    """Train every cell at every seed (teachers first), skipping finished runs and resuming interrupted ones.
    On a GPU, runs of one WRN architecture are trained in cohorts (``Settings.cohort``) and other runs of one
    shape (a cell's seeds) at once on their own CUDA streams (``Settings.concurrent``). Returns the records in cell
    order. Where ``settings.trains_missing()`` is false (the authors' protocol on a CPU, or ``train: false``),
    nothing is trained: the records of finished runs are returned, None for the others, and the log says how many
    are missing (the report says how to train each)."""
    from .cohort_training import train_cohort  # imported here: experiments stay importable without the engine
    from .concurrent import train_concurrently
    from .engine import train

    cells = [c for c in cells if data_available(c, settings)]
    if not settings.trains_missing():
        return _stored_records(cells, settings, log)
    check_borrowed_teachers(cells, settings)
    teachers, students = suite_jobs(cells, settings)
    size, concurrent = cohort_size(settings), concurrent_size(settings)
    records = {}
    total, done = len(teachers) + len(students), 0
    for phase in (teachers, students):
        for group in schedule(phase, size, settings.share_batches, concurrent):
            ids = [c.run_id(teacher_label=c.teacher_arch) for c in group]
            kind = "cohort" if is_cohort(group) else "concurrent"
            label = ids[0] if len(ids) == 1 else f"{kind} of {len(ids)}: {ids[0]}, ..."
            log(f"[{done + 1}-{done + len(ids)}/{total}] {label}")
            if len(group) == 1:
                found = [train(group[0], results=settings.store_root, progress=settings.progress, log=None)]
            elif not is_cohort(group):
                found = train_concurrently(group, results=settings.store_root, progress=settings.progress, log=None)
            else:
                found = train_cohort(group, results=settings.store_root, progress=settings.progress, log=None,
                                     shared_batches=settings.share_batches)
            for run_id, record in zip(ids, found):
                records[run_id] = record
                log(f"  {run_id}: test error {record['test_error']:.2f}%")
            done += len(ids)
    return [records[run_id_for(cell, settings, seed)] for cell in cells for seed in settings.seeds]


class MissingTeacherError(ValueError):
    """A borrowed teacher (``Settings.teachers_from``) is not finished in its profile's store; says how to train it."""


def check_borrowed_teachers(cells: Iterable[Cell], settings: Settings) -> None:
    """MissingTeacherError (one line, with the command that trains it) if a teacher these cells borrow from the
    ``teachers_from`` profile is not finished there."""
    if settings.teachers_from is None:
        return
    from .cli import train_command
    from .store import RunStore
    theirs = settings.teacher_settings()
    for key in dict.fromkeys(c.teacher for c in cells if c.teacher is not None):
        config = teacher_config(key, theirs)
        if RunStore(theirs.store_root).status(config.run_id()) != "finished":
            raise MissingTeacherError(
                f"profile {settings.profile!r} learns from the {settings.teachers_from!r} profile's {key} teacher, "
                f"run {config.run_id()}, which is not finished in {theirs.store_root} (with another results "
                f"directory, copy it there from this repository's results/{settings.teachers_from}/runs); or train "
                f"it with: {train_command(config, theirs.store_root)}")


def _stored_records(cells: list[Cell], settings: Settings, log: Callable[[str], None]) -> list[dict | None]:
    from .store import RunStore
    store = RunStore(settings.store_root)
    ids = [run_id_for(cell, settings, seed) for cell in cells for seed in settings.seeds]
    records = [store.read_record(i) if store.status(i) == "finished" else None for i in ids]
    missing = sum(r is None for r in records)
    if missing:
        if settings.follows_protocol:
            why, how = ", the authors' 200-epoch protocol", "the report says how to train each"
        else:
            why, how = "", "set train: auto to train them"
        log(f"{missing} of {len(records)} runs not trained yet: not training them here (train: {settings.train!r}, "
            f"device {settings.device!r}{why}); {how}")
    return records
