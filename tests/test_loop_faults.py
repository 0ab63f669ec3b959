"""The live loop through faults: frames that change size mid-stream, greyscale input, a renderer that fails
for a few frames or for good. Real photos and video, real MediaPipe, the real studio engine."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import framing as fr
from engine.types import Face, Mask, Renderer, RGBImage
from livecam.assembly import build_renderer
from livecam.cli import main
from livecam.config import load_config
from livecam.errors import LivecamError
from livecam.live.capture import FrameSource, open_reader, read_image
from livecam.live.loop import framed_input, run_loop
from livecam.live.outputs.memory import MemorySink
from livecam.live.stats import Stats
from models.face_landmarker import MediaPipeFaceTracker, detect_faces
from models.segmenter import MediaPipeSegmenter
from tests.conftest import asset

SMALL = ["output.width=640", "output.height=360"]
# Portraits of four sizes, each shown three times: a folder of mixed photos, or a camera that comes back at
# another resolution. 480x600 -> 910x1137 -> 1200x1200 -> 480x600 -> 626x1200: four changes of size.
MIXED = ["identity/meds-aa-S001-01.jpg", "faces/obama_official_2012.jpg", "faces/biden_official_portrait.jpg",
         "identity/meds-aa-S001-02.jpg", "faces/obama_congress_2009.jpg"]
REPEAT = 3


def _mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, name in enumerate(MIXED):
        for repeat in range(REPEAT):
            shutil.copy(asset(f"images/{name}"), folder / f"{i}-{repeat}.jpg")
    return folder


def _run(folder_or_video: Path, renderer: Renderer, stats: Stats, landmarker_path: Path, segmenter_path: Path,
         predict: bool = True, **loop_args: float) -> MemorySink:
    sink = MemorySink(renderer.output_size)
    with FrameSource(open_reader(str(folder_or_video)), pace=False) as source, \
            MediaPipeFaceTracker(landmarker_path) as tracker:
        segmenter = MediaPipeSegmenter(segmenter_path)
        try:
            run_loop(source, tracker, segmenter, renderer, sink, stats, predict=predict, **loop_args)
        finally:
            segmenter.close()
    return sink


def _eyes(landmarker_path: Path, image: RGBImage) -> tuple[float, float]:
    """Where the eyes are in an output frame, as fractions of its width and height."""
    faces = detect_faces(landmarker_path, image)
    assert faces, "no face in the output frame"
    eyes = faces[0][[33, 133, 362, 263], :2].mean(axis=0)
    return float(eyes[0]) / image.shape[1], float(eyes[1]) / image.shape[0]


def _fresh_eyes(photo: str, landmarker_path: Path, segmenter_path: Path) -> tuple[float, float]:
    """The eyes' place in the output when `photo` is the first frame a fresh pipeline sees (the framing snaps
    to the face, within what the photo's edges allow)."""
    config = load_config(None, SMALL)
    renderer = build_renderer(config, Stats())
    renderer.prepare()
    image = read_image(asset(f"images/{photo}"))
    with MediaPipeFaceTracker(landmarker_path) as tracker:
        face = tracker.track(image, 0)
    segmenter = MediaPipeSegmenter(segmenter_path)
    try:
        out = renderer.render(image, face, segmenter.segment(image, 0), 0)
    finally:
        segmenter.close()
        renderer.close()
    return _eyes(landmarker_path, out)


@pytest.mark.parametrize("predict", [True, False])
def test_frames_that_change_size_mid_stream_are_framed_afresh(tmp_path: Path, landmarker_path: Path,
                                                               segmenter_path: Path, predict: bool) -> None:
    """The prediction from a frame of another size is never used, and tracking and framing start afresh on
    the new size: the first frame after each change is framed as a fresh start frames it (no glide from a
    crop box that meant another frame, no frame lost to re-finding the face)."""
    config = load_config(None, SMALL)
    stats = Stats()
    renderer = build_renderer(config, stats)
    renderer.prepare()
    sink = _run(_mixed_folder(tmp_path), renderer, stats, landmarker_path, segmenter_path, predict)
    renderer.close()
    total = len(MIXED) * REPEAT
    assert sink.count == stats.frames_in == stats.frames_out == total
    summary = stats.summary()
    assert summary["size_changes"] == len(MIXED) - 1 and summary["render_errors"] == 0
    assert summary["no_face_frames"] == 0
    for group, photo in enumerate(MIXED):
        x, y = _eyes(landmarker_path, sink.frames[group * REPEAT].image)  # the first frame of each size
        fresh_x, fresh_y = _fresh_eyes(photo, landmarker_path, segmenter_path)
        assert abs(x - fresh_x) < 0.01 and abs(y - fresh_y) < 0.01, (photo, (x, y), (fresh_x, fresh_y))


def test_run_with_a_folder_of_mixed_sizes_counts_the_changes(tmp_path: Path) -> None:
    """`livecam run` on such a folder finishes (it stopped with a traceback before) and reports the changes."""
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    assert main(["run", "--input", str(_mixed_folder(tmp_path)), "--output", str(out), "--no-pace",
                 "--stats-json", str(stats_path), *(f"--set={s}" for s in SMALL)]) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["frames_in"] == stats["frames_out"] == len(MIXED) * REPEAT
    assert stats["size_changes"] == len(MIXED) - 1 and stats["render_errors"] == 0
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == len(MIXED) * REPEAT


