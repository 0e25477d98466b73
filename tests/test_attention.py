import numpy as np
import pytest
import torch

from atlib.attention import attention_image, attention_map, attention_vector, normalize_map, resize_map
from reference import attention_map_loop, normalized_vectors

RNG = np.random.RandomState(1234)
X = RNG.randn(3, 5, 4, 6)


@pytest.mark.parametrize("kind", ["sum", "max"])
@pytest.mark.parametrize("p", [1, 2, 3, 4, 0.5])
def test_attention_map_matches_float64_loop(p, kind):
    got = attention_map(torch.from_numpy(X), p=p, kind=kind).numpy()
    np.testing.assert_allclose(got, attention_map_loop(X, p, kind), rtol=1e-12, atol=1e-12)
    vec = attention_vector(torch.from_numpy(X), p=p, kind=kind).numpy()
    np.testing.assert_allclose(vec, normalized_vectors(attention_map_loop(X, p, kind)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["sum", "max"])
def test_channel_permutation_invariance(kind):
    x = torch.from_numpy(X)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(attention_map(x[:, perm], 2, kind), attention_map(x, 2, kind), rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", ["sum", "max"])
@pytest.mark.parametrize("p", [1, 2, 4])
def test_per_sample_positive_rescaling_invariance(p, kind):
    x = torch.from_numpy(X)
    scale = torch.tensor([0.1, 3.0, 250.0], dtype=torch.float64).view(3, 1, 1, 1)
    torch.testing.assert_close(attention_vector(x * scale, p, kind), attention_vector(x, p, kind))
    # without normalisation the maps do change: the invariance is the normalisation's doing
    assert not torch.allclose(attention_map(x * scale, p, kind), attention_map(x, p, kind))


def test_sum_and_mean_over_channels_agree_after_normalisation():
    x = torch.from_numpy(X)
    mean_map = x.pow(2).mean(dim=1)  # the authors' code averages over channels
    torch.testing.assert_close(normalize_map(mean_map), attention_vector(x, 2, "sum"))


def test_vectors_have_unit_norm_and_sign_does_not_matter():
    x = torch.from_numpy(X)
    v = attention_vector(x, 3, "sum")
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(attention_vector(-x, 3, "sum"), v)


def test_display_image():
    img = attention_image(torch.from_numpy(X).float(), p=2, size=(32, 32))
    assert img.shape == (3, 32, 32)
    assert torch.allclose(img.flatten(1).min(1).values, torch.zeros(3))
    assert torch.allclose(img.flatten(1).max(1).values, torch.ones(3))


def test_resize_map_area_average():
    m = torch.arange(16.0).view(1, 4, 4)
    r = resize_map(m, (2, 2))
    torch.testing.assert_close(r, torch.tensor([[[2.5, 4.5], [10.5, 12.5]]]))
    assert resize_map(m, (4, 4)) is m


@pytest.mark.parametrize("p", [0, -1, -0.5, float("nan"), float("inf")])
def test_bad_p(p):
    with pytest.raises(ValueError, match="p="):
        attention_map(torch.from_numpy(X), p=p)


def test_bad_kind_and_shape():
    with pytest.raises(ValueError, match="'avg'"):
        attention_map(torch.from_numpy(X), kind="avg")
    with pytest.raises(ValueError, match="\\(B, C, H, W\\)"):
        attention_map(torch.zeros(3, 4, 4))
