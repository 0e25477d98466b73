"""Table 3's runs side by side: K BN-free NINs of one width computed as ONE grouped network, double backpropagation
included.

Table 3 trains a BN-free NIN-thin with terms built on the input gradient J = dL/dx (gradient AT, symmetry norm,
min-l2): every step is a forward, a backward that keeps its graph, and a backward through that. On a GPU one such
run leaves most of the device idle (small convolutions, many launches). A grouped network stacks K runs along the
channel axis so each layer is one kernel for all K:

- input ``(B, K*3, H, W)``: channels ``[3k:3k+3]`` hold run k's batch (``grouped_wrn.stack_inputs``);
- every convolution is grouped (``groups=K``, with its bias), so block k of the output sees only block k of the
  input; max/average pooling and ReLU act per channel; the head is K linear layers (``grouped_wrn.CohortLinear``);
- ``forward`` returns ``(logits (B, K, classes), [g1, g2, g3])``, each group output ``(B, K*C_g, H, W)``.

Why the input gradients stay each run's own. Run k's logits depend only on block k of the input and on run k's
parameters. So for ``L = sum_k CE_k`` (each summed over its batch), ``dL/dx`` restricted to block k is exactly
``dCE_k/dx_k``, run k's own input gradient, and nothing of run j reaches it. Every term of run k is then computed
by run k's own ``Objective`` (the very term classes a single run uses) from its slices; the step minimises the sum of
the K totals, in which run k's parameters appear only in run k's total: each run gets exactly its own gradient,
second-order part included. No batch statistics couple samples or runs, which is why the network must be BN-free
(as Table 3's NINs are).

``pack`` builds the grouped network from K ``NIN`` models, ``unpack`` gives their state dicts back (``NIN`` key names,
loadable with ``strict=True``); ``objective_outputs`` evaluates the K objectives of one step.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..losses import full_precision
from ..models.nin import KERNELS, NIN
from ..objective import BatchContext, Objective, ObjectiveOutput
from .grouped_wrn import CohortLinear, check_k, load_members, member_grads, member_states, split_groups


# the terms a grouped NIN computes: every term but F-ActT (its adapters would need a grouped form of their own)
NIN_COHORT_TERMS = ("ce", "kd", "at", "grad_at", "symmetry", "min_l2")


class GroupedNIN(nn.Module):
    """K BN-free NINs with the same widths as one grouped network; module names mirror ``NIN``."""

    def __init__(self, widths: Sequence[int], k: int, num_classes: int = 10, relu_before_pool: bool = True):
        super().__init__()
        check_k(k)
        widths = tuple(widths)
        if len(widths) != 9 or any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ValueError(f"NIN widths must be 9 positive integers, got {widths!r}")
        self.k, self.widths, self.num_classes, self.relu_before_pool = k, widths, num_classes, relu_before_pool
        self.group_channels = [widths[2], widths[5], widths[8]]  # per run, like NIN.group_channels
        layers, cin = [], 3
        for i, (cout, kernel) in enumerate(zip(widths, KERNELS)):
            layer = [nn.Conv2d(k * cin, k * cout, kernel, padding=kernel // 2, bias=True, groups=k)]
            if relu_before_pool or i % 3 != 2:
                layer.append(nn.ReLU(inplace=False))
            layers.append(nn.Sequential(*layer))
            cin = cout
        self.groups = nn.ModuleList(nn.Sequential(*layers[3 * g: 3 * g + 3]) for g in range(3))
        self.fc = CohortLinear(k, cin, num_classes)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != 3 * self.k:
            raise ValueError(f"a grouped NIN of {self.k} expects input (B, {3 * self.k}, H, W), got {tuple(x.shape)}")
        g1 = self.groups[0](x)  # the same pooling as NIN.forward, per channel hence per run
        g2 = self.groups[1](F.max_pool2d(g1, 3, stride=2, padding=1))
        g3 = self.groups[2](F.avg_pool2d(g2, 3, stride=2, padding=1))
        pooled = F.adaptive_avg_pool2d(g3, 1).view(x.shape[0], self.k, -1)  # (B, K, C)
        return self.fc(pooled), [g1, g2, g3]


def is_head(key: str) -> bool:
    return key.startswith("fc.")  # stored with a leading run axis; every conv tensor is K blocks along dim 0


def pack(students: Sequence[NIN]) -> GroupedNIN:
    """A grouped network whose run k holds exactly the parameters of ``students[k]`` (BN-free NINs of one width,
    dtype and device); on that device and dtype, in train mode."""
    students = list(students)
    if not students:
        raise ValueError("pack needs at least one NIN")
    for i, s in enumerate(students):
        if not isinstance(s, NIN) or s.batch_norm:
            raise ValueError(f"a grouped NIN packs BN-free NINs (batch statistics would couple the samples of an "
                             f"input gradient); model {i} is a {type(s).__name__}"
                             f"{' with batch norm' if isinstance(s, NIN) else ''}")
    first = students[0]
    widths = tuple(m[0].out_channels for g in first.groups for m in g)
    for i, s in enumerate(students[1:], start=1):
        other = tuple(m[0].out_channels for g in s.groups for m in g)
        if other != widths or s.relu_before_pool != first.relu_before_pool or \
                s.fc.out_features != first.fc.out_features:
            raise ValueError(f"a grouped NIN packs NINs of one shape: model 0 has widths {widths}, model {i} "
                             f"{other} (or another head or ReLU placement)")
    p0 = next(first.parameters())
    for i, s in enumerate(students):
        p = next(s.parameters())
        if p.dtype != p0.dtype or p.device != p0.device:
            raise ValueError(f"grouped NINs share dtype and device: model 0 is {p0.dtype} on {p0.device}, model {i} "
                             f"is {p.dtype} on {p.device}")
    with torch.random.fork_rng(devices=[]):  # its throwaway init must not move the caller's random stream
        grouped = GroupedNIN(widths, len(students), first.fc.out_features, first.relu_before_pool)
    grouped.to(device=p0.device, dtype=p0.dtype)
    load_members(grouped, [s.state_dict() for s in students], is_head)
    return grouped


def unpack(grouped: GroupedNIN) -> list[dict[str, torch.Tensor]]:
    """The K runs' state dicts in ``NIN`` key names (independent copies)."""
    return member_states(grouped, grouped.k, is_head)