def test_a_folder_of_greyscale_photos_runs_end_to_end(tmp_path: Path, landmarker_path: Path,
                                                      segmenter_path: Path) -> None:
    folder = tmp_path / "grey"
    folder.mkdir()
    for i in range(1, 4):
        bgr = cv2.imread(str(asset(f"images/identity/meds-aa-S001-0{i}.jpg")))
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    config = load_config(None, SMALL)
    stats = Stats()
    renderer = build_renderer(config, stats)
    renderer.prepare()
    sink = _run(folder, renderer, stats, landmarker_path, segmenter_path)
    assert sink.count == 3 and stats.no_face == 0
    assert all(f.image.shape == (360, 640, 3) for f in sink.frames)
    x, _ = _eyes(landmarker_path, sink.frames[0].image)  # framed on the face (the first frame snaps)
    assert abs(x - 0.5) < 0.05


class _FailOn:
    """A real renderer that raises on the given calls (0-based), as a renderer bug on an odd frame would."""

    def __init__(self, inner: Renderer, failing: set[int] | None) -> None:
        self.inner = inner
        self.name, self.output_size, self.needs_mask = inner.name, inner.output_size, inner.needs_mask
        self.failing = failing  # None: every call fails
        self.calls = 0

    def prepare(self) -> None:
        self.inner.prepare()

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        call, self.calls = self.calls, self.calls + 1
        if self.failing is None or call in self.failing:
            raise RuntimeError(f"boom on call {call}")
        return self.inner.render(image, face, mask, timestamp_ms)

    def counters(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        self.inner.close()


def test_render_error_bursts_keep_the_picture_going(short_face_video: Path, landmarker_path: Path,
                                                    segmenter_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two bursts of failures: every frame is still published (the framed camera image before any good
    frame, then the last good frame), each failure counted, one warning per burst, never a stop."""
    config = load_config(None, SMALL)
    stats = Stats()
    renderer = _FailOn(build_renderer(config, stats), {0, 1, 2, 10, 11, 12, 13})
    renderer.prepare()
    with caplog.at_level(logging.INFO, logger="livecam.live.loop"):
        sink = _run(short_face_video, renderer, stats, landmarker_path, segmenter_path)
    assert sink.count == stats.frames_out == 24
    assert stats.summary()["render_errors"] == 7
    reader = open_reader(str(short_face_video))
    for index in range(3):
        source = reader.read()
        assert source is not None
        assert np.array_equal(sink.frames[index].image, framed_input(source, (640, 360)))
    reader.close()
    assert all(sink.frames[i].image is sink.frames[9].image for i in range(10, 14))
    assert not any(sink.frames[i].image is sink.frames[9].image for i in (8, 14))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("boom" in r.getMessage() for r in warnings)
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert recovered == [f"the studio renderer recovered after {n} failed frames" for n in (3, 4)]


def test_a_renderer_that_keeps_failing_stops_with_a_clear_error(short_face_video: Path, landmarker_path: Path,
                                                                segmenter_path: Path) -> None:
    config = load_config(None, [*SMALL, "input.loop=true"])
    stats = Stats()
    renderer = _FailOn(build_renderer(config, stats), None)
    renderer.prepare()
    sink = MemorySink(renderer.output_size)
    with FrameSource(open_reader(str(short_face_video), loop=True), pace=False) as source, \
            MediaPipeFaceTracker(landmarker_path) as tracker, \
            pytest.raises(LivecamError, match=r"the studio renderer failed on every frame for 0.3 s .*boom"):
        run_loop(source, tracker, None, renderer, sink, stats, render_failure_s=0.3)
    # the framed camera image went out meanwhile; the frame that ran out of time was not published
    assert stats.render_errors == sink.count + 1 > 2


def test_framed_input_is_the_centre_of_the_frame_at_the_output_size() -> None:
    image = cv2.imread(str(asset("images/faces/biden_official_portrait.jpg")))[:, :, ::-1].copy()
    out = framed_input(image, (640, 360))
    box = fr.full_frame_box((1200, 1200), (640, 360))
    assert out.shape == (360, 640, 3)
    assert np.array_equal(out, fr.warp(image, fr.box_to_affine(box, (640, 360)), (640, 360)))


def test_stats_timers_keep_a_fixed_window_and_count_every_sample() -> None:
    """A long run's timers hold the newest WINDOW samples in fixed memory; counts cover the whole run."""
    from livecam.live.stats import WINDOW

    stats = Stats()
    for i in range(WINDOW + 500):
        stats.add("track", 1000.0 if i < 500 else 2.0)  # the slow start has left the window
    section = stats.summary()["sections"]["track"]
    assert section["count"] == WINDOW + 500
    assert section["ms_p95"] == section["ms_p50"] == section["ms_mean"] == 2.0
    empty = Stats().summary()
    assert empty["latency_ms_p95"] == 0.0 and empty["sections"] == {}
