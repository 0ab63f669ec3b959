"""The diffusion engine's models: resolving each `models.*` setting to a local folder, a cached Hub repo or a
download, and loading the components the engine receives (`DiffusionComponents`).

A model setting may be a registry name (`HUB_MODELS`), a Hub repo id ("owner/name"), a local diffusers-format
folder, or, for the base only, one original-format `.safetensors`/`.ckpt` checkpoint. Each component is loaded
on its own (`subfolder=`), so that the live path never loads the full VAE it does not use. Every way a model
can be missing ends in one `ModelUnavailable` naming the setting, the model and how to get it.

torch, diffusers and huggingface_hub are imported inside the functions: `livecam models` lists the registry
without them.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from models.registry import HUB_MODELS, HubModel
from models.store import ModelUnavailable

if TYPE_CHECKING:
    import torch

    from engine.denoiser import DiffusionComponents

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_HUB_FILE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+):(?P<file>[^:]+)")
_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_KIND_WORDS = {"base": "a base model", "controlnet": "a ControlNet", "tiny_vae": "an autoencoder for live frames",
               "vae": "a full VAE", "speed_lora": "a speed LoRA"}
# kohya names SDXL LoRA layers after the original (SGM) UNet; mapping them to diffusers' blocks needs only the
# layers per block, which is 2 in every SDXL-family UNet.
_SGM_UNET = SimpleNamespace(layers_per_block=2)
# (up, down) infixes of LoRA weight names: PEFT, diffusers, diffusers' text encoder, diffusers' old attention.
_UP_DOWN = ((".lora_B.", ".lora_A."), (".lora.up.", ".lora.down."),
            (".lora_linear_layer.up.", ".lora_linear_layer.down."), ("_lora.up.", "_lora.down."))


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


@dataclass(frozen=True)
class _Source:
    """Where one model setting points: a local path, or a Hub repo (with a file in it, for a LoRA)."""

    key: str
    """The config key, e.g. "models.base"."""
    spec: str
    path: Path | None = None
    repo_id: str = ""
    revision: str = "main"
    weight_name: str | None = None
    entry: HubModel | None = None

    @property
    def label(self) -> str:
        if self.entry is not None and self.spec != self.repo_id:
            return f"{self.key} = {self.spec!r} ({self.repo_id})"
        return f"{self.key} = {self.spec!r}"

    @property
    def name(self) -> str:
        """What was loaded, for `DiffusionComponents.names`."""
        if self.path is not None:
            return str(self.path)
        return f"{self.repo_id}:{self.weight_name}" if self.weight_name else self.repo_id

    @property
    def where(self) -> str:
        """What `from_pretrained` takes: the folder, or the repo id."""
        return str(self.path) if self.path is not None else self.repo_id


def _source(key: str, spec: str, kinds: tuple[str, ...]) -> _Source:
    """Parse one model setting: registry name, local path, Hub repo id, or (LoRA) "owner/repo:file"."""
    spec = spec.strip()
    entry = HUB_MODELS.get(spec)
    if entry is not None:
        if entry.kind not in kinds:
            wanted = " or ".join(_KIND_WORDS[k] for k in kinds)
            fits = ", ".join(m.name for m in HUB_MODELS.values() if m.kind in kinds)
            raise ModelUnavailable(f"{key} = {spec!r} is {_KIND_WORDS[entry.kind]}; {key} needs {wanted} "
                                   f"(registry names: {fits}), a Hub repo id or a local path")
        return _Source(key, spec, repo_id=entry.repo_id, revision=entry.revision, weight_name=entry.weight_name,
                       entry=entry)
    path = Path(spec).expanduser()
    if path.exists():
        return _Source(key, spec, path=path.resolve())
    hub_file = _HUB_FILE.fullmatch(spec)
    if "speed_lora" in kinds and hub_file is not None:
        return _Source(key, spec, repo_id=hub_file["repo"], weight_name=hub_file["file"])
    if _REPO_ID.fullmatch(spec) and "speed_lora" not in kinds:
        known = next((m for m in HUB_MODELS.values() if m.repo_id == spec and m.kind in kinds), None)
        return _Source(key, spec, repo_id=spec, revision=known.revision if known else "main", entry=known)
    if "speed_lora" in kinds and _REPO_ID.fullmatch(spec):
        raise ModelUnavailable(f"{key} = {spec!r}: a LoRA on the Hub is named \"owner/repo:file.safetensors\" "
                               f"(or a registry name: {', '.join(_names_of('speed_lora'))}); no local file {path}")
    raise ModelUnavailable(f"{key} = {spec!r}: no such file or directory ({path.absolute()})")


def _names_of(kind: str) -> list[str]:
    return [m.name for m in HUB_MODELS.values() if m.kind == kind]


def _download_hint(src: _Source) -> str:
    """How to put `src` into the Hugging Face cache on a machine with internet."""
    if src.weight_name:
        command = f"hf download {src.repo_id} {src.weight_name}"
    elif src.key == "models.base" or (src.entry is not None and src.entry.kind == "base"):
        # The diffusers folders only: base repos also hold multi-GB single-file checkpoints at the top level.
        command = f'hf download {src.repo_id} --include "*.json" --include "*.txt" --include "*/*"'
    elif src.key == "models.base_config":
        command = f'hf download {src.repo_id} --include "*.json" --include "*.txt"'
    else:
        command = f"hf download {src.repo_id}"
    if src.revision != "main":
        command += f" --revision {src.revision}"
    local = "a .safetensors file" if src.key == "models.speed_lora" else "a diffusers-format folder"
    return (f"on a machine with internet run `{command}` (older huggingface_hub: `huggingface-cli download` with "
            f"the same arguments) and copy its cache (~/.cache/huggingface/hub, or $HF_HOME/hub) here, or set "
            f"{src.key} = \"PATH\" to {local}")


def _unavailable(src: _Source, error: BaseException, download: bool) -> ModelUnavailable:
    """One message for every way a Hub or local model can fail to load."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    reason = _first_line(error)
    if src.path is not None:
        return ModelUnavailable(f"{src.label}: {src.path} could not be loaded ({reason}); expected a complete "
                                "diffusers-format model there")
    if isinstance(error, GatedRepoError):
        problem = f"is gated on the Hugging Face Hub: accept its licence at https://huggingface.co/{src.repo_id} " \
                  "and log in with `hf auth login`; otherwise"
    elif isinstance(error, RepositoryNotFoundError):
        problem = "does not exist on the Hugging Face Hub (or is private: `hf auth login`); check the name, or"
    elif isinstance(error, RevisionNotFoundError):
        problem = f"has no revision {src.revision!r} on the Hugging Face Hub;"
    elif not download:
        problem = "is not in the Hugging Face cache and downloads are off (models.download = false):"
    else:
        problem = f"is not in the Hugging Face cache and could not be downloaded ({reason}):"
    # A spec like "folder/model" reads as a repo id when no such folder exists: say so.
    elsewhere = f" (there is no local folder {src.spec!r} either)" if _REPO_ID.fullmatch(src.spec) and \
        src.entry is None else ""
    return ModelUnavailable(f"{src.label}{elsewhere} {problem} {_download_hint(src)}")


