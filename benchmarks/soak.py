"""Benchmark: a soak of the live loop, with faults injected on a schedule.

The real live loop (capture thread, MediaPipe tracking and segmentation, studio engine, 1280x720 out, every
effect on) runs for `--minutes` on a stand-in webcam that plays a real video in a loop: the shared video's
face region (x=40, y=100, 200x200) scaled to 512x512, 29.97 fps, as tests/media.py makes it.
Every `--cycle-s` seconds (60 by default) the same faults come round, injected only at the protocol edges
(no product code is changed or patched):

- the camera (`SoakCamera`, a `CaptureDevice` as `CameraReader` opens it: cv2.VideoCapture over the video
  file, paced like a webcam) stops sending frames and comes back, once at the same resolution and once at
  another (640x480); sends 8-bit greyscale frames, then BGRA frames; shows an empty room (a real photo with
  no face) for a few seconds, after which the face returns;
- the renderer (`FaultyRenderer`, around the studio engine) raises on every frame for a short burst;
- the sink (`SoakSink`, around the in-memory sink) blocks for 2 s on one frame.

Measured: frames in and out, crashes (an exception out of the loop; the pipeline is then rebuilt and the
run goes on, so all of them are counted), gaps over 200 ms between published frames outside the injected
stalls (camera dropouts and the sink's block, each with 1 s of grace for the reopen), how long the face
took to come back after each empty-room spell, RSS after the first cycle and at the end, open files and
threads, the fault schedule and what each fault did. JSON with the machine and versions to
benchmarks/results/. The machine is shared and has 2 cores: gaps and rates are noisy there.

    python -m benchmarks.soak [--minutes 10] [--cycle-s 60] [--out benchmarks/results/soak_studio_cpu.json]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import tempfile
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.live_loop import machine, model_paths, versions
from engine.types import Face, FaceTracker, Mask, Renderer, RGBImage
from livecam.assembly import build_renderer
from livecam.config import load_config
from livecam.live.capture import CameraReader, FrameSource
from livecam.live.frame import Frame
from livecam.live.loop import run_loop
from livecam.live.outputs.base import SinkBase
from livecam.live.outputs.memory import MemorySink
from livecam.live.stats import Stats, write_json
from models.face_landmarker import MediaPipeFaceTracker
from models.segmenter import MediaPipeSegmenter
from tests.media import assets_dir, make_face_video

log = logging.getLogger("benchmarks.soak")

BASE_SIZE = (512, 512)
ALT_SIZE = (640, 480)
FPS = 29.97
OUTPUT_SIZE = (1280, 720)
CLIP_FRAMES = 178
"""The 90-frame source played forth and back: 178 frames loop without a jump."""
REGION = (40, 100, 200, 200)
GAP_MS = 200.0
STALL_GRACE_S = 1.0
"""After a camera dropout ends, `CameraReader` may still be sleeping before its next reopen (0.5 s), then
the first frame is tracked on a new landmarker: a gap up to this long after a stall belongs to it."""
CYCLE_S = 60.0


@dataclass(frozen=True)
class FaultSpec:
    name: str
    start_s: float
    duration_s: float
    stall: bool
    what: str


# One cycle of faults at the default 60 s cycle; a shorter --cycle-s scales every time here alike.
FAULTS = (
    FaultSpec("camera_dropout", 8.0, 2.0, True,
              "the camera stops sending frames; CameraReader reopens it; it comes back at 512x512"),
    FaultSpec("face_leaves", 14.0, 3.0, False, "an empty room (a real photo with no face), then the face returns"),
    FaultSpec("greyscale", 20.0, 2.0, False, "the camera sends 8-bit greyscale frames (HxW)"),
    FaultSpec("bgra", 22.0, 1.0, False, "the camera sends BGRA frames (HxWx4)"),
    FaultSpec("render_errors", 28.0, 1.5, False, "the renderer raises on every frame"),
    FaultSpec("sink_stall", 36.0, 2.0, True, "the sink blocks for the fault's duration on one frame"),
    FaultSpec("camera_new_resolution", 44.0, 2.0, True,
              "the camera stops sending frames and comes back at 640x480 (512x512 again at the next dropout)"),
)


@dataclass(frozen=True)
class Window:
    name: str
    start: float
    end: float
    stall: bool


class Schedule:
    """The faults' windows in `time.perf_counter()` seconds, cycle after cycle from `t0`."""

    def __init__(self, t0: float, duration_s: float, cycle_s: float) -> None:
        self.t0 = t0
        self.cycle_s = cycle_s
        self.scale = cycle_s / CYCLE_S
        self.windows: list[Window] = []
        for cycle in range(math.ceil(duration_s / cycle_s)):
            for f in FAULTS:
                start = t0 + cycle * cycle_s + f.start_s * self.scale
                if start < t0 + duration_s:
                    self.windows.append(Window(f.name, start, start + f.duration_s * self.scale, f.stall))

    def active(self, name: str, t: float) -> Window | None:
        for w in self.windows:
            if w.name == name and w.start <= t < w.end:
                return w
        return None

    def dropout_between(self, t_open: float, t: float) -> bool:
        """True when a camera dropout began after `t_open` and by `t` (a handle opened before is dead)."""
        return any(w.name.startswith("camera_") and t_open < w.start <= t for w in self.windows)

    def camera_size(self, t: float) -> tuple[int, int]:
        """The resolution the camera comes back at: set by the last dropout that began before `t`."""
        size = BASE_SIZE
        for w in self.windows:
            if w.name.startswith("camera_") and w.start <= t:
                size = ALT_SIZE if w.name == "camera_new_resolution" else BASE_SIZE
        return size

    def in_dropout(self, t: float) -> bool:
        return any(w.name.startswith("camera_") and w.start <= t < w.end for w in self.windows)


