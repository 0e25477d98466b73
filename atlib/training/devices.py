"""Where and how a run computes: the device, the precision, the optimizer, and the optional faster execution paths
(CUDA graphs, channels-last, ``torch.compile``). None of these is part of a run's identity: a run may change them at
an epoch boundary (its metrics record each epoch's)."""

from __future__ import annotations

import contextlib
import platform

import torch
from torch import nn

from ..objective import Objective
from .distributed import Dist
from .provenance import device_name, provenance


class TrainingError(RuntimeError):
    """A run cannot proceed (diverged, missing teacher, ...); the message says which and why."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, else MPS, else the CPU; a named device that is not there is a TrainingError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TrainingError(f"device {name!r} requested but MPS is not available")
    return device


def autocast(device: torch.device, precision: str):
    """The forward's precision context: bf16 autocast for ``precision`` "bf16", else nothing."""
    if precision == "bf16":  # no weight-cast cache: a CUDA graph must not capture cached casts
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def make_optimizer(params, config, device: torch.device, fused: bool | None = None) -> torch.optim.SGD:
    """The authors' SGD (momentum, weight decay). ``fused`` (None: on CUDA) updates all parameters in one kernel
    instead of a few multi-tensor launches; same arithmetic (bit-identical to the default on CPU in float64)."""
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           fused=device.type == "cuda" if fused is None else fused)


def graph_wanted(graph: bool | None, device: torch.device, ctx: Dist, source) -> bool:
    """Capture the step as a CUDA graph? ``graph`` None (auto): on a single CUDA process with device-resident
    CIFAR data. True where impossible is an error."""
    possible = device.type == "cuda" and not ctx.enabled and source.resident
    if graph and not possible:
        raise TrainingError(f"CUDA graphs need one CUDA process and CIFAR data (device {device}, "
                            f"{ctx.world_size} processes, dataset {source.config.dataset})")
    return possible if graph is None else bool(graph)


def channels_last_wanted(channels_last: bool | None, device: torch.device, source) -> bool:
    """Keep activations channels-last (NHWC)? None (auto): on CUDA with CIFAR data, where cuDNN's NHWC kernels
    measured 1.3-1.4x faster for single runs on an H200. Same arithmetic, another memory layout."""
    if channels_last is None:
        return device.type == "cuda" and source.resident
    if channels_last and not source.resident:
        raise TrainingError("channels_last is implemented for CIFAR data only")
    return bool(channels_last)


def compile_models(objective: Objective, *models: nn.Module | None) -> None:
    """Compile the models' forward in place with ``torch.compile`` (Inductor fuses BatchNorm, ReLU and the
    additions; the state dict keeps its names). TrainingError, before anything is compiled, for an objective built on
    input gradients: compiled graphs do not support the double backpropagation of Table 3's terms."""
    needs_grad = [n for n, t in objective.terms.items() if t.needs_student_input_grad]
    if needs_grad:
        raise TrainingError(f"compile: the terms {needs_grad} backpropagate through an input gradient, which "
                            f"torch.compile does not support; train this run without compiling (--compile)")
    for model in models:
        if model is not None:
            model.compile()


def environment(device: torch.device, precision: str, processes: int, cuda_graph: bool, channels_last: bool,
                compiled: bool, **extra) -> dict:
    """What every metrics line and record says about where and how its epoch ran (``provenance`` included)."""
    return {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "python": platform.python_version(), "processes": processes, "cuda_graph": cuda_graph,
            "channels_last": channels_last, "compiled": compiled, **provenance(device, precision), **extra}
