"""Activation-based attention maps (paper section 3.1).

For an activation A of shape (C, H, W) with channels A_i:

    F_sum^p(A) = sum_i |A_i|^p        (kind="sum"; p=1 is the paper's F_sum)
    F_max^p(A) = max_i |A_i|^p        (kind="max")

Each is an H x W map. The transfer loss compares the vectorised maps Q after per-sample l2 normalisation
(``attention_vector``). Summing or averaging over channels gives the same normalised vector.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("sum", "max")


def check_attention_args(p: float, kind: str) -> None:
    """ValueError naming the bad value for p <= 0 (or non-finite) and unknown kinds."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
        raise ValueError(f"attention exponent p must be a positive number, got p={p!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; expected one of {KINDS}")


def attention_map(x: torch.Tensor, p: float = 2, kind: str = "sum") -> torch.Tensor:
    """(B, C, H, W) activation -> (B, H, W) map F_sum^p or F_max^p."""
    check_attention_args(p, kind)
    if x.dim() != 4:
        raise ValueError(f"attention_map expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    powered = x.abs().pow(p) if p != 2 else x * x  # x*x: same value, exact gradient at 0
    return powered.sum(dim=1) if kind == "sum" else powered.amax(dim=1)


def normalize_map(amap: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, H, W) map -> (B, H*W) vectors of unit l2 norm per sample (the paper's Q / ||Q||_2); (B, K, H, W) maps
    of K members trained side by side -> (B, K, H*W)."""
    return F.normalize(amap.flatten(-2), p=2, dim=-1, eps=eps)


def attention_vector(x: torch.Tensor, p: float = 2, kind: str = "sum") -> torch.Tensor:
    """(B, C, H, W) activation -> (B, H*W) normalised attention vector Q / ||Q||_2."""
    return normalize_map(attention_map(x, p=p, kind=kind))


def resize_map(amap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, H, W) map to ``size`` by area interpolation (average pooling for integer factors)."""
    if tuple(amap.shape[-2:]) == tuple(size):
        return amap
    return F.interpolate(amap.unsqueeze(1), size=size, mode="area").squeeze(1)


def attention_image(x: torch.Tensor, p: float = 2, kind: str = "sum", size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    """Attention map for display: upsampled (bilinear) to ``size`` (usually the input image size) and scaled to
    [0, 1] per sample. Returns a detached (B, *size) float tensor."""
    amap = attention_map(x.detach().float(), p=p, kind=kind).unsqueeze(1)
    amap = F.interpolate(amap, size=size, mode="bilinear", align_corners=False).squeeze(1)
    flat = amap.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(amap)
