"""The CPU demo (profile cpu-demo): paired differences and verdicts on hand-made numbers; borrowed teachers
(``Settings.teachers_from``, ``RunConfig.teacher_store``); the demo's whole path at a tiny scale (seconds); and its
notebook through papermill. The full profile (~20 minutes) is not run here."""

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
    """The profile at a tiny scale, one run at a time, and without a CIFAR-10 data root (whatever ATLIB_DATA says)
    unless ``data_root`` is given."""
    tiny = dict(results_dir=str(results), epochs=1, train_subset=64, test_subset=50, seeds=[0, 1], concurrent=1,
                data_root=str(Path(results) / "no-data"))
    return settings_from_profile("cpu-demo", **{**tiny, **overrides})


# -- numbers -------------------------------------------------------------------------------------------------------
ERRORS = pd.DataFrame({"seed": [0, 1, 2, 3, 4],
                       "student": [50.0, 48.0, 52.0, 49.0, 51.0],
                       "AT": [47.0, 47.5, 49.0, 47.0, 49.5],                   # -3, -0.5, -3, -2, -1.5
                       "KD": [51.0, 49.0, 53.5, math.nan, math.nan],           # +1, +1, +1.5 (3 seeds)
                       "AT+KD": [49.0, 49.0, 51.0, math.nan, math.nan]})       # -1, +1, -1


def test_paired_statistics_by_hand():
    summary = demo.paired(ERRORS).set_index("method")
    assert summary.loc["student", "median_error"] == 50.0 and summary.loc["student", "n"] == 5
    at = summary.loc["AT"]
    assert at["diffs"] == [-3.0, -0.5, -3.0, -2.0, -1.5] and at["seeds"] == [0, 1, 2, 3, 4]
    assert (at["median_diff"], at["mean_diff"], at["min_diff"], at["max_diff"]) == (-2.0, -2.0, -3.0, -0.5)
    # sd sqrt(4.5/4); half width t(0.975, 4) * sd / sqrt 5 = 2.776445 * 1.0606602 / 2.2360680 = 1.3169835
    assert (at["low"], at["high"]) == (pytest.approx(-3.3169835, abs=1e-6), pytest.approx(-0.6830165, abs=1e-6))
    assert (at["helped"], at["worse"], at["sign_p"]) == (5, 0, 0.0625)  # 2 * 0.5^5, two-sided
    assert at["verdict"] == "helped"
    kd = summary.loc["KD"]  # three seeds: +1, +1, +1.5; mean 7/6, sd sqrt(1/12), half 4.3026527 * sd / sqrt 3
    assert kd["n"] == 3 and kd["seeds"] == [0, 1, 2] and kd["mean_diff"] == pytest.approx(7 / 6)
    assert (kd["low"], kd["high"]) == (pytest.approx(7 / 6 - 0.7171088, abs=1e-6),
                                       pytest.approx(7 / 6 + 0.7171088, abs=1e-6))
    assert (kd["helped"], kd["worse"], kd["sign_p"], kd["verdict"]) == (0, 3, 0.25, "did not help")
    atkd = summary.loc["AT+KD"]  # -1, +1, -1: mean -1/3, sd sqrt(4/3), half 4.3026527 * 2/3 = 2.8684351
    assert (atkd["low"], atkd["high"]) == (pytest.approx(-1 / 3 - 2.8684351, abs=1e-6),
                                           pytest.approx(-1 / 3 + 2.8684351, abs=1e-6))
    assert (atkd["helped"], atkd["worse"], atkd["sign_p"]) == (2, 1, 1.0)
    assert atkd["verdict"] == "cannot tell at this scale"


def test_verdicts_and_table_in_plain_words():
    lines = {r["method"]: demo.verdict(r) for _, r in demo.paired(ERRORS).iterrows() if r["method"] != "student"}
    assert lines["AT"] == ("AT helped: its error was lower by 2.00 points on average, and the whole 95% interval of "
                           "the mean difference -3.32 .. -0.68 points lies below 0; lower than the student's in 5 of "
                           "5 seeds (-3.00, -0.50, -3.00, -2.00, -1.50), sign test p = 0.0625.")
    assert lines["KD"].startswith("KD did not help: its error was higher by 1.17 points on average, and the whole "
                                  "95% interval of the mean difference +0.45 .. +1.88 points lies above 0")
    assert lines["AT+KD"].startswith("AT+KD: cannot tell at this scale: the 95% interval of the mean difference "
                                     "-3.20 .. +2.54 points includes 0")
    table = demo.table_markdown(ERRORS, demo.paired(ERRORS), test_images=10000)
    assert "| 4 | 51.00 | 49.50 | - | - |" in table and "| **median** | **50.00** | **47.50** |" in table
    assert "| AT | 5 | -3.00, -0.50, -3.00, -2.00, -1.50 | -2.00 | -2.00 | -3.32 .. -0.68 | 5 / 0 | 0.0625 | " \
           "helped |" in table
    assert "| KD | 3 | +1.00, +1.00, +1.50 | +1.00 | +1.17 | +0.45 .. +1.88 | 0 / 3 | 0.25 | did not help |" in table
    assert "t = 2.776 for n = 5, 4.303 for n = 3" in table
    # 100 * sqrt(0.5 * 0.5 / 10000) = 0.50 points; on the sample's 1,000 images 1.58
    assert "error of 50.00% (the median student) measured on 10,000 test images has a binomial standard error of " \
           "sqrt(p(1-p)/n) = 0.50 points (on the sample's 1,000 it would be 1.58)" in table


