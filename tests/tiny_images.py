"""Tiny on-disk image datasets for tests: an ImageFolder tree and a CUB_200_2011 tree.

Images are small, generated from a seeded numpy RNG, and class-dependent
(colour and stripe pattern) so a network could in principle learn them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["CUB_BBOX_MIN", "CUB_SIZES", "make_cub", "make_image_folder"]

# (width, height) of the CUB images, cycled; multiples of 8 keep JPEG blocks aligned with the bbox
CUB_SIZES = ((96, 80), (128, 112), (160, 96))
# every channel inside a CUB bbox is at least this bright (0..255); outside is 0
CUB_BBOX_MIN = 150

_PALETTE = np.array(
    [
        (220, 40, 40),
        (40, 200, 60),
        (50, 70, 230),
        (230, 200, 40),
        (200, 50, 210),
        (40, 200, 210),
        (240, 130, 30),
        (130, 130, 130),
    ],
    dtype=np.float64,
)


def _pattern(k: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (height, width, 3): class-``k`` colour modulated by class-specific stripes, plus noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    period = 6 + 4 * (k % 4)
    coord = xx if k % 2 == 0 else yy if k % 4 == 1 else xx + yy
    stripes = 0.6 + 0.4 * (np.sin(2 * np.pi * (coord + rng.uniform(0, period)) / period) > 0)
    img = _PALETTE[k % len(_PALETTE)][None, None, :] * stripes[..., None]
    img = img + rng.normal(0, 12, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_folder(
    root: str | Path,
    classes: Sequence[str] = ("a", "b", "c"),
    per_class_train: int = 6,
    per_class_val: int = 3,
    sizes: Sequence[tuple[int, int]] = ((64, 80), (120, 96), (224, 160)),
    seed: int = 0,
) -> Path:
    """Write ``root/{train,val}/<class>/<i>.png`` (sizes (width, height) cycled); return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    j = 0
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for k, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = sizes[j % len(sizes)]
                j += 1
                Image.fromarray(_pattern(k, w, h, rng)).save(d / f"{i}.png")
    return root


def make_cub(root: str | Path, classes: int = 3, per_class: int = 6, seed: int = 0) -> Path:
    """Write a CUB_200_2011-style tree under ``root`` and return ``root``.

    Each image is black except its bounding box (aligned to 8 pixels, strictly
    inside the image), which holds a bright class pattern (every channel >=
    CUB_BBOX_MIN). Images with index ``i % 3 == 2`` within their class are test
    images, the others (~2/3) training images.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"{c + 1:03d}.Bird_{chr(ord('a') + c % 26)}{c // 26 or ''}" for c in range(classes)]
    images, labels, split, boxes = [], [], [], []
    img_id = 0
    for c, cname in enumerate(names):
        d = root / "images" / cname
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img_id += 1
            w, h = CUB_SIZES[(img_id - 1) % len(CUB_SIZES)]
            bw = 8 * int(rng.integers(w // 16, (w - 16) // 8 + 1))
            bh = 8 * int(rng.integers(h // 16, (h - 16) // 8 + 1))
            bx = 8 * int(rng.integers(1, (w - bw) // 8))  # >= 8 and leaves >= 8 on the right
            by = 8 * int(rng.integers(1, (h - bh) // 8))
            img = np.zeros((h, w, 3), dtype=np.uint8)
            patch = _pattern(c, bw, bh, rng).astype(np.float64)
            bright = CUB_BBOX_MIN + 20 + patch * (255 - CUB_BBOX_MIN - 40) / 255.0
            img[by:by + bh, bx:bx + bw] = np.clip(bright, 0, 255).astype(np.uint8)
            rel = f"{cname}/{cname.split('.', 1)[1]}_{i + 1:04d}.jpg"
            Image.fromarray(img).save(root / "images" / rel, quality=95, subsampling=0)
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {c + 1}")
            split.append(f"{img_id} {0 if i % 3 == 2 else 1}")
            boxes.append(f"{img_id} {float(bx)} {float(by)} {float(bw)} {float(bh)}")
    files = {
        "images.txt": images,
        "image_class_labels.txt": labels,
        "train_test_split.txt": split,
        "bounding_boxes.txt": boxes,
        "classes.txt": [f"{c + 1} {n}" for c, n in enumerate(names)],
    }
    for fname, lines in files.items():
        (root / fname).write_text("\n".join(lines) + "\n")
    return root
