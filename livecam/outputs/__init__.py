"""Where finished frames go: the `FrameSink` protocol, its shared base and the `open_sink` factory.

Every sink takes `Frame`s whose image is RGB uint8 HxWx3 of exactly the sink's `size` (width, height);
BGR exists only inside the OpenCV-backed sinks.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from engine.types import RGBImage
from livecam.errors import LivecamError
from livecam.frame import Frame

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")
"""File suffixes `open_sink` accepts as a video file output."""

SINK_NAMES = ("virtualcam", "preview", "memory")


class FrameSink(Protocol):
    """Receives output frames one at a time; a context manager whose `close()` may run more than once."""

    size: tuple[int, int]
    """(width, height) every frame's image must have."""

    @property
    def wants_stop(self) -> bool:
        """True when the sink asks the loop to stop (the user closed the preview window)."""
        ...

    def send(self, frame: Frame) -> None: ...

    def close(self) -> None:
        """Finish cleanly (a video file is put in place); later calls do nothing."""
        ...

    def abort(self) -> None:
        """Finish after an error: release everything and keep nothing half-written."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class SinkBase:
    """Shared plumbing: frame checking, run-once close/abort and the context manager.

    Subclasses implement `send` and `_release(ok)`; `_release` runs exactly once, with `ok=False` when the
    sink is aborted (an exception left the `with` block, or `abort()` was called).
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self._closed = False

    @property
    def wants_stop(self) -> bool:
        """False: only an interactive sink (the preview) ever asks the loop to stop."""
        return False

    def _check(self, frame: Frame) -> RGBImage:
        """Return `frame.image` after checking it matches this sink; a mismatch is a programming error."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}.send() after close()")
        image = frame.image
        width, height = self.size
        if image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise ValueError(
                f"{type(self).__name__}: expected an RGB uint8 image of shape {(height, width, 3)}, "
                f"got dtype {image.dtype} shape {image.shape} (frame {frame.index})"
            )
        return image

    def _release(self, ok: bool) -> None:
        """Free the sink's resources; `ok` is False on abort."""

    def close(self) -> None:
        """Finish cleanly; idempotent."""
        if not self._closed:
            self._closed = True
            self._release(ok=True)

    def abort(self) -> None:
        """Finish after an error, keeping nothing half-written; idempotent."""
        if not self._closed:
            self._closed = True
            self._release(ok=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def check_size(size: tuple[int, int], fps: float) -> None:
    """Raise LivecamError unless `size` is two positive ints and `fps` is positive."""
    width, height = size
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise LivecamError(
            f"output size {width}x{height} is invalid: width and height must be positive integers"
        )
    if not fps > 0:
        raise LivecamError(f"output fps {fps} is invalid: it must be greater than 0")


def open_sink(
    spec: str, size: tuple[int, int], fps: float, *, device: str = "", backend: str = ""
) -> FrameSink:
    """Open the sink named by `spec`: "virtualcam", "preview", "memory" or a .mp4/.avi/.mkv file path.

    `size` is (width, height); `device` and `backend` are passed to the virtual camera only.
    """
    check_size(size, fps)
    # Concrete sinks are imported here, not at the top: they import SinkBase from this module, and
    # `import livecam.outputs` stays free of pyvirtualcam and the GUI until a sink is really opened.
    if spec == "virtualcam":
        from livecam.outputs.virtualcam import VirtualCamSink

        return VirtualCamSink(size, fps, device=device, backend=backend)
    if spec == "preview":
        from livecam.outputs.preview import PreviewSink

        return PreviewSink(size)
    if spec == "memory":
        from livecam.outputs.memory import MemorySink

        return MemorySink(size)
    if Path(spec).suffix.lower() in VIDEO_EXTENSIONS:
        from livecam.outputs.video_file import VideoFileSink

        return VideoFileSink(spec, size, fps)
    raise LivecamError(
        f"unknown output {spec!r}: use {', '.join(SINK_NAMES)}, "
        f"or a video file path ending in {', '.join(VIDEO_EXTENSIONS)}"
    )