@dataclass
class Counts:
    """What the injected faults did (every counter is touched by one thread only)."""

    frames: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    camera_opens: int = 0
    camera_refused_opens: int = 0
    sink_stalls_s: list[float] = field(default_factory=list)


class SoakCamera:
    """Opens `SoakCameraDevice`s: the `open_device` of a `CameraReader`."""

    def __init__(self, video: Path, empty_room: np.ndarray, schedule: Schedule, counts: Counts) -> None:
        self.video = video
        self.empty_room = empty_room
        self.schedule = schedule
        self.counts = counts

    def __call__(self, index: int) -> SoakCameraDevice:
        return SoakCameraDevice(self)


class SoakCameraDevice:
    """A webcam over the looping video file: `read` blocks until the next frame is due, as a driver does.

    During a dropout a new handle does not open, and a handle that lived through one fails every read (an
    unplugged camera's handle stays dead until it is reopened).
    """

    def __init__(self, camera: SoakCamera) -> None:
        self._camera = camera
        self._opened_at = time.perf_counter()
        self._open = not camera.schedule.in_dropout(self._opened_at)
        self._size = camera.schedule.camera_size(self._opened_at)
        self._cap = cv2.VideoCapture(str(camera.video)) if self._open else None
        if self._open:
            camera.counts.camera_opens += 1
        else:
            camera.counts.camera_refused_opens += 1
        self._period = 1.0 / FPS
        self._due = self._opened_at

    def isOpened(self) -> bool:
        return self._open

    def read(self) -> tuple[bool, Any]:
        camera, schedule, counts = self._camera, self._camera.schedule, self._camera.counts
        now = time.perf_counter()
        if self._cap is None or schedule.dropout_between(self._opened_at, now):
            return False, None
        if self._due > now:
            time.sleep(self._due - now)
        # Next frame one period on; after a long pause (the loop stalled) restart the clock, not a burst.
        self._due = max(self._due + self._period, time.perf_counter() - self._period)
        ok, bgr = self._cap.read()
        if not ok:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            return False, None
        t = time.perf_counter()
        if schedule.active("face_leaves", t):
            bgr = camera.empty_room
            counts.frames["no_face"] += 1
        if bgr.shape[:2] != (self._size[1], self._size[0]):
            bgr = cv2.resize(bgr, self._size, interpolation=cv2.INTER_LINEAR)
        if schedule.active("greyscale", t):
            counts.frames["greyscale"] += 1
            return True, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if schedule.active("bgra", t):
            counts.frames["bgra"] += 1
            return True, cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
        return True, bgr

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return FPS if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FaultyRenderer:
    """A `Renderer` around the real one that raises on every frame inside a `render_errors` window."""

    def __init__(self, inner: Renderer, schedule: Schedule, counts: Counts) -> None:
        self.inner = inner
        self.name, self.output_size, self.needs_mask = inner.name, inner.output_size, inner.needs_mask
        self._schedule = schedule
        self._counts = counts

    @property
    def shown_ms(self) -> int | None:
        return self.inner.shown_ms

    def prepare(self) -> None:
        self.inner.prepare()

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        if self._schedule.active("render_errors", time.perf_counter()):
            self._counts.frames["render_exceptions"] += 1
            raise RuntimeError("injected renderer fault")
        return self.inner.render(image, face, mask, timestamp_ms)

    def counters(self) -> dict[str, float]:
        return self.inner.counters()

    def close(self) -> None:
        self.inner.close()


