"""The teacher one batch ahead: on a CPU, the frozen teacher's forward for the next batch runs on a second thread while
the student trains on this one.

    ahead = TeacherAhead(teacher, lambda: autocast(device, precision))
    with contextlib.closing(ahead.batches(source.train_batches(generator))) as batches:
        for x, y in batches:
            ...  # the step calls ahead(x) where it would call teacher(x)

Why: an AT step from a WRN-16-2 to a WRN-16-1 spends more than half its time in the teacher's forward (CPU campaign,
255 s per epoch against 123 s for the student alone). The teacher needs nothing from the student, so its forward for
batch i+1 can run beside the student's step on batch i: two threads instead of one, coupled once per batch (unlike
two intra-op threads, which meet at every operator and stall whenever another process takes a core). Meant for
one-thread CPU lanes: the worker thread uses as many intra-op threads as the training thread.

The numbers do not change: the teacher runs the same operators on the same tensors with the same number of intra-op
threads, under ``no_grad`` and the run's autocast (both are per thread) as in ``objective.BatchContext``, so its
outputs are bit for bit those of the plain path (tested on the CPU). Only the inference pass moves; a term that needs
the teacher's input gradient calls the teacher itself, as usual. An execution path, not part of a run's identity: the
metrics lines record it (``teacher_ahead``).
"""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

Context = Callable[[], contextlib.AbstractContextManager]


class TeacherAhead(nn.Module):
    """A frozen teacher whose forward for each batch drawn through ``batches`` starts on a worker thread as soon as
    the batch is drawn, one batch ahead of the step that uses it. Called without gradients on the batch in hand (the
    same tensor object) it returns that result; otherwise it runs the teacher at once, as usual."""

    def __init__(self, teacher: nn.Module, context: Context = contextlib.nullcontext):
        super().__init__()
        self.teacher = teacher
        self.context = context  # e.g. the run's autocast
        self._pending: deque[tuple[torch.Tensor, Future]] = deque()  # the live epoch's forwards, in batch order

    def _forward(self, x: torch.Tensor):
        with torch.no_grad(), self.context():
            return self.teacher(x)

    def batches(self, batches: Iterable) -> Iterator:
        """``batches`` unchanged, each ``(x, y)`` handed out once the teacher's forward on the *next* one has been
        started. Close it (``contextlib.closing``) when an epoch ends early: that cancels or waits for the forwards
        still pending and ends the worker thread (one per epoch)."""
        pending: deque[tuple[torch.Tensor, Future]] = deque()
        pool = ThreadPoolExecutor(1, thread_name_prefix="teacher-ahead", initializer=torch.set_num_threads,
                                  initargs=(torch.get_num_threads(),))  # explicitly the training thread's count
        self._pending = pending

        def submit(batch):
            entry = (batch[0], pool.submit(self._forward, batch[0]))
            pending.append(entry)
            return entry

        try:
            upcoming = iter(batches)
            current = next(upcoming, None)
            entry = None if current is None else submit(current)
            while current is not None:
                following = next(upcoming, None)
                next_entry = None if following is None else submit(following)
                yield current
                if pending and pending[0] is entry:  # the step did not ask for it
                    pending.popleft()
                current, entry = following, next_entry
        finally:
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True)  # no forward runs on a batch once its epoch is over
            pending.clear()

    def forward(self, x: torch.Tensor):
        pending = self._pending
        if not pending or pending[0][0] is not x or torch.is_grad_enabled() or x.requires_grad:
            return self.teacher(x)
        return pending.popleft()[1].result()

    @property
    def idle(self) -> bool:
        """No forward pending (between epochs)."""
        return not self._pending
