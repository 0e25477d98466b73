"""Runs the notebook sequence with papermill: ``python -m atlib reproduce --profile one-seed`` (``make reproduce``).

Each notebook is executed with the profile's parameters into ``results/<profile>/notebooks/``. Unknown parameters
(a profile key that a notebook does not declare in its ``parameters`` cell) are reported before anything runs.
A failing notebook stops the sequence with one line naming it and its executed copy; every finished run stays in the
results store, so running the same command again continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from .settings import REPO_ROOT, ProfileError, load_profile, profile_path

logger = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = [
    "01-tutorial.ipynb",
    "02-teachers.ipynb",
    "03-table1.ipynb",
    "04-table2.ipynb",
    "05-groups.ipynb",
    "06-table3.ipynb",
    "07-table4-finetune.ipynb",
    "08-table5-imagenet.ipynb",
    "09-report.ipynb",
]
# Notebooks outside the paper's sequence, run by the profiles that name them under `notebooks:`
DEMO_NOTEBOOKS = ["10-cpu-demo.ipynb"]  # profile cpu-demo: attention transfer on a laptop (low data, not the paper's)
ALL_NOTEBOOKS = NOTEBOOKS + DEMO_NOTEBOOKS
SEQUENCE_KEY = "notebooks"  # a profile key read by the pipeline (which notebooks), not passed to the notebooks


class PipelineError(RuntimeError):
    """A notebook failed; the message names it and its executed copy."""


class ParameterError(PipelineError, ValueError):
    """A bad profile or parameter, reported before any notebook runs."""


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """Names and default values declared in the notebook's ``parameters`` cell."""
    import papermill
    return {name: info["default"] for name, info in papermill.inspect_notebook(str(notebook)).items()}


def check_parameters(notebook: Path, parameters: dict[str, Any]) -> None:
    declared = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ParameterError(f"{notebook.name} does not declare parameter(s) {unknown}; it accepts {sorted(declared)}")


def run_notebook(notebook: Path, output: Path, parameters: dict[str, Any], progress: bool = True) -> Path:
    """Execute one notebook with papermill into ``output``; PipelineError (one line) if it fails."""
    import papermill
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, progress_bar=progress,
                                   kernel_name="python3", cwd=os.getcwd())
    except papermill.PapermillExecutionError as e:
        raise PipelineError(f"notebook {notebook.name} failed ({e.ename}: {' '.join(str(e.evalue).split())[:300]}); "
                            f"executed copy: {output}") from None
    return output


def run_sequence(profile: str = "one-seed", overrides: dict[str, Any] | None = None, only: list[str] | None = None,
                 progress: bool = True, log: Callable[[str], None] = logger.info) -> Path:
    """Run the profile's notebooks (its ``notebooks:`` list, else the paper's sequence; or those whose names start
    with one of ``only``) with the profile's parameters. Returns ``results/<profile>``."""
    try:
        parameters = {**load_profile(profile_path(profile)), **(overrides or {})}
    except ProfileError as e:
        raise ParameterError(str(e)) from None
    sequence = parameters.pop(SEQUENCE_KEY, None)
    if sequence is None:
        sequence = NOTEBOOKS
    elif not isinstance(sequence, list) or not sequence or not all(isinstance(n, str) for n in sequence):
        raise ParameterError(f"profile {profile!r}: {SEQUENCE_KEY} must be a non-empty list of notebook names, got "
                             f"{sequence!r}")
    unknown = [n for n in sequence if n not in ALL_NOTEBOOKS]
    if unknown:
        raise ParameterError(f"profile {profile!r} names unknown notebook(s) {unknown}; notebooks are {ALL_NOTEBOOKS}")
    root = Path(parameters.get("results_dir", "results")) / parameters.get("profile", Path(profile).stem)
    selected = [n for n in sequence if not only or any(n.startswith(o) for o in only)]
    if not selected:
        raise ParameterError(f"no notebook matches {only}; notebooks are {sequence}")
    for name in selected:  # report bad parameters before running anything
        check_parameters(NOTEBOOK_DIR / name, parameters)
    for i, name in enumerate(selected, 1):
        output = root / "notebooks" / name
        log(f"[{i}/{len(selected)}] {name} -> {output}")
        t0 = time.perf_counter()
        run_notebook(NOTEBOOK_DIR / name, output, parameters, progress=progress)
        log(f"[{i}/{len(selected)}] {name} done in {time.perf_counter() - t0:.0f} s")
    log(f"report: {root / 'REPORT.md'}")
    return root
