"""Cohort training (``atlib.training.cohorts``) is K ordinary runs: same run ids, same records, same weights as
training each member alone (float64, to 1e-10), resumable as a cohort or member by member."""

import pytest

from atlib.methods import method_terms
from atlib.training import engine
from atlib.training.cohorts import cohort_key, train_cohort
from atlib.training.config import RunConfig
from atlib.training.store import RunStore
from teacher_runs import copy_teacher, train_teacher
from interrupts import interrupted_on_call

COMMON = dict(dataset="sample", epochs=3, train_subset=160, test_subset=100, batch_size=64, device="cpu",
              lr_milestones=[1, 2])  # 160 = 2 full batches + a batch of 32; an lr drop every epoch


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return train_teacher(tmp_path_factory.mktemp("cohort_teacher"), RunConfig(student="wrn-10-2", **COMMON))


def _members(teacher_id, seeds=(0, 1, 0, 2), methods=("student", "at", "kd", "at+kd"), **extra):
    return [RunConfig(student="wrn-10-1", method=m, terms=method_terms(m), seed=s,
                      teacher=None if m == "student" else teacher_id, **{**COMMON, **extra})
            for m, s in zip(methods, seeds)]


def _max_diff(a_root, b_root, run_id) -> float:
    a, b = RunStore(a_root).load_weights(run_id), RunStore(b_root).load_weights(run_id)
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.slow  # trains in float64 (about 200 s of CPU)
def test_cohort_equals_separate_runs(teacher, tmp_path, float64):
    teacher_id = copy_teacher(teacher, tmp_path / "a")
    copy_teacher(teacher, tmp_path / "b")
    cfgs = _members(teacher_id)
    together = train_cohort(cfgs, results=tmp_path / "a", progress=False, log=None)
    alone = [engine.train(c, results=tmp_path / "b", progress=False, log=None) for c in cfgs]
    store_a, store_b = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    for t, s in zip(together, alone):
        assert t["run_id"] == s["run_id"] and t["environment"]["cohort"]["size"] == 4
        assert _max_diff(tmp_path / "a", tmp_path / "b", t["run_id"]) < 1e-10
        rows_t, rows_s = store_a.read_metrics(t["run_id"]), store_b.read_metrics(s["run_id"])
        assert len(rows_t) == len(rows_s) == 3
        for rt, rs in zip(rows_t, rows_s):
            assert rt["lr"] == rs["lr"] and rt["test_error"] == rs["test_error"]
            assert set(rt["terms"]) == set(rs["terms"]) and set(rt["details"]) == set(rs["details"])
            for key in ("train_loss", "train_error", "test_loss"):
                assert rt[key] == pytest.approx(rs[key], rel=1e-9, abs=1e-9), key
            for name in rs["terms"]:
                assert rt["terms"][name] == pytest.approx(rs["terms"][name], rel=1e-9, abs=1e-12), name
            for name in rs["details"]:
                assert rt["details"][name] == pytest.approx(rs["details"][name], rel=1e-9, abs=1e-12), name
    again = train_cohort(cfgs, results=tmp_path / "a", progress=False, log=None)  # finished: not retrained
    assert [r["finished_at"] for r in again] == [r["finished_at"] for r in together]


@pytest.mark.slow  # trains in float64 (about 190 s of CPU)
def test_shared_batches_equal_own_batches_when_seeds_match(teacher, tmp_path, float64):
    teacher_id = copy_teacher(teacher, tmp_path / "a")
    copy_teacher(teacher, tmp_path / "b")
    cfgs = _members(teacher_id, seeds=(3, 3, 3, 3))
    shared = train_cohort(cfgs, results=tmp_path / "a", progress=False, log=None, shared_batches=True)
    own = train_cohort(cfgs, results=tmp_path / "b", progress=False, log=None)
    for s, o in zip(shared, own):
        assert s["environment"]["cohort"]["shared_batches"] and not o["environment"]["cohort"]["shared_batches"]
        assert _max_diff(tmp_path / "a", tmp_path / "b", s["run_id"]) < 1e-10


