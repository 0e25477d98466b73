"""The step of a cohort: K runs as one grouped network (``grouped_wrn``, ``grouped_nin``), one SGD step for all.

- ``TeacherPass``: the teachers' outputs for the K students' batches, with a student axis.
- ``make_cohort_step`` (WRN) and ``make_grouped_nin_step`` (Table 3's BN-free NINs): the step bodies (``steps``),
  returning (K,) statistics.
- ``cohort_epoch``: one epoch of batches into a step; ``evaluate_cohort``: every member's test at once.
- ``FAMILIES``: how each student family packs, unpacks and steps.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..losses import full_precision
from . import grouped_nin
from .config import RunConfig
from .devices import autocast
from .cohort_losses import COHORT_TERMS, cohort_loss_vectors, take
from .grouped_wrn import CohortWRN, is_indexed, pack, unpack
from .steps import StepRunner


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
