"""Where things are: the repository's root and the default roots of results and data.

One place for them: the engine, the CLI, the pipeline, the provenance and the tests take these names instead of
working them out again (this module imports nothing of the package, so every layer may use it).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout (atlib/paths.py): profiles, notebooks, git
PROFILE_DIR = REPO_ROOT / "profiles"             # the named profiles (``profiles/<name>.yaml``)

DEFAULT_RESULTS = "results"  # the results store, relative to the working directory (``--results``, ``results_dir``)
DEFAULT_DATA = "data"        # where CIFAR-10 is looked for without a data root or $ATLIB_DATA, relative to the working
                             # directory (``data.resolve_data_root``)
