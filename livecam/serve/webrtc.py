"""WebRTC: the one shared video track of rendered frames, and the viewers' peer connections.

The render thread `publish`es each frame into `LatestFrameTrack`, a latest-value slot: `recv()` waits (an
asyncio.Event set from the render thread through `loop.call_soon_threadsafe`, no polling) and returns only the
newest frame, never a backlog. `Viewers` gives every viewer its own RTCPeerConnection sending a
`MediaRelay(buffered=False)` subscription of that track: the relay reads the track once per frame and hands
the frame to each viewer's encoder, and a viewer whose encoder is still busy simply misses frames, so a slow or
stalled viewer never slows the others or the render loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import ipaddress
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack, VideoStreamTrack
from av import VideoFrame

from engine.types import RGBImage

log = logging.getLogger("livecam")

MAX_VIEWERS = 200
"""Peer connections accepted at once; more would only starve every viewer of the CPU their encoders need
(see README, "Serve": each viewer's encoder costs CPU time on every frame)."""
OFFER_TIMEOUT_S = 15.0
"""A peer connection not connected this long after its offer is closed (serve.offer_timeout_s)."""
MAX_PENDING = 32
"""Peer connections still connecting, at once (serve.max_pending_offers)."""
MAX_PENDING_PER_CLIENT = 8
"""The same from one client address (serve.max_pending_offers_per_client)."""


class OfferError(ValueError):
    """A viewer's offer cannot be answered (bad SDP, no video in it, too many viewers). `retry_after`: seconds
    after which the same offer may succeed (a limit that frees itself), or None."""

    def __init__(self, message: str, status: int = 400, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def client_key(address: str | None) -> str:
    """The client an address counts as for the per-client limit: the IPv4 address itself, an IPv6 address's
    /64 (one subscriber has a whole /64 to pick addresses from), or "" when unknown."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def video_frame(image: RGBImage) -> VideoFrame:
    """`image` (RGB uint8 HxWx3) as a yuv420p av.VideoFrame, the encoders' own format.

    Converted here once for every viewer: the relay hands the same frame object to each viewer's encoder, on
    executor threads at the same time, and an RGB frame would be converted by each of them, concurrently,
    through the frame's one shared converter (which crashes). A yuv420p frame is only read.

    OpenCV converts (BT.601, limited range, as FFmpeg's swscale does) in a seventh of swscale's time: 1.0 ms
    against 7.3 ms at 1280x720 here. Width and height must be even (the output size is).
    """
    yuv = cast(npt.NDArray[np.uint8], cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420))
    return VideoFrame.from_ndarray(yuv, format="yuv420p")


class LatestFrameTrack(VideoStreamTrack):
    """A video track whose `recv()` returns the newest published frame (RGB uint8 HxWx3), waiting for one
    newer than the last it returned. Create it on the event loop's thread; `publish` from any thread."""

    def __init__(self) -> None:
        super().__init__()
        self._event_loop = asyncio.get_running_loop()
        self._new = asyncio.Event()
        self._lock = threading.Lock()
        self._image: RGBImage | None = None
        self._t0: float | None = None
        self._last_pts = -1
        self.published = 0
        """Frames handed in by the render thread."""
        self.sent = 0
        """Frames `recv()` returned (taken by the relay for the viewers)."""

    def publish(self, image: RGBImage) -> None:
        """Make `image` the newest frame (any thread; it is not copied, so do not modify it afterwards)."""
        with self._lock:
            self._image = image
            self.published += 1
        self._wake()

    def _wake(self) -> None:
        # RuntimeError: the event loop is closed, the server has shut down and nobody is waiting.
        with contextlib.suppress(RuntimeError):
            self._event_loop.call_soon_threadsafe(self._new.set)

    async def recv(self) -> VideoFrame:
        """The newest frame as a yuv420p av.VideoFrame (see `video_frame`), pts from `next_timestamp()`;
        MediaStreamError once stopped."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            await self._new.wait()
            self._new.clear()
            with self._lock:
                image, self._image = self._image, None
            if image is not None:
                break
        pts, time_base = await self.next_timestamp()
        frame = video_frame(image)
        frame.pts = pts
        frame.time_base = time_base
        self.sent += 1
        return frame

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        """The track clock (90 kHz) at this moment, strictly increasing.

        The base class paces a fixed 30 fps by sleeping; frames here come when the render loop makes them
        (its rate varies), so the timestamp is the real time since the first frame and nothing sleeps.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        pts = max(self._last_pts + 1, int((now - self._t0) * VIDEO_CLOCK_RATE))
        self._last_pts = pts
        return pts, VIDEO_TIME_BASE

    def stop(self) -> None:
        super().stop()
        self._wake()  # a waiting recv() then raises MediaStreamError, which ends the relay's reader


ENCODER_NICE = 10
"""How much lower the CPU priority of the event loop's worker threads (the viewers' encoders) is than the render
loop's, on Linux: where the CPU is short, viewers lose frames before the camera does."""


def _lower_priority() -> None:
    if sys.platform.startswith("linux"):  # per thread there; elsewhere it would lower the whole process
        with contextlib.suppress(OSError):  # not permitted: keep the normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ENCODER_NICE)


def encoder_executor() -> ThreadPoolExecutor:
    """A thread pool for the event loop's default executor, whose threads run at a lower CPU priority than the
    render loop's (Linux). aiortc encodes each viewer's frames there; the server's exports run there too."""
    return ThreadPoolExecutor(thread_name_prefix="livecam-encode", initializer=_lower_priority)


def ice_servers(urls: list[str], username: str = "", credential: str = "") -> list[RTCIceServer]:
    """RTCIceServer entries for STUN/TURN `urls`; the credentials go with the TURN ones."""
    servers = []
    for url in urls:
        if url.startswith(("turn:", "turns:")) and username:
            servers.append(RTCIceServer(urls=url, username=username, credential=credential))
        else:
            servers.append(RTCIceServer(urls=url))
    return servers


class Viewers:
    """The viewers' peer connections, each sending its own relay subscription of `track`.

    A connection is pending from its offer until it is connected: at most `max_pending` are pending at once,
    `max_pending_per_client` from one client, and one still pending `offer_timeout` seconds after its offer is
    closed, so offers that never connect (a flood of them, with the shareable viewer token) cannot hold the
    viewer slots. A connection whose state turns "failed" or "closed" is closed and dropped (with its
    subscription); `close()` closes them all (server shutdown). Use on the event loop's thread only.
    """

    def __init__(self, track: MediaStreamTrack, ice: list[RTCIceServer] | None = None,
                 max_viewers: int = MAX_VIEWERS, *, offer_timeout: float = OFFER_TIMEOUT_S,
                 max_pending: int = MAX_PENDING, max_pending_per_client: int = MAX_PENDING_PER_CLIENT) -> None:
        self.track = track
        self._ice = list(ice or [])
        self._relay = MediaRelay()
        self._pcs: dict[RTCPeerConnection, MediaStreamTrack | None] = {}
        self._pending: dict[RTCPeerConnection, tuple[str, asyncio.TimerHandle]] = {}
        """Connections not yet connected: their client and the timer that closes them at `offer_timeout`."""
        self._tasks: set[asyncio.Task[None]] = set()  # the event loop keeps only weak references to tasks
        self._max = max_viewers
        self._offer_timeout = offer_timeout
        self._max_pending = max_pending
        self._max_pending_per_client = max_pending_per_client
        self._closed = False

    def __len__(self) -> int:
        return len(self._pcs)

    def subscription(self) -> MediaStreamTrack:
        """One more subscription of the track through the viewers' relay (the track's one reader), for a sender
        that is not a viewer (the publisher to Janus). `stop()` it to unsubscribe."""
        return self._relay.subscribe(self.track, buffered=False)

    def connections(self) -> list[RTCPeerConnection]:
        """The viewers' peer connections now (for their statistics)."""
        return list(self._pcs)

    @property
    def connected(self) -> int:
        """Peer connections that are up (ICE and DTLS done)."""
        return sum(pc.connectionState == "connected" for pc in self._pcs)

    def pending(self, client: str | None = None) -> int:
        """Peer connections not yet connected (from `client`, a `client_key`, if given)."""
        return sum(client is None or c == client for c, _ in self._pending.values())

    async def answer(self, sdp: str, kind: str, client: str = "") -> RTCSessionDescription:
        """Answer a viewer's offer with a new peer connection that sends the shared track. `client`: the
        viewer's `client_key`. OfferError (400) for an offer that is not one or has no video; OfferError(429)
        when `max_pending_per_client` from this client are still connecting; OfferError(503) when
        `max_viewers` are connected, `max_pending` are connecting, or the server cannot open the connection."""
        if self._closed:
            raise OfferError("the server is shutting down", 503)
        if kind != "offer":
            raise OfferError(f"type {kind[:20]!r}: must be 'offer'")
        if len(self._pcs) >= self._max:
            raise OfferError(f"too many viewers ({self._max}); try again later", 503, 30)
        wait = max(1, round(self._offer_timeout))
        if self.pending(client) >= self._max_pending_per_client:
            raise OfferError(f"too many viewers connecting from your address at once ({self._max_pending_per_client}, "
                             "serve.max_pending_offers_per_client); try again in a few seconds", 429, wait)
        if self.pending() >= self._max_pending:
            raise OfferError(f"too many viewers connecting at once ({self._max_pending}, serve.max_pending_offers); "
                             "try again in a few seconds", 503, wait)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice) if self._ice else None)
        self._pcs[pc] = None
        timer = asyncio.get_running_loop().call_later(self._offer_timeout, self._expire, pc)
        self._pending[pc] = (client, timer)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.debug("viewer %x: %s", id(pc), pc.connectionState)
            if pc.connectionState == "connected":
                self._settled(pc)
            elif pc.connectionState in ("failed", "closed"):
                await self._drop(pc)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if not any(t.kind == "video" for t in pc.getTransceivers()):
                raise OfferError("the offer has no video: add a recvonly video transceiver")
            proxy = self._relay.subscribe(self.track, buffered=False)
            self._pcs[pc] = proxy
            pc.addTrack(proxy)
            await pc.setLocalDescription(await pc.createAnswer())
        except OfferError:
            await self._drop(pc)
            raise
        except OSError as e:  # the ICE transport's sockets could not be opened: the server's limits
            await self._drop(pc)
            raise OfferError(f"cannot open a connection now ({e.strerror or e}); try again later", 503, wait
                             ) from None
        except Exception as e:  # aiortc's SDP parser raises many kinds for malformed input; all are the viewer's
            closed = pc not in self._pcs  # unless the connection was closed under it (see below)
            await self._drop(pc)
            if closed:
                raise OfferError(self._closed_early, 503, wait) from None
            reason = str(e).splitlines()[0][:200] if str(e).strip() else "invalid SDP"
            raise OfferError(f"bad offer: {type(e).__name__}: {reason}") from None
        if pc not in self._pcs:  # closed while answering: its offer timed out, or the server is stopping
            raise OfferError(self._closed_early, 503, wait)
        local = pc.localDescription
        assert local is not None
        return local

    _closed_early = "the connection was closed before it was answered (the server is busy or stopping); try again"

    def _settled(self, pc: RTCPeerConnection) -> None:
        """`pc` is connected: no longer pending, and its offer timeout is off."""
        entry = self._pending.pop(pc, None)
        if entry is not None:
            entry[1].cancel()

    def _expire(self, pc: RTCPeerConnection) -> None:
        if pc in self._pending:
            log.debug("viewer %x: not connected %.0f s after its offer, closed", id(pc), self._offer_timeout)
            task = asyncio.get_running_loop().create_task(self._drop(pc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drop(self, pc: RTCPeerConnection) -> None:
        if pc not in self._pcs:
            return
        self._settled(pc)
        proxy = self._pcs.pop(pc)
        if proxy is not None:
            proxy.stop()  # unsubscribes it from the relay
        await pc.close()

    async def close(self) -> None:
        """Close every peer connection."""
        self._closed = True
        await asyncio.gather(*(self._drop(pc) for pc in list(self._pcs)), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
