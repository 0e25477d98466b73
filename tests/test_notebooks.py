"""Notebooks: clean in git, one short parameters cell (a profile, overrides of its keys, and a notebook's own few
knobs), no block of code copied between notebooks, bad parameters reported, failures stop the sequence with one line;
the executed copies in docs/notebooks (with their figures, in step with the notebooks); the main job (the one-seed
report from the committed runs, training nothing on a CPU); and (slow) the whole smoke sequence through papermill."""

import ast
import base64
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from atlib.paper.grids import TABLES
from atlib.paper.pipeline import (ALL_NOTEBOOKS, DEMO_NOTEBOOKS, NOTEBOOK_ARGS, NOTEBOOKS, NOTEBOOK_DIR, ParameterError,
                                  PipelineError, SEQUENCE_KEY, check_parameters, notebook_call, notebook_parameters,
                                  run_sequence)
from atlib.paper.settings import (PROFILE_DIR, PROFILE_KEYS, Settings, describe_settings, notebook_settings,
                                  settings_from_profile)
from atlib.paper.suite import run_id_for, teacher_config

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PARAMETER_LINES = 12  # a parameters cell holds what a reader would change, nothing else
SHARED_BLOCK = 5          # no run of this many code lines appears in two notebooks
EXECUTED = REPO / "docs" / "notebooks"  # executed copies with their outputs (`make notebooks`)
EXECUTED_COPIES = {"01-tutorial.ipynb": 4, "10-cpu-demo.ipynb": 3}  # and the figures each shows
EXECUTED_BYTES = 2_000_000  # all executed copies together


def _parameters_cell(name: str):
    book = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    return next(c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", []))


def code_lines(book) -> list[str]:
    """A notebook's code lines in order, whitespace-normalised, blank lines left out."""
    return [" ".join(line.split()) for cell in book.cells if cell.cell_type == "code"
            for line in cell.source.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_notebook_is_clean_with_one_parameters_cell(name):
    book = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "committed with outputs"
    tagged = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_parameters_are_a_profile_its_overrides_and_a_few_knobs(name):
    """``profile`` (one-seed for the paper's notebooks, cpu-demo for the demo) and ``overrides`` (none), then the
    notebook's own knobs, none of them a profile key; papermill reads every assignment of the cell (a line it cannot
    parse, e.g. with '=' in its comment, would silently stop being a parameter)."""
    cell = _parameters_cell(name)
    assert len([line for line in cell.source.splitlines() if line.strip()]) <= MAX_PARAMETER_LINES
    declared = notebook_parameters(NOTEBOOK_DIR / name)
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    assert list(declared) == assigned
    assert list(declared)[:2] == list(NOTEBOOK_ARGS)
    assert eval(declared["profile"]) == ("cpu-demo" if name in DEMO_NOTEBOOKS else "one-seed")  # defaults: source text
    assert eval(declared["overrides"]) == {}
    assert not (set(declared) - set(NOTEBOOK_ARGS)) & set(PROFILE_KEYS)  # a knob never shadows a profile key


def test_no_block_of_code_appears_in_two_notebooks():
    """Plumbing lives in atlib (``notebook_settings``, ``report``, ``demo``), not copied from notebook to notebook."""
    blocks = {}
    for name in ALL_NOTEBOOKS:
        lines = code_lines(nbformat.read(NOTEBOOK_DIR / name, as_version=4))
        blocks[name] = {tuple(lines[i:i + SHARED_BLOCK]) for i in range(len(lines) - SHARED_BLOCK + 1)}
    shared = [(a, b, "\n".join(block)) for a, b in itertools.combinations(ALL_NOTEBOOKS, 2)
              for block in sorted(blocks[a] & blocks[b])]
    assert not shared, shared[0]


def test_demo_profile_runs_the_demo_notebook():
    assert yaml.safe_load((PROFILE_DIR / "cpu-demo.yaml").read_text())[SEQUENCE_KEY] == DEMO_NOTEBOOKS


def test_notebook_settings_are_the_profile_with_overrides():
    assert notebook_settings("one-seed") == settings_from_profile("one-seed")
    settings = notebook_settings("smoke", {"epochs": 1, "seeds": [0, 1]})
    assert settings == settings_from_profile("smoke", epochs=1, seeds=[0, 1])
    line = describe_settings(settings, {"epochs": 1, "seeds": [0, 1]})
    assert line.startswith("profile smoke with epochs=1, seeds=[0, 1]: the embedded sample data") and \
        "results in results/smoke" in line
    assert notebook_settings(str(PROFILE_DIR / "cpu-demo.yaml")).teachers_from == "one-seed"
    with pytest.raises(ValueError, match=r"overrides \['learning_rate'\] are not profile keys"):
        notebook_settings("smoke", {"learning_rate": 0.1})


def test_each_notebook_gets_the_profile_its_overrides_and_its_own_knobs():
    """What the pipeline passes to papermill: the profile's name, the overrides of profile keys (none: no
    ``overrides``), and the values of the notebook's own knobs (only to the notebook that declares them)."""
    profile = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    changes = {"epochs": 1, "steps": 5}
    tutorial, table = NOTEBOOK_DIR / "01-tutorial.ipynb", NOTEBOOK_DIR / "03-table1.ipynb"
    assert notebook_call(tutorial, "smoke", {**profile, **changes}, changes) == {
        "profile": "smoke", "steps": 5, "overrides": {"epochs": 1}}
    assert notebook_call(table, "smoke", {**profile, **changes}, changes) == {"profile": "smoke",
                                                                              "overrides": {"epochs": 1}}
    assert notebook_call(table, "smoke", profile, {}) == {"profile": "smoke"}
    check_parameters([tutorial, table], {**profile, **changes})  # a knob of one notebook of the sequence
    with pytest.raises(ParameterError, match=r"03-table1.ipynb does not declare parameter\(s\) \['steps'\]"):
        check_parameters(table, {**profile, **changes})


def test_profiles_cover_every_parameter():
    keys = set(yaml.safe_load((PROFILE_DIR / "one-seed.yaml").read_text()))
    assert sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")) == ["cpu-demo", "one-seed", "paper", "smoke"]
    for name in ("smoke", "one-seed", "paper", "cpu-demo"):
        profile = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
        profile.pop(SEQUENCE_KEY, None)  # read by the pipeline, not a notebook parameter
        assert set(profile) == keys
        settings = Settings(**{k: v for k, v in profile.items()})
        assert settings.follows_protocol == (name in ("one-seed", "paper")), name
    assert yaml.safe_load((PROFILE_DIR / "paper.yaml").read_text())["seeds"] == [0, 1, 2, 3, 4]


def test_unknown_parameter_is_reported_before_running(tmp_path):
    with pytest.raises(ParameterError, match=r"does not declare parameter\(s\) \['learning_rate'\]"):
        check_parameters(NOTEBOOK_DIR / NOTEBOOKS[0], {"epochs": 1, "learning_rate": 0.1})
    profile = tmp_path / "bad.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text()),
                                       "learning_rate": 0.1, "results_dir": str(tmp_path)}))
    proc = subprocess.run([sys.executable, "-m", "atlib", "reproduce", "--profile", str(profile)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "learning_rate" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "smoke").exists()  # nothing ran
    with pytest.raises(ParameterError, match="'no-such-profile'"):
        run_sequence("no-such-profile")


def test_profile_naming_an_unknown_notebook_is_reported_before_running(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load((PROFILE_DIR / "cpu-demo.yaml").read_text()),
                                       "notebooks": ["99-nope.ipynb"], "results_dir": str(tmp_path)}))
    with pytest.raises(ParameterError, match=r"names unknown notebook\(s\) \['99-nope.ipynb'\]"):
        run_sequence(str(profile), progress=False, log=lambda _: None)
    assert not (tmp_path / "cpu-demo").exists()