@pytest.mark.slow  # trains in float64 (about 350 s of CPU)
def test_interrupted_cohort_resumes_as_cohort_and_member_alone(teacher, tmp_path, float64):
    import atlib.training.cohorts as ct
    for name in ("full", "cut", "cut_single"):
        copy_teacher(teacher, tmp_path / name)
    cfgs = _members(teacher[1])
    full = train_cohort(cfgs, results=tmp_path / "full", progress=False, log=None)

    for name in ("cut", "cut_single"):
        with interrupted_on_call(ct, "cohort_epoch", 3):
            train_cohort(cfgs, results=tmp_path / name, progress=False, log=None)
    store = RunStore(tmp_path / "cut")
    assert all(store.status(r["run_id"]) == "interrupted" for r in full)
    resumed = train_cohort(cfgs, results=tmp_path / "cut", progress=False, log=None)
    alone = [engine.train(c, results=tmp_path / "cut_single", progress=False, log=None) for c in cfgs]
    for f, r, a in zip(full, resumed, alone):
        assert _max_diff(tmp_path / "full", tmp_path / "cut", r["run_id"]) < 1e-10
        assert _max_diff(tmp_path / "full", tmp_path / "cut_single", a["run_id"]) < 1e-10
        assert len(RunStore(tmp_path / "cut").read_metrics(r["run_id"])) == 3


def test_cohort_refuses_members_it_cannot_train(teacher, tmp_path):
    teacher_id = copy_teacher(teacher, tmp_path)
    base = _members(teacher_id)[:2]
    with pytest.raises(engine.TrainingError, match="must share lr"):
        train_cohort([base[0], RunConfig(**{**base[1].to_dict(), "lr": 0.05})], results=tmp_path, log=None)
    with pytest.raises(engine.TrainingError, match="cannot join a cohort"):
        train_cohort(_members(teacher_id, seeds=(0, 1), methods=("student", "fact")), results=tmp_path, log=None)
    with pytest.raises(engine.TrainingError, match="shared batches need members with one seed"):
        train_cohort(base, results=tmp_path, log=None, shared_batches=True)
    with pytest.raises(engine.TrainingError, match="same run twice"):
        train_cohort([base[0], base[0]], results=tmp_path, log=None)
    assert cohort_key(base[0]) == cohort_key(base[1]) is not None
    assert cohort_key(RunConfig(student="nin-thin")) is None


@pytest.mark.slow  # trains in float64 (about 120 s of CPU)
def test_channels_last_is_the_same_training(teacher, tmp_path, float64):
    """NHWC activations (the GPU default) change the layout, not the arithmetic: single runs and cohorts."""
    teacher_id = copy_teacher(teacher, tmp_path / "nchw")
    copy_teacher(teacher, tmp_path / "nhwc")
    cfgs = _members(teacher_id, seeds=(0, 1), methods=("student", "at"))
    single = cfgs[1]
    a = engine.train(single, results=tmp_path / "nchw", progress=False, log=None, channels_last=False)
    b = engine.train(single, results=tmp_path / "nhwc", progress=False, log=None, channels_last=True)
    assert not a["environment"]["channels_last"] and b["environment"]["channels_last"]
    assert _max_diff(tmp_path / "nchw", tmp_path / "nhwc", a["run_id"]) < 1e-10
    copy_teacher(teacher, tmp_path / "cohort")
    together = train_cohort(cfgs, results=tmp_path / "cohort", progress=False, log=None, channels_last=True)
    assert together[1]["environment"]["channels_last"]
    assert _max_diff(tmp_path / "nchw", tmp_path / "cohort", a["run_id"]) < 1e-10


