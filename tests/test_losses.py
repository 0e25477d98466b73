import math

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from atlib import losses
from atlib.losses import (ActivationTransfer, at_loss, at_pair_losses, gradient_at_loss, input_gradient, kd_loss,
                          min_l2_loss, symmetry_loss)
from reference import at_loss_reference, kd_loss_reference

_r = np.random.RandomState(2017)
S_NP = [_r.randn(4, 3, 8, 8), _r.randn(4, 5, 4, 4) * 2]
T_NP = [_r.randn(4, 6, 8, 8) + 0.5, _r.randn(4, 2, 4, 4)]
S = [torch.from_numpy(a) for a in S_NP]
T = [torch.from_numpy(a) for a in T_NP]

# (p, kind, form) -> value, computed once with tests/reference.py (float64 loops) and pinned here
AT_GOLDEN = {
    (2, "sum", "code"): 53.76388763072594,
    (1, "sum", "code"): 19.889776040100546,
    (4, "sum", "code"): 103.36759663300927,
    (1, "max", "code"): 23.43803374650458,
    (2, "max", "code"): 61.55047270822308,
    (2, "sum", "paper"): 801.8348714862902,
}


@pytest.mark.parametrize("key", list(AT_GOLDEN))
def test_at_loss_golden_values(key):
    p, kind, form = key
    got = at_loss(S, T, beta=1000.0, p=p, kind=kind, form=form).item()
    assert got == pytest.approx(AT_GOLDEN[key], rel=1e-6)
    assert at_loss_reference(S_NP, T_NP, 1000.0, p, kind, form) == pytest.approx(AT_GOLDEN[key], rel=1e-12)


def test_at_loss_float32_inputs_close_to_float64():
    got = at_loss([s.float() for s in S], [t.float() for t in T]).item()
    assert got == pytest.approx(AT_GOLDEN[(2, "sum", "code")], rel=1e-5)


def test_at_single_group_and_pairs():
    assert at_loss(S, T, groups=[1]).item() == pytest.approx(44.55085412030525, rel=1e-6)
    pairs = at_pair_losses(S, T)
    assert set(pairs) == {0, 1}
    assert (pairs[0] + pairs[1]).item() == pytest.approx(AT_GOLDEN[(2, "sum", "code")], rel=1e-6)


def test_at_loss_is_linear_in_beta_and_zero_for_identical_maps():
    assert at_loss(S, T, beta=10.0).item() == pytest.approx(AT_GOLDEN[(2, "sum", "code")] / 100, rel=1e-6)
    assert at_loss(S, [s * 3 for s in S]).item() == pytest.approx(0.0, abs=1e-12)
    assert at_loss(S, T, beta=0.0).item() == 0.0


def test_at_code_form_equals_beta_over_elements_and_batch():
    """The paper's 'beta / (elements x batch)' phrasing is exactly the code's mean."""
    pair = at_pair_losses(S, T, groups=[0])[0].item()
    qs = F.normalize(S[0].pow(2).sum(1).flatten(1), dim=1)
    qt = F.normalize(T[0].pow(2).sum(1).flatten(1), dim=1)
    assert pair == pytest.approx(1000.0 / (4 * 64) * ((qs - qt) ** 2).sum().item(), rel=1e-12)


def test_at_teacher_gets_no_gradient():
    s = [x.clone().requires_grad_(True) for x in S]
    t = [x.clone().requires_grad_(True) for x in T]
    at_loss(s, t).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in t)


def test_at_gradient_matches_finite_differences():
    s = [x.clone().requires_grad_(True) for x in S]
    torch.autograd.gradcheck(lambda a, b: at_loss([a, b], T), tuple(s))


def test_at_different_spatial_sizes_resized_to_smaller():
    teacher = [F.interpolate(T[0], size=(16, 16), mode="nearest"), T[1]]
    # nearest-upsampling by 2 then area-downsampling by 2 restores the map exactly: same loss
    assert at_loss(S, teacher).item() == pytest.approx(AT_GOLDEN[(2, "sum", "code")], rel=1e-9)


