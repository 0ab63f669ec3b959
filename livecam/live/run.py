"""Assemble the live camera from config: models, source, tracker, segmenter, renderer, sink; run; report."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.diffusion_settings import DiffusionSettings
from engine.studio import StudioRenderer
from engine.types import FaceEncoder, Renderer, RGBImage, Sections
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.identity.store import Identity, resolve_identity_lora
from livecam.live.capture import FrameSource, Reader, open_reader
from livecam.live.loop import run_loop
from livecam.live.outputs import open_sink
from livecam.live.outputs.base import FrameSink, check_output, check_writable_file, input_path, same_file
from livecam.live.outputs.video_file import VideoFileSink
from livecam.live.stats import Stats, write_json
from models.face_landmarker import MediaPipeFaceTracker
from models.registry import FACE_LANDMARKER, SELFIE_SEGMENTER, ModelFile
from models.store import ModelUnavailable, model_dir, resolve

if TYPE_CHECKING:
    from engine.denoiser import DiffusionComponents
    from engine.diffusion import LikenessCheck

log = logging.getLogger("livecam")


def resolve_model(config: Config, model: ModelFile) -> Path:
    """The local file of `model` per config; a LivecamError that says how to get it otherwise."""
    override = getattr(config.models, model.name)
    try:
        return resolve(model, model_dir(config.models.dir), override, config.models.download)
    except ModelUnavailable as e:
        raise LivecamError(str(e)) from None


def build_renderer(config: Config, sections: Sections) -> Renderer:
    """The renderer for `config`, not yet prepared.

    `engine.kind = "auto"` takes the diffusion engine when the diffusion extra is installed, a CUDA GPU is
    there and the models are already downloaded; otherwise the studio engine, with one log line saying why.
    """
    studio = build_studio(config, sections)
    kind = config.engine.kind
    if kind == "studio":
        return studio
    if kind == "auto":
        reason = _diffusion_unavailable(config)
        if reason is not None:
            log.info("engine auto: the studio engine (%s)", reason)
            return studio
    try:
        return build_diffusion(config, studio, sections, download=config.models.download if kind == "diffusion"
                               else False)
    except LivecamError as e:
        if kind == "diffusion":
            raise
        log.info("engine auto: the studio engine (%s)", e)
        return studio


def _diffusion_unavailable(config: Config) -> str | None:
    """Why `auto` cannot pick the diffusion engine without loading anything, or None."""
    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError:
        return "the diffusion extra is not installed: pip install -e \".[diffusion]\""
    if config.models.device == "cpu" or (config.models.device == "auto" and not torch.cuda.is_available()):
        return "no CUDA GPU; the diffusion engine needs one for live frame rates"
    return None


def build_diffusion(config: Config, studio: StudioRenderer, sections: Sections, download: bool) -> Renderer:
    """The diffusion renderer around `studio`, with its models loaded (LivecamError when they cannot be)."""
    try:
        from engine.diffusion import DiffusionRenderer
        from models.diffusion import licence_warning, load_lora
    except ImportError as e:
        raise LivecamError(f"the diffusion engine needs the diffusion extra ({e.name} is missing): "
                           "pip install -e \".[diffusion]\"") from None
    m = config.models
    try:
        identity, subject, enrolled = None, config.engine.subject, None
        if m.identity:
            lora_path, enrolled = resolve_identity_lora(m.identity)
            identity = load_lora(lora_path)
            if enrolled is not None and subject == DiffusionSettings().subject:
                subject = enrolled.subject  # the trigger words the LoRA was trained with
                log.info("identity %s (prompt subject %r)", enrolled.name, subject)
    except ModelUnavailable as e:
        raise LivecamError(f"models.identity = {m.identity!r}: {e}") from None
    log.info("loading the diffusion models (%s)...", m.base)
    components = diffusion_components(config, controlnet=m.controlnet, tiny_vae=m.tiny_vae, vae=m.vae,
                                      download=download)
    warning = licence_warning(m.base)
    if warning:
        log.warning("%s", warning)
    prompt = config.styles[config.engine.style].prompt(subject)
    check = _likeness_check(config, enrolled) if identity is not None and enrolled is not None else None
    return DiffusionRenderer(components, config.engine.diffusion, studio, prompt, identity, sections=sections,
                             likeness_check=check)


def _likeness_check(config: Config, identity: Identity) -> LikenessCheck | None:
    """The periodic likeness check for an enrolled identity, with the encoder its centroid was made with."""
    import numpy as np

    from engine.diffusion import LikenessCheck

    if config.engine.likeness_every == 0 or "centroid" not in identity.metadata:
        return None
    try:
        encoder = face_encoder(config, str(identity.metadata.get("encoder", config.models.face_encoder)))
    except LivecamError as e:
        log.warning("no likeness check: %s", e)
        return None
    centroid = np.asarray(identity.metadata["centroid"], dtype=np.float32)
    return LikenessCheck(encoder, centroid, config.engine.likeness_every)


def diffusion_components(config: Config, *, controlnet: str, tiny_vae: str, vae: str, download: bool,
                         load_full_vae: bool = False) -> DiffusionComponents:
    """The diffusion models per `config.models` (base, speed LoRA, device, dtype) with the given
    ControlNet and autoencoders; LivecamError saying how to get what is missing."""
    from models.diffusion import load_components

    m = config.models
    try:
        return load_components(base=m.base, controlnet=controlnet, tiny_vae=tiny_vae, vae=vae,
                               speed_lora=m.speed_lora, base_config=m.base_config, device=m.device, dtype=m.dtype,
                               download=download, load_full_vae=load_full_vae)
    except ModelUnavailable as e:
        raise LivecamError(str(e)) from None
    except ValueError as e:
        raise LivecamError(f"models: {e}") from None


def face_encoder(config: Config, backend: str | None = None) -> FaceEncoder:
    """The face-embedding model `backend` (default `models.face_encoder`); LivecamError when missing."""
    from models.face_encoder import load_face_encoder

    m = config.models
    overrides = {"face_reid_xml": m.face_reid_xml, "face_reid_bin": m.face_reid_bin, "arcface": m.arcface}
    try:
        return load_face_encoder(backend or m.face_encoder, model_dir(m.dir), overrides, m.download)
    except ModelUnavailable as e:
        raise LivecamError(str(e)) from None


def build_studio(config: Config, sections: Sections) -> StudioRenderer:
    """The studio renderer for `config`, not yet prepared."""
    from livecam.stills.export import background_picture, style_background

    background = style_background(config.background, config.styles[config.engine.style])
    size = (config.output.width, config.output.height)
    return StudioRenderer(size, config.framing, background, config.relight, config.skin,
                          background_image=background_picture(background), sections=sections)


def check_outputs(config: Config, stats_json: Path | None = None) -> None:
    """Check where a run will write before any work starts: `output.target` (a known output, or a video
    file that can be written and is not the input) and the statistics file. LivecamError on a problem."""
    check_output(config.output.target, config.input.source)
    if stats_json is None:
        return
    check_writable_file(stats_json, "statistics file")
    source = input_path(config.input.source)
    if source is not None and same_file(stats_json, source):
        raise LivecamError(f"--stats-json {stats_json}: it is the input ({config.input.source}); give another name")
    target = config.output.target
    if Path(target).suffix and same_file(stats_json, Path(target).expanduser()):
        raise LivecamError(f"--stats-json {stats_json}: it is the video being recorded (--output); give another "
                           "name")


class _WatchedReader:
    """Passes a reader through and keeps the exception its `read` raised, so that an error out of the loop
    can be told to be the input's (a lost camera, an unreadable image) and not the renderer's."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.description = reader.description
        self.fps = reader.fps
        self.paced_by_device = reader.paced_by_device
        self.error: BaseException | None = None

    def read(self) -> RGBImage | None:
        try:
            return self.reader.read()
        except BaseException as e:
            self.error = e
            raise

    def close(self) -> None:
        self.reader.close()


