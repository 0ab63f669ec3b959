"""Benchmark: what each WebRTC viewer of `livecam serve` costs the server's CPU, at 1280x720.

Every viewer has its own RTCPeerConnection, so every viewer's VP8 encoder (aiortc's, libvpx) encodes every frame
again: the cost grows with the number of viewers. Measured here for N = 0 (the plain baseline), 1, 2 and 4
viewers, in two modes, each in the same run:

- `replay`: 1280x720 frames the studio engine rendered from the face video beforehand, published into the
  server's track at 30 fps by a thread (nearly free), so the server's CPU time is the viewers' (frame conversion,
  encoding, RTP, SRTP) and little else. This isolates the per-viewer cost: CPU seconds per frame per viewer and
  the viewers one core could serve at 30 fps.
- `live`: the real `livecam serve` (LiveSession + the aiohttp app) rendering the face video with the studio
  engine at 1280x720, the render loop and the viewers sharing the machine: what happens to the render loop's
  rate and each viewer's rate as viewers are added.

The viewers are real aiortc peers in a separate process (their decoding is not counted), connected over
loopback through POST /api/offer. The server's CPU time is the process's user+system time (getrusage) over a
measured window after a warm-up (aiortc's encoder starts at 500 kbit/s and follows the receiver's REMB up to
1.5 Mbit/s); frames per viewer are counted by the viewer process over the same window. Cost per frame per viewer
= (CPU time - the baseline's CPU per published frame x frames published) / frames received by all viewers.
Rounds are interleaved (0, 1, 2, 4, 0, 1, ...), as this VM's speed drifts; the costs pool the rounds (sums of
CPU time and frames), the rates are means. Encoder-only figures (aiortc's Vp8Encoder.encode at 1 Mbit/s on the
same frames, and on them scaled to 640x360, one thread calling it) are included too.

    python -m benchmarks.webrtc_viewers [--seconds 8] [--rounds 2] [--out benchmarks/results/webrtc_viewers_cpu.json]
    python -m benchmarks.webrtc_viewers --client URL --viewers N   (the viewer process; started by the benchmark)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import resource
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from aiohttp import ClientSession, web

from benchmarks.live_loop import machine, model_paths
from engine.types import RGBImage
from livecam.assembly import build_renderer, resolve_model
from livecam.config import Config, ServeSettings, load_config
from livecam.live.capture import FrameSource, open_reader
from livecam.live.loop import run_loop
from livecam.live.outputs.memory import MemorySink
from livecam.live.stats import Stats, write_json
from livecam.serve.app import make_app
from livecam.serve.session import LiveSession
from livecam.serve.webrtc import LatestFrameTrack, Viewers, encoder_executor, video_frame
from models.face_landmarker import MediaPipeFaceTracker
from tests._child import LineChild
from tests.media import make_face_video

SIZE = (1280, 720)
FPS = 30.0
VIEWER_COUNTS = (0, 1, 2, 4)
WARMUP_S = 4.0


def cpu_seconds() -> float:
    """This process's CPU time so far (all threads: user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def versions() -> dict[str, str]:
    names = ("aiortc", "av", "aiohttp", "numpy", "opencv-contrib-python", "mediapipe", "livecam")
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


# --- the viewers (a separate process) -------------------------------------------------------------------------

