"""Simulated interruptions (Ctrl-C in the middle of training) for the resume tests."""

import contextlib

import pytest


@contextlib.contextmanager
def interrupted_on_call(target, name: str, n: int):
    """Within the block ``target.<name>`` raises KeyboardInterrupt on its ``n``-th call (and works as before on the
    others); the block must end with that interrupt. ``target.<name>`` is restored afterwards."""
    real, calls = getattr(target, name), {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(target, name, interrupted)
        with pytest.raises(KeyboardInterrupt):
            yield
