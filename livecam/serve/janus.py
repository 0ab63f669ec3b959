"""Janus WebRTC server's HTTP API (the "REST" transport with long polling), as far as livecam needs it: a
session with its long poll and keepalive, plugin handles, and VideoRoom requests; and a VideoRoom subscriber
(aiortc) that receives a room's stream, for the tests, the benchmark and anyone who wants to check a room.

    POST BASE                 {"janus": "create"}             -> the session id
    POST BASE/SESSION         {"janus": "attach", "plugin"}   -> a handle id; {"janus": "keepalive"}
    POST BASE/SESSION/HANDLE  {"janus": "message", "body", "jsep"?} -> "success" (a synchronous request) or
                              "ack", and later an "event" with the same transaction, through the long poll
    GET  BASE/SESSION?maxev=N  the long poll: the session's events (or a keepalive after about 30 s)

Every request carries `apisecret` and `token` when configured (the long poll in its query, the others in the
body). Secrets must never reach a log: nothing here logs a request, a URL with its query or a library's
exception text (which can hold the URL); errors are `JanusError` with Janus's code and reason, or
`JanusUnreachable` with the endpoint (no query) and the OS's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

log = logging.getLogger("livecam")

VIDEOROOM = "janus.plugin.videoroom"
REQUEST_TIMEOUT_S = 10.0
POLL_TIMEOUT_S = 45.0
"""Janus answers a long poll after at most about 30 s (with a keepalive event when nothing happened)."""
CLOSE_TIMEOUT_S = 2.0
"""How long `close()` waits for Janus to confirm the session's end."""
KEEPALIVE_S = 20.0
"""A keepalive this often: Janus closes a session that is silent for session_timeout (60 s by default)."""

NO_SUCH_SESSION = 458
UNAUTHORIZED = 403
NO_SUCH_ROOM = 426
ROOM_UNAUTHORIZED = 433
NO_SUCH_FEED = 428


