"""Per-stage times of one frame of the diffusion engine, measured where the work runs.

On CUDA the work is asynchronous: the wall clock around a stage times its launch, not its run. A stage is
therefore bracketed by a pair of CUDA events recorded on the current stream, and read when the frame is
collected (its last event has fired by then, so reading never waits). On the CPU the work runs as it is
called, and the wall clock is the stage's time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["FrameStages"]


class FrameStages:
    """One frame's stages: `with stages.stage("unet"): ...`, then `resolve()` once the frame's work is done."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self._events: dict[str, list[tuple[Any, Any]]] = {}
        self._ms: dict[str, float] = {}
        self._first: Any = None
        self._last: Any = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
            self._events.setdefault(name, []).append((start, end))
            self._first = start if self._first is None else self._first
            self._last = end
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            t1 = time.perf_counter()
            self._ms[name] = self._ms.get(name, 0.0) + (t1 - t0) * 1e3
            self._first = t0 if self._first is None else self._first
            self._last = t1

    def resolve(self) -> dict[str, float]:
        """Stage -> ms (summed over its runs in the frame), plus "frame": from the first stage's start to the
        last one's end. On CUDA call it only after the frame's last event has completed (`collect` waits)."""
        if self._first is None:
            return {}
        if self.cuda:
            out = {name: sum(start.elapsed_time(end) for start, end in pairs) for name, pairs in self._events.items()}
            out["frame"] = self._first.elapsed_time(self._last)
            return out
        return {**self._ms, "frame": (self._last - self._first) * 1e3}
