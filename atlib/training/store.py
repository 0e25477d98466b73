"""On-disk results store: one directory per training run.

Layout, under ``<results_root>/runs/<run-id>/``:

``config.json``
    The whole configuration, pretty-printed with sorted keys.
``metrics.jsonl``
    One JSON object per line, one line per finished epoch.  Every append is
    flushed and fsynced.  A partial last line (left behind by a killed
    process) is ignored when reading and cut off before the next append.
    Committed finished runs keep it gzip-compressed as ``metrics.jsonl.gz``.
``checkpoint.pt``
    The engine's resumable state, written atomically.
``weights.pt``
    Final model weights (a state dict), written atomically on completion.
``record.json``
    Final summary, written atomically on completion.  Its presence is what
    marks a run as finished.

JSON conventions: every JSON file and every metrics line ends with a newline.
Non-finite floats (NaN, +inf, -inf) are written as ``null`` so the files stay
valid JSON; tuples become lists, and numpy / torch scalars and arrays are
converted with ``.tolist()``.  Anything else that JSON cannot represent raises
:class:`StoreError` instead of being written (``store_json``; the run ids come from there too, and the
atomic writes from ``atomic_files``).

Checkpoints and weights are loaded with ``torch.load(..., map_location="cpu",
weights_only=True)``, so they may hold tensors, state dicts and plain Python
containers of numbers/strings (e.g. ``random.getstate()``, RNG state tensors),
but not arbitrary pickled objects such as numpy arrays.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import model_from_state
from .atomic_files import atomic_torch_save, atomic_write_bytes
from .store_errors import CorruptCheckpointError, StoreError, first_line
from .store_json import config_hash, dumps_line, dumps_pretty, gzip_metrics, make_run_id, slug

__all__ = [
    "StoreError",
    "CorruptCheckpointError",
    "config_hash",
    "make_run_id",
    "slug",
    "atomic_write_bytes",
    "atomic_torch_save",
    "RunStore",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
METRICS_GZ_FILE = "metrics.jsonl.gz"  # a finished run's metrics, compressed (committed runs)
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "weights.pt"
RECORD_FILE = "record.json"


# --------------------------------------------------------------------------- store


class RunStore:
    """Results under ``root/runs/<run-id>/`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs_root = self.root / "runs"

    # ---- paths and status

    def run_dir(self, run_id: str) -> Path:
        if (
            not isinstance(run_id, str)
            or not run_id
            or run_id in (".", "..")
            or "/" in run_id
            or "\\" in run_id
            or "\0" in run_id
        ):
            raise StoreError(f"invalid run id {run_id!r}")
        return self.runs_root / run_id

    def _path(self, run_id: str, name: str) -> Path:
        return self.run_dir(run_id) / name

    def exists(self, run_id: str) -> bool:
        return self.run_dir(run_id).is_dir()

    def status(self, run_id: str) -> str:
        """"new" (no dir or no config), "finished" (record present), else "interrupted"."""
        if not self._path(run_id, CONFIG_FILE).is_file():
            return "new"
        if self._path(run_id, RECORD_FILE).is_file():
            return "finished"
        return "interrupted"

    # ---- JSON files

    def _read_json(self, path: Path, what: str) -> Any:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{what} {path} does not exist") from None
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise StoreError(f"{what} {path} is not valid JSON ({first_line(e)})") from None

    def write_config(self, run_id: str, config: dict) -> None:
        """Create the run directory and write config.json.

        If a config.json already exists it must equal ``config`` (after JSON
        normalisation); otherwise StoreError is raised and nothing is written.
        """
        path = self._path(run_id, CONFIG_FILE)
        data = dumps_pretty(config)
        if path.exists():
            existing = self._read_json(path, "config")
            wanted = json.loads(data.decode("utf-8"))
            if existing != wanted:
                keys = []
                if isinstance(existing, dict):
                    missing = object()
                    keys = sorted(
                        k for k in set(existing) | set(wanted)
                        if existing.get(k, missing) != wanted.get(k, missing)
                    )
                shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
                raise StoreError(
                    f"run {run_id}: existing {path} differs from the requested config "
                    f"(keys: {shown or '?'}); hash collision or hand edit, refusing to overwrite"
                )
            return
        atomic_write_bytes(path, data)

    def read_config(self, run_id: str) -> dict:
        return self._read_json(self._path(run_id, CONFIG_FILE), "config")

    def write_record(self, run_id: str, record: dict) -> None:
        atomic_write_bytes(self._path(run_id, RECORD_FILE), dumps_pretty(record))

    def read_record(self, run_id: str) -> dict | None:
        """The final record, or None if the run has not finished."""
        path = self._path(run_id, RECORD_FILE)
        if not path.is_file():
            return None
        return self._read_json(path, "record")

    # ---- metrics

    def append_metrics(self, run_id: str, row: dict) -> None:
        """Append one row (one line), flushed and fsynced.

        A partial last line left by a killed writer is cut off first, so it
        can never be glued to the new row.
        """
        path = self._path(run_id, METRICS_FILE)
        line = dumps_line(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab+") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    f.seek(0)
                    content = f.read()
                    f.truncate(content.rfind(b"\n") + 1)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self, run_id: str) -> list[dict]:
        """All complete rows (from ``metrics.jsonl``, else its compressed form ``metrics.jsonl.gz``).  An
        unparsable last line is dropped; an unparsable earlier line raises StoreError (naming file and line)."""
        path = self._path(run_id, METRICS_FILE)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            path = self._path(run_id, METRICS_GZ_FILE)
            try:
                data = gzip.decompress(path.read_bytes())
            except FileNotFoundError:
                return []
            except (OSError, EOFError) as e:
                raise StoreError(f"metrics file {path} is corrupt ({first_line(e)})") from None
        lines = [(i + 1, ln) for i, ln in enumerate(data.split(b"\n")) if ln.strip()]
        rows = []
        for k, (lineno, raw) in enumerate(lines):
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except (UnicodeDecodeError, ValueError) as e:
                if k == len(lines) - 1:
                    break  # truncated by a killed process
                raise StoreError(f"metrics file {path} line {lineno} is corrupt ({first_line(e)})") from None
            rows.append(row)
        return rows

    def last_epoch_seconds(self, run_id: str) -> float:
        """The wall time of the run's last recorded epoch (0 when none is recorded or its metrics cannot be read)."""
        try:
            rows = self.read_metrics(run_id)
        except (OSError, ValueError, StoreError):
            return 0.0
        return float(rows[-1]["seconds"]) if rows else 0.0

    def truncate_metrics(self, run_id: str, epochs: int) -> None:
        """Keep only rows with ``row["epoch"] <= epochs`` (atomic rewrite)."""
        path = self._path(run_id, METRICS_FILE)
        if not path.exists():
            return
        kept = []
        for row in self.read_metrics(run_id):
            if "epoch" not in row:
                raise StoreError(f"metrics file {path} has a row without 'epoch'")
            if row["epoch"] <= epochs:
                kept.append(row)
        atomic_write_bytes(path, b"".join(dumps_line(r) for r in kept))

    def compress_metrics(self, run_id: str) -> None:
        """A finished run's metrics as ``metrics.jsonl.gz`` (about 16x smaller: every line repeats the whole
        configuration), the plain file removed. Committed runs are stored so."""
        path = self._path(run_id, METRICS_FILE)
        if path.exists():
            atomic_write_bytes(self._path(run_id, METRICS_GZ_FILE), gzip_metrics(path.read_bytes()))
            path.unlink()

    # ---- checkpoints and weights

    def _load_torch(self, path: Path, what: str, hint: str) -> Any:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CorruptCheckpointError(
                f"{what} {path} is corrupt or truncated ({first_line(e)}){hint}"
            ) from e

    def save_checkpoint(self, run_id: str, state: dict) -> None:
        if not isinstance(state, Mapping):
            raise StoreError(f"run {run_id}: checkpoint state must be a dict, got {type(state).__name__}")
        atomic_torch_save(state, self._path(run_id, CHECKPOINT_FILE))

    def load_checkpoint(self, run_id: str) -> dict | None:
        """The checkpoint dict, None if absent, CorruptCheckpointError if unloadable."""
        path = self._path(run_id, CHECKPOINT_FILE)
        if not path.exists():
            return None
        hint = "; pass --restart to discard it"
        state = self._load_torch(path, "checkpoint", hint)
        if not isinstance(state, dict):
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt or truncated (holds {type(state).__name__}, not a dict){hint}"
            )
        return state

    def save_weights(self, run_id: str, state_dict: dict) -> None:
        atomic_torch_save(state_dict, self._path(run_id, WEIGHTS_FILE))

    def load_weights(self, run_id: str) -> dict:
        path = self._path(run_id, WEIGHTS_FILE)
        if not path.exists():
            raise StoreError(f"weights file {path} does not exist")
        return self._load_torch(path, "weights file", "")

    def load_model(self, run_id: str) -> nn.Module:
        """A finished run's final weights in its student architecture, as an eval-mode model on the CPU."""
        return model_from_state(self.read_config(run_id)["student"], self.load_weights(run_id))

    def delete_checkpoint(self, run_id: str) -> None:
        """Remove the resumable state of a finished run (record and weights are what it leaves)."""
        self._path(run_id, CHECKPOINT_FILE).unlink(missing_ok=True)

    def delete_run_state(self, run_id: str) -> None:
        """Remove checkpoint, metrics, record and weights (and stray temp files); keep config."""
        d = self.run_dir(run_id)
        for name in (CHECKPOINT_FILE, METRICS_FILE, METRICS_GZ_FILE, RECORD_FILE, WEIGHTS_FILE):
            try:
                (d / name).unlink()
            except FileNotFoundError:
                pass
        if d.is_dir():
            for tmp in d.glob(".*.tmp"):
                try:
                    tmp.unlink()
                except OSError:
                    pass

    # ---- listing

    def _run_ids(self) -> list[str]:
        if not self.runs_root.is_dir():
            return []
        return sorted(p.name for p in self.runs_root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def list_runs(self) -> list[dict]:
        """One dict per run dir, sorted by id: run_id, status, epochs, test_error."""
        out = []
        for run_id in self._run_ids():
            status = self.status(run_id)
            test_error = None
            if status == "finished":
                record = self.read_record(run_id)
                if isinstance(record, dict):
                    test_error = record.get("test_error")
            out.append(
                {
                    "run_id": run_id,
                    "status": status,
                    "epochs": len(self.read_metrics(run_id)),
                    "test_error": test_error,
                }
            )
        return out

    def find_run(self, query: str) -> str:
        """Resolve an exact run id or a unique prefix of one."""
        if not query:
            raise StoreError("empty run id query")
        ids = self._run_ids()
        if query in ids:
            return query
        matches = [r for r in ids if r.startswith(query)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no run matches {query!r} under {self.runs_root}")
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise StoreError(f"run query {query!r} is ambiguous: {len(matches)} runs match ({shown})")
