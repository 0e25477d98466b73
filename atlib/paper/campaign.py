"""The campaign: a profile's CIFAR-10 suite trained in a fixed value order, one time-limited GPU window at a time.

    python -m atlib campaign --profile one-seed --deadline 480 --out $OUT

GPU time reaches this project in windows of minutes, so the suite advances window by window: each call trains the
next groups until its deadline, stops at an epoch boundary (every unfinished run keeps a checkpoint of a whole
epoch, see ``training.deadline``) and says what it finished and where each unfinished run stands. ``campaign pack``
and ``campaign import`` (``atlib.paper.packs``) carry the runs between the GPU machine and the checkout, where they are
committed, so that the next window continues where this one stopped.

Value order (``STAGES``; for every seed of the profile in turn, so the ``paper`` profile completes seed 0 first):

1. WRN-16-2 -> WRN-16-1: Table 1's row (student, AT, F-ActT, KD, AT+KD), Table 2, the which-group ablation;
2. the WRN-40-1 teacher, then its Table 1 row;  3. the WRN-40-2 teacher, then its row;
4. the NIN pair (NIN-wide teacher, NIN-thin row);  5. Table 3 (its two BN-free / ReLU-free NIN teachers first;
   their other seeds, for the teachers' table, last).

The paper's headline comparison goes first of all (``HEADLINE``): the WRN-16-1 AT and student runs from the WRN-16-2
teacher, as single runs (about 4-5 GPU-minutes each on an H200), so that even one window answers the paper's main
question; the rest is grouped as ``schedule.schedule`` groups any suite (cohorts of WRN-16-1 students on a GPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ..training import deadline
from ..training.config import RunConfig
from ..training.deadline import DeadlineReached, epoch_deadline
from ..training.store import RunStore, StoreError
from .grids import CIFAR_TEACHERS, Cell, groups_ablation, table1_row, table2, table3, teacher_cells
from .schedule import MIN_COHORT, cohort_size, concurrent_size, is_cohort, schedule
from .settings import Settings
from .suite import teacher_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A step of the value order: teachers (keys of ``grids.TEACHERS``), then the cells that need them."""

    name: str
    teachers: tuple[str, ...]
    cells: Callable[[], list[Cell]]


def _table1_row(row: str) -> Callable[[], list[Cell]]:
    return lambda: list(table1_row(row).values())  # its teacher column: the teacher at each seed


STAGES = [
    Stage("WRN-16-2 -> WRN-16-1: Table 1 row, Table 2, groups", ("wrn-16-2",),
          lambda: _table1_row("WRN-16-1 / WRN-16-2")() + table2() + groups_ablation()),
    Stage("WRN-40-1 -> WRN-16-1: Table 1 row", ("wrn-40-1",), _table1_row("WRN-16-1 / WRN-40-1")),
    Stage("WRN-40-2 -> WRN-16-2: Table 1 row", ("wrn-40-2",), _table1_row("WRN-16-2 / WRN-40-2")),
    Stage("NIN-wide -> NIN-thin: Table 1 row", ("nin-wide",), _table1_row("NIN-thin / NIN-wide")),
    Stage("Table 3: gradient-based AT, NIN without BN", ("nin-wide-nobn", "nin-wide-norelu"),
          lambda: table3() + [c for c in teacher_cells() if c.row in ("nin-wide-nobn", "nin-wide-norelu")]),
]
HEADLINE = ("AT", "student")  # Table 1, WRN-16-1 / WRN-16-2: trained first, one run at a time


@dataclass(frozen=True)
class Job:
    stage: str
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id()


def jobs(settings: Settings) -> list[Job]:
    """Every run of the suite once, in value order: seed by seed, stage by stage, teachers first (students learn
    from the teacher of the first seed; a teacher's other seeds are Table 1's teacher column)."""
    from .suite import cell_runs
    settings.check_paper_suite("campaign")
    out, seen = [], set()
    runs = {stage.name: cell_runs(stage.cells(), settings) for stage in STAGES}  # each run's config made once
    for seed in settings.seeds:
        for stage in STAGES:
            configs = [teacher_config(key, settings) for key in stage.teachers] if seed == settings.seeds[0] else []
            configs += [run.config for run in runs[stage.name] if run.seed == seed]
            for config in configs:
                job = Job(stage.name, seed, config)
                if job.run_id not in seen:
                    seen.add(job.run_id)
                    out.append(job)
    return out


