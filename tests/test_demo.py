"""The CPU demo (profile cpu-demo): paired differences and verdicts on hand-made numbers; borrowed teachers
(``Settings.teachers_from``, ``RunConfig.teacher_store``); the demo's whole path at a tiny scale (seconds); and its
notebook through papermill. The full profile (~17 minutes) is not run here."""

import json
import math
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from atlib import cli
from atlib.paper import demo
from atlib.paper.pipeline import ParameterError, PipelineError, run_sequence
from atlib.paper.settings import Settings, settings_from_profile
from atlib.paper.suite import MissingTeacherError, config_for, run_id_for, suite_jobs
from atlib.training.command import train_command
from atlib.training.store import RunStore

REPO = Path(__file__).resolve().parents[1]
ONE_SEED_RUNS = REPO / "results" / "one-seed" / "runs"
TEACHER_RUN = "wrn-16-2_student_s0-650d9624"  # the committed 200-epoch WRN-16-2 (6.07%)


def _with_teacher(tmp_path: Path) -> Path:
    """A results directory holding (a copy of) the committed one-seed teacher run."""
    shutil.copytree(ONE_SEED_RUNS / TEACHER_RUN, tmp_path / "one-seed" / "runs" / TEACHER_RUN)
    return tmp_path


def _tiny(results: Path, **overrides) -> Settings:
    return settings_from_profile("cpu-demo", results_dir=str(results), epochs=1, train_subset=64, test_subset=50,
                                 seeds=[0, 1], **overrides)


# -- numbers -------------------------------------------------------------------------------------------------------
def test_paired_differences_and_verdicts_by_hand():
    errors = pd.DataFrame({"seed": [0, 1, 2], "student": [50.0, 48.0, 52.0], "AT": [47.0, 47.5, 49.0],
                           "KD": [51.0, 47.0, math.nan], "AT+KD": [50.5, 49.0, 53.0]})
    summary = demo.paired(errors).set_index("method")
    assert summary.loc["student", "median_error"] == 50.0
    at = summary.loc["AT"]
    assert at["diffs"] == [-3.0, -0.5, -3.0] and at["median_diff"] == -3.0
    assert (at["min_diff"], at["max_diff"], at["helped"], at["n"]) == (-3.0, -0.5, 3, 3)
    assert at["sign_p"] == 0.125  # 0.5^3: all three better by chance alone
    kd = summary.loc["KD"]  # seed 2 not finished: paired over the two seeds that are
    assert kd["n"] == 2 and kd["diffs"] == [1.0, -1.0] and kd["helped"] == 1 and math.isnan(kd["sign_p"])
    assert summary.loc["AT+KD", "helped"] == 0
    lines = {r["method"]: demo.verdict(r) for _, r in demo.paired(errors).iterrows() if r["method"] != "student"}
    assert lines["AT"].startswith("AT helped in every seed (3 of 3): median paired difference -3.00 points")
    assert "sign test p = 0.125" in lines["AT"]
    assert lines["KD"].startswith("KD helped in 1 of 2 seeds only")
    assert lines["AT+KD"].startswith("AT+KD did not help in any seed (0 of 3)")
    table = demo.table_markdown(errors, demo.paired(errors))
    assert "| 2 | 52.00 | 49.00 | - | 53.00 |" in table and "| **median** | **50.00** | **47.50** |" in table
    assert "3 of 3" in table and "-3.00 (-3.00 .. -0.50)" in table


# -- borrowed teachers ---------------------------------------------------------------------------------------------
def test_demo_runs_learn_from_the_one_seed_teacher_without_training_it(tmp_path):
    settings = _tiny(tmp_path)
    at = config_for(demo.cells()[1], settings, 0)
    assert at.teacher == TEACHER_RUN and at.teacher_store == str(tmp_path / "one-seed")
    assert "teacher_store" not in at.identity()  # where the teacher lives is not what the run computes
    teachers, students = suite_jobs(demo.cells(), settings)
    assert teachers == [] and len(students) == 8 and all(c.dataset == "sample" for c in students)
    # the same configuration wherever the results directory is: run ids do not depend on it
    assert run_id_for(demo.cells()[1], _tiny(tmp_path / "elsewhere"), 0) == \
        run_id_for(demo.cells()[1], settings, 0)


