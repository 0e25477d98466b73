"""CIFAR-10 data layer: loading (full set or embedded sample) and device-side batching."""

from .batches import (
    PAD,
    EpochDraws,
    augment,
    draw_epoch,
    eval_batches,
    normalize,
    num_batches,
    to_device,
    train_batches,
)
from .cifar import (
    CIFAR10_CLASSES,
    CIFAR_MEAN,
    CIFAR_STD,
    DATASET_NAMES,
    DataError,
    ImageSet,
    load_cifar10,
    load_dataset,
    load_sample,
    resolve_data_root,
    sample_path,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASET_NAMES",
    "DataError",
    "EpochDraws",
    "ImageSet",
    "PAD",
    "augment",
    "draw_epoch",
    "eval_batches",
    "load_cifar10",
    "load_dataset",
    "load_sample",
    "normalize",
    "num_batches",
    "resolve_data_root",
    "sample_path",
    "to_device",
    "train_batches",
]
