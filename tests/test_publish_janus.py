"""`livecam serve --publish janus://...`: the real session (studio engine, MediaPipe) on a real video publishes
to a real Janus (Debian's package, a minimal config on loopback ports, see tests/_janus.py); real aiortc
subscribers receive the stream through Janus's VideoRoom; Janus is killed and started again mid-stream; the
failures a user meets (Janus down, no such room, a wrong PIN or API secret) are one clear line each, and no
secret ever reaches a log."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import VideoStreamTrack

from livecam.config import PublishSettings, ServeSettings, load_config
from livecam.serve.app import SERVER, make_app
from livecam.serve.guards import viewer_token
from livecam.serve.janus import JanusSession, JanusSubscriber
from livecam.serve.publish import JanusPublisher
from livecam.serve.runner import make_runner
from livecam.serve.session import LiveSession
from tests._janus import JANUS_JS, JanusServer, SubscriberProcess, free_port, janus_missing
from tests.test_serve import Aio

if janus_missing():
    pytest.skip(str(janus_missing()), allow_module_level=True)

SIZE = (320, 180)
ROOM = 1234
CLI_ROOM = 4321
"""A room of its own for `livecam serve` on the command line (one publisher per room)."""
SPARE_ROOM = 5555
"""A room the tests destroy and create again."""
PIN = "pin-8a1c93f2e7"
API_SECRET = "api-secret-5d2b77c0a9"
TOKEN = "test-token-0123456789abcdef"
SOURCES: list[VideoStreamTrack] = []


class Records(logging.Handler):
    """Every log record's text (all loggers), for the "said once" and "never logged" checks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append((record.levelno, text))

    def warnings(self, contains: str) -> list[str]:
        return [t for level, t in self.lines if level >= logging.WARNING and contains in t]


@dataclass
class Published:
    janus: JanusServer
    session: LiveSession
    aio: Aio
    base: str
    """The app (with TOKEN) that publishes to the room."""
    app: web.Application
    records: Records
    start: Callable[[ServeSettings, PublishSettings], tuple[str, web.Application]]

    @property
    def publisher(self) -> JanusPublisher:
        publisher = self.app[SERVER].publisher
        assert publisher is not None
        return publisher

    def wait_publishing(self, publications: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.publisher
            if p.state == "publishing" and p.publications >= publications:
                return
            time.sleep(0.05)
        raise AssertionError(f"not publishing after {timeout} s: {self.publisher.status()}")


@pytest.fixture(scope="module")
def published(short_face_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    records = Records()
    root, livecam_log = logging.getLogger(), logging.getLogger("livecam")
    old_level = livecam_log.level
    root.addHandler(records)
    livecam_log.setLevel(logging.DEBUG)
    janus = JanusServer(tmp_path_factory.mktemp("janus"), {ROOM: PIN, CLI_ROOM: PIN, SPARE_ROOM: ""})
    janus.start()
    config = load_config(None, [f"input.source={short_face_video}", "input.loop=true", "input.pace=true",
                                "engine.kind=studio", f"output.width={SIZE[0]}", f"output.height={SIZE[1]}"])
    session = LiveSession(config)
    session.start()
    aio = Aio()
    runners: list[web.AppRunner] = []

    async def start(settings: ServeSettings, publish: PublishSettings) -> tuple[str, web.Application]:
        app = make_app(session, settings, publish=publish)
        runner = make_runner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}", app

    def start_app(settings: ServeSettings, publish: PublishSettings) -> tuple[str, web.Application]:
        return aio.run(start(settings, publish))

    try:
        publish = PublishSettings(url=janus.url(ROOM), pin=PIN, retry_max_s=2, janus_js=str(JANUS_JS))
        base, app = start_app(ServeSettings(token=TOKEN), publish)
        yield Published(janus, session, aio, base, app, records, start_app)
    finally:
        for runner in runners:
            aio.run(runner.cleanup())
        aio.close()
        session.close()
        janus.stop()
        root.removeHandler(records)
        livecam_log.setLevel(old_level)


async def subscriber_frames(endpoint: str, n: int, pin: str = PIN, room: int = ROOM) -> list[Any]:
    async with aiohttp.ClientSession() as http:
        sub = JanusSubscriber(http, endpoint, room, pin=pin)
        try:
            track = await sub.open(15)
            return [await asyncio.wait_for(track.recv(), 15) for _ in range(n)]
        finally:
            await sub.close()


def test_three_subscribers_get_the_rendered_frames_through_janus_and_the_studio_page_still_works(
        published: Published) -> None:
    published.wait_publishing()

    async def scenario() -> tuple[list[list[Any]], list[Any], dict[str, Any]]:
        got = await asyncio.gather(*(subscriber_frames(published.janus.endpoint, 10) for _ in range(3)))
        # The studio page's own stream (a local peer connection) goes on beside the publication.
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{published.base}/api/offer",
                                 json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                answer = await r.json()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            local = [await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 15) for _ in range(3)]
            async with http.get(f"{published.base}/api/stats") as r:
                stats = await r.json()
        await pc.close()
        return got, local, stats

    got, local, stats = published.aio.run(scenario())
    for frames in got:
        assert [(f.width, f.height) for f in frames] == [SIZE] * 10
        image = frames[-1].to_ndarray(format="rgb24")
        assert image.shape == (SIZE[1], SIZE[0], 3) and image.std() > 10  # a picture, not a blank frame
    assert [(f.width, f.height) for f in local] == [SIZE] * 3
    assert stats["publish"]["state"] == "publishing" and stats["publish"]["room"] == ROOM
    assert stats["viewers"] == 1  # the studio page's; Janus's subscribers cost livecam no peer connection