async def client(base: str, viewers: int) -> None:
    """Open `viewers` receive-only peer connections, read every frame; on stdin "mark" print the frame counts as
    JSON, on "quit" (or the end of stdin) close and exit. Prints "ready" once every viewer has a frame."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pcs = []
    counts = [0] * viewers
    first = [asyncio.Event() for _ in range(viewers)]

    async def read(i: int, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except Exception:  # the track ended: the connection closed (aiortc raises MediaStreamError)
                return
            counts[i] += 1
            first[i].set()

    tasks = []
    async with ClientSession() as http:
        for i in range(viewers):
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(f"{base}/api/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                answer = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"offer refused: {answer}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            pcs.append(pc)
            tasks.append(asyncio.create_task(read(i, pc.getTransceivers()[0].receiver.track)))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), 60)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "mark":
            print(json.dumps(counts), flush=True)
        elif line in ("quit", ""):
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*(pc.close() for pc in pcs))


class ViewerProcess(LineChild):
    """The viewer process for one measurement."""

    def __init__(self, base: str, viewers: int) -> None:
        super().__init__([sys.executable, "-m", "benchmarks.webrtc_viewers", "--client", base, "--viewers",
                          str(viewers)], "viewer")

    def mark(self) -> list[int]:
        return [int(c) for c in self._mark()]

    def close(self, timeout: float = 30.0) -> None:
        super().close(timeout)


# --- the server side ------------------------------------------------------------------------------------------

def render_frames(video: Path, config: Config, frames: int) -> list[RGBImage]:
    """`frames` studio-engine frames of the face video at the output size (rendered once, for `replay`)."""
    from models.registry import FACE_LANDMARKER, SELFIE_SEGMENTER
    from models.segmenter import MediaPipeSegmenter

    stats = Stats()
    renderer = build_renderer(config, stats)
    renderer.prepare()
    sink = MemorySink(SIZE)
    segmenter = MediaPipeSegmenter(resolve_model(config, SELFIE_SEGMENTER))
    try:
        with FrameSource(open_reader(str(video), loop=True), pace=False) as source, \
                MediaPipeFaceTracker(resolve_model(config, FACE_LANDMARKER)) as tracker:
            run_loop(source, tracker, segmenter, renderer, sink, stats, max_frames=frames)
    finally:
        segmenter.close()
        renderer.close()
    return [f.image for f in sink.frames]


class Replay:
    """Publishes recorded frames into a track at `fps` from a thread (the `replay` mode's render loop)."""

    def __init__(self, track: LatestFrameTrack, images: list[RGBImage], fps: float = FPS) -> None:
        self.track = track
        self.images = images
        self.period = 1.0 / fps
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(max(0.0, t0 + self.published * self.period - time.perf_counter())):
            self.track.publish(self.images[self.published % len(self.images)])
            self.published += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


async def replay_app(images: list[RGBImage]) -> tuple[web.AppRunner, str, Replay, Viewers]:
    """A server with only POST /api/offer, over the real LatestFrameTrack and Viewers."""
    track = LatestFrameTrack()
    viewers = Viewers(track)

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        answer = await viewers.answer(body["sdp"], body["type"])
        return web.json_response({"sdp": answer.sdp, "type": answer.type})

    app = web.Application()
    app.router.add_post("/api/offer", offer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", Replay(track, images), viewers


async def bytes_sent(viewers: Viewers) -> int:
    total = 0
    for pc in viewers.connections():
        for stat in (await pc.getStats()).values():
            if getattr(stat, "type", "") == "outbound-rtp":
                total += int(getattr(stat, "bytesSent", 0))
    return total


async def measure(base: str, n: int, seconds: float, published: Any, viewers: Viewers | None) -> dict[str, Any]:
    """Server CPU, frames published and frames each viewer received over `seconds` after the warm-up."""
    loop = asyncio.get_running_loop()
    process = ViewerProcess(base, n) if n else None
    try:
        if process is not None:
            await loop.run_in_executor(None, process.wait_ready)
        await asyncio.sleep(WARMUP_S)
        counts0 = await loop.run_in_executor(None, process.mark) if process is not None else []
        sent0 = await bytes_sent(viewers) if viewers is not None else 0
        cpu0, pub0, t0 = cpu_seconds(), published(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, pub1, t1 = cpu_seconds(), published(), time.perf_counter()
        counts1 = await loop.run_in_executor(None, process.mark) if process is not None else []
        sent1 = await bytes_sent(viewers) if viewers is not None else 0
    finally:
        if process is not None:
            await loop.run_in_executor(None, process.close)
    wall = t1 - t0
    received = [b - a for a, b in zip(counts0, counts1, strict=True)]
    return {"viewers": n, "seconds": round(wall, 3), "cpu_s": round(cpu1 - cpu0, 4),
            "cpu_cores": round((cpu1 - cpu0) / wall, 3), "frames_published": pub1 - pub0,
            "fps_published": round((pub1 - pub0) / wall, 2), "frames_received": received,
            "fps_per_viewer": [round(r / wall, 2) for r in received],
            "kbit_s_per_viewer": round((sent1 - sent0) * 8 / 1000 / wall / n, 1) if n and viewers is not None
            else None}


def per_viewer_cost(rounds: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """CPU per frame per viewer against the 0-viewer baseline of the same mode, pooled over the rounds (sums of
    CPU time and frames), and the share of a core one viewer takes at 30 fps."""
    def total(n: int, key: str) -> float:
        return float(sum(r[key] if key != "frames_received" else sum(r[key]) for r in rounds[n]))

    base_per_frame = total(0, "cpu_s") / max(1.0, total(0, "frames_published"))
    out: dict[str, Any] = {"baseline_cpu_ms_per_published_frame": round(base_per_frame * 1000, 3)}
    for n in rounds:
        if n == 0:
            continue
        extra = total(n, "cpu_s") - base_per_frame * total(n, "frames_published")
        cost = extra / max(1.0, total(n, "frames_received"))
        out[str(n)] = {"cpu_ms_per_frame_per_viewer": round(cost * 1000, 3),
                       "core_share_per_viewer_at_30fps": round(FPS * cost, 3),
                       "viewers_per_core_at_30fps": math.floor(1.0 / (FPS * cost)) if cost > 0 else None}
    return out


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the rounds of the headline figures, with every round's figures."""
    keys = ("cpu_cores", "fps_published")
    per_viewer = [float(np.mean(r["fps_per_viewer"])) for r in rounds if r["fps_per_viewer"]]
    kbits = [r["kbit_s_per_viewer"] for r in rounds if r["kbit_s_per_viewer"] is not None]
    return {"viewers": rounds[0]["viewers"], **{k: round(float(np.mean([r[k] for r in rounds])), 3) for k in keys},
            "fps_per_viewer": round(float(np.mean(per_viewer)), 2) if per_viewer else None,
            "kbit_s_per_viewer": round(float(np.mean(kbits)), 1) if kbits else None, "rounds": rounds}


def encoder_only(images: list[RGBImage], frames: int = 150, bitrate: int = 1_000_000) -> dict[str, float]:
    """aiortc's Vp8Encoder at `bitrate` on the frames (after a warm-up), and the once-per-frame RGB -> yuv420p
    conversion."""
    from aiortc.codecs.vpx import Vp8Encoder

    encoder = Vp8Encoder()
    encoder.target_bitrate = bitrate
    converted = [video_frame(images[i % len(images)]) for i in range(frames)]
    for i, frame in enumerate(converted[:30]):
        frame.pts = i * 3000
        encoder.encode(frame)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for i, frame in enumerate(converted):
        frame.pts = (30 + i) * 3000
        encoder.encode(frame)
    encode_cpu, encode_wall = cpu_seconds() - cpu0, time.perf_counter() - t0
    cpu0 = cpu_seconds()
    for i in range(frames):
        video_frame(images[i % len(images)])
    convert_cpu = cpu_seconds() - cpu0
    return {"encode_cpu_ms_per_frame": round(encode_cpu / frames * 1000, 3),
            "encode_wall_ms_per_frame": round(encode_wall / frames * 1000, 3),
            "convert_cpu_ms_per_frame": round(convert_cpu / frames * 1000, 3),
            "bitrate_kbit_s": encoder.target_bitrate / 1000}


async def benchmark(config: Config, images: list[RGBImage], seconds: float, rounds: int) -> dict[str, Any]:
    replay: dict[int, list[dict[str, Any]]] = {}
    live: dict[int, list[dict[str, Any]]] = {}
    runner, base, player, viewers = await replay_app(images)
    try:
        for _ in range(rounds):
            for n in VIEWER_COUNTS:
                replay.setdefault(n, []).append(await measure(base, n, seconds, lambda: player.published, viewers))
                print(f"replay, {n} viewers: {replay[n][-1]}", file=sys.stderr, flush=True)
    finally:
        player.close()
        await viewers.close()
        await runner.cleanup()
    # As `livecam serve` runs them: the viewers' encoders at a lower priority than the render loop.
    asyncio.get_running_loop().set_default_executor(encoder_executor())
    session = LiveSession(config)
    session.start()  # here, not on a worker thread: its threads would inherit the workers' lower priority
    app = make_app(session, ServeSettings())
    live_runner = web.AppRunner(app, access_log=None)
    await live_runner.setup()
    await web.TCPSite(live_runner, "127.0.0.1", 0).start()
    live_base = f"http://127.0.0.1:{live_runner.addresses[0][1]}"
    try:
        for _ in range(rounds):
            for n in VIEWER_COUNTS:
                live.setdefault(n, []).append(await measure(live_base, n, seconds, lambda: session.frames_out, None))
                print(f"live, {n} viewers: {live[n][-1]}", file=sys.stderr, flush=True)
    finally:
        await live_runner.cleanup()
        session.close()
    return {mode: {"runs": {n: summarise(r) for n, r in runs.items()}, "per_viewer": per_viewer_cost(runs)}
            for mode, runs in (("replay", replay), ("live", live))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/webrtc_viewers_cpu.json"))
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--viewers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        asyncio.run(client(args.client, args.viewers))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        video = make_face_video(Path(tmp) / "face.mp4", size=(640, 480), frames=90)
        landmarker, segmenter = model_paths()  # the shared assets' model files, as the live-loop benchmark uses
        config = load_config(None, ["engine.kind=studio", f"output.width={SIZE[0]}", f"output.height={SIZE[1]}",
                                    "input.loop=true", "input.pace=true", f"input.source={video}",
                                    f"models.face_landmarker={landmarker}", f"models.segmenter={segmenter}",
                                    "models.download=false"])
        images = render_frames(video, config, 90)
        small = [cast(RGBImage, cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA)) for image in images]
        encoder = {"1280x720": encoder_only(images), "640x360": encoder_only(small)}
        print(f"encoder only: {encoder}", file=sys.stderr, flush=True)
        measured = asyncio.run(benchmark(config, images, args.seconds, args.rounds))
    one = measured["replay"]["per_viewer"]
    result = {
        "benchmark": "webrtc_viewers",
        "machine": machine(),
        "versions": versions(),
        "output": {"size": list(SIZE), "fps": FPS, "codec": "VP8 (aiortc Vp8Encoder, libvpx realtime)"},
        "input": {"size": [640, 480], "fps": 29.97,
                  "source": "video_01_ccby_multiface.mp4, region x=20 y=110 240x180 scaled to 640x480"},
        "method": ("server CPU = getrusage user+system of the server process over the window; viewers are aiortc "
                   "peers in another process over loopback; cost per frame per viewer = (CPU - baseline CPU per "
                   "published frame x frames published) / frames received by all viewers"),
        "seconds": args.seconds,
        "warmup_s": WARMUP_S,
        "rounds": args.rounds,
        "encoder_only": encoder,
        **measured,
        "summary": {
            "cpu_ms_per_frame_per_viewer": {n: one[n]["cpu_ms_per_frame_per_viewer"] for n in one if n.isdigit()},
            "core_share_per_viewer_at_30fps": {n: one[n]["core_share_per_viewer_at_30fps"] for n in one
                                               if n.isdigit()},
            "viewers_per_core_at_30fps": {n: one[n]["viewers_per_core_at_30fps"] for n in one if n.isdigit()},
        },
        "note": ("replay isolates the viewers' cost (frames rendered beforehand, published at 30 fps); live runs the "
                 "studio engine's render loop on the same 2 cores, so with viewers added the render loop and the "
                 "encoders compete and frames are dropped (each viewer's encoder takes the newest frame when it "
                 "is free)"),
    }
    write_json(args.out, result)
    print(json.dumps({"encoder_only": encoder, "summary": result["summary"],
                      **{f"{mode}_fps_published_and_per_viewer": {n: (r["fps_published"], r["fps_per_viewer"])
                                                                  for n, r in measured[mode]["runs"].items()}
                         for mode in ("replay", "live")}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
