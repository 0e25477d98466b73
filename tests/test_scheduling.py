"""GPU scheduling as data: which runs train together (``schedule``), the plan and its estimate
(``atlib.paper.plan``, ``atlib plan``), ``run_cells`` training a cohort, and ``StepRunner``'s eager bookkeeping."""

import json

import pytest
import torch

from atlib.cli import main
from atlib.methods import method_terms
from atlib.paper.grids import table2
from atlib.paper.plan import estimate, format_plan, load_rates, plan_groups, shape_key
from atlib.paper.schedule import run_cells, schedule
from atlib.paper.settings import Settings
from atlib.paper.suite import run_id_for
from atlib.training.config import RunConfig
from atlib.training.steps import StepRunner, zero_momentum


def _run(student="wrn-16-1", method="at", teacher_arch="wrn-16-2", seed=0, **extra):
    return RunConfig(student=student, method=method, terms=method_terms(method), seed=seed,
                     teacher=None if method == "student" else f"{teacher_arch}-run", teacher_arch=None
                     if method == "student" else teacher_arch, **extra)


def test_schedule_groups_narrow_students_by_teacher_and_fills_with_teacherless_runs():
    runs = [_run(seed=s) for s in range(10)] + [_run(teacher_arch="wrn-40-1", seed=s) for s in range(3)] \
        + [_run(method="student", seed=s) for s in range(4)] + [_run(method="fact", seed=0)] \
        + [_run(student="wrn-16-2", teacher_arch="wrn-40-2", seed=s) for s in range(8)]
    groups = schedule(runs, size=12)
    sizes = sorted(len(g) for g in groups)
    assert sum(sizes) == len(runs)
    cohorts = [g for g in groups if len(g) > 1]
    assert len(cohorts) == 1 and len(cohorts[0]) == 12  # 10 AT from 16-2 + 2 students; 40-1 chunk of 3+2 too small
    assert {c.teacher_arch for c in cohorts[0]} == {"wrn-16-2", None}
    assert all(len(g) == 1 for g in groups if g[0].student == "wrn-16-2" or g[0].method == "fact")
    assert all(len(g) == 1 for g in schedule(runs, size=1))


def test_shared_batches_cohorts_hold_one_seed():
    runs = [_run(seed=s % 2) for s in range(16)]
    for group in schedule(runs, size=16, share_batches=True):
        assert len({c.seed for c in group}) == 1 and len(group) == 8


def test_plan_and_estimate(tmp_path):
    settings = Settings(profile="paper", dataset="cifar10", seeds=[0, 1, 2, 3, 4], cohort=16)
    rows = plan_groups(settings)
    assert sum(r["runs"] for r in rows) == 182
    assert sum(r["images"] for r in rows) == 182 * 200 * 50_000
    shape = rows[0]["shape"]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [{"label": "x", "shape": shape, "images_per_s": 25_000.0}]}))
    rates = load_rates(bench)
    assert rates == {shape_key(shape): 25_000.0}
    timed = estimate(rows, rates)
    first = timed[0]
    assert first["seconds"] == pytest.approx((10_000_000 + 2_000_000 / 3) / 25_000 + 200 * 0.05)
    text = format_plan(timed)
    assert "25,000" in text and "groups not measured" in text


def test_plan_command(tmp_path, capsys):
    assert main(["plan", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "total: 182 runs" in out and "cohort of 16: wrn-16-1 from wrn-16-2" in out
    assert main(["plan", "--profile", "nope"]) == 2
    assert main(["plan", "--rates", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # trains a cohort and its teacher (about 25 s of CPU)
def test_run_cells_trains_a_cohort(tmp_path):
    settings = Settings(profile="t", dataset="sample", epochs=1, train_subset=128, test_subset=100,
                        device="cpu", results_dir=str(tmp_path), progress=False, cohort=8)
    cells = table2()  # 7 WRN-16-1 rows: the student and six AT variants (and the WRN-16-2 teacher)
    records = run_cells(cells, settings, log=lambda _m: None)
    assert len(records) == 7
    assert {r["environment"]["cohort"]["size"] for r in records} == {7}
    assert [r["run_id"] for r in records] == [run_id_for(c, settings, 0) for c in cells]


def test_step_runner_sums_statistics_eagerly():
    seen = []

    def body(x, y):
        seen.append(x.shape[0])
        return {"loss": x.sum().double(), "wrong": torch.tensor([1.0, 2.0], dtype=torch.float64)}

    runner = StepRunner(body, torch.device("cpu"))
    runner(torch.ones(4, 1), torch.zeros(4))
    runner(torch.ones(2, 1), torch.zeros(2))
    totals = runner.totals()
    assert float(totals["loss"]) == 6.0 and totals["wrong"].tolist() == [2.0, 4.0] and runner.seen == 6
    runner.reset()
    assert float(runner.totals()["loss"]) == 0.0 and runner.seen == 0
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        StepRunner(body, torch.device("cpu"), graph=True)


def test_step_runner_statistics_may_change_between_epochs_not_within():
    names = ["loss"]

    def body(x, y):
        return {name: x.sum().double() for name in names}

    runner = StepRunner(body, torch.device("cpu"))
    runner(torch.ones(2, 1), torch.zeros(2))
    names.append("at")  # a term that starts later: a new epoch
    with pytest.raises(RuntimeError, match=r"statistics changed within an epoch: \['loss'\] then \['loss', 'at'\]"):
        runner(torch.ones(2, 1), torch.zeros(2))
    runner.reset()
    runner(torch.ones(3, 1), torch.zeros(3))
    assert {k: float(v) for k, v in runner.totals().items()} == {"loss": 3.0, "at": 3.0} and runner.seen == 3


def test_zero_momentum_equals_a_fresh_optimizer():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(5))
    p2 = torch.nn.Parameter(p1.detach().clone())
    a = torch.optim.SGD([p1], lr=0.1, momentum=0.9, weight_decay=5e-4)
    b = torch.optim.SGD([p2], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for opt, p in ((a, p1), (b, p2)):
        p.grad = torch.ones(5)
        opt.step()
    zero_momentum(a)
    b.state.clear()
    for opt, p in ((a, p1), (b, p2)):
        p.grad = torch.full((5,), 0.5)
        opt.step()
    assert torch.equal(p1, p2)
