"""The identity LoRA: DreamBooth-style LoRA training on the loaded base model's UNet (optionally its text
encoders) from a handful of photos of one person, saved in diffusers format for `load_lora_weights` and the
live engine's `set_identity`.

The recipe is diffusers' `train_dreambooth_lora_sdxl.py`, without accelerate and the text-to-image extras:
PEFT LoRA (r = lora_alpha = rank, gaussian init) on the attention projections; the photos encoded once by the
VAE (and mirrored); the captions encoded once; the noise-prediction loss (MSE against the noise, or the
velocity for a v-prediction base) at uniform random timesteps of a DDPMScheduler with the base's own noise
schedule; AdamW on the LoRA weights only, gradients clipped at 1. On CUDA: autocast (fp16 with loss scaling,
or bf16) and gradient checkpointing; on the CPU plain float32.

Determinism: every random draw comes from a generator seeded by (seed, what, step), made on the CPU: the
batch order of each pass over the photos, each step's noise and timesteps, the LoRA's initial weights. So a
run depends on nothing but the seed, a checkpoint needs no RNG state, and a resumed run repeats exactly what
an uninterrupted one does (bit for bit on the CPU; CUDA kernels may round differently run to run).

This module is the loop: the plan for the device, the objective (what a step draws and computes), the
optimizer steps, evaluation. Beside it: the data, encoded once (`lora_data`), the adapters put on and taken off
the components and saved (`lora_adapters`), checkpoints and resuming (`lora_checkpoints`).

torch, diffusers and peft are imported inside the functions, as everywhere in `models/`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.types import RGBImage
from models.lora_adapters import ADAPTER, adapters, check_no_adapters, save_lora, trained_modules
from models.lora_checkpoints import (
    checkpoint_to_resume,
    discard_checkpoints,
    examples_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from models.lora_data import TrainingData, check_examples, prepare_data, training_resolution
from models.training_settings import TrainingSettings

if TYPE_CHECKING:
    import torch

    from engine.denoiser import DiffusionComponents

log = logging.getLogger(__name__)

__all__ = ["TrainingPlan", "TrainingResult", "TrainingSettings", "evaluation_loss", "train_identity_lora",
           "training_plan"]

_WEIGHT_DECAY = 1e-4
_MAX_GRAD_NORM = 1.0
_SMOOTHING = 0.95
"""Weight of the past in the displayed (exponentially smoothed) loss: single steps vary a lot with the timestep."""
# What a generator is seeded for, beside the seed and the step: independent streams.
_ORDER, _STEP, _EVAL, _INIT = 1, 2, 3, 4


@dataclass
class TrainingResult:
    lora_path: Path
    """The LoRA in diffusers format (`out_dir/pytorch_lora_weights.safetensors`)."""
    steps: int
    seconds: float
    """Wall time of this call: encoding, training (from the checkpoint, when resumed) and saving."""
    final_loss: float
    """The evaluation loss (see `evaluation_loss`) after the last step."""
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, evaluation loss): at step 0 and every `eval_every` steps when asked, and after the last step;
    earlier ones from the checkpoint when resumed."""
    train_loss: float = math.nan
    """The training loss, exponentially smoothed, at the last step (what the progress bar showed)."""
    prepare_seconds: float = 0.0
    """Of `seconds`: encoding the photos and captions and setting up the adapter."""
    resumed_from: int = 0
    """The checkpoint's step when resumed, else 0."""


@dataclass(frozen=True)
class TrainingPlan:
    """How the steps run on this device: autocast type (None = none), loss scaling, gradient checkpointing."""

    autocast: torch.dtype | None
    scaler: bool
    checkpointing: bool

    def describe(self) -> str:
        """E.g. "float16 autocast, loss scaling, gradient checkpointing", or "no autocast"."""
        parts = [f"{str(self.autocast).removeprefix('torch.')} autocast" if self.autocast else "no autocast"]
        parts += [name for name, on in (("loss scaling", self.scaler), ("gradient checkpointing", self.checkpointing))
                  if on]
        return ", ".join(parts)


