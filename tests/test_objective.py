import pytest
import torch

from atlib import objective
from atlib.losses import at_loss, gradient_at_loss, input_gradient, kd_loss, min_l2_loss, symmetry_loss
from atlib.models import nin, wrn
from atlib.objective import BatchContext, TERMS, batch_independent, build_objective

torch.manual_seed(0)
STUDENT, TEACHER = wrn(10, 1), wrn(10, 2)
TEACHER.eval()
X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([1, 0, 3, 9])


def test_at_plus_kd_is_the_sum_of_its_terms():
    obj = build_objective({"kd": {"T": 4.0, "alpha": 0.9}, "at": {"beta": 1000.0}}, STUDENT, TEACHER)
    out = obj(STUDENT, TEACHER, X, Y)
    s_logits, s_groups = STUDENT(X)
    with torch.no_grad():
        t_logits, t_groups = TEACHER(X)
    torch.testing.assert_close(out.terms["kd"], kd_loss(s_logits, t_logits, Y))
    torch.testing.assert_close(out.terms["at"], at_loss(s_groups, t_groups))
    torch.testing.assert_close(out.total, out.terms["kd"] + out.terms["at"])
    assert set(out.details) == {"at/g1", "at/g2", "at/g3"}
    torch.testing.assert_close(sum(out.details.values()), out.terms["at"])
    torch.testing.assert_close(out.logits, s_logits)


def test_weights_and_group_selection():
    obj = build_objective({"ce": {"weight": 0.5}, "at": {"groups": [1], "weight": 2.0}}, STUDENT, TEACHER)
    out = obj(STUDENT, TEACHER, X, Y)
    s_logits, s_groups = STUDENT(X)
    t_groups = TEACHER(X)[1]
    torch.testing.assert_close(out.terms["ce"], 0.5 * torch.nn.functional.cross_entropy(s_logits, Y))
    torch.testing.assert_close(out.terms["at"], 2.0 * at_loss(s_groups, t_groups, groups=[1]))
    assert list(out.details) == ["at/g2"]


def test_teacher_gets_no_gradient_and_student_does():
    TEACHER.zero_grad(set_to_none=True)
    STUDENT.zero_grad(set_to_none=True)
    obj = build_objective({"ce": {}, "at": {}, "fact": {}}, STUDENT, TEACHER)
    obj(STUDENT, TEACHER, X, Y).total.backward()
    assert all(p.grad is None for p in TEACHER.parameters())
    assert all(p.grad is not None for p in STUDENT.parameters())
    adapters = [p for p in obj.parameters()]
    assert adapters and all(p.grad is not None for p in adapters)  # the F-ActT 1x1 adapters train too


def test_gradient_terms_share_one_student_input_gradient():
    torch.manual_seed(1)
    student, teacher = nin("thin", batch_norm=False).double(), nin("wide", batch_norm=False).double().eval()
    x, y = X[:2].double(), Y[:2]
    obj = build_objective({"ce": {}, "grad_at": {"beta": 3.0}, "min_l2": {"beta": 0.5},
                           "symmetry": {"beta": 2.0}}, student, teacher)
    out = obj(student, teacher, x, y)
    js, _, _ = input_gradient(student, x, y)
    jt, _, _ = input_gradient(teacher, x, y, create_graph=False)
    jf, _, _ = input_gradient(student, torch.flip(x, dims=[-1]), y)
    torch.testing.assert_close(out.terms["grad_at"], gradient_at_loss(js, jt, 3.0))
    torch.testing.assert_close(out.terms["min_l2"], min_l2_loss(js, 0.5))
    torch.testing.assert_close(out.terms["symmetry"], symmetry_loss(js, jf, 2.0))
    out.total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def _symmetry_grads(student, x, y, one_pass: bool):
    """Parameter gradients of CE + symmetry norm, J(x) and J(flip x) from one double-width pass or two passes."""
    student.zero_grad(set_to_none=True)
    ctx = BatchContext(student, None, x, y, student_input_grad=True, flipped_input_grad=one_pass)
    assert ("student_flipped_input_grad" in ctx._cache) == one_pass
    obj = build_objective({"ce": {}, "symmetry": {"beta": 2.0}})
    total = obj.terms["ce"](ctx) + obj.terms["symmetry"](ctx)
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in student.named_parameters()}


def test_symmetry_norm_in_one_double_width_pass_equals_two_passes(monkeypatch):
    monkeypatch.setattr(objective, "ONE_PASS_MIRROR_DEVICES", ("cpu",))  # as on a GPU
    torch.manual_seed(2)
    student = nin("thin", batch_norm=False).double()
    x, y = torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.tensor([4, 0, 7])
    assert batch_independent(student)
    one_value, one = _symmetry_grads(student, x, y, one_pass=True)
    two_value, two = _symmetry_grads(student, x, y, one_pass=False)
    torch.testing.assert_close(one_value, two_value, rtol=1e-12, atol=1e-14)
    for name in two:
        torch.testing.assert_close(one[name], two[name], rtol=1e-10, atol=1e-14)


def test_batch_norm_students_keep_two_passes(monkeypatch):
    monkeypatch.setattr(objective, "ONE_PASS_MIRROR_DEVICES", ("cpu",))
    bn = nin("thin", batch_norm=True)
    assert not batch_independent(bn.train()) and batch_independent(bn.eval())
    ctx = BatchContext(bn.train(), None, X, Y, student_input_grad=True, flipped_input_grad=True)
    assert "student_flipped_input_grad" not in ctx._cache  # computed by its own pass when the term asks
    jf, _, _ = input_gradient(bn, torch.flip(X, dims=[-1]), Y)
    torch.testing.assert_close(ctx.student_flipped_input_grad, jf)


@pytest.mark.parametrize("spec,match", [
    ({"attention": {}}, "unknown loss term 'attention'"),
    ({"at": {"gamma": 1}}, "unknown option\\(s\\) \\['gamma'\\]"),
    ({"at": {"p": 0}}, "p=0"),
    ({"at": {"beta": -5}}, "beta=-5"),
    ({"kd": {"T": 0}}, "T=0"),
    ({"kd": {"alpha": 2}}, "alpha=2"),
    ({"ce": {"weight": -1}}, "ce weight=-1"),
    ({}, "non-empty"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        build_objective(spec, STUDENT, TEACHER)


def test_missing_teacher_is_reported():
    obj = build_objective({"ce": {}, "at": {}})
    with pytest.raises(ValueError, match="need a teacher"):
        obj(STUDENT, None, X, Y)


def test_out_of_range_group_is_reported_at_first_batch():
    obj = build_objective({"ce": {}, "at": {"groups": [3]}}, STUDENT, TEACHER)
    with pytest.raises(ValueError, match="group index 3"):
        obj(STUDENT, TEACHER, X, Y)


def test_term_registry_names_paper_terms():
    assert set(TERMS) == {"ce", "kd", "at", "fact", "grad_at", "symmetry", "min_l2"}
