"""Running `livecam serve`: the server's settings (the command line's over [serve], a token where one is
needed), the live session, the app on an aiohttp runner with the server's limits, the event loop, the start-up
lines, and the stop on Ctrl-C/SIGTERM or the input's end.

Limits (see `make_runner`): a request's headers must arrive within `serve.request_timeout_s` and an idle
connection is closed after it, so idle or half-sent connections cannot hold the open files; the soft open-file
limit is raised where it is low (`raise_open_file_limit`), and running out of open files is one warning now
and then, not a traceback per refused connection (`_LoopErrors`). No access log: URLs carry tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import signal
import time
from typing import Any

from aiohttp import web

from livecam.config import Config, ServeSettings
from livecam.errors import LivecamError
from livecam.serve.app import SERVER, make_app
from livecam.serve.guards import http_log, is_loopback, viewer_token
from livecam.serve.session import LiveSession
from livecam.serve.webrtc import encoder_executor

log = logging.getLogger("livecam")

LINGER_S = 2.0
"""After answering a request whose body was not read (401, 413), read and drop the rest of it this long at most,
so the client gets the answer rather than a reset connection."""
OPEN_FILES = 4096
"""`livecam serve` raises its soft open-file limit to this (or to the hard limit, if lower): macOS starts
processes at 256, which a few hundred connections use up."""


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner for `app` (from `make_app`), with the server's limits: a connection whose request headers do
    not arrive within `serve.request_timeout_s`, or that stays idle that long between requests, is closed
    (aiohttp's keep-alive timer runs from the moment a connection is accepted, and until a complete request
    has arrived); no access log (URLs carry tokens); aiohttp's messages about malformed requests without a
    traceback (`guards.http_log`)."""
    timeout = app[SERVER].settings.request_timeout_s
    return web.AppRunner(app, access_log=None, keepalive_timeout=timeout, lingering_time=min(LINGER_S, timeout),
                         logger=http_log)



def urls(host: str, port: int, token: str) -> tuple[str, str]:
    """(studio page URL, viewer URL) for the printed start-up lines."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    query = f"?token={token}" if token else ""
    return f"http://{shown}:{port}/{query}", f"http://{shown}:{port}/view{query}"


def serve_settings(config: Config, host: str | None = None, port: int | None = None,
                   token: str | None = None) -> ServeSettings:
    """[serve] with the command line's --host/--port/--token, and a random token when one is needed (a
    non-loopback bind with none configured)."""
    s = config.serve
    try:
        s = dataclasses.replace(s, host=s.host if host is None else host, port=s.port if port is None else port,
                                token=s.token if token is None else token)
    except ValueError as e:
        raise LivecamError(f"serve.{e}") from None
    if not s.token and not is_loopback(s.host):
        s = dataclasses.replace(s, token=secrets.token_urlsafe(24))
    return s


def run_serve(config: Config, host: str | None = None, port: int | None = None, *, token: str | None = None,
              output: str | None = None, max_frames: int | None = None) -> None:
    """Run the live camera and serve it until Ctrl-C/SIGTERM, the input's end or `max_frames` frames.
    `output`: also send every frame there (virtualcam, preview, a video file)."""
    settings = serve_settings(config, host, port, token)
    raise_open_file_limit()
    session = LiveSession(config, output=output, max_frames=max_frames)
    session.start()
    try:
        asyncio.run(_serve(session, settings))
    finally:
        session.close()
    if session.error is not None and not isinstance(session.error, KeyboardInterrupt):
        raise session.error


def raise_open_file_limit(want: int = OPEN_FILES) -> None:
    """Raise this process's soft limit on open files to `want` (at most the hard limit), where it is lower:
    every connection and every viewer's sockets take one. Not possible (Windows, or refused): left as it is."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.debug("open-file limit stays at %d: %s", soft, e)


class _LoopErrors:
    """The event loop's exception handler for `livecam serve`. Out of open files, asyncio's accept loop reports
    each failed accept() with a traceback, up to the listen backlog (128) of them every second while it lasts:
    that is one warning line here, at most every `every` seconds. Anything else goes to asyncio's handler."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._last: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == "socket.accept() out of system resource" and isinstance(exc, OSError):
            now = time.monotonic()
            if self._last is None or now - self._last >= self.every:
                self._last = now
                log.warning("cannot accept connections: %s; new connections wait until idle ones are closed "
                            "(serve.request_timeout_s); a higher open-file limit (ulimit -n) helps",
                            exc.strerror or exc)
            return
        loop.default_exception_handler(context)


async def _serve(session: LiveSession, settings: ServeSettings) -> None:
    loop = asyncio.get_running_loop()
    # The viewers' encoders run on the default executor: at a lower priority, so that where the CPU is short
    # the viewers lose frames, not the camera (the render loop and the virtual camera).
    loop.set_default_executor(encoder_executor())
    loop.set_exception_handler(_LoopErrors())
    app = make_app(session, settings)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise LivecamError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e} "
                           "(--host/--port, serve.host/serve.port)") from None
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # NotImplementedError on Windows, RuntimeError off the main thread: Ctrl-C still stops it there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    port = settings.port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port = int(address[1])
            break
    studio, viewer = urls(settings.host, port, settings.token)
    if settings.token:
        viewer = urls(settings.host, port, viewer_token(settings.token))[1]
    print(f"studio page: {studio}\nviewer: {viewer}", flush=True)
    if settings.token:
        log.info("the studio URL controls the camera and its exports: keep it to yourself; the viewer URL only "
                 "watches")
    try:
        while not stop.is_set() and not session.wait(0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await runner.cleanup()
