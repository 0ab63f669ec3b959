"""`livecam run`: the live camera from config (its parts made by `livecam.assembly`), run until it ends, and
reported; the outputs are checked before any work and a recording cut short is kept."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from engine.types import RGBImage
from livecam.assembly import build_renderer, open_segmenter, open_source, open_tracker
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.live.capture import FrameSource, Reader
from livecam.live.loop import run_loop
from livecam.live.outputs import open_sink
from livecam.live.outputs.base import FrameSink, check_output, check_writable_file, input_path, same_file
from livecam.live.outputs.video_file import VideoFileSink
from livecam.live.stats import Stats, write_json

log = logging.getLogger("livecam")


def check_outputs(config: Config, stats_json: Path | None = None) -> None:
    """Check where a run will write before any work starts: `output.target` (a known output, or a video
    file that can be written and is not the input) and the statistics file. LivecamError on a problem."""
    check_output(config.output.target, config.input.source)
    if stats_json is None:
        return
    check_writable_file(stats_json, "statistics file")
    source = input_path(config.input.source)
    if source is not None and same_file(stats_json, source):
        raise LivecamError(f"--stats-json {stats_json}: it is the input ({config.input.source}); give another name")
    target = config.output.target
    if Path(target).suffix and same_file(stats_json, Path(target).expanduser()):
        raise LivecamError(f"--stats-json {stats_json}: it is the video being recorded (--output); give another "
                           "name")


class _WatchedReader:
    """Passes a reader through and keeps the exception its `read` raised, so that an error out of the loop
    can be told to be the input's (a lost camera, an unreadable image) and not the renderer's."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.description = reader.description
        self.fps = reader.fps
        self.paced_by_device = reader.paced_by_device
        self.error: BaseException | None = None

    def read(self) -> RGBImage | None:
        try:
            return self.reader.read()
        except BaseException as e:
            self.error = e
            raise

    def close(self) -> None:
        self.reader.close()


def _recorded(sink: FrameSink, when: str = " so far") -> str | None:
    """Where the frames of a finished video file are, for a message; None for a sink that is not a file."""
    if not isinstance(sink, VideoFileSink):
        return None
    if sink.kept is None:
        return "nothing was recorded"
    frames = f"{sink.count} frames recorded{when} are" if sink.count != 1 else f"1 frame recorded{when} is"
    moved = f" (it could not be moved to {sink.path})" if sink.kept != sink.path else ""
    return f"the {frames} in {sink.kept}{moved}"


def run_live(config: Config, max_frames: int | None = None, stats_json: Path | None = None) -> dict[str, Any]:
    """Run the live camera until the input ends, `max_frames` frames, Ctrl-C or the preview is closed.

    Prints the summary on exit and, with `stats_json`, writes it as JSON. Returns the summary. The outputs
    are checked before anything is loaded; when the run fails half-way, a video file keeps the frames
    recorded until then and the error says where they are.
    """
    check_outputs(config, stats_json)
    stats = Stats()
    renderer = build_renderer(config, stats)
    failure: Exception | None = None
    with ExitStack() as stack:
        stack.callback(renderer.close)
        tracker = stack.enter_context(open_tracker(config))
        segmenter = open_segmenter(config) if renderer.needs_mask else None
        if segmenter is not None:
            stack.callback(segmenter.close)
        reader = _WatchedReader(open_source(config))
        stack.callback(reader.close)
        size = (config.output.width, config.output.height)
        fps = config.output.fps if config.output.target == "virtualcam" else reader.fps
        sink = stack.enter_context(open_sink(config.output.target, size, fps, device=config.output.device,
                                             backend=config.output.backend))
        renderer.prepare()
        source = stack.enter_context(FrameSource(reader, pace=config.input.pace))
        log.info("%s -> %s %dx%d, %s engine%s", reader.description, config.output.target, *size,
                 renderer.name, "" if max_frames else " (Ctrl-C to stop)")
        try:
            run_loop(source, tracker, segmenter, renderer, sink, stats, max_frames, predict=config.tracking.predict)
        except KeyboardInterrupt:
            log.info("stopped")
        except Exception as e:
            failure = e
            sink.abort()  # finished now (a video keeps its frames), so the error can say where they are
        summary = stats.summary()
        summary["engine"] = renderer.name
        summary["engine_counts"] = renderer.counters()
        summary["input"] = reader.description
        summary["output"] = config.output.target
        log.info("%s", stats.format_summary())
        if summary["engine_counts"]:
            log.info("%s engine: %s", renderer.name,
                     ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["engine_counts"].items()))
    # The statistics are written once the video is finished and in place, so that failing to write them can
    # never cost the recording.
    stats_error = _write_stats(stats_json, summary) if stats_json is not None else None
    recorded = _recorded(sink)
    if failure is not None:
        if stats_error is not None:
            log.warning("%s", stats_error)
        if not isinstance(failure, LivecamError):
            # Not a user's mistake: it propagates as it is (with its traceback), after saying what was kept.
            log.error("the run failed after %d frames%s", stats.frames_in, f"; {recorded}" if recorded else "")
            raise failure
        origin = "the input failed" if failure is reader.error else "the run stopped"
        raise LivecamError(f"{origin} after {stats.frames_in} frames: {failure}"
                           f"{f'; {recorded}' if recorded else ''}") from failure
    if stats_error is not None:
        recording = _recorded(sink, when="")
        raise LivecamError(f"{stats_error}{f'; the run itself finished: {recording}' if recording else ''}")
    return summary


def _write_stats(path: Path, summary: dict[str, Any]) -> str | None:
    """Write the summary to `path`; the reason as one line when it could not be (a full disk, a folder
    removed during the run), None when it was written."""
    try:
        write_json(path, summary)
    except OSError as e:
        return f"cannot write the statistics file {path}: {e.strerror or e}"
    return None
