"""A run's data: the training batches of an epoch and the test batches, whichever the dataset.

- ``CifarSource``: CIFAR-10 (or the embedded sample) resident on the device, augmented there in batches.
- ``FolderSource``: image folders (``folder``, ``cub``, ``imagenet``) read by a DataLoader.

Both split global batches over the processes of a distributed run (``Dist``) and say how many classes and training
images there are."""

from __future__ import annotations

import torch

from ..data import (FOLDER_KINDS, ImageSet, eval_batches, folder_batches, load_dataset, load_folders, to_device,
                    train_batches)
from .config import RunConfig
from .devices import TrainingError
from .distributed import Dist


def _subset(data: ImageSet, n: int | None) -> ImageSet:
    return data if n is None else ImageSet(data.images[:n], data.labels[:n], data.classes)


class CifarSource:
    """CIFAR-10 (or the embedded sample) resident on the device, augmented there in batches."""

    resident = True  # the whole dataset lives on the device: a CUDA graph can take its batches

    def __init__(self, config: RunConfig, device: torch.device, ctx: Dist):
        train_set, test_set = load_dataset(config.dataset, config.data_root)
        train_set, test_set = _subset(train_set, config.train_subset), _subset(test_set, config.test_subset)
        self.train, self.config, self.device, self.ctx = to_device(train_set, device), config, device, ctx
        self.test = to_device(ImageSet(test_set.images[ctx.rank::ctx.world_size],
                                       test_set.labels[ctx.rank::ctx.world_size], test_set.classes), device)
        self.num_classes, self.num_train = len(train_set.classes), len(train_set)
        self.memory_format = torch.contiguous_format  # the engine sets channels_last where wanted

    def train_batches(self, generator: torch.Generator):
        c, ctx = self.config, self.ctx
        local = c.batch_size // ctx.world_size
        for x, y in train_batches(self.train, c.batch_size, generator, self.device, augment=c.augment != "none",
                                  flip_only=c.augment == "flip", drop_last=ctx.enabled,
                                  memory_format=self.memory_format):
            yield (x[ctx.rank * local:(ctx.rank + 1) * local], y[ctx.rank * local:(ctx.rank + 1) * local]) \
                if ctx.enabled else (x, y)

    def eval_batches(self):
        return eval_batches(self.test, self.config.eval_batch_size, self.device, self.memory_format)


class FolderSource:
    """Image folders (``folder``, ``cub``, ``imagenet``) read by a DataLoader; global batches split over ranks."""

    resident = False

    def __init__(self, config: RunConfig, device: torch.device, ctx: Dist):
        if config.data_root is None:
            raise TrainingError(f"dataset {config.dataset!r} needs a data root (--data-root): the folder holding "
                                f"{'CUB_200_2011 files' if config.dataset == 'cub' else 'train/ and val/'}")
        if config.train_subset is not None or config.test_subset is not None:
            raise TrainingError("train_subset/test_subset apply to CIFAR-10 only; make a smaller image folder instead")
        data = load_folders(config.data_root, config.dataset, config.image_size)
        self.train, self.val, self.config, self.device, self.ctx = data.train, data.val, config, device, ctx
        self.num_classes, self.num_train = data.num_classes, len(data.train)
        if self.num_train < config.batch_size:
            raise TrainingError(f"{config.data_root} has {self.num_train} training images, fewer than one batch "
                                f"of {config.batch_size}")

    def _to_device(self, batches):
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, generator: torch.Generator):
        return self._to_device(folder_batches(self.train, self.config.batch_size, generator, self.ctx.rank,
                                              self.ctx.world_size, self.config.workers, train=True))

    def eval_batches(self):
        return self._to_device(folder_batches(self.val, self.config.eval_batch_size, None, self.ctx.rank,
                                              self.ctx.world_size, self.config.workers, train=False))


def make_source(config: RunConfig, device: torch.device, ctx: Dist = Dist()):
    """The data of ``config`` on ``device`` (image folders or CIFAR-10)."""
    if ctx.enabled and config.batch_size % ctx.world_size:
        raise TrainingError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes")
    return (FolderSource if config.dataset in FOLDER_KINDS else CifarSource)(config, device, ctx)
