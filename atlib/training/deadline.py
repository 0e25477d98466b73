"""Stop training at an epoch boundary before a deadline (a campaign's GPU window).

    with epoch_deadline(clock() + 500):
        train(config)          # raises DeadlineReached after the last epoch that ends before the deadline

The epoch loop calls ``check`` right after an epoch's checkpoint is written, with how long an epoch takes
(``next_epoch_seconds``): when another epoch of that length would end after the deadline, training stops there, and
every run keeps a checkpoint of a whole epoch (resumable, nothing lost). Outside ``epoch_deadline`` ``check`` does
nothing, unless a stop at the next epoch boundary was asked for (``request_stop``: a campaign lane's SIGUSR1, sent by
``campaign stop --at-epoch-end``).
"""

from __future__ import annotations

import contextlib
import statistics
import time

_deadline: float | None = None  # clock() by which the last epoch must end; None: no deadline
_stop_requested = False         # stop at the next epoch boundary, whatever the deadline
clock = time.monotonic          # (tests replace it with a fake clock)


class DeadlineReached(Exception):
    """Training stopped at an epoch boundary because the next epoch would end after the deadline."""


@contextlib.contextmanager
def epoch_deadline(at: float | None):
    """Within this block, training stops at the last epoch boundary before ``at`` (a ``clock()`` value; None: no
    deadline)."""
    global _deadline
    previous, _deadline = _deadline, at
    try:
        yield
    finally:
        _deadline = previous


def request_stop(*_signal) -> None:
    """Stop at the next epoch boundary (usable as a signal handler): the epoch in flight is finished and
    checkpointed."""
    global _stop_requested
    _stop_requested = True


def stop_requested() -> bool:
    return _stop_requested


def seconds_left() -> float | None:
    return None if _deadline is None else _deadline - clock()


def next_epoch_seconds(durations: list[float]) -> float:
    """How long the next epoch will take: the median of the last three epochs' wall times, so that one epoch slowed by
    other work on the machine does not stop a run that has time for more (two slow ones in a row do)."""
    return statistics.median(durations[-3:])


def check(what: str, epoch_seconds: float, epochs_done: int, epochs: int) -> None:
    """Raise ``DeadlineReached`` when another epoch of ``epoch_seconds`` would end after the deadline (only while
    epochs remain: a run's last epoch is followed by its record, not by a stop)."""
    if epochs_done >= epochs:
        return
    if _stop_requested:
        raise DeadlineReached(f"{what}: stopped after epoch {epochs_done}/{epochs}, as asked")
    if _deadline is None:
        return
    left = seconds_left()
    if epoch_seconds > left:
        raise DeadlineReached(f"{what}: stopped after epoch {epochs_done}/{epochs} (next epoch needs about "
                              f"{epoch_seconds:.0f} s, {max(left, 0):.0f} s left)")
