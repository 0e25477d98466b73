"""A trained teacher run for the tests that need one, and copies of it into other results directories."""

import shutil
from pathlib import Path

from atlib.training import engine
from atlib.training.config import RunConfig


def train_teacher(root: Path, config: RunConfig) -> tuple[Path, str]:
    """Train ``config`` under ``root``; returns ``(root, run_id)``."""
    return root, engine.train(config, results=root, progress=False, log=None)["run_id"]


def copy_teacher(teacher: tuple[Path, str], dest: Path) -> str:
    """Copy the teacher run ``(root, run_id)`` into the results directory ``dest``; returns its run id."""
    root, run_id = teacher
    shutil.copytree(root / "runs" / run_id, dest / "runs" / run_id, dirs_exist_ok=True)
    return run_id
