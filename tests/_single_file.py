"""Write diffusers SDXL components as one original-format (SGM) checkpoint, the layout of the `.safetensors`
files people download from model sites: the inverse of diffusers' single-file loader (after diffusers'
`scripts/convert_diffusers_to_original_sdxl.py`), so that tests can load a single file offline.

Keys: `model.diffusion_model.` (UNet, LDM block names), `first_stage_model.` (VAE, attention as 1x1 convs),
`conditioner.embedders.0.transformer.` (CLIP ViT-L, Hugging Face names), `conditioner.embedders.1.model.`
(OpenCLIP ViT-bigG: fused q/k/v `in_proj`, `text_projection` transposed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet(rest: str) -> str:
    for diffusers_name, ldm_name in _RESNET:
        if rest.startswith(diffusers_name + "."):
            return ldm_name + rest[len(diffusers_name):]
    raise KeyError(rest)


def unet_to_original(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel state dict in LDM names (without the `model.diffusion_model.` prefix)."""
    per_down = config.layers_per_block + 1  # input blocks per level: its resnets (+ attentions), then a downsampler
    per_up = config.layers_per_block + 1
    up_has_attn = ["CrossAttn" in t for t in config.up_block_types]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        stem, param = key.rsplit(".", 1)
        if stem in _UNET_TOP:
            out[f"{_UNET_TOP[stem]}.{param}"] = value
            continue
        kind = parts[0]
        if kind == "mid_block":
            index, rest = int(parts[2]), ".".join(parts[3:])
            if parts[1] == "resnets":
                out[f"middle_block.{2 * index}.{_resnet(rest)}"] = value
            else:
                out[f"middle_block.1.{rest}"] = value
            continue
        block, part, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "down_blocks":
            if part == "downsamplers":  # "downsamplers.0.conv.weight" -> "input_blocks.N.0.op.weight"
                out[f"input_blocks.{(block + 1) * per_down}.0.op.{rest.removeprefix('conv.')}"] = value
            elif part == "resnets":
                out[f"input_blocks.{block * per_down + index + 1}.0.{_resnet(rest)}"] = value
            else:
                out[f"input_blocks.{block * per_down + index + 1}.1.{rest}"] = value
        elif kind == "up_blocks":
            if part == "upsamplers":  # after the resnet (and the attention, when the level has one)
                slot = 2 if up_has_attn[block] else 1
                out[f"output_blocks.{block * per_up + per_up - 1}.{slot}.{rest}"] = value
            elif part == "resnets":
                out[f"output_blocks.{block * per_up + index}.0.{_resnet(rest)}"] = value
            else:
                out[f"output_blocks.{block * per_up + index}.1.{rest}"] = value
        else:
            raise KeyError(f"unexpected UNet key {key}")
    return out


def vae_to_original(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in LDM names (without the `first_stage_model.` prefix)."""
    levels = len(config.up_block_types)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = new.split(".")
        if parts[1] == "down_blocks":  # encoder.down_blocks.i.resnets.j -> encoder.down.i.block.j
            i = parts[2]
            tail = ".".join(parts[5:])
            new = (f"encoder.down.{i}.block.{parts[4]}.{tail}" if parts[3] == "resnets"
                   else f"encoder.down.{i}.downsample.{tail}")
        elif parts[1] == "up_blocks":  # the decoder's levels run in the opposite order
            level = levels - 1 - int(parts[2])
            tail = ".".join(parts[5:])
            new = (f"decoder.up.{level}.block.{parts[4]}.{tail}" if parts[3] == "resnets"
                   else f"decoder.up.{level}.upsample.{tail}")
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
        elif parts[1] == "mid_block":  # attention: linear layers in diffusers, 1x1 convolutions in LDM
            name = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[parts[4]]
            tail = parts[-1]
            new = f"{parts[0]}.mid.attn_1.{name}.{tail}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[new] = value
    return out


def open_clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection state dict in OpenCLIP names (without the `...model.` prefix)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    renames = [("text_model.encoder.layers.", "transformer.resblocks."), ("layer_norm1", "ln_1"),
               ("layer_norm2", "ln_2"), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."),
               (".self_attn.", ".attn.")]
    top = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key.endswith("position_ids"):
            continue
        else:
            new = key
            for old, replacement in renames:
                new = new.replace(old, replacement)
            for proj in ("q_proj", "k_proj", "v_proj"):
                if f".attn.{proj}." in new:
                    stem, kind = new.split(f".{proj}.")
                    fused.setdefault(f"{stem}.in_proj_{kind}", {})[proj] = value
                    break
            else:
                out[new] = value
    for name, qkv in fused.items():
        out[name] = torch.cat([qkv["q_proj"], qkv["k_proj"], qkv["v_proj"]])
    return out


def sdxl_original_state_dict(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> dict[str, torch.Tensor]:
    """The four SDXL models as one SGM-layout state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in unet_to_original(unet.state_dict(), unet.config).items():
        out["model.diffusion_model." + key] = value
    for key, value in vae_to_original(vae.state_dict(), vae.config).items():
        out["first_stage_model." + key] = value
    for key, value in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        # transformers >= 5.6 flattened CLIPTextModel (no `text_model.`); the file keeps the original names.
        name = key if key.startswith("text_model.") else "text_model." + key
        out["conditioner.embedders.0.transformer." + name] = value
    for key, value in open_clip_to_original(text_encoder_2.state_dict()).items():
        out["conditioner.embedders.1.model." + key] = value
    return out


def write_sdxl_single_file(path: Path, unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> Path:
    """Save the components as one `.safetensors` checkpoint at `path`."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in
             sdxl_original_state_dict(unet, vae, text_encoder, text_encoder_2).items()}
    save_file(state, str(path))
    return path
