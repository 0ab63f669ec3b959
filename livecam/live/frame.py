"""A frame on the live path, and the latest-value slot that hands frames between threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

from engine.types import RGBImage


@dataclass(frozen=True)
class Frame:
    """One image on its way from capture to publish.

    `image` is RGB uint8 HxWx3; `index` counts frames read from the source (0-based, gaps mean drops);
    `t_capture_ns` is `time.perf_counter_ns()` when the image was read.
    """

    image: RGBImage
    index: int
    t_capture_ns: int


T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds only the newest value: a put over an unread value replaces it and counts a drop.

    With `lossless=True` a put waits until the previous value was taken instead (used with `--no-pace`,
    where every frame of a file is processed).
    """

    def __init__(self, lossless: bool = False) -> None:
        self._cond = threading.Condition()
        self._value: T | None = None
        self._closed = False
        self._lossless = lossless
        self.drops = 0

    def put(self, value: T) -> bool:
        """Store `value`; False if the slot was closed (the value is discarded)."""
        with self._cond:
            if self._lossless:
                self._cond.wait_for(lambda: self._value is None or self._closed)
            if self._closed:
                return False
            if self._value is not None:
                self.drops += 1
            self._value = value
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Take the newest value, waiting for one; None once closed and empty, or on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._value is not None or self._closed, timeout)
            value, self._value = self._value, None
            self._cond.notify_all()
            return value

    def close(self) -> None:
        """Wake every waiter; later puts are refused and gets return what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
