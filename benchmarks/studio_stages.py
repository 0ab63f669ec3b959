"""Benchmark: CPU time of each stage of the studio pipeline, one frame at a time, beside another checkout.

The loop benchmark (benchmarks/live_loop.py) gives the process CPU per frame of the real two-thread loop, but
its section timers are wall time, which on this shared 2-core machine is mostly waiting for a core. This one
runs the same stages in one thread, in turn, and times each in CPU: decode (the capture's reader, BGR -> RGB
included), segment (`segment_person` around the predicted face) and track (MediaPipe, whose graph threads run
while the caller waits: process time), then the renderer's own sections (thread time, OpenCV on one thread so
that its work stays on the timed thread). Medians over frames, then over rounds.

With `--reference DIR` the same measurement runs on that checkout's code (e.g. main before a change) in the
same rounds, in alternation: both are measured in a subprocess, by the same code, under the same load.

    python -m benchmarks.studio_stages [--frames 60] [--rounds 3] [--input-size 1280x720] [--reference DIR]
        [--out benchmarks/results/studio_stages_cpu_720p.json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.live_loop import KIT_VIDEO, machine, make_kit_video, revision, run_in_checkout, versions
from livecam.live.stats import write_json

WARMUP_FRAMES = 10

# Run in a subprocess with the measured checkout first on the path: only APIs both revisions have.
_CHILD = """
import json, sys, time
from contextlib import contextmanager
from pathlib import Path
import cv2
import numpy as np
from benchmarks.live_loop import model_paths
from engine.matte import segment_person
from livecam.assembly import build_renderer
from livecam.config import load_config
from livecam.live.capture import open_reader
from models.face_landmarker import MediaPipeFaceTracker
from models.segmenter import MediaPipeSegmenter

cv2.setNumThreads(1)
video, frames, warmup = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
samples = {}


class Sections:
    @contextmanager
    def section(self, name):
        start = time.thread_time_ns()
        try:
            yield
        finally:
            samples.setdefault(name, []).append((time.thread_time_ns() - start) / 1e6)


def timed(name, call):
    start = time.process_time_ns()
    result = call()
    samples.setdefault(name, []).append((time.process_time_ns() - start) / 1e6)
    return result


landmarker, segmenter_path = model_paths()
reader = open_reader(str(video), loop=True)
tracker, segmenter = MediaPipeFaceTracker(landmarker), MediaPipeSegmenter(segmenter_path)
renderer = build_renderer(load_config(None, ["engine.kind=studio"]), Sections())
renderer.prepare()
for index in range(warmup + frames):
    if index == warmup:
        samples.clear()
    t_ms = index * 33
    image = timed("decode", reader.read)
    predicted = tracker.predict(t_ms)
    mask = timed("segment", lambda: segment_person(segmenter, image, t_ms,
                                                   predicted.landmarks if predicted is not None else None))
    face = timed("track", lambda: tracker.track(image, t_ms))
    timed("render", lambda: renderer.render(image, predicted if predicted is not None else face, mask, t_ms))
reader.close()
tracker.close()
segmenter.close()
print("RESULT " + json.dumps({name: float(np.median(values)) for name, values in samples.items()}))
"""


def measure(checkout: Path, video: Path, frames: int) -> dict[str, float]:
    """Median CPU ms per stage of `checkout`'s pipeline on `video` (a subprocess running `_CHILD`)."""
    return run_in_checkout(checkout, _CHILD, [str(video), str(frames), str(WARMUP_FRAMES)], "stage")


def summarise(rounds: list[dict[str, float]]) -> dict[str, Any]:
    names = list(dict.fromkeys(name for r in rounds for name in r))
    medians = {name: round(float(np.median([r[name] for r in rounds if name in r])), 2) for name in names}
    # The render's sections are inside "render"; the frame's CPU is decode + segment + track + render.
    total = sum(medians.get(name, 0.0) for name in ("decode", "segment", "track", "render"))
    return {"cpu_ms_p50": medians, "frame_cpu_ms": round(total, 2),
            "rounds": [{k: round(v, 2) for k, v in r.items()} for r in rounds]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--input-size", default="1280x720", metavar="WxH")
    parser.add_argument("--reference", type=Path, default=None, metavar="DIR",
                        help="also measure this checkout (another revision) in the same rounds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/studio_stages_cpu_720p.json"))
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.input_size.lower().split("x"))
    except ValueError:
        parser.error(f"--input-size {args.input_size!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    if args.reference is not None and not (args.reference / "benchmarks" / "live_loop.py").is_file():
        parser.error(f"--reference {args.reference}: not a livecam checkout (no benchmarks/live_loop.py)")
    here = Path(__file__).resolve().parents[1]
    checkouts = {"livecam": here} | ({"reference": args.reference} if args.reference is not None else {})
    results: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        video = make_kit_video(Path(tmp) / "kit.mp4", (width, height), args.frames + WARMUP_FRAMES)
        for _ in range(args.rounds):
            for name, checkout in checkouts.items():
                results[name].append(measure(checkout, video, args.frames))
    runs = {name: summarise(rounds) for name, rounds in results.items()}
    result: dict[str, Any] = {
        "benchmark": "studio_stages", "engine": "studio", "machine": machine(), "versions": versions(),
        "rounds": args.rounds, "opencv_threads": 1,
        "input": {"size": [width, height], "frames": args.frames,
                  "source": f"{KIT_VIDEO}, centre crop to the aspect, at {args.input_size}, back and forth"},
        "runs": runs,
    }
    if args.reference is not None:
        result["reference"] = {"checkout": str(args.reference), "revision": revision(args.reference),
                               "frame_cpu_ratio": round(runs["livecam"]["frame_cpu_ms"]
                                                        / max(runs["reference"]["frame_cpu_ms"], 1e-9), 3)}
    write_json(args.out, result)
    for name, run in runs.items():
        stages = "  ".join(f"{k} {v:.2f}" for k, v in run["cpu_ms_p50"].items())
        print(f"{name:<10} frame {run['frame_cpu_ms']:6.2f} ms CPU   {stages}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
