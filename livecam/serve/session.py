"""A live camera that a server drives: the loop on a background thread, live controls, newest frames, export.

`LiveSession` builds what `run_live` builds (source, tracker, segmenter, renderer) and runs `run_loop` on its
own thread, between two parts of its own: a `SwitchRenderer` around the engine (`switch_renderer`: the newest
raw camera frame, and rendering off) and a `LatestSink` (`latest_sink`: the newest frame, the listeners, the
fan-out to one more output).

Controls (`update`, `set_style`, ...) are thread-safe: a web handler calls them while the render thread runs,
and the engines pick the change up on their next frame (`set_look`, `set_style`, `set_identity`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from engine.background import BackgroundSettings
from engine.types import RGBImage
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.identity.store import data_dir, identities_dir, list_identities, load_identity
from livecam.live.capture import FrameSource
from livecam.live.frame import Frame
from livecam.live.outputs import open_sink
from livecam.live.stats import Stats
from livecam.serve.latest_sink import LatestSink
from livecam.serve.switch_renderer import SwitchRenderer

if TYPE_CHECKING:
    from livecam.stills.export import StillRun
    from livecam.stills.workbench import Workbench

log = logging.getLogger("livecam")

BACKGROUND_MODES = ("studio", "blur", "color", "image")
NO_BACKGROUND = "none"
"""Offered only when the config turns the background off (`background.enabled = false`)."""
START_TIMEOUT_S = 120.0
"""How long `start()` waits for the models to load and the loop to start (the diffusion engine's load)."""


class _Looks(Protocol):
    """Both engines' live backdrop control."""

    def set_look(self, background: BackgroundSettings, background_image: RGBImage | None = None) -> None: ...


class _Generative(Protocol):
    """The diffusion renderer's live controls (duck-typed, so this module never imports torch)."""

    def set_style(self, prompt: str) -> None: ...

    def set_identity(self, lora: Any, scale: float = 1.0) -> None: ...

    def set_keep_face(self, on: bool) -> None: ...


class LiveSession:
    """The live camera under a server's control. `start()` it, then use the controls from any thread;
    `close()` stops the loop and releases everything (also as a context manager)."""

    def __init__(self, config: Config, output: str | None = None, max_frames: int | None = None) -> None:
        self.config = config
        self.output = output
        self.max_frames = max_frames
        self.export_dir = _export_dir(config)
        self.viewers = 0
        """Connected WebRTC viewers; the server keeps it up to date."""
        self.run_stats = Stats()
        size = (config.output.width, config.output.height)
        self.size = size
        self._sink: LatestSink | None = None
        self._renderer: SwitchRenderer | None = None
        self._source: FrameSource | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._control = threading.Lock()
        self._export_lock = threading.Lock()
        self._workbench: Workbench | None = None
        self._style = config.engine.style
        self._identity = config.models.identity
        self._keep_face = config.engine.keep_face
        bg = config.background
        self._background = bg.mode if bg.enabled else NO_BACKGROUND
        self._pictures: dict[str, RGBImage] = {}
        self._pending_listeners: list[Callable[[Frame], None]] = []

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the models, open the input (and the extra output) and start the loop on its thread. Raises
        LivecamError (or what the build raised) when that fails; returns once the loop runs."""
        if self._thread is not None:
            raise RuntimeError("LiveSession.start() called twice")
        self._thread = threading.Thread(target=self._run, name="livecam-session", daemon=True)
        self._thread.start()
        while not self._ready.wait(0.1):
            if self._done.is_set() or not self._thread.is_alive():
                break
        else:
            return
        self._thread.join(timeout=START_TIMEOUT_S)
        error = self._error
        if error is not None:
            raise error
        raise LivecamError("the live camera stopped while starting")

    def _run(self) -> None:
        """The session thread: build everything (MediaPipe stays on the thread that uses it), run the loop."""
        from livecam.assembly import build_renderer, open_segmenter, open_source, open_tracker

        config = self.config
        stats = self.run_stats
        from livecam.live.loop import run_loop

        try:
            with ExitStack() as stack:
                # The full VAE too, so that a diffusion session's exports share its models (see export()).
                inner = build_renderer(config, stats, full_vae=True)
                stack.callback(inner.close)
                # Always segment, so the page can switch the background on even when the config starts without.
                segmenter = open_segmenter(config)
                stack.callback(segmenter.close)
                c = config.input
                reader = open_source(config)
                stack.callback(reader.close)
                fanout = None
                if self.output:
                    fps = config.output.fps if self.output == "virtualcam" else reader.fps
                    o = config.output
                    fanout = stack.enter_context(open_sink(self.output, self.size, fps, device=o.device,
                                                           backend=o.backend))
                sink = stack.enter_context(LatestSink(self.size, fanout))
                tracker = stack.enter_context(open_tracker(config))
                renderer = SwitchRenderer(inner, needs_mask=True)
                renderer.prepare()
                source = stack.enter_context(FrameSource(reader, pace=c.pace))
                with self._control:
                    self._sink, self._renderer, self._source = sink, renderer, source
                    for listener in self._pending_listeners:
                        sink.add_listener(listener)
                    self._pending_listeners.clear()
                    closed = self._closed
                if closed:
                    return
                log.info("%s -> web stream%s %dx%d, %s engine", reader.description,
                         f" and {self.output}" if self.output else "", *self.size, renderer.name)
                self._ready.set()
                run_loop(source, tracker, segmenter, renderer, sink, stats, self.max_frames,
                         predict=config.tracking.predict)
        except BaseException as e:  # handed to start() or to the server, which reports it
            self._error = e
            if self._ready.is_set():
                log.error("the live camera stopped: %s", e)
        finally:
            self._done.set()

    @property
    def running(self) -> bool:
        return self._ready.is_set() and not self._done.is_set()

    @property
    def error(self) -> BaseException | None:
        """What stopped the loop, or None (it runs, or the input ended, or `max_frames` were taken)."""
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the loop has ended; True when it has."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop the loop, release the input, models and outputs, and close the export models; runs once."""
        with self._control:
            if self._closed:
                return
            self._closed = True
            sink, source = self._sink, self._source
        if sink is not None:
            sink.request_stop()
        if source is not None:
            source.close()  # wakes the loop's wait for the next frame
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            if self._thread.is_alive():
                log.warning("the live camera thread did not stop within 30 s")
        with self._export_lock:
            if self._workbench is not None:
                self._workbench.close()
                self._workbench = None

    def __enter__(self) -> LiveSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- frames --------------------------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[Frame], None]) -> None:
        """Call `listener(frame)` with every published frame, on the render thread (keep it short)."""
        with self._control:
            if self._sink is None:
                self._pending_listeners.append(listener)
                return
            sink = self._sink
        sink.add_listener(listener)

    def remove_listener(self, listener: Callable[[Frame], None]) -> None:
        with self._control:
            if listener in self._pending_listeners:
                self._pending_listeners.remove(listener)
            sink = self._sink
        if sink is not None:
            sink.remove_listener(listener)

    def latest(self) -> Frame | None:
        """The newest published frame (the render, or the raw camera with rendering off)."""
        return self._sink.latest() if self._sink is not None else None

    def latest_raw(self) -> RGBImage | None:
        """The newest raw camera image, or None before the first frame. Do not modify it."""
        return self._renderer.latest_raw() if self._renderer is not None else None

    @property
    def frames_out(self) -> int:
        return self._sink.count if self._sink is not None else 0

    # --- controls ------------------------------------------------------------------------------------------

    @property
    def engine(self) -> str:
        return self._renderer.name if self._renderer is not None else self.config.engine.kind

    @property
    def backgrounds(self) -> list[str]:
        modes = [m for m in BACKGROUND_MODES if m != "image" or self.config.background.image]
        if not self.config.background.enabled:
            modes.append(NO_BACKGROUND)
        return modes

    def update(self, rendering: bool | None = None, style: str | None = None, identity: str | None = None,
               background: str | None = None, keep_face: bool | None = None) -> None:
        """Change any of the live settings (`keep_face`: the diffusion engine keeps your own face); everything
        is checked before anything changes (LivecamError naming the setting). Loading an identity's LoRA
        (diffusion) happens here, so call it off the event loop."""
        if style is not None and style not in self.config.styles:
            raise LivecamError(f"style {style!r}: no such style; styles: {', '.join(self.config.styles)}")
        if background is not None and background not in self.backgrounds:
            raise LivecamError(f"background {background!r}: must be one of {', '.join(self.backgrounds)}")
        if identity:
            self._check_identity(identity)
        with self._control:
            renderer = self._require_renderer()
            lora: Any = None
            if identity is not None and identity != self._identity and renderer.name == "diffusion":
                lora = self._load_lora(identity) if identity else None
            picture = self._picture(background or self._background) if background or style else None
            if rendering is not None:
                renderer.rendering = rendering
            if keep_face is not None:
                self._keep_face = keep_face
                if renderer.name == "diffusion":
                    cast(_Generative, renderer.inner).set_keep_face(keep_face)
            if identity is not None and identity != self._identity:
                self._identity = identity
                if renderer.name == "diffusion":
                    cast(_Generative, renderer.inner).set_identity(lora, self.config.engine.identity_scale)
            if style is not None:
                self._style = style
            if background is not None:
                self._background = background
            if style is not None or background is not None:
                cast(_Looks, renderer.inner).set_look(*self._look(picture))
            if renderer.name == "diffusion" and (style is not None or identity is not None):
                cast(_Generative, renderer.inner).set_style(self.config.styles[self._style].prompt(self._subject()))

    def set_rendering(self, on: bool) -> None:
        """Off: the raw camera frame, letterboxed to the output size, goes out instead of the render."""
        self.update(rendering=on)

    def set_style(self, name: str) -> None:
        """Style preset `name`: the diffusion prompt, and the studio backdrop colour (both engines)."""
        self.update(style=name)

    def set_identity(self, name: str) -> None:
        """Enrolled identity `name` ("" = none): fused into the diffusion engine; the likeness reference of
        exports with either engine."""
        self.update(identity=name)

    def set_background(self, mode: str) -> None:
        """studio, blur, color or image (when background.image is set), per [background]."""
        self.update(background=mode)

    def _require_renderer(self) -> SwitchRenderer:
        if self._renderer is None:
            raise LivecamError("the live camera has not started")
        return self._renderer

    def _check_identity(self, name: str) -> None:
        known = [i.name for i in list_identities()]
        if name not in known:
            raise LivecamError(f"identity {name!r}: not enrolled; identities: {', '.join(known) or 'none yet'}")

    def _load_lora(self, name: str) -> Any:
        from livecam.assembly import load_identity_lora

        return load_identity_lora(name)[0]

    def _subject(self) -> str:
        """Who the diffusion prompt pictures: the identity's trigger words, unless engine.subject was set."""
        from livecam.assembly import prompt_subject

        known = self._identity and self._identity in {i.name for i in list_identities()}
        return prompt_subject(self.config, load_identity(self._identity) if known else None)

    def _picture(self, mode: str) -> RGBImage | None:
        """background.image, read once, for mode "image"; None for the other modes."""
        if mode != "image":
            return None
        if "image" not in self._pictures:
            from livecam.assembly import background_picture

            picture = background_picture(dataclasses.replace(self.config.background, enabled=True, mode="image"))
            assert picture is not None
            self._pictures["image"] = picture
        return self._pictures["image"]

    def _look(self, picture: RGBImage | None) -> tuple[BackgroundSettings, RGBImage | None]:
        """The background settings for the current style and background mode."""
        from livecam.assembly import style_background

        bg = self.config.background
        if self._background == NO_BACKGROUND:
            bg = dataclasses.replace(bg, enabled=False)
        else:
            bg = dataclasses.replace(bg, enabled=True, mode=self._background)
        return style_background(bg, self.config.styles[self._style]), picture

    # --- reports -------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The live settings and what they may be set to."""
        renderer = self._renderer
        return {
            "engine": self.engine,
            "rendering": renderer.rendering if renderer is not None else True,
            "style": self._style,
            "identity": self._identity,
            "background": self._background,
            "keep_face": self._keep_face,
            "styles": [{"name": name, "label": style.label} for name, style in self.config.styles.items()],
            "identities": [{"name": i.name} for i in list_identities()],
            "backgrounds": self.backgrounds,
            "size": list(self.size),
        }

    def stats(self) -> dict[str, Any]:
        """fps (recent), latency p50/p95 (None before the first frame), frames out, engine, rendering, viewers."""
        sink = self._sink
        frames = sink.count if sink is not None else 0
        summary = self.run_stats.summary() if frames else None
        renderer = self._renderer
        return {
            "fps": round(sink.recent_fps(), 2) if sink is not None else 0.0,
            "latency_ms_p50": summary["latency_ms_p50"] if summary else None,
            "latency_ms_p95": summary["latency_ms_p95"] if summary else None,
            "frames_out": frames,
            "viewers": self.viewers,
            "engine": self.engine,
            "rendering": renderer.rendering if renderer is not None else True,
        }

    # --- export --------------------------------------------------------------------------------------------

    def export(self, styles: Sequence[str] | None = None, variants: int | None = None) -> StillRun:
        """Headshots from the newest camera frame, in `styles` (default: the current one), `variants` kept
        images per style (default serve.export_variants), with the current identity as the likeness
        reference, into `export_dir`. One export at a time (a second waits). LivecamError: no frame yet, no
        face in it, an unknown style, ..."""
        from livecam.stills.export import StillRequest, export_stills

        chosen = tuple(styles) if styles else (self._style,)
        unknown = [s for s in chosen if s not in self.config.styles]
        if unknown:
            raise LivecamError(f"style {unknown[0]!r}: no such style; styles: {', '.join(self.config.styles)}")
        with self._export_lock:
            raw = self.latest_raw()
            if raw is None:
                raise LivecamError("no camera frame yet: wait for the camera to start")
            identity = self._identity if self._identity in {i.name for i in list_identities()} else ""
            request = StillRequest(photo=None, frame=raw.copy(), styles=chosen, identity=identity,
                                   variants=variants or self.config.serve.export_variants, out=self.export_dir)
            bench = self._open_workbench()
            live = self._live_diffusion()
            if live is None:
                return export_stills(request, self.config, bench, progress=False)
            # The stills run on the live models: the live engine holds still meanwhile (one GPU, one set of
            # weights, and the still may fuse another identity into them); the outputs keep the last frame.
            renderer = self._require_renderer()
            with renderer.paused():
                with self._control:
                    live.sync()  # the weights now hold the identity last set live
                    bench.assume_identity(self._identity)
                try:
                    return export_stills(request, self.config, bench, progress=False)
                finally:
                    if bench.identity != self._identity:
                        live.reclaim_weights()
                        bench.assume_identity(self._identity)

    def _live_diffusion(self) -> Any:
        """The live diffusion renderer when it runs (a `DiffusionRenderer`, duck-typed), else None."""
        renderer = self._renderer
        if renderer is None or renderer.name != "diffusion":
            return None
        return renderer.inner

    def _open_workbench(self) -> Workbench:
        """The still models, opened at the first export and kept for the next ones (under the export lock).
        With the diffusion engine live they are the live models (nothing more is loaded)."""
        if self._workbench is None:
            from livecam.assembly import open_workbench

            live = self._live_diffusion()
            self._workbench = open_workbench(self.config, "diffusion" if live is not None else "studio", live=live)
        return self._workbench


def _export_dir(config: Config) -> Path:
    """serve.export_dir, else <data dir>/exports; never the identities folder, inside it or above it (the
    server hands out files from the export folder, and selfies and LoRAs must never be among them)."""
    folder = Path(config.serve.export_dir).expanduser() if config.serve.export_dir else data_dir() / "exports"
    folder = folder.resolve()
    private = identities_dir().resolve()
    if folder == private or folder.is_relative_to(private) or private.is_relative_to(folder):
        raise LivecamError(f"serve.export_dir = {str(folder)!r}: must not be or contain the identities folder "
                           f"{private} (it holds your selfies and identity weights)")
    return folder