def _recorded(sink: FrameSink, when: str = " so far") -> str | None:
    """Where the frames of a finished video file are, for a message; None for a sink that is not a file."""
    if not isinstance(sink, VideoFileSink):
        return None
    if sink.kept is None:
        return "nothing was recorded"
    frames = f"{sink.count} frames recorded{when} are" if sink.count != 1 else f"1 frame recorded{when} is"
    moved = f" (it could not be moved to {sink.path})" if sink.kept != sink.path else ""
    return f"the {frames} in {sink.kept}{moved}"


def run_live(config: Config, max_frames: int | None = None, stats_json: Path | None = None) -> dict[str, Any]:
    """Run the live camera until the input ends, `max_frames` frames, Ctrl-C or the preview is closed.

    Prints the summary on exit and, with `stats_json`, writes it as JSON. Returns the summary. The outputs
    are checked before anything is loaded; when the run fails half-way, a video file keeps the frames
    recorded until then and the error says where they are.
    """
    check_outputs(config, stats_json)
    stats = Stats()
    renderer = build_renderer(config, stats)
    landmarker_path = resolve_model(config, FACE_LANDMARKER)
    segmenter_path = resolve_model(config, SELFIE_SEGMENTER) if renderer.needs_mask else None
    # Import here: mediapipe is heavy, and `livecam --help` should not pay for it.
    from models.segmenter import MediaPipeSegmenter

    failure: Exception | None = None
    with ExitStack() as stack:
        reader = _WatchedReader(open_reader(config.input.source, width=config.input.width,
                                            height=config.input.height, fps=config.input.fps,
                                            loop=config.input.loop, reconnect_s=config.input.reconnect_s))
        stack.callback(reader.close)
        size = (config.output.width, config.output.height)
        fps = config.output.fps if config.output.target == "virtualcam" else reader.fps
        sink = stack.enter_context(open_sink(config.output.target, size, fps, device=config.output.device,
                                             backend=config.output.backend))
        tracking = config.tracking
        tracker = stack.enter_context(MediaPipeFaceTracker(
            landmarker_path, min_detection_confidence=tracking.min_detection_confidence,
            min_presence_confidence=tracking.min_presence_confidence,
            min_tracking_confidence=tracking.min_tracking_confidence, smoothing=tracking.smoothing,
            min_cutoff=tracking.min_cutoff, beta=tracking.beta))
        segmenter = MediaPipeSegmenter(segmenter_path) if segmenter_path else None
        if segmenter is not None:
            stack.callback(segmenter.close)
        stack.callback(renderer.close)
        renderer.prepare()
        source = stack.enter_context(FrameSource(reader, pace=config.input.pace))
        log.info("%s -> %s %dx%d, %s engine%s", reader.description, config.output.target, *size,
                 renderer.name, "" if max_frames else " (Ctrl-C to stop)")
        try:
            run_loop(source, tracker, segmenter, renderer, sink, stats, max_frames, predict=tracking.predict)
        except KeyboardInterrupt:
            log.info("stopped")
        except Exception as e:
            failure = e
            sink.abort()  # finished now (a video keeps its frames), so the error can say where they are
        summary = stats.summary()
        summary["engine"] = renderer.name
        summary["engine_counts"] = renderer.counters()
        summary["input"] = reader.description
        summary["output"] = config.output.target
        log.info("%s", stats.format_summary())
        if summary["engine_counts"]:
            log.info("%s engine: %s", renderer.name,
                     ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["engine_counts"].items()))
    # The statistics are written once the video is finished and in place, so that failing to write them can
    # never cost the recording.
    stats_error = _write_stats(stats_json, summary) if stats_json is not None else None
    recorded = _recorded(sink)
    if failure is not None:
        if stats_error is not None:
            log.warning("%s", stats_error)
        if not isinstance(failure, LivecamError):
            # Not a user's mistake: it propagates as it is (with its traceback), after saying what was kept.
            log.error("the run failed after %d frames%s", stats.frames_in, f"; {recorded}" if recorded else "")
            raise failure
        origin = "the input failed" if failure is reader.error else "the run stopped"
        raise LivecamError(f"{origin} after {stats.frames_in} frames: {failure}"
                           f"{f'; {recorded}' if recorded else ''}") from failure
    if stats_error is not None:
        recording = _recorded(sink, when="")
        raise LivecamError(f"{stats_error}{f'; the run itself finished: {recording}' if recording else ''}")
    return summary


def _write_stats(path: Path, summary: dict[str, Any]) -> str | None:
    """Write the summary to `path`; the reason as one line when it could not be (a full disk, a folder
    removed during the run), None when it was written."""
    try:
        write_json(path, summary)
    except OSError as e:
        return f"cannot write the statistics file {path}: {e.strerror or e}"
    return None
