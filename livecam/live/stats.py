"""Live statistics: named section timers, counters, capture-to-publish latency, and the exit summary."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

WINDOW = 20_000
"""Samples kept per timer: percentiles describe the recent window, counts cover the whole run."""


class _Window:
    """The newest WINDOW samples in a float64 ring filled in advance, so a timer's memory is the same at the
    first frame as after hours (a long run's RSS then shows leaks, not timers filling up); counts all."""

    def __init__(self) -> None:
        self._data = np.full(WINDOW, np.nan)  # written now: every page is resident from the start
        self.count = 0

    def append(self, value: float) -> None:
        self._data[self.count % WINDOW] = value
        self.count += 1

    def values(self) -> np.ndarray:
        return self._data[: min(self.count, WINDOW)]


def _percentiles(samples: _Window) -> dict[str, float]:
    arr = samples.values()
    if not arr.size:
        return {"ms_p50": 0.0, "ms_p95": 0.0, "ms_mean": 0.0}
    return {"ms_p50": round(float(np.percentile(arr, 50)), 3),
            "ms_p95": round(float(np.percentile(arr, 95)), 3),
            "ms_mean": round(float(arr.mean()), 3)}


class Stats:
    """Thread-safe counters and timers for one run; implements `engine.types.Sections`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sections: dict[str, _Window] = {}
        self._latency = _Window()
        self.frames_in = 0
        self.frames_out = 0
        self.no_face = 0
        self.drops = 0
        self.size_changes = 0
        """Times the input's frame size changed mid-stream (tracking and framing start afresh each time)."""
        self.render_errors = 0
        """Frames the renderer failed on (the last good frame was published instead)."""
        self._t_start = time.perf_counter()
        self._t_first_out: float | None = None
        self._t_last_out: float | None = None
        self.extra: dict[str, Any] = {}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter_ns() - t0) / 1e6)

    def add(self, name: str, ms: float) -> None:
        with self._lock:
            window = self._sections.get(name)
            if window is None:
                window = self._sections[name] = _Window()
            window.append(ms)

    def published(self, t_capture_ns: int) -> None:
        """Count one frame out, with its capture-to-publish latency."""
        now = time.perf_counter()
        with self._lock:
            self.frames_out += 1
            self._latency.append((time.perf_counter_ns() - t_capture_ns) / 1e6)
            if self._t_first_out is None:
                self._t_first_out = now
            self._t_last_out = now

    def summary(self) -> dict[str, Any]:
        """Everything measured, with plainly named keys (`fps`, `latency_ms_p95`, ...)."""
        with self._lock:
            duration = time.perf_counter() - self._t_start
            # fps over the publishing span (first to last frame out), so start-up is not counted
            span = (self._t_last_out or 0) - (self._t_first_out or 0)
            fps = (self.frames_out - 1) / span if self.frames_out > 1 and span > 0 else 0.0
            latency = _percentiles(self._latency)
            return {
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "drops": self.drops,
                "no_face_frames": self.no_face,
                "size_changes": self.size_changes,
                "render_errors": self.render_errors,
                "duration_s": round(duration, 3),
                "fps": round(fps, 2),
                "latency_ms_p50": latency["ms_p50"],
                "latency_ms_p95": latency["ms_p95"],
                "sections": {name: {**_percentiles(s), "count": s.count} for name, s in self._sections.items()},
                **self.extra,
            }

    def format_summary(self) -> str:
        s = self.summary()
        lines = [
            f"frames in {s['frames_in']}, out {s['frames_out']}, dropped {s['drops']}, "
            f"no face {s['no_face_frames']}"
            + (f", size changes {s['size_changes']}" if s["size_changes"] else "")
            + (f", render errors {s['render_errors']}" if s["render_errors"] else ""),
            f"{s['fps']:.1f} fps; capture->publish latency p50 {s['latency_ms_p50']:.1f} ms, "
            f"p95 {s['latency_ms_p95']:.1f} ms",
        ]
        for name, sec in s["sections"].items():
            lines.append(f"  {name:<10} p50 {sec['ms_p50']:7.2f} ms   p95 {sec['ms_p95']:7.2f} ms")
        return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
