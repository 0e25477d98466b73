"""The report from records: training policy, missing cells with the command that trains each, provenance, and the
paper's claims judged from stored records (fabricated here, so every verdict is reachable)."""

import math

import pytest
import torch

from atlib import cli
from atlib.models import build_model
from atlib.paper import report
from atlib.paper.grids import TABLES, groups_ablation, table1, table2, teacher_cells
from atlib.paper.schedule import run_cells
from atlib.paper.settings import Settings, settings_from_profile
from atlib.paper.suite import config_for, run_id_for
from atlib.training import engine
from atlib.training.store import RunStore

ENV = {"device": "cuda", "device_name": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": 91200,
       "precision": "fp32", "tf32_conv": True, "commit": "abc1234", "cuda_graph": True, "channels_last": True}


def one_seed(tmp_path, **kw) -> Settings:
    return settings_from_profile("one-seed", results_dir=str(tmp_path), device="cpu", **kw)


def finish(settings: Settings, cell, error: float, seed: int = 0, env: dict | None = None) -> str:
    """A finished run of ``cell`` with this test error, as the engine stores it (config, metrics, record)."""
    config = config_for(cell, settings, seed)
    run_id = config.run_id(teacher_label=config.teacher_arch)
    store = RunStore(settings.store_root)
    store.write_config(run_id, config.identity())
    store.append_metrics(run_id, {"epoch": 1, "seconds": 2.0, "images_per_s": 25000.0, "test_error": error,
                                  "train_error": 1.0})
    store.write_record(run_id, {"run_id": run_id, "status": "finished", "test_error": error,
                                "environment": env or ENV, "train_seconds": 360.0, "images_per_s": 28000.0,
                                "finished_at": "2026-12-05T10:00:00+00:00"})
    return run_id


def cells_of(grid, row=None):
    return {(c.row, c.column): c for c in grid() if row is None or c.row == row}


def test_training_policy(tmp_path):
    assert not one_seed(tmp_path).trains_missing()  # the 200-epoch protocol on a CPU: report only
    assert one_seed(tmp_path, train=True).trains_missing()
    assert settings_from_profile("smoke", results_dir=str(tmp_path)).trains_missing()  # cheap: trains
    assert not settings_from_profile("smoke", results_dir=str(tmp_path), train=False).trains_missing()
    with pytest.raises(ValueError, match="train must be"):
        Settings(train="sometimes")


def test_run_cells_trains_nothing_where_not_allowed(tmp_path, monkeypatch):
    settings = one_seed(tmp_path)
    monkeypatch.setattr(engine, "train", lambda *a, **k: pytest.fail("must not train"))
    teacher = teacher_cells()[0]
    finish(settings, teacher, 6.0)
    records = run_cells([teacher, table1()[0]], settings, log=lambda _m: None)
    assert records[0]["test_error"] == 6.0 and records[1] is None


def test_missing_cells_carry_a_command_that_trains_exactly_them(tmp_path):
    settings = one_seed(tmp_path)
    cells = [c for grid in TABLES.values() for c in grid()]
    missing = report.missing_runs(cells, settings)
    assert len(missing) == len({run_id_for(c, settings, 0) for c in cells})
    for m in missing:
        words = m["command"].split()
        assert words[:4] == ["python", "-m", "atlib", "train"]
        config = cli.config_from_args(cli.build_parser().parse_args(words[3:]))
        assert config.run_id(teacher_label=config.teacher_arch) == m["run_id"]
        assert words[-2:] == ["--results", str(settings.store_root)]
    at = next(m for m in missing if m["label"] == "WRN-16-1 / WRN-16-2 | AT")
    assert at["seconds"] > 0 and not at["approximate"] and at["teacher_missing"]  # an empty store: no teacher
    text = report.missing_markdown(missing, settings)
    assert "python -m atlib campaign --profile one-seed" in text and "GPU-min on an H200" in text


def test_in_progress_cell_shows_its_epoch_and_a_smaller_estimate(tmp_path):
    settings = one_seed(tmp_path)
    cell = cells_of(table1)[("WRN-16-1 / WRN-16-2", "student")]
    config = config_for(cell, settings, 0)
    store = RunStore(settings.store_root)
    store.write_config(config.run_id(), config.identity())
    store.save_checkpoint(config.run_id(), {"epoch": 50})
    summary = report.summarize(report.collect([cell], settings))
    assert summary["status"][0] == "in progress (epoch 50/200)" and summary["n"][0] == 0
    assert "*in progress (epoch 50/200)*" in report.markdown_table(summary, "t")
    full = report.missing_runs([cell], settings.__class__(**{**settings.__dict__, "results_dir": str(tmp_path / "x")}))
    part = report.missing_runs([cell], settings)
    assert part[0]["seconds"] == pytest.approx(full[0]["seconds"] * 0.75)


