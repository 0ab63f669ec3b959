"""The diffusion engine: each live frame re-rendered by a few-step SDXL-family model (img2img), steered by
the pose ControlNet and the user's fused identity LoRA, on top of the studio engine's canvas.

Two layers:

- `Denoiser` (engine/denoiser.py) is the tensor core, uint8 crop in, uint8 crop out; identity LoRAs are
  fused into its weights by `IdentityFuser` (engine/identity_fuser.py).
- `DiffusionRenderer` is a `Renderer`: the studio engine frames, relights and replaces the background;
  a square around the head and shoulders of that canvas is re-rendered and pasted back with a soft edge.
  When a frame fails (an exception, CUDA out of memory) the studio canvas is that frame's output; after
  `max_failures` failures in a row the renderer stays on the studio canvas and says so.

Pixels: RGB uint8 HxWx3 at the boundary; inside, NCHW tensors in [-1, 1] (images), [0, 1] (the ControlNet
condition) or latent space, in the components' dtype.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
import torch

from engine import framing as fr
from engine.alignment import likeness
from engine.background import BackgroundSettings
from engine.denoiser import Denoiser, DiffusionComponents, encode_prompt, host_pipeline
from engine.diffusion_settings import DiffusionSettings
from engine.identity_fuser import IdentityFuser
from engine.keep_face import keep_face_in_place
from engine.pose import PoseReuse, body_keypoints, draw_pose
from engine.square_ops import (
    crop_geometry,
    cut_square,
    feather_mask,
    paste_square,
    paste_weight,
    paste_with_weight,
    square_region,
)
from engine.studio import StudioRenderer
from engine.types import Affine, Face, FaceEncoder, Mask, NoSections, RGBImage, Sections
from engine.validation import check_range

log = logging.getLogger("livecam.engine")

__all__ = ["DiffusionRenderer", "LikenessCheck", "crop_geometry", "cut_square", "feather_mask", "paste_square",
           "square_region"]


def badge_patch(canvas_height: int, text: str = "AI-enhanced") -> tuple[RGBImage, Mask]:
    """A small rounded label (RGB patch and its alpha) sized for a canvas `canvas_height` pixels tall."""
    scale = max(0.35, canvas_height / 1400)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, round(th * 0.6))
    w, h = tw + 2 * pad, th + base + 2 * pad
    patch = np.full((h, w, 3), 20, np.uint8)
    cv2.putText(patch, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), thickness,
                cv2.LINE_AA)
    alpha = np.zeros((h, w), np.uint8)
    radius = h // 2
    cv2.rectangle(alpha, (radius, 0), (w - radius - 1, h - 1), 255, -1)
    cv2.circle(alpha, (radius, radius), radius, 255, -1, cv2.LINE_AA)
    cv2.circle(alpha, (w - radius - 1, radius), radius, 255, -1, cv2.LINE_AA)
    return patch, (alpha.astype(np.float32) / 255.0 * 0.75).astype(np.float32)


def draw_badge(canvas: RGBImage, patch: RGBImage, alpha: Mask) -> None:
    """Blend the badge into the canvas's bottom-right corner, in place."""
    h, w = patch.shape[:2]
    ch, cw = canvas.shape[:2]
    margin = max(4, ch // 60)
    if h + margin > ch or w + margin > cw:
        return
    region = canvas[ch - h - margin : ch - margin, cw - w - margin : cw - margin]
    region[...] = cv2.blendLinear(patch, region, alpha, 1.0 - alpha)


def _similarity_thumb(crop: RGBImage) -> npt.NDArray[np.float32]:
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return np.asarray(cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA), np.float32) / 255.0


