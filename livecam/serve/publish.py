"""`livecam serve --publish janus://HOST:PORT/ROOM`: the rendered stream sent once to Janus's VideoRoom, which
fans it out to the audience, so livecam encodes once whatever the number of viewers.

`JanusPublisher` runs on the server's event loop beside the viewers: it joins the room as a publisher over
Janus's HTTP API (`livecam.serve.janus`), sends one more relay subscription of the rendered track (its own
encoder, like one local viewer: a slow Janus link misses frames and holds nobody back), and watches the
publication. When Janus goes away (a restart, the network) or refuses, it says so in one line, waits 1, 2, 4
... seconds (at most `publish.retry_max_s`) and publishes again, for as long as the server runs: the render
loop and the local pages never wait for Janus. The API secret, tokens and the PIN are sent to Janus and to
nothing else: no log line holds them (nor a URL with its query).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from livecam.config import PublishSettings
from livecam.serve.janus import (
    NO_SUCH_ROOM,
    ROOM_UNAUTHORIZED,
    UNAUTHORIZED,
    Credentials,
    JanusError,
    JanusSession,
    JanusUnreachable,
)

log = logging.getLogger("livecam")

RETRY_MIN_S = 1.0
STEADY_S = 30.0
"""A publication up this long counts as healthy: the next failure retries after RETRY_MIN_S again."""


class PublishEnded(Exception):
    """The publication ended (Janus went away, hung up, the connection failed): the reason."""


class _Counted(MediaStreamTrack):
    """`inner`, counting the frames the publisher's encoder takes from it."""

    kind = "video"

    def __init__(self, inner: MediaStreamTrack, count: Callable[[], None]) -> None:
        super().__init__()
        self._inner = inner
        self._count = count

    async def recv(self) -> Any:
        frame = await self._inner.recv()
        self._count()
        return frame

    def stop(self) -> None:
        super().stop()
        self._inner.stop()


