"""What guards `livecam serve` against its clients, around every handler: the access token, the Host and Origin
checks and the body size limit (`guard`), every error answered as JSON (`errors`), the security headers of every
response (`security_headers`); and what keeps clients' mistakes and addresses out of the server's log.

Security: with a token (always, off a loopback address) every request must carry it, as
`Authorization: Bearer TOKEN` or `?token=TOKEN`. A viewer token derived from it (`viewer_token`, printed in the
viewer URL) opens only the viewer page, the static files, /api/state and /api/offer, so the audience's link
cannot change the camera or export. A page opened with a token gets that token as a strict same-site, HttpOnly
cookie as well, so the page's own stylesheet and script load (the cookie is taken for GET requests only, never
for a request that changes something). Without a token (loopback only) the Host header must name this computer
(against DNS rebinding), and a cross-origin POST is refused. Every error is JSON
`{"error": "..."}`; no traceback is ever sent.

Logging: a client's mistake (a malformed request) is logged at debug level only, without a traceback
(`http_log`, the logger the runner gives aiohttp); viewers' addresses are logged at debug level only
(`quiet_libraries`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from livecam.config import ServeSettings

log = logging.getLogger("livecam")
http_log = logging.getLogger("livecam.http")
"""aiohttp's own messages about connections and malformed requests (its `logger`): see `_ClientMistakes`."""

COOKIE = "livecam_token"
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

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close
        """Hang up after the answer: the request's body could not be read, and aiohttp, left to read the rest
        of it after the answer, would meet the same error again and log it as an unhandled exception."""


def error(status: int, message: str, **headers: str) -> ApiError:
    return ApiError(status, message, headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON {"error": ...}; an unexpected exception is logged here and never shown."""
    try:
        return await handler(request)
    except ApiError as e:
        response = web.json_response({"error": e.message}, status=e.status, headers=e.headers)
        if e.close:
            response.force_close()
            with contextlib.suppress(ConnectionError):  # the client may be gone already
                await response.prepare(request)
                await response.write_eof()
            request.protocol.force_close()
        return response
    except web.HTTPException as e:  # aiohttp's own: no route (404), wrong method (405), body too large (413)
        if e.status < 400:
            raise
        message = e.text if e.status == 413 and e.text else e.reason
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return web.json_response({"error": message or "error"}, status=e.status, headers=headers)
    except Exception:
        log.exception("error in %s %s", request.method, request.path)
        return web.json_response({"error": "internal server error (the server's log has the details)"}, status=500)


def guard(settings: ServeSettings) -> Middleware:
    """The middleware that checks the token, the Host and Origin, and the body size (per `settings`) before
    any handler runs, and hands a page opened with the token its cookie."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if settings.token:
            given = _given_token(request)
            if given is None:
                raise error(401, "this server needs its access token: open the URL it printed (with ?token=...), "
                                 "or send 'Authorization: Bearer TOKEN'",
                            **{"WWW-Authenticate": 'Bearer realm="livecam"'})
            full = secrets.compare_digest(given.encode(), settings.token.encode())
            viewer = secrets.compare_digest(given.encode(), viewer_token(settings.token).encode())
            if not full and not (viewer and _viewer_may(request)):
                message = "wrong access token" if not viewer else "the viewer token gives the viewer page only"
                raise error(401, message, **{"WWW-Authenticate": 'Bearer realm="livecam"'})
        else:
            # No token means a loopback bind: only a browser on this computer that asked for it by name.
            host = urlsplit(f"//{request.host}").hostname or ""
            if not is_loopback(host):
                raise error(403, f"host {request.host!r} refused: this server answers to localhost only")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
                raise error(403, f"cross-origin request from {origin} refused")
        max_bytes = settings.max_body_kb * 1024
        if request.content_length is not None and request.content_length > max_bytes:
            raise error(413, f"request body of {request.content_length} bytes is over the limit of {max_bytes} "
                             "(serve.max_body_kb)")
        response = await handler(request)
        page_token = request.query.get("token", "")
        if settings.token and page_token and request.path in ("/", "/view") and response.status == 200:
            # The page's stylesheet, script and download links cannot carry a header: the cookie carries the
            # token the page was opened with (the viewer's, on the viewer page) for them (GET only;
            # SameSite=Strict keeps other sites' pages from sending it).
            response.set_cookie(COOKIE, page_token, httponly=True, samesite="Strict", path="/")
        return response

    return check


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


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # the token is in the page's URL
    response.headers.setdefault("Cache-Control", "no-store")


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
