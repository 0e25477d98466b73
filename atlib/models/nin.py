"""Network-in-Network models for CIFAR-10 (the paper's NIN-thin and NIN-wide).

The authors never released their NIN code. REFERENCE.md section 4 gives a BN NIN of about 1.0M parameters:

    group1: 5x5 conv 192, 1x1 conv 160, 1x1 conv 96, 3x3/2 max pool     (32x32 -> 16x16)
    group2: 5x5 conv 192, 1x1 conv 192, 1x1 conv 192, 3x3/2 avg pool     (16x16 -> 8x8)
    group3: 3x3 conv 192, 1x1 conv 192, 1x1 conv 192, 8x8 global avg pool
    head:   linear 192 -> classes

That is ``NIN_WIDE_WIDTHS`` (1,005,642 trainable parameters with BN). The paper's NIN-thin has about 0.2M
parameters but its widths are not published; we scale every width by 0.45 and round (``NIN_THIN_WIDTHS`` =
86, 72, 43 | 86, 86, 86 | 86, 86, 86: 206,640 with BN, 205,923 without), keeping the same shape.

Each conv is followed by BN (optional) and ReLU. A group's output is the activation just before its pooling layer:
with ``relu_before_pool=True`` (the usual NIN) that is the ReLU output; with ``relu_before_pool=False`` the last conv
of each group has no ReLU (the variant the authors trained as the teacher of the activation-AT row of Table 3).
Without batch norm the convs carry a bias. The original NIN's dropout is not used.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .wrn import authors_init

NIN_WIDE_WIDTHS = (192, 160, 96, 192, 192, 192, 192, 192, 192)
NIN_THIN_WIDTHS = (86, 72, 43, 86, 86, 86, 86, 86, 86)
NIN_VARIANTS = {"wide": NIN_WIDE_WIDTHS, "thin": NIN_THIN_WIDTHS}
KERNELS = (5, 1, 1, 5, 1, 1, 3, 1, 1)  # of the nine convolutions (training.grouped_nin builds the same layers)


class NIN(nn.Module):
    """``forward(x)`` returns ``(logits, [group1, group2, group3])``."""

    def __init__(
        self,
        widths: Sequence[int] = NIN_WIDE_WIDTHS,
        num_classes: int = 10,
        batch_norm: bool = True,
        relu_before_pool: bool = True,
        init: str = "authors",
    ):
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 9 or any((not isinstance(w, int)) or w <= 0 for w in widths):
            raise ValueError(f"NIN widths must be 9 positive integers, got {widths!r}")
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if init not in ("authors", "standard"):
            raise ValueError(f"unknown init {init!r}; expected 'authors' or 'standard'")
        self.batch_norm, self.relu_before_pool = batch_norm, relu_before_pool
        self.group_channels = [widths[2], widths[5], widths[8]]
        layers = []
        in_channels = 3
        for i, (out_channels, k) in enumerate(zip(widths, KERNELS)):
            last_in_group = i % 3 == 2
            layer = [nn.Conv2d(in_channels, out_channels, k, padding=k // 2, bias=not batch_norm)]
            if batch_norm:
                layer.append(nn.BatchNorm2d(out_channels))
            if relu_before_pool or not last_in_group:
                layer.append(nn.ReLU(inplace=False))
            layers.append(nn.Sequential(*layer))
            in_channels = out_channels
        self.groups = nn.ModuleList(nn.Sequential(*layers[3 * g: 3 * g + 3]) for g in range(3))
        self.fc = nn.Linear(in_channels, num_classes)
        if init == "authors":
            authors_init(self)

    def forward(self, x: torch.Tensor):
        g1 = self.groups[0](x)
        g2 = self.groups[1](F.max_pool2d(g1, 3, stride=2, padding=1))
        g3 = self.groups[2](F.avg_pool2d(g2, 3, stride=2, padding=1))
        out = F.adaptive_avg_pool2d(g3, 1).flatten(1)
        return self.fc(out), [g1, g2, g3]


def nin(
    variant: str = "wide",
    num_classes: int = 10,
    batch_norm: bool = True,
    relu_before_pool: bool = True,
    init: str = "authors",
    widths: Sequence[int] | None = None,
) -> NIN:
    """NIN-``variant`` ("thin" ~0.2M or "wide" ~1.0M parameters); ``widths`` overrides the variant's widths."""
    if widths is None:
        if variant not in NIN_VARIANTS:
            raise ValueError(f"unknown NIN variant {variant!r}; expected one of {sorted(NIN_VARIANTS)}")
        widths = NIN_VARIANTS[variant]
    return NIN(widths, num_classes=num_classes, batch_norm=batch_norm, relu_before_pool=relu_before_pool, init=init)
