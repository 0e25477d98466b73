"""Large-image data layer (atlib.data.folders): layouts, transforms, CUB bboxes, batching."""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_images import CUB_BBOX_MIN, make_image_folder
from torchvision import transforms as T

from atlib.data import (
    FOLDER_KINDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    FolderData,
    ImageListDataset,
    class_counts,
    folder_batches,
    load_folders,
    num_train_batches,
)
from atlib.data.folders import folder_transforms

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def seeded(seed, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def collect(it):
    xs, ys = zip(*list(it))
    return list(xs), list(ys)


# ------------------------------------------------------------------ folder layout


def test_constants():
    assert FOLDER_KINDS == ("folder", "cub", "imagenet")
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_folder_layout(tiny_folder):
    data = load_folders(tiny_folder, kind="folder", image_size=64)
    assert isinstance(data, FolderData)
    assert data.kind == "folder"
    assert data.classes == ["a", "b", "c"] and data.num_classes == 3
    assert data.train.classes == data.classes == data.val.classes
    assert class_counts(data.train) == {"a": 6, "b": 6, "c": 6}
    assert class_counts(data.val) == {"a": 3, "b": 3, "c": 3}
    assert data.train.targets == [0] * 6 + [1] * 6 + [2] * 6
    paths = [p for p, _, _ in data.train.samples]
    assert paths[:6] == sorted((tiny_folder / "train" / "a").glob("*.png"))
    assert all(b is None for _, _, b in data.train.samples + data.val.samples)


@pytest.mark.parametrize("image_size", [64, 224])
def test_item_shapes(tiny_folder, image_size):
    data = load_folders(tiny_folder, kind="folder", image_size=image_size)
    for ds in (data.train, data.val):
        for i in range(3):  # the first three images have three different sizes
            x, y = ds[i]
            assert x.dtype == torch.float32 and x.shape == (3, image_size, image_size)
            assert isinstance(y, int) and y == 0
    with Image.open(data.train.samples[0][0]) as a, Image.open(data.train.samples[1][0]) as b:
        assert a.size != b.size


def test_resize_is_256_over_224(tiny_folder):
    train_tf, eval_tf = folder_transforms("folder", 64)
    kinds = [type(t) for t in train_tf.transforms]
    assert kinds == [T.Resize, T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert [type(t) for t in eval_tf.transforms] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert train_tf.transforms[0].size == eval_tf.transforms[0].size == 73  # round(64 * 256 / 224)
    assert folder_transforms("folder", 224)[1].transforms[0].size == 256


def test_normalisation_of_white(tmp_path):
    path = tmp_path / "white.png"
    Image.new("RGB", (50, 40), (255, 255, 255)).save(path)
    _, eval_tf = folder_transforms("folder", 32)
    x, y = ImageListDataset([(path, 0, None)], ["w"], eval_tf)[0]
    expected = ((1 - MEAN) / STD).expand(3, 32, 32)
    assert y == 0
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)


def test_grey_png_converted_to_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (20, 20), 255).save(path)
    x, _ = ImageListDataset([(path, 0, None)], ["g"])[0]
    assert x.shape == (3, 20, 20) and torch.all(x == 1.0)


def test_eval_deterministic_train_random(tiny_folder):
    data = load_folders(tiny_folder, kind="folder", image_size=64)
    a = seeded(0, lambda: data.val[4][0])
    b = seeded(1, lambda: data.val[4][0])
    assert torch.equal(a, b)
    # the train transform is random (crop offset / flip), and seeded by torch's RNG
    t0 = seeded(0, lambda: data.train[2][0])
    assert torch.equal(t0, seeded(0, lambda: data.train[2][0]))
    assert not torch.equal(t0, seeded(1, lambda: data.train[2][0]))


# ------------------------------------------------------------------ CUB


def _read(root: Path, name: str) -> dict[int, list[str]]:
    out = {}
    for line in (root / name).read_text().splitlines():
        k, *rest = line.split()
        out[int(k)] = rest
    return out


