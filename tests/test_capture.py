"""Capture: real video files and image folders through the capture thread, and bad inputs."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from livecam.errors import LivecamError
from livecam.live.capture import (
    FrameSource,
    ImageFolderReader,
    VideoFileReader,
    camera_rgb,
    open_reader,
    read_image,
)
from livecam.live.frame import Frame, LatestSlot
from tests.conftest import asset


def _drain(source: FrameSource) -> list[Frame]:
    frames = []
    with source:
        while (frame := source.next_frame(timeout=10)) is not None:
            frames.append(frame)
    return frames


def test_video_no_pace_delivers_every_frame_in_order(short_face_video: Path) -> None:
    frames = _drain(FrameSource(open_reader(str(short_face_video)), pace=False))
    assert [f.index for f in frames] == list(range(24))
    times = [f.t_capture_ns for f in frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].image.flags["C_CONTIGUOUS"]


def test_video_is_paced_at_its_frame_rate(short_face_video: Path) -> None:
    reader = open_reader(str(short_face_video))
    assert reader.fps == pytest.approx(29.97, abs=0.1)
    t0 = time.perf_counter()
    frames = _drain(FrameSource(reader, pace=True))
    elapsed = time.perf_counter() - t0
    assert len(frames) == 24
    assert elapsed >= 0.9 * 23 / 29.97  # 24 frames span 23 frame periods


def test_slow_consumer_drops_old_frames_and_counts_them(short_face_video: Path) -> None:
    source = FrameSource(open_reader(str(short_face_video)), pace=True)
    got = []
    with source:
        while (frame := source.next_frame(timeout=10)) is not None:
            got.append(frame.index)
            time.sleep(0.1)  # a loop three times slower than the video
    assert source.drops > 0
    assert len(got) + source.drops == 24
    assert got == sorted(got)


def test_latest_slot_keeps_newest_and_lossless_waits() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(3):
        slot.put(i)
    assert slot.get() == 2 and slot.drops == 2
    lossless: LatestSlot[int] = LatestSlot(lossless=True)
    lossless.put(1)
    t = threading.Thread(target=lossless.put, args=(2,))
    t.start()
    time.sleep(0.05)
    assert t.is_alive()  # waits for the first value to be taken
    assert lossless.get() == 1
    t.join(2)
    assert lossless.get() == 2 and lossless.drops == 0
    lossless.close()
    assert lossless.get() is None


def test_image_folder_in_name_order_with_exif_orientation(tmp_path: Path) -> None:
    shutil.copy(asset("images/faces/meds-aa-S001-01-exif-rotation.jpg"), tmp_path / "b.jpg")
    shutil.copy(asset("images/identity/meds-aa-S001-01.jpg"), tmp_path / "a.jpg")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    frames = _drain(FrameSource(ImageFolderReader(tmp_path, fps=30, loop=False), pace=False))
    assert len(frames) == 2
    upright, rotated = frames[0].image, frames[1].image
    # EXIF orientation 5 applied: the same picture, same shape and nearly the same pixels
    assert rotated.shape == upright.shape == (600, 480, 3)
    assert np.abs(rotated.astype(int) - upright.astype(int)).mean() < 8


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LivecamError, match="has no images"):
        open_reader(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hi")
    shutil.copy(asset("images/identity/meds-aa-S001-01.jpg"), tmp_path / "a.jpg")
    with pytest.raises(LivecamError, match=r"not images \(notes.txt\)"):
        open_reader(str(tmp_path))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    with pytest.raises(LivecamError, match=r"cannot read video file .*broken.mp4"):
        VideoFileReader(broken, loop=False)
    with pytest.raises(LivecamError, match="neither a camera index nor an existing file"):
        open_reader(str(tmp_path / "nope.mp4"))
    with pytest.raises(LivecamError, match="camera 9 could not be opened"):
        open_reader("9")
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"garbage")
    with pytest.raises(LivecamError, match=r"photo .*bad.png: not an image"):
        read_image(bad_image)


class _FlakyCamera:
    """Stands in for a webcam (none can exist on a test machine): serves frames, goes silent for a while
    as an unplugged camera does, then works again after being reopened."""

    def __init__(self, script: list[str]) -> None:
        self.script = script  # per open: "ok" serves frames, "dead" fails every read, "absent" will not open
        self.opens = 0
        self.reads = 0

    def __call__(self, index: int) -> _FlakyCamera.Device:
        state = self.script[min(self.opens, len(self.script) - 1)]
        self.opens += 1
        return _FlakyCamera.Device(self, state)

    class Device:
        def __init__(self, camera: _FlakyCamera, state: str) -> None:
            self.camera, self.state, self.served = camera, state, 0

        def isOpened(self) -> bool:
            return self.state != "absent"

        def read(self) -> tuple[bool, np.ndarray | None]:
            self.camera.reads += 1
            if self.state == "ok" or (self.state == "fails_after_2" and self.served < 2):
                self.served += 1
                return True, np.full((48, 64, 3), 7 * self.camera.opens, np.uint8)
            return False, None

        def set(self, prop: int, value: float) -> bool:
            return True

        def get(self, prop: int) -> float:
            return 30.0

        def release(self) -> None:
            self.state = "released"


def test_lost_camera_is_reopened_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from livecam.live.capture import CameraReader

    camera = _FlakyCamera(["fails_after_2", "absent", "ok"])
    reader = CameraReader(0, 64, 48, 30, reconnect_s=5, open_device=camera, retry_s=0, reopen_s=0)
    with caplog.at_level("WARNING", logger="livecam.live.capture"):
        first = [reader.read(), reader.read()]
        back = reader.read()  # reads fail, reopen fails once (absent), then the camera answers again
    assert all(f is not None and f.shape == (48, 64, 3) for f in first)
    assert back is not None and camera.opens == 3 and reader.reopened == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "camera 0 stopped sending frames; reopening it" in messages and "camera 0 is back" in messages
    reader.close()
    reader.close()


def test_camera_that_never_comes_back_is_a_clear_error() -> None:
    from livecam.live.capture import CameraReader

    camera = _FlakyCamera(["fails_after_2", "absent"])
    reader = CameraReader(3, 64, 48, 30, reconnect_s=0.05, open_device=camera, retry_s=0, reopen_s=0.02)
    reader.read()
    reader.read()
    with pytest.raises(LivecamError, match=r"camera 3 was lost .* within 0.05 s \(input.reconnect_s\)"):
        reader.read()


def test_a_single_image_file_is_upright_like_the_same_image_in_a_folder(tmp_path: Path) -> None:
    """`--input photo.jpg` and a folder holding photo.jpg read it the same way: EXIF orientation applied."""
    rotated = asset("images/faces/meds-aa-S001-01-exif-rotation.jpg")
    upright = read_image(asset("images/identity/meds-aa-S001-01.jpg"))
    shutil.copy(rotated, tmp_path / "photo.jpg")
    from_file = _drain(FrameSource(open_reader(str(rotated)), pace=False))
    from_folder = _drain(FrameSource(open_reader(str(tmp_path)), pace=False))
    assert len(from_file) == len(from_folder) == 1
    assert from_file[0].image.shape == from_folder[0].image.shape == upright.shape == (600, 480, 3)
    assert np.array_equal(from_file[0].image, from_folder[0].image)
    assert np.abs(from_file[0].image.astype(int) - upright.astype(int)).mean() < 8


def test_a_single_image_file_loops_when_asked() -> None:
    reader = open_reader(str(asset("images/identity/meds-aa-S001-01.jpg")), loop=True)
    first, second = reader.read(), reader.read()
    assert first is not None and second is not None and np.array_equal(first, second)
    assert "meds-aa-S001-01.jpg" in reader.description
    reader.close()


def _bgr_photo() -> np.ndarray:
    bgr = cv2.imread(str(asset("images/identity/meds-aa-S001-01.jpg")))
    assert bgr is not None
    return bgr


def test_camera_frames_of_any_opencv_layout_become_rgb() -> None:
    """What a camera driver hands OpenCV: BGR, greyscale HxW or HxWx1, BGRA, 16-bit greyscale."""
    bgr = _bgr_photo()
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(camera_rgb(bgr, "camera 0"), rgb)
    assert np.array_equal(camera_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "camera 0"), rgb)
    for image in (grey, grey[:, :, None], grey.astype(np.uint16) * 257):
        out = camera_rgb(image, "camera 0")
        assert out.shape == (600, 480, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
        assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 1], grey)
    with pytest.raises(LivecamError, match=r"camera 0 sent a frame of shape \(600, 480, 2\) uint8"):
        camera_rgb(np.zeros((600, 480, 2), np.uint8), "camera 0")
    with pytest.raises(LivecamError, match="camera 0 sent a frame of shape"):
        camera_rgb(np.zeros((600, 480, 3), np.float32), "camera 0")


class _LayoutCamera:
    """A camera (none can exist here) whose driver delivers real photo frames in a given OpenCV layout."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames

    def __call__(self, index: int) -> _LayoutCamera:
        return self

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 30.0

    def release(self) -> None: ...


