"""The paper's transfer losses, one function per term. REFERENCE.md section 2 has the conventions.

- ``at_loss``: activation-based attention transfer (section 3.1, Eq. 2), authors' code convention by default.
- ``kd_loss``: Hinton knowledge distillation, the authors' fixed (2018) scaling.
- ``ActivationTransfer``: F-ActT, l2 transfer of full normalised activations with 1x1 adapters.
- ``gradient_at_loss``, ``symmetry_loss``, ``min_l2_loss``: gradient-based transfer (section 3.2) and the two
  input-gradient regularisers of Table 3, built on ``input_gradient`` (double backpropagation).

Teacher tensors are always detached: no gradient ever reaches the teacher.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .attention import attention_map, check_attention_args, normalize_map, resize_map
from .methods import AT_DEFAULTS, AT_FORM, FACT_DEFAULTS, KD_DEFAULTS

AT_FORMS = ("code", "paper")


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 at least (bf16/fp16 activations are upcast; float64 stays float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def check_weight(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")


def select_pairs(student_groups: Sequence[torch.Tensor], teacher_groups: Sequence[torch.Tensor],
                 groups: Sequence[int] | None) -> list[int]:
    """Validate matched group lists and return the selected pair indices (0-based; None = all)."""
    if len(student_groups) != len(teacher_groups):
        raise ValueError(f"student and teacher give different numbers of groups: "
                         f"{len(student_groups)} vs {len(teacher_groups)}")
    n = len(student_groups)
    if n == 0:
        raise ValueError("no group outputs to transfer (empty group lists)")
    if groups is None:
        return list(range(n))
    selected = list(groups)
    if not selected:
        raise ValueError("groups selects no pair (empty list)")
    for g in selected:
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < n:
            raise ValueError(f"group index {g!r} out of range: the models have {n} groups (valid 0..{n - 1})")
    if len(set(selected)) != len(selected):
        raise ValueError(f"groups lists a pair twice: {selected}")
    return selected


def match_map_sizes(ms: torch.Tensor, mt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher maps (..., H, W) resized to the smaller H x W where they differ (area interpolation)."""
    if ms.shape[-2:] == mt.shape[-2:]:
        return ms, mt
    size = (min(ms.shape[-2], mt.shape[-2]), min(ms.shape[-1], mt.shape[-1]))
    resize = lambda m: resize_map(m.flatten(0, -3), size).view(*m.shape[:-2], *size)  # noqa: E731
    return resize(ms), resize(mt)