class JanusPublisher:
    """Publishes `subscribe()`'s track to Janus per `settings` until `stop()`. `start()` on the event loop."""

    def __init__(self, settings: PublishSettings, subscribe: Callable[[], MediaStreamTrack]) -> None:
        self.settings = settings
        self.endpoint, self.room = settings.janus_api
        self._subscribe = subscribe
        self._credentials = Credentials(settings.api_secret, settings.token)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._last_problem = ""
        self.state = "starting"
        """starting, connecting, publishing or waiting (to retry)."""
        self.feed: int | str | None = None
        """Livecam's publisher id in the room while publishing."""
        self.problem = ""
        """Why the last attempt failed ("" while publishing)."""
        self.publications = 0
        """Times it has gone live (the first publication and every republication)."""
        self.attempts = 0
        """Times it has tried to publish."""
        self.frames_sent = 0
        """Frames handed to the encoder of the publication (all publications)."""
        self.pc: RTCPeerConnection | None = None

    @property
    def where(self) -> str:
        return f"Janus room {self.room} at {self.endpoint}"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="livecam-publish")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> dict[str, Any]:
        """For /api/stats: the state, the room, the feed id, the publications so far, the last problem."""
        return {"to": "janus", "room": self.room, "state": self.state, "feed": self.feed,
                "publications": self.publications, "attempts": self.attempts, "frames_sent": self.frames_sent,
                "problem": self.problem or None}

    async def _run(self) -> None:
        delay = RETRY_MIN_S
        async with aiohttp.ClientSession() as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self._publish_once(http)
                    problem = "the publication ended"
                except PublishEnded as e:
                    problem = str(e)
                except JanusUnreachable as e:
                    problem = f"cannot reach Janus at {e.endpoint} ({e.reason})"
                except JanusError as e:
                    problem = self._explain(e)
                except (aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as e:  # odd answers
                    problem = f"Janus's answer could not be used ({type(e).__name__})"
                self.feed = None
                if self._stop.is_set():
                    break
                if time.monotonic() - started >= STEADY_S:
                    delay = RETRY_MIN_S
                self.state, self.problem = "waiting", problem
                self._report(problem, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    def _sent(self) -> None:
        self.frames_sent += 1

    def _explain(self, e: JanusError) -> str:
        if e.code == NO_SUCH_ROOM:
            return (f"Janus at {self.endpoint} has no VideoRoom room {self.room} (publish.url): create it "
                    "(janus.plugin.videoroom.jcfg, or the VideoRoom API)")
        if e.code == ROOM_UNAUTHORIZED:
            return f"Janus room {self.room} refused the PIN (publish.pin)"
        if e.code == UNAUTHORIZED:
            return f"Janus at {self.endpoint} refused the API secret or token (publish.api_secret, publish.token)"
        return f"{self.where} refused: {e.reason} (Janus error {e.code})"

    def _report(self, problem: str, delay: float) -> None:
        """One warning per new problem (the same one again, at each retry, only at debug level)."""
        line = f"publish: {problem}; trying again in {delay:g} s (the camera and the local pages go on)"
        if problem != self._last_problem:
            log.warning("%s", line)
            self._last_problem = problem
        else:
            log.debug("%s", line)

    async def _publish_once(self, http: aiohttp.ClientSession) -> None:
        """Join, publish, and return or raise once the publication has ended."""
        self.state = "connecting"
        self.attempts += 1
        s = self.settings
        track: MediaStreamTrack | None = None
        pc: RTCPeerConnection | None = None
        session = JanusSession(http, self.endpoint, self._credentials)
        try:
            await session.open()
            handle = await session.attach()
            join: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": self.room, "display": s.display}
            if s.pin:
                join["pin"] = s.pin
            joined, _ = await handle.message(join)
            feed = joined.get("id")
            pc = self.pc = RTCPeerConnection()
            up = asyncio.Event()
            failed = asyncio.Event()
            gone = asyncio.Event()

            def on_event(event: dict[str, Any]) -> None:
                """The room destroyed, or livecam's feed unpublished or kicked by Janus's side."""
                data = (event.get("plugindata") or {}).get("data") or {}
                if data.get("videoroom") == "destroyed" or data.get("unpublished") in ("ok", feed) \
                        or data.get("leaving") in ("ok", feed) or data.get("kicked") == feed:
                    gone.set()

            handle.listeners.append(on_event)

            @pc.on("connectionstatechange")
            def on_state() -> None:
                assert pc is not None
                if pc.connectionState == "connected":
                    up.set()
                elif pc.connectionState in ("failed", "closed"):
                    failed.set()

            track = _Counted(self._subscribe(), self._sent)
            pc.addTransceiver(track, direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription
            _, answer = await handle.message({"request": "publish"}, jsep={"type": offer.type, "sdp": offer.sdp})
            if answer is None:
                raise PublishEnded(f"{self.where} answered the publication without SDP")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            await _first(s.connect_timeout_s, up=up, failed=failed, lost=session.lost, hangup=handle.hangup,
                         gone=gone, stop=self._stop)
            if not up.is_set():
                raise PublishEnded(self._ended(failed, gone, session, handle, "the connection to Janus was not up "
                                               f"in {s.connect_timeout_s:g} s (publish.connect_timeout_s)"))
            self.state, self.feed, self.problem = "publishing", feed, ""
            self.publications += 1
            again = " again" if self.publications > 1 else ""
            log.info("publish: live%s in %s (feed %s)", again, self.where, feed)
            self._last_problem = ""
            await _first(None, failed=failed, lost=session.lost, hangup=handle.hangup, gone=gone, stop=self._stop)
            if not self._stop.is_set():
                raise PublishEnded(self._ended(failed, gone, session, handle, "the publication ended"))
        finally:
            if track is not None:
                track.stop()  # unsubscribes it from the relay
            if pc is not None:
                await pc.close()
            self.pc = None
            await session.close()

    def _ended(self, failed: asyncio.Event, gone: asyncio.Event, session: JanusSession, handle: Any,
               otherwise: str) -> str:
        if gone.is_set():
            return f"{self.where} ended the publication (the room was destroyed, or the feed removed)"
        if session.lost.is_set():
            return f"lost {self.where}: {session.lost_reason}"
        if handle.hangup.is_set():
            return f"{self.where} hung up ({handle.hangup_reason})"
        if failed.is_set():
            return f"the connection to {self.where} failed"
        return otherwise


async def _first(timeout: float | None, **events: asyncio.Event) -> None:
    """Wait until any of `events` is set, or `timeout` seconds."""
    waits = [asyncio.ensure_future(e.wait()) for e in events.values()]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
