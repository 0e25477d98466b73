#!/usr/bin/env python
"""Build atlib/data/cifar10_sample.npz: a small, class-balanced, seeded CIFAR-10 subset.

Takes TRAIN_PER_CLASS (default 300) training images per class from the official
training set and TEST_PER_CLASS (100) test images per class from the test set.
If the compressed file exceeds MAX_BYTES, the train count per class is lowered
(step 10, still class-balanced; test count kept) until it fits. Selection is a
pure function of the seed: per class, a seeded permutation of that class's
indices, of which the first k are taken (so smaller samples are subsets of
larger ones). Source indices are stored for provenance.

Usage: python scripts/build_sample.py [--data-root DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atlib.data.cifar import load_cifar10, load_sample, sample_path  # noqa: E402

SEED = 20170101
TRAIN_PER_CLASS = 300
TEST_PER_CLASS = 100
MAX_BYTES = 10_000_000  # "10 MB", decimal (stricter than 10 MiB)
STEP = 10


def default_data_root() -> Path:
    env = os.environ.get("ATLIB_DATA", "")
    return Path(env) if env.strip() else REPO.parent / "shared" / "datasets"


def class_orders(labels: np.ndarray, n_classes: int, seed: int) -> list[np.ndarray]:
    """Per class, that class's source indices in a seeded random order."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]


def pick(orders: list[np.ndarray], per_class: int) -> np.ndarray:
    if any(len(o) < per_class for o in orders):
        raise SystemExit(f"not enough images for {per_class} per class")
    return np.sort(np.concatenate([o[:per_class] for o in orders]))


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed, but byte-reproducible: the zip entries get a fixed timestamp."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    # rewrite the archive with fixed timestamps (savez stamps entries with the current time)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="directory holding cifar-10-batches-py")
    ap.add_argument("--out", default=str(sample_path()), help="output .npz path")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS)
    ap.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    args = ap.parse_args(argv)

    root = Path(args.data_root) if args.data_root else default_data_root()
    train, test = load_cifar10(root, download=False)
    tr_x, tr_y = train.images.numpy(), train.labels.numpy()
    te_x, te_y = test.images.numpy(), test.labels.numpy()
    n_classes = len(train.classes)

    # independent, fixed streams for the two splits
    tr_orders = class_orders(tr_y, n_classes, args.seed)
    te_orders = class_orders(te_y, n_classes, args.seed + 1)
    te_idx = pick(te_orders, args.test_per_class)

    per_class = args.train_per_class
    while True:
        tr_idx = pick(tr_orders, per_class)
        arrays = {
            "train_images": tr_x[tr_idx],
            "train_labels": tr_y[tr_idx].astype(np.int64),
            "test_images": te_x[te_idx],
            "test_labels": te_y[te_idx].astype(np.int64),
            "classes": np.array(train.classes),  # fixed-width unicode, no pickle needed
            "train_indices": tr_idx.astype(np.int64),
            "test_indices": te_idx.astype(np.int64),
            "seed": np.array(args.seed, dtype=np.int64),
        }
        blob = encode(arrays)
        print(f"train {per_class}/class ({len(tr_idx)}), test {args.test_per_class}/class "
              f"({len(te_idx)}): {len(blob):,} bytes")
        if len(blob) <= args.max_bytes:
            break
        per_class -= STEP
        if per_class < 1:
            raise SystemExit("cannot fit the sample under --max-bytes")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    print(f"wrote {out}: {out.stat().st_size:,} bytes "
          f"({out.stat().st_size / 1e6:.2f} MB), {len(tr_idx)} train / {len(te_idx)} test")

    if out.resolve() == sample_path().resolve():
        s_train, s_test = load_sample()
        assert len(s_train) == len(tr_idx) and len(s_test) == len(te_idx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