def _matched_maps(s: torch.Tensor, t: torch.Tensor, p: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention maps of a student/teacher pair in float32, resized to the smaller H x W when they differ."""
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"student and teacher batch sizes differ: {s.shape[0]} vs {t.shape[0]}")
    ms = attention_map(full_precision(s), p=p, kind=kind)
    mt = attention_map(full_precision(t.detach()), p=p, kind=kind)
    return match_map_sizes(ms, mt)


def check_at_options(beta: float, p: float, kind: str, form: str) -> None:
    """ValueError (naming the value) for AT options the paper does not define."""
    check_attention_args(p, kind)
    check_weight("beta", beta)
    if form not in AT_FORMS:
        raise ValueError(f"unknown AT form {form!r}; expected one of {AT_FORMS}")


def at_distance(qs: torch.Tensor, qt: torch.Tensor, beta: float, form: str = AT_FORM) -> torch.Tensor:
    """The AT term of one group pair from normalised attention vectors (``normalize_map``): batch first, positions
    last, e.g. (B, H*W); any axes between are members trained side by side (cohorts), each keeping its own value.

    ``form="code"`` (default, the authors' code and the reported CIFAR numbers):
        beta * mean_{batch, H*W} (Q_S/||Q_S|| - Q_T/||Q_T||)^2
    ``form="paper"`` (Eq. 2 as printed):
        beta/2 * mean_batch || Q_S/||Q_S|| - Q_T/||Q_T|| ||_2      (the l2 norm, not squared)
    """
    diff = qs - qt
    if form == "code":
        return beta * diff.pow(2).mean(dim=(0, -1))
    return (beta / 2) * torch.linalg.vector_norm(diff, dim=-1).mean(0)


def at_pair_losses(student_groups, teacher_groups, beta: float = AT_DEFAULTS["beta"], p: float = AT_DEFAULTS["p"],
                   kind: str = AT_DEFAULTS["kind"], groups: Sequence[int] | None = None,
                   form: str = AT_FORM) -> dict[int, torch.Tensor]:
    """Per-pair AT losses (already multiplied by beta), keyed by 0-based group index: ``at_distance`` of each selected
    pair's normalised maps (``form`` as there). Pairs whose maps differ in H x W are compared after resizing both to
    the smaller size (area interpolation).
    """
    check_at_options(beta, p, kind, form)
    out = {}
    for g in select_pairs(student_groups, teacher_groups, groups):
        ms, mt = _matched_maps(student_groups[g], teacher_groups[g], p, kind)
        out[g] = at_distance(normalize_map(ms), normalize_map(mt), beta, form)
    return out


def at_loss(student_groups, teacher_groups, beta: float = AT_DEFAULTS["beta"], p: float = AT_DEFAULTS["p"],
            kind: str = AT_DEFAULTS["kind"], groups: Sequence[int] | None = None, form: str = AT_FORM) -> torch.Tensor:
    """Attention transfer loss: the sum over selected group pairs of ``at_pair_losses``."""
    return sum(at_pair_losses(student_groups, teacher_groups, beta, p, kind, groups, form).values())


def check_kd_options(T: float, alpha: float) -> None:
    """ValueError (naming the value) for a KD temperature or weight outside its range."""
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"KD temperature must be > 0, got T={T!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"KD alpha must be in [0, 1], got alpha={alpha!r}")


def kd_soft(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)), summed over the classes (last axis), mean over the batch (first axis); axes
    between are members trained side by side (cohorts), each keeping its own value. The teacher's logits may
    broadcast over members. For (B, N) logits this equals ``F.kl_div(..., reduction="batchmean", log_target=True)``
    bit for bit; with members, per-sample sums then the batch mean (as cohorts always computed it)."""
    ls = F.log_softmax(full_precision(student_logits) / T, dim=-1)
    lt = F.log_softmax(full_precision(teacher_logits.detach()) / T, dim=-1)
    per_class = lt.exp() * (lt - ls)
    if per_class.dim() == 2:
        return per_class.sum() / student_logits.shape[0]
    return per_class.sum(-1).mean(0)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            T: float = KD_DEFAULTS["T"], alpha: float = KD_DEFAULTS["alpha"]) -> torch.Tensor:
    """Knowledge distillation, fixed (2018) form:
    alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) (summed over classes, mean over batch) + (1 - alpha) * CE(s, y).
    (B, K, N) logits with (B, K) labels: the K members' values (K,).
    """
    check_kd_options(T, alpha)
    if student_logits.dim() == 3:
        if teacher_logits.dim() != 3 or teacher_logits.shape[0] != student_logits.shape[0]:
            raise ValueError(f"member logits (B, K, N) need teacher logits (B, K or 1, N), got "
                             f"{tuple(teacher_logits.shape)}")
    else:
        _check_logits(student_logits, labels)
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                             f"{tuple(teacher_logits.shape)}")
    return alpha * T * T * kd_soft(student_logits, teacher_logits, T) + \
        (1.0 - alpha) * cross_entropy(student_logits, labels)


def _check_logits(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (B, classes) and labels (B,): got logits {tuple(logits.shape)} and "
                         f"labels {tuple(labels.shape)}")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task loss, mean over the batch (with the same shape check as the other losses); (B, K, N) logits of K
    members with (B, K) labels give the K members' means (K,)."""
    if logits.dim() == 3 and labels.shape == logits.shape[:2]:
        return F.cross_entropy(full_precision(logits).permute(0, 2, 1), labels, reduction="none").mean(0)
    _check_logits(logits, labels)
    return F.cross_entropy(full_precision(logits), labels)