def test_provenance_of_a_finished_run(tmp_path):
    settings = one_seed(tmp_path)
    teacher = teacher_cells()[0]
    run_id = finish(settings, teacher, 6.07)
    rows = report.provenance_rows([teacher], settings)
    assert len(rows) == 1
    text = report.provenance_markdown(rows)
    for needle in (run_id, "NVIDIA H200", "2.11.0+cu130", "13.0 / 91200", "fp32 (TF32 convs)", "abc1234",
                   "2026-12-05 10:00:00", "6.0 min", "28,000", "single, graph, NHWC"):
        assert needle in text, needle


def test_claims_verdicts(tmp_path):
    settings = one_seed(tmp_path)
    assert {c["verdict"] for c in report.claims(settings)} == {"not measured yet"}

    t1 = cells_of(table1)
    finish(settings, t1[("WRN-16-1 / WRN-16-2", "student")], 8.8)
    finish(settings, t1[("WRN-16-1 / WRN-16-2", "AT")], 7.9)
    at = report.claims(settings)[0]  # AT lowers the student's error in every row
    assert at["verdict"] == "agrees so far (1 of 4 measured)" and "-0.90" in at["evidence"][0]
    assert "one seed per cell" in report.claims_markdown([at])

    finish(settings, t1[("WRN-16-1 / WRN-40-1", "student")], 8.5)
    finish(settings, t1[("WRN-16-1 / WRN-40-1", "AT")], 8.6)  # AT worse in this row
    assert report.claims(settings)[0]["verdict"] == "disagrees"

    t2 = cells_of(table2)
    for row, error in (("F_sum (p=1)", 8.0), ("F_sum^4", 8.1), ("F_max^1", 8.05)):
        finish(settings, t2[(row, "error")], error)
    f = report.claims(settings)[1]  # F_sum^2 is the best attention function
    assert f["verdict"] == "agrees"  # F_sum^2 is Table 1's AT run: 7.9, the lowest of the four
    assert "F_sum^2: 7.90" in f["evidence"]

    g = cells_of(groups_ablation)
    for row, error in (("group 1", 8.1), ("group 2", 7.95), ("group 3", 7.97)):
        finish(settings, g[(row, "error")], error)
    assert report.claims(settings)[2]["verdict"] == "agrees"  # groups 1-3 is the AT run: 7.9
    finish(settings, g[("group 2", "error")], 7.8)
    assert report.claims(settings)[2]["verdict"] == "disagrees"

    for column, error in (("F-ActT", 8.5), ("KD", 7.4), ("AT+KD", 7.5)):
        finish(settings, t1[("WRN-16-1 / WRN-16-2", column)], error)
    kd = report.claims(settings)[3]  # as in the paper, KD is best in this row: one exception is allowed
    assert kd["verdict"] == "agrees so far (1 of 4 measured): best in 0 of 1" and "best KD 7.40" in kd["evidence"][0]
    for column, error in (("student", 8.5), ("AT", 8.6), ("F-ActT", 8.4), ("KD", 8.0), ("AT+KD", 8.2)):
        finish(settings, t1[("WRN-16-1 / WRN-40-1", column)], error)
    assert report.claims(settings)[3]["verdict"].startswith("disagrees")


def test_claims_with_several_seeds_show_n_and_spread(tmp_path):
    settings = settings_from_profile("paper", results_dir=str(tmp_path), device="cpu")
    t1 = cells_of(table1)
    for seed, (st, at) in enumerate([(8.8, 7.9), (8.7, 8.0), (8.9, 7.8)]):
        finish(settings, t1[("WRN-16-1 / WRN-16-2", "student")], st, seed)
        finish(settings, t1[("WRN-16-1 / WRN-16-2", "AT")], at, seed)
    claim = report.claims(settings)[0]
    assert "AT 7.90 (n=3, 7.80..8.00) vs student 8.80 (n=3, 8.70..8.90)" in claim["evidence"][0]
    assert "one seed" not in report.claims_markdown([claim])


def test_paper_profile_reads_and_writes_runs_in_the_one_seed_store(tmp_path):
    paper = settings_from_profile("paper", results_dir=str(tmp_path), device="cpu")
    assert paper.store_root == tmp_path / "one-seed" and paper.root == tmp_path / "paper"
    teacher = teacher_cells()[0]
    finish(one_seed(tmp_path), teacher, 6.07)
    summary = report.summarize(report.collect([teacher], paper))
    assert summary["n"][0] == 1 and summary["status"][0] == "4 of 5 seeds not run yet"
    assert math.isclose(summary["ours_median"][0], 6.07)


