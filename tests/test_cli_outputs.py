"""`livecam run`/`serve` output paths through the real CLI: checked before any work starts, never the input,
and a run that fails half-way keeps what it recorded. Real files, real MediaPipe, the studio engine."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from livecam.cli import main
from livecam.errors import LivecamError
from livecam.live import capture as capture_module
from livecam.live import run as live_module
from livecam.live.capture import CameraReader, Reader
from tests.conftest import asset

SMALL = ["--set", "output.width=320", "--set", "output.height=240", "--engine", "studio"]


def frame_count(path: Path) -> int:
    """Frames decoded from `path` (the container's own count can be an estimate)."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} is not a playable video"
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def one_error_line(capsys: pytest.CaptureFixture[str], code: int, *expected: str) -> str:
    """Assert the CLI failed with exit 2 and exactly one `livecam: error:` line holding `expected`."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("livecam: error:")]
    assert len(errors) == 1, err
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


# --- checked before any work starts -------------------------------------------------------------------


def test_stats_json_that_is_a_folder_is_refused_before_the_run(
        tmp_path: Path, short_face_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "stats"
    folder.mkdir()
    out = tmp_path / "out.mp4"
    code = main(["run", "--input", str(short_face_video), "--output", str(out), "--no-pace", *SMALL,
                 "--stats-json", str(folder)])
    one_error_line(capsys, code, str(folder), "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats"]  # nothing was recorded
    assert list(folder.iterdir()) == []


def test_stats_json_in_a_missing_folder_is_refused_before_the_run(
        tmp_path: Path, short_face_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = tmp_path / "no" / "such" / "s.json"
    code = main(["run", "--input", str(short_face_video), "--output", str(tmp_path / "out.mp4"), "--no-pace",
                 *SMALL, "--stats-json", str(stats)])
    one_error_line(capsys, code, str(stats), "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_folder_is_refused_before_the_run(
        tmp_path: Path, short_face_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "take.mp4"
    target.mkdir()
    code = main(["run", "--input", str(short_face_video), "--output", str(target), "--no-pace", *SMALL])
    one_error_line(capsys, code, str(target), "folder")
    assert [p.name for p in tmp_path.iterdir()] == ["take.mp4"] and target.is_dir()


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `python -m livecam ARGS` in a private mount namespace where `tmp_path/ro` is a read-only
    filesystem (a real one: a tmpfs mounted ro, which even root cannot write). Skips where Linux mount
    namespaces are not available to this user."""
    folder = tmp_path / "ro"
    folder.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux unshare")
    prefix = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-rm"]
    mount = ["sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(folder)]
    probe = subprocess.run([*prefix, *mount, "sh", "-c", f"! touch {folder}/probe 2>/dev/null"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs in a private namespace here: {probe.stderr.strip()}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *mount, sys.executable, "-m", "livecam", *args], capture_output=True,
                              text=True, timeout=120)
    run.folder = folder  # type: ignore[attr-defined]
    return run


def _one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("livecam: error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]


def test_output_on_a_read_only_filesystem_is_one_line(
        read_only_folder: Any, short_face_video: Path, tmp_path: Path) -> None:
    folder = read_only_folder.folder
    result = read_only_folder("run", "--input", str(short_face_video), "--output", str(folder / "out.mp4"),
                              "--no-pace", *SMALL)
    _one_line(result, str(folder / "out.mp4"), "Read-only file system")
    assert "engine" not in result.stderr  # refused before the renderer was even built


def test_stats_json_on_a_read_only_filesystem_is_refused_before_the_run(
        read_only_folder: Any, short_face_video: Path, tmp_path: Path) -> None:
    folder = read_only_folder.folder
    out = tmp_path / "out.mp4"
    result = read_only_folder("run", "--input", str(short_face_video), "--output", str(out), "--no-pace", *SMALL,
                              "--stats-json", str(folder / "s.json"))
    _one_line(result, str(folder / "s.json"), "Read-only file system")
    assert not out.exists()


def test_input_and_output_the_same_file_is_refused(
        tmp_path: Path, short_face_video: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    video = tmp_path / "take.mp4"
    shutil.copy(short_face_video, video)
    original = video.read_bytes()
    code = main(["run", "--input", str(video), "--output", str(video), "--no-pace", *SMALL])
    one_error_line(capsys, code, str(video), "input")
    # The same file spelt another way (relative, through a symlink) is still the same file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.mp4").symlink_to(video)
    code = main(["run", "--input", "take.mp4", "--output", "./link.mp4", "--no-pace", *SMALL])
    one_error_line(capsys, code, "link.mp4", "input")
    code = main(["serve", "--input", str(video), "--output", "take.mp4", "--port", "0", *SMALL])
    one_error_line(capsys, code, "take.mp4", "input")
    assert video.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.mp4", "take.mp4"]


def test_stats_json_may_not_overwrite_the_input_or_the_video(
        tmp_path: Path, short_face_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "take.mp4"
    shutil.copy(short_face_video, video)
    original = video.read_bytes()
    out = tmp_path / "out.mp4"
    code = main(["run", "--input", str(video), "--output", str(out), "--no-pace", *SMALL,
                 "--stats-json", str(video)])
    one_error_line(capsys, code, str(video), "--stats-json")
    code = main(["run", "--input", str(video), "--output", str(out), "--no-pace", *SMALL, "--stats-json", str(out)])
    one_error_line(capsys, code, str(out), "--stats-json")
    assert video.read_bytes() == original and not out.exists()


def test_memory_is_not_an_output(tmp_path: Path, short_face_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "serve"):
        code = main([command, "--input", str(short_face_video), "--output", "memory", *SMALL])
        line = one_error_line(capsys, code, "'memory'", "virtualcam", "preview", ".mp4")
        assert line.count("memory") == 1  # named as the mistake, not offered as a choice
    config = tmp_path / "config.toml"
    config.write_text('[output]\ntarget = "memory"\n')
    code = main(["run", "--config", str(config), "--input", str(short_face_video), "--frames", "2", *SMALL])
    one_error_line(capsys, code, "'memory'", "virtualcam")


# --- a run that fails half-way keeps what it recorded ------------------------------------------------------


def _portrait(size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A real frontal portrait, fitted into `size` (BGR)."""
    photo = cv2.imread(str(asset("images/faces/obama_official_2012.jpg")))
    width, height = size
    scale = height / photo.shape[0]
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 90, np.uint8)
    x = (width - small.shape[1]) // 2
    frame[:, x:x + small.shape[1]] = small[:height]
    return frame


def test_a_corrupt_image_mid_folder_keeps_the_frames_before_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    portrait = _portrait()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), portrait)
    ok, jpeg = cv2.imencode(".jpg", portrait)
    assert ok
    (folder / "3.jpg").write_bytes(jpeg.tobytes()[: jpeg.size * 6 // 10])  # a real JPEG cut short
    for i in range(4, 7):
        cv2.imwrite(str(folder / f"{i}.png"), portrait)
    out, stats = tmp_path / "out.mp4", tmp_path / "s.json"
    code = main(["run", "--input", str(folder), "--output", str(out), "--no-pace", *SMALL, "--stats-json", str(stats)])
    one_error_line(capsys, code, "the input failed after 3 frames", "3.jpg",
                   f"the 3 frames recorded so far are in {out}")
    assert frame_count(out) == 3
    assert stats.is_file()  # the statistics of what did run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out.mp4", "s.json"]  # no hidden leftovers


class _LostCamera:
    """A webcam at the `cv2.VideoCapture` boundary (no camera exists here): real frames for `good` reads,
    then nothing, as when it is unplugged; or, with `error`, a read that raises it."""

    def __init__(self, frames: list[np.ndarray], good: int, error: BaseException | None = None) -> None:
        self._frames, self._good, self._error, self.reads = frames, good, error, 0

    def isOpened(self) -> bool:
        return self.reads < self._good

    def read(self) -> tuple[bool, Any]:
        self.reads += 1
        if self.reads <= self._good:
            return True, self._frames[(self.reads - 1) % len(self._frames)].copy()
        if self._error is not None:
            raise self._error
        return False, None

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 30.0

    def release(self) -> None:
        pass


@pytest.fixture
def lost_camera(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Make `--input 0` a camera that delivers `good` real frames and is then lost."""
    def install(good: int, error: BaseException | None = None) -> None:
        frames = [_portrait()]
        camera = _LostCamera(frames, good, error)

        def open_reader(spec: str, **kwargs: Any) -> Reader:
            assert spec == "0"
            return CameraReader(0, 320, 240, 30.0, reconnect_s=0.0, open_device=lambda index: camera,
                                retry_s=0.0, reopen_s=0.0)
        monkeypatch.setattr(capture_module, "open_reader", open_reader)
    yield install


def test_a_camera_lost_mid_recording_keeps_the_recording(
        tmp_path: Path, lost_camera: Callable[..., None], capsys: pytest.CaptureFixture[str]) -> None:
    lost_camera(good=5)
    out = tmp_path / "out.mp4"
    code = main(["run", "--input", "0", "--output", str(out), *SMALL])
    line = one_error_line(capsys, code, "the input failed after", "camera 0 was lost", str(out))
    found = re.search(r"the (\d+) frames? recorded so far (?:are|is) in", line)
    assert found, line
    recorded = int(found[1])
    assert 1 <= recorded <= 5
    assert frame_count(out) == recorded
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_any_error_from_the_loop_keeps_the_recording(
        tmp_path: Path, lost_camera: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    """Not a user's mistake (a bug, a driver fault): the error propagates as it is, but the frames
    recorded before it are kept and the log says where."""
    lost_camera(good=4, error=OSError(errno.EIO, "Input/output error"))
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.INFO, "livecam"), pytest.raises(OSError, match="Input/output error"):
        main(["run", "--input", "0", "--output", str(out), *SMALL])
    assert 1 <= frame_count(out) <= 4
    assert re.search(rf"recorded so far (?:are|is) in {re.escape(str(out))}", caplog.text), caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_a_stats_write_failure_after_the_run_keeps_the_recording(
        tmp_path: Path, short_face_video: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up (or the folder goes away) after the checks passed: the statistics are lost, the
    recording is not. (A full disk cannot be made here, so the write fails at the filesystem boundary.)"""
    def disk_full(path: Path, data: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(live_module, "write_json", disk_full)
    out, stats = tmp_path / "out.mp4", tmp_path / "s.json"
    code = main(["run", "--input", str(short_face_video), "--output", str(out), "--no-pace", *SMALL,
                 "--frames", "6", "--stats-json", str(stats)])
    one_error_line(capsys, code, str(stats), "No space left on device", str(out))
    assert frame_count(out) == 6
    assert not stats.exists()


def test_run_live_refuses_bad_outputs_before_loading_anything(tmp_path: Path, short_face_video: Path) -> None:
    """The Python entry point checks the same way as the CLI (before the renderer or the models)."""
    from livecam.config import load_config

    config = load_config(None, [f"input.source={short_face_video}", f"output.target={short_face_video}"])
    with pytest.raises(LivecamError, match="input"):
        live_module.run_live(config, max_frames=1)
    config = load_config(None, [f"input.source={short_face_video}", f"output.target={tmp_path / 'o.mp4'}"])
    with pytest.raises(LivecamError, match="folder"):
        live_module.run_live(config, max_frames=1, stats_json=tmp_path)
    assert list(tmp_path.iterdir()) == []
