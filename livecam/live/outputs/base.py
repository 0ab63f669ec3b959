"""The `FrameSink` protocol, its shared base, and the checks that run on an output before any work starts.

Every sink takes `Frame`s whose image is RGB uint8 HxWx3 of exactly the sink's `size` (width, height);
BGR exists only inside the OpenCV-backed sinks.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from engine.types import RGBImage
from livecam.errors import LivecamError
from livecam.live.frame import Frame

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")
"""File suffixes `open_sink` accepts as a video file output."""

SINK_NAMES = ("virtualcam", "preview")
"""The outputs a user may name (`--output`, `output.target`) besides a video file. The memory sink is not one:
it keeps every frame, so it is for tests and Python callers (`MemorySink`), never a command line."""

log = logging.getLogger(__name__)


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
        """Finish after an error: release everything; a recording keeps the frames written so far (a
        finished, playable file), and nothing half-written is left."""
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
        """Finish after an error (see `FrameSink.abort`); idempotent."""
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


def unknown_output(spec: str) -> LivecamError:
    """The error for an output that is neither a sink name nor a video file name; it lists what is."""
    return LivecamError(
        f"unknown output {spec!r}: use {', '.join(SINK_NAMES)}, "
        f"or a video file path ending in {', '.join(VIDEO_EXTENSIONS)}"
    )


def check_output_name(spec: str) -> None:
    """Raise LivecamError unless `spec` is a sink name or a video file name (nothing on disk is looked at)."""
    if spec not in SINK_NAMES and Path(spec).suffix.lower() not in VIDEO_EXTENSIONS:
        raise unknown_output(spec)


def check_writable_file(path: Path, what: str) -> None:
    """Raise LivecamError unless a file can be put at `path`: not a folder, in a folder that exists and
    takes new files. Checked by creating (and removing) a hidden file beside it: permission bits alone
    do not tell, for root or on a read-only filesystem."""
    if path.is_dir():
        raise LivecamError(f"cannot write {what} {path}: it is a folder; give a file name")
    parent = path.parent
    if not parent.exists():
        raise LivecamError(f"cannot write {what} {path}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise LivecamError(f"cannot write {what} {path}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=parent)
    except OSError as e:
        raise LivecamError(f"cannot write {what} {path}: folder {parent} does not take new files "
                           f"({e.strerror or e})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError as e:  # it could be made, so this is near impossible; say so rather than fail the run
        log.warning("could not remove the check file %s: %s", probe, e.strerror or e)


def same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` are one file (through links and relative spellings too)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:  # unreadable: they cannot be compared, and opening them reports the real problem
        return False


def input_path(source: str) -> Path | None:
    """The file or folder an `input.source` names; None for a camera index."""
    source = source.strip()
    return None if source.isdigit() else Path(source).expanduser()


def check_output(spec: str, source: str = "") -> None:
    """Check an output before any work starts: a known name, or a video file that can be written and is
    not the input (`source`, an `input.source`). Raises LivecamError with one line naming the path."""
    check_output_name(spec)
    if spec in SINK_NAMES:
        return
    path = Path(spec).expanduser()
    check_writable_file(path, "video")
    read = input_path(source)
    if read is not None and same_file(path, read):
        raise LivecamError(f"cannot write video {path}: it is the input ({source}); the recording would "
                           "overwrite it, so give another output name")
