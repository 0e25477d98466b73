"""ImageNet weights for ResNet-18/34 and the freezing used by the fine-tuning protocol (Table 4).

``pretrained="imagenet"`` looks for torchvision's weight file (``resnet18-f37072fd.pth`` / ``resnet34-b627a593.pth``)
in ``weights_dir``, then ``$ATLIB_WEIGHTS``, then torch's hub cache; where none is found and a network is reachable,
torchvision downloads it; otherwise a clear error. Any other value is a path to a state dict. A missing file is an
error, never a silent random initialisation. When the data has a different number of classes than the weights, the
final linear layer keeps its fresh initialisation (a new head); every other tensor must load.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .resnet import GroupedResNet

TORCHVISION_FILES = {"resnet-18": "resnet18-f37072fd.pth", "resnet-34": "resnet34-b627a593.pth"}
WEIGHTS_ENV = "ATLIB_WEIGHTS"


class WeightsError(ValueError):
    """Pretrained weights are missing or do not fit; the message names the file."""


def imagenet_weights_file(arch: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing torchvision weight file for ``arch`` in the search path, or None."""
    if arch not in TORCHVISION_FILES:
        raise WeightsError(f"no ImageNet weights for {arch!r}; expected one of {sorted(TORCHVISION_FILES)}")
    name = TORCHVISION_FILES[arch]
    candidates = [Path(d) / name for d in (weights_dir, os.environ.get(WEIGHTS_ENV)) if d]
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / name)
    return next((p for p in candidates if p.is_file()), None)


def _download(arch: str) -> dict:
    from ..data.cifar import network_available  # the same reachability probe as the data layer
    if not network_available():
        raise WeightsError(f"ImageNet weights for {arch} not found: put {TORCHVISION_FILES[arch]} in "
                           f"${WEIGHTS_ENV} (or weights_dir, or {Path(torch.hub.get_dir()) / 'checkpoints'}), "
                           f"or pass a weights file")
    import torchvision
    enum = {"resnet-18": torchvision.models.ResNet18_Weights, "resnet-34": torchvision.models.ResNet34_Weights}[arch]
    return enum.IMAGENET1K_V1.get_state_dict(progress=True)


def read_state_dict(path: str | os.PathLike) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every unreadable file is reported alike
        raise WeightsError(f"weights file {path} cannot be read ({' '.join(str(e).split())[:160]})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} does not hold a state dict")
    return state


def load_pretrained(model: GroupedResNet, arch: str, pretrained: str,
                    weights_dir: str | os.PathLike | None = None) -> str:
    """Load ImageNet (or file) weights into ``model``; returns where they came from."""
    if not isinstance(model, GroupedResNet):
        raise WeightsError(f"pretrained weights are supported for resnet-18/34 only, not {arch!r}")
    if pretrained == "imagenet":
        path = imagenet_weights_file(arch, weights_dir)
        state, source = (read_state_dict(path), str(path)) if path else (_download(arch), "torchvision download")
    else:
        state, source = read_state_dict(pretrained), str(Path(pretrained).expanduser())
    state = {k[4:] if k.startswith("net.") else k: v for k, v in state.items()}
    target = model.net.state_dict()
    if "fc.weight" in state and state["fc.weight"].shape != target["fc.weight"].shape:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # a new head for the new classes
    missing = sorted(set(target) - set(state) - {"fc.weight", "fc.bias"})
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError(f"weights from {source} do not fit {arch}: missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}, wrong shape {wrong[:3]}")
    model.net.load_state_dict(state, strict=False)
    return source


def frozen_modules(model: nn.Module, groups: int) -> list[nn.Module]:
    """The stem and the first ``groups`` residual groups of ``model`` (what the fine-tuning protocol freezes)."""
    if groups == 0:
        return []
    if isinstance(model, GroupedResNet):
        n = model.net
        stem, layers = [n.conv1, n.bn1], [n.layer1, n.layer2, n.layer3, n.layer4]
    elif hasattr(model, "stem"):
        stem, layers = [model.stem], list(model.groups)
    else:
        stem, layers = [], list(model.groups)
    if groups > len(layers):
        raise ValueError(f"freeze_groups={groups} but the model has {len(layers)} groups")
    return stem + layers[:groups]


def freeze(model: nn.Module, groups: int = 0, batch_norm: bool = False) -> None:
    """Stop gradients to the stem + first ``groups`` groups, and to every BN layer when ``batch_norm``."""
    for module in frozen_modules(model, groups):
        for p in module.parameters():
            p.requires_grad_(False)
    if batch_norm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(False)


def set_train_mode(model: nn.Module, groups: int = 0, batch_norm: bool = False) -> None:
    """``model.train()``, with frozen parts (and every BN layer when ``batch_norm``) kept in eval mode so their
    running statistics do not move."""
    model.train()
    for module in frozen_modules(model, groups):
        module.eval()
    if batch_norm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
