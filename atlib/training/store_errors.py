"""The results store's errors: each message is one line and names the path or run."""

from __future__ import annotations

__all__ = ["StoreError", "CorruptCheckpointError", "first_line"]


class StoreError(Exception):
    """A results-store problem; the message is one line and names the path or run."""


class CorruptCheckpointError(StoreError):
    """A checkpoint or weights file exists but cannot be loaded."""


def first_line(exc: BaseException) -> str:
    """``"ValueError: first line of the message"`` (cut to 200 characters), for one-line error messages."""
    lines = str(exc).strip().splitlines()
    msg = lines[0].strip() if lines else ""
    if len(msg) > 200:
        msg = msg[:197] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
