"""The diffusion engine: each live frame re-rendered by a few-step SDXL-family model (img2img), steered by
the pose ControlNet and the user's fused identity LoRA, on top of the studio engine's canvas.

Two layers:

- `Denoiser` is the tensor core, uint8 crop in, uint8 crop out: tiny-VAE encode, noise to the first
  timestep, UNet (+ ControlNet) steps with no classifier-free guidance, decode. Everything that does not
  change per frame (prompt embeddings, time ids, timesteps, alphas, fixed noise, pinned buffers) is made in
  `prepare()`. With 2+ steps and `stream_batch`, frame n's first step and frame n-1's second step run as
  one UNet batch (StreamDiffusion's scheme): one UNet call per frame at the price of one frame of delay.
- `DiffusionRenderer` is a `Renderer`: the studio engine frames, relights and replaces the background;
  a square around the head and shoulders of that canvas is re-rendered and pasted back with a soft edge.
  When a frame fails (an exception, CUDA out of memory) the studio canvas is that frame's output; after
  `max_failures` failures in a row the renderer stays on the studio canvas and says so.

Pixels: RGB uint8 HxWx3 at the boundary; inside, NCHW tensors in [-1, 1] (images), [0, 1] (the ControlNet
condition) or latent space, in the components' dtype.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
import torch

from engine import framing as fr
from engine.alignment import likeness
from engine.background import BackgroundSettings
from engine.diffusion_settings import DiffusionSettings
from engine.pose import draw_pose
from engine.studio import StudioRenderer
from engine.types import Affine, Face, FaceEncoder, Mask, NoSections, RGBImage, Sections
from engine.validation import check_range

log = logging.getLogger("livecam.engine")

__all__ = ["Denoiser", "DiffusionComponents", "DiffusionRenderer", "DiffusionSettings"]


@dataclass
class DiffusionComponents:
    """Ready-built model components, loaded by `models/`; the engine never loads anything itself."""

    unet: Any
    """UNet2DConditionModel (SDXL family: `addition_embed_type == "text_time"`; SD 2.x family otherwise)."""
    tiny_vae: Any
    """The live frames' autoencoder: AutoencoderTiny (TAESD-XL), or any diffusers autoencoder."""
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    """Only its constants are used: `alphas_cumprod` and `config.prediction_type`."""
    device: torch.device
    dtype: torch.dtype
    controlnet: Any | None = None
    text_encoder_2: Any | None = None
    """CLIPTextModelWithProjection for SDXL; None for the SD 2.x family (SD-Turbo)."""
    tokenizer_2: Any | None = None
    vae: Any | None = None
    """The full AutoencoderKL, for stills; None when not loaded."""
    names: dict[str, str] = field(default_factory=dict)
    """What was loaded, e.g. {"base": "stabilityai/sdxl-turbo"}, for logs and stills' metadata."""

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None


def trailing_timesteps(steps: int, strength: float, train_steps: int = 1000) -> list[int]:
    """The timesteps of a `steps`-step img2img at `strength`, "trailing" spacing (as few-step models are
    distilled): 1 step at 0.5 -> [499]; 2 steps at 0.5 -> [499, 249]; 1 step at 1.0 -> [999]."""
    top = train_steps * strength
    return [max(0, round(top * (steps - k) / steps) - 1) for k in range(steps)]


@dataclass
class _InFlight:
    """A frame between its UNet steps (stream batch): its latent at `step`, its condition, its tag."""

    latent: torch.Tensor
    condition: torch.Tensor | None
    step: int
    tag: Any


