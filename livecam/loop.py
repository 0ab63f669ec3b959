"""The live loop: newest frame -> (track | segment -> render -> publish).

Two threads share each frame. The main thread tracks the face in frame n while the compose thread
segments frame n, renders it and publishes it. With `predict`, the render uses the face predicted from
frames before n (the tracker's One-Euro velocity), so it never waits for tracking and latency is the
longer of the two paths, not their sum; without a recent face (the first frame, a face coming back) or
with `predict=False`, the render waits for frame n's own tracking. One frame is composed at a time, so a
slow stage makes the capture slot drop frames instead of building a backlog.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from engine.types import Face, Renderer, Segmenter
from livecam.capture import FrameSource
from livecam.frame import Frame
from livecam.outputs import FrameSink
from livecam.stats import Stats
from livecam.tracking import FaceTracker


def run_loop(source: FrameSource, tracker: FaceTracker, segmenter: Segmenter | None, renderer: Renderer,
             sink: FrameSink, stats: Stats, max_frames: int | None = None, predict: bool = True) -> None:
    """Run until the input ends, `max_frames` input frames were taken, or the sink asks to stop."""
    segment = segmenter if segmenter is not None and renderer.needs_mask else None
    with ThreadPoolExecutor(1, "livecam-compose") as compose_pool:
        in_flight: Future[None] | None = None
        try:
            while max_frames is None or stats.frames_in < max_frames:
                with stats.section("wait"):
                    frame = source.next_frame()
                if frame is None:
                    break
                stats.frames_in += 1
                t_ms = frame.t_capture_ns // 1_000_000
                if in_flight is not None:
                    with stats.section("compose_wait"):  # the previous frame is still being composed
                        in_flight.result()
                if sink.wants_stop:
                    break
                tracked: Future[Face | None] = Future()
                predicted = tracker.predict(t_ms) if predict else None
                in_flight = compose_pool.submit(_compose, frame, predicted, tracked, segment, renderer, sink,
                                                stats)
                try:
                    with stats.section("track"):
                        face = tracker.track(frame.image, t_ms)
                except BaseException as e:
                    tracked.set_exception(e)
                    raise
                tracked.set_result(face)
                if face is None:
                    stats.no_face += 1
            if in_flight is not None:
                in_flight.result()
        finally:
            stats.drops = source.drops


def _compose(frame: Frame, predicted: Face | None, tracked: Future[Face | None], segmenter: Segmenter | None,
             renderer: Renderer, sink: FrameSink, stats: Stats) -> None:
    """Segment, render and publish one frame (on the compose thread)."""
    t_ms = frame.t_capture_ns // 1_000_000
    mask = None
    if segmenter is not None:
        with stats.section("segment"):
            mask = segmenter.segment(frame.image, t_ms)
    face = predicted
    if face is None:
        with stats.section("track_wait"):
            face = tracked.result()
    with stats.section("render"):
        image = renderer.render(frame.image, face, mask, t_ms)
    with stats.section("publish"):
        sink.send(Frame(image, frame.index, frame.t_capture_ns))
    stats.published(frame.t_capture_ns)
