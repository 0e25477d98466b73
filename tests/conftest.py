"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

from atlib.paths import REPO_ROOT


def _has_cifar(root) -> bool:
    return bool(root) and (Path(root) / "cifar-10-batches-py").is_dir()


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """Directory holding cifar-10-batches-py: $ATLIB_DATA, else <repo>/../shared/datasets; else skip."""
    env = os.environ.get("ATLIB_DATA", "").strip()
    if env and _has_cifar(env):
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "datasets"
    if _has_cifar(shared):
        return shared
    pytest.skip("CIFAR-10 not available (set ATLIB_DATA to a directory holding cifar-10-batches-py)")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny ImageFolder tree (3 classes, 6 train + 3 val PNGs each, varied sizes)."""
    from tiny_images import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("tiny_folder"))


@pytest.fixture(scope="session")
def tiny_cub(tmp_path_factory) -> Path:
    """A tiny CUB_200_2011 tree (3 classes x 6 JPEGs, bright bbox on black)."""
    from tiny_images import make_cub

    return make_cub(tmp_path_factory.mktemp("tiny_cub") / "CUB_200_2011")


@pytest.fixture
def float64(monkeypatch):
    """Train in float64 (models and batches): comparisons of two training paths then test the math, not float32
    rounding, which tiny runs at lr 0.1 amplify to percent-level weight differences within a few steps."""
    import torch

    import atlib.data.batches as batches
    normalize = batches.normalize
    monkeypatch.setattr(batches, "normalize", lambda x: normalize(x).double())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def float64_untied(float64, monkeypatch):
    """``float64`` plus a fixed pattern (up to 1e-3) added to every normalised pixel, so no two activations tie.
    Saturated regions of CIFAR images (runs of 255) give exactly equal activations, and max pooling breaks an exact
    tie by position: two training paths whose rounding differs by 1e-16 may send a gradient to different, equally
    valued positions. Weight gradients cannot tell (the input patches are equal), but input gradients can, and the
    symmetry norm compares J(x) with the mirror of J(flip(x)) position by position. Measured for Table 3's cohort
    against separate runs after 4 steps on an AMD EPYC: 1.3e-7 without the pattern, 2e-16 with it."""
    import torch

    import atlib.data.batches as batches
    pattern = ((torch.arange(3 * 32 * 32, dtype=torch.float64) * 0.6180339887) % 1).reshape(3, 32, 32) * 1e-3
    normalize = batches.normalize
    monkeypatch.setattr(batches, "normalize", lambda x: normalize(x) + pattern.to(x.device))