class Denoiser:
    """Few-step img2img on a square crop: uint8 crop in, uint8 crop out, nothing loaded or built per frame.

    Not thread-safe: one thread calls `prepare` and `__call__`.
    """

    def __init__(self, components: DiffusionComponents, settings: DiffusionSettings,
                 sections: Sections | None = None) -> None:
        c = components
        self.components = c
        self.settings = settings
        self.device = c.device
        self.dtype = c.dtype
        self._sections: Sections = sections if sections is not None else NoSections()
        prediction = getattr(c.scheduler.config, "prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"scheduler prediction_type = {prediction!r}: expected epsilon, v_prediction or sample")
        self._prediction = prediction
        alphas = getattr(c.scheduler, "alphas_cumprod", None)
        if alphas is None:
            raise ValueError(f"scheduler {type(c.scheduler).__name__} has no alphas_cumprod")
        self._alphas_cumprod = torch.as_tensor(alphas, dtype=torch.float64)
        # An autoencoder that overflows in fp16 (SDXL's own VAE says so with force_upcast) runs in fp32.
        self._vae_dtype = c.dtype
        if getattr(c.tiny_vae.config, "force_upcast", False) and c.dtype == torch.float16:
            c.tiny_vae.to(torch.float32)
            self._vae_dtype = torch.float32
        self._vae_scale = float(getattr(c.tiny_vae.config, "scaling_factor", 1.0))
        self._vae_shift = float(getattr(c.tiny_vae.config, "shift_factor", None) or 0.0)
        self._channels_last = settings.channels_last and c.device.type == "cuda"
        if self._channels_last:
            for module in (c.unet, c.controlnet, c.tiny_vae):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        self._unet: Callable[..., Any] = c.unet
        self._controlnet: Callable[..., Any] | None = c.controlnet
        if settings.compile:
            mode = "reduce-overhead" if settings.cuda_graphs else "max-autotune-no-cudagraphs"
            self._unet = torch.compile(c.unet, mode=mode, fullgraph=False)
            if c.controlnet is not None:
                self._controlnet = torch.compile(c.controlnet, mode=mode, fullgraph=False)
        self._prepared = False
        self._in_flight: list[_InFlight] = []
        self._prev_x0: torch.Tensor | None = None

    @property
    def uses_controlnet(self) -> bool:
        return self._controlnet is not None

    def prepare(self, prompt_embeds: torch.Tensor, pooled_embeds: torch.Tensor | None) -> None:
        """Precompute everything per (prompt, size, steps): `prompt_embeds` (1, 77, D) and, for SDXL,
        `pooled_embeds` (1, P), both already encoded by the text encoders."""
        s = self.settings
        dev, dtype = self.device, self.dtype
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
            raise ValueError(f"prompt_embeds: expected (1, tokens, dim), got {tuple(prompt_embeds.shape)}")
        sdxl = getattr(self.components.unet.config, "addition_embed_type", None) == "text_time"
        if sdxl and pooled_embeds is None:
            raise ValueError("pooled_embeds: an SDXL UNet needs the pooled text embeddings, got None")
        # Batch size k: stream batch runs all steps of k different frames in one call.
        self._batch = s.steps if (s.stream_batch and s.steps > 1) else 1
        b = self._batch
        self._embeds = prompt_embeds.to(dev, dtype).expand(b, -1, -1).contiguous()
        self._added: dict[str, torch.Tensor] | None = None
        if sdxl:
            assert pooled_embeds is not None
            # (original size, crop top-left, target size), as SDXL was trained with.
            time_ids = torch.tensor([[s.size, s.size, 0, 0, s.size, s.size]], device=dev, dtype=dtype)
            self._added = {"text_embeds": pooled_embeds.to(dev, dtype).expand(b, -1).contiguous(),
                           "time_ids": time_ids.expand(b, -1).contiguous()}
        train_steps = len(self._alphas_cumprod)
        self.timesteps = trailing_timesteps(s.steps, s.strength, train_steps)
        alphas = self._alphas_cumprod[self.timesteps]
        self._t = torch.tensor(self.timesteps, device=dev, dtype=torch.long)
        self._sqrt_a = alphas.sqrt().to(dev, torch.float32).view(-1, 1, 1, 1)
        self._sqrt_1ma = (1 - alphas).sqrt().to(dev, torch.float32).view(-1, 1, 1, 1)
        # The latent shape from the autoencoder itself (TAESD and AutoencoderKL downsample differently).
        with torch.inference_mode():
            latent_shape = self._encode(torch.zeros((1, 3, s.size, s.size), device=dev, dtype=dtype)).shape
        self._generator = torch.Generator("cpu").manual_seed(s.seed)
        # One fixed noise per step, made on the CPU so that a seed gives the same noise on every device.
        self._noise = torch.randn((s.steps, *latent_shape[1:]), generator=self._generator).to(dev, dtype)
        pin = dev.type == "cuda"
        self._host_in = torch.empty((s.size, s.size, 3), dtype=torch.uint8, pin_memory=pin)
        self._host_cond = torch.empty((s.size, s.size, 3), dtype=torch.uint8, pin_memory=pin)
        self._host_out = torch.empty((s.size, s.size, 3), dtype=torch.uint8, pin_memory=pin)
        self._in_flight = []
        self._prev_x0 = None
        self._prepared = True

    def reseed(self, seed: int) -> None:
        """New fixed noise from `seed` (a still's next candidate); the rest of `prepare` stands."""
        if not self._prepared:
            raise RuntimeError("Denoiser: call prepare() first")
        self._generator = torch.Generator("cpu").manual_seed(seed)
        self._noise = torch.randn(tuple(self._noise.shape), generator=self._generator).to(self.device, self.dtype)
        self.reset()

    def reset(self) -> None:
        """Forget the frames in flight and the previous latent (a cut, a new style)."""
        self._in_flight = []
        self._prev_x0 = None

    @torch.inference_mode()
    def __call__(self, crop: RGBImage, condition: RGBImage | None, tag: Any = None) -> tuple[RGBImage, Any]:
        """Re-render `crop` (size x size x 3 uint8) under `condition` (the pose image, same size; ignored
        without a ControlNet). Returns the output crop and the tag of the frame it belongs to: `tag` itself,
        or with stream batch an earlier frame's tag (one frame of delay per extra step)."""
        if not self._prepared:
            raise RuntimeError("Denoiser: call prepare() first")
        s = self.settings
        expected = (s.size, s.size, 3)
        if crop.shape != expected or crop.dtype != np.uint8:
            raise ValueError(f"crop: expected uint8 {expected}, got {crop.dtype} {crop.shape}")
        with self._sections.section("upload"):
            image = self._upload(crop, self._host_in) * (2.0 / 255.0) - 1.0
            cond = None
            if self._controlnet is not None:
                if condition is None or condition.shape != expected:
                    got = None if condition is None else condition.shape
                    raise ValueError(f"condition: expected uint8 {expected} for the ControlNet, got {got}")
                cond = self._upload(condition, self._host_cond) * (1.0 / 255.0)
        if not s.fixed_noise:  # the unstable baseline: new noise every frame
            self._noise.copy_(torch.randn(self._noise.shape, generator=self._generator))
        with self._sections.section("encode"):
            latents = self._encode(image)
            x = self._sqrt_a[0] * latents + self._sqrt_1ma[0] * self._noise[:1]
        with self._sections.section("unet"):
            if self._batch > 1 and len(self._in_flight) == self._batch - 1:
                x0, tag = self._stream_step(x.to(self.dtype), cond, tag)
            else:
                x0 = self._sequential(x.to(self.dtype), cond, tag)
            if s.latent_blend > 0 and self._prev_x0 is not None:
                x0 = torch.lerp(x0, self._prev_x0, s.latent_blend)
            self._prev_x0 = x0
        with self._sections.section("decode"):
            out = self._decode(x0)
        with self._sections.section("download"):
            self._host_out.copy_(out, non_blocking=self.device.type == "cuda")
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
            return self._host_out.numpy().copy(), tag

    def _upload(self, array: RGBImage, host: torch.Tensor) -> torch.Tensor:
        """uint8 HxWx3 -> (1, 3, H, W) float in the model dtype, on the device."""
        host.numpy()[...] = array
        t = host.to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).to(self.dtype)
        return t.contiguous(memory_format=torch.channels_last) if self._channels_last else t

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        encoded = self.components.tiny_vae.encode(image.to(self._vae_dtype))
        # AutoencoderTiny gives latents; AutoencoderKL a distribution, whose mode is deterministic.
        latents = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()
        return (latents.float() - self._vae_shift) * self._vae_scale

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latent (1, 4, h, w) -> (H, W, 3) uint8 on the device."""
        latents = (x0 / self._vae_scale + self._vae_shift).to(self._vae_dtype)
        image = self.components.tiny_vae.decode(latents).sample
        image = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return image.permute(1, 2, 0)

    def _x0(self, x: torch.Tensor, step: int | None, cond: torch.Tensor | None) -> torch.Tensor:
        """One UNet (+ ControlNet) evaluation; returns the predicted clean latents (float32). `step`: the
        step every element is at; None: the stream batch, whose element i is at step i."""
        b = x.shape[0]
        if step is None:
            t, sqrt_a, sqrt_1ma = self._t, self._sqrt_a, self._sqrt_1ma
        else:
            t = self._t[step].expand(b)
            sqrt_a, sqrt_1ma = self._sqrt_a[step], self._sqrt_1ma[step]
        embeds = self._embeds[:b]
        added = None if self._added is None else {k: v[:b] for k, v in self._added.items()}
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        residuals: dict[str, Any] = {}
        if self._controlnet is not None and cond is not None:
            down, mid = self._controlnet(x, t, encoder_hidden_states=embeds, controlnet_cond=cond,
                                         conditioning_scale=self.settings.controlnet_scale,
                                         added_cond_kwargs=added, return_dict=False)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        out = self._unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False,
                         **residuals)[0].float()
        xf = x.float()
        if self._prediction == "epsilon":
            return (xf - sqrt_1ma * out) / sqrt_a
        if self._prediction == "v_prediction":
            return sqrt_a * xf - sqrt_1ma * out
        return out

    def _renoise(self, x0: torch.Tensor, step: int) -> torch.Tensor:
        """The clean latent taken back to `step`'s noise level with that step's fixed noise."""
        return (self._sqrt_a[step] * x0 + self._sqrt_1ma[step] * self._noise[step : step + 1]).to(self.dtype)

    def _sequential(self, x: torch.Tensor, cond: torch.Tensor | None, tag: Any) -> torch.Tensor:
        """All steps of one frame, one after the other. With stream batch this also fills the pipeline
        (its first frames, or after a reset) with this frame's intermediate latents."""
        self._in_flight = []
        x0 = self._x0(x, 0, cond)
        for step in range(1, self.settings.steps):
            x = self._renoise(x0, step)
            if self._batch > 1:  # this frame at steps 1..k-1 fills the stream batch
                self._in_flight.append(_InFlight(x, cond, step, tag))
            x0 = self._x0(x, step, cond)
        return x0

    def _stream_step(self, x: torch.Tensor, cond: torch.Tensor | None, tag: Any) -> tuple[torch.Tensor, Any]:
        """One batched UNet call: the new frame at step 0 and each frame in flight at its step. The frame
        at the last step comes out finished; the others move one step on."""
        flights = sorted(self._in_flight, key=lambda f: f.step)  # steps 1..k-1
        batch_x = torch.cat([x, *(f.latent for f in flights)])
        batch_cond = None
        if cond is not None:
            batch_cond = torch.cat([cond, *(f.condition for f in flights if f.condition is not None)])
        x0 = self._x0(batch_x, None, batch_cond)
        tags = [tag, *(f.tag for f in flights)]
        conds = [cond, *(f.condition for f in flights)]
        self._in_flight = [_InFlight(self._renoise(x0[i : i + 1], i + 1), conds[i], i + 1, tags[i])
                           for i in range(self._batch - 1)]
        return x0[-1:], tags[-1]


