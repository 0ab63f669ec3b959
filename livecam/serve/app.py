"""`livecam serve`: the studio page, its JSON API and the WebRTC stream for webinar viewers (aiohttp + aiortc).

    GET  /                      the studio page (livecam/serve/web/studio.html)
    GET  /view                  the viewer page (livecam/serve/web/viewer.html)
    GET  /static/NAME           a file directly in livecam/serve/web/
    GET  /api/state             the live settings and their choices
    POST /api/settings          change rendering, style, identity, background
    GET  /api/stats             fps, latency, frames, viewers
    POST /api/offer             a viewer's SDP offer -> the answer (its own peer connection)
    POST /api/export            headshots from the current frame
    GET  /exports/RUN/FILE      an exported file (only from the export folder)

Security: with a token (always, off a loopback address) every request must carry it, as
`Authorization: Bearer TOKEN` or `?token=TOKEN`. A viewer token derived from it (`viewer_token`, printed in the
viewer URL) opens only the viewer page, the static files, /api/state and /api/offer, so the audience's link
cannot change the camera or export. A page opened with a token gets that token as a strict same-site, HttpOnly
cookie as well, so the page's own stylesheet and script load (the cookie is taken for GET requests only, never
for a request that changes something). Without a token (loopback only) the Host header must name this computer
(against DNS rebinding), and a cross-origin POST is refused. Every error is JSON
`{"error": "..."}`; no traceback is ever sent.

Limits (see `make_runner`): a request's headers and body must arrive within `serve.request_timeout_s` and an
idle connection is closed after it, so idle or half-sent connections cannot hold the open files; viewers'
offers that are not connected after `serve.offer_timeout_s` are closed, and only so many may be connecting at
once (per client and in all). A client's mistake (a malformed request, bad JSON, bad SDP) is answered and
logged at debug level only, without a traceback; viewers' addresses are logged at debug level only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from livecam.config import Config, ServeSettings
from livecam.errors import LivecamError
from livecam.identity.store import identities_dir
from livecam.live.frame import Frame
from livecam.serve.session import LiveSession
from livecam.serve.webrtc import LatestFrameTrack, OfferError, Viewers, client_key, encoder_executor, ice_servers
from livecam.stills.provenance import read_disclosure

log = logging.getLogger("livecam")
http_log = logging.getLogger("livecam.http")
"""aiohttp's own messages about connections and malformed requests (its `logger`): see `_ClientMistakes`."""

WEB_DIR = Path(__file__).resolve().parent / "web"
NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""A file or folder name the server accepts in a URL: no slash, no other characters."""
EXPORT_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".json": "application/json"}
MAX_EXPORT_VARIANTS = 8
COOKIE = "livecam_token"
SETTINGS_TYPES: dict[str, type] = {"rendering": bool, "style": str, "identity": str, "background": str}
LINGER_S = 2.0
"""After answering a request whose body was not read (401, 413), read and drop the rest of it this long at most,
so the client gets the answer rather than a reset connection."""
OPEN_FILES = 4096
"""`livecam serve` raises its soft open-file limit to this (or to the hard limit, if lower): macOS starts
processes at 256, which a few hundred connections use up."""
QUIET_LIBRARIES = ("aiortc", "aioice")
"""Their INFO messages name every viewer's address and port, per connection: shown only when livecam logs at
debug level."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiError(Exception):
    """An error answered as JSON {"error": message} with `status` (raised by handlers and checks)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error(status: int, message: str, **headers: str) -> ApiError:
    return ApiError(status, message, headers)


@dataclasses.dataclass
class _Server:
    """What the handlers share: the session, the settings, and (once started) the track and the viewers."""

    session: LiveSession
    settings: ServeSettings
    web_dir: Path
    track: LatestFrameTrack | None = None
    viewers: Viewers | None = None
    listener: Callable[[Frame], None] | None = None

    @property
    def token(self) -> str:
        return self.settings.token


SERVER = web.AppKey("livecam_server", _Server)


def make_app(session: LiveSession, settings: ServeSettings, web_dir: Path = WEB_DIR) -> web.Application:
    """The web app for `session`. `settings.token` non-empty: every request needs it (see the module doc).

    Start it on a running event loop (web.run_app, AppRunner); the WebRTC track is made at start-up and the
    peer connections are closed at shutdown. The session itself is the caller's to close.
    """
    app = web.Application(middlewares=[_errors, _guard], client_max_size=settings.max_body_kb * 1024)
    app[SERVER] = _Server(session, settings, web_dir)
    app.router.add_get("/", functools.partial(_page, name="studio.html"))
    app.router.add_get("/view", functools.partial(_page, name="viewer.html"))
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/state", _state)
    app.router.add_post("/api/settings", _settings)
    app.router.add_get("/api/stats", _stats)
    app.router.add_post("/api/offer", _offer)
    app.router.add_post("/api/export", _export)
    app.router.add_get("/exports/{run}/{file}", _download)
    app.on_startup.append(_start)
    app.on_shutdown.append(_shutdown)
    app.on_response_prepare.append(_headers)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner for `app` (from `make_app`), with the server's limits: a connection whose request headers do
    not arrive within `serve.request_timeout_s`, or that stays idle that long between requests, is closed
    (aiohttp's keep-alive timer runs from the moment a connection is accepted, and until a complete request
    has arrived); no access log (URLs carry tokens); aiohttp's messages about malformed requests without a
    traceback (`_ClientMistakes`)."""
    timeout = app[SERVER].settings.request_timeout_s
    return web.AppRunner(app, access_log=None, keepalive_timeout=timeout, lingering_time=min(LINGER_S, timeout),
                         logger=http_log)


