"""The grouped network (``atlib.training.grouped_wrn``): K WRNs as one network compute exactly what K WRNs compute."""

import copy

import pytest
import torch

from atlib.losses import cross_entropy
from atlib.models.wrn import WideResNet, wrn
from atlib.objective import build_objective
from atlib.training.cohort_losses import cohort_losses, validate_cohort_specs
from atlib.training.grouped_wrn import CohortWRN, pack, split_groups, stack_inputs, unpack, unpack_grads

B, K, CLASSES = 4, 3, 10


def _students(depth=10, width=1, k=K, seed0=100, dtype=torch.float64):
    out = []
    for i in range(k):
        torch.manual_seed(seed0 + i)
        out.append(wrn(depth, width, num_classes=CLASSES).to(dtype))
    return out


def _batches(step, k=K, dtype=torch.float64):
    g = torch.Generator().manual_seed(1000 + step)
    xs = [torch.randn(B, 3, 32, 32, generator=g, dtype=dtype) for _ in range(k)]
    ys = [torch.randint(0, CLASSES, (B,), generator=g) for _ in range(k)]
    return xs, ys


def _assert_students_differ(tensors):
    """Guard against vacuous checks: the students' values must not coincide."""
    for i in range(len(tensors)):
        for j in range(i + 1, len(tensors)):
            assert not torch.allclose(tensors[i], tensors[j], atol=1e-6), (i, j)


def _assert_state_close(cohort, students, rtol, atol):
    states = unpack(cohort)
    for i, (state, student) in enumerate(zip(states, students)):
        ref = student.state_dict()
        assert set(state) == set(ref)
        for key, value in ref.items():
            assert state[key].shape == value.shape and state[key].dtype == value.dtype, (i, key)
            if value.dtype == torch.long:
                assert torch.equal(state[key], value), (i, key)
            else:
                torch.testing.assert_close(state[key], value, rtol=rtol, atol=atol, msg=f"student {i}: {key}")


def test_pack_unpack_round_trip_is_exact():
    students = _students(width=2)
    # make the BN buffers non-trivial and different per student (incl. num_batches_tracked)
    for i, s in enumerate(students):
        s.train()
        for step in range(i + 1):
            with torch.no_grad():
                s(_batches(step)[0][i])
    cohort = pack(students)
    assert isinstance(cohort, CohortWRN) and cohort.k == K and cohort.group_channels == [32, 64, 128]
    assert next(cohort.parameters()).dtype == torch.float64
    states = unpack(cohort)
    for i, (state, s) in enumerate(zip(states, students)):
        ref = s.state_dict()
        assert list(state) == list(ref)
        for key in ref:
            assert torch.equal(state[key], ref[key]), (i, key)
        fresh = WideResNet(10, 2, CLASSES).double()
        fresh.load_state_dict(state, strict=True)
        for key, value in fresh.state_dict().items():
            assert torch.equal(value, ref[key]), (i, key)
    assert [int(st["groups.0.0.bn1.num_batches_tracked"]) for st in states] == [1, 2, 3]
    # a second pack of the unpacked students reproduces the cohort exactly
    for i, state in enumerate(states):
        m = WideResNet(10, 2, CLASSES).double()
        m.load_state_dict(state)
        states[i] = m
    again = pack(states)
    for (name, a), b in zip(cohort.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_stack_and_split_layout():
    xs = [torch.full((2, 3, 4, 4), float(i)) for i in range(K)]
    stacked = stack_inputs(xs)
    assert stacked.shape == (2, 3 * K, 4, 4)
    for i in range(K):
        assert torch.equal(stacked[:, 3 * i:3 * i + 3], xs[i])
    parts = split_groups(torch.arange(2 * 6 * K).view(2, 6 * K, 1, 1), K)
    assert [tuple(p.shape) for p in parts] == [(2, 6, 1, 1)] * K
    assert torch.equal(parts[1][0, :, 0, 0], torch.arange(6, 12))
    with pytest.raises(ValueError):
        split_groups(torch.zeros(1, 7, 1, 1), K)
    with pytest.raises(ValueError):
        stack_inputs([torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4)])


@pytest.mark.parametrize("width", [1, 2])
def test_forward_matches_separate_students_train_and_eval(width):
    students = _students(width=width)
    cohort = pack(students)
    for mode in ("train", "eval"):
        cohort.train(mode == "train")
        for s in students:
            s.train(mode == "train")
        xs, _ = _batches(0 if mode == "train" else 1)
        with torch.no_grad():
            logits, groups = cohort(stack_inputs(xs))
            refs = [s(x) for s, x in zip(students, xs)]
        assert logits.shape == (B, K, CLASSES)
        assert [g.shape[1] for g in groups] == [K * c for c in students[0].group_channels]
        for i, (ref_logits, ref_groups) in enumerate(refs):
            torch.testing.assert_close(logits[:, i], ref_logits, rtol=0, atol=1e-10)
            for g, (cg, rg) in enumerate(zip(groups, ref_groups)):
                torch.testing.assert_close(split_groups(cg, K)[i], rg, rtol=0, atol=1e-10, msg=f"{i} g{g}")
        _assert_students_differ([logits[:, i] for i in range(K)])
        # train mode updated the running statistics (per student) identically
        _assert_state_close(cohort, students, rtol=0, atol=1e-12)