def square_region(canvas_size: tuple[int, int], centre_x: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the largest square in a canvas of `canvas_size` (width, height), centred on
    `centre_x` where it fits."""
    width, height = canvas_size
    side = min(width, height)
    x0 = min(max(round(centre_x - side / 2), 0), width - side)
    return x0, (height - side) // 2, side


def feather_mask(side: int, feather: float) -> Mask:
    """side x side float32 weight: 1 inside, falling smoothly to 0 over `feather` * side at each edge."""
    ramp_px = feather * side
    if ramp_px < 1:
        return np.ones((side, side), np.float32)
    d = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32) + 0.5
    edge = np.clip(d / ramp_px, 0.0, 1.0)
    edge = edge * edge * (3 - 2 * edge)  # smoothstep
    return np.outer(edge, edge).astype(np.float32)


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
    pose image put it) through `encoder`, cosine to `centroid`."""

    encoder: FaceEncoder
    centroid: npt.NDArray[np.float32]
    every: int = 30
    scores: list[float] = field(default_factory=list)


@dataclass
class _Pending:
    """What a style or identity change asks for; applied on the render thread before the next frame."""

    prompt: str | None = None
    identity: dict[str, torch.Tensor] | None = None
    identity_scale: float = 1.0
    identity_changed: bool = False


@dataclass
class _Shot:
    """A frame's canvas and where its square is, kept while its crop is being rendered (stream batch)."""

    canvas: RGBImage
    x0: int
    y0: int
    side: int


class IdentityFuser:
    """Fuses an identity LoRA into the components' weights (no per-step cost) and can restore them exactly:
    the original weights of every layer the adapter touches are kept, since unfusing would subtract in fp16
    and drift. Used by the live renderer and by stills."""

    def __init__(self, components: DiffusionComponents, host: Any) -> None:
        self._components = components
        self._host = host
        self._originals: dict[str, torch.Tensor] = {}

    def _modules(self) -> list[Any]:
        c = self._components
        return [m for m in (c.unet, c.text_encoder, c.text_encoder_2) if m is not None]

    def fuse(self, lora: dict[str, torch.Tensor] | None, scale: float) -> None:
        """Restore the weights the previous identity changed, then fuse `lora` (a LoRA state dict; None: no
        identity) at `scale`. A LoRA that does not fit the model raises and leaves the original weights."""
        self.restore()
        if lora is None or scale == 0.0:
            return
        host = self._host
        diffusers_log = logging.getLogger("diffusers")
        level = diffusers_log.level
        try:
            # An identity LoRA without text-encoder weights is normal: not worth diffusers' warning per encoder.
            diffusers_log.setLevel(logging.ERROR)
            # load_lora_weights consumes (pops from) the dict it gets.
            host.load_lora_weights(dict(lora), adapter_name="identity")
        except Exception:
            # A LoRA that does not fit this model: leave no half-added adapter behind.
            host.unload_lora_weights()
            raise
        finally:
            diffusers_log.setLevel(level)
        for owner, module in enumerate(self._modules()):
            for name, sub in module.named_modules():
                base = getattr(sub, "base_layer", None)
                if base is not None and hasattr(base, "weight"):
                    key = f"{owner}:{name}.base_layer.weight"
                    self._originals[key] = base.weight.detach().to("cpu", copy=True)
        host.fuse_lora(lora_scale=scale, adapter_names=["identity"])
        host.unload_lora_weights()  # drops the adapter layers, keeps the fused weights: no per-step cost

    def restore(self) -> None:
        """The original weights back (nothing when no identity is fused)."""
        if not self._originals:
            return
        modules = self._modules()
        with torch.no_grad():
            for key, weight in self._originals.items():
                owner, name = key.split(":", 1)
                # After unloading, "x.base_layer.weight" lives at "x.weight".
                target = modules[int(owner)].get_parameter(name.replace(".base_layer.weight", ".weight"))
                target.copy_(weight.to(target.device, target.dtype))
        self._originals = {}


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
        self._badge = badge_patch(self.output_size[1]) if settings.badge else None
        self._prepared = False
        self._disabled = False
        self._disabled_at_ms = 0
        self._consecutive_failures = 0
        self._last: tuple[npt.NDArray[np.float32], RGBImage] | None = None
        self._skipped = 0
        self._square: tuple[int, int, int] | None = None
        self._likeness = likeness_check
        self.counts = {"generated": 0, "similar_skips": 0, "failures": 0, "studio_frames": 0}

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

    def set_identity(self, lora: dict[str, torch.Tensor] | None, scale: float = 1.0) -> None:
        """Fuse `lora` (a LoRA state dict, from `models/`; None = no identity) at `scale` from the next frame
        on, in place of the current one (thread-safe; the camera keeps running)."""
        check_range("identity_scale", scale, 0.0, 2.0)
        with self._lock:
            self._pending.identity = lora
            self._pending.identity_scale = scale
            self._pending.identity_changed = True

    def prepare(self) -> None:
        """The studio canvas, the identity LoRA fused into the weights, the prompt encoded, the Denoiser's
        constants. Runs again (on the render thread) after `set_style` or `set_identity`."""
        self.studio.prepare()
        self._apply_pending()
        self._prepared = True

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
            self._denoiser.prepare(embeds, pooled)
            self._last = None

    def _fuse_identity(self, lora: dict[str, torch.Tensor] | None, scale: float) -> None:
        """Restore the weights the previous identity changed, then fuse `lora` at `scale`."""
        self._identity, self._identity_scale = None, scale
        self._fuser.fuse(lora, scale)
        self._identity = lora

    def close(self) -> None:
        self.studio.close()
        self._denoiser.reset()
        if self._likeness is not None:
            self._likeness.encoder.close()
        self._prepared = False

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        """The studio canvas with the square around the face re-rendered (output_size, RGB uint8)."""
        if not self._prepared:
            raise RuntimeError("DiffusionRenderer.render: call prepare() first")
        canvas = self.studio.render(image, face, mask, timestamp_ms)
        retry_ms = self.settings.retry_s * 1000
        if self._disabled and retry_ms > 0 and timestamp_ms - self._disabled_at_ms >= retry_ms:
            # Out of memory is often passing (another program let go of the GPU): try again, and one more
            # failure switches back to the studio engine at once.
            self._disabled = False
            self._consecutive_failures = self.settings.max_failures - 1
            log.info("trying the diffusion engine again")
        if self._disabled or face is None:
            self.counts["studio_frames"] += 1
            return canvas
        try:
            if self._has_pending():
                self._apply_pending()
            out = self._render_square(canvas, face)
        except Exception as e:  # an OOM or any other failure on this frame: the studio canvas stands in
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

    def _render_square(self, canvas: RGBImage, face: Face) -> RGBImage:
        s = self.settings
        box = self.studio.last_box
        assert box is not None  # the studio render just set it
        canvas_affine = fr.box_to_affine(box, self.output_size)
        x0, y0, side, to_crop = crop_geometry(self.output_size, canvas_affine, face.landmarks, s.size)
        with self._sections.section("crop"):
            crop = cut_square(canvas, x0, y0, side, s.size)
        thumb = _similarity_thumb(crop)
        if self._last is not None and s.similar_threshold > 0 and self._skipped < s.max_skip:
            last_thumb, last_out = self._last
            if float(np.abs(thumb - last_thumb).mean()) < s.similar_threshold:
                self._skipped += 1
                self.counts["similar_skips"] += 1
                return last_out
        self._skipped = 0
        with self._sections.section("condition"):
            condition = draw_pose(face.landmarks, to_crop, (s.size, s.size)) if self._denoiser.uses_controlnet else None
        rendered, shot = self._denoiser(crop, condition, _Shot(canvas, x0, y0, side))
        with self._sections.section("paste"):
            out = paste_square(shot.canvas, rendered, shot.x0, shot.y0, shot.side, self._feather)
            self._square = (shot.x0, shot.y0, shot.side)
            if self._badge is not None:
                draw_badge(out, *self._badge)
        self.counts["generated"] += 1
        self._last = (thumb, out)
        check = self._likeness
        if check is not None and self.counts["generated"] % check.every == 1 % check.every:
            with self._sections.section("likeness"):
                # ControlNet keeps the pose, so the face sits where the camera's landmarks put it.
                landmarks = face.landmarks.copy()
                landmarks[:, :2] = fr.transform_points(face.landmarks[:, :2], canvas_affine)
                check.scores.append(likeness(check.encoder, out, landmarks, check.centroid).score)
        return out


def crop_geometry(canvas_size: tuple[int, int], canvas_affine: Affine, landmarks: npt.NDArray[np.float32],
                  size: int) -> tuple[int, int, int, Affine]:
    """Where to re-render: the square (x0, y0, side) of the canvas around the face (its nose), and the affine
    from source pixels to the size x size crop of it. `canvas_affine` maps source pixels to the canvas."""
    centre_x = float(fr.transform_points(landmarks[[1], :2], canvas_affine)[0, 0])
    x0, y0, side = square_region(canvas_size, centre_x)
    scale = size / side
    to_crop: Affine = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]]) @ np.vstack(
        [canvas_affine - [[0, 0, x0], [0, 0, y0]], [0, 0, 1]])
    return x0, y0, side, to_crop