def unpack_grads(grouped: GroupedNIN) -> list[dict[str, torch.Tensor | None]]:
    """The K runs' parameter gradients keyed by ``NIN`` parameter names (None where no gradient)."""
    return member_grads(grouped, grouped.k, is_head)


def objective_outputs(grouped: GroupedNIN, objectives: Sequence[Objective], teachers: Sequence[nn.Module | None],
                      x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[ObjectiveOutput]]:
    """The K runs' objectives on one step: ``x`` ``(B, K*3, H, W)`` (run k's batch in channels ``[3k:3k+3]``),
    ``labels`` ``(B, K)``, ``objectives[k]`` and ``teachers[k]`` run k's (as ``engine.train`` builds them). Returns
    ``(total, outputs)``: ``outputs[k]`` is what ``objectives[k](student_k, teacher_k, x_k, labels_k)`` gives for the
    run's own NIN, and ``total`` the sum of the K totals (backward it once for every run's own gradients)."""
    k = grouped.k
    if len(objectives) != k or len(teachers) != k:
        raise ValueError(f"a grouped NIN of {k} needs {k} objectives and teachers, got {len(objectives)} and "
                         f"{len(teachers)}")
    if labels.dim() != 2 or labels.shape[1] != k:
        raise ValueError(f"labels must be (B, {k}), got {tuple(labels.shape)}")
    for i, (objective, teacher) in enumerate(zip(objectives, teachers)):
        if objective.needs_teacher and teacher is None:
            raise ValueError(f"run {i}: terms {[n for n, t in objective.terms.items() if t.needs_teacher]} need a "
                             f"teacher")
    active = [o.active_terms() for o in objectives]
    needs_grad = any(t.needs_student_input_grad for terms in active for t in terms.values())
    needs_flipped = any(t.needs_flipped_input_grad for terms in active for t in terms.values())
    b = x.shape[0]
    filled: list[dict] = [{} for _ in range(k)]
    if needs_grad:
        # one pass (over the mirrored batch too when a run needs it): every sample's input gradient is its own
        inputs = torch.cat([x, torch.flip(x, dims=[-1])]) if needs_flipped else x
        inputs = inputs.detach().requires_grad_(True)
        ys = torch.cat([labels, labels]) if needs_flipped else labels
        with torch.enable_grad():
            logits, groups = grouped(inputs)
            task = sum(F.cross_entropy(full_precision(logits[:, i]), ys[:, i], reduction="sum") for i in range(k))
            (grad,) = torch.autograd.grad(task, inputs, create_graph=True)
        per_run = split_groups(grad, k)
        for i in range(k):
            filled[i]["student_input_grad"] = per_run[i][:b]
            if needs_flipped:
                filled[i]["student_flipped_input_grad"] = per_run[i][b:]
        logits, groups = logits[:b], [g[:b] for g in groups]
    else:
        logits, groups = grouped(x)
    split = [split_groups(g, k) for g in groups]
    outputs = []
    for i in range(k):
        filled[i]["student"] = (logits[:, i], [s[i] for s in split])
        ctx = BatchContext.from_values(teachers[i], x[:, 3 * i:3 * i + 3], labels[:, i], filled[i])
        outputs.append(objectives[i].evaluate(ctx))
    return sum(o.total for o in outputs), outputs