def test_camera_reader_turns_greyscale_and_bgra_frames_into_rgb() -> None:
    from livecam.live.capture import CameraReader

    bgr = _bgr_photo()
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    camera = _LayoutCamera([grey, cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), bgr])
    reader = CameraReader(0, 480, 600, 30, reconnect_s=1, open_device=camera, retry_s=0, reopen_s=0)
    frames = [reader.read() for _ in range(3)]
    reader.close()
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    assert all(f is not None and f.shape == (600, 480, 3) and f.dtype == np.uint8 for f in frames)
    assert frames[0] is not None and np.array_equal(frames[0][:, :, 2], grey)
    assert np.array_equal(frames[1], rgb) and np.array_equal(frames[2], rgb)


def test_camera_without_the_asked_mode_sends_its_own_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """input.width/height (1280x720 by default) is a request: a camera that refuses it sends its own frames,
    which go on at that size, with one line saying so."""
    from livecam.live.capture import CameraReader

    bgr = _bgr_photo()
    camera = _LayoutCamera([bgr, bgr])
    reader = CameraReader(0, 1280, 720, 30, reconnect_s=1, open_device=camera, retry_s=0, reopen_s=0)
    with caplog.at_level("INFO", logger="livecam.live.capture"):
        frames = [reader.read(), reader.read()]
    reader.close()
    assert all(f is not None and f.shape == bgr.shape for f in frames)
    lines = [r.getMessage() for r in caplog.records if "sends" in r.getMessage()]
    assert lines == [f"camera 0 sends {bgr.shape[1]}x{bgr.shape[0]} (asked for 1280x720: input.width, input.height)"]
