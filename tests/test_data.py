"""Tests for atlib.data: CIFAR-10 loading, the embedded sample, and batched augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import atlib.data.cifar as cifar_mod
from atlib.data import (
    CIFAR10_CLASSES,
    CIFAR_MEAN,
    CIFAR_STD,
    PAD,
    DataError,
    ImageSet,
    draw_epoch,
    eval_batches,
    load_cifar10,
    load_dataset,
    load_sample,
    normalize,
    num_batches,
    resolve_data_root,
    sample_path,
    to_device,
    train_batches,
)

MAX_SAMPLE_BYTES = 10_000_000


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def real(cifar_root):
    return load_dataset("cifar10", cifar_root)


@pytest.fixture(scope="module")
def sample():
    return load_sample()


@pytest.fixture
def toy():
    """200 random images whose labels are their ids (0..199), so every output can be traced."""
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (200, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(200), CIFAR10_CLASSES)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _collect(it):
    xs, ys = zip(*list(it))
    return list(xs), list(ys)


# ---------------------------------------------------------------- real CIFAR-10


def test_real_cifar_shapes_counts_classes(real):
    train, test = real
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and test.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.shape == (50000,)
    assert len(train) == 50000 and len(test) == 10000
    assert torch.bincount(train.labels, minlength=10).tolist() == [5000] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    assert train.classes == test.classes == CIFAR10_CLASSES
    assert train.images.is_contiguous()


def test_real_cifar_channels_first_matches_torchvision(real, cifar_root):
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(cifar_root), train=False, download=False)
    assert ds._check_integrity()
    _, test = real
    for i in (0, 1234, 9999):
        np.testing.assert_array_equal(test.images[i].permute(1, 2, 0).numpy(), ds.data[i])
        assert int(test.labels[i]) == ds.targets[i]


def test_corrupt_cifar_raises_without_download(cifar_root, tmp_path, monkeypatch):
    src = Path(cifar_root) / "cifar-10-batches-py"
    dst = tmp_path / "cifar-10-batches-py"
    dst.mkdir()
    for f in src.iterdir():
        if f.name == "test_batch":
            blob = bytearray(f.read_bytes())
            blob[-1] ^= 0xFF
            (dst / f.name).write_bytes(bytes(blob))
        else:
            (dst / f.name).symlink_to(f)
    monkeypatch.setattr(cifar_mod, "network_available", lambda *a, **k: False)
    with pytest.raises(DataError, match="not found or corrupt") as exc:
        load_cifar10(tmp_path)  # download=None, "no network"
    assert str(tmp_path) in str(exc.value)


# ---------------------------------------------------------------- embedded sample


def test_sample_file_size_and_layout(sample):
    assert sample_path().stat().st_size <= MAX_SAMPLE_BYTES
    train, test = sample
    for s in (train, test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 32, 32)
        assert s.labels.dtype == torch.int64 and s.labels.shape == (len(s),)
        assert s.classes == CIFAR10_CLASSES
    tr_counts = torch.bincount(train.labels, minlength=10).tolist()
    assert len(set(tr_counts)) == 1 and tr_counts[0] > 0, tr_counts  # class-balanced
    assert torch.bincount(test.labels, minlength=10).tolist() == [100] * 10
    assert len(test) == 1000
    assert load_dataset("sample")[0].images.equal(train.images)


def test_sample_matches_real_data_at_stored_indices(sample, real):
    with np.load(sample_path()) as z:
        tr_idx, te_idx = torch.from_numpy(z["train_indices"]), torch.from_numpy(z["test_indices"])
    assert len(tr_idx.unique()) == len(tr_idx) and len(te_idx.unique()) == len(te_idx)
    for s, r, idx in zip(sample, real, (tr_idx, te_idx)):
        assert torch.equal(s.images, r.images[idx])
        assert torch.equal(s.labels, r.labels[idx])


def test_load_sample_missing_file(monkeypatch, tmp_path):
    missing = tmp_path / "nope.npz"
    monkeypatch.setattr(cifar_mod, "sample_path", lambda: missing)
    with pytest.raises(DataError, match="nope.npz"):
        load_sample()


# ---------------------------------------------------------------- roots and errors


def test_resolve_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATLIB_DATA", raising=False)
    assert resolve_data_root() == tmp_path / "data"
    monkeypatch.setenv("ATLIB_DATA", "")  # empty counts as unset
    assert resolve_data_root() == tmp_path / "data"
    monkeypatch.setenv("ATLIB_DATA", "/env/root")
    assert resolve_data_root() == Path("/env/root")
    assert resolve_data_root("/arg/root") == Path("/arg/root")
    assert resolve_data_root(Path("rel")) == Path("rel")


def test_missing_root_raises_without_download(monkeypatch, tmp_path):
    from torchvision.datasets import CIFAR10

    calls = []
    monkeypatch.setattr(CIFAR10, "download", lambda self: calls.append("download"))
    monkeypatch.setattr(cifar_mod, "network_available", lambda *a, **k: calls.append("probe") or True)
    root = tmp_path / "empty"
    with pytest.raises(DataError) as exc:
        load_cifar10(root, download=False)
    msg = str(exc.value)
    assert str(root) in msg and str(root / "cifar-10-batches-py") in msg and "\n" not in msg
    assert calls == []  # neither a network probe nor a download

    monkeypatch.setenv("ATLIB_DATA", str(root))
    with pytest.raises(DataError, match="ATLIB_DATA"):
        load_dataset("cifar10", download=False)
    assert calls == []


def test_download_none_without_network_raises(monkeypatch, tmp_path):
    from torchvision.datasets import CIFAR10

    calls = []
    monkeypatch.setattr(CIFAR10, "download", lambda self: calls.append("download"))
    monkeypatch.setattr(cifar_mod, "network_available", lambda *a, **k: False)
    with pytest.raises(DataError, match="not found or corrupt"):
        load_cifar10(tmp_path / "x")
    assert calls == []


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="'imagenet'"):
        load_dataset("imagenet")


def test_imageset_validates():
    with pytest.raises(DataError):
        ImageSet(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError):
        ImageSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64))


# ---------------------------------------------------------------- batching / augmentation


def test_train_batch_shapes_and_dtypes(toy):
    xs, ys = _collect(train_batches(toy, 64, _gen(), "cpu"))
    assert [x.shape[0] for x in xs] == [64, 64, 64, 8]
    for x, y in zip(xs, ys):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and x.device.type == "cpu"
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)


def test_reproducible_and_resumable(toy):
    g = _gen(7)
    state = g.get_state()
    xs1, ys1 = _collect(train_batches(toy, 50, g, "cpu"))
    g2 = torch.Generator()
    g2.set_state(state)
    it = train_batches(toy, 50, g2, "cpu")
    torch.rand(10, generator=g2)  # draws after the call must not affect this epoch
    xs2, ys2 = _collect(it)
    assert all(torch.equal(a, b) for a, b in zip(xs1 + ys1, xs2 + ys2))
    # the next epoch differs from the first one
    xs3, _ = _collect(train_batches(toy, 50, g, "cpu"))
    assert not all(torch.equal(a, b) for a, b in zip(xs1, xs3))


def test_different_generator_states_differ(toy):
    xs1, ys1 = _collect(train_batches(toy, 200, _gen(1), "cpu"))
    xs2, ys2 = _collect(train_batches(toy, 200, _gen(2), "cpu"))
    assert not torch.equal(ys1[0], ys2[0])
    # same order, different augmentation
    ya = _collect(train_batches(toy, 200, _gen(1), "cpu", augment=False))[1][0]
    assert torch.equal(ya, ys1[0])


def _reference(img: torch.Tensor, dx: int, dy: int, flip: bool) -> torch.Tensor:
    padded = F.pad(img[None].float(), (PAD, PAD, PAD, PAD), mode="reflect")[0]
    crop = padded[:, dy:dy + 32, dx:dx + 32]
    return crop.flip(-1) if flip else crop


def test_crop_is_true_crop_of_reflect_padded_image(toy):
    g = _gen(3)
    draws = draw_epoch(len(toy), torch.Generator().set_state(g.get_state()))
    xs, ys = _collect(train_batches(toy, 64, g, "cpu"))
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(y, draws.perm)
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    used = set()
    for pos in range(len(toy)):
        dx, dy = draws.offsets[pos].tolist()
        flip = bool(draws.flips[pos])
        used.add((dx, dy, flip))
        ref = (_reference(toy.images[int(y[pos])], dx, dy, flip) / 255 - mean) / std
        torch.testing.assert_close(x[pos], ref, rtol=0, atol=1e-5)
    assert len(used) > 50  # many distinct crops/flips were exercised


def test_offset_and_flip_distribution():
    n = 81 * 200
    d = draw_epoch(n, _gen(11))
    assert d.offsets.min() == 0 and d.offsets.max() == 2 * PAD
    counts = torch.bincount(d.offsets[:, 0] * 9 + d.offsets[:, 1], minlength=81)
    assert counts.numel() == 81 and counts.min() > 100 and counts.max() < 300, counts
    frac = d.flips.float().mean().item()
    assert 0.48 < frac < 0.52
    assert sorted(d.perm.tolist()) == list(range(n))
    # independence of dx and dy: each dx bin is ~uniform over dy as well (loose)
    assert (counts.view(9, 9).sum(1) - 1800).abs().max() < 300


def test_normalization_matches_formula():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=torch.float64).view(1, 3, 1, 1)
    ref = (x.double() / 255 - mean) / std
    out = normalize(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    assert CIFAR_MEAN[0] == pytest.approx(125.3 / 255) and CIFAR_STD[2] == pytest.approx(66.7 / 255)


def test_eval_batches_in_order_once(toy):
    xs, ys = _collect(eval_batches(toy, 64, "cpu"))
    assert [x.shape[0] for x in xs] == [64, 64, 64, 8]
    assert torch.equal(torch.cat(ys), toy.labels)
    assert torch.equal(torch.cat(xs), normalize(toy.images))


@pytest.mark.parametrize("augment,flip_only", [(True, False), (False, False), (True, True)])
def test_every_example_once_per_epoch(toy, augment, flip_only):
    g = _gen(5)
    for _ in range(2):
        ys = _collect(train_batches(toy, 48, g, "cpu", augment=augment, flip_only=flip_only))[1]
        assert sorted(torch.cat(ys).tolist()) == list(range(len(toy)))


def test_drop_last(toy):
    ys = _collect(train_batches(toy, 64, _gen(), "cpu", drop_last=True))[1]
    assert [len(y) for y in ys] == [64, 64, 64] == [64] * num_batches(200, 64, drop_last=True)
    ys = _collect(train_batches(toy, 64, _gen(), "cpu", drop_last=False))[1]
    assert [len(y) for y in ys] == [64, 64, 64, 8] and num_batches(200, 64) == 4
    ys = _collect(train_batches(toy, 50, _gen(), "cpu", drop_last=True))[1]
    assert sum(len(y) for y in ys) == 200
    with pytest.raises(ValueError):
        train_batches(toy, 0, _gen(), "cpu")


def test_flip_only_and_no_augment(toy):
    g = _gen(9)
    draws = draw_epoch(len(toy), torch.Generator().set_state(g.get_state()), crop=False)
    xs, ys = _collect(train_batches(toy, 200, g, "cpu", flip_only=True))
    x, y = xs[0], ys[0]
    orig = normalize(toy.images[y])
    flipped = draws.flips
    assert 0 < int(flipped.sum()) < len(toy)
    assert torch.equal(x[~flipped], orig[~flipped])
    assert torch.equal(x[flipped], orig[flipped].flip(-1))
    xs, ys = _collect(train_batches(toy, 200, _gen(9), "cpu", augment=False))
    assert torch.equal(xs[0], normalize(toy.images[ys[0]]))


def test_to_device_copies_once(toy):
    assert to_device(toy, "cpu") is toy
    a = to_device(toy, "meta")
    assert a.images.device.type == "meta" and to_device(toy, "meta") is a


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches(toy):
    cpu = _collect(train_batches(toy, 64, _gen(4), "cpu"))
    gpu = _collect(train_batches(toy, 64, _gen(4), "cuda"))
    for a, b in zip(cpu[0] + cpu[1], gpu[0] + gpu[1]):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-6)
    ev = _collect(eval_batches(toy, 64, "cuda"))
    assert torch.equal(torch.cat(ev[1]).cpu(), toy.labels)
