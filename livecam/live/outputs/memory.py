"""A sink that keeps frames in a list: for tests and for callers that post-process the output."""

from __future__ import annotations

from livecam.live.frame import Frame
from livecam.live.outputs.base import SinkBase


class MemorySink(SinkBase):
    """Keeps the sent frames in `frames` (only the newest `keep` when set) and counts them in `count`.

    Frames are kept by reference: the live path never reuses an image buffer once it is sent.
    """

    def __init__(self, size: tuple[int, int], keep: int | None = None) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"MemorySink keep must be None or >= 1, got {keep}")
        super().__init__(size)
        self.keep = keep
        self.frames: list[Frame] = []
        self.count = 0

    def send(self, frame: Frame) -> None:
        """Store `frame`, dropping the oldest beyond `keep`."""
        self._check(frame)
        self.frames.append(frame)
        self.count += 1
        if self.keep is not None and len(self.frames) > self.keep:
            del self.frames[: -self.keep]