def cut_square(canvas: RGBImage, x0: int, y0: int, side: int, size: int) -> RGBImage:
    """The canvas's square at (x0, y0) resized to size x size."""
    square = canvas[y0 : y0 + side, x0 : x0 + side]
    return cast(RGBImage, cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


def paste_square(canvas: RGBImage, rendered: RGBImage, x0: int, y0: int, side: int, feather: Mask) -> RGBImage:
    """`rendered` scaled to side x side and blended into a copy of `canvas` at (x0, y0) through `feather`
    (rendered-sized weight)."""
    scale = side / rendered.shape[0]
    affine: Affine = np.array([[scale, 0.0, x0 + 0.5 * scale - 0.5], [0.0, scale, y0 + 0.5 * scale - 0.5]])
    return fr.paste_back(canvas, rendered, affine, feather)


def host_pipeline(c: DiffusionComponents) -> Any:
    """A diffusers pipeline around the components (nothing loaded): its prompt encoder and LoRA loader are
    the real, maintained code for both the SDXL and the SD 2.x families."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if c.is_sdxl:
        return StableDiffusionXLPipeline(vae=c.tiny_vae, text_encoder=c.text_encoder, text_encoder_2=c.text_encoder_2,
                                         tokenizer=c.tokenizer, tokenizer_2=c.tokenizer_2, unet=c.unet,
                                         scheduler=c.scheduler)
    return StableDiffusionPipeline(vae=c.tiny_vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet,
                                   scheduler=c.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def encode_prompt(host: Any, prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt_embeds (1, 77, D), pooled (1, P) or None for SD 2.x) through the pipeline's own encoder."""
    with torch.inference_mode():
        if hasattr(host, "text_encoder_2"):
            embeds, _, pooled, _ = host.encode_prompt(prompt, device=device, num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
            return embeds, pooled
        embeds, _ = host.encode_prompt(prompt, device=device, num_images_per_prompt=1,
                                       do_classifier_free_guidance=False)
        return embeds, None