class ActivationTransfer(nn.Module):
    """F-ActT: full-activation transfer (FitNets-style, as in the paper's Table 1).

    For each matched pair, the student activation goes through a 1x1 convolution when channel counts differ (an
    adapter trained with the student), both activations are flattened per sample and l2-normalised, and the loss is
    ``beta * mean_{batch, C*H*W} (a_S - a_T)^2``, the same convention as ``at_loss``. The paper decays beta for F-ActT
    but gives no schedule; we keep it constant. Spatial sizes that differ are matched by area interpolation of the
    larger activation.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 beta: float = FACT_DEFAULTS["beta"], groups: Sequence[int] | None = None):
        super().__init__()
        check_weight("beta", beta)
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"student and teacher give different numbers of groups: "
                             f"{len(student_channels)} vs {len(teacher_channels)}")
        self.beta = float(beta)
        self.groups = None if groups is None else list(groups)
        self.adapters = nn.ModuleList(
            nn.Conv2d(cs, ct, 1, bias=False) if cs != ct else nn.Identity()
            for cs, ct in zip(student_channels, teacher_channels))

    def pair_losses(self, student_groups, teacher_groups) -> dict[int, torch.Tensor]:
        out = {}
        for g in select_pairs(student_groups, teacher_groups, self.groups):
            s = full_precision(self.adapters[g](student_groups[g]))
            t = full_precision(teacher_groups[g].detach())
            if s.shape[1] != t.shape[1]:
                raise ValueError(f"group {g}: adapter gives {s.shape[1]} channels, teacher has {t.shape[1]}")
            if s.shape[-2:] != t.shape[-2:]:
                size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
                s, t = F.interpolate(s, size=size, mode="area"), F.interpolate(t, size=size, mode="area")
            diff = F.normalize(s.flatten(1), dim=1) - F.normalize(t.flatten(1), dim=1)
            out[g] = self.beta * diff.pow(2).mean()
        return out

    def forward(self, student_groups, teacher_groups) -> torch.Tensor:
        return sum(self.pair_losses(student_groups, teacher_groups).values())


def input_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, create_graph: bool = True):
    """J = dL/dx of the task loss for each sample (cross-entropy summed over the batch, so J_b is sample b's own
    gradient when the model has no batch-coupled layers in train mode). Returns ``(J, logits, groups)``;
    ``create_graph=True`` keeps the graph for double backpropagation (the student); use False for the teacher."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits, groups = model(x)
        _check_logits(logits, labels)
        task = F.cross_entropy(full_precision(logits), labels, reduction="sum")
        (grad,) = torch.autograd.grad(task, x, create_graph=create_graph)
    return grad, logits, groups


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(full_precision(v.flatten(1)), dim=1)


def gradient_at_loss(student_input_grad: torch.Tensor, teacher_input_grad: torch.Tensor,
                     beta: float) -> torch.Tensor:
    """Gradient-based AT (Eq. 4): beta/2 * mean_batch || J_S - J_T ||_2 (per-sample l2 norm, not squared)."""
    check_weight("beta", beta)
    if student_input_grad.shape != teacher_input_grad.shape:
        raise ValueError(f"input gradients differ in shape: {tuple(student_input_grad.shape)} vs "
                         f"{tuple(teacher_input_grad.shape)}")
    return (beta / 2) * _per_sample_norm(student_input_grad - teacher_input_grad.detach()).mean()


def symmetry_loss(input_grad: torch.Tensor, flipped_input_grad: torch.Tensor, beta: float) -> torch.Tensor:
    """Symmetry norm: beta/2 * mean_batch || J(x) - flip(J(flip(x))) ||_2, ``flipped_input_grad`` = J(flip(x))."""
    check_weight("beta", beta)
    return (beta / 2) * _per_sample_norm(input_grad - torch.flip(flipped_input_grad, dims=[-1])).mean()


def min_l2_loss(input_grad: torch.Tensor, beta: float) -> torch.Tensor:
    """min-l2 (Drucker & LeCun 1992): beta/2 * mean_batch || J ||_2^2."""
    check_weight("beta", beta)
    return (beta / 2) * _per_sample_norm(input_grad).pow(2).mean()