class _ClientMistakes(logging.Filter):
    """aiohttp logs a malformed request ("Error handling request from ADDRESS") with its traceback, at error
    level: it is the client's mistake, not the server's, so it is shown only at debug level, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not http_log.isEnabledFor(logging.DEBUG):
            return False
        record.msg = f"{record.msg}: %s"
        record.args = (*(record.args if isinstance(record.args, tuple) else ()),
                       " ".join(str(exc.message).split())[:160] or type(exc).__name__)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


http_log.addFilter(_ClientMistakes())


def quiet_libraries() -> None:
    """aiortc's and aioice's INFO messages (every viewer's address and port, six lines per viewer) at WARNING
    unless livecam logs at debug level: the README promises no access log."""
    level = logging.NOTSET if log.isEnabledFor(logging.DEBUG) else logging.WARNING
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(level)


# --- start and stop --------------------------------------------------------------------------------------------

async def _start(app: web.Application) -> None:
    server = app[SERVER]
    track = LatestFrameTrack()
    s = server.settings
    server.track = track
    server.viewers = Viewers(track, ice_servers(s.ice_server_urls, s.ice_username, s.ice_credential),
                             offer_timeout=s.offer_timeout_s, max_pending=s.max_pending_offers,
                             max_pending_per_client=s.max_pending_offers_per_client)
    quiet_libraries()

    def publish(frame: Frame) -> None:
        track.publish(frame.image)

    server.listener = publish
    server.session.add_listener(publish)


async def _shutdown(app: web.Application) -> None:
    server = app[SERVER]
    if server.listener is not None:
        server.session.remove_listener(server.listener)
    if server.viewers is not None:
        await server.viewers.close()
    if server.track is not None:
        server.track.stop()
    server.session.viewers = 0


# --- middlewares -----------------------------------------------------------------------------------------------

@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON {"error": ...}; an unexpected exception is logged here and never shown."""
    try:
        return await handler(request)
    except ApiError as e:
        return web.json_response({"error": e.message}, status=e.status, headers=e.headers)
    except web.HTTPException as e:  # aiohttp's own: no route (404), wrong method (405), body too large (413)
        if e.status < 400:
            raise
        message = e.text if e.status == 413 and e.text else e.reason
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return web.json_response({"error": message or "error"}, status=e.status, headers=headers)
    except Exception:
        log.exception("error in %s %s", request.method, request.path)
        return web.json_response({"error": "internal server error (the server's log has the details)"}, status=500)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token, the Host and Origin checks, and the body size, before any handler runs."""
    server = request.app[SERVER]
    if server.token:
        given = _given_token(request)
        if given is None:
            raise error(401, "this server needs its access token: open the URL it printed (with ?token=...), or "
                             "send 'Authorization: Bearer TOKEN'", **{"WWW-Authenticate": 'Bearer realm="livecam"'})
        full = secrets.compare_digest(given.encode(), server.token.encode())
        viewer = secrets.compare_digest(given.encode(), viewer_token(server.token).encode())
        if not full and not (viewer and _viewer_may(request)):
            raise error(401, "wrong access token" if not viewer else "the viewer token gives the viewer page only",
                        **{"WWW-Authenticate": 'Bearer realm="livecam"'})
    else:
        # No token means a loopback bind: only a browser on this computer that asked for it by name.
        host = urlsplit(f"//{request.host}").hostname or ""
        if not is_loopback(host):
            raise error(403, f"host {request.host!r} refused: this server answers to localhost only")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            raise error(403, f"cross-origin request from {origin} refused")
    max_bytes = server.settings.max_body_kb * 1024
    if request.content_length is not None and request.content_length > max_bytes:
        raise error(413, f"request body of {request.content_length} bytes is over the limit of {max_bytes} "
                         "(serve.max_body_kb)")
    response = await handler(request)
    page_token = request.query.get("token", "")
    if server.token and page_token and request.path in ("/", "/view") and response.status == 200:
        # The page's stylesheet, script and download links cannot carry a header: the cookie carries the token
        # the page was opened with (the viewer's, on the viewer page) for them (GET only; SameSite=Strict keeps
        # other sites' pages from sending it).
        response.set_cookie(COOKIE, page_token, httponly=True, samesite="Strict", path="/")
    return response


def viewer_token(token: str) -> str:
    """The viewer token derived from `token`: it opens the viewer page and its stream, nothing else."""
    digest = hmac.new(token.encode(), b"livecam viewer", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]


def _viewer_may(request: web.Request) -> bool:
    """What a viewer token opens: the viewer page, the static files, the state (for the ICE servers), an offer."""
    if request.method in ("GET", "HEAD"):
        return request.path == "/view" or request.path.startswith("/static/") or request.path == "/api/state"
    return request.method == "POST" and request.path == "/api/offer"


def _given_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    if "token" in request.query:
        return request.query["token"]
    if request.method in ("GET", "HEAD") and COOKIE in request.cookies:
        return request.cookies[COOKIE]
    return None


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # the token is in the page's URL
    response.headers.setdefault("Cache-Control", "no-store")


# --- pages and static files ------------------------------------------------------------------------------------

async def _page(request: web.Request, name: str) -> web.StreamResponse:
    return _web_file(request.app[SERVER].web_dir, name)


async def _static(request: web.Request) -> web.StreamResponse:
    return _web_file(request.app[SERVER].web_dir, request.match_info["name"])


def _web_file(folder: Path, name: str) -> web.FileResponse:
    """A file directly in `folder` (no subfolder, no hidden file, no link out of it), or 404."""
    if not NAME.fullmatch(name) or name.startswith("."):
        raise error(404, f"no such file: {name}")
    root = folder.resolve()
    path = folder / name
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise error(404, f"no such file: {name}") from None
    if resolved.parent != root or not resolved.is_file():
        raise error(404, f"no such file: {name}")
    return web.FileResponse(resolved)


# --- the API ---------------------------------------------------------------------------------------------------

async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's body, a JSON object. 408 when it does not arrive within serve.request_timeout_s, 400 for
    anything else a client can get wrong (cut off, not UTF-8, not JSON, nested too deep, not an object)."""
    timeout = request.app[SERVER].settings.request_timeout_s
    try:
        async with asyncio.timeout(timeout):
            data = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge, answered as 413
    except TimeoutError:
        # aiohttp then reads what is left of it for LINGER_S at most, and closes the connection.
        raise error(408, f"the request body did not arrive within {timeout:g} s (serve.request_timeout_s)"
                    ) from None
    except (web.RequestPayloadError, ConnectionError) as e:  # a broken chunked/compressed body, or a hang-up
        raise error(400, f"the request body could not be read: {e}") from None
    try:
        text = data.decode("utf-8")  # JSON is UTF-8 (RFC 8259); a charset in Content-Type is not taken
    except UnicodeDecodeError:
        raise error(400, "the body is not UTF-8 text") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(400, f"the body is not JSON: {e}") from None
    except RecursionError:
        raise error(400, "the body's JSON is nested too deeply") from None
    except ValueError as e:  # a number over Python's 4300-digit limit
        raise error(400, f"the body's JSON has a value that cannot be read: {str(e).split(':')[0]}") from None
    if not isinstance(body, dict):
        raise error(400, "the body must be a JSON object")
    return body


def _shown(value: object, limit: int = 40) -> str:
    """`value` (from a request body) for an error message: short, and no repr of a nested structure (which
    could be too deep to print)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


async def _state(request: web.Request) -> web.Response:
    return web.json_response(_state_of(request.app[SERVER]))


def _state_of(server: _Server) -> dict[str, Any]:
    ice: list[dict[str, str]] = []
    s = server.settings
    for url in s.ice_server_urls:
        entry = {"urls": url}
        if url.startswith(("turn:", "turns:")) and s.ice_username:
            entry.update(username=s.ice_username, credential=s.ice_credential)
        ice.append(entry)
    share = f"/view?token={viewer_token(s.token)}" if s.token else "/view"
    return {**server.session.state(), "ice_servers": ice, "viewer_url": "/view", "viewer_share_url": share}


async def _settings(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    body = await _json_object(request)
    for key, value in body.items():
        kind = SETTINGS_TYPES.get(key)
        if kind is None:
            raise error(400, f"unknown setting {_shown(key)}; settings: {', '.join(SETTINGS_TYPES)}")
        if not isinstance(value, kind):
            raise error(400, f"{key}: must be {'true or false' if kind is bool else 'a string'}, got {_shown(value)}")
    loop = asyncio.get_running_loop()
    try:
        # An identity's LoRA is loaded from disk (diffusion): not on the event loop.
        await loop.run_in_executor(None, functools.partial(server.session.update, **body))
    except LivecamError as e:
        raise error(400, str(e)) from None
    return web.json_response(_state_of(server))


async def _stats(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    _count_viewers(server)
    return web.json_response(server.session.stats())


def _count_viewers(server: _Server) -> None:
    if server.viewers is not None:
        server.session.viewers = server.viewers.connected


async def _offer(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    body = await _json_object(request)
    sdp, kind = body.get("sdp"), body.get("type")
    if not isinstance(sdp, str) or not sdp.strip():
        raise error(400, "sdp: must be the offer's SDP text")
    if not isinstance(kind, str):
        raise error(400, "type: must be 'offer'")
    if server.viewers is None:
        raise error(503, "the server is starting")
    try:
        answer = await server.viewers.answer(sdp, kind, client_key(request.remote))
    except OfferError as e:
        retry = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else {}
        raise ApiError(e.status, str(e), retry) from None
    _count_viewers(server)
    return web.json_response({"sdp": answer.sdp, "type": answer.type})


async def _export(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    session = server.session
    body = await _json_object(request)
    unknown = [k for k in body if k not in ("styles", "variants")]
    if unknown:
        raise error(400, f"unknown key {_shown(unknown[0])}; keys: styles, variants")
    styles = body.get("styles")
    if styles is not None:
        if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
            raise error(400, "styles: must be a list of style names")
        bad = [s for s in styles if s not in session.config.styles]
        if bad:
            raise error(400, f"styles: no style {_shown(bad[0])}; styles: {', '.join(session.config.styles)}")
    variants = body.get("variants")
    if variants is not None and (isinstance(variants, bool) or not isinstance(variants, int)
                                 or not 1 <= variants <= MAX_EXPORT_VARIANTS):
        raise error(400, f"variants: must be a whole number from 1 to {MAX_EXPORT_VARIANTS}, got {_shown(variants)}")
    loop = asyncio.get_running_loop()
    try:
        run = await loop.run_in_executor(None, session.export, styles or None, variants)
    except LivecamError as e:
        raise error(422, str(e)) from None
    return web.json_response(_describe_run(run.folder, run.report))


def _describe_run(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The export's answer: the kept images with their download URLs and disclosure fields."""
    run = folder.name
    images = []
    for entry in report["candidates"]:
        if not entry.get("kept") or not entry.get("file"):
            continue
        images.append({
            "file": entry["file"],
            "url": f"/exports/{run}/{entry['file']}",
            "style": entry["style"],
            "variant": entry["variant"],
            "likeness": entry["figures"].get("likeness"),
            "disclosure": read_disclosure(folder / entry["file"]),
            "crops": [{"platform": c["platform"], "file": c["file"], "url": f"/exports/{run}/{c['file']}"}
                      for c in entry.get("crops", []) if c.get("file")],
        })
    sheet = report.get("contact_sheet")
    return {
        "run": run,
        "kept": report["summary"]["kept"],
        "tried": report["summary"]["tried"],
        "seconds": report["seconds"],
        "images": images,
        "report_url": f"/exports/{run}/report.json",
        "contact_sheet_url": f"/exports/{run}/{sheet}" if sheet else None,
    }


async def _download(request: web.Request) -> web.StreamResponse:
    """An exported file: names checked, the resolved path inside the export folder (no link out of it) and
    outside the identities folder, images as attachments."""
    server = request.app[SERVER]
    run, name = request.match_info["run"], request.match_info["file"]
    for part in (run, name):
        if not NAME.fullmatch(part) or part.startswith("."):
            raise error(404, "no such export file")
    suffix = Path(name).suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise error(404, "no such export file")
    root = server.session.export_dir.resolve()
    try:
        resolved = (root / run / name).resolve(strict=True)
    except (OSError, RuntimeError):
        raise error(404, "no such export file") from None
    private = identities_dir().resolve()
    if resolved.parent.parent != root or resolved.is_relative_to(private) or not resolved.is_file():
        raise error(403, "refused: not an exported file")
    headers = {"Content-Type": EXPORT_SUFFIXES[suffix]}
    if suffix != ".json":
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return web.FileResponse(resolved, headers=headers)


# --- livecam serve ---------------------------------------------------------------------------------------------

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
