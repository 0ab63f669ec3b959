"""The identity LoRA's adapters on the components' modules: a fresh PEFT LoRA on the UNet's (and optionally the
text encoders') attention projections while training, the only trainable weights, removed again on the way out
with the modules' flags restored; their weights by name (for checkpoints); and the trained adapters saved as a
LoRA file in diffusers format.

torch, diffusers and peft are imported inside the functions, as everywhere in `models/`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.training_settings import TrainingSettings

if TYPE_CHECKING:
    import torch

    from engine.denoiser import DiffusionComponents

LORA_FILE = "pytorch_lora_weights.safetensors"
"""The file name diffusers' `save_lora_weights` writes and `load_lora_weights` looks for."""
ADAPTER = "identity_training"
UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def trained_modules(components: DiffusionComponents, settings: TrainingSettings,
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


def check_no_adapters(modules: dict[str, Any]) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in modules.items():
        if any(isinstance(m, BaseTunerLayer) for m in module.modules()):
            raise ValueError(f"components.{name} already carries LoRA adapter layers: fuse and unload them "
                             "(as the engine does) before training or evaluating an identity")


@contextlib.contextmanager
def adapters(modules: dict[str, Any], settings: TrainingSettings, init: torch.Generator,
             gradient_checkpointing: bool) -> Iterator[None]:
    """A fresh LoRA adapter (rank `settings.rank`, its A weights drawn from `init`) on each module while inside,
    the only trainable weights, in float32, with `gradient_checkpointing` on when asked; on the way out (also
    on an error) the adapters are removed and the modules' flags restored: the caller's components are as they
    were."""
    import torch
    from diffusers.utils import recurse_remove_peft_layers
    from peft import LoraConfig

    flags = {name: [p.requires_grad for p in module.parameters()] for name, module in modules.items()}
    modes = {name: module.training for name, module in modules.items()}
    checkpointing = {name: is_checkpointing(module) for name, module in modules.items()}
    device = next(modules["unet"].parameters()).device
    try:
        for module in modules.values():
            module.requires_grad_(False)
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
                        param.copy_(torch.randn(param.shape, generator=init) / settings.rank)
                    else:
                        param.zero_()
                    param.requires_grad_(True)
            if gradient_checkpointing:
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
            if gradient_checkpointing and not checkpointing[name]:
                _set_checkpointing(module, False)
            module.train(modes[name])
            for param, flag in zip(module.parameters(), flags[name], strict=True):
                param.requires_grad_(flag)


def is_checkpointing(module: Any) -> bool:
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


def adapter_weights(modules: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The adapters' weights under "module:parameter" names."""
    return {f"{name}:{param_name}": param.detach().contiguous() for name, module in modules.items()
            for param_name, param in module.named_parameters() if ".lora_" in param_name}


def save_lora(host: Any, modules: dict[str, Any], out: Path) -> Path:
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
