"""The identity training's data: the training resolution, the (photo, caption) examples checked, and each
photo (and its mirror image) encoded once by the VAE and each caption once by the text encoders, for every
step to read.

torch is imported inside the functions, as everywhere in `models/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.types import RGBImage
from models.training_settings import TrainingSettings

if TYPE_CHECKING:
    import torch

    from engine.denoiser import DiffusionComponents


@dataclass
class TrainingData:
    """Everything the steps read, made once: latents of every view (the photos, then their mirror images),
    the caption of each view, and the encoded captions unless the text encoders are trained."""

    latents: torch.Tensor
    """(views, C, h, w) float32 on the device, scaled as the UNet expects."""
    captions: list[str]
    """One per photo; view v shows photo v % photos."""
    photos: int
    embeds: torch.Tensor | None
    """(photos, tokens, D) in the UNet's dtype; None when the text encoders are trained (encoded per step)."""
    pooled: torch.Tensor | None
    """(photos, P) for SDXL, else None."""
    time_ids: torch.Tensor | None
    """(1, 6) SDXL micro-conditioning: original size, crop top-left (0, 0), target size."""


def training_resolution(components: DiffusionComponents, settings: TrainingSettings) -> int:
    """The side of the square training images: `settings.resolution`, or with 0 the base's native size (the
    UNet's sample_size times the VAE's downsampling: 1024 for SDXL, 512 for SDXL-Turbo). Raises ValueError
    for a size the model cannot take."""
    vae_factor = _vae_scale_factor(_training_vae(components))
    resolution = settings.resolution
    if not resolution:
        sample_size = components.unet.config.sample_size
        if not isinstance(sample_size, int):
            raise ValueError(f"resolution = 0: the UNet's sample_size {sample_size!r} is not one number; set "
                             "resolution explicitly")
        resolution = sample_size * vae_factor
    # The latent must halve cleanly at each of the UNet's downsamplings.
    multiple = vae_factor * 2 ** (len(components.unet.config.block_out_channels) - 1)
    if resolution % multiple:
        raise ValueError(f"resolution = {resolution}: this model needs a multiple of {multiple}")
    return resolution


def check_examples(examples: Sequence[tuple[RGBImage, str]], resolution: int) -> None:
    if len(examples) == 0:
        raise ValueError("examples: no training photos; expected at least one (image, caption) pair")
    expected = (resolution, resolution, 3)
    for i, example in enumerate(examples):
        if not isinstance(example, tuple | list) or len(example) != 2:
            raise ValueError(f"examples[{i}]: expected an (image, caption) pair, got {type(example).__name__}")
        image, caption = example
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != expected:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"examples[{i}]: expected a uint8 RGB image of {expected} (the training resolution), "
                             f"got {got}")
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"examples[{i}]: the caption is empty; expected e.g. 'a photo of ohwx person'")


def _training_vae(components: DiffusionComponents) -> Any:
    """The full VAE when loaded (the UNet's own latent space); else the live frames' autoencoder (TAESD's
    latents approximate it)."""
    return components.vae if components.vae is not None else components.tiny_vae


def _vae_scale_factor(vae: Any) -> int:
    config = vae.config
    blocks = getattr(config, "block_out_channels", None) or getattr(config, "encoder_block_out_channels", None)
    return 2 ** (len(blocks) - 1) if blocks else 8


def prepare_data(components: DiffusionComponents, host: Any, examples: Sequence[tuple[RGBImage, str]],
                 flip: bool, encode_text: bool) -> TrainingData:
    """Encode the photos (and their mirror images) with the VAE and, with `encode_text`, the captions."""
    import torch

    from engine.denoiser import encode_prompt

    device = components.device
    vae = _training_vae(components)
    vae_dtype = next(vae.parameters()).dtype
    # SDXL's own VAE overflows in fp16 (its config says so): encode in float32. fp16 -> fp32 -> fp16 is exact,
    # so the caller's VAE comes back unchanged.
    upcast = bool(getattr(vae.config, "force_upcast", False)) and vae_dtype == torch.float16
    scale = float(getattr(vae.config, "scaling_factor", 1.0))
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    images = [image for image, _ in examples]
    if flip:
        images += [np.ascontiguousarray(image[:, ::-1]) for image, _ in examples]
    latents = []
    try:
        if upcast:
            vae.to(torch.float32)
        dtype = torch.float32 if upcast else vae_dtype
        with torch.no_grad():  # not inference_mode: these tensors are inputs of the training graph
            for image in images:  # one at a time: a 1024 px encode in float32 needs GBs of activations
                pixels = torch.tensor(image, device=device).permute(2, 0, 1).unsqueeze(0).to(dtype) / 127.5 - 1.0
                encoded = vae.encode(pixels)
                # AutoencoderKL: the posterior's mean (mode), as the engine encodes; its spread is tiny next to
                # the diffusion noise, and the mean keeps the latents fixed. AutoencoderTiny: its latents.
                latent = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()
                latents.append((latent.float() - shift) * scale)
    finally:
        if upcast:
            vae.to(vae_dtype)
    captions = [caption for _, caption in examples]
    unet_dtype = components.unet.dtype
    embeds = pooled = time_ids = None
    if encode_text:
        encoded_captions: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for caption in dict.fromkeys(captions):
            with torch.no_grad():
                e, p = encode_prompt(host, caption, device)
                # encode_prompt runs in inference mode; a clone outside it can enter the training graph.
                encoded_captions[caption] = (e.clone(), None if p is None else p.clone())
        embeds = torch.cat([encoded_captions[c][0] for c in captions]).to(device, unet_dtype)
        pooled_parts = [p for p in (encoded_captions[c][1] for c in captions) if p is not None]
        if pooled_parts:
            pooled = torch.cat(pooled_parts).to(device, unet_dtype)
    if getattr(components.unet.config, "addition_embed_type", None) == "text_time":
        height, width = examples[0][0].shape[:2]
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=device, dtype=unet_dtype)
    return TrainingData(latents=torch.cat(latents), captions=captions, photos=len(examples), embeds=embeds,
                        pooled=pooled, time_ids=time_ids)
