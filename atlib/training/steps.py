"""Running the training step: eagerly, or captured once as a CUDA graph and replayed.

A *step body* ``body(x, y) -> {name: tensor}`` does one whole SGD step on a batch (forward, losses, backward,
optimizer step) and returns per-batch statistics as device tensors (sums over the batch: ``loss * B``, ``wrong``,
...). ``StepRunner`` calls it for every batch and adds the statistics into device-side accumulators, so nothing is
read back to the host until the epoch ends.

With ``graph=True`` (CUDA only) the runner does ``warmup`` real steps eagerly on a side stream (they create the
optimizer's momentum buffers, the accumulators and cuDNN's workspaces), then captures the next step as a CUDA graph
and from then on copies each batch into the graph's static input buffers and replays it: one launch per step instead
of hundreds. The computation is the same, so the training is the same (to floating-point tolerance: cuDNN may pick
other kernels). What a graph freezes, and how the engine keeps it right:

- Python scalars baked into kernels, e.g. the learning rate of ``torch.optim.SGD``: call ``invalidate()`` when the lr
  changes; the next step captures again (about four captures per 200-epoch run).
- Which loss terms are active (``start_epoch``): part of the same invalidation key.
- Batch shape: a batch of another shape (an epoch's last, smaller batch) runs eagerly on the same parameters.
- Optimizer state tensors: reset momentum by zeroing the buffers in place (``zero_momentum``), never by
  ``optimizer.state.clear()``; loading an optimizer state dict replaces them, so invalidate after loading.
- Module modes: the graph replays the train-mode kernels it captured; evaluation runs eagerly in between.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

StepBody = Callable[[torch.Tensor, torch.Tensor], dict]


def zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Restart SGD momentum in place. Same arithmetic as dropping the buffers (``buf = 0 * mu + g`` == ``g``) and it
    keeps the tensors a captured graph points at."""
    for state in optimizer.state.values():
        buf = state.get("momentum_buffer")
        if buf is not None:
            buf.zero_()


class GraphCaptureError(RuntimeError):
    """Capturing the step failed; the message says why (the runner then continues eagerly)."""


class StepRunner:
    """Runs one step body per batch and keeps the epoch's sums of its statistics on the device."""

    def __init__(self, body: StepBody, device: torch.device, graph: bool = False, warmup: int = 2,
                 log: Callable[[str], None] | None = None):
        if graph and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.body, self.device, self.graph, self.warmup, self.log = body, device, graph, warmup, log
        # The statistics of a step are summed as one flat float64 vector (one concatenation and one addition per
        # step, not one addition per statistic); one vector per layout (names and shapes) the body has returned.
        self._sums: dict[tuple, torch.Tensor] = {}
        self._layout: tuple = ()          # the latest step's (name, shape) pairs: the epoch's statistics
        self._epoch_layout: tuple | None = None
        self.seen = 0
        self._graph = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._shape = None
        self._warm = 0
        self._capturing = False

    # -- epoch bookkeeping ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero the sums (in place: a captured graph adds into these very tensors)."""
        for t in self._sums.values():
            t.zero_()
        self.seen = 0  # the layout stays: a replayed graph adds the statistics it was captured with
        self._epoch_layout = None

    def invalidate(self) -> None:
        """Forget the captured graph (lr changed, other terms active, optimizer state replaced)."""
        self._graph, self._static, self._shape, self._warm = None, None, None, 0

    @property
    def names(self) -> list[str]:
        """The statistics of the latest step (the epoch's active ones)."""
        return [name for name, _ in self._layout]

    @property
    def sums(self) -> dict[str, torch.Tensor]:
        """Each statistic's running sum: views into the flat vector of the current layout."""
        flat, out, at = self._sums.get(self._layout), {}, 0
        for name, shape in self._layout:
            n = math.prod(shape)
            out[name] = flat[at:at + n].view(shape)
            at += n
        return out

    def totals(self) -> dict[str, torch.Tensor]:
        return self.sums

    # -- stepping ---------------------------------------------------------------------------------------------
    def _accumulate(self, stats: dict) -> None:
        layout = tuple((name, tuple(value.shape)) for name, value in stats.items())
        if self._epoch_layout is not None and layout != self._epoch_layout:
            raise RuntimeError(f"the step's statistics changed within an epoch: {[n for n, _ in self._epoch_layout]}"
                               f" then {[n for n, _ in layout]}")
        flat = self._sums.get(layout)
        if flat is None:
            if self._capturing:
                raise GraphCaptureError(f"statistics {[n for n, _ in layout]} first appeared while capturing the step")
            flat = self._sums[layout] = torch.zeros(sum(math.prod(s) for _, s in layout), dtype=torch.float64,
                                                    device=self.device)
        flat.add_(torch.cat([value.reshape(-1).to(torch.float64) for value in stats.values()]))
        self._layout = self._epoch_layout = layout

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._accumulate(self.body(x, y))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.seen += y.shape[0]
        if not self.graph or (self._shape is not None and (x.shape, y.shape) != self._shape):
            self._eager(x, y)
            return
        if self._graph is None:
            self._shape = (x.shape, y.shape)
            if self._warm < self.warmup:
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self._eager(x, y)
                torch.cuda.current_stream(self.device).wait_stream(side)
                self._warm += 1
                return
            try:
                self._capture(x, y)
            except Exception as e:  # noqa: BLE001 - any capture failure: keep training, eagerly
                self.graph, self._graph, self._capturing = False, None, False
                if self.log:
                    self.log(f"CUDA graph capture failed ({' '.join(str(e).split())[:300]}); continuing eagerly")
                torch.cuda.synchronize(self.device)
                self._eager(x, y)
                return
        if self._epoch_layout is None:
            self._epoch_layout = self._layout  # what the graph adds into
        static_x, static_y = self._static
        static_x.copy_(x, non_blocking=True)
        static_y.copy_(y, non_blocking=True)
        self._graph.replay()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        static_x, static_y = x.clone(), y.clone()
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        self._capturing = True
        try:
            with torch.cuda.graph(graph):
                self._accumulate(self.body(static_x, static_y))
        finally:
            self._capturing = False
        self._graph, self._static = graph, (static_x, static_y)
