"""Output sinks: offline and CPU only; the virtual camera is the real pyvirtualcam with a fake backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.camera import BACKENDS

from livecam.errors import LivecamError
from livecam.live.frame import Frame
from livecam.live.outputs import open_sink
from livecam.live.outputs import preview as preview_module
from livecam.live.outputs import video_file as video_file_module
from livecam.live.outputs import virtualcam as virtualcam_module
from livecam.live.outputs.memory import MemorySink
from livecam.live.outputs.preview import PreviewSink
from livecam.live.outputs.video_file import VideoFileSink, temp_path_for
from livecam.live.outputs.virtualcam import VirtualCamSink

SIZE = (320, 240)
FAKE_BACKEND = "livecam-test-fake"


def solid(rgb: tuple[int, int, int], index: int, size: tuple[int, int] = SIZE) -> Frame:
    """A frame of one colour."""
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rgb
    return Frame(image, index, 1_000 * index)


def gradient(index: int, size: tuple[int, int] = SIZE) -> Frame:
    """A frame whose every pixel differs from its neighbours and from other frames' pixels."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs % 256, ys % 256, np.full_like(xs, index)], axis=-1).astype(np.uint8)
    return Frame(image, index, 1_000 * index)


# --- virtual camera -------------------------------------------------------------------------------


