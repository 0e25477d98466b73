"""Reproducible, rank-sharded epochs of batches from an image-folder dataset (:func:`folder_batches`).

The epoch's permutation and one epoch seed are drawn eagerly from a CPU ``torch.Generator``; each sample's random
augmentation is then seeded by (epoch seed, position in the epoch), so an epoch is a pure function of the generator
state at the call, is the same for any number of DataLoader workers and any split over ranks, and never touches the
caller's global RNG state.
"""

from __future__ import annotations

import random
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["Batch", "folder_batches", "num_train_batches", "sample_seed"]

Batch = tuple[torch.Tensor, torch.Tensor]


def num_train_batches(n: int, batch_size: int) -> int:
    """Global batches per training epoch of ``n`` samples (the last partial one is dropped)."""
    return int(n) // int(batch_size)


_MASK64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """The splitmix64 finaliser: a fixed bijective scramble of a 64-bit integer."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample_seed(epoch_seed: int, position: int) -> int:
    """Deterministic (hash-randomisation-free) 63-bit seed for one epoch position."""
    return _mix64(_mix64(int(epoch_seed) + 0x9E3779B97F4A7C15) ^ int(position)) >> 1


class _SeededItems(Dataset):
    """View of a dataset indexed by ``(position, index)``: item ``index`` is produced
    with torch's CPU RNG and Python's ``random`` seeded by ``(epoch_seed, position)``;
    both RNG states are restored afterwards."""

    def __init__(self, dataset: Dataset, epoch_seed: int) -> None:
        self.dataset = dataset
        self.epoch_seed = int(epoch_seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        position, index = key
        seed = sample_seed(self.epoch_seed, position)
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                # seed the CPU generator only (torch.manual_seed would also reseed CUDA)
                torch.random.default_generator.manual_seed(seed)
                random.seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)


def _worker_init(worker_id: int) -> None:
    # each worker decodes/transforms one image at a time: avoid thread oversubscription
    torch.set_num_threads(1)


def folder_batches(
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    train: bool = True,
) -> Iterator[Batch]:
    """One epoch of ``(x, y)`` CPU batches: x float32 (b, 3, S, S), y int64 (b,).

    ``train=True``: a permutation ``torch.randperm(len(dataset), generator=generator)``
    and an epoch seed ``int(torch.randint(0, 2**62, (1,), generator=generator))`` are
    drawn immediately (``generator``: a CPU ``torch.Generator``, required), so the
    epoch is a pure function of the generator state at the call. The permutation is
    cut into global batches of ``batch_size`` (the last partial one dropped); this
    rank yields the contiguous slice ``[rank * b, (rank + 1) * b)`` of each, with
    ``b = batch_size // world_size`` (``batch_size % world_size`` must be 0).

    Random augmentation: the sample at position ``p`` of the epoch's permutation is
    loaded and transformed inside ``torch.random.fork_rng`` with torch's CPU RNG and
    Python's ``random`` seeded by ``sample_seed(epoch_seed, p)``; their previous
    states are restored afterwards. Each sample's augmentation therefore depends
    only on (epoch seed, global position): it is identical for any ``workers`` and
    any ``world_size`` (the ranks' shards, concatenated, equal the single-process
    batch), and iterating leaves the caller's global RNG state untouched.

    ``train=False``: every sample once, in order, sharded as ``indices[rank::world_size]``
    and cut into batches of ``batch_size`` (the last may be smaller); no randomness,
    ``generator`` is ignored.
    """
    batch_size, rank, world_size, workers = _checked_counts(batch_size, rank, world_size, workers)
    n = len(dataset)  # type: ignore[arg-type]
    if not train:
        return _iterate(_eval_loader(dataset, n, batch_size, rank, world_size, workers))
    if batch_size % world_size != 0:
        raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
    _check_generator(generator)
    perm = torch.randperm(n, generator=generator).tolist()
    epoch_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    loader = DataLoader(
        _SeededItems(dataset, epoch_seed),
        batch_sampler=_train_shard(perm, batch_size, rank, world_size),
        num_workers=workers,
        generator=torch.Generator().manual_seed(epoch_seed + rank),
        worker_init_fn=_worker_init,
    )
    return _iterate(loader)


def _checked_counts(batch_size, rank, world_size, workers) -> tuple[int, int, int, int]:
    """``(batch_size, rank, world_size, workers)`` as ints; ValueError where one is out of range."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(world_size) != world_size or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if int(rank) != rank or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
    if int(workers) != workers or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    return int(batch_size), int(rank), int(world_size), int(workers)


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is None:
        raise ValueError("folder_batches(train=True) needs a CPU torch.Generator")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")


def _eval_loader(dataset: Dataset, n: int, batch_size: int, rank: int, world_size: int, workers: int) -> DataLoader:
    """Every sample once, in order, this rank's ``indices[rank::world_size]`` in batches of ``batch_size``."""
    indices = list(range(n))[rank::world_size]
    batches = [indices[s:s + batch_size] for s in range(0, len(indices), batch_size)]
    # an explicit generator: DataLoader would otherwise draw its base seed from the global RNG
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_worker_init,
    )


def _train_shard(perm: list[int], batch_size: int, rank: int, world_size: int) -> list[list[tuple[int, int]]]:
    """This rank's ``(position, index)`` pairs of each whole global batch of ``perm`` (the last partial one
    dropped): the contiguous slice ``[rank * b, (rank + 1) * b)``, ``b = batch_size // world_size``."""
    b = batch_size // world_size
    batches = []
    for s in range(0, (len(perm) // batch_size) * batch_size, batch_size):
        lo = s + rank * b
        batches.append([(p, perm[p]) for p in range(lo, lo + b)])
    return batches


def _iterate(loader: DataLoader) -> Iterator[Batch]:
    for x, y in loader:
        yield x, y.to(torch.int64)
