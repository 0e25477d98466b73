"""Runs the notebook sequence with papermill: ``python -m atlib reproduce --profile one-seed`` (``make reproduce``).

Each notebook is executed into ``results/<profile>/notebooks/`` with two parameters: ``profile`` (the profile's name,
or its YAML file) and ``overrides`` (the profile keys changed for this call); the notebook builds its settings from
them (``settings.notebook_settings``). A key that is neither a profile key nor a parameter that one of the notebooks
declares in its ``parameters`` cell is reported before anything runs.
A failing notebook stops the sequence with one line naming it and its executed copy; every finished run stays in the
results store, so running the same command again continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..paths import DEFAULT_RESULTS, PROFILE_DIR, REPO_ROOT
from .settings import PROFILE_KEYS, SEQUENCE_KEY, ProfileError, load_profile, profile_path

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
NOTEBOOK_ARGS = ("profile", "overrides")  # every notebook's parameters; any other parameter is its own


class PipelineError(RuntimeError):
    """A notebook failed; the message names it and its executed copy."""


class ParameterError(PipelineError, ValueError):
    """A bad profile or parameter, reported before any notebook runs."""


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """Names and default values declared in the notebook's ``parameters`` cell."""
    import papermill
    return {name: info["default"] for name, info in papermill.inspect_notebook(str(notebook)).items()}


def notebook_knobs(notebook: Path) -> list[str]:
    """The parameters a notebook declares besides ``profile`` and ``overrides`` (its own, e.g. the tutorial's)."""
    return [name for name in notebook_parameters(notebook) if name not in NOTEBOOK_ARGS]


def check_parameters(notebooks: Path | list[Path], parameters: dict[str, Any]) -> None:
    """ParameterError (one line) for a key that is neither a profile key nor a parameter of one of ``notebooks``."""
    notebooks = [notebooks] if isinstance(notebooks, (str, Path)) else list(notebooks)
    knobs = sorted({k for nb in notebooks for k in notebook_knobs(Path(nb))})
    unknown = sorted(set(parameters) - set(PROFILE_KEYS) - {SEQUENCE_KEY} - set(knobs))
    if unknown:
        who = Path(notebooks[0]).name if len(notebooks) == 1 else \
            f"the sequence {Path(notebooks[0]).name} .. {Path(notebooks[-1]).name}"
        raise ParameterError(f"{who} does not declare parameter(s) {unknown}; it accepts the profile keys "
                             f"({', '.join(PROFILE_KEYS)})" + (f" and {knobs}" if knobs else ""))


def notebook_call(notebook: Path, profile: str, parameters: dict[str, Any], overrides: dict[str, Any]) -> dict:
    """The papermill parameters of one notebook: the profile, the overrides of profile keys, and the values of the
    notebook's own parameters found in the profile or the overrides."""
    knobs = notebook_knobs(notebook)
    call = {"profile": profile, **{k: v for k, v in parameters.items() if k in knobs}}
    changed = {k: v for k, v in overrides.items() if k in PROFILE_KEYS}
    return {**call, "overrides": changed} if changed else call


def kernel_config():
    """The kernel's connection: IPC (Unix sockets beside the kernel's connection file, removed with it) where the
    OS has them, so the local kernel is not reached over TCP and IPKernel does not warn once per notebook that it
    "is running over TCP without encryption"; elsewhere jupyter_client's default (TCP on localhost)."""
    from traitlets.config import Config
    config = Config()
    if os.name == "posix":
        config.KernelManager.transport = "ipc"
    return config


def run_notebook(notebook: Path, output: Path, parameters: dict[str, Any], progress: bool = True) -> Path:
    """Execute one notebook with papermill into ``output``; PipelineError (one line) if it fails."""
    import papermill
    declared = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ParameterError(f"{notebook.name} does not declare parameter(s) {unknown}; it accepts {sorted(declared)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, progress_bar=progress,
                                   kernel_name="python3", cwd=os.getcwd(), config=kernel_config())
    except papermill.PapermillExecutionError as e:
        raise PipelineError(f"notebook {notebook.name} failed ({e.ename}: {' '.join(str(e.evalue).split())[:300]}); "
                            f"executed copy: {output}") from None
    return output


def run_sequence(profile: str = "one-seed", overrides: dict[str, Any] | None = None, only: list[str] | None = None,
                 progress: bool = True, log: Callable[[str], None] = logger.info) -> Path:
    """Run the profile's notebooks (its ``notebooks:`` list, else the paper's sequence; or those whose names start
    with one of ``only``) with the profile's parameters. Returns ``results/<profile>``."""
    overrides = dict(overrides or {})
    try:
        path = profile_path(profile)
        parameters = {**load_profile(path), **overrides}
    except ProfileError as e:
        raise ParameterError(str(e)) from None
    # the notebooks load the profile themselves: by name where it is one of profiles/, else by its file
    named = path.resolve() == (PROFILE_DIR / f"{profile}.yaml").resolve()
    profile_arg = profile if named else str(path.resolve())
    sequence = parameters.pop(SEQUENCE_KEY, None)
    if sequence is None:
        sequence = NOTEBOOKS
    elif not isinstance(sequence, list) or not sequence or not all(isinstance(n, str) for n in sequence):
        raise ParameterError(f"profile {profile!r}: {SEQUENCE_KEY} must be a non-empty list of notebook names, got "
                             f"{sequence!r}")
    unknown = [n for n in sequence if n not in ALL_NOTEBOOKS]
    if unknown:
        raise ParameterError(f"profile {profile!r} names unknown notebook(s) {unknown}; notebooks are {ALL_NOTEBOOKS}")
    root = Path(parameters.get("results_dir", DEFAULT_RESULTS)) / parameters.get("profile", Path(profile).stem)
    selected = [n for n in sequence if not only or any(n.startswith(o) for o in only)]
    if not selected:
        raise ParameterError(f"no notebook matches {only}; notebooks are {sequence}")
    check_parameters([NOTEBOOK_DIR / n for n in selected], parameters)  # bad parameters: before running anything
    for i, name in enumerate(selected, 1):
        output = root / "notebooks" / name
        log(f"[{i}/{len(selected)}] {name} -> {output}")
        t0 = time.perf_counter()
        call = notebook_call(NOTEBOOK_DIR / name, profile_arg, parameters, overrides)
        run_notebook(NOTEBOOK_DIR / name, output, call, progress=progress)
        log(f"[{i}/{len(selected)}] {name} done in {time.perf_counter() - t0:.0f} s")
    log(f"report: {root / 'REPORT.md'}")
    return root
