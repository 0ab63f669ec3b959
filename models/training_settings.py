"""Settings of the identity LoRA training (`models.lora_training`), apart from the training code so that
reading config needs no torch. The config embeds them as section `[enroll]`: the field names are stable.

The defaults are for about 10 selfies on SDXL-Turbo (512 px) or SDXL (1024 px), and are meant to finish in
under five minutes on one H100:

- 500 steps at batch size 1: each selfie and its mirror image is seen 25 times (50 views per selfie), the
  budget of diffusers' SDXL DreamBooth LoRA example (500 steps, learning rate 1e-4) for a handful of photos.
  More steps copy the selfies' lighting and clothes into every style; fewer leave the face generic.
- rank 16 on the UNet's attention projections (to_q/k/v/out): about 23M parameters on SDXL, enough for one
  face; the diffusers example's rank 4 is tuned for objects, and 32+ only grows the file.
- learning rate 1e-4 with AdamW and lora_alpha = rank (scale 1): diffusers' default for SDXL LoRA.
- batch size 1: the GPU is already busy at 512-1024 px, so a larger batch costs time per step nearly in
  proportion and needs a matching change of steps; 1 keeps memory lowest.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.validation import check_choice, check_range

MIXED_PRECISIONS = ("auto", "fp16", "bf16", "no")


@dataclass(frozen=True)
class TrainingSettings:
    steps: int = 500
    """Optimizer steps (each one batch of `batch_size` views)."""
    rank: int = 16
    """LoRA rank (lora_alpha is the same, so the learnt update has scale 1)."""
    learning_rate: float = 1e-4
    """AdamW learning rate of the UNet's LoRA weights (constant)."""
    batch_size: int = 1
    resolution: int = 0
    """Side of the square training images, pixels; 0 = the base's native size (SDXL 1024, SDXL-Turbo 512):
    the UNet's sample_size times the VAE's downsampling."""
    train_text_encoder: bool = False
    """Also train LoRA weights on the text encoders (q/k/v/out projections): slower, rarely needed."""
    text_encoder_learning_rate: float = 5e-5
    """Learning rate of the text encoders' LoRA weights, with train_text_encoder."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass instead of keeping them: less GPU memory, slower steps.
    CUDA only (on the CPU memory is not what limits)."""
    mixed_precision: str = "auto"
    """auto: on CUDA the components' own half precision (fp16 or bf16), or bf16 where the GPU has it (else
    fp16) for float32 components; no mixed precision on the CPU. fp16 / bf16: autocast to that type (CUDA
    only; fp16 with loss scaling). no: every layer in the components' dtype."""
    checkpoint_every: int = 100
    """Save a resumable checkpoint every this many steps; 0 = never."""
    seed: int = 0
    """Seeds the LoRA's initial weights, the batch order, the noise and the timesteps."""
    trigger: str = "ohwx"
    """A rare token that comes to mean the person ("a photo of ohwx person")."""
    class_word: str = "person"
    flip: bool = True
    """Also train on the mirror image of each photo (twice the views; faces are nearly symmetric)."""

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 100_000)
        check_range("rank", self.rank, 1, 256)
        check_range("learning_rate", self.learning_rate, 1e-7, 1e-1)
        check_range("batch_size", self.batch_size, 1, 64)
        check_range("resolution", self.resolution, 0, 4096)
        if self.resolution and (self.resolution < 64 or self.resolution % 8):
            raise ValueError(f"resolution = {self.resolution}: must be 0 (the base's native size) or a multiple "
                             "of 8 from 64 up")
        check_range("text_encoder_learning_rate", self.text_encoder_learning_rate, 1e-7, 1e-1)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_range("checkpoint_every", self.checkpoint_every, 0, 100_000)
        check_range("seed", self.seed, 0, 2**63 - 1)
        for name in ("trigger", "class_word"):
            value = getattr(self, name)
            if not value.strip() or value != value.strip():
                raise ValueError(f"{name} = {value!r}: must be a non-empty word without surrounding spaces")
        if any(c.isspace() for c in self.trigger):
            raise ValueError(f"trigger = {self.trigger!r}: must be one word (no spaces)")

    @property
    def instance_prompt(self) -> str:
        """The caption of every training photo, and what the live prompt's subject becomes."""
        return f"a photo of {self.trigger} {self.class_word}"
