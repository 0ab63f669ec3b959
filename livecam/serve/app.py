"""`livecam serve`'s web app: the studio page, its JSON API and the WebRTC stream for webinar viewers (aiohttp +
aiortc), as routes and their handlers.

    GET  /                      the studio page (livecam/serve/web/studio.html)
    GET  /view                  the viewer page (livecam/serve/web/viewer.html)
    GET  /static/NAME           a file directly in livecam/serve/web/
    GET  /static/vendor/janus.js  Janus's JavaScript library (publish.janus_js), for the viewer page
    GET  /api/state             the live settings and their choices
    POST /api/settings          change rendering, style, identity, background, keep_face
    GET  /api/stats             fps, latency, frames, viewers
    POST /api/offer             a viewer's SDP offer -> the answer (its own peer connection)
    POST /api/export            headshots from the current frame
    GET  /exports/RUN/FILE      an exported file (only from the export folder)

Every request passes the guards first (`livecam.serve.guards`: the access token, Host and Origin, the body size;
every error as JSON `{"error": "..."}`, never a traceback); `livecam.serve.runner` runs the app with the
server's connection limits. A request's body must arrive within `serve.request_timeout_s`; viewers' offers that
are not connected after `serve.offer_timeout_s` are closed, and only so many may be connecting at once (per
client and in all). A client's mistake (bad JSON, bad SDP) is answered, and never logged with a traceback.

With [publish] url set, the app also publishes the track to Janus (`livecam.serve.publish`), and the viewer page
(publish.viewers = "janus") takes the stream from the Janus room instead: /api/state tells it where.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from livecam.config import PublishSettings, ServeSettings
from livecam.errors import LivecamError
from livecam.identity.store import identities_dir
from livecam.live.frame import Frame
from livecam.serve.guards import ApiError, error, errors, guard, quiet_libraries, security_headers, viewer_token
from livecam.serve.publish import JanusPublisher
from livecam.serve.session import LiveSession
from livecam.serve.webrtc import LatestFrameTrack, OfferError, Viewers, client_key, ice_servers
from livecam.stills.provenance import read_disclosure

log = logging.getLogger("livecam")

WEB_DIR = Path(__file__).resolve().parent / "web"
NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""A file or folder name the server accepts in a URL: no slash, no other characters."""
EXPORT_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".json": "application/json"}
MAX_EXPORT_VARIANTS = 8
SETTINGS_TYPES: dict[str, type] = {"rendering": bool, "style": str, "identity": str, "background": str,
                                   "keep_face": bool}


@dataclasses.dataclass
class _Server:
    """What the handlers share: the session, the settings, and (once started) the track and the viewers."""

    session: LiveSession
    settings: ServeSettings
    web_dir: Path
    publish: PublishSettings
    track: LatestFrameTrack | None = None
    viewers: Viewers | None = None
    listener: Callable[[Frame], None] | None = None
    publisher: JanusPublisher | None = None


SERVER = web.AppKey("livecam_server", _Server)


def make_app(session: LiveSession, settings: ServeSettings, web_dir: Path = WEB_DIR,
             publish: PublishSettings | None = None) -> web.Application:
    """The web app for `session`. `settings.token` non-empty: every request needs it (see `guards`). `publish`
    (default: the session's config's [publish]): with its url set, the stream also goes to Janus.

    Start it on a running event loop (web.run_app, AppRunner); the WebRTC track is made at start-up and the
    peer connections are closed at shutdown. The session itself is the caller's to close.
    """
    app = web.Application(middlewares=[errors, guard(settings)], client_max_size=settings.max_body_kb * 1024)
    app[SERVER] = _Server(session, settings, web_dir, session.config.publish if publish is None else publish)
    app.router.add_get("/", functools.partial(_page, name="studio.html"))
    app.router.add_get("/view", functools.partial(_page, name="viewer.html"))
    app.router.add_get("/static/vendor/janus.js", _janus_js)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/state", _state)
    app.router.add_post("/api/settings", _settings)
    app.router.add_get("/api/stats", _stats)
    app.router.add_post("/api/offer", _offer)
    app.router.add_post("/api/export", _export)
    app.router.add_get("/exports/{run}/{file}", _download)
    app.on_startup.append(_start)
    app.on_shutdown.append(_shutdown)
    app.on_response_prepare.append(security_headers)
    return app


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
    if server.publish.url:
        server.publisher = JanusPublisher(server.publish, server.viewers.subscription)
        server.publisher.start()
        if server.publish.viewers == "janus" and not Path(server.publish.janus_js).is_file():
            log.warning("publish: Janus's JavaScript library is not at %s (publish.janus_js; Debian: apt-get install "
                        "libjs-janus-gateway): the viewer page takes the stream from livecam itself",
                        server.publish.janus_js)


async def _shutdown(app: web.Application) -> None:
    server = app[SERVER]
    if server.publisher is not None:
        await server.publisher.stop()
    if server.listener is not None:
        server.session.remove_listener(server.listener)
    if server.viewers is not None:
        await server.viewers.close()
    if server.track is not None:
        server.track.stop()
    server.session.viewers = 0


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


async def _janus_js(request: web.Request) -> web.StreamResponse:
    path = Path(request.app[SERVER].publish.janus_js)
    if not path.is_file():
        raise error(404, "Janus's JavaScript library is not installed (publish.janus_js; Debian: libjs-janus-gateway)")
    return web.FileResponse(path, headers={"Content-Type": "text/javascript"})


# --- the API ---------------------------------------------------------------------------------------------------

async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's body, a JSON object. 408 when it does not arrive within serve.request_timeout_s, 400 for
    anything else a client can get wrong (cut off, not UTF-8, not JSON, nested too deep, not an object)."""
    timeout = request.app[SERVER].settings.request_timeout_s
    try:
        async with asyncio.timeout(timeout):
            data = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge, answered as 413
    except TimeoutError:
        # aiohttp then reads what is left of it for the runner's LINGER_S at most, and closes the connection.
        raise error(408, f"the request body did not arrive within {timeout:g} s (serve.request_timeout_s)"
                    ) from None
    except (web.RequestPayloadError, ConnectionError) as e:  # a broken chunked/compressed body, or a hang-up
        raise ApiError(400, f"the request body could not be read: {e}", close=True) from None
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
    return {**server.session.state(), "ice_servers": ice, "viewer_url": "/view", "viewer_share_url": share,
            "janus": _janus_for_viewers(server)}


def _janus_for_viewers(server: _Server) -> dict[str, Any] | None:
    """Where the viewer page subscribes while publishing (publish.viewers = "janus" and Janus's JS library
    installed), else None: Janus's API as browsers reach it, the room, its PIN, the viewers' Janus token and the
    publisher's name. Never the API secret nor livecam's own token."""
    p = server.publish
    if not p.url or p.viewers != "janus" or not Path(p.janus_js).is_file():
        return None
    endpoint, room = p.janus_api
    return {"server": p.viewer_url or endpoint, "room": room, "pin": p.pin, "token": p.viewer_token,
            "display": p.display, "script": "static/vendor/janus.js"}


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
    publisher = server.publisher
    return web.json_response({**server.session.stats(),
                              "publish": publisher.status() if publisher is not None else None})


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
    """The export's answer: the kept images with their download URLs and disclosure fields, and what to do about
    the rejected ones (plain advice, most frequent first)."""
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
        "advice": [a["advice"] for a in report["summary"].get("advice", [])],
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