def headline_jobs(settings: Settings) -> list[Job]:
    from .suite import config_for
    row = table1_row("WRN-16-1 / WRN-16-2")
    seed = settings.seeds[0]
    return [Job(STAGES[0].name, seed, config_for(row[column], settings, seed)) for column in HEADLINE]


def value_order(settings: Settings) -> list[RunConfig]:
    """Every run of the suite once, the headline pair first (after its teacher), then ``jobs`` order: what a
    background campaign's lanes train (``paper.background``)."""
    first = [teacher_config(key, settings) for key in STAGES[0].teachers] + [j.config for j in headline_jobs(settings)]
    return first + [j.config for j in jobs(settings) if j.config not in first]


def progress_of(store: RunStore, run_id: str) -> tuple[str, int]:
    """(status, epochs with a checkpoint): "finished", "in progress" (a checkpoint exists) or "not started"."""
    status = store.status(run_id)
    if status == "finished":
        return "finished", len(store.read_metrics(run_id))
    checkpoint = store.run_dir(run_id) / "checkpoint.pt"
    if status == "interrupted" and checkpoint.is_file():
        return "in progress", _checkpoint_epoch(store, run_id)
    return "not started", 0


def _checkpoint_epoch(store: RunStore, run_id: str) -> int:
    """The epoch a run resumes after: its checkpoint's (metrics may hold one more line, cut on resume)."""
    try:
        checkpoint = store.load_checkpoint(run_id)
    except StoreError:  # a corrupt checkpoint: the engine reports it when the run is resumed
        return 0
    return int(checkpoint["epoch"]) if checkpoint else 0


@dataclass
class Group:
    """Runs trained together: ``kind`` "single", "cohort" (one grouped network) or "concurrent" (CUDA streams)."""

    kind: str
    jobs: list[Job]

    @property
    def label(self) -> str:
        if self.kind == "single":
            return self.jobs[0].run_id
        return f"{self.kind} of {len(self.jobs)}: " + ", ".join(j.run_id for j in self.jobs)


def groups(settings: Settings) -> list[Group]:
    """What is left to train, in training order: the headline runs alone, then each stage's teachers and students
    grouped by ``schedule.schedule`` (a cohort's members must stand at one epoch: it resumes only as a whole)."""
    store = RunStore(settings.store_root)
    left = [j for j in jobs(settings) if store.status(j.run_id) != "finished"]
    # the headline runs (after their teacher), one by one
    first = [teacher_config(key, settings) for key in STAGES[0].teachers] + [j.config for j in headline_jobs(settings)]
    out = [Group("single", [j]) for j in sorted((j for j in left if j.config in first),
                                                 key=lambda j: first.index(j.config))]
    headline = {g.jobs[0].run_id for g in out}
    size, concurrent = cohort_size(settings), concurrent_size(settings)
    by_id = {j.run_id: j for j in left}
    teachers = {teacher_config(key, settings, seed).run_id() for key in CIFAR_TEACHERS for seed in settings.seeds}
    for seed in settings.seeds:
        for stage in STAGES:
            members = [j for j in left if j.seed == seed and j.stage == stage.name and j.run_id not in headline]
            for phase in ([j for j in members if j.run_id in teachers],
                          [j for j in members if j.run_id not in teachers]):
                for group in schedule([j.config for j in phase], size, settings.share_batches, concurrent):
                    members_of = [by_id[c.run_id()] for c in group]
                    if len(group) == 1:
                        out.append(Group("single", members_of))
                    elif is_cohort(group):
                        out += _same_epoch(members_of, store)
                    else:
                        out.append(Group("concurrent", members_of))
    return out


def _same_epoch(cohort: list[Job], store: RunStore) -> list[Group]:
    """A cohort split by the epoch its members resume after; parts under ``MIN_COHORT`` train one by one."""
    by_epoch: dict[int, list[Job]] = {}
    for job in cohort:
        by_epoch.setdefault(progress_of(store, job.run_id)[1], []).append(job)
    out = []
    for part in by_epoch.values():
        if len(part) > 1 and (len(part) >= MIN_COHORT or len(by_epoch) == 1):
            out.append(Group("cohort", part))
        else:
            out += [Group("single", [j]) for j in part]
    return out


