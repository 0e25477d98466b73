"""Any classifier as an atlib model: ``(logits, [feature maps at named nodes])``, for AT between your own networks.

``tap(model, nodes)`` wraps an ``nn.Module`` with torchvision's ``create_feature_extractor`` (FX graph nodes, no
hand-written hooks); the wrapped model returns its logits and the outputs of ``nodes`` in order, and exposes
``group_channels``, so the engine, the objectives (AT, KD, F-ActT), the attention maps and the figures take it as they
take a WRN. ``build_model("torchvision:<name>@<node>,<node>,...")`` names such a model in configurations and on the
command line (``torchvision:<name>`` alone takes ``DEFAULT_NODES`` for its family).

Student and teacher need the same number of nodes: AT pairs them in order. Maps that differ in size (other strides)
are compared after resizing both to the smaller (``losses.at_pair_losses``); AT sums over channels, so channel counts
need not match (F-ActT adds 1x1 adapters where they differ). Nodes are FX node names, e.g. ``layer2`` or
``features.8``: ``node_names(model)`` lists them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

PREFIX = "torchvision:"
_NAME = re.compile(r"^torchvision:([A-Za-z0-9_]+)(?:@(.+))?$")
# Nodes used when a name gives none: the three last stages that keep a spatial map at CIFAR's 32x32 input
DEFAULT_NODES = {
    "resnet": ("layer1", "layer2", "layer3"),
    "mobilenet_v3_small": ("features.1", "features.3", "features.8"),
    "mobilenet_v2": ("features.3", "features.6", "features.13"),
}
_LOGITS = "atlib_logits"


def classifier_names() -> list[str]:
    """torchvision's classification models."""
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def node_names(model: nn.Module) -> list[str]:
    """What ``tap`` accepts, in graph order: the FX nodes of ``model``'s training graph and the modules that hold
    them (``layer2`` stands for the last node inside it, e.g. ``layer2.1.relu_1``)."""
    from torchvision.models.feature_extraction import get_graph_node_names
    names: dict[str, None] = {}
    for node in get_graph_node_names(model)[0]:
        parts = node.split(".")
        for i in range(1, len(parts) + 1):
            names.setdefault(".".join(parts[:i]))
    return list(names)


class TappedModel(nn.Module):
    """``model`` returning ``(logits, [outputs of nodes])``. Its state dict is the wrapped model's under ``body.``
    (a teacher, ``engine.load_teacher``, may also be a plain torchvision state dict)."""

    def __init__(self, model: nn.Module, nodes: list[str] | tuple[str, ...], probe_size: int = 32):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor
        nodes = list(nodes)
        if not nodes:
            raise ValueError("a tapped model needs at least one node")
        valid = node_names(model)
        unknown = [n for n in nodes if n not in valid]
        if unknown:
            raise ValueError(f"unknown node(s) {unknown} of {type(model).__name__}; valid nodes: {', '.join(valid)}")
        self.nodes = nodes
        returns = {n: f"g{i}" for i, n in enumerate(nodes)}
        from torchvision.models.feature_extraction import get_graph_node_names
        returns[get_graph_node_names(model)[0][-1]] = _LOGITS  # the graph's last node is the model's output
        self.body = create_feature_extractor(model, return_nodes=returns)
        self.group_channels = self._probe_channels(probe_size)

    def _probe_channels(self, size: int) -> list[int]:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            _, groups = self(torch.zeros(1, 3, size, size))
        self.train(was_training)
        bad = [n for n, g in zip(self.nodes, groups) if g.dim() != 4]
        if bad:
            raise ValueError(f"node(s) {bad} do not give (batch, channels, height, width) maps")
        return [g.shape[1] for g in groups]

    def forward(self, x: torch.Tensor):
        out = self.body(x)
        return out[_LOGITS], [out[f"g{i}"] for i in range(len(self.nodes))]


def tap(model: nn.Module, nodes) -> TappedModel:
    """Wrap any classifier so that it returns ``(logits, [outputs of nodes])`` (see the module docstring)."""
    return TappedModel(model, nodes)


def parse_name(name: str) -> dict | None:
    """``"torchvision:resnet18@layer1,layer2"`` -> ``{"name": "resnet18", "nodes": ["layer1", "layer2"]}``; None if
    ``name`` is not a torchvision name; ValueError naming the model if torchvision has no such classifier or no
    default nodes for it."""
    if not name.startswith(PREFIX):
        return None
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"architecture {name!r}: expected torchvision:<model>[@<node>,<node>,...]")
    model, nodes = m.group(1), m.group(2)
    known = classifier_names()
    if model not in known:
        raise ValueError(f"unknown torchvision model {model!r}; valid models: {', '.join(known)}")
    if nodes:
        return {"name": model, "nodes": [n.strip() for n in nodes.split(",") if n.strip()]}
    family = next((f for f in DEFAULT_NODES if model == f or (f == "resnet" and model.startswith("resnet"))), None)
    if family is None:
        raise ValueError(f"torchvision model {model!r} has no default nodes: name them, e.g. "
                         f"torchvision:{model}@<node>,<node> (node_names lists them)")
    return {"name": model, "nodes": list(DEFAULT_NODES[family])}


def build(name: str, nodes: list[str], num_classes: int = 10) -> TappedModel:
    """A randomly initialised torchvision classifier (its own initialisation), tapped at ``nodes``."""
    import torchvision
    return tap(torchvision.models.get_model(name, weights=None, num_classes=num_classes), nodes)


def full_name(model: str, nodes: list[str] | None = None) -> str:
    """The architecture name of torchvision's ``model`` tapped at ``nodes``."""
    return f"{PREFIX}{model}" + (f"@{','.join(nodes)}" if nodes else "")
