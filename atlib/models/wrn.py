"""Wide residual networks WRN-d-k as used by the paper's authors (pre-activation, CIFAR-sized).

Layout (REFERENCE.md section 4):

    stem   3x3 conv 3 -> 16 (whatever k)
    group1 n blocks, width 16k, stride 1   -> 32x32
    group2 n blocks, width 32k, stride 2   -> 16x16
    group3 n blocks, width 64k, stride 2   -> 8x8
    head   BN-ReLU, 8x8 average pool, linear

with depth d = 6n + 4. A block is BN-ReLU-conv3x3-BN-ReLU-conv3x3; when the block changes width, the shortcut is a
1x1 convolution applied to the *activated* input (the output of the first BN-ReLU), otherwise the identity.
The three group outputs returned by ``forward`` are the raw block sums (before the next block's BN-ReLU), which is
where the authors attach attention transfer.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

INITS = ("authors", "standard")


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        y = self.conv1(activated)
        y = self.conv2(F.relu(self.bn2(y)))
        residual = x if self.shortcut is None else self.shortcut(activated)
        return y + residual


class WideResNet(nn.Module):
    """WRN-depth-width. ``forward(x)`` returns ``(logits, [group1, group2, group3])``."""

    def __init__(self, depth: int, width: int, num_classes: int = 10, init: str = "authors"):
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be of the form 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"WRN width must be a positive integer, got {width!r}")
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        self.depth, self.width = depth, width
        blocks_per_group = (depth - 4) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.group_channels = list(widths)

        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        groups = []
        in_channels = 16
        for out_channels, stride in zip(widths, (1, 2, 2)):
            blocks = []
            for b in range(blocks_per_group):
                blocks.append(PreActBlock(in_channels, out_channels, stride if b == 0 else 1))
                in_channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.ModuleList(groups)
        self.head_bn = nn.BatchNorm2d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)
        if init == "authors":
            authors_init(self)

    def features(self, x: torch.Tensor):
        """``(pooled features (B, C), [group outputs])``: everything but the final linear layer."""
        out = self.stem(x)
        group_outputs = []
        for group in self.groups:
            out = group(out)
            group_outputs.append(out)
        out = F.relu(self.head_bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1), group_outputs  # the 8x8 average pool at CIFAR resolution

    def forward(self, x: torch.Tensor):
        pooled, group_outputs = self.features(x)
        return self.fc(pooled), group_outputs


def authors_init(model: nn.Module) -> None:
    """The authors' initialisation: kaiming-normal (fan-in, ReLU gain) convs and linear weights, zero biases,
    BN weights uniform in [0, 1) and BN biases zero."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            if m.weight is not None:
                nn.init.uniform_(m.weight, 0.0, 1.0)
                nn.init.zeros_(m.bias)


def wrn(depth: int, width: int, num_classes: int = 10, init: str = "authors") -> WideResNet:
    """WRN-``depth``-``width`` (e.g. ``wrn(16, 1)`` is the paper's WRN-16-1 student)."""
    return WideResNet(depth, width, num_classes=num_classes, init=init)