def test_cub_split_labels_and_boxes(tiny_cub):
    data = load_folders(tiny_cub, kind="cub", image_size=32)
    assert data.kind == "cub" and data.num_classes == 3
    assert data.classes == [v[0] for _, v in sorted(_read(tiny_cub, "classes.txt").items())]
    images = _read(tiny_cub, "images.txt")
    split = _read(tiny_cub, "train_test_split.txt")
    labels = _read(tiny_cub, "image_class_labels.txt")
    boxes = _read(tiny_cub, "bounding_boxes.txt")

    def expected(flag):
        return [
            (tiny_cub / "images" / images[i][0], int(labels[i][0]) - 1, tuple(float(v) for v in boxes[i]))
            for i in sorted(images)
            if split[i][0] == flag
        ]

    assert data.train.samples == expected("1")
    assert data.val.samples == expected("0")
    assert len(data.train) == 12 and len(data.val) == 6
    assert class_counts(data.train) == dict.fromkeys(data.classes, 4)
    # the parent of CUB_200_2011 is accepted too
    parent = load_folders(tiny_cub.parent, kind="cub", image_size=32)
    assert parent.train.samples == data.train.samples


def test_cub_items_cropped_to_bbox(tiny_cub):
    data = load_folders(tiny_cub, kind="cub", image_size=32)
    for ds in (data.train, data.val):
        raw = ImageListDataset(ds.samples, ds.classes)  # ToTensor only
        for i in range(len(ds)):
            x, _ = raw[i]
            _, _, (bx, by, bw, bh) = ds.samples[i]
            assert x.shape == (3, int(bh), int(bw))
            assert x.min() >= (CUB_BBOX_MIN - 25) / 255
    # eval item: resize + centre crop of the bbox region -> bright everywhere, nothing black
    for i in range(len(data.val)):
        x, _ = data.val[i]
        assert x.shape == (3, 32, 32)
        img = unnormalize(x)
        assert img.min() > 0.4, i
    # control: without the bbox the same pipeline does show black background
    uncropped = ImageListDataset([(p, y, None) for p, y, _ in data.val.samples], data.classes, data.val.transform)
    assert min(float(unnormalize(uncropped[i][0]).min()) for i in range(len(uncropped))) < 0.1


def test_bbox_clamped_to_image(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (40, 30), (200, 200, 200)).save(path)
    x, _ = ImageListDataset([(path, 0, (30.0, -5.0, 50.0, 20.0))], ["c"])[0]
    assert x.shape == (3, 15, 10)
    with pytest.raises(DataError, match="outside"):
        ImageListDataset([(path, 0, (45.0, 0.0, 5.0, 5.0))], ["c"])[0]


@pytest.mark.parametrize("missing", ["bounding_boxes.txt", "train_test_split.txt"])
def test_cub_missing_file(tiny_cub, tmp_path, missing):
    root = Path(shutil.copytree(tiny_cub, tmp_path / "CUB_200_2011"))
    (root / missing).unlink()
    with pytest.raises(DataError, match=missing.replace(".", r"\.")) as e:
        load_folders(root, kind="cub")
    assert str(root) in str(e.value) and "\n" not in str(e.value)


def test_cub_missing_image(tiny_cub, tmp_path):
    root = Path(shutil.copytree(tiny_cub, tmp_path / "CUB_200_2011"))
    rel = _read(root, "images.txt")[5][0]
    (root / "images" / rel).unlink()
    with pytest.raises(DataError, match=rel.split("/")[-1]):
        load_folders(root, kind="cub")


# ------------------------------------------------------------------ imagenet kind


def test_imagenet_random_resized_crop(tiny_folder):
    data = load_folders(tiny_folder, kind="imagenet", image_size=32)
    assert [type(t) for t in data.train.transform.transforms][:2] == [T.RandomResizedCrop, T.RandomHorizontalFlip]
    assert [type(t) for t in data.val.transform.transforms][:2] == [T.Resize, T.CenterCrop]

    def two_epochs():
        return data.train[5][0], data.train[5][0]

    a, b = seeded(0, two_epochs)
    assert a.shape == b.shape == (3, 32, 32)
    # different crops, not merely a flip of each other
    assert not torch.equal(a, b) and not torch.equal(a, b.flip(-1))
    # through folder_batches: the same image differs between two epochs of one generator
    g = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        perm = torch.randperm(len(data.train), generator=_clone(g))
        x, _ = collect(folder_batches(data.train, 18, generator=g))
        epochs.append(x[0][perm.tolist().index(5)])
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(data.val[5][0], data.val[5][0])