def test_one_seed_gives_no_interval():
    one = ERRORS.iloc[:1]
    row = demo.paired(one).set_index("method").loc["AT"]
    assert row["n"] == 1 and math.isnan(row["low"]) and row["verdict"] == "cannot tell at this scale"
    assert demo.verdict(demo.paired(one).iloc[1]) == ("AT: cannot tell at this scale: one seed (-3.00 points) gives "
                                                      "no interval.")


def test_seeds_per_method():
    settings = _tiny(Path("/nonexistent"), seeds=[0, 1, 2, 3, 4])
    assert demo.seeds_of(settings, "AT") == [0, 1, 2, 3, 4] and demo.seeds_of(settings, "KD") == [0, 1, 2]
    order = [(seed, cell.column) for seed, cell in demo.jobs(settings)]
    assert len(order) == 16 and order[:4] == [(0, "student"), (0, "AT"), (0, "KD"), (0, "AT+KD")]
    assert order[-4:] == [(3, "student"), (3, "AT"), (4, "student"), (4, "AT")]
    with pytest.raises(ValueError, match="unknown demo column 'XX'"):
        demo.seeds_of(settings, "XX")
    with pytest.raises(ValueError, match="concurrent must be a whole number of runs >= 1, got concurrent=0"):
        demo.check(_tiny(Path("/nonexistent"), concurrent=0))


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


def test_the_demo_is_a_grid_like_the_others(tmp_path):
    """Workers train the demo's runs from its grid (``suite: cpu-demo``), seeds per cell included, with its layout."""
    from atlib.paper import workers
    settings = _tiny(tmp_path, seeds=[0, 1, 2, 3, 4])
    ids = lambda configs: sorted(c.run_id(teacher_label=c.teacher_arch) for c in configs)  # noqa: E731
    assert ids(workers.suite(settings)) == ids(demo.configs(settings)) and len(demo.configs(settings)) == 16
    assert settings.channels_last is True and settings_from_profile("one-seed").channels_last is None
    with pytest.raises(ValueError, match="unknown suite 'tables'"):
        workers.suite(_tiny(tmp_path, suite="tables"))


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
    assert demo.final_test(settings) == "sample"
    logged = []
    assert demo.finished(settings) == 0
    records = demo.train(settings, log=logged.append)
    assert demo.finished(settings) == 8
    # a seed's runs with the teacher train first, together on shared batches; then its student
    assert len(records) == 8 and [line.split()[2] for line in logged] == ["AT", "KD", "AT+KD", "student"] * 2
    taught = [r for r in records if "_from-" in r["run_id"]]
    assert all(r["environment"]["shared_batches"] == [t["run_id"] for t in taught if t["config"]["seed"] ==
                                                      r["config"]["seed"]] for r in taught)
    assert all("shared_batches" not in r["environment"] for r in records if r not in taught)
    assert all(r["environment"]["channels_last"] and r["environment"]["threads"] == 1 for r in records)
    store = RunStore(settings.store_root)
    for r in records:
        assert store.status(r["run_id"]) == "finished"
        saved = json.loads((store.run_dir(r["run_id"]) / "config.json").read_text())
        assert "teacher_store" not in saved and saved.get("teacher") in (None, TEACHER_RUN)
        assert (store.run_dir(r["run_id"]) / "metrics.jsonl.gz").is_file()  # compressed, as committed runs are
        assert not (store.run_dir(r["run_id"]) / demo.FINAL_TEST_FILE).exists()  # no data root: no final test
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
    first = report.splitlines()[0]
    assert first.startswith("**Low-data CPU variant, not the paper's protocol")
    assert "WRN-16-2 teacher (200 epochs on full CIFAR-10)" in first
    assert "final test error on the embedded sample's first 50 test images only (no CIFAR-10 data root" in first
    assert "95% t interval of the mean" in report and "measured on 50 test images has a binomial standard" in report
    assert "This notebook trained none of the 8 runs (all were stored)." in report and "12 s" not in report
    assert "2 at a time" not in report and "1 at a time with 1 thread each" in report  # training.json
    again = demo.write_report(settings, table_md, figures, seconds=31.0, trained_now=0).read_text()
    assert again == report  # rebuilt from stored runs: the same file
    assert "This notebook ran in 12 s and trained 3 of the 8 runs." in \
        demo.write_report(settings, table_md, figures, seconds=12.0, trained_now=3).read_text() and "Training these 8 runs took" in report and "(figures/cpu-demo_attention_maps.png)" in report
    assert report.count("| cpu-demo: WRN-16-1 / WRN-16-2") == 8