# -- Table 3's runs: BN-free NIN students, input-gradient terms (double backpropagation) ----------------------------
TABLE3 = dict(COMMON, lr=0.02, weight_decay=0.0, augment="flip")  # Table 3's protocol (grids.PROTOCOLS)


@pytest.fixture(scope="module")
def nin_teacher(tmp_path_factory):
    # a NIN-thin teacher: any BN-free NIN does for the test (Table 3's is NIN-wide)
    return train_teacher(tmp_path_factory.mktemp("nin_teacher"), RunConfig(
        student="nin-thin-nobn", **{**TABLE3, "epochs": 1, "lr_milestones": [], "train_subset": 64, "test_subset": 64}))


@pytest.mark.slow  # trains in float64 (about 250 s of CPU)
def test_table3_cohort_equals_separate_runs(nin_teacher, tmp_path, float64_untied):
    teacher_id = copy_teacher(nin_teacher, tmp_path / "a")
    copy_teacher(nin_teacher, tmp_path / "b")
    methods, seeds = ("student", "min-l2", "symmetry", "grad-at"), (0, 1, 2, 0)  # KD and AT: the WRN tests above
    # 96 = 64 + 32; no lr drop, so the momentum a checkpoint keeps matters to a resumed run
    small = {**TABLE3, "epochs": 2, "lr_milestones": [], "train_subset": 96, "test_subset": 64}
    cfgs = [RunConfig(student="nin-thin-nobn", method=m, terms=method_terms(m) if m == "student" else
                      method_terms(m, beta=20.0), seed=s, teacher=teacher_id if m == "grad-at" else None, **small)
            for m, s in zip(methods, seeds)]
    assert len({cohort_key(c) for c in cfgs}) == 1 and cohort_key(cfgs[0]) is not None
    together = train_cohort(cfgs, results=tmp_path / "a", progress=False, log=None)
    alone = [engine.train(c, results=tmp_path / "b", progress=False, log=None) for c in cfgs]
    store_a, store_b = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    for t, s, method in zip(together, alone, methods):
        assert t["run_id"] == s["run_id"] and t["environment"]["cohort"]["size"] == 4
        assert _max_diff(tmp_path / "a", tmp_path / "b", t["run_id"]) < 1e-10, method
        for rt, rs in zip(store_a.read_metrics(t["run_id"]), store_b.read_metrics(s["run_id"])):
            assert rt["test_error"] == rs["test_error"] and set(rt["terms"]) == set(rs["terms"])
            for key in ("train_loss", "train_error", "test_loss"):
                assert rt[key] == pytest.approx(rs[key], rel=1e-9, abs=1e-9), (method, key)
            for name in rs["terms"]:
                assert rt["terms"][name] == pytest.approx(rs["terms"][name], rel=1e-9, abs=1e-12), (method, name)
    # interrupted after its first epoch, the cohort resumes from its members' single-run checkpoints
    import atlib.training.cohorts as ct
    copy_teacher(nin_teacher, tmp_path / "cut")
    with interrupted_on_call(ct, "cohort_epoch", 2):
        train_cohort(cfgs, results=tmp_path / "cut", progress=False, log=None)
    assert all(RunStore(tmp_path / "cut").status(r["run_id"]) == "interrupted" for r in together)
    for r in train_cohort(cfgs, results=tmp_path / "cut", progress=False, log=None):
        assert _max_diff(tmp_path / "a", tmp_path / "cut", r["run_id"]) < 1e-10


def test_cohort_families():
    def key(student, method):
        return cohort_key(RunConfig(student=student, method=method, terms=method_terms(method),
                                    teacher=None if method in ("student", "min-l2") else "t", **COMMON))
    assert key("nin-thin-nobn", "min-l2") is not None and key("nin-thin-nobn", "at") is not None
    assert key("nin-thin", "min-l2") is None  # batch norm couples the samples of an input gradient
    assert key("nin-thin-nobn", "fact") is None and key("wrn-10-1", "min-l2") is None
    assert key("wrn-10-1", "at") is not None
