"""The diffusion engine's tensor core: `Denoiser`, uint8 crop in, uint8 crop out.

Tiny-VAE encode, noise to the first timestep, UNet (+ ControlNet) steps with no classifier-free guidance,
decode. Everything that does not change per frame (prompt embeddings, time ids, timesteps, alphas, fixed
noise, pinned buffers) is made in `prepare()`. With 2+ steps and `stream_batch`, frame n's first step and frame
n-1's second step run as one UNet batch (StreamDiffusion's scheme): one UNet call per frame at the price of
one frame of delay. Also the components it runs on (`DiffusionComponents`, built by `models/`) and the
diffusers host pipeline whose prompt encoder and LoRA loader the engine reuses.

Pixels: RGB uint8 at the boundary; inside, NCHW tensors in [-1, 1] (images), [0, 1] (the ControlNet
condition) or latent space, in the components' dtype.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.cuda_threads import cuda_graph_thread
from engine.diffusion_settings import DiffusionSettings
from engine.square_ops import DeviceSquare
from engine.stage_clock import FrameStages
from engine.types import Mask, NoSections, RGBImage, Sections

__all__ = ["Denoiser", "DiffusionComponents", "encode_prompt", "host_pipeline", "trailing_timesteps"]


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


@dataclass
class _HostBuffers:
    """One frame's pinned host buffers (crop and condition in, crop out; with `set_square`, the square in and
    out)."""

    crop: torch.Tensor
    condition: torch.Tensor
    out: torch.Tensor
    square: torch.Tensor | None = None
    square_out: torch.Tensor | None = None


@dataclass
class _Submitted:
    """A frame submitted to the device: where its output lands, the event that says it has, its tag."""

    out: torch.Tensor
    done: Any
    tag: Any
    stages: FrameStages


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
        if c.device.type == "cuda":
            # Fixed shapes every frame: let cuDNN pick its fastest convolutions once; TF32 for the fp32 glue.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._channels_last = settings.channels_last and c.device.type == "cuda"
        if self._channels_last:
            for module in (c.unet, c.controlnet, c.tiny_vae):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        self._unet: Callable[..., Any] = c.unet
        self._controlnet: Callable[..., Any] | None = c.controlnet
        self.compiled = settings.compile == "on" or (settings.compile == "auto" and c.device.type == "cuda")
        if self.compiled:
            # Static shapes: batch 1 and the stream batch k each get their own graph, both made by `warm_up`,
            # never a recompile (or a dynamic-shape graph) while live.
            mode = "reduce-overhead" if settings.cuda_graphs else "max-autotune-no-cudagraphs"
            self._unet = torch.compile(c.unet, mode=mode, fullgraph=False, dynamic=False)
            if c.controlnet is not None:
                self._controlnet = torch.compile(c.controlnet, mode=mode, fullgraph=False, dynamic=False)
        self._graphed = self.compiled and settings.cuda_graphs and c.device.type == "cuda"
        self._square: DeviceSquare | None = None
        self._residuals: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}
        """ControlNet residuals per step of the latest frame that ran it (`settings.controlnet_reuse`)."""
        self.controlnet_calls = 0
        self.stage_ms: deque[dict[str, float]] = deque(maxlen=1000)
        """Per collected frame, its stages' times (ms; CUDA events on CUDA, wall clock on the CPU)."""
        self._prepared = False
        self._buffers: list[_HostBuffers] = []
        self._parity = 0
        self._submitted: list[_Submitted] = []
        self._in_flight: list[_InFlight] = []
        self._prev_x0: torch.Tensor | None = None
        self._reuse_control = False
        self._stages = FrameStages(False)

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
        # Two sets of pinned buffers: with `submit`, frame n+1 is written while frame n's copies may still be
        # queued on the stream.
        self._buffers = [_HostBuffers(*(torch.empty((s.size, s.size, 3), dtype=torch.uint8, pin_memory=pin)
                                        for _ in range(3))) for _ in range(2)]
        if self._square is not None:
            self._square_buffers(self._square.side)
        self._parity = 0
        self.discard()
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
        """Forget the frames in flight, the previous latent and the kept ControlNet residuals (a cut, a new
        style)."""
        self._in_flight = []
        self._prev_x0 = None
        self._residuals = {}
        self.discard()

    def set_square(self, side: int, weight: Mask) -> None:
        """Take the canvas's side x side square from now on (`submit_square`): resized to the model's size on the
        device, and the output blended back into it there through `weight` (side x side, see
        `engine.square_ops.paste_weight`)."""
        self.discard()
        self._square = DeviceSquare(side, self.settings.size, weight, self.device)
        if self._buffers:
            self._square_buffers(side)

    def _square_buffers(self, side: int) -> None:
        pin = self.device.type == "cuda"
        for b in self._buffers:
            b.square, b.square_out = (torch.empty((side, side, 3), dtype=torch.uint8, pin_memory=pin)
                                      for _ in range(2))

    def warm_up(self) -> None:
        """Run every shape a live frame runs (batch 1, and with stream batch the batch of k; the ControlNet
        fresh and reused) on blank frames, then forget them: a compiled Denoiser compiles and captures here,
        not on a live frame."""
        s = self.settings
        side = self._square.side if self._square is not None else s.size
        blank = np.zeros((side, side, 3), np.uint8)
        cond = np.zeros((s.size, s.size, 3), np.uint8)
        for i in range(2 * (s.steps + 2)):  # CUDA graph trees: each path (fresh, reused) warmed, recorded, replayed
            if self._square is not None:
                self.submit_square(blank, cond, None, reuse_control=i % 2 == 1)
            else:
                self.submit(blank, cond, None, reuse_control=i % 2 == 1)
            self.collect()
        self.reset()
        self.stage_ms.clear()

    def __call__(self, crop: RGBImage, condition: RGBImage | None, tag: Any = None) -> tuple[RGBImage, Any]:
        """Re-render `crop` (size x size x 3 uint8) under `condition` (the pose image, same size; ignored
        without a ControlNet). Returns the output crop and the tag of the frame it belongs to: `tag` itself,
        or with stream batch an earlier frame's tag (one frame of delay per extra step). The same as
        `submit` then `collect`."""
        self.submit(crop, condition, tag)
        result = self.collect()
        assert result is not None
        return result

    @property
    def pending(self) -> int:
        """Frames submitted and not collected yet."""
        return len(self._submitted)

    def submit(self, crop: RGBImage, condition: RGBImage | None, tag: Any = None, reuse_control: bool = False) -> None:
        """Queue the re-render of `crop` (see `__call__`) and return without waiting for the device: on CUDA
        the caller's CPU work overlaps the GPU's until `collect`. At most two frames may be pending.
        `reuse_control`: use the ControlNet residuals kept from the latest frame that ran it (the pose has
        barely moved) instead of running it; they are kept only with `settings.controlnet_reuse` > 0."""
        self._submit(crop, condition, tag, reuse_control, square=False)

    def submit_square(self, square: RGBImage, condition: RGBImage | None, tag: Any = None,
                      reuse_control: bool = False) -> None:
        """`submit` for the canvas's square itself (side x side, `set_square`): resized on the device, and
        `collect` gives the finished square, the output blended into it."""
        if self._square is None:
            raise RuntimeError("Denoiser.submit_square: call set_square() first")
        self._submit(square, condition, tag, reuse_control, square=True)

    @torch.inference_mode()
    def _submit(self, crop: RGBImage, condition: RGBImage | None, tag: Any, reuse_control: bool,
                square: bool) -> None:
        if not self._prepared:
            raise RuntimeError("Denoiser: call prepare() first")
        if self._graphed:
            cuda_graph_thread()
            torch.compiler.cudagraph_mark_step_begin()  # one frame, one generation of the graph trees
        if len(self._submitted) >= len(self._buffers):
            raise RuntimeError("Denoiser.submit: two frames are pending; collect() one first")
        s = self.settings
        expected = (s.size, s.size, 3)
        side = self._square.side if square and self._square is not None else s.size
        if crop.shape != (side, side, 3) or crop.dtype != np.uint8:
            raise ValueError(f"crop: expected uint8 {(side, side, 3)}, got {crop.dtype} {crop.shape}")
        buffers = self._buffers[self._parity]
        self._parity = 1 - self._parity
        stages = FrameStages(self.device.type == "cuda")
        self._reuse_control = reuse_control
        self._stages = stages
        square_dev = None
        with self._sections.section("upload"), stages.stage("upload"):
            if square and self._square is not None and buffers.square is not None:
                buffers.square.numpy()[...] = crop
                square_dev = buffers.square.to(self.device, non_blocking=True)
                image = self._model_input(self._square.crop(square_dev)) * (2.0 / 255.0) - 1.0
            else:
                image = self._upload(crop, buffers.crop) * (2.0 / 255.0) - 1.0
            cond = None
            if self._controlnet is not None:
                if condition is None or condition.shape != expected:
                    got = None if condition is None else condition.shape
                    raise ValueError(f"condition: expected uint8 {expected} for the ControlNet, got {got}")
                cond = self._upload(condition, buffers.condition) * (1.0 / 255.0)
        if not s.fixed_noise:  # the unstable baseline: new noise every frame
            self._noise.copy_(torch.randn(self._noise.shape, generator=self._generator))
        with self._sections.section("encode"), stages.stage("encode"):
            latents = self._encode(image)
            x = self._sqrt_a[0] * latents + self._sqrt_1ma[0] * self._noise[:1]
        with self._sections.section("unet"), stages.stage("unet"):
            if self._batch > 1 and len(self._in_flight) == self._batch - 1:
                x0, tag = self._stream_step(x.to(self.dtype), cond, tag)
            else:
                x0 = self._sequential(x.to(self.dtype), cond, tag)
            if s.latent_blend > 0 and self._prev_x0 is not None:
                x0 = torch.lerp(x0, self._prev_x0, s.latent_blend)
            self._prev_x0 = x0
        cuda = self.device.type == "cuda"
        with self._sections.section("decode"), stages.stage("decode"):
            levels = self._decode(x0)
            if square_dev is not None and self._square is not None and buffers.square_out is not None:
                host = buffers.square_out
                host.copy_(self._square.paste(levels, square_dev), non_blocking=cuda)
            else:
                host = buffers.out
                host.copy_(levels[0].to(torch.uint8).permute(1, 2, 0), non_blocking=cuda)
        done = None
        if cuda:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
        self._submitted.append(_Submitted(host, done, tag, stages))

    def collect(self) -> tuple[RGBImage, Any] | None:
        """The oldest submitted frame's output crop and tag (see `__call__`), waiting for its CUDA event only
        (not the whole device); None when nothing is pending."""
        if not self._submitted:
            return None
        item = self._submitted.pop(0)
        with self._sections.section("download"):
            if item.done is not None:
                item.done.synchronize()
            out = item.out.numpy().copy()
        stage_ms = item.stages.resolve()
        self.stage_ms.append(stage_ms)
        add = getattr(self._sections, "add", None)  # livecam's Stats: the device's own times beside the wall's
        if item.stages.cuda and callable(add):
            for name, ms in stage_ms.items():
                add(f"gpu_{name}", ms)
        return out, item.tag

    def discard(self) -> None:
        """Forget the frames submitted and not collected (a failure, a reset)."""
        for item in self._submitted:
            if item.done is not None:
                item.done.synchronize()  # their buffers may be written again only once the copies are done
        self._submitted = []

    def _upload(self, array: RGBImage, host: torch.Tensor) -> torch.Tensor:
        """uint8 HxWx3 -> (1, 3, H, W) float in the model dtype, on the device."""
        host.numpy()[...] = array
        return self._model_input(host.to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0))

    def _model_input(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.dtype)
        return t.contiguous(memory_format=torch.channels_last) if self._channels_last else t

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        encoded = self.components.tiny_vae.encode(image.to(self._vae_dtype))
        # AutoencoderTiny gives latents; AutoencoderKL a distribution, whose mode is deterministic.
        latents = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()
        return (latents.float() - self._vae_shift) * self._vae_scale

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latent (1, 4, h, w) -> (1, 3, H, W) float32 in whole grey levels 0..255, on the device."""
        latents = (x0 / self._vae_scale + self._vae_shift).to(self._vae_dtype)
        image = self.components.tiny_vae.decode(latents).sample
        return ((image.float().clamp(-1, 1) + 1) * 127.5).round()

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
            kept = self._residuals.get(step) if step is not None and self._reuse_control else None
            if kept is None:
                with self._stages.stage("controlnet"):
                    down, mid = self._controlnet(x, t, encoder_hidden_states=embeds, controlnet_cond=cond,
                                                 conditioning_scale=self.settings.controlnet_scale,
                                                 added_cond_kwargs=added, return_dict=False)
                self.controlnet_calls += 1
                if self._graphed:
                    # A CUDA graph's outputs live until its next replay, or until the graph trees start a new
                    # generation (which the UNet's first compiled call does: pytorch#160281): copies, ~13 MB.
                    down, mid = [r.clone() for r in down], mid.clone()
                if step is not None and self.settings.controlnet_reuse > 0:
                    self._residuals[step] = (down, mid)
            else:
                down, mid = kept
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        out = self._unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False,
                         **residuals)[0]
        # float32 (a copy, so nothing kept refers to the CUDA graph's output, rewritten next frame).
        out = out.clone() if self._graphed and out.dtype == torch.float32 else out.float()
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