@dataclass
class FakeDevice:
    """What the fake pyvirtualcam backend saw."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    frames: list[np.ndarray] = field(default_factory=list)
    closes: int = 0


@pytest.fixture
def fake_backend() -> Iterator[FakeDevice]:
    """Register a pyvirtualcam backend that records into a FakeDevice, and unregister it afterwards."""
    seen = FakeDevice()

    class Backend:
        def __init__(
            self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: Any
        ) -> None:
            seen.kwargs = dict(width=width, height=height, fps=fps, fourcc=fourcc, device=device, **kw)
            self._device = device or "/dev/fake0"

        def send(self, frame: np.ndarray) -> None:
            seen.frames.append(frame.copy())

        def close(self) -> None:
            seen.closes += 1

        def device(self) -> str:
            return self._device

        def native_fourcc(self) -> int | None:
            return None

    pyvirtualcam.register_backend(FAKE_BACKEND, Backend)
    yield seen
    BACKENDS.pop(FAKE_BACKEND, None)


def test_virtualcam_sends_frames_in_order_with_exact_pixels(fake_backend: FakeDevice) -> None:
    frames = [gradient(i) for i in range(5)]
    with open_sink("virtualcam", SIZE, 30.0, backend=FAKE_BACKEND, device="/dev/video42") as sink:
        assert isinstance(sink, VirtualCamSink)
        assert sink.device == "/dev/video42"
        assert sink.wants_stop is False
        for frame in frames:
            sink.send(frame)
    kw = fake_backend.kwargs
    assert (kw["width"], kw["height"], kw["fps"], kw["device"]) == (320, 240, 30.0, "/dev/video42")
    # pyvirtualcam encodes PixelFormat.RGB ('raw ') as a little-endian FourCC.
    assert kw["fourcc"] == int.from_bytes(b"raw ", "little")
    assert len(fake_backend.frames) == len(frames)
    for sent, frame in zip(fake_backend.frames, frames, strict=True):
        np.testing.assert_array_equal(sent.reshape(240, 320, 3), frame.image)
    assert fake_backend.closes == 1
    sink.close()  # idempotent
    assert fake_backend.closes == 1


def test_virtualcam_rejects_wrong_frame_size(fake_backend: FakeDevice) -> None:
    expected = r"expected .*\(240, 320, 3\).*got .*\(480, 640, 3\)"
    with VirtualCamSink(SIZE, 30.0, backend=FAKE_BACKEND) as sink, pytest.raises(ValueError, match=expected):
        sink.send(solid((1, 2, 3), 0, size=(640, 480)))
    assert fake_backend.frames == []


@pytest.mark.skipif("v4l2loopback" not in BACKENDS, reason="the v4l2loopback backend exists on Linux only")
def test_virtualcam_missing_device_explains_v4l2loopback() -> None:
    with pytest.raises(LivecamError) as info:
        VirtualCamSink(SIZE, 30.0, backend="v4l2loopback", device="/dev/video-livecam-missing")
    message = str(info.value)
    assert "\n" not in message
    assert "/dev/video-livecam-missing" in message  # names the device, and keeps pyvirtualcam's reason
    assert "does not exist" in message
    assert "v4l2loopback-dkms" in message and "exclusive_caps=1" in message
    assert "--output preview" in message and "--output out.mp4" in message


def test_virtualcam_missing_device_on_macos_points_to_obs(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoDevice:
        def __init__(self, **kw: Any) -> None:
            raise RuntimeError("OBS Virtual Camera is not installed")

    monkeypatch.setitem(BACKENDS, FAKE_BACKEND, NoDevice)
    monkeypatch.setattr(virtualcam_module.platform, "system", lambda: "Darwin")
    with pytest.raises(LivecamError, match=r"OBS Virtual Camera is not installed.*OBS Studio 30"):
        VirtualCamSink(SIZE, 30.0, backend=FAKE_BACKEND)


def test_virtualcam_unknown_backend_lists_known_ones() -> None:
    with pytest.raises(LivecamError, match=r"unknown virtual camera backend 'nope'"):
        VirtualCamSink(SIZE, 30.0, backend="nope")


# --- video file -----------------------------------------------------------------------------------

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255),
           (255, 0, 255), (128, 128, 128), (255, 255, 255), (0, 0, 0), (200, 100, 50)]  # fmt: skip


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of `path`, as RGB."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot read back {path}"
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_video_file_round_trip(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    with open_sink(str(target), SIZE, 30.0) as sink:
        assert isinstance(sink, VideoFileSink)
        for i, colour in enumerate(COLOURS):
            sink.send(solid(colour, i))
    frames = read_video(target)
    assert len(frames) == len(COLOURS)
    for got, colour in zip(frames, COLOURS, strict=True):
        assert got.shape == (240, 320, 3)
        # Lossy codecs and YUV 4:2:0 shift a solid colour by a few levels, never by tens.
        assert np.abs(got.reshape(-1, 3).mean(axis=0) - colour).max() < 12, (colour, got[120, 160])
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_video_file_appears_only_on_close(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    sink = VideoFileSink(target, SIZE, 30.0)
    sink.send(solid((10, 20, 30), 0))
    assert not target.exists()
    assert temp_path_for(target).exists()
    assert temp_path_for(target).name.startswith(".")
    sink.close()
    assert target.exists()
    assert not temp_path_for(target).exists()
    sink.close()  # idempotent
    assert target.exists()


def test_video_file_error_inside_with_keeps_the_frames_sent(tmp_path: Path) -> None:
    """A recording cut short by an error (a lost camera, a bug) keeps what it recorded, as a playable file."""
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoFileSink(target, SIZE, 30.0) as sink:
        sink.send(solid((255, 0, 0), 0))
        sink.send(solid((0, 0, 255), 1))
        raise RuntimeError("boom")
    frames = read_video(target)
    assert len(frames) == 2 and frames[1][120, 160, 2] > 200
    assert sink.kept == target
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no hidden temp file left


def test_video_file_keeps_an_existing_target_on_error_before_any_frame(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous take")
    with pytest.raises(RuntimeError, match="boom"), VideoFileSink(target, SIZE, 30.0) as sink:
        raise RuntimeError("boom")
    assert target.read_bytes() == b"previous take"
    assert sink.kept is None
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_video_file_with_no_frames_leaves_nothing(tmp_path: Path) -> None:
    VideoFileSink(tmp_path / "out.avi", SIZE, 30.0).close()
    assert list(tmp_path.iterdir()) == []


def test_video_file_missing_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(LivecamError, match=rf"folder {missing} does not exist"):
        open_sink(str(missing / "out.mp4"), SIZE, 30.0)


def test_video_file_bad_extension(tmp_path: Path) -> None:
    with pytest.raises(LivecamError, match=r"out\.mov.*\.mp4, \.avi, \.mkv"):
        VideoFileSink(tmp_path / "out.mov", SIZE, 30.0)


def test_video_file_odd_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LivecamError, match=r"321x241 must have an even width and height"):
        VideoFileSink(tmp_path / "out.mp4", (321, 241), 30.0)
    assert list(tmp_path.iterdir()) == []


def test_video_file_writer_that_cannot_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedWriter:
        fourcc = staticmethod(cv2.VideoWriter.fourcc)

        def __init__(self, *args: object) -> None:
            pass

        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr(video_file_module.cv2, "VideoWriter", ClosedWriter)
    with pytest.raises(LivecamError, match=r"out\.mkv: OpenCV could not open a XVID writer"):
        VideoFileSink(tmp_path / "out.mkv", SIZE, 30.0)
    assert list(tmp_path.iterdir()) == []


def test_video_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken.mp4"
    target.mkdir()
    with pytest.raises(LivecamError, match=r"cannot write video .*taken\.mp4: it is a folder"):
        VideoFileSink(target, SIZE, 30.0)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.mp4"]


@pytest.mark.parametrize("clean", [True, False])
def test_video_file_rename_failure_keeps_the_frames_in_the_temp_file(tmp_path: Path, clean: bool,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A folder appears where the file should go during the recording: the final rename fails, and the
    recording stays in the temp file, named in the error (close) or the log (abort: another error is
    already on its way)."""
    target = tmp_path / "taken.mp4"
    sink = VideoFileSink(target, SIZE, 30.0)
    sink.send(solid((10, 20, 30), 0))
    target.mkdir()
    temp = temp_path_for(target)
    if clean:
        with pytest.raises(LivecamError, match=rf"cannot write video .*taken\.mp4: .*the recording \(1 frame\) is "
                                               rf"kept in {temp}"):
            sink.close()
    else:
        sink.abort()
        assert f"the recording (1 frame) is kept in {temp}" in caplog.text
    assert sink.kept == temp
    assert len(read_video(temp)) == 1
    assert target.is_dir()


