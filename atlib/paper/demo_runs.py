"""What the CPU demo trains: its four runs (student, AT, KD, AT+KD) as table cells, the seeds of each, their
configurations, the borrowed teacher, and the words that say on what data they train and are tested."""

from __future__ import annotations

from ..training.store import RunStore
from .grids import DEMO_COLUMNS, DEMO_ROW, Cell, cpu_demo
from .grids import seeds_of as grid_seeds
from .settings import Settings
from .suite import cell_runs, teacher_config

TEACHER = "wrn-16-2"
STUDENT = "wrn-16-1"
ROW = DEMO_ROW
COLUMNS = [(column, method) for column, method, _ in DEMO_COLUMNS]  # (column, method); the grid is grids.cpu_demo
SEEDS_OF = {column: n for column, _, n in DEMO_COLUMNS if n is not None}  # fewer seeds: KD and AT+KD
MAP_SEED_INDEX = 0  # the maps show the runs of the profile's first seed
SAMPLE_TEST_IMAGES = 1000   # the embedded sample's test images (100 per class)
CIFAR_TEST_IMAGES = 10000   # CIFAR-10's test set
FINAL_TEST_FILE = "final-test.json"  # in each run's directory: its final weights on the CIFAR-10 test set
TRAINING_FILE = "training.json"      # in results/<profile>/: the machine and its load when the runs were trained


def cells() -> list[Cell]:
    """Student, AT, KD and AT+KD: the ``cpu-demo`` grid (``grids.cpu_demo``)."""
    return cpu_demo()


def seeds_of(settings: Settings, column: str) -> list[int]:
    """The seeds ``column`` is trained with: the profile's seeds, or their first ``SEEDS_OF[column]``."""
    chosen = [c for c in cells() if c.column == column]
    if not chosen:
        raise ValueError(f"unknown demo column {column!r}; expected one of {[c for c, _ in COLUMNS]}")
    return grid_seeds(chosen[0], settings.seeds)


def runs(settings: Settings) -> list:
    """Every run of the demo (``suite.cell_runs`` of its grid), seed by seed, each seed in ``COLUMNS`` order."""
    return sorted(cell_runs(cells(), settings), key=lambda run: run.seed)


def jobs(settings: Settings) -> list[tuple[int, Cell]]:
    """Every (seed, cell) of the demo, in ``runs`` order."""
    return [(run.seed, run.cell) for run in runs(settings)]


def configs(settings: Settings) -> list:
    """The ``RunConfig`` of every run (``runs`` order): what another trainer (``atlib work``) trains for the demo."""
    return [run.config for run in runs(settings)]


def check(settings: Settings) -> None:
    """ValueError (one line) unless the settings borrow a finished teacher (``teachers_from``): the demo never
    trains its teacher. ``MissingTeacherError`` (with the command that trains it) if it is not there."""
    from .suite import check_borrowed_teachers
    if settings.teachers_from is None:
        raise ValueError("the CPU demo learns from another profile's finished teacher: set teachers_from (the "
                         "cpu-demo profile uses one-seed)")
    if isinstance(settings.concurrent, bool) or not isinstance(settings.concurrent, int) or settings.concurrent < 1:
        raise ValueError(f"concurrent must be a whole number of runs >= 1, got concurrent={settings.concurrent!r}")
    check_borrowed_teachers(cells(), settings)


def finished(settings: Settings) -> int:
    """How many of the demo's runs are finished in the store."""
    store = RunStore(settings.store_root)
    return sum(store.status(run.run_id) == "finished" for run in runs(settings))


def teacher_model(settings: Settings):
    """The borrowed teacher (eval mode, CPU)."""
    theirs = settings.teacher_settings()
    return RunStore(theirs.store_root).load_model(teacher_config(TEACHER, theirs).run_id())


def teacher_record(settings: Settings) -> dict:
    """The borrowed teacher's record (its run id, test error on the full CIFAR-10 test set, provenance)."""
    theirs = settings.teacher_settings()
    return RunStore(theirs.store_root).read_record(teacher_config(TEACHER, theirs).run_id())


def batch_words(settings: Settings) -> str:
    """", batch N" where the settings set a batch size, else ""."""
    return f", batch {settings.batch_size}" if settings.batch_size else ""


def training_images_words(settings: Settings) -> str:
    """The images the demo's runs train on, in words."""
    if settings.dataset == "sample":
        if settings.train_subset:
            return f"the first {settings.train_subset:,} images of the embedded CIFAR-10 sample"
        return "2,500 CIFAR-10 training images (the embedded class-balanced sample, 250 per class)"
    return f"the first {settings.train_subset:,} CIFAR-10 training images" if settings.train_subset else \
        "all CIFAR-10 training images"


def test_images_words(settings: Settings) -> str:
    """The images each epoch is evaluated on (the training data's own test split)."""
    n = settings.test_subset or (SAMPLE_TEST_IMAGES if settings.dataset == "sample" else CIFAR_TEST_IMAGES)
    if settings.dataset == "sample":
        return f"the embedded sample's {'first ' if settings.test_subset else ''}{n:,} test images"
    return f"{'the first ' if settings.test_subset else ''}{n:,} CIFAR-10 test images"