def test_tiny_demo_final_test_on_cifar10(tmp_path, cifar_root):
    """With a data root, each run's final weights are evaluated on the CIFAR-10 test set (here its first 50 images,
    the tiny settings' test_subset) and the tables use that; the stored evaluations serve without the data root."""
    settings = _tiny(_with_teacher(tmp_path), seeds=[0], data_root=str(cifar_root))
    assert demo.final_test(settings) == "cifar10" and demo.final_images(settings) == 50
    records = demo.train(settings, log=lambda _: None)
    store = RunStore(settings.store_root)
    finals = [json.loads((store.run_dir(r["run_id"]) / demo.FINAL_TEST_FILE).read_text()) for r in records]
    assert all(f["images"] == 50 and f["test_set"] == "CIFAR-10 test set, first 50 images" for f in finals)
    # the evaluation is the engine's: the same weights on the sample's test images give the record's last epoch
    from atlib.data import ImageSet, load_sample
    from atlib.paper.report import load_trained
    _, test = load_sample()
    sample50 = ImageSet(test.images[:50], test.labels[:50], test.classes)
    with demo.torch_threads(1):
        assert demo.evaluate_images(load_trained(records[0]["run_id"], settings), sample50)["test_error"] == \
            records[0]["test_error"]
    errors = demo.per_seed(settings)
    assert [errors.iloc[0][c] for c in ("student", "AT", "KD", "AT+KD")] == [f["test_error"] for f in finals]
    first = demo.describe(settings)
    assert "final test error on the first 50 CIFAR-10 test images (the per-epoch curves: the embedded sample's " \
           "first 50 test images)" in first
    # a report from the stored runs, without the data root, still uses the stored CIFAR-10 evaluations
    elsewhere = _tiny(tmp_path, seeds=[0])
    assert demo.final_test(elsewhere) == "cifar10" and demo.per_seed(elsewhere).equals(errors)
    # ... but not once one of them is missing (then every number comes from the sample, never a mix)
    (store.run_dir(records[1]["run_id"]) / demo.FINAL_TEST_FILE).unlink()
    assert demo.final_test(elsewhere) == "sample"
    assert demo.per_seed(elsewhere).iloc[0]["AT"] == records[1]["test_error"]
    # with the data root, a missing evaluation is made again, the same
    assert demo.per_seed(settings).equals(errors)


@pytest.mark.slow
def test_runs_side_by_side_equal_runs_one_at_a_time(tmp_path):
    """concurrent: 2 trains in two worker processes, each run on one thread, as concurrent: 1 does in this one: the
    same records, epoch by epoch (CPU training is deterministic)."""
    one = _tiny(_with_teacher(tmp_path / "one"), seeds=[0])
    two = _tiny(_with_teacher(tmp_path / "two"), seeds=[0], concurrent=2)
    a, b = demo.train(one, log=lambda _: None), demo.train(two, log=lambda _: None)
    assert [r["run_id"] for r in a] == [r["run_id"] for r in b]
    assert all(r["environment"].get("concurrent_runs") == 2 for r in b)
    for ra, rb in zip(a, b):
        ma = RunStore(one.store_root).read_metrics(ra["run_id"])
        mb = RunStore(two.store_root).read_metrics(rb["run_id"])
        assert [(m["train_loss"], m["test_loss"], m["test_error"]) for m in ma] == \
            [(m["train_loss"], m["test_loss"], m["test_error"]) for m in mb]


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


def test_the_committed_demo_keeps_the_weights_its_maps_load():
    """The maps figure (and the tutorial) load the first seed's student and AT weights; .gitignore keeps only those of
    the demo's weights, so they must be in the repository under the profile's current run ids."""
    import subprocess
    settings = settings_from_profile("cpu-demo", results_dir=str(REPO / "results"))
    by_column = {c.column: c for c in demo.cells()}
    for column in ("student", "AT"):
        path = settings.store_root / "runs" / run_id_for(by_column[column], settings, settings.seeds[0]) / "weights.pt"
        assert path.is_file(), path
        if (REPO / ".git").exists():
            tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(path.relative_to(REPO))], cwd=REPO,
                                     capture_output=True)
            assert tracked.returncode == 0, f"{path} is not committed (.gitignore?)"
