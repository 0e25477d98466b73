"""Table 3's runs as one grouped network (``training.grouped_nin``): K BN-free NINs computed together give every run
exactly what it computes alone (float64): outputs, input gradients, every Table 3 loss term, and the parameter
gradients of double backpropagation, while each run has its own batch, method and teacher."""

import copy

import pytest
import torch

from atlib.methods import method_terms
from atlib.models.nin import NIN
from atlib.objective import build_objective
from atlib.training.grouped_nin import GroupedNIN, objective_outputs, pack, unpack, unpack_grads
from atlib.training.grouped_wrn import stack_inputs

WIDTHS = (8, 6, 4, 8, 8, 8, 8, 8, 8)  # NIN's shape at a width a test can afford
B = 6
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs a CUDA device"))]


def _nins(k, seed=0, relu_before_pool=True, widths=WIDTHS):
    out = []
    for i in range(k):
        torch.manual_seed(seed + i)
        out.append(NIN(widths, batch_norm=False, relu_before_pool=relu_before_pool).double().train())
    return out


def _batches(k, seed=10):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(B, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(k)],
            [torch.randint(0, 10, (B,), generator=g) for _ in range(k)])


def _teacher(relu_before_pool=True):
    torch.manual_seed(99)
    teacher = NIN((12, 10, 8, 12, 12, 12, 12, 12, 12), batch_norm=False,
                  relu_before_pool=relu_before_pool).double().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def test_pack_and_unpack_keep_every_run_exactly():
    nins = _nins(3)
    grouped = pack(nins)
    assert isinstance(grouped, GroupedNIN) and grouped.k == 3 and grouped.group_channels == [4, 8, 8]
    for nin, state in zip(nins, unpack(grouped)):
        assert state.keys() == nin.state_dict().keys()
        for key, value in nin.state_dict().items():
            assert torch.equal(state[key], value), key
        NIN(WIDTHS, batch_norm=False).double().load_state_dict(state, strict=True)


@pytest.mark.parametrize("relu_before_pool", [True, False])
def test_forward_equals_each_nin_on_its_own_batch(relu_before_pool):
    nins = _nins(3, relu_before_pool=relu_before_pool)
    xs, _ = _batches(3)
    logits, groups = pack(nins)(stack_inputs(xs))
    assert logits.shape == (B, 3, 10) and [g.shape[1] for g in groups] == [12, 24, 24]
    for i, (nin, x) in enumerate(zip(nins, xs)):
        ref_logits, ref_groups = nin(x)
        torch.testing.assert_close(logits[:, i], ref_logits, rtol=0, atol=1e-12)
        for g, ref in zip(groups, ref_groups):
            torch.testing.assert_close(g.chunk(3, dim=1)[i], ref, rtol=0, atol=1e-12)


# Table 3's methods, and their teachers (the activation-AT row learns from the NIN whose groups end before the ReLU)
METHODS = {"student": None, "min-l2": None, "symmetry": None, "grad-at": "nobn", "kd": "nobn", "at": "norelu"}


@pytest.mark.parametrize("methods", [["min-l2"] * 3, ["symmetry"] * 2, ["grad-at"] * 2,
                                     ["student", "min-l2", "symmetry", "grad-at", "kd", "at"]],
                         ids=["min-l2", "symmetry", "grad-at", "table3-mixed"])
@pytest.mark.parametrize("device", DEVICES)
def test_each_run_gets_its_own_losses_and_second_order_gradients(methods, device):
    k = len(methods)
    teachers = {"nobn": _teacher().to(device), "norelu": _teacher(relu_before_pool=False).to(device)}
    nins = [nin.to(device) for nin in _nins(k)]
    xs, ys = _batches(k)
    xs, ys = [x.to(device) for x in xs], [y.to(device) for y in ys]
    # beta large enough that the gradient terms move the parameters' gradients visibly
    specs = [method_terms(m, beta=50.0) if m not in ("student", "kd") else method_terms(m) for m in methods]
    run_teachers = [teachers.get(METHODS[m]) for m in methods]

    expected_terms, expected_grads = [], []
    for nin, spec, teacher, x, y in zip(copy.deepcopy(nins), specs, run_teachers, xs, ys):
        out = build_objective(spec, nin, teacher)(nin, teacher, x, y)
        out.total.backward()
        expected_terms.append({name: v.detach() for name, v in out.terms.items()})
        expected_grads.append({name: p.grad for name, p in nin.named_parameters()})

    grouped = pack(nins)
    objectives = [build_objective(spec, nin, teacher) for spec, nin, teacher in zip(specs, nins, run_teachers)]
    total, outputs = objective_outputs(grouped, objectives, run_teachers, stack_inputs(xs), torch.stack(ys, 1))
    total.backward()
    for i, (out, terms) in enumerate(zip(outputs, expected_terms)):
        assert out.terms.keys() == terms.keys()
        for name, value in terms.items():
            torch.testing.assert_close(out.terms[name].detach(), value, rtol=1e-9, atol=1e-12,
                                       msg=f"run {i} ({methods[i]}) term {name}")
    for i, (grads, ref) in enumerate(zip(unpack_grads(grouped), expected_grads)):
        for name, value in ref.items():
            torch.testing.assert_close(grads[name], value, rtol=1e-8, atol=1e-11,
                                       msg=f"run {i} ({methods[i]}) gradient of {name}")
    # the comparison covers the second-order part: every run's transfer or gradient term is far from zero
    for i, method in enumerate(methods):
        if method != "student":
            assert any(name != "ce" and float(v) > 1e-3 for name, v in expected_terms[i].items()), method


def test_batch_norm_and_mismatched_nins_are_refused_with_one_line():
    with pytest.raises(ValueError, match="packs BN-free NINs .* model 1 is a NIN with batch norm"):
        pack([_nins(1)[0], NIN(WIDTHS, batch_norm=True).double()])
    with pytest.raises(ValueError, match="NINs of one shape"):
        pack(_nins(1) + _nins(1, widths=(8, 6, 4, 8, 8, 8, 8, 8, 6)))
    with pytest.raises(ValueError, match=r"expects input \(B, 6, H, W\)"):
        pack(_nins(2))(torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    grouped = pack(_nins(2))
    with pytest.raises(ValueError, match="needs 2 objectives and teachers, got 1 and 1"):
        objective_outputs(grouped, [build_objective(method_terms("min-l2"))], [None],
                          torch.zeros(2, 6, 32, 32, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.long))
