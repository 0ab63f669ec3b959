"""Config into parts: the one place that turns settings into the components live, stills, enrolment and serve
run on. Model files, the face encoder, the renderer (studio or diffusion, and the rule that picks), the live
inputs (source, tracker, segmenter), the still workbench, the identity's prompt words and the licence warnings
are each made here, once, so that every feature gets the same part for the same setting.

Nothing here runs a frame; each function returns a part ready to use (not yet prepared where it has a
`prepare`). Errors a user can fix are LivecamErrors that say how.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import background as bgmod
from engine.studio import StudioRenderer
from engine.styles import StylePreset
from engine.types import FaceEncoder, Renderer, RGBImage, Sections
from livecam.config import DEFAULT_SUBJECT, Config
from livecam.errors import LivecamError
from livecam.identity.store import Identity, resolve_identity_lora
from livecam.photos import read_image
from models.registry import FACE_DETECTOR, FACE_LANDMARKER, HUB_MODELS, SELFIE_SEGMENTER, ModelFile
from models.store import ModelUnavailable, model_dir, resolve

if TYPE_CHECKING:
    from engine.denoiser import DiffusionComponents
    from engine.diffusion import DiffusionRenderer, LikenessCheck
    from livecam.live.capture import Reader
    from livecam.stills.workbench import Workbench
    from models.face_landmarker import MediaPipeFaceTracker
    from models.segmenter import MediaPipeSegmenter

log = logging.getLogger("livecam")

REINSTALL = 'reinstall livecam: pip install -c constraints.txt -e .'


def missing_package(what: str, error: ImportError) -> LivecamError:
    """The one message for a part of the install that is not there (a broken or partial install)."""
    return LivecamError(f"{what} needs {error.name or 'a package'}, which is not installed: {REINSTALL}")


# --- model files ------------------------------------------------------------------------------------------------

def resolve_model(config: Config, model: ModelFile) -> Path:
    """The local file of `model` per config; a LivecamError that says how to get it otherwise."""
    override = getattr(config.models, model.name)
    try:
        return resolve(model, model_dir(config.models.dir), override, config.models.download)
    except ModelUnavailable as e:
        raise LivecamError(str(e)) from None


def face_encoder(config: Config, backend: str | None = None) -> FaceEncoder:
    """The face-embedding model `backend` (default `models.face_encoder`); LivecamError when missing."""
    from models.face_encoder import load_face_encoder

    m = config.models
    overrides = {"face_reid_xml": m.face_reid_xml, "face_reid_bin": m.face_reid_bin, "arcface": m.arcface}
    try:
        return load_face_encoder(backend or m.face_encoder, model_dir(m.dir), overrides, m.download)
    except ModelUnavailable as e:
        raise LivecamError(str(e)) from None


def diffusion_unavailable(config: Config) -> str | None:
    """Why `engine.kind = "auto"` cannot pick the diffusion engine without loading anything, or None."""
    from models.device import cuda_available

    if config.models.device == "cpu" or (config.models.device == "auto" and not cuda_available()):
        return "no CUDA GPU; the diffusion engine needs one for live frame rates"
    return None


def diffusion_components(config: Config, *, controlnet: str, tiny_vae: str, vae: str, download: bool,
                         load_full_vae: bool = False) -> DiffusionComponents:
    """The diffusion models per `config.models` (base, speed LoRA, device, dtype) with the given
    ControlNet and autoencoders; LivecamError saying how to get what is missing. Warns once about the base
    model's licence where it has conditions."""
    try:
        from models.diffusion import load_components
        from models.sources import licence_warning
    except ImportError as e:
        raise missing_package("the diffusion engine", e) from None
    m = config.models
    try:
        components = load_components(base=m.base, controlnet=controlnet, tiny_vae=tiny_vae, vae=vae,
                                     speed_lora=m.speed_lora, base_config=m.base_config, device=m.device,
                                     dtype=m.dtype, download=download, load_full_vae=load_full_vae)
    except ModelUnavailable as e:
        raise LivecamError(str(e)) from None
    except ValueError as e:
        raise LivecamError(f"models: {e}") from None
    warning = licence_warning(m.base)
    if warning:
        log.warning("%s", warning)
    return components


def licences(config: Config) -> str:
    """The licences of the configured diffusion models, from the registry ("see its model card" otherwise)."""
    parts = []
    for key in ("base", "controlnet", "vae", "speed_lora"):
        spec = getattr(config.models, key)
        if not spec:
            continue
        entry = HUB_MODELS.get(spec) or next((h for h in HUB_MODELS.values() if h.repo_id == spec), None)
        parts.append(f"{key}: {entry.licence}" if entry else f"{key}: see the model card of {spec}")
    return "; ".join(parts)


