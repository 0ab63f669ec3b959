"""The live loop: newest frame -> (track | segment -> render -> publish).

Two threads share each frame. The main thread tracks the face in frame n while the compose thread
segments frame n, renders it and publishes it. With `predict`, the render uses the face predicted from
frames before n (the tracker's One-Euro velocity), so it never waits for tracking and latency is the
longer of the two paths, not their sum; without a recent face (the first frame, a face coming back) or
with `predict=False`, the render waits for frame n's own tracking. One frame is composed at a time, so a
slow stage makes the capture slot drop frames instead of building a backlog.

The stream survives what a real camera and a real renderer do: a frame of another size (a camera that
reconnects at another resolution, a folder of mixed photos) starts tracking and framing afresh, and a
renderer that fails on some frames is stood in for by the last good frame until it recovers.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

from engine import framing as fr
from engine.matte import segment_person
from engine.types import Face, FaceTracker, Mask, Renderer, RGBImage, Segmenter
from livecam.errors import LivecamError
from livecam.live.capture import FrameSource
from livecam.live.frame import Frame
from livecam.live.outputs.base import FrameSink
from livecam.live.stats import Stats

log = logging.getLogger(__name__)

RENDER_FAILURE_S = 5.0
"""A renderer that fails on every frame for this long stops the loop; shorter bursts are ridden out."""


def run_loop(source: FrameSource, tracker: FaceTracker, segmenter: Segmenter | None, renderer: Renderer,
             sink: FrameSink, stats: Stats, max_frames: int | None = None, predict: bool = True,
             render_failure_s: float = RENDER_FAILURE_S) -> None:
    """Run until the input ends, `max_frames` input frames were taken, or the sink asks to stop.

    Raises LivecamError when the renderer has failed on every frame for `render_failure_s` seconds.
    """
    segment = segmenter if segmenter is not None and renderer.needs_mask else None
    guard = _RenderGuard(renderer, stats, render_failure_s)
    clocks = _Clocks()
    size: tuple[int, int] | None = None
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
                new_size = (frame.image.shape[1], frame.image.shape[0])
                if size is not None and new_size != size:
                    # Landmarks and their velocity are in the old frame's pixels: nothing of them may reach
                    # this frame. The renderer notices the new size itself and restarts its framing.
                    stats.size_changes += 1
                    tracker.reset()
                    log.info("the input changed size from %dx%d to %dx%d: tracking and framing start afresh",
                             *size, *new_size)
                size = new_size
                predicted = tracker.predict(t_ms) if predict else None
                if predicted is not None and predicted.frame_size != new_size:
                    predicted = None
                tracked: Future[Face | None] = Future()
                in_flight = compose_pool.submit(_compose, frame, predicted, tracked, segment, guard, clocks, sink,
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


def framed_input(image: RGBImage, output_size: tuple[int, int]) -> RGBImage:
    """The camera image itself, cropped to the output's aspect and scaled to `output_size`: what goes out
    when the renderer fails before it ever produced a frame."""
    frame_size = (image.shape[1], image.shape[0])
    box = fr.full_frame_box(frame_size, output_size)
    return fr.warp(image, fr.box_to_affine(box, output_size), output_size)


class _Clocks:
    """The index and capture time of recent frames by their timestamp_ms (compose thread only): a renderer that
    shows an earlier frame's pixels (stream batching, a repeated similar frame) names it by `shown_ms`, and the
    published frame carries that frame's index and capture time, so latency counts from its capture."""

    KEEP = 64

    def __init__(self) -> None:
        self._frames: dict[int, tuple[int, int]] = {}

    def add(self, t_ms: int, frame: Frame) -> None:
        self._frames[t_ms] = (frame.index, frame.t_capture_ns)
        while len(self._frames) > self.KEEP:
            del self._frames[next(iter(self._frames))]

    def stamp(self, image: RGBImage, shown_ms: int | None, current: Frame) -> Frame:
        """`image` as a Frame with the index and capture time of the frame it shows (the current one when
        unknown)."""
        index, t_ns = self._frames.get(shown_ms, (current.index, current.t_capture_ns)) if shown_ms is not None \
            else (current.index, current.t_capture_ns)
        return Frame(image, index, t_ns)


class _RenderGuard:
    """Calls the renderer on the compose thread and rides out its failures.

    A failed frame is replaced by the last good output (or, before there is one, the framed camera image),
    counted in `stats.render_errors` and logged once per burst, with the traceback of its first failure.
    A burst longer than `failure_s` is no passing glitch: it stops the loop with a LivecamError.
    """

    def __init__(self, renderer: Renderer, stats: Stats, failure_s: float) -> None:
        self._renderer = renderer
        self._stats = stats
        self._failure_s = failure_s
        self._last_good: RGBImage | None = None
        self._last_good_ms: int | None = None
        self.shown_ms: int | None = None
        """The timestamp_ms of the frame the latest returned image shows."""
        self._burst_since: float | None = None
        self._burst_frames = 0

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        try:
            out = self._renderer.render(image, face, mask, timestamp_ms)
        except Exception as e:  # counted, logged and bounded in time below; never silently dropped
            return self._failed(image, timestamp_ms, e)
        shown = getattr(self._renderer, "shown_ms", None)
        self.shown_ms = shown if shown is not None else timestamp_ms
        if self._burst_frames:
            log.info("the %s renderer recovered after %d failed frames", self._renderer.name, self._burst_frames)
        self._burst_since, self._burst_frames = None, 0
        self._last_good, self._last_good_ms = out, self.shown_ms
        return out

    def _failed(self, image: RGBImage, timestamp_ms: int, error: Exception) -> RGBImage:
        now = time.monotonic()
        self._stats.render_errors += 1
        self._burst_frames += 1
        name = self._renderer.name
        if self._burst_since is None:
            self._burst_since = now
            log.warning("the %s renderer failed (%s: %s); publishing the last good frame until it recovers",
                        name, type(error).__name__, error, exc_info=error)
        failing_s = now - self._burst_since
        if failing_s >= self._failure_s:
            raise LivecamError(
                f"the {name} renderer failed on every frame for {self._failure_s:g} s ({self._burst_frames} "
                f"frames); last error: {type(error).__name__}: {error}") from error
        if self._last_good is not None:
            self.shown_ms = self._last_good_ms
            return self._last_good
        self.shown_ms = timestamp_ms
        return framed_input(image, self._renderer.output_size)


def _compose(frame: Frame, predicted: Face | None, tracked: Future[Face | None], segmenter: Segmenter | None,
             guard: _RenderGuard, clocks: _Clocks, sink: FrameSink, stats: Stats) -> None:
    """Segment, render and publish one frame (on the compose thread), stamped with the frame it shows."""
    t_ms = frame.t_capture_ns // 1_000_000
    clocks.add(t_ms, frame)
    mask = None
    if segmenter is not None:
        with stats.section("segment"):
            # On the square around the predicted face: the person large in the network's input, the room
            # and other people mostly out of it (the whole frame until a face is tracked).
            mask = segment_person(segmenter, frame.image, t_ms, predicted.landmarks if predicted else None)
    face = predicted
    if face is None:
        with stats.section("track_wait"):
            face = tracked.result()
    with stats.section("render"):
        image = guard.render(frame.image, face, mask, t_ms)
    shown = clocks.stamp(image, guard.shown_ms, frame)
    with stats.section("publish"):
        sink.send(shown)
    stats.published(shown.t_capture_ns)
