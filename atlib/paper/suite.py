"""From the paper's cells to runs: the ``RunConfig`` of a cell at a seed, its run id, and a suite's distinct runs
(teachers first). Identical configurations (e.g. WRN-16-1 alone in two tables) share one run in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..methods import method_terms
from ..training.command import train_command
from ..training.config import RunConfig, scaled_milestones
from ..training.store import RunStore
from .grids import AT_START_FRACTION, FOLDER_DATA, PROTOCOLS, SUITES, TEACHERS, Cell, seeds_of
from .settings import Settings


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
        theirs = settings.teacher_settings()
        teacher_id = teacher_config(cell.teacher, theirs).run_id()
        teacher_arch = TEACHERS[cell.teacher][0]
    config = _config(cell.student, cell.method, dict(cell.options), teacher_id, teacher_arch, cell.protocol,
                     cell.data, settings, seed)
    if cell.teacher is not None and settings.teachers_from is not None:
        config.teacher_store = str(theirs.store_root)
    return config


def _config(student, method, options, teacher, teacher_arch, protocol, data, settings, seed) -> RunConfig:
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    protocol_fields = dict(PROTOCOLS[protocol])
    full_epochs, milestones = protocol_fields.pop("epochs"), protocol_fields.pop("milestones")
    if settings.batch_size is not None:
        protocol_fields["batch_size"] = settings.batch_size
    if settings.eval_batch_size is not None:
        protocol_fields["eval_batch_size"] = settings.eval_batch_size
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


@dataclass(frozen=True)
class CellRun:
    """One run of a cell: the cell, the seed and the run's configuration."""
    cell: Cell
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id()


def cell_runs(cells: Iterable[Cell], settings: Settings) -> list[CellRun]:
    """Every run behind ``cells``, cell by cell, each at its seeds of the profile (``grids.seeds_of``): the one place
    where a profile's cells become runs (workers, campaign, schedule, report, tables and the demo read this list)."""
    return [CellRun(cell, seed, config_for(cell, settings, seed)) for cell in cells
            for seed in seeds_of(cell, settings.seeds)]


def run_id_for(cell: Cell, settings: Settings, seed: int) -> str:
    return config_for(cell, settings, seed).run_id()


def suite_cells(settings: Settings) -> list[Cell]:
    """The cells of the settings' ``suite`` (``grids.SUITES``) whose data is available."""
    if settings.suite not in SUITES:
        raise ValueError(f"unknown suite {settings.suite!r}; expected one of {sorted(SUITES)}")
    return [c for c in SUITES[settings.suite]() if data_available(c, settings)]


def suite_jobs(cells: Iterable[Cell], settings: Settings) -> tuple[list[RunConfig], list[RunConfig]]:
    """The distinct runs behind ``cells`` at every seed whose data is available: (teachers, students)."""
    cells = [c for c in cells if data_available(c, settings)]
    keys = []
    for cell in cells:
        if cell.teacher is not None and cell.teacher not in keys and settings.teachers_from is None:
            keys.append(cell.teacher)
    teachers = _unique([teacher_config(key, settings) for key in keys])
    runs = _unique(teachers + [run.config for run in cell_runs(cells, settings)])
    # a teacher's other seeds (Table 1's teacher column) train beside it, in its cohort where it has one
    as_teacher = [{**t.identity(), "seed": None} for t in teachers]
    first = [c for c in runs if {**c.identity(), "seed": None} in as_teacher]
    return first, [c for c in runs if c not in first]


def _unique(configs: list[RunConfig]) -> list[RunConfig]:
    unique: dict[str, RunConfig] = {}
    for config in configs:
        unique.setdefault(config.run_id(), config)
    return list(unique.values())


class MissingTeacherError(ValueError):
    """A borrowed teacher (``Settings.teachers_from``) is not finished in its profile's store; says how to train it."""


def check_borrowed_teachers(cells: Iterable[Cell], settings: Settings) -> None:
    """MissingTeacherError (one line, with the command that trains it) if a teacher these cells borrow from the
    ``teachers_from`` profile is not finished there."""
    if settings.teachers_from is None:
        return
    theirs = settings.teacher_settings()
    for key in dict.fromkeys(c.teacher for c in cells if c.teacher is not None):
        config = teacher_config(key, theirs)
        if RunStore(theirs.store_root).status(config.run_id()) != "finished":
            raise MissingTeacherError(
                f"profile {settings.profile!r} learns from the {settings.teachers_from!r} profile's {key} teacher, "
                f"run {config.run_id()}, which is not finished in {theirs.store_root} (with another results "
                f"directory, copy it there from this repository's results/{settings.teachers_from}/runs); or train "
                f"it with: {train_command(config, theirs.store_root)}")
