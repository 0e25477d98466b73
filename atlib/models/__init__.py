"""Every model returns ``(logits, group_outputs)`` and exposes ``group_channels`` (channels of each group output).

``build_model(name)`` turns an architecture name into a model; names are what configurations and the CLI use:

- ``wrn-<depth>-<width>``: WRN-d-k (``wrn-16-1``, ``wrn-16-2``, ``wrn-40-1``, ``wrn-40-2``, ...)
- ``nin-thin`` / ``nin-wide``, optionally suffixed ``-nobn`` (no batch norm) and/or ``-norelu`` (no ReLU before
  pooling), e.g. ``nin-thin-nobn`` (Table 3 student), ``nin-wide-norelu`` (Table 3 activation-AT teacher)
- ``resnet-18`` / ``resnet-34``
- ``torchvision:<model>[@<node>,<node>,...]``: any torchvision classifier, returning the outputs of the named FX
  nodes (``atlib.models.external``), e.g. ``torchvision:mobilenet_v3_small@features.1,features.3,features.8``
"""

from __future__ import annotations

import re

from torch import nn

from . import external
from .external import TappedModel, tap
from .nin import NIN, NIN_THIN_WIDTHS, NIN_WIDE_WIDTHS, nin
from .resnet import RESNET_DEPTHS, GroupedResNet, resnet
from .wrn import WideResNet, wrn

__all__ = ["wrn", "nin", "resnet", "tap", "TappedModel", "build_model", "parse_model_name", "canonical_name",
           "count_parameters", "model_from_state",
           "WideResNet", "NIN", "GroupedResNet", "NIN_THIN_WIDTHS", "NIN_WIDE_WIDTHS"]

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
_NIN = re.compile(r"^nin-(thin|wide)((?:-nobn|-norelu)*)$")
_RESNET = re.compile(r"^resnet-(\d+)$")


def parse_model_name(name: str) -> tuple[str, dict]:
    """``"wrn-16-2"`` -> ``("wrn", {"depth": 16, "width": 2})``; ValueError naming the name if unknown."""
    if not isinstance(name, str):
        raise ValueError(f"architecture name must be a string, got {name!r}")
    if (tapped := external.parse_name(name)) is not None:
        return "torchvision", tapped
    if m := _WRN.match(name):
        depth, width = int(m.group(1)), int(m.group(2))
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"architecture {name!r}: WRN depth must be of the form 6n+4 (10, 16, 22, 28, 40, ...), "
                             f"got {depth}")
        if width <= 0:
            raise ValueError(f"architecture {name!r}: WRN width must be a positive integer, got {width}")
        return "wrn", {"depth": depth, "width": width}
    if m := _NIN.match(name):
        flags = m.group(2)
        return "nin", {"variant": m.group(1), "batch_norm": "-nobn" not in flags,
                       "relu_before_pool": "-norelu" not in flags}
    if m := _RESNET.match(name):
        depth = int(m.group(1))
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"architecture {name!r}: ResNet depth must be one of {sorted(RESNET_DEPTHS)}")
        return "resnet", {"depth": depth}
    raise ValueError(f"unknown architecture {name!r}; expected wrn-<depth>-<width>, nin-thin|wide[-nobn][-norelu], "
                     f"resnet-18|34 or torchvision:<model>[@<node>,...]")


def canonical_name(name: str) -> str:
    """The name a configuration stores: ``torchvision:<model>`` with its default nodes spelled out (so a run's id
    never depends on ``external.DEFAULT_NODES``); other names as they are."""
    family, kwargs = parse_model_name(name)
    return external.full_name(kwargs["name"], kwargs["nodes"]) if family == "torchvision" else name


def build_model(name: str, num_classes: int = 10, init: str = "authors") -> nn.Module:
    family, kwargs = parse_model_name(name)
    if family == "torchvision":  # torchvision's own initialisation (``init`` applies to WRN and NIN)
        return external.build(kwargs["name"], kwargs["nodes"], num_classes=num_classes)
    if family == "resnet":
        return resnet(num_classes=num_classes, **kwargs)
    builder = {"wrn": wrn, "nin": nin}[family]
    return builder(num_classes=num_classes, init=init, **kwargs)


def model_from_state(arch: str, state: dict) -> nn.Module:
    """An eval-mode ``arch`` holding ``state`` (trained weights, e.g. ``RunStore.load_weights``); the class count is
    read from the state's final linear layer."""
    head = [v for k, v in state.items() if k.endswith("fc.weight")] or \
        [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]  # the last linear layer
    model = build_model(arch, num_classes=head[-1].shape[0] if head else 10, init="standard")
    model.load_state_dict(state)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
