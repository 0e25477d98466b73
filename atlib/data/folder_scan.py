"""Finding the samples of an image-folder dataset on disk: the ImageFolder layout (``root/train/<class>/*``,
``root/val/<class>/*``) and CUB-200-2011's metadata files (with bounding boxes). Each scan returns
``(train samples, val samples, class names)``, a sample being ``(path, label, bbox or None)``; any problem raises
:class:`DataError`."""

from __future__ import annotations

from pathlib import Path

from .cifar import DataError

__all__ = ["IMAGE_EXTENSIONS", "BBox", "Sample", "scan_image_folder", "scan_cub"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

BBox = tuple[float, float, float, float]
Sample = tuple[Path, int, "BBox | None"]

_FOLDER_HINT = "expected <root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg"
_CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "classes.txt",
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


def scan_image_folder(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """``root/train/<class>/*`` and ``root/val/<class>/*``: sorted class folders, sorted image files (searched
    recursively); the val classes must equal the train classes."""
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


def scan_cub(root: Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """The CUB_200_2011 directory (or one containing it): train = ``is_training_image`` 1, val = 0; every sample
    carries its bounding box."""
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

