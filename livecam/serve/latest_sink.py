"""The session's sink: the newest rendered frame in a latest-value slot, every frame handed to listeners (the
WebRTC track) and, optionally, to one more output (the virtual camera, a file: a fan-out), and the recent
frame rate."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from livecam.live.frame import Frame
from livecam.live.outputs.base import FrameSink, SinkBase

FPS_WINDOW_S = 2.0
"""The stats' fps is measured over the frames published in this many recent seconds."""


class LatestSink(SinkBase):
    """Keeps the newest frame, passes every frame to the listeners and to an optional second sink (fan-out)."""

    def __init__(self, size: tuple[int, int], fanout: FrameSink | None = None) -> None:
        super().__init__(size)
        self._fanout = fanout
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._times: deque[float] = deque(maxlen=512)
        self._listeners: list[Callable[[Frame], None]] = []
        self._stop = threading.Event()
        self.count = 0

    @property
    def wants_stop(self) -> bool:
        return self._stop.is_set() or (self._fanout is not None and self._fanout.wants_stop)

    def request_stop(self) -> None:
        self._stop.set()

    def add_listener(self, listener: Callable[[Frame], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Frame], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def send(self, frame: Frame) -> None:
        self._check(frame)
        with self._lock:
            self._latest = frame
            self.count += 1
            self._times.append(time.perf_counter())
            listeners = list(self._listeners)
        if self._fanout is not None:
            self._fanout.send(frame)
        for listener in listeners:
            listener(frame)

    def latest(self) -> Frame | None:
        with self._lock:
            return self._latest

    def recent_fps(self, window_s: float = FPS_WINDOW_S) -> float:
        """Frames per second over the last `window_s` seconds (0 when fewer than two frames came in it)."""
        now = time.perf_counter()
        with self._lock:
            recent = [t for t in self._times if now - t <= window_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def _release(self, ok: bool) -> None:
        if self._fanout is not None:
            if ok:
                self._fanout.close()
            else:
                self._fanout.abort()