def train_group(group: Group, settings: Settings, log: Callable[[str], None]) -> list[dict]:
    from ..training.cohorts import train_cohort
    from ..training.concurrent import train_concurrently
    from ..training.engine import train
    configs = [j.config for j in group.jobs]
    common = dict(results=settings.store_root, progress=settings.progress, log=log)
    if group.kind == "single":
        return [train(configs[0], **common)]
    if group.kind == "cohort":
        return train_cohort(configs, shared_batches=settings.share_batches, **common)
    return train_concurrently(configs, **common)


@dataclass
class Outcome:
    finished: list[tuple[str, float]]    # run id, test error: finished by this call
    in_progress: list[tuple[str, int, int]]  # run id, epochs done, epochs
    not_started: list[str]
    stopped: str                          # why the call ended


def run(settings: Settings, seconds: float, log: Callable[[str], None] = logger.info) -> Outcome:
    """Train the next groups until ``seconds`` from now; stop at an epoch boundary. Returns what happened."""
    if not seconds > 0:
        raise ValueError(f"deadline must be a positive number of seconds, got {seconds!r}")
    end = deadline.clock() + seconds
    store = RunStore(settings.store_root)
    todo = groups(settings)
    finished: list[tuple[str, float]] = []
    stopped = "nothing left to train"
    longest_epoch = 0.0  # a group is started only if an epoch as long as the longest seen so far fits
    with epoch_deadline(end):
        for group in todo:
            left = end - deadline.clock()
            if left <= longest_epoch:
                stopped = f"deadline: {left:.0f} s left, less than an epoch ({longest_epoch:.0f} s)"
                break
            ids = [j.run_id for j in group.jobs]
            log(f"training {group.label} ({left:.0f} s left)")
            try:
                records = train_group(group, settings, log)
            except DeadlineReached as e:
                stopped = f"deadline: {e}"
                log(stopped)
                break
            finally:
                longest_epoch = max([longest_epoch] + [store.last_epoch_seconds(i) for i in ids])
            for run_id, record in zip(ids, records):
                finished.append((run_id, record["test_error"]))
        else:
            stopped = "every run of the suite is finished" if todo else stopped
    return _outcome(settings, store, finished, stopped)


def status(settings: Settings) -> Outcome:
    """Where every run of the suite stands (finished ones with their test error)."""
    store = RunStore(settings.store_root)
    finished = [(j.run_id, store.read_record(j.run_id)["test_error"]) for j in jobs(settings)
                if store.status(j.run_id) == "finished"]
    return _outcome(settings, store, finished, f"status of profile {settings.profile!r} in {settings.store_root}")


def _outcome(settings: Settings, store: RunStore, finished, stopped: str) -> Outcome:
    in_progress, not_started = [], []
    for job in jobs(settings):
        status, epochs = progress_of(store, job.run_id)
        if status == "in progress":
            in_progress.append((job.run_id, epochs, job.config.epochs))
        elif status == "not started":
            not_started.append(job.run_id)
    return Outcome(finished, in_progress, not_started, stopped)


def describe(outcome: Outcome, total: int, finished: str = "finished in this call") -> str:
    """What a call finished, where each unfinished run stands, what is left."""
    lines = [f"campaign: {outcome.stopped}"]
    if outcome.finished:
        lines.append(f"{finished} ({len(outcome.finished)}):")
        lines += [f"  {run_id}: test error {error:.2f}%" for run_id, error in outcome.finished]
    if outcome.in_progress:
        lines.append(f"in progress ({len(outcome.in_progress)}; resumable from their checkpoints):")
        lines += [f"  {run_id}: epoch {done}/{epochs}" for run_id, done, epochs in outcome.in_progress]
    done = total - len(outcome.in_progress) - len(outcome.not_started)
    lines.append(f"suite: {done} of {total} runs finished, {len(outcome.in_progress)} in progress, "
                 f"{len(outcome.not_started)} not started")
    return "\n".join(lines)