def _clone(g: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


# ------------------------------------------------------------------ errors


def _small_folder(root: Path) -> Path:
    return make_image_folder(root, per_class_train=1, per_class_val=1, sizes=((16, 12),))


def test_error_missing_root(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        load_folders(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    with pytest.raises(DataError, match="not found") as e:
        load_folders(tmp_path / "nope", kind="cub")
    assert str(tmp_path / "nope") in str(e.value)


def test_error_missing_val(tmp_path):
    root = _small_folder(tmp_path / "d")
    shutil.rmtree(root / "val")
    with pytest.raises(DataError) as e:
        load_folders(root)
    msg = str(e.value)
    assert str(root / "val") in msg and "<root>/val/<class>" in msg and "\n" not in msg


def test_error_class_mismatch(tmp_path):
    root = _small_folder(tmp_path / "d")
    shutil.rmtree(root / "val" / "c")
    with pytest.raises(DataError) as e:
        load_folders(root)
    msg = str(e.value)
    assert "'c'" in msg and "3" in msg and "2" in msg
    # same count, different names
    (root / "val" / "b").rename(root / "val" / "z")
    (root / "val" / "c").mkdir()
    shutil.copy(root / "train" / "c" / "0.png", root / "val" / "c" / "0.png")
    with pytest.raises(DataError, match="'b'"):
        load_folders(root)


def test_error_empty_class_folder(tmp_path):
    root = _small_folder(tmp_path / "d")
    (root / "train" / "d").mkdir()
    (root / "train" / "d" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as e:
        load_folders(root)
    assert str(root / "train" / "d") in str(e.value)


def test_error_no_classes(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="no class folders") as e:
        load_folders(tmp_path)
    assert str(tmp_path / "train") in str(e.value)


def test_extensions_case_insensitive(tmp_path):
    root = _small_folder(tmp_path / "d")
    Image.new("RGB", (9, 9)).save(root / "train" / "a" / "X.JPEG", format="JPEG")
    (root / "train" / "a" / "readme.md").write_text("skip me")
    data = load_folders(root, image_size=8)
    assert [p.name for p, _, _ in data.train.samples] == ["0.png", "X.JPEG", "0.png", "0.png"]


def test_error_unknown_kind_and_size(tiny_folder):
    with pytest.raises(DataError, match="bogus"):
        load_folders(tiny_folder, kind="bogus")
    with pytest.raises(DataError, match="image_size"):
        load_folders(tiny_folder, image_size=4)


# ------------------------------------------------------------------ folder_batches


@pytest.fixture(scope="module")
def train32(tiny_folder):
    return load_folders(tiny_folder, kind="folder", image_size=32).train


def test_train_batches_reproducible_and_drop_last(train32):
    n = len(train32)  # 18
    assert num_train_batches(n, 4) == 4
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=_clone(g))
    xs, ys = collect(folder_batches(train32, 4, generator=g))
    assert len(xs) == 4
    assert all(x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 for x in xs)
    assert all(y.dtype == torch.int64 for y in ys)
    targets = torch.tensor(train32.targets)
    assert torch.equal(torch.cat(ys), targets[perm[:16]])

    xs2, ys2 = collect(folder_batches(train32, 4, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(xs + ys, xs2 + ys2))
    xs3, ys3 = collect(folder_batches(train32, 4, generator=torch.Generator().manual_seed(1)))
    assert not all(torch.equal(a, b) for a, b in zip(xs + ys, xs3 + ys3))
    # the generator advanced: the next epoch differs
    xs4, _ = collect(folder_batches(train32, 4, generator=g))
    assert not all(torch.equal(a, b) for a, b in zip(xs, xs4))


def test_draws_are_eager(train32):
    g = torch.Generator().manual_seed(3)
    it = folder_batches(train32, 6, generator=g)
    state = g.get_state()
    folder_batches(train32, 6, generator=g)  # consumes the generator before `it` is iterated
    assert not torch.equal(state, g.get_state())
    g_ref = torch.Generator().manual_seed(3)
    ref = collect(folder_batches(train32, 6, generator=g_ref))
    got = collect(it)
    assert all(torch.equal(a, b) for a, b in zip(ref[0] + ref[1], got[0] + got[1]))


def test_ranks_concatenate_to_single_process(train32):
    single = collect(folder_batches(train32, 6, generator=torch.Generator().manual_seed(7)))
    shards = [
        collect(folder_batches(train32, 6, generator=torch.Generator().manual_seed(7), rank=r, world_size=2))
        for r in range(2)
    ]
    assert len(single[0]) == len(shards[0][0]) == len(shards[1][0]) == 3
    for i in range(3):
        assert shards[0][0][i].shape[0] == 3
        assert torch.equal(torch.cat([shards[0][0][i], shards[1][0][i]]), single[0][i])
        assert torch.equal(torch.cat([shards[0][1][i], shards[1][1][i]]), single[1][i])


def test_workers_match_in_process(tiny_folder):
    ds = ImageListDataset(
        load_folders(tiny_folder, image_size=16).train.samples[:8],
        ["a", "b", "c"],
        folder_transforms("folder", 16)[0],
    )
    a = collect(folder_batches(ds, 4, generator=torch.Generator().manual_seed(5), workers=0))
    b = collect(folder_batches(ds, 4, generator=torch.Generator().manual_seed(5), workers=2))
    assert len(a[0]) == len(b[0]) == 2
    assert all(torch.equal(u, v) for u, v in zip(a[0] + a[1], b[0] + b[1]))


def test_caller_rng_untouched_and_irrelevant(train32):
    torch.manual_seed(123)
    random.seed(123)
    np_state = np.random.get_state()[1].copy()
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    a = collect(folder_batches(train32, 6, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state)
    torch.manual_seed(999)  # another global state gives the same batches
    b = collect(folder_batches(train32, 6, generator=torch.Generator().manual_seed(2)))
    assert all(torch.equal(u, v) for u, v in zip(a[0] + a[1], b[0] + b[1]))


def test_eval_batches_sharded(tiny_folder):
    val = load_folders(tiny_folder, image_size=32).val  # 9 samples
    state = torch.get_rng_state()
    seen = []
    for rank in range(2):
        xs, ys = collect(folder_batches(val, 4, rank=rank, world_size=2, train=False))
        idx = list(range(9))[rank::2]
        assert [len(y) for y in ys] == ([4, 1] if rank == 0 else [4])
        assert torch.cat(ys).tolist() == [val.targets[i] for i in idx]
        assert torch.equal(torch.cat(xs), torch.stack([val[i][0] for i in idx]))
        seen += idx
    assert sorted(seen) == list(range(9))
    assert torch.equal(torch.get_rng_state(), state)
    xs, ys = collect(folder_batches(val, 4, generator=torch.Generator().manual_seed(1), train=False))
    assert [len(y) for y in ys] == [4, 4, 1] and torch.cat(ys).tolist() == val.targets


def test_batch_argument_errors(train32):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="5.*2"):
        folder_batches(train32, 5, generator=g, world_size=2)
    with pytest.raises(ValueError, match="Generator"):
        folder_batches(train32, 4)
    with pytest.raises(ValueError, match="rank"):
        folder_batches(train32, 4, generator=g, rank=2, world_size=2)


def test_each_position_gets_its_own_seed(tmp_path):
    path = tmp_path / "one.png"
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)

    def draw(img):  # torch and python RNG draws, shaped like an image
        return torch.cat([torch.rand(3, 1, 1), torch.full((3, 1, 1), random.random())], dim=2)

    ds = ImageListDataset([(path, 0, None)] * 12, ["x"], draw)
    xs, _ = collect(folder_batches(ds, 4, generator=torch.Generator().manual_seed(0)))
    x = torch.cat(xs)
    assert x.shape == (12, 3, 1, 2)
    assert len({tuple(v.flatten().tolist()) for v in x}) == 12
    assert len({float(v[0, 0, 1]) for v in x}) == 12  # python's random is seeded per position too
    again, _ = collect(folder_batches(ds, 4, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.cat(again), x)