def _first_line(error: BaseException) -> str:
    """The first line of an error's message (library errors run to many lines), else its type."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError

    # Hub and transformers/diffusers loaders raise OSError subclasses (LocalEntryNotFoundError, HfHubHTTPError,
    # OfflineModeIsEnabled, EnvironmentError); EntryNotFoundError is the one that is not.
    return (OSError, EntryNotFoundError)


@contextmanager
def _loading(src: _Source, download: bool) -> Iterator[None]:
    try:
        yield
    except ModelUnavailable:
        raise
    except _load_errors() as e:
        raise _unavailable(src, e, download) from e


@dataclass(frozen=True)
class _Loader:
    download: bool
    dtype: torch.dtype
    cache_dir: str | None

    def hub_kwargs(self, src: _Source) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"local_files_only": not self.download}
        if src.path is None:
            kwargs.update(revision=src.revision, cache_dir=self.cache_dir)
        return kwargs

    def config(self, cls: Any, src: _Source, subfolder: str | None = None) -> dict[str, Any]:
        """A model's or a pipeline's config.json / model_index.json, as a dict."""
        with _loading(src, self.download):
            return dict(cls.load_config(src.where, subfolder=subfolder, **self.hub_kwargs(src)))

    def model(self, cls: Any, src: _Source, subfolder: str | None = None, transformers: bool = False) -> Any:
        """`cls.from_pretrained`, trying the fp16 weights first in float16 (half the download and the reading)."""
        import torch

        kwargs = self.hub_kwargs(src)
        if subfolder:
            kwargs["subfolder"] = subfolder
        kwargs["dtype" if transformers else "torch_dtype"] = self.dtype
        with _loading(src, self.download):
            if self.dtype == torch.float16:
                try:
                    return cls.from_pretrained(src.where, variant="fp16", **kwargs)
                except _load_errors():
                    pass  # no fp16 variant (or not cached): the full-precision files, converted on load
            return cls.from_pretrained(src.where, **kwargs)

    def tokenizer(self, src: _Source, subfolder: str) -> Any:
        from transformers import CLIPTokenizer

        with _loading(src, self.download):
            return CLIPTokenizer.from_pretrained(src.where, subfolder=subfolder, **self.hub_kwargs(src))

    def file(self, src: _Source) -> Path:
        """A single file: the local path, or `weight_name` from the Hub cache (downloaded if allowed)."""
        if src.path is not None:
            return src.path
        from huggingface_hub import hf_hub_download

        assert src.weight_name is not None
        with _loading(src, self.download):
            return Path(hf_hub_download(src.repo_id, src.weight_name, revision=src.revision, cache_dir=self.cache_dir,
                                        local_files_only=not self.download))


def _require(src: _Source, *names: str) -> None:
    """A local folder must hold one of `names` (model_index.json, config.json ...) to be a diffusers model."""
    if src.path is None:
        return
    if src.path.is_file():
        raise ModelUnavailable(f"{src.label}: {src.path} is a file; expected a diffusers-format folder (with "
                               f"{' or '.join(names)})")
    if not any((src.path / name).is_file() for name in names):
        raise ModelUnavailable(f"{src.label}: {src.path} is not a diffusers-format model (no {' or '.join(names)} "
                               "in it); point it at the folder `save_pretrained` or `hf download` made")


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
                               f"{', '.join(_names_of('base'))}), a Hub repo id, or a local path")
    dev = resolve_device(device)
    loader = _Loader(download, resolve_dtype(dtype, dev), str(cache_dir) if cache_dir is not None else None)
    base_src = _source("models.base", base, ("base",))
    tiny_src = _source("models.tiny_vae", tiny_vae, ("tiny_vae", "vae")) if tiny_vae else None
    vae_src = _source("models.vae", vae, ("vae", "base")) if load_full_vae and vae else None
    net_src = _source("models.controlnet", controlnet, ("controlnet",)) if controlnet else None
    lora_src = _source("models.speed_lora", speed_lora, ("speed_lora",)) if speed_lora else None

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
        _require(net_src, "config.json")
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


def _base_index(src: _Source, loader: _Loader) -> dict[str, Any]:
    """A diffusers base's model_index.json, checked to be a Stable Diffusion (SDXL or SD 2.x) pipeline."""
    from diffusers import DiffusionPipeline

    _require(src, "model_index.json")
    index = loader.config(DiffusionPipeline, src)
    if "unet" not in index or "text_encoder" not in index:
        raise ModelUnavailable(f"{src.label}: {index.get('_class_name', 'this model')} is not a Stable Diffusion "
                               "(SDXL or SD 2.x) pipeline: expected unet and text_encoder in its model_index.json")
    return index


