"""The live loop: newest frame -> track (with segmentation beside it) -> render -> publish.

Two stages overlap on two cores: while the render thread composes and publishes frame n, the loop tracks
frame n+1, and segments it on a third thread at the same time. At most one render is in flight, so a slow
stage makes the capture slot drop frames instead of building a backlog.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from engine.types import Face, Mask, Renderer, Segmenter
from livecam.capture import FrameSource
from livecam.frame import Frame
from livecam.outputs import FrameSink
from livecam.stats import Stats
from livecam.tracking import FaceTracker

T = TypeVar("T")


def run_loop(source: FrameSource, tracker: FaceTracker, segmenter: Segmenter | None, renderer: Renderer,
             sink: FrameSink, stats: Stats, max_frames: int | None = None) -> None:
    """Run until the input ends, `max_frames` input frames were taken, or the sink asks to stop."""
    segment = segmenter if segmenter is not None and renderer.needs_mask else None
    with ThreadPoolExecutor(1, "livecam-segment") as seg_pool, \
            ThreadPoolExecutor(1, "livecam-render") as render_pool:
        in_flight: Future[None] | None = None
        try:
            while max_frames is None or stats.frames_in < max_frames:
                with stats.section("wait"):
                    frame = source.next_frame()
                if frame is None:
                    break
                stats.frames_in += 1
                t_ms = frame.t_capture_ns // 1_000_000
                mask_job = (seg_pool.submit(_timed, stats, "segment", segment.segment, frame.image, t_ms)
                            if segment is not None else None)
                with stats.section("track"):
                    face = tracker.track(frame.image, t_ms)
                if face is None:
                    stats.no_face += 1
                mask = mask_job.result() if mask_job is not None else None
                if in_flight is not None:
                    in_flight.result()
                if sink.wants_stop:
                    break
                in_flight = render_pool.submit(_render_and_publish, frame, face, mask, renderer, sink, stats)
            if in_flight is not None:
                in_flight.result()
        finally:
            stats.drops = source.drops


def _timed(stats: Stats, name: str, fn: Callable[..., T], *args: object) -> T:
    with stats.section(name):
        return fn(*args)


def _render_and_publish(frame: Frame, face: Face | None, mask: Mask | None, renderer: Renderer,
                        sink: FrameSink, stats: Stats) -> None:
    with stats.section("render"):
        image = renderer.render(frame.image, face, mask, frame.t_capture_ns // 1_000_000)
    with stats.section("publish"):
        sink.send(Frame(image, frame.index, frame.t_capture_ns))
    stats.published(frame.t_capture_ns)