@pytest.mark.parametrize("kwargs,match", [
    ({"p": 0}, "p=0"), ({"p": -2}, "p=-2"), ({"kind": "mean"}, "'mean'"), ({"beta": -1.0}, "beta=-1.0"),
    ({"groups": [2]}, "group index 2"), ({"groups": [-1]}, "group index -1"), ({"groups": []}, "empty"),
    ({"form": "eq3"}, "'eq3'"),
])
def test_at_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        at_loss(S, T, **kwargs)


def test_at_group_list_lengths_and_batch():
    with pytest.raises(ValueError, match="2 vs 1"):
        at_loss(S, T[:1])
    with pytest.raises(ValueError, match="batch sizes differ: 4 vs 3"):
        at_loss(S, [t[:3] for t in T])


_k = np.random.RandomState(7)
KD_S, KD_T, KD_Y = _k.randn(5, 10) * 3, _k.randn(5, 10) * 3, _k.randint(0, 10, 5)
KD_GOLDEN = {(4.0, 0.9): 5.262454721228518, (1.0, 0.5): 4.879569870081339, (2.0, 0.0): 7.462102343682645,
             (4.0, 1.0): 5.018049429844726}


@pytest.mark.parametrize("key", list(KD_GOLDEN))
def test_kd_loss_golden_values(key):
    T_, alpha = key
    got = kd_loss(torch.from_numpy(KD_S), torch.from_numpy(KD_T), torch.from_numpy(KD_Y), T=T_, alpha=alpha)
    assert got.item() == pytest.approx(KD_GOLDEN[key], rel=1e-6)
    assert kd_loss_reference(KD_S, KD_T, KD_Y, T_, alpha) == pytest.approx(KD_GOLDEN[key], rel=1e-12)


def test_kd_alpha_zero_is_cross_entropy_and_teacher_gets_no_gradient():
    s, t, y = (torch.from_numpy(KD_S).requires_grad_(True), torch.from_numpy(KD_T).requires_grad_(True),
               torch.from_numpy(KD_Y))
    assert kd_loss(s, t, y, alpha=0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-12)
    kd_loss(s, t, y).backward()
    assert s.grad is not None and t.grad is None
    assert kd_loss(s.detach(), s.detach(), y, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kwargs,match", [({"T": 0}, "T=0"), ({"T": -1.0}, "T=-1.0"), ({"alpha": 1.5}, "alpha=1.5"),
                                          ({"alpha": -0.1}, "alpha=-0.1")])
def test_kd_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), **kwargs)


