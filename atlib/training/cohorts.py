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
import math
import platform
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from ..losses import full_precision
from ..models import count_parameters
from ..objective import build_objective
from ..paths import DEFAULT_RESULTS
from . import deadline
from .config import RunConfig
from .distributed import Dist
from .engine import (TrainingError, autocast, build_student, channels_last_wanted, epoch_row, finish_run,
                     graph_wanted, make_optimizer, make_source, prepare, progress_bar, resolve_device, rng_state,
                     set_rng_state, train)
from .provenance import device_name, provenance
from . import grouped_nin
from .grouped_wrn import (COHORT_TERMS, CohortWRN, cohort_loss_vectors, is_indexed, join_parts, member_part, pack,
                          take, unpack)
from .steps import StepRunner, zero_momentum
from .store import RunStore

logger = logging.getLogger(__name__)

FREE_FIELDS = ("seed", "method", "terms", "teacher", "teacher_arch")


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
    first = configs[0].to_dict()
    for c in configs[1:]:
        other = c.to_dict()
        for name, value in first.items():
            if name not in FREE_FIELDS and other[name] != value:
                raise TrainingError(f"cohort members must share {name}: {value!r} vs {other[name]!r}")


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


class TeacherPass:
    """Teacher outputs for the cohort step, with a student axis: ``(logits (B, Kt, N), [groups (B, Kt, C, H, W)])``
    and ``cols[i]``, student i's column (None: no teacher)."""

    def __init__(self, teachers: list[nn.Module | None], refs: list[str | None], shared: bool):
        self.k = len(teachers)
        self.modules: list[nn.Module] = []
        self.members: list[list[int]] = []
        order: dict[str, int] = {}
        for i, (module, ref) in enumerate(zip(teachers, refs)):
            if module is None:
                continue
            if ref not in order:
                order[ref] = len(self.modules)
                self.modules.append(module)
                self.members.append([])
            self.members[order[ref]].append(i)
        self.shared = shared
        self.cols: list[int | None] = [None] * self.k
        col = 0
        for t, members in enumerate(self.members):
            for i in members:
                self.cols[i] = t if shared else col
                col += 1

    def __call__(self, x: torch.Tensor):
        if not self.modules:
            return None, None
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        per_student = x.view(b, self.k, 3, h, w)
        logits, groups = [], []
        with torch.no_grad():
            for module, members in zip(self.modules, self.members):
                if self.shared:
                    lg, gs = module(per_student[:, members[0]])
                    logits.append(lg.unsqueeze(1))
                    groups.append([g.unsqueeze(1) for g in gs])
                    continue
                m = len(members)
                xt = take(per_student, members).transpose(0, 1).reshape(m * b, 3, h, w)
                lg, gs = module(xt)
                logits.append(lg.view(m, b, -1).transpose(0, 1))
                groups.append([g.view(m, b, *g.shape[1:]).transpose(0, 1) for g in gs])
        if len(logits) == 1:
            return logits[0], groups[0]
        return torch.cat(logits, 1), [torch.cat(parts, 1) for parts in zip(*groups)]