def train_identity_lora(components: DiffusionComponents, examples: Sequence[tuple[RGBImage, str]],
                        settings: TrainingSettings, out_dir: str | Path, resume: bool = False,
                        progress: bool = True, eval_every: int = 0,
                        on_step: Callable[[int, float], None] | None = None) -> TrainingResult:
    """Train the identity LoRA on `examples` ((RGB uint8 image at `training_resolution`, caption) pairs) and
    save it to `out_dir/pytorch_lora_weights.safetensors` (diffusers format).

    A checkpoint is written every `settings.checkpoint_every` steps to `out_dir/checkpoints/step-NNNNNN/`
    (only the newest is kept; all are removed once the LoRA is saved). `resume`: continue from the newest
    checkpoint (from the start when there is none) with the same result as an uninterrupted run; without it
    old checkpoints are discarded. `eval_every` > 0: the evaluation loss at step 0 and every that many steps
    (it is always taken after the last step). `on_step(step, loss)` is called after every step (1-based),
    after that step's checkpoint; an exception from it stops training there, as an interruption would.

    The components are left as they were: the adapter is removed and the base weights are never changed,
    also when training fails. Raises ValueError for bad examples or settings, and for a checkpoint made
    with other photos or settings.
    """
    import torch

    from engine.denoiser import host_pipeline

    t_start = time.perf_counter()
    out = Path(out_dir)
    resolution = training_resolution(components, settings)
    check_examples(examples, resolution)
    if eval_every < 0:
        raise ValueError(f"eval_every = {eval_every}: must be 0 (only at the end) or a number of steps")
    plan = training_plan(settings, components)
    fingerprint = examples_fingerprint(examples, resolution)
    checkpoint = checkpoint_to_resume(out, resume, settings, fingerprint)
    out.mkdir(parents=True, exist_ok=True)

    host = host_pipeline(components)
    trained = trained_modules(components, settings)
    check_no_adapters(trained)
    with adapters(trained, settings, _generator(settings.seed, _INIT), plan.checkpointing):
        data = prepare_data(components, host, examples, settings.flip, encode_text=not settings.train_text_encoder)
        objective = _Objective(components, host, data, plan, settings.seed)
        params = [p for module in trained.values() for p in module.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trained["unet"].parameters() if p.requires_grad],
                   "lr": settings.learning_rate}]
        for name in ("text_encoder", "text_encoder_2"):
            if name in trained:
                groups.append({"params": [p for p in trained[name].parameters() if p.requires_grad],
                               "lr": settings.text_encoder_learning_rate})
        optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=_WEIGHT_DECAY, eps=1e-8)
        scaler = torch.amp.GradScaler(components.device.type) if plan.scaler else None
        start, train_loss = 0, math.nan
        eval_losses: list[tuple[int, float]] = []
        if checkpoint is not None:
            start, train_loss, eval_losses = load_checkpoint(*checkpoint, trained, optimizer, scaler,
                                                             components.device)
            log.info("resuming identity training from step %d (%s)", start, checkpoint[0])
        prepare_seconds = time.perf_counter() - t_start
        if eval_every and start == 0:
            eval_losses.append((0, objective.evaluation()))

        bar = _progress_bar(settings.steps, start, progress)
        try:
            for step in range(start, settings.steps):
                loss = _train_step(objective, optimizer, scaler, params, step, settings.batch_size)
                train_loss = loss if math.isnan(train_loss) else _SMOOTHING * train_loss + (1 - _SMOOTHING) * loss
                done = step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
                if eval_every and done % eval_every == 0:
                    eval_losses.append((done, objective.evaluation()))
                if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps:
                    save_checkpoint(out, done, trained, optimizer, scaler, settings=settings, fingerprint=fingerprint,
                                    train_loss=train_loss, eval_losses=eval_losses)
                if on_step is not None:
                    on_step(done, loss)
        finally:
            bar.close()
        if not eval_losses or eval_losses[-1][0] != settings.steps:
            eval_losses.append((settings.steps, objective.evaluation()))
        lora_path = save_lora(host, trained, out)
    discard_checkpoints(out)  # the LoRA is saved: nothing is left to resume
    seconds = time.perf_counter() - t_start
    log.info("identity LoRA saved to %s (%d steps, %.0f s, evaluation loss %.4f)", lora_path, settings.steps,
             seconds, eval_losses[-1][1])
    return TrainingResult(lora_path=lora_path, steps=settings.steps, seconds=seconds, final_loss=eval_losses[-1][1],
                          eval_losses=eval_losses, train_loss=train_loss, prepare_seconds=prepare_seconds,
                          resumed_from=start if checkpoint is not None else 0)