def _diffusers_parts(src: _Source, index: dict[str, Any], loader: _Loader, need_vae: bool) -> dict[str, Any]:
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


def _scheduler(src: _Source, loader: _Loader) -> Any:
    """The base's own scheduler class and config (the engine reads only its constants)."""
    import diffusers

    config = loader.config(diffusers.EulerAncestralDiscreteScheduler, src, "scheduler")
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        cls = diffusers.EulerAncestralDiscreteScheduler
    return cls.from_config(config)


def _autoencoder_plan(src: _Source, loader: _Loader) -> tuple[Any, str | None]:
    """(AutoencoderTiny or AutoencoderKL, whichever the config names; the subfolder: "vae" in a base model)."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    subfolder = None
    if (src.entry is not None and src.entry.kind == "base") or (
            src.path is not None and not (src.path / "config.json").is_file() and (src.path / "vae").is_dir()):
        subfolder = "vae"
    if subfolder is None:
        _require(src, "config.json")
    config = loader.config(AutoencoderKL, src, subfolder)
    return (AutoencoderTiny if config.get("_class_name") == "AutoencoderTiny" else AutoencoderKL), subfolder


def _controlnet(src: _Source, loader: _Loader, unet: Any) -> Any:
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


def _speed_lora(src: _Source, loader: _Loader, base: _Source) -> dict[str, torch.Tensor]:
    """The speed LoRA's state dict (from its file, or its Hub repo's), checked to be a LoRA."""
    if src.entry is not None and src.entry.base and base.repo_id and base.repo_id != src.entry.base:
        log.warning("%s was trained on %s, not on %s: expect weaker results", src.label, src.entry.base, base.repo_id)
    try:
        return load_lora(loader.file(src))
    except ModelUnavailable as e:
        if str(e).startswith(src.key):
            raise
        raise ModelUnavailable(f"{src.label}: {e}") from None


def _fuse_speed_lora(components: DiffusionComponents, src: _Source, lora: dict[str, torch.Tensor]) -> None:
    """Fuse the speed LoRA into the UNet's weights once: no adapter layers are left to cost time per frame."""
    from engine.denoiser import host_pipeline

    host = host_pipeline(components)
    try:
        host.load_lora_weights(lora, adapter_name="speed")
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelUnavailable(f"{src.label} does not fit the base model ({_first_line(e)})") from e
    host.fuse_lora(lora_scale=1.0, adapter_names=["speed"])
    host.unload_lora_weights()  # drops the adapter layers, keeps the fused weights


