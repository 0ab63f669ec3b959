"""Diffusion stills: one headshot candidate per seed, at the base model's full resolution.

The same tensor core as the live engine (`Denoiser`), set up for quality instead of latency: the full VAE
instead of the tiny one, more steps, no stream batch, and fresh noise from each candidate's seed, so any
image can be made again from its recorded seed. The identity LoRA is fused once for the whole run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from engine.denoiser import Denoiser, DiffusionComponents, encode_prompt, host_pipeline
from engine.diffusion_settings import DiffusionSettings
from engine.identity_fuser import IdentityFuser
from engine.types import RGBImage


def native_size(components: DiffusionComponents) -> int:
    """The base model's own resolution: the UNet's sample size times the VAE's downsampling (SDXL 1024,
    SDXL-Turbo 512)."""
    vae = components.vae if components.vae is not None else components.tiny_vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    sample = components.unet.config.sample_size
    if not isinstance(sample, int):
        raise ValueError(f"the UNet's sample_size {sample!r} is not one number; set still.size")
    return int(sample * factor)


class StillGenerator:
    """`generate(canvas, condition, seed)` -> a size x size candidate. Not thread-safe."""

    def __init__(self, components: DiffusionComponents, settings: DiffusionSettings,
                 identity: dict[str, torch.Tensor] | None = None, fuser: IdentityFuser | None = None) -> None:
        """`fuser`: the identity fuser of a live renderer whose components these are (`DiffusionRenderer.fuser`):
        one owner of what is fused into the shared weights. The caller pauses that renderer while a still
        fuses another identity, and hands the weights back (`DiffusionRenderer.reclaim_weights`)."""
        if components.vae is None:
            raise ValueError("components.vae: stills need the full VAE (load_full_vae=True), got None")
        self.components = components
        # The full VAE takes the tiny VAE's place in the Denoiser; stills are single images, never a stream.
        full = dataclasses.replace(components, tiny_vae=components.vae)
        self.settings = dataclasses.replace(settings, stream_batch=False, fixed_noise=True, latent_blend=0.0,
                                            compile="off", cuda_graphs=False)
        self._denoiser = Denoiser(full, self.settings)
        self._host = host_pipeline(full)
        self._shared = fuser is not None
        self._fuser = fuser if fuser is not None else IdentityFuser(full, self._host)
        self._prompt: str | None = None
        if not self._shared or identity is not None:
            self.set_identity(identity)

    @property
    def size(self) -> int:
        return self.settings.size

    @property
    def uses_controlnet(self) -> bool:
        return self._denoiser.uses_controlnet

    def set_identity(self, identity: dict[str, torch.Tensor] | None) -> None:
        """Fuse `identity` (a LoRA state dict; None: none) in place of the current one, at the settings'
        `identity_scale` (a batch switches person without reloading the model)."""
        self._fuser.fuse(identity, self.settings.identity_scale)
        self._prompt = None  # a LoRA with text-encoder weights changes the embeddings

    def weights_changed(self) -> None:
        """The shared weights now hold another identity (fused by the live renderer): encode the prompt again
        before the next candidate (an identity LoRA may change the text encoders)."""
        self._prompt = None

    def set_prompt(self, prompt: str) -> None:
        """Encode `prompt` and prepare the Denoiser's constants for it (once per style)."""
        if prompt != self._prompt:
            embeds, pooled = encode_prompt(self._host, prompt, self.components.device)
            self._denoiser.prepare(embeds, pooled)
            self._prompt = prompt

    def generate(self, canvas: RGBImage, condition: RGBImage | None, seed: int) -> RGBImage:
        """One candidate from `canvas` (size x size RGB uint8, the studio-framed photo) under the pose image
        `condition` (same size; ignored without a ControlNet), with noise from `seed`."""
        if self._prompt is None:
            raise RuntimeError("StillGenerator: call set_prompt() first")
        self._denoiser.reseed(seed)
        out, _ = self._denoiser(canvas, condition)
        return out

    def close(self) -> None:
        """Give the weights back as they were (a shared fuser stays with its live renderer, which owns them)."""
        if not self._shared:
            self._fuser.restore()

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"size": s.size, "steps": s.steps, "strength": s.strength, "controlnet_scale": s.controlnet_scale,
                "identity_scale": s.identity_scale, "timesteps": self._denoiser.timesteps
                if self._prompt is not None else None}
