"""Device-side batching with the authors' CIFAR augmentation as batched tensor ops.

No DataLoader, no worker processes, no PIL: the uint8 dataset is copied to the
target device once (:func:`to_device`), each batch is gathered there, augmented
with one vectorised gather (reflect-pad 4 + random 32x32 crop + random
horizontal flip) and normalised with the authors' mean/std.

All randomness for an epoch (permutation, crop offsets, flip flags) is drawn
eagerly on a CPU ``torch.Generator`` when :func:`train_batches` is called, so
the batches are a pure function of the generator state at that moment and are
identical on every device; saving ``generator.get_state()`` between epochs is
enough to resume a run with identical batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .cifar import CIFAR_MEAN, CIFAR_STD, ImageSet

__all__ = [
    "PAD",
    "EpochDraws",
    "augment",
    "draw_epoch",
    "eval_batches",
    "normalize",
    "num_batches",
    "to_device",
    "train_batches",
]

PAD = 4  # pixels of reflect padding on each side; crop offsets are uniform in 0..2*PAD
SIZE = 32

Batch = tuple[torch.Tensor, torch.Tensor]


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def to_device(data: ImageSet, device: torch.device | str) -> ImageSet:
    """``data`` with its tensors on ``device``; the copy is made once and cached on ``data``.

    The cache assumes ``data``'s tensors are not modified in place afterwards.
    """
    device = torch.device(device)
    key = _device_key(device)
    if _device_key(data.images.device) == key and _device_key(data.labels.device) == key:
        return data
    cached = data._device_cache.get(key)
    if cached is None:
        cached = ImageSet(
            images=data.images.to(device),
            labels=data.labels.to(device),
            classes=data.classes,
        )
        data._device_cache[key] = cached
    return cached


def _stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, std


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 ``(x / 255 - CIFAR_MEAN) / CIFAR_STD``."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize expects a uint8 tensor, got {x.dtype}")
    mean, std = _stats(x.device)
    return x.to(torch.float32).div_(255.0).sub_(mean).div_(std)


@dataclass(frozen=True)
class EpochDraws:
    """Random numbers for one epoch, all on the CPU.

    perm: int64 (n,) visiting order. offsets: int64 (n, 2) crop offsets (dx, dy)
    in 0..2*PAD, indexed by position in the epoch (not by example), or None.
    flips: bool (n,) horizontal-flip flags by position, or None.
    """

    perm: torch.Tensor
    offsets: torch.Tensor | None
    flips: torch.Tensor | None


def draw_epoch(n: int, generator: torch.Generator, crop: bool = True, flip: bool = True) -> EpochDraws:
    """Draw one epoch's randomness from ``generator`` (CPU), in a fixed order:
    permutation, then crop offsets (if ``crop``), then flip flags (if ``flip``)."""
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    perm = torch.randperm(n, generator=generator)
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator) if crop else None
    flips = torch.randint(0, 2, (n,), generator=generator).bool() if flip else None
    return EpochDraws(perm, offsets, flips)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    # reflect without repeating the edge pixel (== F.pad(mode="reflect")), for |overhang| < size
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def augment(x: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None) -> torch.Tensor:
    """Crop and/or flip a batch ``x`` (B, C, H, W) in a single batched gather.

    With ``offsets`` (B, 2) = (dx, dy): output pixel (i, j) of image b is pixel
    (i + dy, j + dx) of the image reflect-padded by PAD, i.e. a 32x32 crop of it.
    With ``flips`` (B,) bool: the (cropped) image is mirrored left-right.
    Works for any dtype; ``offsets``/``flips`` may live on any device.
    """
    if offsets is None and flips is None:
        return x
    b, c, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if offsets is not None:
        off = offsets.to(dev, non_blocking=True)
        rows = _reflect(rows + off[:, 1:2] - PAD, h)
        cols = _reflect(cols + off[:, 0:1] - PAD, w)
    if flips is not None:
        fl = flips.to(dev, non_blocking=True).view(b, 1)
        cols = torch.where(fl, cols.flip(1), cols)
    idx = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).reshape(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, idx).view(b, c, h, w)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def train_batches(
    data: ImageSet,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str,
    augment: bool = True,
    drop_last: bool = False,
    flip_only: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Iterator[Batch]:
    """One shuffled, augmented epoch of ``(x, y)`` on ``device``.

    x: float32 normalised (B, 3, 32, 32); y: int64 (B,). ``augment=False``
    shuffles only; ``flip_only=True`` flips without pad/crop. The epoch's random
    numbers are drawn from ``generator`` (CPU) immediately, before the first batch.
    """
    _check_batch_size(batch_size)
    dev_data = to_device(data, device)
    n = len(dev_data)
    draws = draw_epoch(n, generator, crop=augment and not flip_only, flip=augment)
    return _train_iter(dev_data, int(batch_size), draws, drop_last, memory_format)


_augment = augment


CHUNK_IMAGES = 8192  # images gathered, augmented and normalised per launch sequence (whole batches)


def _train_iter(data: ImageSet, batch_size: int, draws: EpochDraws, drop_last: bool,
                memory_format: torch.memory_format = torch.contiguous_format) -> Iterator[Batch]:
    # Augmentation is per image, so doing it for a chunk of batches at once gives the same batches with a few
    # kernel launches per chunk instead of per batch (the launches dominate small CIFAR steps on a GPU).
    n = len(data)
    dev = data.images.device
    perm = draws.perm.to(dev)
    stop = (n // batch_size) * batch_size if drop_last else n
    chunk = batch_size * max(1, CHUNK_IMAGES // batch_size)
    for cs in range(0, stop, chunk):
        ce = min(cs + chunk, stop)
        idx = perm[cs:ce]
        xs = normalize(_augment(
            data.images[idx],
            None if draws.offsets is None else draws.offsets[cs:ce],
            None if draws.flips is None else draws.flips[cs:ce],
        )).contiguous(memory_format=memory_format)
        ys = data.labels[idx]
        for s in range(0, ce - cs, batch_size):
            yield xs[s:s + batch_size], ys[s:s + batch_size]


def eval_batches(data: ImageSet, batch_size: int, device: torch.device | str,
                 memory_format: torch.memory_format = torch.contiguous_format) -> Iterator[Batch]:
    """The whole set in order, normalised and unaugmented, on ``device``."""
    _check_batch_size(batch_size)
    dev_data = to_device(data, device)
    return _eval_iter(dev_data, int(batch_size), memory_format)


def _eval_iter(data: ImageSet, batch_size: int,
               memory_format: torch.memory_format = torch.contiguous_format) -> Iterator[Batch]:
    n = len(data)
    for s in range(0, n, batch_size):
        yield normalize(data.images[s:s + batch_size]).contiguous(memory_format=memory_format), \
            data.labels[s:s + batch_size]
