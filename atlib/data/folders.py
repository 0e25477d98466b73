"""Large-image data layer (paper Tables 4 and 5): image folders, CUB-200-2011, ImageNet.

Datasets are lists of ``(path, label, bbox)`` samples decoded with PIL on
access and transformed with torchvision's (v1) transforms; batches come from a
``torch.utils.data.DataLoader`` (optionally with worker processes).

Layouts (see :func:`load_folders`):

* ``"folder"`` / ``"imagenet"``: ``root/train/<class>/<images>`` and
  ``root/val/<class>/<images>`` (the torchvision ImageFolder layout; MIT Scenes
  and ImageNet are laid out like this).
* ``"cub"``: the ``CUB_200_2011`` directory as distributed (``images.txt``,
  ``image_class_labels.txt``, ``train_test_split.txt``, ``bounding_boxes.txt``,
  ``classes.txt``, ``images/``); every image is cropped to its bounding box
  before the transforms.

Scanning the layouts is in ``folder_scan``; reproducible, rank-sharded batches
(:func:`folder_batches`, re-exported here) in ``folder_epochs``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from .cifar import DataError
from .folder_epochs import folder_batches, num_train_batches, sample_seed
from .folder_scan import IMAGE_EXTENSIONS, BBox, Sample, scan_cub, scan_image_folder

__all__ = [
    "FOLDER_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "FolderData",
    "ImageListDataset",
    "class_counts",
    "folder_batches",
    "folder_transforms",
    "load_folders",
    "num_train_batches",
    "sample_seed",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_KINDS = ("folder", "cub", "imagenet")
MIN_IMAGE_SIZE = 8


# --------------------------------------------------------------------------- dataset


class ImageListDataset(Dataset):
    """Images listed as ``(path, label, bbox)``; ``bbox`` is ``(x, y, width, height)``
    in pixels (as in CUB's ``bounding_boxes.txt``) or None.

    ``ds[i]`` opens the file with PIL, converts it to RGB, crops it to the bbox
    (clamped to the image) if there is one, applies ``transform`` (``ToTensor``
    when None) and returns ``(float32 tensor (3, H, W), int label)``.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | os.PathLike, int, BBox | None]],
        classes: Sequence[str],
        transform: Callable | None = None,
    ) -> None:
        self.samples: list[Sample] = [
            (Path(p), int(y), None if b is None else tuple(float(v) for v in b))  # type: ignore[misc]
            for p, y, b in samples
        ]
        self.classes: list[str] = [str(c) for c in classes]
        self.transform = transform
        k = len(self.classes)
        for p, y, _ in self.samples:
            if not 0 <= y < k:
                raise DataError(f"label {y} of {p} out of range for {k} classes")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [y for _, y, _ in self.samples]

    def load_image(self, index: int):
        """The RGB PIL image of sample ``index``, cropped to its bbox (no transform)."""
        from PIL import Image

        path, _, bbox = self.samples[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {' '.join(str(e).split())}") from e
        if bbox is not None:
            x, y, w, h = bbox
            left, top = max(0, math.floor(x)), max(0, math.floor(y))
            right, bottom = min(img.width, math.ceil(x + w)), min(img.height, math.ceil(y + h))
            if right <= left or bottom <= top:
                raise DataError(
                    f"bounding box {bbox} of {path} lies outside the {img.width}x{img.height} image"
                )
            img = img.crop((left, top, right, bottom))
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.load_image(index)
        if self.transform is None:
            from torchvision.transforms.functional import to_tensor

            x = to_tensor(img)
        else:
            x = self.transform(img)
        return x, self.samples[index][1]

    def __repr__(self) -> str:
        return f"ImageListDataset({len(self)} samples, {len(self.classes)} classes)"


@dataclass(eq=False)
class FolderData:
    """Train and validation splits of one large-image dataset."""

    train: ImageListDataset
    val: ImageListDataset
    classes: list[str]
    kind: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def class_counts(dataset: ImageListDataset) -> dict[str, int]:
    """Number of samples per class name, in class order (zero counts included)."""
    counts = [0] * len(dataset.classes)
    for y in dataset.targets:
        counts[y] += 1
    return dict(zip(dataset.classes, counts))


# --------------------------------------------------------------------------- transforms


def folder_transforms(kind: str, image_size: int) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms for ``kind`` at ``image_size``.

    ``resize = round(image_size * 256 / 224)`` (shorter side). "folder"/"cub"
    train: Resize, RandomCrop, RandomHorizontalFlip; "imagenet" train:
    RandomResizedCrop, RandomHorizontalFlip; eval (all): Resize, CenterCrop.
    All end with ToTensor and Normalize(IMAGENET_MEAN, IMAGENET_STD).
    """
    from torchvision import transforms as T

    _check_kind(kind)
    _check_image_size(image_size)
    size = int(image_size)
    resize = round(size * 256 / 224)
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if kind == "imagenet":
        train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *tail])
    else:
        train = T.Compose([T.Resize(resize), T.RandomCrop(size), T.RandomHorizontalFlip(), *tail])
    evaluate = T.Compose([T.Resize(resize), T.CenterCrop(size), *tail])
    return train, evaluate


def _check_kind(kind: str) -> None:
    if kind not in FOLDER_KINDS:
        raise DataError(f"unknown image dataset kind {kind!r} (expected one of {', '.join(FOLDER_KINDS)})")


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < MIN_IMAGE_SIZE:
        raise DataError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")


# --------------------------------------------------------------------------- loading


def load_folders(root: str | os.PathLike, kind: str = "folder", image_size: int = 224) -> FolderData:
    """Load a large-image dataset of ``kind`` (one of :data:`FOLDER_KINDS`) from ``root``.

    "folder"/"imagenet": ``root/train/<class>/*`` and ``root/val/<class>/*``
    (sorted class folders, sorted files with extensions IMAGE_EXTENSIONS,
    case-insensitive, searched recursively); the val classes must equal the
    train classes. "cub": ``root`` is the CUB_200_2011 directory (or a
    directory containing it); train = ``is_training_image`` 1, val = 0; every
    sample carries its bounding box. Raises :class:`DataError` on any problem.
    """
    _check_kind(kind)
    _check_image_size(image_size)
    train_tf, eval_tf = folder_transforms(kind, image_size)
    root = Path(root).expanduser()
    if kind == "cub":
        train_s, val_s, classes = scan_cub(root)
    else:
        train_s, val_s, classes = scan_image_folder(root)
    return FolderData(
        train=ImageListDataset(train_s, classes, train_tf),
        val=ImageListDataset(val_s, classes, eval_tf),
        classes=list(classes),
        kind=kind,
    )