def make_cohort_step(cohort: CohortWRN, teacher_pass: TeacherPass, specs, optimizer, precision: str,
                     device: torch.device, state: dict):
    """The cohort's step body (``steps``): ``body(x (B, 3K, H, W), ys (B, K))`` -> (K,) statistics.
    ``state["epoch"]`` selects the active terms; the body stores each student's active term names in
    ``state["active"]``."""

    def body(x: torch.Tensor, ys: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(device, precision):
            logits, groups = cohort(x)
            t_logits, t_groups = teacher_pass(x)
            total, terms, details, active = cohort_loss_vectors(logits, groups, ys.t(), t_logits, t_groups,
                                                                teacher_pass.cols, specs, state["epoch"])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        b = ys.shape[0]
        state["active"] = active
        named = {"loss": sum(terms.values()), **terms, **details}  # (K,) each; stacked: a few kernels in all
        stats = dict(zip(named, (torch.stack([v.detach() for v in named.values()]).double() * b).unbind()))
        stats["wrong"] = (logits.detach().argmax(2) != ys).sum(0).double()
        return stats

    return body


def cohort_epoch(runner: StepRunner, streams, k: int, bar=None) -> None:
    """Feed one epoch to a cohort step: ``streams`` holds K per-member batch iterators, or one iterator whose
    batches every member shares."""
    runner.reset()
    for batch in zip(*streams):
        if len(streams) == 1 and k > 1:
            x0, y0 = batch[0]
            x, ys = x0.repeat(1, k, 1, 1), y0[:, None].expand(-1, k)
        else:
            x, ys = torch.cat([b[0] for b in batch], 1), torch.stack([b[1] for b in batch], 1)
        runner(x, ys)
        if bar is not None:
            bar.update(ys.numel())


def make_grouped_nin_step(grouped: grouped_nin.GroupedNIN, objectives, teachers, optimizer, precision: str,
                          device: torch.device, state: dict):
    """The step body of Table 3's runs as one grouped network (``grouped_nin``): ``body(x (B, 3K, H, W), ys (B, K))``
    -> (K,) statistics; each run's objective (``objectives[i]``, its ``epoch`` set by the caller) as in a single
    run. The body stores each run's active term and detail names in ``state["active"]``."""

    def body(x: torch.Tensor, ys: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(device, precision):
            total, outputs = grouped_nin.objective_outputs(grouped, objectives, teachers, x, ys)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        b = ys.shape[0]
        state["active"] = [list(o.terms) + list(o.details) for o in outputs]
        names = list(dict.fromkeys(n for o in outputs for n in (*o.terms, *o.details)))
        zero = total.new_zeros(())
        per_run = [{"loss": o.total, **o.terms, **o.details} for o in outputs]
        stats = {name: torch.stack([r.get(name, zero).detach() for r in per_run]).double() * b
                 for name in ["loss", *names]}
        logits = torch.stack([o.logits.detach() for o in outputs], 1)  # (B, K, N)
        stats["wrong"] = (logits.argmax(2) != ys).sum(0).double()
        return stats

    return body


class Family:
    """How the runs of one student family train as a cohort: their grouped network (``pack``, ``unpack``), which of
    its tensors have a leading run axis (``indexed``, for ``grouped_wrn.member_part`` / ``join_parts``), the terms it
    computes and its step body."""

    def __init__(self, terms, pack, unpack, indexed, step):
        self.terms, self.pack, self.unpack, self.indexed, self.step = tuple(terms), pack, unpack, indexed, step


def _wrn_step(cohort, configs, teachers, objectives, optimizer, device, state, shared_batches):
    teacher_pass = TeacherPass(teachers, [c.teacher for c in configs], shared_batches)
    return make_cohort_step(cohort, teacher_pass, [c.terms for c in configs], optimizer, configs[0].precision,
                            device, state)


def _nin_step(cohort, configs, teachers, objectives, optimizer, device, state, shared_batches):
    return make_grouped_nin_step(cohort, objectives, teachers, optimizer, configs[0].precision, device, state)


FAMILIES = {
    "wrn": Family(COHORT_TERMS, pack, unpack, is_indexed, _wrn_step),
    "nin": Family(grouped_nin.NIN_COHORT_TERMS, grouped_nin.pack, grouped_nin.unpack, grouped_nin.is_head,
                  _nin_step),
}


def evaluate_cohort(cohort: nn.Module, source, config: RunConfig, device: torch.device) -> list[dict]:
    """``engine.evaluate`` for every member at once (the test images go to every student)."""
    k = cohort.k
    cohort.eval()
    sums = torch.zeros(3, k, device=device, dtype=torch.float64)  # loss, wrong top-1, wrong top-5
    count = 0
    with torch.no_grad(), autocast(device, config.precision):
        for x, y in source.eval_batches():
            logits = full_precision(cohort(x.repeat(1, k, 1, 1))[0])  # (B, K, N)
            target = y[:, None]
            sums[0] += F.cross_entropy(logits.permute(0, 2, 1), target.expand(-1, k), reduction="none").sum(0)
            sums[1] += (logits.argmax(2) != target).sum(0)
            top = min(5, logits.shape[2])
            sums[2] += (logits.topk(top, dim=2).indices != target[:, :, None]).all(dim=2).sum(0)
            count += y.shape[0]
    loss, wrong1, wrong5 = sums.tolist()
    out = []
    for i in range(k):
        row = {"test_loss": loss[i] / count, "test_error": 100.0 * wrong1[i] / count}
        if source.num_classes > 5:
            row["test_error_top5"] = 100.0 * wrong5[i] / count
        out.append(row)
    return out


def _train_cohort(pending, store: RunStore, device, progress, restart, log, graph, shared_batches,
                  channels_last=None) -> dict:
    configs = [c for c, _, _ in pending]
    ids = [run_id for _, run_id, _ in pending]
    k, c0 = len(configs), configs[0]
    source = make_source(c0, device, Dist())
    use_channels_last = channels_last_wanted(channels_last, device, source)
    fmt = torch.channels_last if use_channels_last else torch.contiguous_format
    source.memory_format = fmt
    teachers: list[nn.Module | None] = []
    resident: dict[str, nn.Module] = {}
    for config, _, teacher in pending:
        if teacher is None:
            teachers.append(None)
            continue
        classes = [m.out_features for m in teacher.modules() if isinstance(m, nn.Linear)][-1]
        if classes != source.num_classes:
            raise TrainingError(f"teacher {config.teacher} has {classes} classes but the data has "
                                f"{source.num_classes}")
        teachers.append(resident.setdefault(config.teacher, teacher.to(device, memory_format=fmt)))
    if restart:
        for run_id in ids:
            store.delete_run_state(run_id)
    for config, run_id in zip(configs, ids):
        store.write_config(run_id, config.identity())

    students = [build_student(c, source.num_classes, device) for c in configs]
    objectives = [build_objective(c.terms, s, t) for c, s, t in zip(configs, students, teachers)]
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]
    checkpoints = [store.load_checkpoint(run_id) for run_id in ids]
    start_epoch, momentum = 0, None
    if any(ck is not None for ck in checkpoints):
        epochs = {run_id: (0 if ck is None else int(ck["epoch"])) for run_id, ck in zip(ids, checkpoints)}
        if len(set(epochs.values())) > 1:
            raise TrainingError(f"cohort members are at different epochs {epochs}: resume them one by one "
                                f"(atlib train) or pass --restart")
        momentum = []
        for student, objective, config, ck, gen in zip(students, objectives, configs, checkpoints, generators):
            student.load_state_dict(ck["student"])
            objective.load_state_dict(ck["objective"])
            member = _member_optimizer(student, config, device)
            member.load_state_dict(ck["optimizer"])
            momentum.append({name: member.state.get(p, {}).get("momentum_buffer")
                             for name, p in student.named_parameters()})
            set_rng_state(ck["rng"], gen, device)
        start_epoch = next(iter(epochs.values()))
        log(f"cohort of {k}: resuming after epoch {start_epoch}/{c0.epochs}")
    else:
        log(f"cohort of {k} x {c0.student} ({count_parameters(students[0]):,} trainable params each), methods "
            f"{[c.method for c in configs]}, {c0.epochs} epochs on {device}")
    for run_id in ids:
        store.truncate_metrics(run_id, start_epoch)

    family = FAMILIES[family_of(c0.student)]
    cohort = family.pack(students).to(memory_format=fmt)
    optimizer = make_optimizer(cohort.parameters(), c0, device)
    if momentum is not None:
        for name, p in cohort.named_parameters():
            bufs = [m[name] for m in momentum]
            if all(b is not None for b in bufs):
                optimizer.state[p]["momentum_buffer"] = join_parts(name, bufs, family.indexed).to(p.device).clone()

    state = {"epoch": start_epoch, "active": None}
    body = family.step(cohort, configs, teachers, objectives, optimizer, device, state, shared_batches)
    use_graph = graph_wanted(graph, device, Dist(), source)
    runner = StepRunner(body, device, use_graph, log=log)
    environment = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
                   "python": platform.python_version(), "processes": 1, "cuda_graph": use_graph,
                   "channels_last": use_channels_last, "compiled": False, **provenance(device, c0.precision),
                   "cohort": {"size": k, "members": ids, "shared_batches": shared_batches}}
    full_configs = [c.to_dict() for c in configs]
    step_key = None
    for epoch in range(start_epoch, c0.epochs):
        epoch_start = time.perf_counter()
        lr = c0.lr_at(epoch)
        if epoch > 0 and lr != c0.lr_at(epoch - 1) and c0.reset_momentum_at_drops:
            zero_momentum(optimizer)
        for group in optimizer.param_groups:
            group["lr"] = lr
        state["epoch"] = epoch
        for objective in objectives:
            objective.epoch = epoch
        key = (lr, tuple(tuple(objective.active_terms()) for objective in objectives))
        if key != step_key:
            runner.invalidate()
            step_key = key
        environment["cuda_graph"] = runner.graph
        cohort.train()
        bar = progress_bar(progress, source.num_train * k, f"cohort of {k} {epoch + 1}/{c0.epochs}")
        t0 = time.perf_counter()
        streams = [source.train_batches(generators[0])] if shared_batches else \
            [source.train_batches(g) for g in generators]
        try:
            cohort_epoch(runner, streams, k, bar)
        finally:
            if bar is not None:
                bar.close()
        if shared_batches:
            for g in generators[1:]:
                g.set_state(generators[0].get_state())
        sums = runner.totals()
        names = list(sums)
        values = torch.stack([sums[n] for n in names]).tolist()  # one read-back per epoch
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        n = runner.seen
        tests = evaluate_cohort(cohort, source, c0, device)
        seconds = time.perf_counter() - t0
        per_student = family.unpack(cohort)
        cohort_params = dict(cohort.named_parameters())
        for i, (config, run_id) in enumerate(zip(configs, ids)):
            stats = {"loss": values[names.index("loss")][i] / n,
                     **{name: values[names.index(name)][i] / n for name in state["active"][i]},
                     "error": 100.0 * values[names.index("wrong")][i] / n}
            bad = {key: v for key, v in stats.items() if not math.isfinite(v)}
            if bad or not math.isfinite(tests[i]["test_loss"]):
                raise TrainingError(f"{run_id} diverged at epoch {epoch + 1} (non-finite {bad or 'test loss'}) in a "
                                    f"cohort of {k}; the records of epochs 1..{epoch} are kept in "
                                    f"{store.run_dir(run_id)}")
            store.append_metrics(run_id, epoch_row(epoch, lr, stats, tests[i], seconds, source.num_train /
                                                   train_seconds, run_id, full_configs[i], environment))
            students[i].load_state_dict(per_student[i])
            member = _member_optimizer(students[i], config, device)
            for name, p in students[i].named_parameters():
                buf = optimizer.state.get(cohort_params[name], {}).get("momentum_buffer")
                if buf is not None:
                    member.state[p]["momentum_buffer"] = member_part(name, buf, k, i, family.indexed).detach().clone()
            store.save_checkpoint(run_id, {"epoch": epoch + 1, "student": students[i].state_dict(),
                                           "objective": objectives[i].state_dict(),
                                           "optimizer": member.state_dict(), "rng": rng_state(generators[i], device)})
        if progress:
            errors = ", ".join(f"{c.method} {t['test_error']:.2f}%" for c, t in zip(configs, tests))
            log(f"cohort of {k} epoch {epoch + 1}/{c0.epochs}: test error {errors}; "
                f"{k * source.num_train / train_seconds:.0f} img/s in all")
        deadline.check(f"cohort of {k} ({ids[0]}, ...)", time.perf_counter() - epoch_start, epoch + 1, c0.epochs)

    records = {}
    per_student = family.unpack(cohort)
    for i, (config, run_id) in enumerate(zip(configs, ids)):
        students[i].load_state_dict(per_student[i])
        records[run_id] = finish_run(store, run_id, config, students[i].state_dict(),
                                     count_parameters(students[i]), environment)
        log(f"{run_id}: finished, test error {records[run_id]['test_error']:.2f}% (last epoch)")
    return records