class SoakSink(SinkBase):
    """The in-memory sink (newest frame only), blocking once per `sink_stall` window, recording when each
    frame was published; asks the loop to stop at `deadline`."""

    def __init__(self, size: tuple[int, int], schedule: Schedule, counts: Counts, deadline: float,
                 publish_times: array[float]) -> None:
        super().__init__(size)
        self._inner = MemorySink(size, keep=1)
        self._schedule = schedule
        self._counts = counts
        self._deadline = deadline
        self._stalled: set[float] = set()
        self.publish_times = publish_times

    @property
    def wants_stop(self) -> bool:
        return time.perf_counter() >= self._deadline

    def send(self, frame: Frame) -> None:
        now = time.perf_counter()
        self.publish_times.append(now)
        window = self._schedule.active("sink_stall", now)
        if window is not None and window.start not in self._stalled:
            self._stalled.add(window.start)
            time.sleep(window.end - window.start)
            self._counts.sink_stalls_s.append(round(time.perf_counter() - now, 3))
        self._inner.send(frame)

    def _release(self, ok: bool) -> None:
        if ok:
            self._inner.close()
        else:
            self._inner.abort()


class WatchingTracker:
    """A `FaceTracker` around the real one that records when a face was found (main thread only)."""

    def __init__(self, inner: FaceTracker, found: array[float]) -> None:
        self.inner = inner
        self.found = found

    def track(self, image: RGBImage, timestamp_ms: int) -> Face | None:
        face = self.inner.track(image, timestamp_ms)
        if face is not None:
            self.found.append(time.perf_counter())
        return face

    def predict(self, timestamp_ms: int) -> Face | None:
        return self.inner.predict(timestamp_ms)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()


