"""Fusing an identity LoRA into the diffusion components' weights, and restoring them exactly."""

from __future__ import annotations

import logging
from typing import Any

import torch

from engine.denoiser import DiffusionComponents


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
