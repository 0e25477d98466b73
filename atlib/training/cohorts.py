"""Cohort training: several runs of one architecture trained at once, as one grouped network.

    records = train_cohort([config_student, config_at, config_kd], results="results")

On a GPU a CIFAR WRN-16-1 step at batch 128 is bound by kernel launches, not arithmetic; a cohort of K runs makes
each layer one grouped kernel for all K (``grouped_wrn``), and the whole step is captured as one CUDA graph
(``steps``). Every member is still an ordinary run: it draws its own batches from its own seeded generator,
has its own initialisation, teacher, loss terms, BN statistics and momentum, and writes the same files as
``engine.train`` (config.json, one metrics line per epoch, checkpoint.pt, weights.pt, record.json) under the same
run id. Its checkpoints are single-run checkpoints, so an interrupted cohort resumes as a cohort, or its members one
by one with ``engine.train``.

Members must agree on everything but ``seed``, ``method``, ``terms``, ``teacher`` and ``teacher_arch``
(``cohort_key``): architecture, schedule, batch size, data. Two families (``FAMILIES``): WRN students
(``grouped_wrn``) with terms "ce", "kd" and "at", and BN-free NIN students, Table 3's (``grouped_nin``), with any
term but F-ActT, the input-gradient terms included. WRN members' teachers must share one architecture (their
outputs are stacked); a NIN member's objective runs its own teacher on its own batch.

``shared_batches=True`` (members must share their seed, hence their data order) draws each batch once and (WRN
cohorts) runs each teacher once per batch for all members: a paired comparison of methods at the cost of one teacher
pass. By default each member's batch goes through its teacher separately (all of them in one batched teacher
forward).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..models import count_parameters
from ..objective import build_objective
from ..paths import DEFAULT_RESULTS
from .cohort_steps import FAMILIES, cohort_epoch, evaluate_cohort
from .config import RunConfig, first_difference
from .distributed import Dist
from .devices import TrainingError, channels_last_wanted, environment, graph_wanted, make_optimizer, resolve_device
from .engine import build_student, train
from .grouped_wrn import join_parts, member_part
from .loop import STEP, epochs, rng_state, run_to_end, set_rng_state
from .sources import make_source
from .steps import StepRunner
from .store import RunStore
from .teachers import prepare, teacher_on_device

logger = logging.getLogger(__name__)

FREE_FIELDS = ("seed", "method", "terms", "teacher", "teacher_arch", "teacher_file")


def family_of(student: str) -> str | None:
    """The cohort family of an architecture (a key of ``FAMILIES``), None if it has none."""
    if student.startswith("wrn-"):
        return "wrn"
    if student.startswith("nin-") and "-nobn" in student:
        return "nin"
    return None


def cohort_key(config: RunConfig) -> str | None:
    """Runs with equal keys can train in one cohort; None if this run cannot join any."""
    family = family_of(config.student)
    if family is None or config.dataset not in ("cifar10", "sample"):
        return None
    if any(name not in FAMILIES[family].terms for name in config.terms):
        return None
    shared = {k: v for k, v in config.to_dict().items() if k not in FREE_FIELDS}
    return json.dumps(shared, sort_keys=True, default=str)


def _check_members(configs: list[RunConfig]) -> None:
    for c in configs:
        if cohort_key(c) is None:
            raise TrainingError(f"run {c.student} / {c.method} cannot join a cohort: cohorts take CIFAR runs of WRN "
                                f"students with terms {list(FAMILIES['wrn'].terms)} or of BN-free NIN students "
                                f"with terms {list(FAMILIES['nin'].terms)} (got terms {sorted(c.terms)})")
    differs = first_difference(configs, FREE_FIELDS)
    if differs is not None:
        name, value, other = differs
        raise TrainingError(f"cohort members must share {name}: {value!r} vs {other!r}")


def _member_optimizer(student: nn.Module, config: RunConfig, device: torch.device) -> torch.optim.SGD:
    """The optimizer ``engine.train`` builds for this run (its state dict is what a single-run checkpoint holds;
    cohort terms have no parameters of their own)."""
    return make_optimizer([p for p in student.parameters() if p.requires_grad], config, device)


def train_cohort(configs, results: str | Path = DEFAULT_RESULTS, progress: bool = True, restart: bool = False,
                 log: Callable[[str], None] | None = logger.info, graph: bool | None = None,
                 shared_batches: bool = False, channels_last: bool | None = None) -> list[dict]:
    """Train the runs ``configs`` together; returns their records in order. Finished runs are not retrained; a
    single unfinished run is trained by ``engine.train``. ``graph`` and ``channels_last`` as in ``engine.train``
    (None: on CUDA)."""
    log = log or (lambda _msg: None)
    configs = list(configs)
    if not configs:
        raise TrainingError("a cohort needs at least one run")
    _check_members(configs)
    if shared_batches and len({c.seed for c in configs}) > 1:
        raise TrainingError(f"shared batches need members with one seed (their data order); got seeds "
                            f"{sorted({c.seed for c in configs})}")
    store = RunStore(results)
    prepared = [prepare(c, store) for c in configs]
    ids = [run_id for _, run_id, _ in prepared]
    if len(set(ids)) != len(ids):
        raise TrainingError(f"a cohort lists the same run twice: {sorted(i for i in ids if ids.count(i) > 1)}")
    arches = {c.teacher_arch for c, _, t in prepared if t is not None}
    if len(arches) > 1 and family_of(configs[0].student) == "wrn":  # its teacher pass stacks their outputs
        raise TrainingError(f"WRN cohort members' teachers must share an architecture, got {sorted(arches)}")
    records, pending = {}, []
    for config, run_id, teacher in prepared:
        if store.status(run_id) == "finished" and not restart:
            records[run_id] = store.read_record(run_id)
            log(f"{run_id}: finished, test error {records[run_id]['test_error']:.2f}% (not retrained)")
        else:
            pending.append((config, run_id, teacher))
    if len(pending) == 1:
        records[pending[0][1]] = train(pending[0][0], results, progress, restart, log, graph, channels_last)
    elif pending:
        device = resolve_device(configs[0].device)
        records.update(_train_cohort(pending, store, device, progress, restart, log, graph, shared_batches,
                                     channels_last))
    return [records[i] for i in ids]


class CohortRuns:
    """K runs trained as one grouped network, as the epoch loop's members (``loop.Members``): the members' own
    students, objectives and data generators, the grouped network, its one optimizer and its step."""

    def __init__(self, pending, store: RunStore, device: torch.device, graph, shared_batches: bool, channels_last,
                 log):
        self.configs = [c for c, _, _ in pending]
        self.ids = [run_id for _, run_id, _ in pending]
        self.k, c0 = len(self.configs), self.configs[0]
        self.device, self.shared_batches = device, shared_batches
        self.label = f"cohort of {self.k} ({self.ids[0]}, ...)"
        self.source = make_source(c0, device)
        self.num_train = self.source.num_train
        use_channels_last = channels_last_wanted(channels_last, device, self.source)
        self.source.memory_format = fmt = torch.channels_last if use_channels_last else torch.contiguous_format
        resident: dict[str, nn.Module] = {}  # one copy of each teacher on the device
        self.teachers = [None if t is None else resident.setdefault(
            c.teacher, teacher_on_device(t, c, self.source.num_classes, device, fmt))
            for c, _, t in pending]
        self.students = [build_student(c, self.source.num_classes, device) for c in self.configs]
        self.objectives = [build_objective(c.terms, s, t) for c, s, t in
                           zip(self.configs, self.students, self.teachers)]
        self.generators = [torch.Generator().manual_seed(c.seed) for c in self.configs]
        self.family = FAMILIES[family_of(c0.student)]
        self.state = {"epoch": 0, "active": None}
        use_graph = graph_wanted(graph, device, Dist(), self.source)
        self.runner_args = (use_graph, log)
        self.environment = environment(device, c0.precision, 1, use_graph, use_channels_last, False,
                                       cohort={"size": self.k, "members": self.ids, "shared_batches": shared_batches})

    def resume(self, checkpoints: list[dict | None]) -> int:
        """Load the members' checkpoints (all at one epoch); returns that epoch (0: none)."""
        if all(ck is None for ck in checkpoints):
            self._pack(None)
            return 0
        done = {run_id: (0 if ck is None else int(ck["epoch"])) for run_id, ck in zip(self.ids, checkpoints)}
        if len(set(done.values())) > 1:
            raise TrainingError(f"cohort members are at different epochs {done}: resume them one by one "
                                f"(atlib train) or pass --restart")
        momentum = []
        for student, objective, config, ck, gen in zip(self.students, self.objectives, self.configs, checkpoints,
                                                       self.generators):
            student.load_state_dict(ck["student"])
            objective.load_state_dict(ck["objective"])
            member = _member_optimizer(student, config, self.device)
            member.load_state_dict(ck["optimizer"])
            momentum.append({name: member.state.get(p, {}).get("momentum_buffer")
                             for name, p in student.named_parameters()})
            set_rng_state(ck["rng"], gen, self.device)
        self._pack(momentum)
        return next(iter(done.values()))

    def _pack(self, momentum: list[dict] | None) -> None:
        """The grouped network from the members' students, its optimizer (with their momentum) and its step."""
        self.cohort = self.family.pack(self.students).to(memory_format=self.source.memory_format)
        self.optimizer = make_optimizer(self.cohort.parameters(), self.configs[0], self.device)
        if momentum is not None:
            for name, p in self.cohort.named_parameters():
                bufs = [m[name] for m in momentum]
                if all(b is not None for b in bufs):
                    self.optimizer.state[p]["momentum_buffer"] = \
                        join_parts(name, bufs, self.family.indexed).to(p.device).clone()
        body = self.family.step(self.cohort, self.configs, self.teachers, self.objectives, self.optimizer,
                                self.device, self.state, self.shared_batches)
        use_graph, log = self.runner_args
        self.runner = StepRunner(body, self.device, use_graph, log=log)

    @property
    def optimizers(self) -> list:
        return [self.optimizer]

    @property
    def runners(self) -> list[StepRunner]:
        return [self.runner]

    def set_epoch(self, epoch: int) -> tuple:
        self.state["epoch"] = epoch
        for objective in self.objectives:
            objective.epoch = epoch
        return tuple(tuple(objective.active_terms()) for objective in self.objectives)

    def train_mode(self) -> None:
        self.cohort.train()

    def train_epoch(self, bar):
        generators = self.generators
        streams = [self.source.train_batches(generators[0])] if self.shared_batches else \
            [self.source.train_batches(g) for g in generators]
        cohort_epoch(self.runner, streams, self.k, bar)
        if self.shared_batches:
            for g in generators[1:]:
                g.set_state(generators[0].get_state())
        yield STEP
        sums = self.runner.totals()
        names, n = list(sums), self.runner.seen
        values = torch.stack([sums[name] for name in names]).tolist()  # one read-back per epoch
        return [{"loss": values[names.index("loss")][i] / n,
                 **{name: values[names.index(name)][i] / n for name in self.state["active"][i]},
                 "error": 100.0 * values[names.index("wrong")][i] / n} for i in range(self.k)]

    def evaluate(self) -> list[dict]:
        return evaluate_cohort(self.cohort, self.source, self.configs[0], self.device)

    def _members(self) -> list[nn.Module]:
        """The members' students holding the grouped network's current parameters."""
        for student, state in zip(self.students, self.family.unpack(self.cohort)):
            student.load_state_dict(state)
        return self.students

    def checkpoints(self, epochs_done: int) -> list[dict]:
        cohort_params = dict(self.cohort.named_parameters())
        out = []
        for i, (student, config) in enumerate(zip(self._members(), self.configs)):
            member = _member_optimizer(student, config, self.device)
            for name, p in student.named_parameters():
                buf = self.optimizer.state.get(cohort_params[name], {}).get("momentum_buffer")
                if buf is not None:
                    member.state[p]["momentum_buffer"] = member_part(name, buf, self.k, i,
                                                                     self.family.indexed).detach().clone()
            out.append({"epoch": epochs_done, "student": student.state_dict(),
                        "objective": self.objectives[i].state_dict(), "optimizer": member.state_dict(),
                        "rng": rng_state(self.generators[i], self.device)})
        return out

    def final_states(self) -> list[tuple[dict, int]]:
        return [(s.state_dict(), count_parameters(s)) for s in self._members()]

    def epoch_message(self, rows: list[dict]) -> str:
        errors = ", ".join(f"{c.method} {row['test_error']:.2f}%" for c, row in zip(self.configs, rows))
        return (f"cohort of {self.k} epoch {rows[0]['epoch']}/{self.configs[0].epochs}: test error {errors}; "
                f"{self.k * rows[0]['images_per_s']:.0f} img/s in all")


def _train_cohort(pending, store: RunStore, device, progress, restart, log, graph, shared_batches,
                  channels_last=None) -> dict:
    runs = CohortRuns(pending, store, device, graph, shared_batches, channels_last, log)
    if restart:
        for run_id in runs.ids:
            store.delete_run_state(run_id)
    for config, run_id in zip(runs.configs, runs.ids):
        store.write_config(run_id, config.identity())
    start_epoch = runs.resume([store.load_checkpoint(run_id) for run_id in runs.ids])
    c0 = runs.configs[0]
    if start_epoch:
        log(f"cohort of {runs.k}: resuming after epoch {start_epoch}/{c0.epochs}")
    else:
        log(f"cohort of {runs.k} x {c0.student} ({count_parameters(runs.students[0]):,} trainable params each), "
            f"methods {[c.method for c in runs.configs]}, {c0.epochs} epochs on {device}")
    for run_id in runs.ids:
        store.truncate_metrics(run_id, start_epoch)
    records = run_to_end(epochs(runs, store, start_epoch, log, progress))
    return dict(zip(runs.ids, records))
