"""Capture: a camera, a video file or a folder of images, read on a thread into a latest-value slot.

`open_reader(spec, ...)` picks the reader from `--input`: digits are a camera index, a folder is a folder
of images, a file with an image suffix is a single image, anything else must be a video file. Every reader
hands over RGB uint8 HxWx3 (`camera_rgb` converts what OpenCV delivers). The capture thread stamps each
image with its index and `perf_counter_ns()` and hands it over through a `LatestSlot`; a frame overwritten
before the loop took it counts as a drop. Errors on the capture thread reach the loop as the same exception
from `next_frame`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import cv2
import numpy as np

from engine.types import RGBImage
from livecam.errors import LivecamError
from livecam.live.frame import Frame, LatestSlot
from livecam.photos import read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
FAILURES_BEFORE_REOPEN = 15
"""Consecutive failed camera reads (about half a second) before the camera is reopened."""


class Reader(Protocol):
    """Reads images one at a time, on the capture thread."""

    description: str
    fps: float
    paced_by_device: bool
    """True for a camera, whose reads block until the next frame: no pacing sleep is added."""

    def read(self) -> RGBImage | None:
        """The next RGB image, or None at the end of the input."""
        ...

    def close(self) -> None: ...


def camera_rgb(image: np.ndarray, source: str) -> RGBImage:
    """An image as OpenCV hands it over (BGR, BGRA, or greyscale HxW or HxWx1; 8 or 16 bit) as RGB uint8
    HxWx3, C-contiguous: the pixel contract of everything after capture. An infrared or monochrome camera
    sends greyscale, some drivers BGRA. Raises LivecamError naming `source` for any other layout."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if image.dtype != np.uint8 or channels not in (1, 3, 4) or image.size == 0:
        raise LivecamError(f"{source} sent a frame of shape {image.shape} {image.dtype}: expected 8-bit "
                           "colour (BGR, BGRA) or greyscale")
    if channels == 1:
        return cast(RGBImage, cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB))
    if channels == 4:
        return cast(RGBImage, cv2.cvtColor(image, cv2.COLOR_BGRA2RGB))
    # cvtColor: a third of the time of numpy's reversed-stride copy (1.2 vs 3.9 ms at 1280x720, measured).
    return cast(RGBImage, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


class CaptureDevice(Protocol):
    """The part of `cv2.VideoCapture` a camera reader uses (a test can stand in for a device here)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, Any]: ...

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


class CameraReader:
    """A webcam by index. Failed reads are retried; a camera that stops answering is reopened, with a log
    line, until it comes back or `reconnect_s` has passed."""

    paced_by_device = True

    def __init__(self, index: int, width: int, height: int, fps: float, reconnect_s: float,
                 open_device: Callable[[int], CaptureDevice] = cv2.VideoCapture,
                 retry_s: float = 0.03, reopen_s: float = 0.5) -> None:
        self.index = index
        self.description = f"camera {index}"
        self._mode = (width, height, fps)
        self._sent: tuple[int, int] = (width, height)
        self._reconnect_s = reconnect_s
        self._open_device = open_device
        self._retry_s = retry_s
        self._reopen_s = reopen_s
        self._cap: CaptureDevice | None = self._open()
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or fps)
        self.reopened = 0

    def _open(self) -> CaptureDevice:
        cap = self._open_device(self.index)
        if not cap.isOpened():
            cap.release()
            raise LivecamError(
                f"camera {self.index} could not be opened: no such camera, or it is in use by another "
                "program (run `livecam doctor` to list cameras, or pass --input VIDEO_FILE)"
            )
        width, height, fps = self._mode
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        cap.set(cv2.CAP_PROP_FPS, fps)
        # One buffered frame: the newest image, not one queued by the driver.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def read(self) -> RGBImage | None:
        failures = 0
        lost_since: float | None = None
        while True:
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            if ok and bgr is not None:
                if lost_since is not None:
                    log.warning("camera %d is back", self.index)
                rgb = camera_rgb(bgr, self.description)
                size = (rgb.shape[1], rgb.shape[0])
                if size != self._sent:  # a camera without the asked mode sends its own: said once per size
                    self._sent = size
                    if size != self._mode[:2]:
                        log.info("camera %d sends %dx%d (asked for %dx%d: input.width, input.height)",
                                 self.index, *size, *self._mode[:2])
                return rgb
            failures += 1
            if failures < FAILURES_BEFORE_REOPEN:
                time.sleep(self._retry_s)
                continue
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                log.warning("camera %d stopped sending frames; reopening it", self.index)
            if now - lost_since > self._reconnect_s:
                raise LivecamError(f"camera {self.index} was lost and did not come back within "
                                   f"{self._reconnect_s:g} s (input.reconnect_s)")
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            time.sleep(self._reopen_s)
            try:
                self._cap = self._open()
                self.reopened += 1
            except LivecamError:
                self._cap = None  # still gone; the next round of reads counts as failures again
            failures = 0

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileReader:
    """A video file, decoded by OpenCV (FFmpeg)."""

    paced_by_device = False

    def __init__(self, path: Path, loop: bool) -> None:
        if not path.is_file():
            raise LivecamError(f"video file {path} does not exist")
        self.description = f"video {path.name}"
        self._path = path
        self._loop = loop
        self._cap = cv2.VideoCapture(str(path))
        ok, first = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok or first is None:
            self._cap.release()
            raise LivecamError(f"cannot read video file {path}: not a video OpenCV can decode, or it is empty")
        self._pending: RGBImage | None = camera_rgb(first, self.description)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 240 else 30.0

    def read(self) -> RGBImage | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, bgr = self._cap.read()
        if not ok and self._loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        return camera_rgb(bgr, self.description) if ok and bgr is not None else None

    def close(self) -> None:
        self._cap.release()


class ImageFilesReader:
    """Image files in the given order, played at `fps`; each read with `read_image` (EXIF orientation
    applied). A single image (`--input photo.jpg`) is one, a folder's images are many."""

    paced_by_device = False

    def __init__(self, files: list[Path], description: str, fps: float, loop: bool) -> None:
        self.description = description
        self._files = files
        self._loop = loop
        self._next = 0
        self.fps = fps
        read_image(files[0])  # fail now, not on the capture thread, when the first image is bad

    def read(self) -> RGBImage | None:
        if self._next >= len(self._files):
            if not self._loop:
                return None
            self._next = 0
        path = self._files[self._next]
        self._next += 1
        return read_image(path)

    def close(self) -> None:
        self._files = []


class ImageFolderReader(ImageFilesReader):
    """A folder of images in name order, played at `fps`. Hidden files are ignored; any other file that
    is not an image is an error, so a wrong folder is caught before the camera starts."""

    def __init__(self, folder: Path, fps: float, loop: bool) -> None:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        others = [p.name for p in files if p.is_dir() or p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise LivecamError(f"folder {folder} holds files that are not images ({shown}); "
                               f"it may hold only {' '.join(IMAGE_SUFFIXES)} files")
        if not files:
            raise LivecamError(f"folder {folder} has no images ({' '.join(IMAGE_SUFFIXES)})")
        super().__init__(files, f"folder {folder.name} ({len(files)} images)", fps, loop)


def open_reader(spec: str, *, width: int = 1280, height: int = 720, fps: float = 30.0, loop: bool = False,
                reconnect_s: float = 10.0) -> Reader:
    """The reader for `--input SPEC`: a camera index, a folder of images, an image file or a video file."""
    spec = spec.strip()
    if spec.isdigit():
        return CameraReader(int(spec), width, height, fps, reconnect_s)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderReader(path, fps, loop)
    if not path.exists():
        raise LivecamError(f"input {spec!r} is neither a camera index nor an existing file or folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        # Read as a folder's images are (OpenCV's video decoder would ignore the EXIF orientation).
        return ImageFilesReader([path], f"image {path.name}", fps, loop)
    return VideoFileReader(path, loop)


class FrameSource:
    """Runs a `Reader` on a capture thread and hands out the newest frame.

    `pace=True` plays files at their own frame rate (a camera paces itself) and keeps only the newest
    frame, dropping what the loop was too slow to take; `pace=False` hands over every frame, as fast as
    the loop takes them.
    """

    def __init__(self, reader: Reader, pace: bool = True) -> None:
        self.reader = reader
        self.pace = pace
        self._slot: LatestSlot[Frame] = LatestSlot(lossless=not pace)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.frames_read = 0
        self._thread = threading.Thread(target=self._run, name="livecam-capture", daemon=True)
        self._closed = False

    @property
    def fps(self) -> float:
        return self.reader.fps

    @property
    def drops(self) -> int:
        return self._slot.drops

    def __enter__(self) -> FrameSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        period_ns = int(1e9 / self.reader.fps)
        sleep_between = self.pace and not self.reader.paced_by_device
        t0 = time.perf_counter_ns()
        try:
            while not self._stop.is_set():
                if sleep_between:
                    # Wait for this frame's due time (an Event wait, so close() interrupts it).
                    due = t0 + self.frames_read * period_ns
                    delay = (due - time.perf_counter_ns()) / 1e9
                    if delay > 0 and self._stop.wait(delay):
                        break
                image = self.reader.read()
                if image is None:
                    break
                frame = Frame(image, self.frames_read, time.perf_counter_ns())
                self.frames_read += 1
                if not self._slot.put(frame):
                    break
        except Exception as e:  # handed to the loop's thread, which raises it
            self._error = e
        finally:
            self._slot.close()

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The newest frame; None at the end of the input (or on timeout). Re-raises a capture error."""
        frame = self._slot.get(timeout)
        if frame is None and self._error is not None:
            raise self._error
        return frame

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.reader.close()
