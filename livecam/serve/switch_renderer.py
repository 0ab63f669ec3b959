"""The session's renderer switch: a `Renderer` around the engine's that keeps the newest raw camera image (for
the raw view and for export) and, with rendering off, sends that image letterboxed to the output size instead
of the render."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from engine.types import Face, Mask, Renderer, RGBImage


def letterbox(image: RGBImage, size: tuple[int, int]) -> RGBImage:
    """`image` (RGB uint8 HxWx3) scaled to fit `size` (width, height), centred on black: RGB uint8 of `size`."""
    width, height = size
    ih, iw = image.shape[:2]
    scale = min(width / iw, height / ih)
    nw, nh = min(width, max(1, round(iw * scale))), min(height, max(1, round(ih * scale)))
    out = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    if (nw, nh) == (iw, ih):
        out[y0:y0 + nh, x0:x0 + nw] = image
    else:
        out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh),
                                                 interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out


class SwitchRenderer:
    """A `Renderer` around the engine's: remembers the newest raw camera image and, with rendering off, returns
    it letterboxed to the output size instead of rendering. `paused()` holds the engine still (an export that
    shares its weights)."""

    def __init__(self, inner: Renderer, needs_mask: bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.output_size = inner.output_size
        self.needs_mask = needs_mask
        self._rendering = True
        self._lock = threading.Lock()
        self._raw: RGBImage | None = None
        self._shown_ms: int | None = None
        self._engine = threading.Lock()
        """Held around each engine render, and by `paused()` for as long as the engine must not run."""

    @property
    def rendering(self) -> bool:
        return self._rendering

    @rendering.setter
    def rendering(self, on: bool) -> None:
        self._rendering = bool(on)

    def latest_raw(self) -> RGBImage | None:
        """The newest camera image (not a copy: the capture never reuses an image buffer)."""
        with self._lock:
            return self._raw

    @property
    def shown_ms(self) -> int | None:
        return self._shown_ms

    def prepare(self) -> None:
        self.inner.prepare()

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        with self._lock:
            self._raw = image
        if not self._rendering:
            self._shown_ms = timestamp_ms
            return letterbox(image, self.output_size)
        with self._engine:
            out = self.inner.render(image, face, mask, timestamp_ms)
            self._shown_ms = self.inner.shown_ms
            return out

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No engine render runs inside this block: it waits for the frame in progress, and the render thread
        waits at the next one (the outputs keep the last frame)."""
        with self._engine:
            yield

    def counters(self) -> dict[str, float]:
        return self.inner.counters()

    def close(self) -> None:
        self.inner.close()
