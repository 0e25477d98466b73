"""JSON as the results store writes it, and the config hashes and run ids derived from it.

Non-finite floats (NaN, +inf, -inf) are written as ``null`` so the files stay valid JSON; tuples become lists, and
numpy / torch scalars and arrays are converted with ``.tolist()``.  Anything else that JSON cannot represent raises
:class:`StoreError` instead of being written.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from .store_errors import StoreError

__all__ = ["to_jsonable", "dumps_pretty", "dumps_line", "gzip_metrics", "canonical_json", "config_hash", "slug",
           "make_run_id"]


def to_jsonable(obj: Any, where: str = "$") -> Any:
    """Return a copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts.

    Non-finite floats become ``None``; tuples become lists; objects with a
    ``tolist`` method (numpy / torch scalars and arrays) are converted first.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise StoreError(f"non-string key {key!r} at {where} is not allowed in stored JSON")
            out[key] = to_jsonable(value, f"{where}.{key}")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist(), where)
    raise StoreError(f"value of type {type(obj).__name__} at {where} is not JSON-serialisable")


def dumps_pretty(obj: Any) -> bytes:
    """Indented JSON with sorted keys and a final newline (config.json, record.json)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return (text + "\n").encode("utf-8")


def dumps_line(obj: Any) -> bytes:
    """One line of JSON with its newline (a metrics row)."""
    text = json.dumps(to_jsonable(obj), allow_nan=False)
    return (text + "\n").encode("utf-8")


def gzip_metrics(data: bytes) -> bytes:
    """Deterministic gzip (no timestamp): the same metrics give the same bytes."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: what ``config_hash`` hashes."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: dict) -> str:
    """First 8 hex chars of the sha256 of the canonical JSON of ``config``.

    Canonical JSON: ``sort_keys=True, separators=(",", ":")``, after the same
    normalisation used when writing (so a config read back hashes the same).
    """
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:8]


_SLUG_BAD = re.compile(r"[^A-Za-z0-9._-]")
_DASHES = re.compile(r"-{2,}")


def slug(text: str) -> str:
    """Keep ``[A-Za-z0-9._-]``, map anything else to '-', collapse '-' runs, strip '-'."""
    return _DASHES.sub("-", _SLUG_BAD.sub("-", str(text))).strip("-")


def make_run_id(config: dict, readable: str) -> str:
    """``f"{slug(readable)}-{config_hash(config)}"`` (just the hash if the slug is empty)."""
    s = slug(readable)
    h = config_hash(config)
    return f"{s}-{h}" if s else h