def test_failing_notebook_stops_the_sequence_with_one_line(tmp_path):
    messages = []
    with pytest.raises(PipelineError) as info:
        run_sequence("smoke", overrides={"device": "tpu", "results_dir": str(tmp_path)}, progress=False,
                     log=messages.append)
    message = str(info.value)
    executed = tmp_path / "smoke" / "notebooks" / "01-tutorial.ipynb"
    assert "01-tutorial.ipynb failed" in message and "'tpu'" in message and str(executed) in message
    assert "\n" not in message and executed.exists()
    assert not (tmp_path / "smoke" / "notebooks" / "02-teachers.ipynb").exists()


def _valid_png(path: Path) -> bool:
    from PIL import Image
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return False
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        grey_levels = sum(1 for count in image.convert("L").histogram() if count)
        return image.size[0] > 50 and image.size[1] > 50 and grey_levels > 10


@pytest.mark.parametrize("name", EXECUTED_COPIES)
def test_executed_copy_has_its_figures_and_the_notebooks_code(name):
    """docs/notebooks holds the tutorial and the CPU demo run from the committed runs (`make notebooks`), so their
    figures show without running anything: every code cell ran without an error, every figure is there (the tutorial
    says NOT SHOWN where the CPU demo's runs are missing), and the code is the notebook's own (regenerate the copy
    after changing the notebook)."""
    copy = nbformat.read(EXECUTED / name, as_version=4)
    source = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    ran = [c for c in copy.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    assert [c.source for c in ran] == [c.source for c in source.cells if c.cell_type == "code"], \
        f"docs/notebooks/{name} is older than notebooks/{name}: make notebooks"
    assert all(c.get("execution_count") for c in ran)
    outputs = [o for c in ran for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == EXECUTED_COPIES[name] and all(p.startswith(PNG_SIGNATURE) for p in pngs)
    assert not [o for o in outputs if "NOT SHOWN" in o.get("text", "")]
    assert sum(p.stat().st_size for p in EXECUTED.glob("*.ipynb")) < EXECUTED_BYTES
    assert sorted(p.name for p in EXECUTED.glob("*.ipynb")) == sorted(EXECUTED_COPIES)


@pytest.mark.slow
def test_smoke_sequence_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "atlib", "reproduce", "--profile", "smoke", "--results",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "smoke"
    for name in NOTEBOOKS:
        assert (root / "notebooks" / name).exists()
        assert f"{name} done" in proc.stdout

    for table, grid in TABLES.items():
        summary = pd.read_csv(root / "tables" / f"{table}.csv")
        expected = [(c.row, c.column) for c in grid()]
        assert list(zip(summary["row"], summary["column"])) == expected, table
        assert all(math.isfinite(v) and 0 <= v <= 100 for v in summary["ours_median"]), table
        assert (summary["n"] == 1).all()
        papers = {(c.row, c.column): c.paper for c in grid()}
        for r in summary.itertuples():
            paper = papers[(r.row, r.column)]
            assert (math.isnan(r.paper) if paper is None else r.paper == paper)
            if paper is not None:
                assert r.ours_minus_paper == pytest.approx(r.ours_median - paper)
        assert (root / "tables" / f"{table}.md").read_text().count("\n|") >= len(expected) + 1

    figures = sorted((root / "figures").glob("*.png"))
    names = {p.name for p in figures}
    assert {"fig4_attention_functions.png", "fig6_attention_student_at_teacher.png",
            "fig7b_training_curves.png", "table1.png", "table2.png", "table3.png", "groups.png"} <= names
    assert all(_valid_png(p) for p in figures)

    report = (root / "REPORT.md").read_text()
    assert report.splitlines()[0].startswith("**These numbers are not comparable to the paper's")
    for p in figures:
        assert f"(figures/{p.name})" in report
    for table in TABLES:
        assert f"(tables/{table}.csv)" in report

    # re-running continues: every run is finished, nothing is retrained
    before = {p: p.stat().st_mtime for p in (root / "runs").glob("*/metrics.jsonl")}
    again = subprocess.run([sys.executable, "-m", "atlib", "reproduce", "--profile", "smoke", "--results",
                            str(tmp_path), "--only", "05"], cwd=REPO, capture_output=True, text=True, env=env,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert before == {p: p.stat().st_mtime for p in (root / "runs").glob("*/metrics.jsonl")}


@pytest.mark.slow  # the whole main job, nine notebooks (about 85 s)
def test_main_job_builds_the_report_from_the_committed_runs(tmp_path):
    """`make reproduce` with no arguments on a CPU: the one-seed tables, figures and REPORT.md from the runs
    committed in results/one-seed, training nothing; every cell without a run says so, with its command and GPU
    estimate; every finished run's provenance is shown."""
    import shutil

    from atlib.training.store import RunStore
    shutil.copytree(REPO / "results" / "one-seed" / "runs", tmp_path / "one-seed" / "runs")
    before = {p: p.read_bytes() for p in (tmp_path / "one-seed" / "runs").rglob("*") if p.is_file()}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "atlib", "reproduce", "--results", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "one-seed"
    assert before == {p: p.read_bytes() for p in (root / "runs").rglob("*") if p.is_file()}  # nothing trained
    settings = settings_from_profile("one-seed", results_dir=str(tmp_path))
    store = RunStore(settings.store_root)
    report = (root / "REPORT.md").read_text()
    assert report.splitlines()[0].startswith("Profile `one-seed`: the authors' protocol")
    finished = 0
    for name, grid in TABLES.items():
        summary = pd.read_csv(root / "tables" / f"{name}.csv", keep_default_na=False)
        table_md = (root / "tables" / f"{name}.md").read_text()
        for cell, r in zip(grid(), summary.itertuples()):
            run_id = run_id_for(cell, settings, 0)
            if store.status(run_id) == "finished":
                finished += 1
                assert float(r.ours_median) == store.read_record(run_id)["test_error"]
                assert f"`{run_id}`" in report  # its provenance row
            else:
                assert r.status in ("not run yet", "in progress") or r.status.startswith("in progress")
                assert "python -m atlib train --student " + cell.student in table_md
                assert "GPU-min" in table_md
        assert table_md.strip() in report
    assert finished >= 2  # the committed WRN-16-2 teacher: Table 1's teacher cell and the WRN-16-2 student cell
    teacher = store.read_record(teacher_config("wrn-16-2", settings).run_id())
    assert teacher["environment"]["device_name"] in report
    assert "## The paper's claims" in report and "## Where each run was trained" in report
    assert (root / "figures" / "fig4_attention_functions.png").exists()
    for caption in ("Figure 7b", "Figure 6 style"):
        assert f"### {caption}" in report  # drawn, or "not built yet" until its runs are trained