def load_identity_lora(name: str) -> tuple[dict[str, Any], Identity | None]:
    """The LoRA state dict of `name` (an enrolled identity or a .safetensors file) and, when enrolled, the
    identity; LivecamError naming it when it cannot be loaded."""
    try:
        from models.lora_file import load_lora
    except ImportError as e:
        raise missing_package(f"identity {name!r}", e) from None
    try:
        path, enrolled = resolve_identity_lora(name)
        return load_lora(path), enrolled
    except ModelUnavailable as e:
        raise LivecamError(f"identity {name!r}: {e}") from None


def prompt_subject(config: Config, identity: Identity | None) -> str:
    """Who the diffusion prompt pictures: an enrolled identity's trigger words (the ones its LoRA was trained
    with), unless `engine.subject` was set to something else."""
    subject = config.engine.subject
    if identity is not None and subject == DEFAULT_SUBJECT:
        return identity.subject
    return subject


# --- the look ---------------------------------------------------------------------------------------------------

def style_background(bg: bgmod.BackgroundSettings, style: StylePreset) -> bgmod.BackgroundSettings:
    """[background] with the style's studio backdrop colour (unless background.tint is set)."""
    if bg.mode == "studio" and style.backdrop and not bg.tint:
        return dataclasses.replace(bg, tint=style.backdrop)
    return bg


def background_picture(bg: bgmod.BackgroundSettings) -> RGBImage | None:
    """The picture of mode "image" ([background].image, loaded), None for the other modes; LivecamError when
    the file is missing."""
    if not (bg.enabled and bg.mode == "image"):
        return None
    path = Path(bg.image).expanduser()
    if not path.is_file():
        raise LivecamError(f"background.image = {bg.image!r}: no such file")
    return read_image(path)


# --- renderers --------------------------------------------------------------------------------------------------

def build_studio(config: Config, sections: Sections) -> StudioRenderer:
    """The studio renderer for `config`, not yet prepared."""
    background = style_background(config.background, config.styles[config.engine.style])
    size = (config.output.width, config.output.height)
    return StudioRenderer(size, config.framing, background, config.relight, config.skin,
                          background_image=background_picture(background), sections=sections)


def build_renderer(config: Config, sections: Sections, full_vae: bool = False) -> Renderer:
    """The renderer for `config`, not yet prepared. `full_vae`: load the full VAE beside the tiny one, so that
    stills can share the live diffusion models (`open_workbench(live=...)`).

    `engine.kind = "auto"` takes the diffusion engine when a CUDA GPU is there and the models are already
    downloaded; otherwise the studio engine, with one log line saying why.
    """
    studio = build_studio(config, sections)
    kind = config.engine.kind
    if kind == "studio":
        return studio
    if kind == "auto":
        reason = diffusion_unavailable(config)
        if reason is not None:
            log.info("engine auto: the studio engine (%s)", reason)
            return studio
    try:
        return build_diffusion(config, studio, sections, download=config.models.download if kind == "diffusion"
                               else False, full_vae=full_vae)
    except LivecamError as e:
        if kind == "diffusion":
            raise
        log.info("engine auto: the studio engine (%s)", e)
        return studio


def build_diffusion(config: Config, studio: StudioRenderer, sections: Sections, download: bool,
                    full_vae: bool = False) -> Renderer:
    """The diffusion renderer around `studio`, with its models loaded (LivecamError when they cannot be)."""
    try:
        from engine.diffusion import DiffusionRenderer
    except ImportError as e:
        raise missing_package("the diffusion engine", e) from None
    m = config.models
    identity, enrolled = load_identity_lora(m.identity) if m.identity else (None, None)
    subject = prompt_subject(config, enrolled)
    if enrolled is not None:
        log.info("identity %s (prompt subject %r)", enrolled.name, subject)
    log.info("loading the diffusion models (%s)...", m.base)
    components = diffusion_components(config, controlnet=m.controlnet, tiny_vae=m.tiny_vae, vae=m.vae,
                                      download=download, load_full_vae=full_vae)
    prompt = config.styles[config.engine.style].prompt(subject)
    check = likeness_check(config, enrolled) if identity is not None and enrolled is not None else None
    return DiffusionRenderer(components, config.engine.diffusion, studio, prompt, identity, sections=sections,
                             likeness_check=check)


def likeness_check(config: Config, identity: Identity) -> LikenessCheck | None:
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


