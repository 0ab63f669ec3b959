"""LoRA files: one `.safetensors` in diffusers/PEFT or kohya format, read into the diffusers-format state dict the
engine's `set_identity` and the speed LoRA's fusing take, with the file's alphas folded into the weights.

diffusers and safetensors are imported inside the function, as everywhere in `models/`.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from models.sources import first_line
from models.store import ModelUnavailable

if TYPE_CHECKING:
    import torch

# kohya names SDXL LoRA layers after the original (SGM) UNet; mapping them to diffusers' blocks needs only the
# layers per block, which is 2 in every SDXL-family UNet.
_SGM_UNET = SimpleNamespace(layers_per_block=2)
# (up, down) infixes of LoRA weight names: PEFT, diffusers, diffusers' text encoder, diffusers' old attention.
_UP_DOWN = ((".lora_B.", ".lora_A."), (".lora.up.", ".lora.down."),
            (".lora_linear_layer.up.", ".lora_linear_layer.down."), ("_lora.up.", "_lora.down."))


def load_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file (diffusers/PEFT or kohya format) as a diffusers-format state dict for the engine's
    `set_identity`. Network alphas (kohya) and PEFT `lora_alpha` metadata are folded into the up/B weights, so
    the dict alone gives the trained strength at scale 1."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors import SafetensorError

    file = Path(path).expanduser()
    if file.is_dir():
        raise ModelUnavailable(f"LoRA file {file} is a folder; expected a .safetensors file")
    if not file.is_file():
        raise ModelUnavailable(f"LoRA file {file} does not exist")
    expected = ("expected a LoRA .safetensors: diffusers/PEFT (lora_A/lora_B) or kohya (lora_down/lora_up) weights")
    try:
        state, alphas, metadata = StableDiffusionXLPipeline.lora_state_dict(
            str(file), unet_config=_SGM_UNET, return_lora_metadata=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError) as e:
        raise ModelUnavailable(f"LoRA file {file} cannot be read ({first_line(e)}); {expected}") from e
    if not state or not all("lora" in key for key in state):
        sample = ", ".join(list(state)[:3]) or "no tensors"
        raise ModelUnavailable(f"LoRA file {file} is not a LoRA (keys like {sample}); {expected}")
    if alphas:
        _fold_network_alphas(state, alphas)
    elif metadata:
        _fold_peft_alphas(state, metadata)
    return dict(state)


def _fold_network_alphas(state: dict[str, torch.Tensor], alphas: Mapping[str, float]) -> None:
    """kohya's per-layer alpha: the layer's update is (alpha / rank) * up @ down."""
    for alpha_key, alpha in alphas.items():
        stem = alpha_key.removesuffix(".alpha")
        down = stem if stem in state else f"{stem}.lora.down.weight"
        up = down.replace(".down.", ".up.")
        if down not in state or up not in state:
            raise ModelUnavailable(f"LoRA alpha {alpha_key} has no matching lora_down/lora_up weights")
        rank = state[down].shape[0]
        state[up] = state[up] * (float(alpha) / rank)


def _fold_peft_alphas(state: dict[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """PEFT's `lora_alpha` (and `alpha_pattern`, `use_rslora`) from the file's metadata: the update is
    (alpha / r) * B @ A."""
    for key in list(state):
        marker = next((up for up, _ in _UP_DOWN if up in key), None)
        if marker is None:
            continue
        down = key.replace(marker, dict(_UP_DOWN)[marker]).replace(".bias", ".weight")
        prefix, _, module = key.split(marker)[0].partition(".")
        config = metadata.get(prefix) if isinstance(metadata.get(prefix), dict) else {
            k.removeprefix(f"{prefix}."): v for k, v in metadata.items() if k.startswith(f"{prefix}.")}
        if not config or "lora_alpha" not in config or down not in state:
            continue
        alpha = float(config["lora_alpha"])
        for pattern, value in (config.get("alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?(?:{pattern})", module):  # PEFT's own matching of pattern keys
                alpha = float(value)
        rank = state[down].shape[0]
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        state[key] = state[key] * scale
