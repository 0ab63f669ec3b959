"""The live loop end to end: real video and photos, real MediaPipe, the studio engine, real sinks."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.types import Face, Mask, RGBImage
from livecam.assembly import build_renderer
from livecam.cli import main
from livecam.config import load_config
from livecam.errors import LivecamError
from livecam.live.capture import FrameSource, open_reader
from livecam.live.loop import run_loop
from livecam.live.outputs.memory import MemorySink
from livecam.live.stats import Stats
from models.face_landmarker import MediaPipeFaceTracker, detect_faces
from models.registry import REGISTRY
from models.segmenter import MediaPipeSegmenter
from tests.conftest import asset

SMALL = ["output.width=640", "output.height=360"]


@pytest.mark.parametrize("predict", [True, False])
def test_loop_over_real_video_into_memory(face_video: Path, landmarker_path: Path, segmenter_path: Path,
                                          predict: bool) -> None:
    config = load_config(None, SMALL)
    stats = Stats()
    renderer = build_renderer(config, stats)
    renderer.prepare()
    sink = MemorySink((640, 360))
    with FrameSource(open_reader(str(face_video)), pace=False) as source, \
            MediaPipeFaceTracker(landmarker_path) as tracker:
        segmenter = MediaPipeSegmenter(segmenter_path)
        try:
            run_loop(source, tracker, segmenter, renderer, sink, stats, max_frames=40, predict=predict)
        finally:
            segmenter.close()
    assert sink.count == 40 == stats.frames_out == stats.frames_in
    assert [f.index for f in sink.frames] == list(range(40))
    times = [f.t_capture_ns for f in sink.frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert all(f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 for f in sink.frames)
    summary = stats.summary()
    assert summary["no_face_frames"] == 0 and summary["drops"] == 0
    assert {"track", "segment", "render", "publish"} <= set(summary["sections"])


def test_run_writes_a_framed_relit_video(face_video: Path, tmp_path: Path, landmarker_path: Path) -> None:
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    code = main(["run", "--input", str(face_video), "--output", str(out), "--no-pace",
                 "--stats-json", str(stats_path)])
    assert code == 0
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    assert len(frames) == 90
    assert frames[0].shape == (720, 1280, 3)
    stats = json.loads(stats_path.read_text())
    assert stats["frames_in"] == stats["frames_out"] == 90
    for key in ("fps", "latency_ms_p50", "latency_ms_p95", "drops", "no_face_frames", "sections"):
        assert key in stats
    # The person is still there, at head-and-shoulders size, and the room behind was replaced.
    faces = detect_faces(landmarker_path, frames[45])
    assert len(faces) >= 1
    face_height = np.ptp(faces[0][:, 1]) / 720
    assert 0.2 < face_height < 0.5
    top_band = frames[45][:40].reshape(-1, 3).astype(float)
    assert top_band.std(axis=0).max() < 20  # a smooth backdrop, not the chandeliers of the original


def test_faces_are_centred_on_the_eye_line(tmp_path: Path, landmarker_path: Path) -> None:
    """Real portraits placed off-centre in a wider frame: each face ends up centred, eyes on the eye line.

    The frame is 960x540 with faces 13% of its width: MediaPipe's short-range face detector does not find
    faces much smaller than that relative to the frame width.
    """
    folder = tmp_path / "portraits"
    folder.mkdir()
    for i, (name, face_x) in enumerate((("obama_official_2012.jpg", 300), ("biden_official_portrait.jpg", 660))):
        portrait = cv2.imread(str(asset(f"images/faces/{name}")))
        face = detect_faces(landmarker_path, np.ascontiguousarray(portrait[:, :, ::-1]))[0]
        scale = 135 / np.ptp(face[:, 1])  # every face 135 px tall, whatever the portrait's crop
        portrait = cv2.resize(portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        room = np.full((540, 960, 3), 120, np.uint8)
        x = int(face_x - face[1, 0] * scale)  # nose tip at face_x
        y = int(250 - face[[33, 263], 1].mean() * scale)  # eyes at y=250, room for the crop above
        portrait = portrait[: 540 - y]
        room[y:y + portrait.shape[0], x:x + portrait.shape[1]] = portrait
        for repeat in range(3):  # a cut to another person takes VIDEO-mode tracking a frame to re-detect
            cv2.imwrite(str(folder / f"{i}-{repeat}.png"), room)
    out = tmp_path / "out.mp4"
    assert main(["run", "--input", str(folder), "--output", str(out), "--no-pace",
                 "--set", "framing.follow_s=0", "--set", "framing.face_height=0.4", "--set", "framing.eye_line=0.4",
                 "--set", "framing.headroom_max=0.5"]) == 0  # the eye line alone places (no tight headroom range)
    cap = cv2.VideoCapture(str(out))
    for index in range(6):
        ok, bgr = cap.read()
        assert ok
        if index % 3 != 2:
            continue
        face = detect_faces(landmarker_path, np.ascontiguousarray(bgr[:, :, ::-1]))[0]
        eyes = face[[33, 133, 362, 263], :2].mean(axis=0)
        assert abs(eyes[0] / 1280 - 0.5) < 0.04
        assert abs(eyes[1] / 720 - 0.40) < 0.04
        assert abs((face[152, 1] - face[10, 1]) / 720 - 0.4) < 0.04  # forehead to chin


class _FailingRenderer:
    name, output_size, needs_mask = "failing", (64, 64), False

    def prepare(self) -> None: ...

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        raise RuntimeError("boom")

    def close(self) -> None: ...


def test_a_render_error_surfaces_instead_of_hanging(short_face_video: Path, landmarker_path: Path) -> None:
    """A renderer that fails on every frame stops the loop with a LivecamError once the allowed time is up
    (0 here: at once); shorter bursts are ridden out (tests/test_loop_faults.py)."""
    with FrameSource(open_reader(str(short_face_video)), pace=False) as source, \
            MediaPipeFaceTracker(landmarker_path) as tracker, pytest.raises(LivecamError, match="boom"):
        run_loop(source, tracker, None, _FailingRenderer(), MemorySink((64, 64)), Stats(), render_failure_s=0)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livecam", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def _one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("livecam: error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0]


def test_bad_inputs_exit_with_one_clear_line(tmp_path: Path, short_face_video: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"not a jpeg")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    out = str(tmp_path / "o.mp4")
    _one_line_error(_cli("run", "--input", "7", "--output", out), "camera 7 could not be opened")
    _one_line_error(_cli("run", "--input", str(corrupt), "--output", out), "cannot read video file", "corrupt.mp4")
    _one_line_error(_cli("run", "--input", str(empty), "--output", out), "has no images")
    _one_line_error(_cli("run", "--input", str(junk), "--output", out), "not an image", "a.jpg")
    _one_line_error(_cli("run", "--input", str(short_face_video), "--output", str(tmp_path / "o.mov")), ".mov")
    _one_line_error(_cli("run", "--set", "framing.face_height=9"), "framing.face_height = 9")
    _one_line_error(_cli("run", "--set", "background.mode=image", "--set", "background.image=/no/such.png",
                         "--input", str(short_face_video), "--output", out), "background.image", "/no/such.png")
    assert not (tmp_path / "o.mp4").exists()


def test_missing_model_offline_names_file_url_and_place(tmp_path: Path, short_face_video: Path) -> None:
    result = _cli("run", "--input", str(short_face_video), "--output", str(tmp_path / "o.mp4"),
                  "--set", "models.download=false", env={"LIVECAM_MODEL_DIR": str(tmp_path / "models")})
    _one_line_error(result, "face_landmarker.task", "https://storage.googleapis.com/mediapipe-models/",
                    str(tmp_path / "models" / "face_landmarker.task"))


def test_models_and_doctor_report(model_dir: Path) -> None:
    listing = _cli("models")
    assert listing.returncode == 0
    assert listing.stdout.count(": ok") == len(REGISTRY) and "Apache-2.0" in listing.stdout
    doctor = _cli("doctor", "--set", "output.backend=v4l2loopback", "--set", "output.device=/dev/video99")
    assert "Traceback" not in doctor.stderr
    assert "camera" in doctor.stdout and "virtual camera" in doctor.stdout and "GPU" in doctor.stdout
    assert "diffusion" in doctor.stdout and "`auto` uses the" in doctor.stdout
    assert "v4l2loopback" in doctor.stdout  # what to install, on this Linux machine with no device
    assert doctor.returncode == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_prints_the_summary_and_keeps_the_video(tmp_path: Path, face_video: Path, signum: int) -> None:
    """Ctrl-C (SIGINT) or SIGTERM: exit 0, the summary on stderr, the stats JSON and a playable video."""
    out, stats = tmp_path / "o.mp4", tmp_path / "s.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "livecam", "run", "--input", str(face_video), "--set", "input.loop=true",
         "--output", str(out), "--stats-json", str(stats)],
        stderr=subprocess.PIPE, text=True,
        # a shell may start children with SIGINT ignored; a terminal's Ctrl-C reaches a default handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr is not None
    for line in process.stderr:  # wait until frames are flowing
        if "Ctrl-C to stop" in line:
            break
    time.sleep(2.0)
    process.send_signal(signum)
    rest = process.communicate(timeout=60)[1]
    assert process.returncode == 0, rest
    assert "Traceback" not in rest and "frames in" in rest
    frames_out = json.loads(stats.read_text())["frames_out"]
    assert frames_out > 10
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == frames_out