def test_missing_borrowed_teacher_says_how_to_train_it(tmp_path):
    settings = _tiny(tmp_path)
    with pytest.raises(MissingTeacherError) as info:
        demo.train(settings, log=lambda _: None)
    message = str(info.value)
    assert "\n" not in message and TEACHER_RUN in message and str(tmp_path / "one-seed") in message
    command = message.split("train it with: ")[1]
    args = cli.build_parser().parse_args(shlex.split(command)[3:])
    assert cli.config_from_args(args).run_id() == TEACHER_RUN and args.results == str(tmp_path / "one-seed")
    assert not (tmp_path / "cpu-demo").exists()  # nothing started


def test_bad_teachers_from_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="teachers_from must be a plain name, got teachers_from='../x'"):
        Settings(teachers_from="../x")
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        _tiny(tmp_path, teachers_from="nope").teacher_settings()
    with pytest.raises(ValueError, match="borrows its own teachers"):
        _tiny(tmp_path, teachers_from="cpu-demo").teacher_settings()


def test_demo_needs_a_borrowed_teacher(tmp_path):
    with pytest.raises(ValueError, match="set teachers_from"):
        demo.describe(_tiny(tmp_path, teachers_from=None))
    with pytest.raises(ValueError, match="set teachers_from"):
        demo.train(_tiny(tmp_path, teachers_from=None), log=lambda _: None)
    with pytest.raises(MissingTeacherError, match="copy it there from this repository's results/one-seed/runs"):
        demo.describe(_tiny(tmp_path))


@pytest.mark.parametrize("command", [["plan"], ["campaign", "status"], ["campaign", "run", "--deadline", "60"]])
def test_paper_suite_commands_refuse_the_demo_profile(command, capsys):
    from atlib.cli import main
    assert main([*command, "--profile", "cpu-demo"]) == 2
    err = capsys.readouterr().err
    assert "borrows its teachers" in err and "make reproduce PROFILE=cpu-demo" in err
    assert len(err.strip().splitlines()) == 1


def test_teacher_store_travels_through_the_train_command(tmp_path):
    config = config_for(demo.cells()[1], _tiny(tmp_path), 1)
    command = train_command(config, tmp_path / "cpu-demo")
    assert f"--teacher-store {tmp_path / 'one-seed'}" in command
    back = cli.config_from_args(cli.build_parser().parse_args(shlex.split(command)[3:]))
    assert back.teacher_store == config.teacher_store and back.run_id() == config.run_id()


