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

torch, diffusers and peft are imported inside the functions, as everywhere in `models/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.types import RGBImage
from models.training_settings import TrainingSettings

if TYPE_CHECKING:
    import torch

    from engine.denoiser import DiffusionComponents

log = logging.getLogger(__name__)

__all__ = ["LORA_FILE", "TrainingPlan", "TrainingResult", "TrainingSettings", "evaluation_loss", "latest_checkpoint",
           "train_identity_lora", "training_plan", "training_resolution"]

LORA_FILE = "pytorch_lora_weights.safetensors"
"""The file name diffusers' `save_lora_weights` writes and `load_lora_weights` looks for."""
CHECKPOINTS = "checkpoints"
ADAPTER = "identity_training"
UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
_FORMAT = 1
"""Version of the checkpoint layout (state.json's "format")."""
_WEIGHT_DECAY = 1e-4
_MAX_GRAD_NORM = 1.0
_SMOOTHING = 0.95
"""Weight of the past in the displayed (exponentially smoothed) loss: single steps vary a lot with the timestep."""
# What a generator is seeded for, beside the seed and the step: independent streams.
_ORDER, _STEP, _EVAL, _INIT = 1, 2, 3, 4
# Settings a resumed run may change: they do not change what the steps compute.
_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "gradient_checkpointing")


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


@dataclass
class _Data:
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


def latest_checkpoint(out_dir: str | Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint under `out_dir/checkpoints`, or None."""
    found = []
    for path in (Path(out_dir) / CHECKPOINTS).glob("step-*"):
        suffix = path.name.removeprefix("step-")
        if path.is_dir() and suffix.isdigit() and (path / "state.json").is_file():
            found.append((int(suffix), path))
    return max(found) if found else None


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
    _check_examples(examples, resolution)
    if eval_every < 0:
        raise ValueError(f"eval_every = {eval_every}: must be 0 (only at the end) or a number of steps")
    plan = training_plan(settings, components)
    fingerprint = _fingerprint(examples, resolution)
    checkpoint = latest_checkpoint(out) if resume else None
    state: dict[str, Any] = {}
    if checkpoint is not None:
        state = json.loads((checkpoint[1] / "state.json").read_text(encoding="utf-8"))
        _check_resumable(state, settings, fingerprint, checkpoint[1])
    elif (out / CHECKPOINTS).exists():
        if resume:
            log.info("no checkpoint in %s: training from the start", out / CHECKPOINTS)
        shutil.rmtree(out / CHECKPOINTS)  # a fresh run's checkpoints must not mix with an older run's
    out.mkdir(parents=True, exist_ok=True)

    host = host_pipeline(components)
    trained = _trained_modules(components, settings)
    _check_no_adapters(trained)
    with _adapters(trained, settings, plan):
        data = _prepare_data(components, host, examples, settings.flip, encode_text=not settings.train_text_encoder)
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
            start, train_loss, eval_losses = _load_checkpoint(checkpoint[1], state, trained, optimizer, scaler,
                                                              components.device)
            log.info("resuming identity training from step %d (%s)", start, checkpoint[1])
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
                    _save_checkpoint(out, done, trained, optimizer, scaler, {
                        "format": _FORMAT, "step": done, "settings": _training_fields(settings),
                        "fingerprint": fingerprint, "train_loss": train_loss, "eval_losses": eval_losses})
                if on_step is not None:
                    on_step(done, loss)
        finally:
            bar.close()
        if not eval_losses or eval_losses[-1][0] != settings.steps:
            eval_losses.append((settings.steps, objective.evaluation()))
        lora_path = _save_lora(host, trained, out)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the LoRA is saved: nothing is left to resume
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
    _check_examples(examples, resolution)
    plan = training_plan(settings, components)
    host = host_pipeline(components)
    _check_no_adapters(_trained_modules(components, settings, all_text_encoders=True))
    try:
        if lora is not None:
            host.load_lora_weights(str(lora), adapter_name=ADAPTER)
        # After the LoRA: it may change the text encoders too.
        data = _prepare_data(components, host, examples, flip=False, encode_text=True)
        return _Objective(components, host, data, plan, settings.seed).evaluation()
    finally:
        if lora is not None:
            host.unload_lora_weights()


def _check_examples(examples: Sequence[tuple[RGBImage, str]], resolution: int) -> None:
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


def _fingerprint(examples: Sequence[tuple[RGBImage, str]], resolution: int) -> str:
    """What a checkpoint was trained on: the photos' pixels and the captions."""
    digest = hashlib.sha256(str(resolution).encode())
    for image, caption in examples:
        digest.update(np.ascontiguousarray(image).tobytes())
        digest.update(caption.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _check_resumable(state: dict[str, Any], settings: TrainingSettings, fingerprint: str, folder: Path) -> None:
    if state.get("format") != _FORMAT:
        raise ValueError(f"resume: {folder} is a checkpoint of another format ({state.get('format')!r}); train "
                         "again without resume")
    if int(state.get("step", 0)) > settings.steps:
        raise ValueError(f"steps = {settings.steps}: the checkpoint in {folder} is already at step {state['step']}; "
                         "ask for at least as many steps, or train again without resume")
    if state.get("fingerprint") != fingerprint:
        raise ValueError(f"resume: the checkpoint in {folder} was trained on other photos or captions; train "
                         "again without resume, or use another output folder")
    saved = state.get("settings", {})
    changed = [f"{name} ({saved.get(name)!r} -> {value!r})" for name, value in _training_fields(settings).items()
               if name not in _RESUMABLE_CHANGES and saved.get(name) != value]
    if changed:
        raise ValueError(f"resume: the checkpoint in {folder} was trained with other settings: {', '.join(changed)}; "
                         f"only {', '.join(_RESUMABLE_CHANGES)} may change when resuming")


def _training_fields(settings: TrainingSettings) -> dict[str, Any]:
    """TrainingSettings' own fields: a subclass (the config's [enroll]) may add fields training ignores."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(TrainingSettings)}


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


def _training_vae(components: DiffusionComponents) -> Any:
    """The full VAE when loaded (the UNet's own latent space); else the live frames' autoencoder (TAESD's
    latents approximate it)."""
    return components.vae if components.vae is not None else components.tiny_vae


def _vae_scale_factor(vae: Any) -> int:
    config = vae.config
    blocks = getattr(config, "block_out_channels", None) or getattr(config, "encoder_block_out_channels", None)
    return 2 ** (len(blocks) - 1) if blocks else 8


def _trained_modules(components: DiffusionComponents, settings: TrainingSettings,
                     all_text_encoders: bool = False) -> dict[str, Any]:
    """{"unet": ..., and with train_text_encoder "text_encoder"(, "text_encoder_2")}: the modules that get an
    adapter, under the names diffusers' LoRA files use."""
    modules: dict[str, Any] = {"unet": components.unet}
    if settings.train_text_encoder or all_text_encoders:
        for name in ("text_encoder", "text_encoder_2"):
            module = getattr(components, name)
            if module is not None:
                modules[name] = module
    return modules


def _check_no_adapters(modules: dict[str, Any]) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in modules.items():
        if any(isinstance(m, BaseTunerLayer) for m in module.modules()):
            raise ValueError(f"components.{name} already carries LoRA adapter layers: fuse and unload them "
                             "(as the engine does) before training or evaluating an identity")


@contextlib.contextmanager
def _adapters(modules: dict[str, Any], settings: TrainingSettings, plan: TrainingPlan) -> Iterator[None]:
    """A fresh LoRA adapter on each module while inside, the only trainable weights, in float32; on the way
    out (also on an error) the adapters are removed and the modules' flags restored: the caller's components
    are as they were."""
    import torch
    from diffusers.utils import recurse_remove_peft_layers
    from peft import LoraConfig

    flags = {name: [p.requires_grad for p in module.parameters()] for name, module in modules.items()}
    modes = {name: module.training for name, module in modules.items()}
    checkpointing = {name: _is_checkpointing(module) for name, module in modules.items()}
    device = next(modules["unet"].parameters()).device
    try:
        for module in modules.values():
            module.requires_grad_(False)
        generator = _generator(settings.seed, _INIT)
        forked = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        for name, module in modules.items():
            targets = UNET_TARGETS if name == "unet" else TEXT_ENCODER_TARGETS
            config = LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights="gaussian",
                                target_modules=list(targets))
            with torch.random.fork_rng(devices=forked):  # PEFT's own init must not move the caller's RNG
                module.add_adapter(config, adapter_name=ADAPTER)
            with torch.no_grad():
                for param_name, param in module.named_parameters():
                    if ".lora_" not in param_name:
                        continue
                    # Master weights in float32 (autocast computes in half); A drawn from our seeded generator
                    # so that a seed gives the same start on every device (PEFT's gaussian: std 1/r), B zero.
                    param.data = param.data.float()
                    if ".lora_A." in param_name:
                        param.copy_(torch.randn(param.shape, generator=generator) / settings.rank)
                    else:
                        param.zero_()
                    param.requires_grad_(True)
            if plan.checkpointing:
                _set_checkpointing(module, True)
            module.train()  # transformers checkpoints only in training mode; no module here has dropout
        yield
    finally:
        for name, module in modules.items():
            if name == "unet":
                if hasattr(module, "peft_config") or any(".lora_" in n for n, _ in module.named_parameters()):
                    module.unload_lora()
            else:
                recurse_remove_peft_layers(module)
                if getattr(module, "peft_config", None) is not None:
                    del module.peft_config
                module._hf_peft_config_loaded = False
            if plan.checkpointing and not checkpointing[name]:
                _set_checkpointing(module, False)
            module.train(modes[name])
            for param, flag in zip(module.parameters(), flags[name], strict=True):
                param.requires_grad_(flag)


def _is_checkpointing(module: Any) -> bool:
    # transformers 5 renamed gradient to activation checkpointing (the old names warn, and go in v6).
    if hasattr(module, "is_activation_checkpointing"):
        return bool(module.is_activation_checkpointing)
    return bool(getattr(module, "is_gradient_checkpointing", False))


def _set_checkpointing(module: Any, on: bool) -> None:
    """Gradient checkpointing on or off, in a diffusers model or a transformers one (non-reentrant: the
    frozen inputs need no gradient for the adapter's to flow)."""
    if hasattr(module, "enable_gradient_checkpointing"):  # diffusers
        (module.enable_gradient_checkpointing if on else module.disable_gradient_checkpointing)()
    elif hasattr(module, "activation_checkpointing_enable"):
        if on:
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            module.activation_checkpointing_disable()
    elif on:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        module.gradient_checkpointing_disable()


def _prepare_data(components: DiffusionComponents, host: Any, examples: Sequence[tuple[RGBImage, str]],
                  flip: bool, encode_text: bool) -> _Data:
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
    return _Data(latents=torch.cat(latents), captions=captions, photos=len(examples), embeds=embeds, pooled=pooled,
                 time_ids=time_ids)


class _Objective:
    """The noise-prediction loss of the UNet (with whatever adapter it carries) on chosen views, noise and
    timesteps, and the fixed evaluation batch."""

    def __init__(self, components: DiffusionComponents, host: Any, data: _Data, plan: TrainingPlan, seed: int) -> None:
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


def _adapter_weights(modules: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The adapters' weights under "module:parameter" names."""
    return {f"{name}:{param_name}": param.detach().contiguous() for name, module in modules.items()
            for param_name, param in module.named_parameters() if ".lora_" in param_name}


def _save_checkpoint(out: Path, step: int, modules: dict[str, Any], optimizer: Any, scaler: Any,
                     state: dict[str, Any]) -> None:
    """out/checkpoints/step-NNNNNN/: adapter weights, optimizer (and loss scaler) state, state.json. Written
    to a temporary folder and renamed, so a crash never leaves half a checkpoint; the previous one is
    removed after."""
    import torch
    from safetensors.torch import save_file

    folder = out / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:06d}.", dir=folder))
    try:
        save_file({k: v.cpu() for k, v in _adapter_weights(modules).items()}, str(tmp / "adapter.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.iterdir():
        if old != final:  # older checkpoints, and temporary folders a crash left behind
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, state: dict[str, Any], modules: dict[str, Any], optimizer: Any, scaler: Any,
                     device: torch.device) -> tuple[int, float, list[tuple[int, float]]]:
    """Put a checkpoint's weights and optimizer state in place; returns (step, smoothed loss, eval losses)."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(folder / "adapter.safetensors"))
    current = _adapter_weights(modules)
    if set(saved) != set(current):
        raise ValueError(f"resume: the checkpoint in {folder} has other adapter weights than this model takes; "
                         "train again without resume")
    with torch.no_grad():
        for name, module in modules.items():
            for param_name, param in module.named_parameters():
                if ".lora_" in param_name:
                    param.copy_(saved[f"{name}:{param_name}"])
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    if scaler is not None and (folder / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    eval_losses = [(int(s), float(v)) for s, v in state.get("eval_losses", [])]
    return int(state["step"]), float(state.get("train_loss", math.nan)), eval_losses


def _save_lora(host: Any, modules: dict[str, Any], out: Path) -> Path:
    """The adapters in diffusers format, through the pipeline class's own `save_lora_weights`; written to a
    temporary folder and moved, so `out` never holds half a file."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    layers = {name: convert_state_dict_to_diffusers(get_peft_model_state_dict(module, adapter_name=ADAPTER))
              for name, module in modules.items()}
    kwargs = {"unet_lora_layers": layers["unet"]}
    for name in ("text_encoder", "text_encoder_2"):
        if name in layers:
            kwargs[f"{name}_lora_layers"] = layers[name]
    target = out / LORA_FILE
    with tempfile.TemporaryDirectory(prefix=".lora.", dir=out) as tmp:
        type(host).save_lora_weights(tmp, safe_serialization=True, **kwargs)
        os.replace(Path(tmp) / LORA_FILE, target)
    return target
