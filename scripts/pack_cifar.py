"""Pack the CIFAR-10 python release losslessly into about 56% of its size, and unpack it bit-exactly.

Why: a lent GPU machine receives at most 64 MiB per call and cannot download. The six batch files (186 MB) packed
with this script (about 104 MB) travel in two calls instead of four.

How: each batch file is a pickle whose image bytes (10000 x 3 x 32 x 32 uint8, planar RGB) sit contiguously inside
it. The bytes around them (labels, file names, pickle opcodes) are kept as they are; the image bytes are replaced by
LOCO-I / JPEG-LS median-edge-detector residuals (each pixel minus the median of left, up and left+up-upleft), with
the red and blue residuals taken relative to the green one, all modulo 256, compressed with xz. Unpacking rebuilds
every file byte for byte and checks its MD5 (torchvision checks the same MD5s when it loads the files).

    python scripts/pack_cifar.py pack   ../shared/datasets/cifar-10-batches-py  .data/packed
    python scripts/pack_cifar.py unpack .data/packed  /tmp/cifar/cifar-10-batches-py   # any subset of parts

Packed files are ``<name>.cifarpack``: a JSON header line, then the prefix bytes, the suffix bytes and the xz
stream, whose lengths the header gives.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import pickle
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
SIDE_FILES = ("batches.meta", "readme.html")
SUFFIX = ".cifarpack"


def _neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left, up and up-left neighbours (zero outside the image) of int16 images (..., H, W)."""
    left = np.zeros_like(x)
    up = np.zeros_like(x)
    upleft = np.zeros_like(x)
    left[..., :, 1:] = x[..., :, :-1]
    up[..., 1:, :] = x[..., :-1, :]
    upleft[..., 1:, 1:] = x[..., :-1, :-1]
    return left, up, upleft


def _med(left, up, upleft):
    hi, lo = np.maximum(left, up), np.minimum(left, up)
    return np.where(upleft >= hi, lo, np.where(upleft <= lo, hi, left + up - upleft))


def encode(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> uint8 residuals of the same shape."""
    x = images.astype(np.int16)
    r = (x - _med(*_neighbours(x))) % 256
    r[:, 0] = (r[:, 0] - r[:, 1]) % 256
    r[:, 2] = (r[:, 2] - r[:, 1]) % 256
    return r.astype(np.uint8)


def decode(residuals: np.ndarray) -> np.ndarray:
    """Inverse of ``encode`` (pixel by pixel in raster order, vectorised over images and channels)."""
    r = residuals.astype(np.int16)
    r[:, 0] = (r[:, 0] + r[:, 1]) % 256
    r[:, 2] = (r[:, 2] + r[:, 1]) % 256
    n, c, h, w = r.shape
    x = np.zeros((n, c, h + 1, w + 1), dtype=np.int16)  # one row/column of zeros above and left
    for i in range(1, h + 1):
        for j in range(1, w + 1):
            left, up, upleft = x[:, :, i, j - 1], x[:, :, i - 1, j], x[:, :, i - 1, j - 1]
            x[:, :, i, j] = (_med(left, up, upleft) + r[:, :, i - 1, j - 1]) % 256
    return x[:, :, 1:, 1:].astype(np.uint8)


def pack_file(src: Path, dest_dir: Path) -> tuple[str, int, int]:
    raw = src.read_bytes()
    batch = pickle.loads(raw, encoding="bytes")
    images = np.ascontiguousarray(batch[b"data"]).reshape(-1, 3, 32, 32)
    body = images.tobytes()
    start = raw.find(body[:4096])
    if start < 0 or raw[start:start + len(body)] != body:
        raise SystemExit(f"{src}: image bytes are not stored contiguously; cannot pack this file")
    stream = lzma.compress(encode(images).tobytes(), preset=9 | lzma.PRESET_EXTREME)
    prefix, suffix = raw[:start], raw[start + len(body):]
    header = {"name": src.name, "md5": hashlib.md5(raw).hexdigest(), "shape": list(images.shape),
              "prefix": len(prefix), "suffix": len(suffix), "stream": len(stream)}
    out = dest_dir / (src.name + SUFFIX)
    out.write_bytes(json.dumps(header).encode() + b"\n" + prefix + suffix + stream)
    return src.name, len(raw), out.stat().st_size


def unpack_file(src: Path, dest_dir: Path) -> str:
    blob = src.read_bytes()
    line_end = blob.index(b"\n")
    header = json.loads(blob[:line_end])
    pos = line_end + 1
    prefix = blob[pos:pos + header["prefix"]]
    pos += header["prefix"]
    suffix = blob[pos:pos + header["suffix"]]
    pos += header["suffix"]
    residuals = np.frombuffer(lzma.decompress(blob[pos:pos + header["stream"]]), dtype=np.uint8)
    images = decode(residuals.reshape(header["shape"]))
    raw = prefix + images.tobytes() + suffix
    if hashlib.md5(raw).hexdigest() != header["md5"]:
        raise SystemExit(f"{src}: unpacked bytes do not match the original MD5 {header['md5']}")
    (dest_dir / header["name"]).write_bytes(raw)
    return header["name"]


def _copy_side_files(source: Path, dest: Path) -> None:
    for name in SIDE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", type=Path, help="cifar-10-batches-py (pack) or a folder of .cifarpack files")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"error: {args.source} is not a directory", file=sys.stderr)
        return 2
    args.dest.mkdir(parents=True, exist_ok=True)
    if args.action == "pack":
        missing = [n for n in BATCHES if not (args.source / n).is_file()]
        if missing:
            print(f"error: {args.source} lacks {missing}", file=sys.stderr)
            return 2
        _copy_side_files(args.source, args.dest)
        with ProcessPoolExecutor() as pool:
            for name, before, after in pool.map(pack_file, [args.source / n for n in BATCHES],
                                                [args.dest] * len(BATCHES)):
                print(f"{name}: {before:,} -> {after:,} bytes ({after / before:.1%})")
    else:
        parts = sorted(args.source.glob("*" + SUFFIX))
        if not parts:
            print(f"error: no {SUFFIX} files in {args.source}", file=sys.stderr)
            return 2
        _copy_side_files(args.source, args.dest)
        with ProcessPoolExecutor() as pool:
            for name in pool.map(unpack_file, parts, [args.dest] * len(parts)):
                print(f"{name}: unpacked, MD5 verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
