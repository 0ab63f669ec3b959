"""The diffusion engine's components: each `models.*` setting resolved (`models.sources`) and loaded, on the
chosen device in the chosen dtype, into the `DiffusionComponents` the engine receives.

The base may be a diffusers-format folder or Hub repo, or one original-format `.safetensors`/`.ckpt` checkpoint
(with the configs of its model family). Each component is loaded on its own (`subfolder=`), so that the live path
never loads the full VAE it does not use. Every model's config and the speed LoRA are checked before any weights
are read; the speed LoRA is fused into the UNet once. Every way a model can be missing or not fit ends in one
`ModelUnavailable` naming the setting, the model and how to get it.

torch, diffusers and transformers are imported inside the functions, as everywhere in `models/`.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from models.lora_file import load_lora
from models.sources import Loader, Source, first_line, loading, names_of, parse_source, require
from models.store import ModelUnavailable

if TYPE_CHECKING:
    import torch

    from engine.denoiser import DiffusionComponents

log = logging.getLogger(__name__)

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def resolve_device(device: str) -> torch.device:
    """`device` setting -> torch.device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N"."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise ValueError(f"device = {device!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"device = {device!r}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use cpu or auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device = {device!r}: only {torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`dtype` setting -> torch.dtype: "auto" (float16 on CUDA, float32 on the CPU), "fp16", "bf16", "fp32"."""
    import torch

    device_type = torch.device(device).type
    if dtype == "auto":
        return torch.float16 if device_type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype = {dtype!r}: expected auto, fp16, bf16 or fp32")
    if dtype != "fp32" and device_type != "cuda":
        raise ValueError(f"dtype = {dtype!r}: half precision needs CUDA; use fp32 (or auto) on the {device_type}")
    return getattr(torch, _DTYPES[dtype])


def load_components(*, base: str, controlnet: str = "", tiny_vae: str = "", vae: str = "", speed_lora: str = "",
                    base_config: str = "", device: str = "auto", dtype: str = "auto", download: bool = True,
                    load_full_vae: bool = False, cache_dir: str | Path | None = None) -> DiffusionComponents:
    """Load everything the diffusion engine needs, on `device` in `dtype`, in eval mode without gradients.

    `base`: registry name, repo id, diffusers folder or single checkpoint file (`base_config`: the diffusers
    folder or repo whose configs describe that file). `controlnet` "": none. `tiny_vae` "": the base's own VAE
    encodes and decodes live frames. `vae`: the full VAE for stills, loaded only with `load_full_vae` ("" = the
    base's). `speed_lora`: fused into the UNet. `download` False: the Hugging Face cache only, no network.
    Raises ModelUnavailable (which model, which setting, how to get it) and ValueError (device, dtype).
    """
    from diffusers import ControlNetModel

    from engine.denoiser import DiffusionComponents

    if not base.strip():
        raise ModelUnavailable("models.base = '': name a base model (registry names: "
                               f"{', '.join(names_of('base'))}), a Hub repo id, or a local path")
    dev = resolve_device(device)
    loader = Loader(download, resolve_dtype(dtype, dev), str(cache_dir) if cache_dir is not None else None)
    base_src = parse_source("models.base", base, ("base",))
    tiny_src = parse_source("models.tiny_vae", tiny_vae, ("tiny_vae", "vae")) if tiny_vae else None
    vae_src = parse_source("models.vae", vae, ("vae", "base")) if load_full_vae and vae else None
    net_src = parse_source("models.controlnet", controlnet, ("controlnet",)) if controlnet else None
    lora_src = parse_source("models.speed_lora", speed_lora, ("speed_lora",)) if speed_lora else None

    # Every setting parsed, every model's config and the speed LoRA found, before any weights are read: a
    # mistake in the last setting should not wait minutes for the base to load first.
    single = base_src.path is not None and base_src.path.is_file()
    config, sdxl, index = "", True, {}
    if single:
        config, sdxl = _single_file_config(base_src, base_config, loader)
    else:
        index = _base_index(base_src, loader)
    tiny_plan = _autoencoder_plan(tiny_src, loader) if tiny_src is not None else None
    vae_plan = _autoencoder_plan(vae_src, loader) if vae_src is not None else None
    if net_src is not None:
        require(net_src, "config.json")
        loader.config(ControlNetModel, net_src)
    lora = _speed_lora(lora_src, loader, base_src) if lora_src is not None else None

    # The base's own VAE is read only when it encodes live frames or is the stills' VAE.
    need_vae = tiny_src is None or (load_full_vae and vae_src is None)
    if single:
        parts = _single_file_parts(base_src, config, sdxl, loader, need_vae)
    else:
        parts = _diffusers_parts(base_src, index, loader, need_vae)
    names = {"base": base_src.name}
    base_vae = parts.pop("vae", None)
    live, names["tiny_vae"] = base_vae, f"{base_src.name} (its vae)"
    if tiny_src is not None and tiny_plan is not None:
        live, names["tiny_vae"] = loader.model(tiny_plan[0], tiny_src, tiny_plan[1]), tiny_src.name
    full = None
    if vae_src is not None and vae_plan is not None:
        full, names["vae"] = loader.model(vae_plan[0], vae_src, vae_plan[1]), vae_src.name
    elif load_full_vae:
        full, names["vae"] = base_vae, f"{base_src.name} (its vae)"
    net = None
    if net_src is not None:
        net, names["controlnet"] = _controlnet(net_src, loader, parts["unet"]), net_src.name
    _check_latents(live, parts["unet"], tiny_vae)

    components = DiffusionComponents(
        unet=parts["unet"], tiny_vae=live, text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
        scheduler=parts["scheduler"], device=dev, dtype=loader.dtype, controlnet=net,
        text_encoder_2=parts.get("text_encoder_2"), tokenizer_2=parts.get("tokenizer_2"), vae=full, names=names)
    for module in (components.unet, components.text_encoder, components.text_encoder_2, components.controlnet,
                   components.tiny_vae, components.vae):
        if module is not None:
            # The dtype was set at load (torch_dtype), which keeps any float32-only layers a model declares.
            module.to(dev)
            module.eval()
            module.requires_grad_(False)
    if lora_src is not None and lora is not None:
        _fuse_speed_lora(components, lora_src, lora)
        names["speed_lora"] = lora_src.name
    return components


def _base_index(src: Source, loader: Loader) -> dict[str, Any]:
    """A diffusers base's model_index.json, checked to be a Stable Diffusion (SDXL or SD 2.x) pipeline."""
    from diffusers import DiffusionPipeline

    require(src, "model_index.json")
    index = loader.config(DiffusionPipeline, src)
    if "unet" not in index or "text_encoder" not in index:
        raise ModelUnavailable(f"{src.label}: {index.get('_class_name', 'this model')} is not a Stable Diffusion "
                               "(SDXL or SD 2.x) pipeline: expected unet and text_encoder in its model_index.json")
    return index


def _diffusers_parts(src: Source, index: dict[str, Any], loader: Loader, need_vae: bool) -> dict[str, Any]:
    """The base's components from a diffusers-format folder or Hub repo, each from its own subfolder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    parts: dict[str, Any] = {
        "unet": loader.model(UNet2DConditionModel, src, "unet"),
        "text_encoder": loader.model(CLIPTextModel, src, "text_encoder", transformers=True),
        "tokenizer": loader.tokenizer(src, "tokenizer"),
        "scheduler": _scheduler(src, loader),
    }
    # SDXL has a second (OpenCLIP) text encoder; the SD 2.x family (SD-Turbo) has none.
    if (index.get("text_encoder_2") or [None])[0] is not None:
        parts["text_encoder_2"] = loader.model(CLIPTextModelWithProjection, src, "text_encoder_2", transformers=True)
        parts["tokenizer_2"] = loader.tokenizer(src, "tokenizer_2")
    if need_vae:
        parts["vae"] = loader.model(AutoencoderKL, src, "vae")
    return parts


def _scheduler(src: Source, loader: Loader) -> Any:
    """The base's own scheduler class and config (the engine reads only its constants)."""
    import diffusers

    config = loader.config(diffusers.EulerAncestralDiscreteScheduler, src, "scheduler")
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        cls = diffusers.EulerAncestralDiscreteScheduler
    return cls.from_config(config)


def _autoencoder_plan(src: Source, loader: Loader) -> tuple[Any, str | None]:
    """(AutoencoderTiny or AutoencoderKL, whichever the config names; the subfolder: "vae" in a base model)."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    subfolder = None
    if (src.entry is not None and src.entry.kind == "base") or (
            src.path is not None and not (src.path / "config.json").is_file() and (src.path / "vae").is_dir()):
        subfolder = "vae"
    if subfolder is None:
        require(src, "config.json")
    config = loader.config(AutoencoderKL, src, subfolder)
    return (AutoencoderTiny if config.get("_class_name") == "AutoencoderTiny" else AutoencoderKL), subfolder


def _controlnet(src: Source, loader: Loader, unet: Any) -> Any:
    from diffusers import ControlNetModel

    net = loader.model(ControlNetModel, src)
    ours, theirs = unet.config.cross_attention_dim, net.config.cross_attention_dim
    if ours != theirs:
        raise ModelUnavailable(f"{src.label} was made for another model family (cross-attention width {theirs}, "
                               f"the base's is {ours}): use a ControlNet for the base's family (SDXL: openpose-sdxl)")
    return net


def _check_latents(autoencoder: Any, unet: Any, tiny_vae: str) -> None:
    channels = getattr(autoencoder.config, "latent_channels", None)
    if channels is not None and channels != unet.config.in_channels:
        raise ModelUnavailable(f"models.tiny_vae = {tiny_vae!r} makes {channels}-channel latents but the base's UNet "
                               f"takes {unet.config.in_channels}: use the tiny VAE for the base's family")


def _speed_lora(src: Source, loader: Loader, base: Source) -> dict[str, torch.Tensor]:
    """The speed LoRA's state dict (from its file, or its Hub repo's), checked to be a LoRA."""
    if src.entry is not None and src.entry.base and base.repo_id and base.repo_id != src.entry.base:
        log.warning("%s was trained on %s, not on %s: expect weaker results", src.label, src.entry.base, base.repo_id)
    try:
        return load_lora(loader.file(src))
    except ModelUnavailable as e:
        if str(e).startswith(src.key):
            raise
        raise ModelUnavailable(f"{src.label}: {e}") from None


def _fuse_speed_lora(components: DiffusionComponents, src: Source, lora: dict[str, torch.Tensor]) -> None:
    """Fuse the speed LoRA into the UNet's weights once: no adapter layers are left to cost time per frame."""
    from engine.denoiser import host_pipeline

    host = host_pipeline(components)
    try:
        host.load_lora_weights(lora, adapter_name="speed")
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelUnavailable(f"{src.label} does not fit the base model ({first_line(e)})") from e
    host.fuse_lora(lora_scale=1.0, adapter_names=["speed"])
    host.unload_lora_weights()  # drops the adapter layers, keeps the fused weights


def _single_file_parts(src: Source, config: str, sdxl: bool, loader: Loader, need_vae: bool) -> dict[str, Any]:
    """The base's components from one original-format checkpoint, through diffusers' single-file loader, with
    the configs of `config` (a diffusers folder or repo)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    assert src.path is not None
    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"config": config, "local_files_only": not loader.download, "torch_dtype": loader.dtype,
                              "cache_dir": loader.cache_dir}
    if not need_vae:
        kwargs["vae"] = None  # not read from the file at all: the live frames use the tiny VAE
    if not sdxl:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        with loading(src, loader.download):
            pipe = cls.from_single_file(str(src.path), **kwargs)
    except (SingleFileComponentError, ValueError, KeyError) as e:
        raise ModelUnavailable(f"{src.label}: {src.path} is not a checkpoint of the model {config} describes "
                               f"({first_line(e)}); set models.base_config to the diffusers folder or repo of its "
                               "model family") from e
    parts = {name: getattr(pipe, name, None) for name in
             ("unet", "text_encoder", "tokenizer", "scheduler", "text_encoder_2", "tokenizer_2", "vae")}
    return {name: part for name, part in parts.items() if part is not None}


def _single_file_config(src: Source, base_config: str, loader: Loader) -> tuple[str, bool]:
    """(the diffusers config folder or repo for a single-file base, whether it is SDXL)."""
    from diffusers import DiffusionPipeline

    assert src.path is not None
    if src.path.suffix not in (".safetensors", ".ckpt"):
        raise ModelUnavailable(f"{src.label}: {src.path} is neither a diffusers-format folder nor a .safetensors / "
                               ".ckpt checkpoint")
    if base_config:
        conf = parse_source("models.base_config", base_config, ("base",))
        require(conf, "model_index.json")
    else:
        # diffusers would fetch the configs of the model family it infers from the file, even with
        # local_files_only; look that family up first so that downloads = false never touches the network.
        from diffusers.loaders.single_file_utils import (
            DIFFUSERS_DEFAULT_PIPELINE_PATHS,
            infer_diffusers_model_type,
        )

        model_type = infer_diffusers_model_type(_checkpoint_view(src))
        repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]
        conf = Source("models.base_config", repo, repo_id=repo)
    try:
        index = loader.config(DiffusionPipeline, conf)
    except ModelUnavailable:
        if base_config:
            raise
        state = "downloads are off" if not loader.download else "it could not be downloaded"
        raise ModelUnavailable(
            f"{src.label} is a single checkpoint whose configs come from {conf.repo_id} (inferred from the file), "
            f"which is not in the Hugging Face cache and {state}: set models.base_config to a diffusers folder (or "
            f"a cached repo) of its model family, or on a machine with internet run `hf download {conf.repo_id} "
            '--include "*.json" --include "*.txt"` and copy its cache (~/.cache/huggingface/hub) here') from None
    return conf.where, (index.get("text_encoder_2") or [None])[0] is not None


class _Shapes(Mapping[str, Any]):
    """A safetensors checkpoint's tensor names and shapes, read from its header without loading a tensor."""

    def __init__(self, shapes: dict[str, list[int]]) -> None:
        self._shapes = shapes

    def __getitem__(self, key: str) -> Any:
        return SimpleNamespace(shape=tuple(self._shapes[key]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def _checkpoint_view(src: Source) -> Mapping[str, Any]:
    assert src.path is not None
    try:
        if src.path.suffix == ".safetensors":
            with src.path.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            return _Shapes({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
        import torch

        try:  # memory-mapped: the tensors are not read, only looked at
            state = torch.load(src.path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # a pre-1.6 (non-zip) .ckpt cannot be mapped
            state = torch.load(src.path, map_location="cpu", weights_only=True)
        while isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        return state
    except (OSError, ValueError, struct.error, RuntimeError, KeyError, pickle.UnpicklingError) as e:
        raise ModelUnavailable(f"{src.label}: {src.path} cannot be read as a checkpoint ({first_line(e)})") from e
