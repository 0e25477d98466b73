"""ResNet-18 / ResNet-34 (the torchvision architectures) returning the outputs of their 4 residual groups.

Used for the paper's large-image experiments (Tables 4 and 5): AT is attached to ``layer1`` .. ``layer4``.
"""

from __future__ import annotations

import torch
from torch import nn
import torchvision

RESNET_DEPTHS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34}


class GroupedResNet(nn.Module):
    """Wraps a torchvision ResNet; ``forward(x)`` returns ``(logits, [layer1, layer2, layer3, layer4])``."""

    def __init__(self, net: torchvision.models.ResNet):
        super().__init__()
        self.net = net
        layers = (net.layer1, net.layer2, net.layer3, net.layer4)
        self.group_channels = [layer[-1].conv2.out_channels for layer in layers]

    def forward(self, x: torch.Tensor):
        n = self.net
        out = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        groups = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            out = layer(out)
            groups.append(out)
        logits = n.fc(torch.flatten(n.avgpool(out), 1))
        return logits, groups


def resnet(depth: int, num_classes: int = 1000, **torchvision_kwargs) -> GroupedResNet:
    """ResNet-``depth`` (18 or 34), randomly initialised as in torchvision. Pretrained weights are loaded by the
    caller (``model.net.load_state_dict(...)``)."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return GroupedResNet(RESNET_DEPTHS[depth](weights=None, num_classes=num_classes, **torchvision_kwargs))