def test_figures_of_missing_runs_are_not_built(tmp_path):
    settings = one_seed(tmp_path)
    assert report.training_curves_figure(settings) is None
    assert report.attention_comparison(settings) is None
    row = cells_of(table1, "WRN-16-1 / WRN-16-2")
    for column in ("student", "teacher"):
        cell = row[("WRN-16-1 / WRN-16-2", column)]
        run_id = finish(settings, cell, 8.0)
        torch.manual_seed(0)
        RunStore(settings.store_root).save_weights(run_id, build_model(cell.student).state_dict())
    path = report.attention_comparison(settings, count=2)
    assert path is not None and path.exists()
    assert report.training_curves_figure(settings).exists()


def test_epochs_with_the_teacher_ahead_are_a_segment_of_their_own():
    from atlib.training.provenance import segments
    cpu = {"device_name": "AMD EPYC (AVX-512)", "threads": 1, "torch": "2.14.1", "commit": "abc1234",
           "precision": "fp32", "channels_last": True, "cuda_graph": False, "compiled": False}
    rows = [{"epoch": e, "images_per_s": rate, "at": f"2026-12-08T0{e}:00:00Z", "environment": env}
            for e, rate, env in ((1, 200.0, cpu), (2, 210.0, cpu), (3, 260.0, {**cpu, "teacher_ahead": True}))]
    segs = [{"run_id": "r", "status": "in progress", **seg} for seg in segments(rows)]
    assert [(s["first"], s["last"], s["images_per_s"]) for s in segs] == [(1, 2, 205.0), (3, 3, 260.0)]
    text = report.segments_markdown(segs)
    assert "| 1-2 (so far) | AMD EPYC (AVX-512) | 1 | 2.14.1 |" in text
    assert "| 3-3 (so far) | AMD EPYC (AVX-512) | 1 + teacher ahead | 2.14.1 |" in text


def test_headline_in_progress_then_finished_with_its_verdict_and_segments(tmp_path):
    settings = one_seed(tmp_path)
    row = cells_of(table1)
    store = RunStore(settings.store_root)
    student = config_for(row[("WRN-16-1 / WRN-16-2", "student")], settings, 0)
    cpu = {"device_name": "AMD EPYC (no AVX-512)", "threads": 1, "torch": "2.14.1", "commit": "abc1234",
           "precision": "fp32", "channels_last": True, "cuda_graph": False, "compiled": False}
    gpu = {**cpu, "device_name": "NVIDIA H200", "threads": 8, "commit": "def5678", "channels_last": True}
    store.write_config(student.run_id(), student.identity())
    for epoch, error in ((1, 60.0), (2, 41.5), (3, 33.25)):
        store.append_metrics(student.run_id(), {"epoch": epoch, "test_error": error, "seconds": 360.0,
                                                "images_per_s": 150.0, "at": f"2026-12-07T0{epoch}:00:00Z",
                                                "environment": cpu})
    store.save_checkpoint(student.run_id(), {"epoch": 2})  # the third line is a cut epoch: not counted
    text = report.headline_markdown(settings)
    assert "| student | 41.50 now | 8.77 | training: epoch 2/200, about 20 h left at its rate |" in text
    assert "| AT | - | 7.93 | not run yet |" in text and "Not answered yet" in text
    segs = report.segment_rows([row[("WRN-16-1 / WRN-16-2", "student")]], settings)
    assert [(s["first"], s["last"], s["how"]["device_name"]) for s in segs] == [(1, 2, "AMD EPYC (no AVX-512)")]
    assert "| 1-2 (so far) | AMD EPYC (no AVX-512) | 1 | 2.14.1 | abc1234 | NHWC | 2026-12-07 01:00 .. " \
        "2026-12-07 02:00 | 150 |" in report.segments_markdown(segs)

    # both finish: the student's last epochs on a GPU (two segments), AT 0.5 points better
    at = config_for(row[("WRN-16-1 / WRN-16-2", "AT")], settings, 0)
    for config, errors in ((student, {198: 9.0, 199: 8.9, 200: 8.8}), (at, {200: 8.3})):
        for epoch, error in errors.items():
            store.append_metrics(config.run_id(teacher_label=config.teacher_arch),
                                 {"epoch": epoch, "test_error": error, "seconds": 1.0, "images_per_s": 3e4,
                                  "at": "2026-12-08T00:00:00Z", "environment": gpu})
    from atlib.training.provenance import segments
    assert [(s["first"], s["last"]) for s in segments(store.read_metrics(student.run_id()))] == \
        [(1, 3), (198, 200)]  # a gap in the epochs starts a new segment too
    finish(settings, row[("WRN-16-1 / WRN-16-2", "student")], 8.8)
    finish(settings, row[("WRN-16-1 / WRN-16-2", "AT")], 8.3)
    text = report.headline_markdown(settings)
    assert "| student | 8.80 | 8.77 | finished (200 epochs) |" in text
    assert "**AT beats the student by 0.50 points** (paper: 0.84). One seed each" in text
    finish(settings, row[("WRN-16-1 / WRN-16-2", "AT")], 9.0)
    assert "**AT does not beat the student here** (AT minus student: +0.20 points" in report.headline_markdown(settings)