class LogCounter(logging.Handler):
    """Counts log records per level and logger: a burst of faults must log once, not once per frame."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}"] += 1


def process_figures() -> dict[str, float | int]:
    """RSS (MB), open file descriptors and OS threads of this process (Linux /proc), Python threads, and the
    machine's 1-minute load average (on a shared machine, gaps come with a high load)."""
    figures: dict[str, float | int] = {"python_threads": threading.active_count(),
                                       "load_1min": round(os.getloadavg()[0], 2)}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                figures["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("Threads:"):
                figures["os_threads"] = int(line.split()[1])
        figures["open_files"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        pass
    return figures


class Monitor:
    """Samples `process_figures` every `every_s` seconds on its own thread."""

    def __init__(self, t0: float, every_s: float) -> None:
        self.t0 = t0
        self.every_s = every_s
        self.samples: list[dict[str, float | int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-monitor", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append({"t_s": round(time.perf_counter() - self.t0, 1), **process_figures()})

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def at(self, t_s: float) -> dict[str, float | int]:
        """The first sample at or after `t_s` (the last one if none)."""
        for s in self.samples:
            if s["t_s"] >= t_s:
                return s
        return self.samples[-1] if self.samples else process_figures()


def run_pipeline(video: Path, empty_room: np.ndarray, schedule: Schedule, counts: Counts, deadline: float,
                 stats: Stats, publish_times: array[float], found: array[float]) -> int:
    """Build the live pipeline on the soak camera and run the loop until `deadline`. Returns the camera's
    reopen count; an exception from the loop propagates (a crash)."""
    config = load_config(None, ["engine.kind=studio", f"output.width={OUTPUT_SIZE[0]}",
                                f"output.height={OUTPUT_SIZE[1]}"])
    landmarker, segmenter_path = model_paths()
    reader = CameraReader(0, *BASE_SIZE, FPS, config.input.reconnect_s,
                          open_device=SoakCamera(video, empty_room, schedule, counts))
    renderer = FaultyRenderer(build_renderer(config, stats), schedule, counts)
    segmenter = MediaPipeSegmenter(segmenter_path)
    try:
        with SoakSink(OUTPUT_SIZE, schedule, counts, deadline, publish_times) as sink, \
                MediaPipeFaceTracker(landmarker) as inner_tracker:
            tracker = WatchingTracker(inner_tracker, found)
            renderer.prepare()
            with FrameSource(reader, pace=True) as source:
                run_loop(source, tracker, segmenter, renderer, sink, stats, predict=config.tracking.predict)
    finally:
        renderer.close()
        segmenter.close()
        reader.close()
    return reader.reopened


def gaps(publish_times: array[float], schedule: Schedule, monitor: Monitor) -> dict[str, Any]:
    """Gaps over GAP_MS between published frames, split into those a stall explains and the rest (each with
    the machine's load average then)."""
    stalls = [w for w in schedule.windows if w.stall]
    outside: list[dict[str, float]] = []
    during: Counter[str] = Counter()
    longest_inside = 0.0
    for a, b in itertools.pairwise(publish_times):
        gap_ms = (b - a) * 1000
        if gap_ms <= GAP_MS:
            continue
        cause = next((w for w in stalls if a < w.end + STALL_GRACE_S and b > w.start), None)
        if cause is None:
            at_s = round(a - schedule.t0, 2)
            outside.append({"at_s": at_s, "ms": round(gap_ms, 1), "load_1min": monitor.at(at_s)["load_1min"]})
        else:
            during[cause.name] += 1
            longest_inside = max(longest_inside, gap_ms)
    return {
        "threshold_ms": GAP_MS,
        "outside_stalls": len(outside),
        "outside_stalls_max_ms": max((g["ms"] for g in outside), default=0.0),
        "outside_stalls_list": outside[:50],
        "during_stalls": dict(during),
        "during_stalls_max_ms": round(longest_inside, 1),
        "stall_grace_s": STALL_GRACE_S,
    }


def face_returns(found: array[float], schedule: Schedule) -> list[float | None]:
    """For each empty-room spell: ms from its end to the first frame with a face again (None: never)."""
    out: list[float | None] = []
    for w in schedule.windows:
        if w.name != "face_leaves":
            continue
        back = next((t for t in found if t >= w.end), None)
        out.append(None if back is None else round((back - w.end) * 1000, 1))
    return out


def soak(minutes: float, cycle_s: float) -> dict[str, Any]:
    duration_s = minutes * 60
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    counts = Counts()
    stats = Stats()
    # Flat float arrays (8 bytes a frame), so the soak's own records barely move the RSS it measures.
    publish_times: array[float] = array("d")
    found: array[float] = array("d")
    crashes: list[dict[str, Any]] = []
    reopens = 0
    before = process_figures()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_face_video(Path(tmp) / "face512.mp4", size=BASE_SIZE, frames=CLIP_FRAMES, region=REGION)
        empty_room_path = assets_dir() / "images/no_face/lp-bmw.jpg"
        empty_room = cv2.imread(str(empty_room_path))
        if empty_room is None:
            raise FileNotFoundError(f"cannot read {empty_room_path}")
        t0 = time.perf_counter()
        schedule = Schedule(t0, duration_s, cycle_s)
        deadline = t0 + duration_s
        warm_s = min(cycle_s, duration_s / 2)
        with Monitor(t0, every_s=max(0.5, min(5.0, duration_s / 60))) as monitor:
            while time.perf_counter() < deadline:
                try:
                    reopens += run_pipeline(video, empty_room, schedule, counts, deadline, stats, publish_times,
                                            found)
                except Exception as e:  # a crash: counted, reported, and the pipeline is built again
                    t_s = round(time.perf_counter() - t0, 2)
                    crashes.append({"at_s": t_s, "error": f"{type(e).__name__}: {e}"})
                    log.exception("crash at %.1f s; building the pipeline again", t_s)
                    time.sleep(0.5)
        after_close = process_figures()
    logging.getLogger().removeHandler(counter)
    for name in (w.name for w in schedule.windows):
        counts.injected[name] += 1
    warm = monitor.at(warm_s)
    end = monitor.samples[-1] if monitor.samples else process_figures()
    summary = stats.summary()
    rss_growth = 100.0 * (float(end["rss_mb"]) - float(warm["rss_mb"])) / float(warm["rss_mb"])
    returns = face_returns(found, schedule)
    gap = gaps(publish_times, schedule, monitor)
    every = max(1, len(monitor.samples) // 60)  # about 60 points of the RSS timeline in the JSON
    result: dict[str, Any] = {
        "benchmark": "soak",
        "engine": "studio",
        "machine": machine(),
        "versions": versions(),
        "minutes": minutes,
        "input": {"size": list(BASE_SIZE), "other_size": list(ALT_SIZE), "fps": FPS,
                  "source": "video_01_ccby_multiface.mp4, region x=40 y=100 200x200 scaled to 512x512, "
                            "played forth and back in a loop by a stand-in webcam (CameraReader's device)"},
        "output": {"size": list(OUTPUT_SIZE), "sink": "memory (newest frame kept)"},
        "frames_in": summary["frames_in"],
        "frames_out": summary["frames_out"],
        "drops": summary["drops"],
        "no_face_frames": summary["no_face_frames"],
        "size_changes": summary["size_changes"],
        "render_errors": summary["render_errors"],
        "fps": summary["fps"],
        "latency_ms_p50": summary["latency_ms_p50"],
        "latency_ms_p95": summary["latency_ms_p95"],
        "crashes": len(crashes),
        "crash_list": crashes,
        "gaps": gap,
        "load_1min": {"max": max((s["load_1min"] for s in monitor.samples), default=before["load_1min"]),
                      "median": float(np.median([s["load_1min"] for s in monitor.samples] or [before["load_1min"]]))},
        "rss_mb": {"before": before.get("rss_mb"), "warm": warm["rss_mb"], "end": end["rss_mb"],
                   "growth_pct": round(rss_growth, 2), "warm_at_s": warm["t_s"], "end_at_s": end["t_s"],
                   "timeline": [[s["t_s"], s["rss_mb"]] for s in monitor.samples[::every]]},
        "open_files": {"before": before.get("open_files"), "warm": warm.get("open_files"),
                       "end": end.get("open_files"), "after_close": after_close.get("open_files")},
        "threads": {"os": {"before": before.get("os_threads"), "warm": warm.get("os_threads"),
                           "end": end.get("os_threads"), "after_close": after_close.get("os_threads")},
                    "python": {"before": before["python_threads"], "warm": warm["python_threads"],
                               "end": end["python_threads"], "after_close": after_close["python_threads"]}},
        "faults": {
            "cycle_s": cycle_s,
            "schedule": [{"fault": f.name, "start_s": round(f.start_s * schedule.scale, 3),
                          "duration_s": round(f.duration_s * schedule.scale, 3), "stall": f.stall, "what": f.what}
                         for f in FAULTS],
            "injected": dict(counts.injected),
            "frames": dict(counts.frames),
            "sink_stalls_s": counts.sink_stalls_s,
            "camera_opens": counts.camera_opens,
            "camera_refused_opens": counts.camera_refused_opens,
            "camera_reopens": reopens,
        },
        "face_return_ms": returns,
        "log_lines": dict(counter.counts),
        "sections": summary["sections"],
    }
    result["targets"] = {
        "crashes": 0, "gaps_outside_stalls": 0, "rss_growth_pct_max": 5.0,
        "met": (result["crashes"] == 0 and gap["outside_stalls"] == 0 and rss_growth < 5.0
                and all(r is not None for r in returns)),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cycle-s", type=float, default=CYCLE_S,
                        help="length of one round of faults; every fault's time scales with it")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak_studio_cpu.json"))
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.cycle_s <= 0:
        parser.error("--minutes and --cycle-s must be positive")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = soak(args.minutes, args.cycle_s)
    write_json(args.out, result)
    g, rss = result["gaps"], result["rss_mb"]
    print(f"{result['minutes']:g} min: frames in {result['frames_in']}, out {result['frames_out']}, "
          f"{result['fps']:.1f} fps, latency p95 {result['latency_ms_p95']:.0f} ms; crashes {result['crashes']}; "
          f"gaps > {GAP_MS:.0f} ms outside stalls {g['outside_stalls']} (max {g['outside_stalls_max_ms']:.0f} ms); "
          f"RSS {rss['warm']} -> {rss['end']} MB ({rss['growth_pct']:+.1f}%); "
          f"size changes {result['size_changes']}, render errors {result['render_errors']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
