"""The harness `benchmarks/diffusion_e2e.py` drives the real live loop (`livecam.live.loop.run_loop`) with: frames
decoded before the timed loop, handed over on demand or at a camera's pace; statistics that start afresh
after the warm-up frames of the same loop (one compose thread for the whole run, as in the app); and
per-stage GPU times from CUDA events recorded around the engine's sections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from engine.types import RGBImage
from livecam.live.frame import Frame
from livecam.live.outputs.memory import MemorySink
from livecam.live.stats import Stats

GPU_SECTIONS = ("upload", "encode", "unet", "decode")
"""The Denoiser's sections whose work is queued on the GPU: their wall time is the launch, CUDA events time the
work."""


def load_frames(video: Path, limit: int, size: tuple[int, int] | None = None) -> list[RGBImage]:
    """Up to `limit` frames of `video` as RGB, resized to `size` (width, height) when given."""
    cap = cv2.VideoCapture(str(video))
    frames: list[RGBImage] = []
    while len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        if size is not None and (bgr.shape[1], bgr.shape[0]) != size:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        frames.append(cast(RGBImage, np.ascontiguousarray(bgr[:, :, ::-1])))
    cap.release()
    if not frames:
        raise SystemExit(f"diffusion_e2e: no frames could be read from {video}")
    return frames


class MemoryReader:
    """A `livecam.live.capture.Reader` over decoded frames, looping; each read a fresh copy, as a camera's."""

    paced_by_device = False

    def __init__(self, frames: list[RGBImage], fps: float) -> None:
        self.description = f"{len(frames)} decoded frames"
        self.fps = fps
        self._frames = frames
        self._next = 0

    def read(self) -> RGBImage | None:
        image = self._frames[self._next % len(self._frames)]
        self._next += 1
        return image.copy()

    def close(self) -> None:
        pass


class OnDemandSource:
    """A frame source (the part of `FrameSource` the loop uses) whose camera delivers each frame the moment the
    loop asks for it: every frame is processed, and capture->publish has no wait in a capture slot in it."""

    drops = 0

    def __init__(self, reader: MemoryReader) -> None:
        self._reader = reader
        self._index = 0

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        image = self._reader.read()
        if image is None:
            return None
        frame = Frame(image, self._index, time.perf_counter_ns())
        self._index += 1
        return frame


class SwitchStats:
    """A `Stats` stand-in for `run_loop` whose target starts afresh at `switch()` (after the warm-up frames): the
    loop, its compose thread and the renderer keep running while the figures start from zero."""

    def __init__(self) -> None:
        object.__setattr__(self, "target", Stats())

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "target"), name, value)

    def switch(self) -> None:
        object.__setattr__(self, "target", Stats())

    @property
    def current(self) -> Stats:
        return cast(Stats, object.__getattribute__(self, "target"))


class GpuSections:
    """The renderer's `Sections`: wall time per section into the current stats, and on CUDA a pair of events
    around each of `GPU_SECTIONS` (recorded on the compose thread's stream, read after the run), plus one
    span per frame from the upload's start to the decode's end."""

    def __init__(self, stats: SwitchStats, cuda: bool) -> None:
        self._stats = stats
        self._cuda = cuda
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._spans: dict[str, list[tuple[Any, Any]]] = {name: [] for name in (*GPU_SECTIONS, "frame")}
            self._frame_start: Any = None

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if not (self._cuda and name in GPU_SECTIONS):
            with self._stats.section(name):
                yield
            return
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with self._stats.section(name):
            yield
        end.record()
        with self._lock:
            self._spans[name].append((start, end))
            if name == "upload":
                self._frame_start = start
            elif name == "decode" and self._frame_start is not None:
                self._spans["frame"].append((self._frame_start, end))
                self._frame_start = None

    def summary(self) -> dict[str, Any]:
        """Per GPU section (and per frame) the GPU time between its events, ms: p50, p95, count."""
        if not self._cuda:
            return {}
        import torch

        torch.cuda.synchronize()
        out = {}
        with self._lock:
            for name, pairs in self._spans.items():
                ms = [start.elapsed_time(end) for start, end in pairs]
                if ms:
                    out[name] = {"ms_p50": round(float(np.percentile(ms, 50)), 3),
                                 "ms_p95": round(float(np.percentile(ms, 95)), 3), "count": len(ms)}
        return out


class BenchSink(MemorySink):
    """Keeps the newest frame; calls `on_warm` as the first frame after the `warmup` ones goes out and asks the
    loop to stop once `total` frames are out."""

    def __init__(self, size: tuple[int, int], warmup: int, total: int, on_warm: Callable[[], None]) -> None:
        super().__init__(size, keep=1)
        self.warmup = warmup
        self.total = total
        self._on_warm = on_warm

    def send(self, frame: Frame) -> None:
        super().send(frame)
        if self.count == self.warmup + 1:
            # The first measured frame: its publish goes into the fresh stats (fps counts from it). Not the last
            # warm-up frame's: with the pipeline it may show a frame captured before a slow first render.
            self._on_warm()

    @property
    def wants_stop(self) -> bool:
        return self.count >= self.total