@dataclass
class LikenessCheck:
    """Score every `every`-th generated frame against the identity: the face in the output canvas (where the
    pose image put it) through `encoder`, cosine to `centroid`. The scoring runs on a worker thread of its own,
    off the render thread (the encoder takes ~12 ms on a CPU); a frame due while the last one is still being
    scored is not scored."""

    encoder: FaceEncoder
    centroid: npt.NDArray[np.float32]
    every: int = 30
    scores: list[float] = field(default_factory=list)
    _worker: ThreadPoolExecutor | None = None
    _running: Future[None] | None = None

    def submit(self, image: RGBImage, landmarks: npt.NDArray[np.float32]) -> bool:
        """Score `image` (not modified afterwards) with its face's `landmarks` in the background; False when the
        previous one still runs (this one is skipped)."""
        if self._running is not None and not self._running.done():
            return False
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, "livecam-likeness")
        self._running = self._worker.submit(self._score, image, landmarks)
        return True

    def _score(self, image: RGBImage, landmarks: npt.NDArray[np.float32]) -> None:
        try:
            self.scores.append(likeness(self.encoder, image, landmarks, self.centroid).score)
        except Exception as e:  # a failed check must never reach the camera; it is logged and not counted
            log.warning("likeness check failed (%s: %s)", type(e).__name__, e)

    def wait(self) -> None:
        """Wait for the scoring in progress (tests, the run's summary)."""
        if self._running is not None:
            self._running.result()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        self.encoder.close()


@dataclass
class _Pending:
    """What a style or identity change asks for; applied on the render thread before the next frame."""

    prompt: str | None = None
    identity: dict[str, torch.Tensor] | None = None
    identity_scale: float = 1.0
    identity_changed: bool = False


@dataclass
class _Shot:
    """A frame's canvas, where its square is and its face, kept while its crop is being rendered (stream batch,
    pipeline)."""

    canvas: RGBImage
    x0: int
    y0: int
    side: int
    timestamp_ms: int
    face: Face
    affine: Affine
    """Source pixels -> canvas pixels."""
    thumb: npt.NDArray[np.float32]
    """The square's similarity thumbnail."""
    finished: bool = False
    """Rendered through `Denoiser.submit_square`: its output is the finished square, blended on the device."""