def test_a_stalled_subscriber_does_not_slow_the_others(published: Published) -> None:
    published.wait_publishing()
    seconds = 3.0
    stalled = SubscriberProcess(published.janus.endpoint, ROOM, 1, pin=PIN)
    try:
        stalled.wait_ready()
        stalled.pause()  # SIGSTOP: its sockets are no longer read, it sends no RTCP

        async def scenario() -> tuple[list[int], int]:
            counts = [0, 0]
            first = [asyncio.Event(), asyncio.Event()]

            async def read(i: int, track: Any) -> None:  # all along, so no frame waits in a queue
                while True:
                    await track.recv()
                    counts[i] += 1
                    first[i].set()

            async with aiohttp.ClientSession() as http:
                subs = [JanusSubscriber(http, published.janus.endpoint, ROOM, pin=PIN) for _ in range(2)]
                readers = [asyncio.create_task(read(i, await sub.open(15))) for i, sub in enumerate(subs)]
                try:
                    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), 15)
                    await asyncio.sleep(0.5)
                    before, rendered = list(counts), published.session.frames_out
                    await asyncio.sleep(seconds)
                    assert not any(r.done() for r in readers), [r.exception() for r in readers if r.done()]
                    return [b - a for a, b in zip(before, counts, strict=True)], \
                        published.session.frames_out - rendered
                finally:
                    for r in readers:
                        r.cancel()
                    await asyncio.gather(*(sub.close() for sub in subs))

        counts, rendered = published.aio.run(scenario())
    finally:
        stalled.close()
    assert rendered >= 0.5 * 30 * seconds, f"the render loop made {rendered} frames in {seconds} s"
    for count in counts:
        assert count >= 0.5 * rendered, (counts, rendered)
    assert abs(counts[0] - counts[1]) <= 0.15 * max(counts) + 3, counts  # both get the same packets


def test_janus_killed_and_restarted_livecam_republishes_and_the_loop_never_stops(published: Published) -> None:
    published.wait_publishing()
    session, janus, publisher = published.session, published.janus, published.publisher
    before = publisher.publications
    janus.kill()
    frames0 = session.frames_out
    deadline = time.monotonic() + 10
    while publisher.state == "publishing" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert publisher.state != "publishing", "the publisher did not notice that Janus died"
    time.sleep(2.5)  # Janus down: retries fail, the loop goes on
    assert session.running and session.frames_out - frames0 >= 30, session.frames_out - frames0
    assert "cannot reach Janus" in publisher.problem, publisher.problem
    janus.start()
    published.wait_publishing(before + 1, timeout=15)
    got = published.aio.run(subscriber_frames(janus.endpoint, 5))
    assert [(f.width, f.height) for f in got] == [SIZE] * 5
    assert session.running and session.error is None
    records = published.records
    assert len(records.warnings("cannot reach Janus")) == 1, records.warnings("publish:")  # said once, not per retry
    assert records.warnings("lost Janus room")
    assert any("live again in Janus room" in t for _, t in records.lines)
    assert not [t for _, t in records.lines if PIN in t]


