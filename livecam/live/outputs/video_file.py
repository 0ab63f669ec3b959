"""The video file sink: frames are encoded with OpenCV into a temp file renamed into place on close."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2

from livecam.errors import LivecamError
from livecam.live.frame import Frame
from livecam.live.outputs.base import VIDEO_EXTENSIONS, SinkBase, check_writable_file

# Codecs this OpenCV build (FFmpeg backend) both writes and reads back; H.264 ("avc1") is not available
# in the pip wheels, and XVID in .mkv is MPEG-4 Part 2 like mp4v.
FOURCC_BY_EXTENSION = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}

log = logging.getLogger(__name__)


def temp_path_for(path: Path) -> Path:
    """The hidden in-progress file next to `path`; it keeps the suffix so the writer picks the container."""
    return path.with_name(f".{path.stem}.part{path.suffix}")


class VideoFileSink(SinkBase):
    """Writes frames to `path` (.mp4, .avi or .mkv) at `fps`.

    Frames go to a hidden temp file beside `path`, finished and moved to `path` when the sink is closed or
    aborted (an exception inside `with`): a recording cut short by an error keeps the frames written so
    far, as a playable file. A sink that wrote no frame leaves nothing, and `path` is then untouched.
    """

    def __init__(self, path: str | os.PathLike[str], size: tuple[int, int], fps: float) -> None:
        super().__init__(size)
        self.path = Path(path).expanduser()
        self.count = 0
        self.kept: Path | None = None
        """Where the recorded frames are once the sink is finished: `path`, or the temp file when it could
        not be moved there; None while recording, or when no frame was written."""
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC_BY_EXTENSION:
            raise LivecamError(
                f"cannot write video {self.path}: the name must end in one of {', '.join(VIDEO_EXTENSIONS)}"
            )
        check_writable_file(self.path, "video")
        parent = self.path.parent
        width, height = size
        # The MPEG-4 and MJPEG encoders silently crop odd sizes to even ones, so refuse them up front.
        if width % 2 or height % 2:
            raise LivecamError(
                f"cannot write video {self.path}: output size {width}x{height} must have an even width and "
                "height; change the output size"
            )
        self._temp = temp_path_for(self.path)
        fourcc = cv2.VideoWriter.fourcc(*FOURCC_BY_EXTENSION[suffix])
        self._writer = cv2.VideoWriter(str(self._temp), fourcc, float(fps), (width, height))
        if not self._writer.isOpened():
            _discard(self._temp)
            codec = FOURCC_BY_EXTENSION[suffix]
            others = ", ".join(VIDEO_EXTENSIONS)
            raise LivecamError(
                f"cannot write video {self.path}: OpenCV could not open a {codec} writer for it; "
                f"check that {parent} is writable, or try another extension ({others})"
            )

    def send(self, frame: Frame) -> None:
        """Encode one frame (RGB uint8 of `size`)."""
        image = self._check(frame)
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.count += 1

    def _release(self, ok: bool) -> None:
        # Releasing the writer finishes the container (header, index): what was sent so far plays.
        self._writer.release()
        if self.count == 0:
            # A file with no frames is not a playable video, so a run that sent nothing leaves nothing.
            _discard(self._temp)
            return
        try:
            os.replace(self._temp, self.path)
        except OSError as e:
            # The frames are kept where they are, never deleted: a long recording is worth more than tidiness.
            self.kept = self._temp
            frames = f"{self.count} frame{'s' if self.count != 1 else ''}"
            message = (f"cannot write video {self.path}: {e.strerror or e}; the recording ({frames}) is kept in "
                       f"{self._temp}")
            if ok:
                raise LivecamError(message) from e
            log.warning("%s", message)  # an abort: the error that caused it is the one to report
            return
        self.kept = self.path


def _discard(path: Path) -> None:
    """Remove a temp file that holds no frames; a folder that refuses the removal (read-only, gone) is only
    logged, so it cannot hide the error being reported."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        if path.exists():
            log.warning("could not remove the empty temp file %s: %s", path, e.strerror or e)