class DiffusionRenderer:
    """A `Renderer`: the studio canvas with the head-and-shoulders square re-rendered by diffusion."""

    name = "diffusion"

    def __init__(self, components: DiffusionComponents, settings: DiffusionSettings, studio: StudioRenderer,
                 prompt: str, identity: dict[str, torch.Tensor] | None = None,
                 sections: Sections | None = None, likeness_check: LikenessCheck | None = None) -> None:
        self.components = components
        self.settings = settings
        self.studio = studio
        self.output_size = studio.output_size
        self.needs_mask = studio.needs_mask
        self._sections: Sections = sections if sections is not None else NoSections()
        self._denoiser = Denoiser(components, settings, self._sections)
        self._host = host_pipeline(components)
        self._prompt = prompt
        self._identity: dict[str, torch.Tensor] | None = None
        self._identity_scale = settings.identity_scale
        self._lock = threading.Lock()
        self._pending = _Pending(identity=identity, identity_scale=settings.identity_scale,
                                 identity_changed=identity is not None)
        self._fuser = IdentityFuser(components, self._host)
        self._feather = feather_mask(settings.size, settings.feather)
        self._side = min(self.output_size)
        self._weight = paste_weight(self._feather, self._side)
        """The feather warped to the canvas's square once (the square's side is the canvas's height)."""
        self._badge = badge_patch(self.output_size[1]) if settings.badge else None
        self._keep_face = settings.keep_face
        cuda = components.device.type == "cuda"
        self._pipelined = settings.pipeline == "on" or (settings.pipeline == "auto" and cuda)
        self.on_device = settings.square_on_device == "on" or (settings.square_on_device == "auto" and cuda)
        if self.on_device:
            self._denoiser.set_square(self._side, self._weight)
        # The stream batch runs the ControlNet on a batch of frames at different steps: nothing to reuse there.
        streamed = settings.stream_batch and settings.steps > 1
        self._reuse = PoseReuse(0.0 if streamed else settings.controlnet_reuse, settings.controlnet_reuse_max,
                                settings.size)
        self._condition_image: RGBImage | None = None
        """The pose image of the latest frame that ran the ControlNet."""
        self._warm = threading.Event()
        self._warm.set()
        self._warming: threading.Thread | None = None
        self._embeds: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._prepared = False
        self._disabled = False
        self._disabled_at_ms = 0
        self._consecutive_failures = 0
        self._last: tuple[npt.NDArray[np.float32], RGBImage, int] | None = None
        """(similarity thumb, output, shown_ms) of the latest generated frame."""
        self.shown_ms: int | None = None
        self._skipped = 0
        self._square: tuple[int, int, int] | None = None
        self._likeness = likeness_check
        self.counts = {"generated": 0, "similar_skips": 0, "failures": 0, "studio_frames": 0, "warming_frames": 0,
                       "controlnet_reused": 0}

    @property
    def last_square(self) -> tuple[int, int, int] | None:
        """(x0, y0, side) in the canvas of the square in the latest generated output."""
        return self._square

    @property
    def active(self) -> bool:
        """False once repeated failures switched this renderer to the studio canvas."""
        return not self._disabled

    def counters(self) -> dict[str, float]:
        counts: dict[str, float] = dict(self.counts)
        if self._likeness is not None:
            self._likeness.wait()
        if self._likeness is not None and self._likeness.scores:
            scores = self._likeness.scores
            counts["likeness_checks"] = len(scores)
            counts["likeness_median"] = round(float(np.median(scores)), 3)
            counts["likeness_min"] = round(min(scores), 3)
            counts["likeness_below_threshold"] = sum(s < self._likeness.encoder.threshold for s in scores)
        return counts

    def set_style(self, prompt: str) -> None:
        """Use `prompt` from the next frame on (thread-safe; the camera keeps running)."""
        with self._lock:
            self._pending.prompt = prompt

    def set_look(self, background: BackgroundSettings, background_image: RGBImage | None = None) -> None:
        """The studio canvas's backdrop from the next frame on (thread-safe; see `StudioRenderer.set_look`)."""
        self.studio.set_look(background, background_image)

    @property
    def keep_face(self) -> bool:
        return self._keep_face

    def set_keep_face(self, on: bool) -> None:
        """Keep the person's own face (True) or use the generated one, from the next frame on (thread-safe)."""
        self._keep_face = bool(on)
        self._last = None  # no repeat of an output made the other way

    def set_identity(self, lora: dict[str, torch.Tensor] | None, scale: float = 1.0) -> None:
        """Fuse `lora` (a LoRA state dict, from `models/`; None = no identity) at `scale` from the next frame
        on, in place of the current one (thread-safe; the camera keeps running)."""
        check_range("identity_scale", scale, 0.0, 2.0)
        with self._lock:
            self._pending.identity = lora
            self._pending.identity_scale = scale
            self._pending.identity_changed = True

    @property
    def fuser(self) -> IdentityFuser:
        """What fuses identities into this renderer's weights: a still generator sharing the components uses it
        (`StillGenerator(..., fuser=)`), so one fuser knows what the shared weights hold."""
        return self._fuser

    def sync(self) -> None:
        """Apply a pending identity or style now, not at the next frame. Call it only while no frame renders
        (a paused render thread): afterwards the weights hold the identity last set."""
        self.wait_warm()
        if self._prepared and self._has_pending():
            self._apply_pending()

    def reclaim_weights(self) -> None:
        """Another user of the shared components (a still export) fused another identity: fuse this renderer's
        own again, and encode its prompt again, before the next frame (thread-safe)."""
        with self._lock:
            if not self._pending.identity_changed:
                self._pending.identity = self._identity
                self._pending.identity_scale = self._identity_scale
                self._pending.identity_changed = True

    def prepare(self) -> None:
        """The studio canvas, the identity LoRA fused into the weights, the prompt encoded, the Denoiser's
        constants. Runs again (on the render thread) after `set_style` or `set_identity`."""
        self.wait_warm()  # never beside a warm-up still running
        self.studio.prepare()
        self._apply_pending()
        self._prepared = True
        if self._denoiser.compiled and self._warming is None:
            # Compiling and capturing take seconds to minutes: on a worker thread, while `render` publishes the
            # studio canvas (the camera never stops).
            self._warm.clear()
            self._warming = threading.Thread(target=self._warm_up, name="livecam-diffusion-warm-up", daemon=True)
            self._warming.start()

    def stage_times(self, clear: bool = False) -> dict[str, dict[str, float]]:
        """Per stage of the frames collected so far (up to the last 1000): p50 and p95 ms, and the count; CUDA
        event times on CUDA, wall clock on the CPU. `clear`: start afresh afterwards."""
        frames = list(self._denoiser.stage_ms)
        if clear:
            self._denoiser.stage_ms.clear()
        names = sorted({name for f in frames for name in f})
        return {name: {"ms_p50": round(float(np.percentile(v, 50)), 3), "ms_p95": round(float(np.percentile(v, 95)), 3),
                       "count": len(v)} for name in names if (v := [f[name] for f in frames if name in f])}

    @property
    def warming(self) -> bool:
        """True while the compiled engine warms up (the studio canvas is published meanwhile)."""
        return not self._warm.is_set()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait for the warm-up (if any); False on timeout."""
        return self._warm.wait(timeout)

    def _warm_up(self) -> None:
        try:
            self._denoiser.warm_up()
            log.info("diffusion engine compiled and warmed up")
        except Exception as e:  # a compiler that fails here (no C compiler for Triton, ...): run eager instead
            log.warning("compiling the diffusion engine failed (%s: %s); running it uncompiled", type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
            denoiser = Denoiser(self.components, dataclasses.replace(self.settings, compile="off"), self._sections)
            if self.on_device:
                denoiser.set_square(self._side, self._weight)
            if self._embeds is not None:
                denoiser.prepare(*self._embeds)
            self._denoiser = denoiser
        finally:
            self._warm.set()

    def _has_pending(self) -> bool:
        with self._lock:
            return self._pending.identity_changed or self._pending.prompt is not None

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, _Pending()
        if pending.identity_changed:
            with self._sections.section("identity"):
                self._fuse_identity(pending.identity, pending.identity_scale)
        if pending.prompt is not None:
            self._prompt = pending.prompt
        if pending.identity_changed or pending.prompt is not None or not self._prepared:
            with self._sections.section("encode_prompt"):
                embeds, pooled = encode_prompt(self._host, self._prompt, self.components.device)
            self._embeds = (embeds, pooled)
            self._denoiser.prepare(embeds, pooled)
            self._last = None
            self._reuse.reset()

    def _fuse_identity(self, lora: dict[str, torch.Tensor] | None, scale: float) -> None:
        """Restore the weights the previous identity changed, then fuse `lora` at `scale`."""
        self._identity, self._identity_scale = None, scale
        self._fuser.fuse(lora, scale)
        self._identity = lora

    def close(self) -> None:
        warm = self.wait_warm(5.0)  # a compile may take minutes: a closing app does not wait for it
        self.studio.close()
        if warm:
            self._denoiser.reset()
        if self._likeness is not None:
            self._likeness.close()
        self._prepared = False

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        """The studio canvas with the square around the face re-rendered (output_size, RGB uint8)."""
        if not self._prepared:
            raise RuntimeError("DiffusionRenderer.render: call prepare() first")
        canvas = self.studio.render(image, face, mask, timestamp_ms)
        self.shown_ms = timestamp_ms  # the studio canvas; a generated square may show an earlier frame
        retry_ms = self.settings.retry_s * 1000
        if self._disabled and retry_ms > 0 and timestamp_ms - self._disabled_at_ms >= retry_ms:
            # Out of memory is often passing (another program let go of the GPU): try again, and one more
            # failure switches back to the studio engine at once.
            self._disabled = False
            self._consecutive_failures = self.settings.max_failures - 1
            log.info("trying the diffusion engine again")
        if self._disabled or face is None or self.warming:
            self.counts["studio_frames"] += 1
            self.counts["warming_frames"] += self.warming
            return canvas
        try:
            if self._has_pending():
                self._apply_pending()
            out = self._render_square(canvas, face, timestamp_ms)
        except Exception as e:  # an OOM or any other failure on this frame: the studio canvas stands in
            self.shown_ms = timestamp_ms
            self._denoiser.discard()
            self._reuse.reset()
            self.counts["failures"] += 1
            self.counts["studio_frames"] += 1
            self._consecutive_failures += 1
            log.warning("diffusion render failed (%s: %s); this frame uses the studio engine",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            if self._consecutive_failures >= self.settings.max_failures:
                self._disabled = True
                self._disabled_at_ms = timestamp_ms
                self._denoiser.reset()
                retry = f"; trying again in {self.settings.retry_s:g} s" if self.settings.retry_s > 0 else ""
                log.error("diffusion failed on %d frames in a row: switching to the studio engine%s",
                          self._consecutive_failures, retry)
            if isinstance(e, torch.OutOfMemoryError) and self.components.device.type == "cuda":
                torch.cuda.empty_cache()
            return canvas
        self._consecutive_failures = 0
        return out

    def _render_square(self, canvas: RGBImage, face: Face, timestamp_ms: int) -> RGBImage:
        s = self.settings
        box = self.studio.last_box
        assert box is not None  # the studio render just set it
        canvas_affine = fr.box_to_affine(box, self.output_size)
        x0, y0, side, to_crop = crop_geometry(self.output_size, canvas_affine, face.landmarks, s.size)
        square = canvas[y0 : y0 + side, x0 : x0 + side]
        thumb = _similarity_thumb(square)
        if self._last is not None and s.similar_threshold > 0 and self._skipped < s.max_skip:
            last_thumb, last_out, last_ms = self._last
            if float(np.abs(thumb - last_thumb).mean()) < s.similar_threshold:
                self._skipped += 1
                self.counts["similar_skips"] += 1
                if self._denoiser.pending:  # the pipeline's frame is newer than the last output: show it
                    return self._finish(*self._collect())
                self.shown_ms = last_ms
                return last_out
        self._skipped = 0
        condition, reuse = self._condition(face, to_crop)
        shot = _Shot(canvas, x0, y0, side, timestamp_ms, face, canvas_affine, thumb,
                     finished=self.on_device and side == self._side)
        if shot.finished:
            self._denoiser.submit_square(square, condition, shot, reuse)
        else:
            with self._sections.section("crop"):
                crop = cut_square(canvas, x0, y0, side, s.size)
            self._denoiser.submit(crop, condition, shot, reuse)
        if self._pipelined and self._denoiser.pending == 1 and self._last is not None:
            # The pipeline (re)starts: this frame's GPU work runs while the next frame's CPU work does; the last
            # output shows once more meanwhile.
            _, last_out, last_ms = self._last
            self.shown_ms = last_ms
            return last_out
        # Sequential: this frame. Pipelined: the previous one, finished while this frame's CPU work ran.
        return self._finish(*self._collect())

    def _condition(self, face: Face, to_crop: Affine) -> tuple[RGBImage | None, bool]:
        """The pose image, and whether the ControlNet's kept residuals stand for it: the pose has moved less than
        `controlnet_reuse` (mean keypoint displacement, fraction of the side) since the frame that ran it, and
        it ran within `controlnet_reuse_max` frames."""
        if not self._denoiser.uses_controlnet:
            return None, False
        s = self.settings
        if self._reuse.reuse(fr.transform_points(body_keypoints(face.landmarks), to_crop)):
            self.counts["controlnet_reused"] += 1
            return self._condition_image, True
        with self._sections.section("condition"):
            self._condition_image = draw_pose(face.landmarks, to_crop, (s.size, s.size))
        return self._condition_image, False

    def _collect(self) -> tuple[RGBImage, _Shot]:
        result = self._denoiser.collect()
        assert result is not None
        return result

    def _finish(self, rendered: RGBImage, shot: _Shot) -> RGBImage:
        """The generated square pasted onto its own frame's canvas (with stream batching or the pipeline, an
        earlier frame's), the face kept, the badge; counted, remembered, checked for likeness."""
        self.shown_ms = shot.timestamp_ms
        with self._sections.section("paste"):
            if shot.finished:
                out = shot.canvas.copy()
                out[shot.y0 : shot.y0 + shot.side, shot.x0 : shot.x0 + shot.side] = rendered
            elif shot.side == self._side:
                out = paste_with_weight(shot.canvas, rendered, shot.x0, shot.y0, shot.side, self._weight)
            else:
                out = paste_square(shot.canvas, rendered, shot.x0, shot.y0, shot.side, self._feather)
        if self._keep_face:
            with self._sections.section("keep_face"):
                keep_face_in_place(out, shot.canvas, fr.transform_points(shot.face.landmarks[:, :2], shot.affine))
        self._square = (shot.x0, shot.y0, shot.side)
        if self._badge is not None:
            draw_badge(out, *self._badge)
        self.counts["generated"] += 1
        self._last = (shot.thumb, out, shot.timestamp_ms)
        check = self._likeness
        if check is not None and self.counts["generated"] % check.every == 1 % check.every:
            with self._sections.section("likeness"):
                # ControlNet keeps the pose, so the face sits where the camera's landmarks put it.
                landmarks = shot.face.landmarks.copy()
                landmarks[:, :2] = fr.transform_points(shot.face.landmarks[:, :2], shot.affine)
                check.submit(out, landmarks)  # `out` is never written again: published as it is
        return out