def test_the_viewer_page_is_told_where_to_subscribe_and_gets_janus_js(published: Published) -> None:
    down = f"janus://127.0.0.1:{free_port()}/{ROOM}"
    settings = ServeSettings(token=TOKEN)
    base, _ = published.start(settings, PublishSettings(url=down, pin=PIN, api_secret=API_SECRET, token=API_SECRET,
                                                        viewer_token="viewer-janus-token",
                                                        janus_js=str(JANUS_JS), retry_max_s=1))
    bare, _ = published.start(settings, PublishSettings(url=down, janus_js="/nonexistent/janus.js", retry_max_s=1))
    viewer = {"Authorization": f"Bearer {viewer_token(TOKEN)}"}

    async def scenario() -> tuple[dict[str, Any], int, bytes, dict[str, Any], int, str]:
        async with aiohttp.ClientSession(headers=viewer) as http:
            async with http.get(f"{base}/api/state") as r:
                state = await r.json()
            async with http.get(f"{base}/{state['janus']['script']}") as r:
                status, script = r.status, await r.read()
            async with http.get(f"{bare}/api/state") as r:
                bare_state = await r.json()
            async with http.get(f"{bare}/static/vendor/janus.js") as r:
                missing, message = r.status, (await r.json())["error"]
        return state, status, script, bare_state, missing, message

    state, status, script, bare_state, missing, message = published.aio.run(scenario())
    assert state["janus"] == {"server": f"http://{down[len('janus://'):].rsplit('/', 1)[0]}/janus", "room": ROOM,
                              "pin": PIN, "token": "viewer-janus-token", "display": "livecam",
                              "script": "static/vendor/janus.js"}
    assert API_SECRET not in json.dumps(state)  # livecam's own Janus credentials never go to browsers
    assert status == 200 and b"Janus" in script[:2000]
    assert bare_state["janus"] is None  # no library: the viewer page streams from livecam
    assert missing == 404 and "libjs-janus-gateway" in message
    assert published.records.warnings("Janus's JavaScript library is not at /nonexistent/janus.js")


def _publisher(settings: PublishSettings, aio: Aio) -> JanusPublisher:
    """A publisher of aiortc's test pattern track (these cases are about talking to Janus, not the picture)."""
    async def make() -> JanusPublisher:
        relay, source = MediaRelay(), VideoStreamTrack()
        publisher = JanusPublisher(settings, lambda: relay.subscribe(source, buffered=False))
        publisher.start()
        SOURCES.append(source)
        return publisher

    return aio.run(make())