def test_gradients_match_separate_students():
    students = _students()
    cohort = pack(students)
    xs, ys = _batches(0)
    logits, _ = cohort(stack_inputs(xs))
    sum(cross_entropy(logits[:, i], ys[i]) for i in range(K)).backward()
    grads = unpack_grads(cohort)
    per_student_stem = []
    for i, (s, x, y) in enumerate(zip(students, xs, ys)):
        cross_entropy(s(x)[0], y).backward()
        names = [n for n, _ in s.named_parameters()]
        assert list(grads[i]) == names
        for name, p in s.named_parameters():
            assert grads[i][name] is not None and grads[i][name].shape == p.shape
            torch.testing.assert_close(grads[i][name], p.grad, rtol=1e-9, atol=1e-12, msg=f"student {i}: {name}")
        per_student_stem.append(grads[i]["stem.weight"])
    _assert_students_differ(per_student_stem)


def test_three_sgd_steps_with_at_and_kd_equal_separate_training():
    torch.manual_seed(7)
    teacher = wrn(10, 2, num_classes=CLASSES).double().eval()
    specs = [{"ce": {}},
             {"kd": {"T": 4.0, "alpha": 0.9}},
             {"kd": {"T": 4.0, "alpha": 0.9}, "at": {"beta": 1000.0, "p": 2, "weight": 0.5}}]
    students = _students()
    cohort = pack(copy.deepcopy(students))
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    opts = [torch.optim.SGD(s.parameters(), **sgd) for s in students]
    objectives = [build_objective(spec, s, teacher) for spec, s in zip(specs, students)]
    cohort_opt = torch.optim.SGD(cohort.parameters(), **sgd)
    cohort.train()
    for s in students:
        s.train()

    for step in range(3):
        xs, ys = _batches(step)
        # plain path: each student with its own objective and optimizer
        plain_terms = []
        for s, obj, opt, x, y in zip(students, objectives, opts, xs, ys):
            opt.zero_grad(set_to_none=True)
            out = obj(s, teacher, x, y)
            out.total.backward()
            opt.step()
            plain_terms.append({n: v.detach() for n, v in out.terms.items()})
        # cohort path
        with torch.no_grad():
            teacher_outputs = [teacher(x) for x in xs]
        cohort_opt.zero_grad(set_to_none=True)
        logits, groups = cohort(stack_inputs(xs))
        total, per_student = cohort_losses(logits, groups, torch.stack(ys, dim=1), teacher_outputs, specs)
        total.backward()
        cohort_opt.step()

        for i in range(K):
            assert set(per_student[i]) == set(plain_terms[i])
            for name, value in plain_terms[i].items():
                torch.testing.assert_close(per_student[i][name].detach(), value, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(total.detach(), sum(sum(t.values()) for t in plain_terms), rtol=1e-9, atol=1e-12)
        assert per_student[2]["at"] > 0

    _assert_state_close(cohort, students, rtol=1e-9, atol=1e-12)
    # the students really trained differently (different methods and data): a mix-up would be caught
    _assert_students_differ([s.fc.weight.detach() for s in students])


def test_pack_rejects_mismatched_architectures():
    with pytest.raises(ValueError, match="width"):
        pack([wrn(10, 1), wrn(10, 2)])
    with pytest.raises(ValueError, match="depth"):
        pack([wrn(10, 1), wrn(16, 1)])
    with pytest.raises(ValueError, match="num_classes"):
        pack([wrn(10, 1, num_classes=10), wrn(10, 1, num_classes=100)])
    with pytest.raises(ValueError, match="dtype"):
        pack([wrn(10, 1), wrn(10, 1).double()])
    with pytest.raises(ValueError):
        pack([])


def test_unsupported_terms_raise():
    logits = torch.zeros(B, 2, CLASSES)
    groups = [torch.zeros(B, 2 * c, s, s) for c, s in ((16, 32), (32, 16), (64, 8))]
    labels = torch.zeros(B, 2, dtype=torch.long)
    for term in ("grad_at", "symmetry", "min_l2", "fact"):
        with pytest.raises(ValueError, match=f"{term}.*unsupported in a cohort"):
            cohort_losses(logits, groups, labels, None, [{"ce": {}}, {"ce": {}, term: {"beta": 1.0}}])
    with pytest.raises(ValueError, match="unsupported"):
        validate_cohort_specs([{"nonsense": {}}])
    with pytest.raises(ValueError, match="unknown option"):
        validate_cohort_specs([{"at": {"bta": 1.0}}])
    with pytest.raises(ValueError, match="2 objective specs"):
        cohort_losses(logits, groups, labels, None, [{"ce": {}}])
    with pytest.raises(ValueError, match="needs a teacher"):
        cohort_losses(logits, groups, labels, None, [{"ce": {}}, {"kd": {}}])
    total, per = cohort_losses(logits, groups, labels, None, [{"ce": {}}, {"ce": {"weight": 2.0}}])
    torch.testing.assert_close(total, 3 * torch.log(torch.tensor(float(CLASSES))))
    assert list(per[1]) == ["ce"]