def test_kd_shape_mismatch():
    with pytest.raises(ValueError, match="labels \\(3,\\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="\\(2, 4\\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


def test_fact_adapters_and_value():
    torch.manual_seed(0)
    fact = ActivationTransfer([3, 5], [6, 2], beta=1000.0).double()
    assert isinstance(fact.adapters[0], nn.Conv2d) and fact.adapters[0].out_channels == 6
    s = [x.clone().requires_grad_(True) for x in S]
    value = fact(s, T)
    expected = 0.0
    for g in range(2):
        a = F.normalize(fact.adapters[g](S[g]).flatten(1), dim=1)
        b = F.normalize(T[g].flatten(1), dim=1)
        expected += 1000.0 * ((a - b) ** 2).sum().item() / a.numel()
    assert value.item() == pytest.approx(expected, rel=1e-12)
    value.backward()
    assert fact.adapters[0].weight.grad is not None and s[1].grad is not None
    same = ActivationTransfer([6, 2], [6, 2])
    assert all(isinstance(a, nn.Identity) for a in same.adapters)
    assert same(T, [t * 2 for t in T]).item() == pytest.approx(0.0, abs=1e-12)


class TinyNet(nn.Module):
    """Smooth (tanh) little network returning (logits, groups), for gradient checks in float64."""

    def __init__(self, channels=3, classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.fc = nn.Linear(channels, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.double()

    def forward(self, x):
        a = torch.tanh(self.conv(x))
        return self.fc(a.mean(dim=(2, 3))), [a]


X = torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
Y = torch.tensor([0, 2, 1])


def _loss_of_params(model, loss_fn):
    """Turn loss_fn(model) into a function of one flat parameter vector (for gradcheck)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def f(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            params[n] = flat[i:i + k].view(s)
            i += k
        return loss_fn(lambda x: torch.func.functional_call(model, params, (x,)))
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).requires_grad_(True)
    return f, flat


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _grad_at(student_fn, teacher=TinyNet(channels=4, seed=5)):
    js, _, _ = input_gradient(_Fn(student_fn), X, Y, create_graph=True)
    jt, _, _ = input_gradient(teacher, X, Y, create_graph=False)
    return gradient_at_loss(js, jt, beta=2.0)


def _symmetry(student_fn):
    js, _, _ = input_gradient(_Fn(student_fn), X, Y)
    jf, _, _ = input_gradient(_Fn(student_fn), torch.flip(X, dims=[-1]), Y)
    return symmetry_loss(js, jf, beta=2.0)


def _min_l2(student_fn):
    js, _, _ = input_gradient(_Fn(student_fn), X, Y)
    return min_l2_loss(js, beta=2.0)


@pytest.mark.parametrize("loss_fn", [_grad_at, _symmetry, _min_l2], ids=["grad_at", "symmetry", "min_l2"])
def test_gradient_losses_gradcheck(loss_fn):
    f, flat = _loss_of_params(TinyNet(), loss_fn)
    assert torch.autograd.gradcheck(f, (flat,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss_fn", [_grad_at, _symmetry, _min_l2], ids=["grad_at", "symmetry", "min_l2"])
def test_gradient_losses_directional_finite_difference(loss_fn):
    f, flat = _loss_of_params(TinyNet(), loss_fn)
    (g,) = torch.autograd.grad(f(flat), flat)
    d = torch.randn(flat.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 1e-5
    numeric = (f(flat.detach() + h * d) - f(flat.detach() - h * d)).item() / (2 * h)
    assert (g @ d).item() == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_input_gradient_hand_derived_for_linear_model():
    """For logits = W x, dCE_b/dx_b = W^T (softmax(W x_b) - onehot(y_b))."""
    lin = nn.Linear(75, 3, bias=False).double()
    model = _Fn(lambda x: (lin(x.flatten(1)), [x]))
    j, _, _ = input_gradient(model, X, Y, create_graph=False)
    W = lin.weight.detach().numpy()
    for b in range(3):
        z = W @ X[b].flatten().numpy()
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        p[Y[b]] -= 1
        np.testing.assert_allclose(j[b].flatten().numpy(), W.T @ p, rtol=1e-10, atol=1e-12)
    expected_min_l2 = 0.5 * 2.0 * np.mean([np.sum(j[b].numpy() ** 2) for b in range(3)])
    assert min_l2_loss(j, beta=2.0).item() == pytest.approx(expected_min_l2, rel=1e-12)


def test_symmetry_zero_for_flip_invariant_model():
    model = _Fn(lambda x: (torch.stack([x.pow(2).sum((1, 2, 3)), x.sum((1, 2, 3)), -x.sum((1, 2, 3))], 1), [x]))
    j, _, _ = input_gradient(model, X, Y)
    jf, _, _ = input_gradient(model, torch.flip(X, dims=[-1]), Y)
    assert symmetry_loss(j, jf, beta=1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert symmetry_loss(j, j, beta=1.0).item() > 0.1


def test_gradient_at_teacher_parameters_get_no_gradient():
    student, teacher = TinyNet(seed=1), TinyNet(channels=4, seed=2)
    js, _, _ = input_gradient(student, X, Y, create_graph=True)
    jt, _, _ = input_gradient(teacher, X, Y, create_graph=False)
    gradient_at_loss(js, jt, beta=1.0).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("fn,args", [
    (gradient_at_loss, (torch.zeros(2, 3), torch.zeros(2, 3))), (symmetry_loss, (torch.zeros(2, 3), torch.zeros(2, 3))),
    (min_l2_loss, (torch.zeros(2, 3),))])
def test_gradient_losses_negative_beta(fn, args):
    with pytest.raises(ValueError, match="beta=-1"):
        fn(*args, beta=-1)


def test_gradient_at_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        gradient_at_loss(torch.zeros(2, 3), torch.zeros(2, 4), beta=1.0)


def test_input_gradient_logits_labels_mismatch():
    with pytest.raises(ValueError, match="labels \\(2,\\)"):
        input_gradient(TinyNet(), X, torch.tensor([0, 1]))


def test_losses_module_exports_paper_terms():
    for name in ["at_loss", "kd_loss", "ActivationTransfer", "gradient_at_loss", "symmetry_loss", "min_l2_loss"]:
        assert hasattr(losses, name)
