"""The Denoiser against diffusers' own StableDiffusionXLControlNetImg2ImgPipeline: the same tiny random SDXL
components, prompt embeddings, timestep and noise give the same picture. Every other numeric test compares
livecam with itself; this one holds the tensor core to the maintained reference implementation."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionXLControlNetImg2ImgPipeline
from PIL import Image

from engine.denoiser import Denoiser, DiffusionComponents, encode_prompt, host_pipeline
from engine.diffusion_settings import DiffusionSettings
from tests.tiny_sdxl import tiny_components

SIZE = 64
SEED = 7
STRENGTH = 0.5
PROMPT = "a professional headshot"


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """A smooth crop and a pose-like condition (random pixels would make the comparison hinge on noise)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    crop = np.stack([200 * x + 30, 180 * y + 40, 120 + 80 * x * y], axis=-1).round().astype(np.uint8)
    condition = np.zeros((SIZE, SIZE, 3), np.uint8)
    condition[20:44, 28:36] = 255
    condition[30:34, 12:52] = (0, 255, 0)
    return crop, condition


def test_denoiser_matches_the_diffusers_controlnet_img2img_pipeline() -> None:
    c = tiny_components(0)
    comp = DiffusionComponents(unet=c["unet"], tiny_vae=c["tiny_vae"], text_encoder=c["text_encoder"],
                               tokenizer=c["tokenizer"], scheduler=c["scheduler"], device=torch.device("cpu"),
                               dtype=torch.float32, controlnet=c["controlnet"], text_encoder_2=c["text_encoder_2"],
                               tokenizer_2=c["tokenizer_2"])
    crop, condition = _inputs()
    embeds, pooled = encode_prompt(host_pipeline(comp), PROMPT, comp.device)

    denoiser = Denoiser(comp, DiffusionSettings(size=SIZE, steps=1, strength=STRENGTH, seed=SEED,
                                                controlnet_scale=1.0))
    denoiser.prepare(embeds, pooled)
    ours, _ = denoiser(crop, condition)

    # The reference: one DDIM step with trailing spacing lands on the predicted clean latent (alpha_prev = 1),
    # which is the Denoiser's 1-step update; 2 inference steps at strength 0.5 start at timestep 499, as ours.
    scheduler = DDIMScheduler.from_config(comp.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True,
                                          clip_sample=False, steps_offset=0)
    pipe = StableDiffusionXLControlNetImg2ImgPipeline(
        vae=comp.tiny_vae, text_encoder=comp.text_encoder, text_encoder_2=comp.text_encoder_2,
        tokenizer=comp.tokenizer, tokenizer_2=comp.tokenizer_2, unet=comp.unet, controlnet=comp.controlnet,
        scheduler=scheduler, requires_aesthetics_score=False, force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    assert denoiser.timesteps == [499]
    reference = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, image=Image.fromarray(crop),
                     control_image=Image.fromarray(condition), strength=STRENGTH, num_inference_steps=2,
                     guidance_scale=0.0, controlnet_conditioning_scale=1.0, height=SIZE, width=SIZE,
                     generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images[0]
    theirs = (reference * 255).round().astype(np.uint8)

    difference = np.abs(ours.astype(int) - theirs.astype(int))
    assert difference.max() <= 1, f"max difference {difference.max()} levels"
    # A pinned slice, as diffusers' own pipeline tests do: a change in the tensor core shows here first.
    expected = np.array([[127, 125, 52], [111, 99, 48], [77, 93, 98]])
    np.testing.assert_allclose(ours[30:33, 30:33, 0].astype(int), expected, atol=2)
