"""Cohort training: K independent WRN runs of one architecture computed as ONE grouped network.

On a GPU, small students such as WRN-16-1 are kernel-launch bound: one run leaves most of the device idle. A cohort
stacks K runs (different seeds and/or methods) side by side along the channel axis so each layer is a single kernel:

- input ``(B, K*3, H, W)``: channels ``[3k:3k+3]`` hold student k's batch (sample b of student k, ``stack_inputs``);
- every convolution is a grouped convolution with ``groups=K`` (``K*Cin -> K*Cout``), so block k of the output only
  sees block k of the input;
- every BatchNorm has ``K*C`` channels. BN statistics are per channel over ``(B, H, W)``, i.e. exactly student k's own
  batch statistics for its channels; running statistics are per channel too. ``num_batches_tracked`` is kept per
  student (shape ``(K,)``) so that packing students with different counters is lossless;
- the head is a per-student linear layer: weight ``(K, classes, C)``, bias ``(K, classes)``, applied with einsum;
- ``forward`` returns ``(logits (B, K, classes), [g1, g2, g3])`` with group outputs ``(B, K*C_g, H, W)``
  (``split_groups`` cuts them back into K ``(B, C_g, H, W)`` tensors).

Nothing couples the students: every output, loss and gradient of student k depends only on student k's parameters
and batch. ``pack`` builds a cohort from K ``WideResNet`` models, ``unpack`` gives their state dicts back (WRN key
names, loadable with ``strict=True``), ``unpack_grads`` maps cohort gradients back per student; ``cohort_losses`` (the module) evaluates K
objective specs (terms "ce", "kd", "at") on the split outputs with the loss functions of ``atlib.losses``. The total is the sum of the students' totals; since student k's parameters only
appear in its own summand, each student gets exactly its own gradient.

Optimizer note. Plain SGD with momentum (Nesterov or not) and weight decay acts elementwise on parameters
(``d = g + wd * p``; ``buf = mu * buf + d``; ``p -= lr * buf``), so ONE ``torch.optim.SGD`` over the cohort's
parameters is exactly K separate SGDs with the same hyper-parameters, including the momentum buffers. The learning
rate schedule (and resetting momentum at lr drops, if the engine does it) is shared by the whole cohort, so the K
runs must share lr / momentum / weight decay / schedule; methods, seeds and data order may differ. Anything that
couples parameters globally is NOT per student and breaks the equivalence: gradient-norm clipping over all
parameters, AMP's GradScaler (one inf check / scale for the cohort: an overflow in one student skips the step for
all), optimizers with global statistics (LARS/LAMB trust ratios are per tensor, i.e. over all K students).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..models.wrn import PreActBlock, WideResNet

def check_k(k: int) -> None:
    """ValueError unless the cohort size ``k`` is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"cohort size k must be a positive integer, got k={k!r}")


