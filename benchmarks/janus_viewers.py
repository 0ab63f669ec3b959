"""Benchmark: `livecam serve --publish janus://...` with 1, 2, 4 and 8 subscribers through a real Janus, at
1280x720: livecam's CPU (which must stay flat: it encodes once), Janus's CPU per subscriber, and the frames per
second each subscriber gets; beside it, in the same run, livecam's own peer connections (no Janus) for 1 and 4
viewers, where every viewer is one more encode.

- livecam: the real `livecam serve` pieces (LiveSession rendering the face video with the studio engine at
  1280x720, the aiohttp app, the publisher to Janus) in this process; its CPU is this process's user+system
  time (getrusage) over the measured window.
- Janus: Debian's janus with the tests' minimal config (tests/_janus.py: HTTP transport and VideoRoom on
  loopback) in its own process; its CPU from /proc/PID/stat (utime+stime) over the same window. Per subscriber:
  (Janus's CPU with N - Janus's CPU with 0 subscribers) / N.
- subscribers: real aiortc VideoRoom subscribers in one more process, at nice 10 (real viewers decode on their
  own machines; here they share the 2 cores), counting the frames each decodes over the window.

Rounds interleave the counts (0, 1, 2, 4, 8, direct 1, direct 4, 0, 1, ...), as this VM's speed drifts; the
figures are medians over the rounds.

    python -m benchmarks.janus_viewers [--seconds 6] [--rounds 2] [--out benchmarks/results/janus_viewers_cpu.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks.live_loop import machine, model_paths
from benchmarks.webrtc_viewers import ViewerProcess, cpu_seconds, versions
from livecam.config import Config, PublishSettings, ServeSettings, load_config
from livecam.serve.app import SERVER, make_app
from livecam.serve.session import LiveSession
from livecam.serve.webrtc import encoder_executor
from tests._janus import JANUS, JanusServer, SubscriberProcess, janus_missing
from tests.media import make_face_video

SIZE = (1280, 720)
ROOM = 1234
SUBSCRIBERS = (0, 1, 2, 4, 8)
DIRECT = (1, 4)
WARMUP_S = 4.0
SUBSCRIBER_NICE = 10


def janus_version() -> str:
    out = subprocess.run([JANUS, "--version"], capture_output=True, text=True, timeout=10).stdout
    return next((line.split("(")[-1].rstrip(")") for line in out.splitlines() if "version" in line.lower()), "?")


async def bytes_published(app: web.Application) -> int:
    publisher = app[SERVER].publisher
    pc = publisher.pc if publisher is not None else None
    if pc is None:
        return 0
    return sum(int(getattr(s, "bytesSent", 0)) for s in (await pc.getStats()).values()
               if getattr(s, "type", "") == "outbound-rtp")


async def measure(janus: JanusServer, session: LiveSession, app: web.Application, base: str, n: int,
                  seconds: float, direct: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    process: SubscriberProcess | ViewerProcess | None = None
    if n and direct:
        process = ViewerProcess(base, n)
    elif n:
        process = SubscriberProcess(janus.endpoint, ROOM, n, nice=SUBSCRIBER_NICE)
    try:
        if process is not None:
            await loop.run_in_executor(None, process.wait_ready)
        await asyncio.sleep(WARMUP_S)

        async def mark() -> list[int]:
            if process is None:
                return []
            got: Any = await loop.run_in_executor(None, process.mark)
            return [int(c) for c in (got["counts"] if isinstance(got, dict) else got)]

        counts0, bytes0 = await mark(), await bytes_published(app)
        publisher = app[SERVER].publisher
        assert publisher is not None
        cpu0, janus0, out0, t0 = cpu_seconds(), janus.cpu_seconds(), session.frames_out, time.perf_counter()
        sent0 = publisher.frames_sent
        await asyncio.sleep(seconds)
        cpu1, janus1, out1, t1 = cpu_seconds(), janus.cpu_seconds(), session.frames_out, time.perf_counter()
        sent1 = publisher.frames_sent
        counts1, bytes1 = await mark(), await bytes_published(app)
    finally:
        if process is not None:
            await loop.run_in_executor(None, process.close)
    wall = t1 - t0
    received = [b - a for a, b in zip(counts0, counts1, strict=True)]
    return {"subscribers": n, "direct": direct, "seconds": round(wall, 3),
            "livecam_cpu_cores": round((cpu1 - cpu0) / wall, 3),
            "livecam_cpu_ms_per_rendered_frame": round((cpu1 - cpu0) / max(1, out1 - out0) * 1000, 2),
            "janus_cpu_cores": round((janus1 - janus0) / wall, 4),
            "frames_received": sum(received),
            "render_fps": round((out1 - out0) / wall, 2),
            "published_fps": round((sent1 - sent0) / wall, 2),
            "fps_per_subscriber": [round(r / wall, 2) for r in received],
            "published_kbit_s": round((bytes1 - bytes0) * 8 / 1000 / wall, 1)}


def summarise(runs: list[dict[str, Any]], janus_idle: float) -> dict[str, Any]:
    n = runs[0]["subscribers"]
    fps = [statistics.mean(r["fps_per_subscriber"]) for r in runs if r["fps_per_subscriber"]]
    out: dict[str, Any] = {
        "subscribers": n,
        "livecam_cpu_cores": round(statistics.median(r["livecam_cpu_cores"] for r in runs), 3),
        "livecam_cpu_ms_per_rendered_frame": round(statistics.median(
            r["livecam_cpu_ms_per_rendered_frame"] for r in runs), 2),
        "published_fps": round(statistics.median(r["published_fps"] for r in runs), 2),
        "janus_cpu_cores": round(statistics.median(r["janus_cpu_cores"] for r in runs), 4),
        "render_fps": round(statistics.median(r["render_fps"] for r in runs), 2),
        "fps_per_subscriber": round(statistics.median(fps), 2) if fps else None,
        "min_fps_of_a_subscriber": round(min(min(r["fps_per_subscriber"]) for r in runs), 2) if fps else None,
    }
    out["published_kbit_s"] = round(statistics.median(r["published_kbit_s"] for r in runs), 1)
    if n and not runs[0]["direct"]:
        out["janus_cpu_cores_per_subscriber"] = round((out["janus_cpu_cores"] - janus_idle) / n, 4)
        # Pooled over the rounds: Janus's CPU above idle over every frame it forwarded.
        extra = sum((r["janus_cpu_cores"] - janus_idle) * r["seconds"] for r in runs)
        out["janus_cpu_ms_per_forwarded_frame"] = round(extra / max(1, sum(r["frames_received"] for r in runs))
                                                        * 1000, 3)
    out["rounds"] = runs
    return out


async def benchmark(config: Config, janus: JanusServer, seconds: float, rounds: int) -> dict[str, Any]:
    asyncio.get_running_loop().set_default_executor(encoder_executor())
    session = LiveSession(config)
    session.start()
    app = make_app(session, ServeSettings(), publish=PublishSettings(url=janus.url(ROOM)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    publisher = app[SERVER].publisher
    assert publisher is not None
    via: dict[int, list[dict[str, Any]]] = {}
    direct: dict[int, list[dict[str, Any]]] = {}
    try:
        deadline = time.monotonic() + 30
        while publisher.state != "publishing":
            if time.monotonic() > deadline:
                raise RuntimeError(f"not publishing to Janus: {publisher.status()}")
            await asyncio.sleep(0.1)
        for _ in range(rounds):
            for n in SUBSCRIBERS:
                via.setdefault(n, []).append(await measure(janus, session, app, base, n, seconds, False))
                print(f"janus, {n} subscribers: {via[n][-1]}", file=sys.stderr, flush=True)
            for n in DIRECT:
                direct.setdefault(n, []).append(await measure(janus, session, app, base, n, seconds, True))
                print(f"direct, {n} viewers: {direct[n][-1]}", file=sys.stderr, flush=True)
        publications = publisher.publications
    finally:
        await runner.cleanup()
        session.close()
    idle = statistics.median(r["janus_cpu_cores"] for r in via[0])
    return {"through_janus": {str(n): summarise(r, idle) for n, r in via.items()},
            "direct_livecam_viewers": {str(n): summarise(r, idle) for n, r in direct.items()},
            "publications": publications}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/janus_viewers_cpu.json"))
    args = parser.parse_args(argv)
    missing = janus_missing()
    if missing:
        print(f"janus_viewers: {missing}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_face_video(Path(tmp) / "face.mp4", size=(640, 480), frames=90)
        landmarker, segmenter = model_paths()
        config = load_config(None, ["engine.kind=studio", f"output.width={SIZE[0]}", f"output.height={SIZE[1]}",
                                    "input.loop=true", "input.pace=true", f"input.source={video}",
                                    f"models.face_landmarker={landmarker}", f"models.segmenter={segmenter}",
                                    "models.download=false"])
        janus = JanusServer(Path(tmp) / "janus", {ROOM: ""})
        janus.start()
        try:
            measured = asyncio.run(benchmark(config, janus, args.seconds, args.rounds))
        finally:
            janus.stop()
    via = measured["through_janus"]
    result = {
        "benchmark": "janus_viewers",
        "machine": machine(),
        "versions": {**versions(), "janus": janus_version()},
        "output": {"size": list(SIZE), "codec": "VP8 (aiortc Vp8Encoder, libvpx realtime), one encode to Janus"},
        "input": {"size": [640, 480], "fps": 29.97,
                  "source": "video_01_ccby_multiface.mp4, region x=20 y=110 240x180 scaled to 640x480"},
        "method": ("livecam CPU = getrusage user+system of the livecam process (render loop, publisher, app); Janus "
                   "CPU = utime+stime from /proc/PID/stat; subscribers = aiortc VideoRoom subscribers in another "
                   f"process at nice {SUBSCRIBER_NICE}, frames decoded per subscriber over the window; medians "
                   "over the rounds; direct = livecam's own peer connections (POST /api/offer), no Janus"),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2),
                              "note": "other work on this shared 2-core VM competes for the CPU"},
        "seconds": args.seconds,
        "warmup_s": WARMUP_S,
        "rounds": args.rounds,
        **measured,
        "summary": {
            "livecam_cpu_cores": {n: via[n]["livecam_cpu_cores"] for n in via},
            "livecam_cpu_ms_per_rendered_frame": {n: via[n]["livecam_cpu_ms_per_rendered_frame"] for n in via},
            "published_fps": {n: via[n]["published_fps"] for n in via},
            "janus_cpu_cores_per_subscriber": {n: via[n].get("janus_cpu_cores_per_subscriber") for n in via
                                               if n != "0"},
            "janus_cpu_ms_per_forwarded_frame": {n: via[n].get("janus_cpu_ms_per_forwarded_frame") for n in via
                                                 if n != "0"},
            "fps_per_subscriber": {n: via[n]["fps_per_subscriber"] for n in via if n != "0"},
            "render_fps": {n: via[n]["render_fps"] for n in via},
            "direct_livecam_cpu_cores": {n: r["livecam_cpu_cores"] for n, r in
                                         measured["direct_livecam_viewers"].items()},
            "direct_livecam_cpu_ms_per_rendered_frame": {n: r["livecam_cpu_ms_per_rendered_frame"] for n, r in
                                                         measured["direct_livecam_viewers"].items()},
            "direct_fps_per_viewer": {n: r["fps_per_subscriber"] for n, r in
                                      measured["direct_livecam_viewers"].items()},
        },
        "note": ("all three (livecam, Janus, the subscribers' decoders) share this VM's 2 cores; on a real webinar "
                 "Janus runs on its own host and the viewers decode on theirs"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
