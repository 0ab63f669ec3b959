"""The video file sink: frames are encoded with OpenCV into a temp file renamed into place on close."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from livecam.errors import LivecamError
from livecam.frame import Frame
from livecam.outputs import VIDEO_EXTENSIONS, SinkBase

# Codecs this OpenCV build (FFmpeg backend) both writes and reads back; H.264 ("avc1") is not available
# in the pip wheels, and XVID in .mkv is MPEG-4 Part 2 like mp4v.
FOURCC_BY_EXTENSION = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


def temp_path_for(path: Path) -> Path:
    """The hidden in-progress file next to `path`; it keeps the suffix so the writer picks the container."""
    return path.with_name(f".{path.stem}.part{path.suffix}")


class VideoFileSink(SinkBase):
    """Writes frames to `path` (.mp4, .avi or .mkv) at `fps`.

    The file appears at `path` only after a clean `close()` with at least one frame written; on `abort()`
    (an exception inside `with`) the partial file is deleted and `path` is left untouched.
    """

    def __init__(self, path: str | os.PathLike[str], size: tuple[int, int], fps: float) -> None:
        super().__init__(size)
        self.path = Path(path)
        self.count = 0
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC_BY_EXTENSION:
            raise LivecamError(
                f"cannot write video {self.path}: the name must end in one of {', '.join(VIDEO_EXTENSIONS)}"
            )
        parent = self.path.parent
        if not parent.is_dir():
            raise LivecamError(
                f"cannot write video {self.path}: folder {parent} does not exist; create it first"
            )
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
            self._temp.unlink(missing_ok=True)
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
        self._writer.release()
        # A file with no frames is not a playable video, so a run that sent nothing leaves nothing.
        if ok and self.count > 0:
            try:
                os.replace(self._temp, self.path)
            except OSError as e:
                self._temp.unlink(missing_ok=True)
                raise LivecamError(
                    f"cannot write video {self.path}: {e.strerror}; check the folder and the name"
                ) from e
        else:
            self._temp.unlink(missing_ok=True)