def test_video_file_rejects_wrong_dtype(tmp_path: Path) -> None:
    with VideoFileSink(tmp_path / "out.mp4", SIZE, 30.0) as sink:
        bad = Frame(np.zeros((240, 320, 3), np.float32), 0, 0)
        with pytest.raises(ValueError, match=r"expected an RGB uint8 .*got dtype float32"):
            sink.send(bad)


# --- factory --------------------------------------------------------------------------------------


def test_open_sink_unknown_spec_lists_accepted_values() -> None:
    with pytest.raises(LivecamError) as info:
        open_sink("out.mov", SIZE, 30.0)
    message = str(info.value)
    for accepted in ("virtualcam", "preview", ".mp4", ".avi", ".mkv"):
        assert accepted in message


def test_memory_is_not_an_output_name() -> None:
    """The memory sink keeps every frame: a test/API sink (MemorySink), never a user's output."""
    with pytest.raises(LivecamError) as info:
        open_sink("memory", SIZE, 30.0)
    assert str(info.value).count("memory") == 1 and "virtualcam" in str(info.value)


@pytest.mark.parametrize(("size", "fps"), [((0, 240), 30.0), ((320, -1), 30.0), ((320, 240), 0.0)])
def test_open_sink_bad_size_or_fps(size: tuple[int, int], fps: float) -> None:
    with pytest.raises(LivecamError, match="invalid"):
        open_sink("virtualcam", size, fps)


# --- memory ---------------------------------------------------------------------------------------


def test_memory_sink_keeps_the_newest() -> None:
    with MemorySink(SIZE, keep=3) as sink:
        for i in range(7):
            sink.send(solid((i, i, i), i))
    assert sink.count == 7
    assert [f.index for f in sink.frames] == [4, 5, 6]
    assert sink.wants_stop is False
    with pytest.raises(RuntimeError, match="after close"):
        sink.send(solid((0, 0, 0), 7))


def test_memory_sink_keeps_all_by_default() -> None:
    sink = MemorySink(SIZE)
    for i in range(4):
        sink.send(solid((i, i, i), i))
    assert [f.index for f in sink.frames] == [0, 1, 2, 3]


# --- preview --------------------------------------------------------------------------------------


def test_preview_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(preview_module.platform, "system", lambda: "Linux")
    with pytest.raises(LivecamError, match=r"no display.*--output out\.mp4.*virtualcam"):
        open_sink("preview", SIZE, 30.0)


def test_preview_gui_error_becomes_livecam_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gui(*args: object) -> None:
        raise cv2.error("The function is not implemented")

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(preview_module.cv2, "namedWindow", no_gui)
    with pytest.raises(LivecamError, match="no display"):
        PreviewSink(SIZE)


@pytest.mark.parametrize(
    ("key", "visible", "stops"), [(-1, 1.0, False), (ord("q"), 1.0, True), (27, 1.0, True), (-1, 0.0, True)]
)
def test_preview_quit_by_key_or_close_box(
    monkeypatch: pytest.MonkeyPatch, key: int, visible: float, stops: bool
) -> None:
    # The GUI calls are replaced so the key handling runs with no display.
    shown: list[np.ndarray] = []
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(preview_module.cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(preview_module.cv2, "imshow", lambda title, image: shown.append(image))
    monkeypatch.setattr(preview_module.cv2, "waitKey", lambda delay: key)
    monkeypatch.setattr(preview_module.cv2, "getWindowProperty", lambda title, prop: visible)
    monkeypatch.setattr(preview_module.cv2, "destroyWindow", lambda title: None)
    with PreviewSink(SIZE) as sink:
        sink.send(solid((255, 0, 0), 0))
        assert sink.closed_by_user is stops
        assert sink.wants_stop is stops
    assert shown[0][0, 0].tolist() == [0, 0, 255]  # BGR at the OpenCV call