# --- live inputs ------------------------------------------------------------------------------------------------

def open_source(config: Config) -> Reader:
    """The reader of `input.source` (camera, video file, image file or folder), open."""
    from livecam.live.capture import open_reader

    c = config.input
    return open_reader(c.source, width=c.width, height=c.height, fps=c.fps, loop=c.loop, reconnect_s=c.reconnect_s)


def open_tracker(config: Config) -> MediaPipeFaceTracker:
    """The live face tracker per [tracking] (VIDEO mode, One-Euro smoothed)."""
    from models.face_landmarker import MediaPipeFaceTracker

    t = config.tracking
    return MediaPipeFaceTracker(resolve_model(config, FACE_LANDMARKER),
                                min_detection_confidence=t.min_detection_confidence,
                                min_presence_confidence=t.min_presence_confidence,
                                min_tracking_confidence=t.min_tracking_confidence, smoothing=t.smoothing,
                                min_cutoff=t.min_cutoff, beta=t.beta)


def open_segmenter(config: Config) -> MediaPipeSegmenter:
    """The person segmenter (for the background and the matte)."""
    from models.segmenter import MediaPipeSegmenter

    return MediaPipeSegmenter(resolve_model(config, SELFIE_SEGMENTER))


# --- stills -----------------------------------------------------------------------------------------------------

def open_workbench(config: Config, engine: str | None = None, components: DiffusionComponents | None = None,
                   live: DiffusionRenderer | None = None) -> Workbench:
    """Load what stills need per `engine` (studio, diffusion or auto; None: `engine.kind`). LivecamError when
    a model is missing (diffusion) or cannot be had. `components`: diffusion models already loaded (with the
    full VAE), used instead of loading `models.*` (benchmarks, tests). `live`: a running diffusion renderer
    (built with `full_vae`) whose models and identity fuser the stills share: nothing more is loaded, and the
    caller pauses it around an export (`Workbench.assume_identity`, `DiffusionRenderer.reclaim_weights`)."""
    from livecam.stills.workbench import Workbench
    from models.face_detector import YuNetDetector
    from models.face_landmarker import ImageFaceLandmarker

    kind = engine or config.engine.kind
    # Every file first: a missing one fails before anything is opened (an opened landmarker left to the
    # interpreter's exit prints a traceback from its __del__ after the one-line error).
    landmarker_path, detector_path = resolve_model(config, FACE_LANDMARKER), resolve_model(config, FACE_DETECTOR)
    resolve_model(config, SELFIE_SEGMENTER)
    landmarker = ImageFaceLandmarker(landmarker_path, max_faces=4)
    try:
        bench = Workbench(config, "studio", landmarker, YuNetDetector(detector_path), open_segmenter(config), {},
                          encoder_factory=lambda backend: face_encoder(config, backend))
    except BaseException:
        landmarker.close()
        raise
    try:
        bench.encoder(config.models.face_encoder)
        if kind == "auto":
            reason = diffusion_unavailable(config)
            if reason is None:
                try:
                    _load_generator(bench, download=False)
                except LivecamError as e:
                    reason = str(e)
            if reason is not None:
                log.info("engine auto: the studio engine (%s)", reason)
        elif kind == "diffusion":
            _load_generator(bench, download=config.models.download,
                            components=live.components if live is not None else components, live=live)
    except BaseException:
        bench.close()
        raise
    return bench


def _load_generator(bench: Workbench, download: bool, components: DiffusionComponents | None = None,
                    live: DiffusionRenderer | None = None) -> None:
    try:
        from engine.still import StillGenerator, native_size
    except ImportError as e:
        raise missing_package("the diffusion engine", e) from None
    config = bench.config
    m, s = config.models, config.still
    if components is None:
        log.info("loading the diffusion models (%s) with the full VAE...", m.base)
        components = diffusion_components(config, controlnet=m.controlnet, tiny_vae=m.tiny_vae, vae=m.vae,
                                          download=download, load_full_vae=True)
    size = s.size or native_size(components)
    settings = dataclasses.replace(config.engine.diffusion, size=size, steps=s.steps, strength=s.strength)
    if components.vae is None:
        raise LivecamError("the live diffusion models were loaded without the full VAE that stills need")
    bench.generator = StillGenerator(components, settings, fuser=live.fuser if live is not None else None)
    bench.engine = "diffusion"
    bench.model_names = dict(components.names)
    bench.model = " + ".join(components.names.get(k, "") for k in ("base", "controlnet", "vae", "speed_lora")
                             if components.names.get(k))
    bench.licence = licences(config)