def _single_file_parts(src: _Source, config: str, sdxl: bool, loader: _Loader, need_vae: bool) -> dict[str, Any]:
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
        with _loading(src, loader.download):
            pipe = cls.from_single_file(str(src.path), **kwargs)
    except (SingleFileComponentError, ValueError, KeyError) as e:
        raise ModelUnavailable(f"{src.label}: {src.path} is not a checkpoint of the model {config} describes "
                               f"({_first_line(e)}); set models.base_config to the diffusers folder or repo of its "
                               "model family") from e
    parts = {name: getattr(pipe, name, None) for name in
             ("unet", "text_encoder", "tokenizer", "scheduler", "text_encoder_2", "tokenizer_2", "vae")}
    return {name: part for name, part in parts.items() if part is not None}


def _single_file_config(src: _Source, base_config: str, loader: _Loader) -> tuple[str, bool]:
    """(the diffusers config folder or repo for a single-file base, whether it is SDXL)."""
    from diffusers import DiffusionPipeline

    assert src.path is not None
    if src.path.suffix not in (".safetensors", ".ckpt"):
        raise ModelUnavailable(f"{src.label}: {src.path} is neither a diffusers-format folder nor a .safetensors / "
                               ".ckpt checkpoint")
    if base_config:
        conf = _source("models.base_config", base_config, ("base",))
        _require(conf, "model_index.json")
    else:
        # diffusers would fetch the configs of the model family it infers from the file, even with
        # local_files_only; look that family up first so that downloads = false never touches the network.
        from diffusers.loaders.single_file_utils import (
            DIFFUSERS_DEFAULT_PIPELINE_PATHS,
            infer_diffusers_model_type,
        )

        model_type = infer_diffusers_model_type(_checkpoint_view(src))
        repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]
        conf = _Source("models.base_config", repo, repo_id=repo)
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


def _checkpoint_view(src: _Source) -> Mapping[str, Any]:
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
        raise ModelUnavailable(f"{src.label}: {src.path} cannot be read as a checkpoint ({_first_line(e)})") from e


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
        raise ModelUnavailable(f"LoRA file {file} cannot be read ({_first_line(e)}); {expected}") from e
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


def hub_status(model: HubModel, cache_dir: str | Path | None = None) -> str:
    """"in cache", "partly in cache" (configs but no weights) or "not downloaded": the local Hugging Face cache
    only, no network."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        found = try_to_load_from_cache(model.repo_id, filename, cache_dir=cache_dir, revision=model.revision)
        return isinstance(found, str)

    if model.kind == "speed_lora":
        assert model.weight_name is not None
        return "in cache" if cached(model.weight_name) else "not downloaded"
    config, weights = ("model_index.json", "unet/") if model.kind == "base" else ("config.json", "")
    if not cached(config):
        return "not downloaded"
    has_weights = any(cached(f"{weights}diffusion_pytorch_model{variant}.safetensors") for variant in ("", ".fp16"))
    return "in cache" if has_weights else "partly in cache"


def licence_warning(base_spec: str) -> str | None:
    """A one-line warning when `base_spec` (registry name or repo id) is licensed for non-commercial use only."""
    entry = HUB_MODELS.get(base_spec.strip()) or next(
        (m for m in HUB_MODELS.values() if m.repo_id == base_spec.strip()), None)
    if entry is None or entry.commercial_use:
        return None
    maker = "get a Stability AI membership licence" if entry.repo_id.startswith("stabilityai/") else \
        "get a licence from its maker"
    return (f"{entry.name} ({entry.repo_id}) is licensed for non-commercial use only ({entry.licence}); for "
            f"commercial use {maker} or set models.base to a commercially licensed model (e.g. sdxl-base with "
            "models.speed_lora = sdxl-lightning-2step)")
