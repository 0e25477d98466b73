"""CIFAR-10 loading: the full dataset (via torchvision) and the embedded sample.

Images are kept as uint8 tensors in channels-first layout (N, 3, 32, 32);
normalisation and augmentation happen batch-wise in :mod:`atlib.data.batches`.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..paths import DEFAULT_DATA

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DataError",
    "ImageSet",
    "load_cifar10",
    "load_dataset",
    "load_sample",
    "network_available",
    "resolve_data_root",
    "sample_path",
]

# Per-channel mean/std of the CIFAR-10 training set, as used by the authors
# (attention-transfer/cifar.py: mean=[125.3, 123.0, 113.9], std=[63.0, 62.1, 66.7]).
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

CIFAR10_FOLDER = "cifar-10-batches-py"
ENV_VAR = "ATLIB_DATA"
DATASET_NAMES = ("cifar10", "sample")
SAMPLE_FILENAME = "cifar10_sample.npz"

_DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)


class DataError(Exception):
    """Any problem with the data: missing/corrupt files, bad names, bad arrays."""


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Directory holding ``cifar-10-batches-py``.

    Precedence: the argument if given, else the environment variable
    ``ATLIB_DATA`` (if set and non-empty), else ``./data`` (``paths.DEFAULT_DATA``) relative
    to the current working directory (returned as an absolute path).
    """
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env.strip():
        return Path(env).expanduser()
    return Path.cwd() / DEFAULT_DATA


@dataclass(eq=False)
class ImageSet:
    """A labelled image set: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = CIFAR10_CLASSES
    # device copies made by atlib.data.batches.to_device (keyed by device string)
    _device_cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        imgs, labels = self.images, self.labels
        if not isinstance(imgs, torch.Tensor) or not isinstance(labels, torch.Tensor):
            raise DataError(
                f"ImageSet needs torch tensors, got images={type(imgs).__name__}, "
                f"labels={type(labels).__name__}"
            )
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or tuple(imgs.shape[1:]) != (3, 32, 32):
            raise DataError(
                f"ImageSet images must be uint8 (N, 3, 32, 32), got {imgs.dtype} {tuple(imgs.shape)}"
            )
        if labels.dtype != torch.int64 or labels.dim() != 1 or labels.shape[0] != imgs.shape[0]:
            raise DataError(
                f"ImageSet labels must be int64 ({imgs.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
            )
        self.classes = tuple(str(c) for c in self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def network_available(timeout: float = 2.0) -> bool:
    """True if a TCP connection to the CIFAR-10 host succeeds within ``timeout``.

    Never raises; the name lookup is bounded too by running it in a daemon thread.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout):
                result.append(True)
        except Exception:
            result.append(False)

    try:
        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout + 0.5)
        return bool(result and result[0])
    except Exception:
        return False


def _from_torchvision(ds) -> ImageSet:
    data = np.asarray(ds.data)
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
        raise DataError(
            f"unexpected CIFAR-10 array under {ds.root}: {data.dtype} {data.shape}"
        )
    # NHWC -> NCHW in one vectorised copy (torchvision's array is a transposed view
    # of the NCHW pickled data, so this is usually free).
    images = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
    labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    return ImageSet(images=images, labels=labels, classes=tuple(ds.classes))


def _construct(root: Path, download: bool):
    from torchvision.datasets import CIFAR10

    train = CIFAR10(str(root), train=True, download=download)
    test = CIFAR10(str(root), train=False, download=False)
    return train, test


def load_cifar10(
    data_root: str | os.PathLike | None = None, download: bool | None = None
) -> tuple[ImageSet, ImageSet]:
    """Load the official CIFAR-10 release as (train, test) ImageSets.

    ``download``: True downloads when missing/corrupt, False never downloads,
    None downloads only if www.cs.toronto.edu is reachable. Files are always
    md5-checked by torchvision before use.
    """
    root = resolve_data_root(data_root)
    try:
        train, test = _construct(root, download=False)
    except (RuntimeError, OSError, EOFError, ValueError) as first_err:
        want = network_available() if download is None else bool(download)
        if not want:
            folder = root / CIFAR10_FOLDER
            raise DataError(
                f"CIFAR-10 not found or corrupt under {root} (expected {folder}); "
                f"pass --data-root or set {ENV_VAR}"
            ) from first_err
        try:
            root.mkdir(parents=True, exist_ok=True)
            train, test = _construct(root, download=True)
        except Exception as err:
            raise DataError(
                f"CIFAR-10 download into {root} failed: {_one_line(err)}"
            ) from err
    return _from_torchvision(train), _from_torchvision(test)


def sample_path() -> Path:
    """Location of the embedded class-balanced CIFAR-10 sample."""
    return Path(__file__).resolve().parent / SAMPLE_FILENAME


_SAMPLE_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "classes")


def load_sample() -> tuple[ImageSet, ImageSet]:
    """Load the embedded sample (a class-balanced subset of CIFAR-10) as (train, test)."""
    path = sample_path()
    if not path.is_file():
        raise DataError(
            f"embedded CIFAR-10 sample missing: {path} (rebuild with scripts/build_sample.py)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _SAMPLE_KEYS if k not in z.files]
            if missing:
                raise DataError(f"sample file {path} lacks arrays {missing}")
            arrays = {k: z[k] for k in _SAMPLE_KEYS}
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read sample file {path}: {_one_line(err)}") from err

    classes = tuple(str(c) for c in arrays["classes"].tolist())

    def make(split: str) -> ImageSet:
        imgs = np.ascontiguousarray(arrays[f"{split}_images"])
        labels = np.asarray(arrays[f"{split}_labels"]).astype(np.int64)
        if imgs.dtype != np.uint8:
            raise DataError(f"sample file {path}: {split}_images has dtype {imgs.dtype}, expected uint8")
        return ImageSet(torch.from_numpy(imgs), torch.from_numpy(labels), classes)

    return make("train"), make("test")


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
) -> tuple[ImageSet, ImageSet]:
    """(train, test) for ``name`` in {"cifar10", "sample"}."""
    if name == "cifar10":
        return load_cifar10(data_root, download=download)
    if name == "sample":
        return load_sample()
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