def evaluation_loss(components: DiffusionComponents, examples: Sequence[tuple[RGBImage, str]],
                    settings: TrainingSettings, lora: str | Path | None = None) -> float:
    """The noise-prediction loss on a fixed evaluation batch: every photo once (not mirrored), with noise and
    timesteps fixed by the seed (the timesteps spread evenly over the schedule), with `lora` (a LoRA file)
    loaded as an adapter or none. Lower means the model reproduces these photos better; comparable across
    runs with the same photos, settings and seed. The components are left as they were."""
    from engine.denoiser import host_pipeline

    resolution = training_resolution(components, settings)
    check_examples(examples, resolution)
    plan = training_plan(settings, components)
    host = host_pipeline(components)
    check_no_adapters(trained_modules(components, settings, all_text_encoders=True))
    try:
        if lora is not None:
            host.load_lora_weights(str(lora), adapter_name=ADAPTER)
        # After the LoRA: it may change the text encoders too.
        data = prepare_data(components, host, examples, flip=False, encode_text=True)
        return _Objective(components, host, data, plan, settings.seed).evaluation()
    finally:
        if lora is not None:
            host.unload_lora_weights()


def _seed(*parts: int) -> int:
    """A well-mixed 63-bit seed for one stream of random draws."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _generator(*parts: int) -> torch.Generator:
    import torch

    return torch.Generator("cpu").manual_seed(_seed(*parts))


def training_plan(settings: TrainingSettings, components: DiffusionComponents) -> TrainingPlan:
    """How training will run on the components' device: the autocast type, loss scaling and gradient
    checkpointing that `settings` come to there (see `TrainingSettings.mixed_precision`). Raises ValueError
    for half precision asked for on the CPU."""
    import torch

    device = components.device
    mode = settings.mixed_precision
    if device.type != "cuda":
        if mode in ("fp16", "bf16"):
            raise ValueError(f"mixed_precision = {mode!r}: needs CUDA, and the components are on the "
                             f"{device.type}; use 'auto' or 'no'")
        return TrainingPlan(autocast=None, scaler=False, checkpointing=False)
    autocast: torch.dtype | None
    if mode == "no":
        autocast = None
    elif mode == "auto":
        # Half-precision components compute in their own type: autocasting fp16 weights to bf16 would round
        # every weight again on every call.
        if components.dtype in (torch.float16, torch.bfloat16):
            autocast = components.dtype
        else:
            autocast = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        autocast = torch.float16 if mode == "fp16" else torch.bfloat16
    # fp16 gradients underflow without loss scaling; bf16 has float32's range.
    scaler = autocast == torch.float16 or (autocast is None and components.dtype == torch.float16)
    return TrainingPlan(autocast=autocast, scaler=scaler, checkpointing=settings.gradient_checkpointing)


class _Objective:
    """The noise-prediction loss of the UNet (with whatever adapter it carries) on chosen views, noise and
    timesteps, and the fixed evaluation batch."""

    def __init__(self, components: DiffusionComponents, host: Any, data: TrainingData, plan: TrainingPlan,
                 seed: int) -> None:
        from diffusers import DDPMScheduler

        self.components = components
        self.host = host
        self.data = data
        self.plan = plan
        self.seed = seed
        # The base's noise schedule (betas, prediction type) in the scheduler diffusers trains with.
        self.noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
        self.prediction = self.noise_scheduler.config.prediction_type
        if self.prediction not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"scheduler prediction_type = {self.prediction!r}: expected epsilon, v_prediction or "
                             "sample")
        self.train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.latent_shape = tuple(data.latents.shape[1:])
        self._orders: dict[int, list[int]] = {}

    def draw(self, step: int, batch_size: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Step `step`'s (0-based) views, noise and timesteps. Views come in passes over all of them, each pass
        in its own seeded order; everything depends only on (seed, step)."""
        import torch

        views = len(self.data.latents)
        chosen = []
        for position in range(step * batch_size, (step + 1) * batch_size):
            epoch = position // views
            if epoch not in self._orders:
                order = torch.randperm(views, generator=_generator(self.seed, _ORDER, epoch)).tolist()
                self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}  # keep it small
                self._orders[epoch] = order
            chosen.append(self._orders[epoch][position % views])
        generator = _generator(self.seed, _STEP, step)
        noise = torch.randn((batch_size, *self.latent_shape), generator=generator)
        timesteps = torch.randint(0, self.train_timesteps, (batch_size,), generator=generator)
        return chosen, noise, timesteps

    def loss(self, views: list[int], noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the UNet's prediction (float32 scalar); differentiable when grad is on."""
        import torch
        import torch.nn.functional as F

        c = self.components
        device, dtype = c.device, c.unet.dtype
        latents = self.data.latents[views]
        noise = noise.to(device)
        timesteps = timesteps.to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.prediction == "epsilon":
            target = noise
        elif self.prediction == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = latents
        photos = [v % self.data.photos for v in views]
        autocast = (torch.autocast(device.type, dtype=self.plan.autocast) if self.plan.autocast is not None
                    else contextlib.nullcontext())
        with autocast:
            embeds, pooled = self._embeddings(photos)
            added = None
            if self.data.time_ids is not None:
                assert pooled is not None  # an SDXL UNet comes with SDXL's text encoders
                added = {"text_embeds": pooled.to(dtype), "time_ids": self.data.time_ids.expand(len(views), -1)}
            prediction = c.unet(noisy.to(dtype), timesteps, encoder_hidden_states=embeds.to(dtype),
                                added_cond_kwargs=added, return_dict=False)[0]
        return F.mse_loss(prediction.float(), target.float())

    def _embeddings(self, photos: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        data = self.data
        if data.embeds is not None:
            return data.embeds[photos], None if data.pooled is None else data.pooled[photos]
        # Trained text encoders: encoded per step, through the gradient.
        captions = [data.captions[i] for i in photos]
        device = self.components.device
        if self.components.is_sdxl:
            embeds, _, pooled, _ = self.host.encode_prompt(captions, device=device, num_images_per_prompt=1,
                                                           do_classifier_free_guidance=False)
            return embeds, pooled
        embeds, _ = self.host.encode_prompt(captions, device=device, num_images_per_prompt=1,
                                            do_classifier_free_guidance=False)
        return embeds, None

    def evaluation(self) -> float:
        """The loss on every photo once (not mirrored), with fixed noise and evenly spread timesteps."""
        import torch

        photos = self.data.photos
        generator = _generator(self.seed, _EVAL)
        noise = torch.randn((photos, *self.latent_shape), generator=generator)
        timesteps = ((torch.arange(photos) + 0.5) * self.train_timesteps / photos).long()
        total = 0.0
        with torch.no_grad():
            for i in range(photos):  # one at a time: the largest batch a training step also runs
                total += float(self.loss([i], noise[i : i + 1], timesteps[i : i + 1]))
        return total / photos


def _train_step(objective: _Objective, optimizer: Any, scaler: Any, params: list[torch.Tensor], step: int,
                batch_size: int) -> float:
    """One optimizer step; returns its loss."""
    import torch

    views, noise, timesteps = objective.draw(step, batch_size)
    loss = objective.loss(views, noise, timesteps)
    value = float(loss.detach())
    if scaler is not None:
        # Scaled so fp16 gradients do not underflow; a step whose gradients overflowed is skipped.
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
        scaler.step(optimizer)
        scaler.update()
    else:
        if not math.isfinite(value):
            raise FloatingPointError(f"identity training diverged: the loss is {value} at step {step + 1}; lower "
                                     "learning_rate (or use mixed_precision = 'bf16' or 'no')")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


def _progress_bar(total: int, start: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="identity LoRA", unit="step", disable=not enabled,
                dynamic_ncols=True)