class JanusError(Exception):
    """Janus refused a request: `code` and `reason` as Janus gave them (core or plugin error)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (Janus error {code})")
        self.code = code
        self.reason = reason


class JanusUnreachable(JanusError):
    """No answer from Janus at `endpoint` (refused, timed out, not Janus's API): `reason` says which."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(0, reason)
        self.endpoint = endpoint


def why(e: BaseException) -> str:
    """A short reason for a failed HTTP exchange that never holds the request's URL (aiohttp's messages for
    some errors quote it, query and secrets included)."""
    if isinstance(e, aiohttp.ClientConnectorError):
        errno = e.os_error.errno
        return os.strerror(errno) if errno else type(e.os_error).__name__
    if isinstance(e, aiohttp.ClientResponseError):
        return f"HTTP {e.status}"
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(e, aiohttp.ContentTypeError | ValueError):
        return "the answer is not Janus's JSON (is this Janus's HTTP API?)"
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return type(e).__name__


@dataclass(frozen=True)
class Credentials:
    api_secret: str = ""
    token: str = ""

    def fields(self) -> dict[str, str]:
        """What each request carries (in its JSON body, or the long poll's query)."""
        out = {}
        if self.api_secret:
            out["apisecret"] = self.api_secret
        if self.token:
            out["token"] = self.token
        return out


def _plugin_error(data: dict[str, Any]) -> JanusError | None:
    if "error_code" in data or "error" in data:
        return JanusError(int(data.get("error_code", 0)), str(data.get("error", "error")))
    return None


class JanusSession:
    """One Janus session over HTTP: `await open()`, then `attach()` handles; its long poll dispatches the
    events. `lost` is set (with `lost_reason`) when Janus stops answering or forgets the session (a restart);
    `close()` destroys it (best effort) and stops the poll. Use on one event loop."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str, credentials: Credentials | None = None) -> None:
        self.http = http
        self.endpoint = endpoint.rstrip("/")
        self.credentials = credentials or Credentials()
        self.id: int | None = None
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._handles: dict[int, JanusHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a request; Janus's answer ("success" or "ack"); JanusError for its "error"."""
        transaction = body.setdefault("transaction", secrets.token_hex(8))
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                async with self.http.post(self.endpoint + path, json={**body, **self.credentials.fields()}) as r:
                    r.raise_for_status()
                    answer = await r.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            raise JanusUnreachable(self.endpoint, why(e)) from None
        if not isinstance(answer, dict) or answer.get("transaction") != transaction:
            raise JanusUnreachable(self.endpoint, "the answer is not Janus's (is this Janus's HTTP API?)")
        if answer.get("janus") == "error":
            error = answer.get("error") or {}
            raise JanusError(int(error.get("code", 0)), str(error.get("reason", "error")))
        return answer

    async def open(self) -> None:
        answer = await self._call("", {"janus": "create"})
        self.id = int(answer["data"]["id"])
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keepalive())]

    async def attach(self, plugin: str = VIDEOROOM) -> JanusHandle:
        answer = await self._call(f"/{self.id}", {"janus": "attach", "plugin": plugin})
        handle = JanusHandle(self, int(answer["data"]["id"]))
        self._handles[handle.id] = handle
        return handle

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(JanusUnreachable(self.endpoint, reason))

    async def _poll(self) -> None:
        params = {"maxev": "10", **self.credentials.fields()}
        while not self.lost.is_set():
            try:
                async with asyncio.timeout(POLL_TIMEOUT_S):
                    async with self.http.get(f"{self.endpoint}/{self.id}", params=params) as r:
                        r.raise_for_status()
                        events = await r.json(content_type=None)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                self._lose(f"Janus stopped answering ({why(e)})")
                return
            for event in events if isinstance(events, list) else [events]:
                if isinstance(event, dict):
                    self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind == "error":
            error = event.get("error") or {}
            if int(error.get("code", 0)) == NO_SUCH_SESSION:
                self._lose("Janus no longer knows the session (it restarted, or the session timed out)")
                return
        future = self._waiting.get(str(event.get("transaction", "")))
        if kind == "event" and future is not None and not future.done():
            future.set_result(event)
            return
        handle = self._handles.get(int(event.get("sender", 0) or 0))
        if handle is not None and kind != "keepalive":
            handle.notify(event)

    async def _keepalive(self) -> None:
        while not self.lost.is_set():
            await asyncio.sleep(KEEPALIVE_S)
            try:
                await self._call(f"/{self.id}", {"janus": "keepalive"})
            except JanusUnreachable as e:
                self._lose(f"Janus stopped answering ({e.reason})")
            except JanusError as e:
                self._lose(e.reason)

    async def close(self) -> None:
        """Stop the poll and destroy the session (short, best effort: Janus may be gone)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.id is not None and not self.lost.is_set():
            with contextlib.suppress(JanusError, TimeoutError):  # Janus may be gone: do not hold a shutdown up
                await asyncio.wait_for(self._call(f"/{self.id}", {"janus": "destroy"}), CLOSE_TIMEOUT_S)
        self._lose("closed")

    async def __aenter__(self) -> JanusSession:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class JanusHandle:
    """A plugin handle: `request` (synchronous plugin requests), `message` (asynchronous: waits for the event
    answering it); `hangup` is set when Janus hangs the handle's PeerConnection up or detaches it, and
    `listeners` get every other event (webrtcup, media, slowlink, the plugin's own events). Nothing is kept."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.id = handle_id
        self.hangup = asyncio.Event()
        self.hangup_reason = ""
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def notify(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind in ("hangup", "detached"):
            self.hangup_reason = str(event.get("reason", kind))
            self.hangup.set()
        for listener in self.listeners:
            listener(event)

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (exists, list, listparticipants...): the plugin's data."""
        answer = await self.session._call(f"/{self.session.id}/{self.id}", {"janus": "message", "body": body})
        data = (answer.get("plugindata") or {}).get("data") or {}
        error = _plugin_error(data)
        if error is not None:
            raise error
        return dict(data)

    async def message(self, body: dict[str, Any], jsep: dict[str, str] | None = None,
                      timeout: float = REQUEST_TIMEOUT_S) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """An asynchronous plugin request: (the plugin's data, the JSEP) of the event that answers it."""
        session = self.session
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        session._waiting[transaction] = future
        try:
            request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
            if jsep is not None:
                request["jsep"] = jsep
            answer = await session._call(f"/{session.id}/{self.id}", request)
            if answer.get("janus") == "success":  # answered at once
                event = answer
            else:
                try:
                    event = await asyncio.wait_for(future, timeout)
                except TimeoutError:
                    raise JanusUnreachable(session.endpoint, f"no answer to {body.get('request')!r} in time") from None
        finally:
            session._waiting.pop(transaction, None)
        data = (event.get("plugindata") or {}).get("data") or {}
        error = _plugin_error(data)
        if error is not None:
            raise error
        return dict(data), event.get("jsep")


async def find_publisher(handle: JanusHandle, room: int | str, display: str = "") -> int | str | None:
    """The id of the room's publisher named `display` (any publisher if ""), or None. JanusError 426: no room."""
    data = await handle.request({"request": "listparticipants", "room": room})
    for participant in data.get("participants", []):
        if participant.get("publisher") and (not display or participant.get("display") == display):
            return participant["id"]
    return None


class JanusSubscriber:
    """A VideoRoom subscriber with aiortc: `await open()` joins `room`, subscribes to the publisher named
    `display` and returns the video track (frames arrive through `recv()`); `close()` leaves."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str, room: int | str, *, pin: str = "",
                 display: str = "", credentials: Credentials | None = None) -> None:
        self.session = JanusSession(http, endpoint, credentials)
        self.room = room
        self.pin = pin
        self.display = display
        self.pc: RTCPeerConnection | None = None
        self.feed: int | str | None = None

    async def open(self, wait_s: float = 10.0) -> MediaStreamTrack:
        """The track; JanusError when the room or its publisher is not there within `wait_s` seconds."""
        await self.session.open()
        handle = await self.session.attach()
        deadline = asyncio.get_running_loop().time() + wait_s
        for attempt in itertools.count():
            self.feed = await find_publisher(handle, self.room, self.display)
            if self.feed is not None:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise JanusError(NO_SUCH_FEED, f"room {self.room} has no publisher {self.display!r}")
            await asyncio.sleep(min(0.2 * (attempt + 1), 1.0))
        body: dict[str, Any] = {"request": "join", "ptype": "subscriber", "room": self.room,
                                "streams": [{"feed": self.feed}]}
        if self.pin:
            body["pin"] = self.pin
        _, offer = await handle.message(body)
        if offer is None:
            raise JanusError(0, "Janus sent no offer for the subscription")
        pc = self.pc = RTCPeerConnection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        local = pc.localDescription
        await handle.message({"request": "start"}, jsep={"type": local.type, "sdp": local.sdp})
        video = [t.receiver.track for t in pc.getTransceivers() if t.kind == "video"]
        if not video:
            raise JanusError(0, "the subscription has no video")
        return video[0]

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        await self.session.close()
