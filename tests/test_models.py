import pytest
import torch

from atlib.models import build_model, count_parameters, nin, parse_model_name, resnet, wrn

PAPER_WRN_PARAMS = {(16, 1): 175_066, (16, 2): 691_674, (40, 1): 563_930, (40, 2): 2_243_546}


@pytest.mark.parametrize("depth,width", list(PAPER_WRN_PARAMS))
def test_wrn_parameter_counts_match_authors(depth, width):
    assert count_parameters(wrn(depth, width)) == PAPER_WRN_PARAMS[(depth, width)]


@pytest.mark.parametrize("depth,width", [(16, 1), (16, 2), (40, 1)])
def test_wrn_shapes(depth, width):
    model = wrn(depth, width)
    logits, groups = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 10)
    assert [tuple(g.shape) for g in groups] == [(3, 16 * width, 32, 32), (3, 32 * width, 16, 16),
                                                (3, 64 * width, 8, 8)]
    assert model.group_channels == [16 * width, 32 * width, 64 * width]


def test_wrn_shortcut_only_where_width_changes():
    m1, m2 = wrn(16, 1), wrn(16, 2)
    assert m1.groups[0][0].shortcut is None          # 16 -> 16
    assert m2.groups[0][0].shortcut is not None      # 16 -> 32
    assert m1.groups[1][0].shortcut is not None and m1.groups[1][1].shortcut is None


def test_wrn_authors_init_bn_uniform_and_standard_option():
    torch.manual_seed(0)
    m = wrn(16, 1)
    w = torch.cat([b.weight.detach() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)])
    assert 0.0 <= w.min() and w.max() < 1.0 and w.std() > 0.1
    conv = m.groups[2][1].conv1.weight
    fan_in = conv[0].numel()
    assert abs(conv.std().item() - (2.0 / fan_in) ** 0.5) < 0.1 * (2.0 / fan_in) ** 0.5
    std = wrn(16, 1, init="standard")
    assert all(torch.all(b.weight == 1) for b in std.modules() if isinstance(b, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("bad", [15, 12, 4, 0, -2])
def test_wrn_bad_depth(bad):
    with pytest.raises(ValueError, match=str(bad)):
        wrn(bad, 1)


@pytest.mark.parametrize("bad", [0, -1])
def test_wrn_bad_width(bad):
    with pytest.raises(ValueError, match=f"width.*{bad}"):
        wrn(16, bad)


@pytest.mark.parametrize("variant,low,high", [("thin", 190_000, 220_000), ("wide", 950_000, 1_050_000)])
def test_nin_sizes(variant, low, high):
    for bn in (True, False):
        n = count_parameters(nin(variant, batch_norm=bn))
        assert low <= n <= high, (variant, bn, n)


@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("relu", [True, False])
def test_nin_shapes_and_switches(bn, relu):
    m = nin("thin", batch_norm=bn, relu_before_pool=relu)
    logits, groups = m(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert [tuple(g.shape[-2:]) for g in groups] == [(32, 32), (16, 16), (8, 8)]
    assert [g.shape[1] for g in groups] == m.group_channels
    has_bn = any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert has_bn == bn
    # with ReLU before pooling the group outputs are non-negative; without, the last conv is linear
    assert all((g >= 0).all() for g in groups) == relu


@pytest.mark.parametrize("depth,params", [(18, 11_689_512), (34, 21_797_672)])
def test_resnet_matches_torchvision_and_shapes(depth, params):
    m = resnet(depth, num_classes=1000)
    assert count_parameters(m) == params
    logits, groups = m(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 1000)
    assert [tuple(g.shape[1:]) for g in groups] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    logits, groups = resnet(depth, num_classes=10)(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and [tuple(g.shape[-2:]) for g in groups] == [(8, 8), (4, 4), (2, 2), (1, 1)]


def test_resnet_bad_depth():
    with pytest.raises(ValueError, match="50"):
        resnet(50)


def test_build_model_names():
    assert parse_model_name("wrn-40-2") == ("wrn", {"depth": 40, "width": 2})
    assert parse_model_name("nin-thin-nobn") == ("nin", {"variant": "thin", "batch_norm": False,
                                                         "relu_before_pool": True})
    assert parse_model_name("nin-wide-norelu")[1]["relu_before_pool"] is False
    assert count_parameters(build_model("wrn-16-2")) == 691_674
    for bad in ["wrn-16", "vgg-16", "nin-medium", ""]:
        with pytest.raises(ValueError, match="unknown architecture"):
            build_model(bad)
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn-17-1")
