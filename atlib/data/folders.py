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

Reproducibility (see :func:`folder_batches`): the epoch's permutation and one
epoch seed are drawn eagerly from a CPU ``torch.Generator``; each sample's
random augmentation is then seeded by (epoch seed, position in the epoch), so
an epoch is a pure function of the generator state at the call, is the same
for any number of DataLoader workers and any split over ranks, and never
touches the caller's global RNG state.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .cifar import DataError

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
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_IMAGE_SIZE = 8

BBox = tuple[float, float, float, float]
Sample = tuple[Path, int, "BBox | None"]
Batch = tuple[torch.Tensor, torch.Tensor]

_FOLDER_HINT = "expected <root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg"
_CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "classes.txt",
)


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
        train_s, val_s, classes = _scan_cub(root)
    else:
        train_s, val_s, classes = _scan_image_folder(root)
    return FolderData(
        train=ImageListDataset(train_s, classes, train_tf),
        val=ImageListDataset(val_s, classes, eval_tf),
        classes=list(classes),
        kind=kind,
    )


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _scan_split(split_dir: Path) -> tuple[list[str], list[list[Path]]]:
    if not split_dir.is_dir():
        raise DataError(f"image folder {split_dir} not found ({_FOLDER_HINT})")
    class_dirs = sorted(
        (d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
    if not class_dirs:
        raise DataError(f"no class folders in {split_dir} ({_FOLDER_HINT})")
    files = []
    for d in class_dirs:
        imgs = sorted((p for p in d.rglob("*") if _is_image(p)), key=lambda p: p.relative_to(d).as_posix())
        if not imgs:
            raise DataError(f"no images in class folder {d} (extensions {' '.join(IMAGE_EXTENSIONS)})")
        files.append(imgs)
    return [d.name for d in class_dirs], files


def _scan_image_folder(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    if not root.is_dir():
        raise DataError(f"image folder root {root} not found ({_FOLDER_HINT})")
    train_classes, train_files = _scan_split(root / "train")
    val_classes, val_files = _scan_split(root / "val")
    if val_classes != train_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        diff = (
            f"first missing in val: {only_train[0]!r}" if only_train
            else f"first missing in train: {only_val[0]!r}"
        )
        raise DataError(
            f"class folders of {root / 'val'} differ from {root / 'train'}: "
            f"train has {len(train_classes)} classes, val has {len(val_classes)}; {diff}"
        )

    def samples(files: list[list[Path]]) -> list[Sample]:
        return [(p, y, None) for y, ps in enumerate(files) for p in ps]

    return samples(train_files), samples(val_files), train_classes


def _read_table(path: Path, ncols: int) -> dict[int, list[str]]:
    """``{id: [fields...]}`` from a whitespace-separated CUB metadata file."""
    if not path.is_file():
        raise DataError(f"CUB metadata file {path} not found")
    table: dict[int, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            # the last column (a path or class name) may in principle contain spaces
            parts = line.split(None, ncols - 1)
            try:
                if len(parts) != ncols:
                    raise ValueError
                key = int(parts[0])
            except ValueError:
                raise DataError(f"malformed line {lineno} in {path}: {line.strip()!r}") from None
            if key in table:
                raise DataError(f"duplicate id {key} on line {lineno} of {path}")
            table[key] = [s.strip() for s in parts[1:]]
    if not table:
        raise DataError(f"CUB metadata file {path} is empty")
    return table


def _lookup(table: dict[int, list[str]], key: int, path: Path) -> list[str]:
    try:
        return table[key]
    except KeyError:
        raise DataError(f"image id {key} missing from {path}") from None


def _scan_cub(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    if not root.is_dir():
        raise DataError(f"CUB root {root} not found (expected the CUB_200_2011 directory)")
    if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
        root = root / "CUB_200_2011"
    paths = {name: root / name for name in _CUB_FILES}
    for p in paths.values():
        if not p.is_file():
            raise DataError(f"CUB metadata file {p} not found")
    images = _read_table(paths["images.txt"], 2)
    labels = _read_table(paths["image_class_labels.txt"], 2)
    split = _read_table(paths["train_test_split.txt"], 2)
    boxes = _read_table(paths["bounding_boxes.txt"], 5)
    class_tab = _read_table(paths["classes.txt"], 2)

    k = len(class_tab)
    if sorted(class_tab) != list(range(1, k + 1)):
        raise DataError(f"class ids in {paths['classes.txt']} must be 1..{k}")
    classes = [class_tab[i][0] for i in range(1, k + 1)]

    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DataError(f"CUB image directory {image_dir} not found")
    train: list[Sample] = []
    val: list[Sample] = []
    for img_id in sorted(images):
        rel = images[img_id][0]
        path = image_dir / rel
        if not path.is_file():
            raise DataError(f"CUB image {path} not found (listed as id {img_id} in {paths['images.txt']})")
        try:
            label = int(_lookup(labels, img_id, paths["image_class_labels.txt"])[0])
        except ValueError:
            raise DataError(f"bad class label for image id {img_id} in {paths['image_class_labels.txt']}") from None
        if not 1 <= label <= k:
            raise DataError(
                f"class {label} of image id {img_id} in {paths['image_class_labels.txt']} not in 1..{k}"
            )
        flag = _lookup(split, img_id, paths["train_test_split.txt"])[0]
        if flag not in ("0", "1"):
            raise DataError(f"bad is_training flag {flag!r} for image id {img_id} in {paths['train_test_split.txt']}")
        try:
            bbox = tuple(float(v) for v in _lookup(boxes, img_id, paths["bounding_boxes.txt"]))
        except ValueError:
            bbox = ()
        if len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
            raise DataError(f"bad bounding box for image id {img_id} in {paths['bounding_boxes.txt']}")
        (train if flag == "1" else val).append((path, label - 1, bbox))  # type: ignore[arg-type]
    for name, s in (("training", train), ("test", val)):
        if not s:
            raise DataError(f"no {name} images in {paths['train_test_split.txt']}")
    return train, val, classes


# --------------------------------------------------------------------------- batching


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
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(world_size) != world_size or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if int(rank) != rank or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
    if int(workers) != workers or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    batch_size, rank, world_size, workers = int(batch_size), int(rank), int(world_size), int(workers)
    n = len(dataset)  # type: ignore[arg-type]

    if not train:
        indices = list(range(n))[rank::world_size]
        batches = [indices[s:s + batch_size] for s in range(0, len(indices), batch_size)]
        # an explicit generator: DataLoader would otherwise draw its base seed from the global RNG
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),
            worker_init_fn=_worker_init,
        )
        return _iterate(loader)

    if batch_size % world_size != 0:
        raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
    if generator is None:
        raise ValueError("folder_batches(train=True) needs a CPU torch.Generator")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    perm = torch.randperm(n, generator=generator).tolist()
    epoch_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    b = batch_size // world_size
    batches = []
    for s in range(0, (n // batch_size) * batch_size, batch_size):
        lo = s + rank * b
        batches.append([(p, perm[p]) for p in range(lo, lo + b)])
    loader = DataLoader(
        _SeededItems(dataset, epoch_seed),
        batch_sampler=batches,
        num_workers=workers,
        generator=torch.Generator().manual_seed(epoch_seed + rank),
        worker_init_fn=_worker_init,
    )
    return _iterate(loader)


def _iterate(loader: DataLoader) -> Iterator[Batch]:
    for x, y in loader:
        yield x, y.to(torch.int64)