# -- the whole path, tiny ------------------------------------------------------------------------------------------
def test_tiny_demo_trains_resumes_and_reports(tmp_path):
    settings = _tiny(_with_teacher(tmp_path))
    logged = []
    assert demo.finished(settings) == 0
    records = demo.train(settings, log=logged.append)
    assert demo.finished(settings) == 8
    assert len(records) == 8 and [line.split()[2] for line in logged] == ["student", "AT", "KD", "AT+KD"] * 2
    assert all(r["environment"]["channels_last"] for r in records)
    store = RunStore(settings.store_root)
    for r in records:
        assert store.status(r["run_id"]) == "finished"
        saved = json.loads((store.run_dir(r["run_id"]) / "config.json").read_text())
        assert "teacher_store" not in saved and saved.get("teacher") in (None, TEACHER_RUN)
    # a second call trains nothing: the same records come back
    assert demo.train(settings, log=lambda _: None) == records
    # report only (train: false) reads the same records
    assert demo.train(Settings(**{**settings.__dict__, "train": False}), log=lambda _: None) == records

    errors, summary, table_md = demo.write_table(settings)
    assert list(errors["seed"]) == [0, 1]
    assert errors.iloc[0]["AT"] == next(r["test_error"] for r in records if "_at_from" in r["run_id"])
    assert list(pd.read_csv(table_md.with_suffix(".csv")).columns) == ["seed", "student", "AT", "KD", "AT+KD"]
    figures = {"curves": demo.curves_figure(settings), "maps": demo.maps_figure(settings),
               "teacher": demo.teacher_maps_figure(settings)}
    assert all(p is not None and p.stat().st_size > 5000 for p in figures.values())
    report = demo.write_report(settings, table_md, figures, seconds=12.0, trained_now=0).read_text()
    assert report.startswith("**Low-data CPU variant, not the paper's protocol")
    assert "WRN-16-2 teacher (200 epochs on full CIFAR-10)" in report.splitlines()[0]
    assert "This notebook trained none of the 8 runs (all were stored)." in report and "12 s" not in report
    again = demo.write_report(settings, table_md, figures, seconds=31.0, trained_now=0).read_text()
    assert again == report  # rebuilt from stored runs: the same file
    assert "This notebook ran in 12 s and trained 3 of the 8 runs." in \
        demo.write_report(settings, table_md, figures, seconds=12.0, trained_now=3).read_text() and "Training these 8 runs took" in report and "(figures/cpu-demo_attention_maps.png)" in report
    assert report.count("| cpu-demo: WRN-16-1 / WRN-16-2") == 8


def test_demo_figures_wait_for_their_runs(tmp_path):
    settings = _tiny(_with_teacher(tmp_path))
    assert demo.curves_figure(settings) is None and demo.maps_figure(settings) is None
    errors = demo.per_seed(settings)
    assert errors[["student", "AT", "KD", "AT+KD"]].isna().all().all()
    assert "not measured yet" in demo.verdict(demo.paired(errors).iloc[1])


@pytest.mark.slow
def test_demo_notebook_through_the_cli_with_overrides(tmp_path):
    """`make reproduce PROFILE=cpu-demo SET="..."` on a tiny scale: the profile's one notebook, its table, figures,
    report; the library's log lines on stdout."""
    import subprocess
    import sys
    results = _with_teacher(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "atlib", "reproduce", "--profile", "cpu-demo", "--results",
                           str(results), "--set", "epochs=1", "train_subset=64", "test_subset=50", "seeds=[0,1]"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[1/1] 10-cpu-demo.ipynb done in" in proc.stdout
    root = results / "cpu-demo"
    assert sorted(p.name for p in (root / "notebooks").iterdir()) == ["10-cpu-demo.ipynb"]
    assert len(pd.read_csv(root / "tables" / "cpu-demo.csv")) == 2  # seeds=[0,1] took effect
    assert (root / "tables" / "cpu-demo.md").exists()
    assert {p.name for p in (root / "figures").glob("*.png")} == {
        "cpu-demo_test_error.png", "cpu-demo_attention_maps.png", "cpu-demo_teacher_attention.png"}
    assert (root / "REPORT.md").read_text().startswith("**Low-data CPU variant")


@pytest.mark.slow
def test_demo_notebook_without_its_teacher_stops_with_the_command(tmp_path):
    with pytest.raises(PipelineError) as info:
        run_sequence("cpu-demo", {"results_dir": str(tmp_path), "epochs": 1, "train_subset": 64, "test_subset": 50,
                                  "seeds": [0]}, progress=False, log=lambda _: None)
    message = str(info.value)
    assert "MissingTeacherError" in message and TEACHER_RUN in message and "\n" not in message
    assert not (tmp_path / "cpu-demo" / "runs").exists()


@pytest.mark.parametrize("notebooks", [[], "10-cpu-demo.ipynb", [3]])
def test_a_profile_notebooks_list_is_checked(notebooks, tmp_path):
    import yaml
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "profiles" / "cpu-demo.yaml").read_text()),
                                       "notebooks": notebooks, "results_dir": str(tmp_path)}))
    with pytest.raises(ParameterError, match="notebooks must be a non-empty list of notebook names"):
        run_sequence(str(profile), progress=False, log=lambda _: None)