def _grouped_conv(k: int, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    return nn.Conv2d(k * cin, k * cout, kernel, stride=stride, padding=padding, bias=False, groups=k)


class CohortBatchNorm2d(nn.Module):
    """BatchNorm2d over ``K*C`` channels (per-channel, hence per-student, statistics) with a per-student
    ``num_batches_tracked`` of shape ``(K,)``. Exponential running averages only (``momentum`` not None)."""

    def __init__(self, k: int, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if momentum is None:
            raise ValueError("CohortBatchNorm2d needs a numeric momentum (cumulative averages are not supported)")
        self.k, self.channels, self.eps, self.momentum = k, channels, eps, momentum
        self.weight = nn.Parameter(torch.ones(k * channels))
        self.bias = nn.Parameter(torch.zeros(k * channels))
        self.register_buffer("running_mean", torch.zeros(k * channels))
        self.register_buffer("running_var", torch.ones(k * channels))
        self.register_buffer("num_batches_tracked", torch.zeros(k, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"k={self.k}, channels={self.channels}, eps={self.eps}, momentum={self.momentum}"


class CohortLinear(nn.Module):
    """K independent linear layers: ``(B, K, C) -> (B, K, classes)`` with weight ``(K, classes, C)``."""

    def __init__(self, k: int, in_features: int, out_features: int):
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(k, out_features))
        nn.init.normal_(self.weight, 0.0, (2.0 / in_features) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkc,knc->bkn", x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.in_features}, out_features={self.out_features}"


class CohortBlock(PreActBlock):
    """K pre-activation blocks side by side (same names as ``PreActBlock``)."""

    def __init__(self, k: int, in_channels: int, out_channels: int, stride: int):
        nn.Module.__init__(self)  # PreActBlock's layers, grouped; its forward is reused as it is
        self.bn1 = CohortBatchNorm2d(k, in_channels)
        self.conv1 = _grouped_conv(k, in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn2 = CohortBatchNorm2d(k, out_channels)
        self.conv2 = _grouped_conv(k, out_channels, out_channels, 3, padding=1)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = _grouped_conv(k, in_channels, out_channels, 1, stride=stride)


class CohortWRN(nn.Module):
    """K WRN-depth-width students as one grouped network; module names mirror ``WideResNet``.

    ``forward(x)`` takes ``(B, K*3, H, W)`` and returns ``(logits (B, K, classes), [g1, g2, g3])``, each group output
    ``(B, K*C_g, H, W)``. A fresh cohort is initialised like the authors' WRN per student (kaiming fan-in convs and
    linear, BN weights U[0, 1)), but not with the same random numbers as K seeded WRNs: to reproduce seeded runs,
    build the WRNs with their seeds and ``pack`` them.
    """

    def __init__(self, depth: int, width: int, k: int, num_classes: int = 10):
        super().__init__()
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be of the form 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise ValueError(f"WRN width must be a positive integer, got {width!r}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        check_k(k)
        self.depth, self.width, self.k, self.num_classes = depth, width, k, num_classes
        blocks_per_group = (depth - 4) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.group_channels = list(widths)  # per student, like WideResNet.group_channels

        self.stem = _grouped_conv(k, 3, 16, 3, padding=1)
        groups = []
        in_channels = 16
        for out_channels, stride in zip(widths, (1, 2, 2)):
            blocks = []
            for b in range(blocks_per_group):
                blocks.append(CohortBlock(k, in_channels, out_channels, stride if b == 0 else 1))
                in_channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.ModuleList(groups)
        self.head_bn = CohortBatchNorm2d(k, in_channels)
        self.fc = CohortLinear(k, in_channels, num_classes)
        self._authors_init()

    def _authors_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # fan-in of a grouped conv is per group = per student
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, CohortLinear):
                with torch.no_grad():
                    m.weight.normal_(0.0, (2.0 / m.in_features) ** 0.5)
                    m.bias.zero_()
            elif isinstance(m, CohortBatchNorm2d):
                nn.init.uniform_(m.weight, 0.0, 1.0)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != 3 * self.k:
            raise ValueError(f"a cohort of {self.k} expects input (B, {3 * self.k}, H, W), got {tuple(x.shape)}")
        pooled, group_outputs = WideResNet.features(self, x)  # same stem, groups and head BN, grouped
        return self.fc(pooled.view(x.shape[0], self.k, -1)), group_outputs  # (B, K, C) -> (B, K, classes)


# ------------------------------------------------------------------------------------------------ layout helpers

def stack_inputs(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """K batches ``(B, 3, H, W)`` -> cohort input ``(B, K*3, H, W)`` (student k in channels ``[3k:3k+3]``)."""
    xs = list(xs)
    if not xs:
        raise ValueError("stack_inputs needs at least one batch")
    shape = tuple(xs[0].shape)
    for i, x in enumerate(xs):
        if x.dim() != 4 or tuple(x.shape) != shape:
            raise ValueError(f"cohort batches must all have the same (B, C, H, W) shape: batch 0 is {shape}, "
                             f"batch {i} is {tuple(x.shape)}")
    return torch.cat(xs, dim=1)


def split_groups(t: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Cohort tensor ``(B, K*C, H, W)`` -> K tensors ``(B, C, H, W)`` (views)."""
    check_k(k)
    if t.dim() < 2 or t.shape[1] % k != 0:
        raise ValueError(f"cannot split a tensor of shape {tuple(t.shape)} into {k} students along channels")
    return list(t.chunk(k, dim=1))


# ------------------------------------------------------------------------------------------------ pack / unpack

def is_indexed(key: str) -> bool:
    """Tensors stored with a leading student axis (indexed by k) rather than K concatenated blocks (chunked)."""
    return key.startswith("fc.") or key.endswith("num_batches_tracked")


# Where each run lies in a grouped tensor, for any grouped network: ``indexed(key)`` says whether the tensor named
# ``key`` has a leading run axis; otherwise it is K blocks along dim 0. (grouped_nin uses these with its own predicate.)
def member_part(key: str, tensor: torch.Tensor, k: int, index: int, indexed=is_indexed) -> torch.Tensor:
    """Run ``index``'s part of the grouped tensor ``key`` (a parameter, buffer, gradient or momentum buffer)."""
    return tensor[index] if indexed(key) else tensor.chunk(k, dim=0)[index]


def join_parts(key: str, parts: Sequence[torch.Tensor], indexed=is_indexed) -> torch.Tensor:
    """The grouped tensor ``key`` from the K runs' ``parts`` (inverse of ``member_part``)."""
    return torch.stack(list(parts)) if indexed(key) else torch.cat(list(parts), dim=0)


def load_members(grouped: nn.Module, states: Sequence[Mapping[str, torch.Tensor]], indexed=is_indexed) -> None:
    """Copy the K runs' state dicts into ``grouped`` (whose key names mirror theirs)."""
    target = grouped.state_dict()
    if set(target) != set(states[0]):
        raise AssertionError(f"grouped/single key mismatch: {sorted(set(target) ^ set(states[0]))}")
    with torch.no_grad():
        for key, dest in target.items():
            src = join_parts(key, [state[key] for state in states], indexed)
            if src.shape != dest.shape:
                raise AssertionError(f"{key}: packed shape {tuple(src.shape)} != grouped shape {tuple(dest.shape)}")
            dest.copy_(src)


def member_states(grouped: nn.Module, k: int, indexed=is_indexed) -> list[dict[str, torch.Tensor]]:
    """The K runs' state dicts (independent copies)."""
    state = grouped.state_dict()
    return [{key: member_part(key, t, k, i, indexed).detach().clone() for key, t in state.items()} for i in range(k)]


def member_grads(grouped: nn.Module, k: int, indexed=is_indexed) -> list[dict[str, torch.Tensor | None]]:
    """The K runs' parameter gradients by parameter name (None where no gradient)."""
    out: list[dict[str, torch.Tensor | None]] = [{} for _ in range(k)]
    for name, p in grouped.named_parameters():
        for i in range(k):
            out[i][name] = None if p.grad is None else member_part(name, p.grad, k, i, indexed).detach().clone()
    return out


def _architecture(model: nn.Module) -> dict[str, Any]:
    return {"depth": model.depth, "width": model.width, "num_classes": model.fc.out_features}


def pack(students: Sequence[WideResNet]) -> CohortWRN:
    """A cohort whose student k holds exactly the parameters and BN buffers (running_mean, running_var,
    num_batches_tracked) of ``students[k]``. The students must share depth, width, classes, dtype and device; the
    cohort is on that device and dtype, in train mode."""
    students = list(students)
    if not students:
        raise ValueError("pack needs at least one student")
    for i, s in enumerate(students):
        if not isinstance(s, WideResNet):
            raise ValueError(f"pack takes WideResNet students; student {i} is a {type(s).__name__}")
    ref = _architecture(students[0])
    for i, s in enumerate(students[1:], start=1):
        arch = _architecture(s)
        for name, value in ref.items():
            if arch[name] != value:
                raise ValueError(f"cohort students must share their architecture: student 0 has {name}={value}, "
                                 f"student {i} has {name}={arch[name]}")
    params0 = next(students[0].parameters())
    for i, s in enumerate(students):
        p = next(s.parameters())
        if p.dtype != params0.dtype or p.device != params0.device:
            raise ValueError(f"cohort students must share dtype and device: student 0 is {params0.dtype} on "
                             f"{params0.device}, student {i} is {p.dtype} on {p.device}")
        for name, m in s.named_modules():
            if isinstance(m, nn.BatchNorm2d) and (m.eps != 1e-5 or m.momentum != 0.1 or not m.affine
                                                  or not m.track_running_stats):
                raise ValueError(f"student {i} BN {name!r} has non-default settings (eps={m.eps}, "
                                 f"momentum={m.momentum}); cohorts support the WRN defaults only")

    k = len(students)
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not shift the caller's RNG stream
        cohort = CohortWRN(ref["depth"], ref["width"], k, ref["num_classes"])
    cohort.to(device=params0.device, dtype=params0.dtype)
    load_members(cohort, [s.state_dict() for s in students])
    return cohort


def unpack(cohort: CohortWRN) -> list[dict[str, torch.Tensor]]:
    """The K students' state dicts in ``WideResNet`` key names (independent copies), loadable with
    ``WideResNet(depth, width, num_classes).load_state_dict(state, strict=True)``."""
    return member_states(cohort, cohort.k)


def unpack_grads(cohort: CohortWRN) -> list[dict[str, torch.Tensor | None]]:
    """The K students' parameter gradients keyed by ``WideResNet`` parameter names (None where no gradient)."""
    return member_grads(cohort, cohort.k)