def _settle(publisher: JanusPublisher, state: str, attempts: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if publisher.state == state and (state == "publishing" or publisher.attempts >= attempts):
            return
        time.sleep(0.05)
    raise AssertionError(f"{state} not reached: {publisher.status()}")


def test_janus_down_no_room_a_wrong_pin_or_secret_are_one_clear_line_each(
        published: Published, tmp_path: Path) -> None:
    aio, records = published.aio, published.records
    secured = JanusServer(tmp_path / "secured", {ROOM: ""}, api_secret=API_SECRET)
    secured.start()
    port = free_port()
    cases = [
        (PublishSettings(url=f"janus://127.0.0.1:{port}/{ROOM}", retry_max_s=1),
         f"cannot reach Janus at http://127.0.0.1:{port}/janus (Connection refused)"),
        (PublishSettings(url=published.janus.url(999), retry_max_s=1),
         f"Janus at {published.janus.endpoint} has no VideoRoom room 999 (publish.url)"),
        (PublishSettings(url=published.janus.url(ROOM), pin="wrong-pin-3b9e", retry_max_s=1),
         f"Janus room {ROOM} refused the PIN (publish.pin)"),
        (PublishSettings(url=secured.url(ROOM), api_secret="wrong-secret-77e1", retry_max_s=1),
         f"Janus at {secured.endpoint} refused the API secret or token"),
    ]
    publishers = [_publisher(settings, aio) for settings, _ in cases]
    good = _publisher(PublishSettings(url=secured.url(ROOM), api_secret=API_SECRET), aio)
    try:
        _settle(good, "publishing")  # the right secret gets in
        for publisher, (_, line) in zip(publishers, cases, strict=True):
            _settle(publisher, "waiting", attempts=3)  # retried, every second (retry_max_s = 1)
            assert publisher.problem.startswith(line), publisher.problem
            assert len(records.warnings(line)) == 1, records.warnings(line)  # one line, not one per retry
    finally:
        for publisher in [*publishers, good]:
            aio.run(publisher.stop())
        for source in SOURCES:
            source.stop()
        secured.stop()
    secrets = (API_SECRET, "wrong-secret-77e1", "wrong-pin-3b9e", PIN)
    assert not [t for _, t in records.lines if any(s in t for s in secrets)]


def test_a_destroyed_room_ends_the_publication_and_livecam_publishes_again_when_it_is_back(
        published: Published) -> None:
    aio, records = published.aio, published.records
    publisher = _publisher(PublishSettings(url=published.janus.url(SPARE_ROOM), retry_max_s=1), aio)

    async def room(request: str) -> None:
        async with aiohttp.ClientSession() as http, JanusSession(http, published.janus.endpoint) as session:
            handle = await session.attach()
            await handle.request({"request": request, "room": SPARE_ROOM, "publishers": 1})

    try:
        _settle(publisher, "publishing")
        aio.run(room("destroy"))
        _settle(publisher, "waiting", attempts=2)
        aio.run(room("create"))
        deadline = time.monotonic() + 15
        while publisher.publications < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert publisher.publications == 2 and publisher.state == "publishing", publisher.status()
    finally:
        aio.run(publisher.stop())
        for source in SOURCES:
            source.stop()
    ended = records.warnings(f"publish: Janus room {SPARE_ROOM} at {published.janus.endpoint} ")
    assert ended and ("ended the publication" in ended[0] or "hung up" in ended[0]), ended  # Janus's order varies
    assert records.warnings(f"has no VideoRoom room {SPARE_ROOM}")


def test_publish_url_and_keys_are_checked(tmp_path: Path) -> None:
    assert PublishSettings(url="janus://janus.example.com:8088/1234").janus_api == (
        "http://janus.example.com:8088/janus", 1234)
    assert PublishSettings(url="janus+https://janus.example.com/api/webinar").janus_api == (
        "https://janus.example.com/api", "webinar")
    for bad in ("http://janus.example.com/1234", "janus://janus.example.com", "janus://h/1?apisecret=x",
                "janus://user:pass@h/1"):
        with pytest.raises(Exception, match=r"publish\.url = .*janus://HOST:PORT/ROOM"):
            load_config(None, [f"publish.url={bad}"])
    with pytest.raises(Exception, match=r"publish\.viewers = 'sfu'"):
        load_config(None, ["publish.viewers=sfu"])
    assert "s3cret" not in repr(replace(PublishSettings(), api_secret="s3cret", pin="s3cret", token="s3cret"))


def test_cli_serve_publishes_and_a_bad_publish_url_is_one_line(published: Published, short_face_video: Path,
                                                               tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "livecam", "serve", "--publish", "http://janus.example.com/1234"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "livecam: error: --publish http://janus.example.com/1234: must be janus://HOST:PORT/ROOM (or "
        "janus+https://...)"], bad.stderr
    result = subprocess.run(
        [sys.executable, "-m", "livecam", "serve", "--input", str(short_face_video), "--engine", "studio",
         "--port", "0", "--frames", "90", "--set", "input.loop=true", "--set", "output.width=320",
         "--set", "output.height=180", "--publish", published.janus.url(CLI_ROOM), "--set", f"publish.pin={PIN}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "LIVECAM_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"publish: live in Janus room {CLI_ROOM} at {published.janus.endpoint}" in result.stderr, result.stderr
    assert PIN not in result.stderr + result.stdout


CHROMIUM = Path("/usr/bin/chromium")
VIDEO_JS = """() => {
  const v = document.getElementById('video');
  if (!v || v.readyState < 2 || !v.videoWidth || v.currentTime < 0.3) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const all = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < all.length; i += 16) {
    const y = (all[i] + all[i + 1] + all[i + 2]) / 3; sum += y; sq += y * y; n++;
  }
  const mean = sum / n;
  return {w: c.width, h: c.height, std: Math.sqrt(sq / n - mean * mean), t: v.currentTime,
          status: document.getElementById('status').textContent};
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_viewer_page_plays_through_janus_and_comes_back_after_janus_restarts(
        published: Published, tmp_path: Path) -> None:
    import playwright.sync_api as playwright_sync

    from tests.test_studio_page import CHROMIUM_ARGS

    published.wait_publishing()
    with playwright_sync.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 640, "height": 400})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(f"{published.base}/view?token={viewer_token(TOKEN)}")
            page.wait_for_function("() => document.getElementById('status').textContent === 'live (via Janus)'",
                                   timeout=30_000)
            page.wait_for_function(VIDEO_JS, timeout=30_000)
            shown = page.evaluate(VIDEO_JS)
            assert (shown["w"], shown["h"]) == SIZE and shown["std"] > 10, shown  # a picture, through Janus
            page.screenshot(path=str(tmp_path / "viewer_via_janus.png"))
            stats = published.aio.run(_get(f"{published.base}/api/stats"))
            assert stats["viewers"] == 0  # the page's stream is Janus's, not a peer connection of livecam's

            before = published.publisher.publications
            published.janus.kill()
            page.wait_for_function("() => document.getElementById('status').textContent.startsWith('waiting')",
                                   timeout=30_000)
            published.janus.start()
            published.wait_publishing(before + 1, timeout=20)
            page.wait_for_function("() => document.getElementById('status').textContent === 'live (via Janus)'",
                                   timeout=40_000)
            t0 = page.evaluate("() => document.getElementById('video').currentTime")
            page.wait_for_function(f"() => document.getElementById('video').currentTime > {t0} + 0.5",
                                   timeout=20_000)
            page.screenshot(path=str(tmp_path / "viewer_via_janus_after_restart.png"))
        finally:
            context.close()


async def _get(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http, http.get(url) as r:
        return dict(await r.json())
