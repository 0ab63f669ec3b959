"""Where each `models.*` setting of the diffusion engine points, and how its files are read: a registry name
(`HUB_MODELS`), a Hub repo id ("owner/name"), a local path, or for a LoRA "owner/repo:file" (`parse_source`); a
`Loader` reads configs, models, tokenizers and single files from the local path, or from the Hugging Face cache,
downloading when allowed. Every way a model can be missing (gated, no such repo or revision, not cached with
downloads off, a folder that is not a diffusers model) ends in one `ModelUnavailable` naming the setting, the
model and how to get it. Also: what the local cache holds of a registry model (`hub_status`, for `livecam
models`), and the licence warning for a base (`licence_warning`).

diffusers, transformers and huggingface_hub are imported inside the functions: `livecam models` lists the
registry without them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.registry import HUB_MODELS, HubModel
from models.store import ModelUnavailable

if TYPE_CHECKING:
    import torch

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_HUB_FILE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+):(?P<file>[^:]+)")
_KIND_WORDS = {"base": "a base model", "controlnet": "a ControlNet", "tiny_vae": "an autoencoder for live frames",
               "vae": "a full VAE", "speed_lora": "a speed LoRA"}


@dataclass(frozen=True)
class Source:
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


def parse_source(key: str, spec: str, kinds: tuple[str, ...]) -> Source:
    """Parse one model setting: registry name, local path, Hub repo id, or (LoRA) "owner/repo:file"."""
    spec = spec.strip()
    entry = HUB_MODELS.get(spec)
    if entry is not None:
        if entry.kind not in kinds:
            wanted = " or ".join(_KIND_WORDS[k] for k in kinds)
            fits = ", ".join(m.name for m in HUB_MODELS.values() if m.kind in kinds)
            raise ModelUnavailable(f"{key} = {spec!r} is {_KIND_WORDS[entry.kind]}; {key} needs {wanted} "
                                   f"(registry names: {fits}), a Hub repo id or a local path")
        return Source(key, spec, repo_id=entry.repo_id, revision=entry.revision, weight_name=entry.weight_name,
                       entry=entry)
    path = Path(spec).expanduser()
    if path.exists():
        return Source(key, spec, path=path.resolve())
    hub_file = _HUB_FILE.fullmatch(spec)
    if "speed_lora" in kinds and hub_file is not None:
        return Source(key, spec, repo_id=hub_file["repo"], weight_name=hub_file["file"])
    if _REPO_ID.fullmatch(spec) and "speed_lora" not in kinds:
        known = next((m for m in HUB_MODELS.values() if m.repo_id == spec and m.kind in kinds), None)
        return Source(key, spec, repo_id=spec, revision=known.revision if known else "main", entry=known)
    if "speed_lora" in kinds and _REPO_ID.fullmatch(spec):
        raise ModelUnavailable(f"{key} = {spec!r}: a LoRA on the Hub is named \"owner/repo:file.safetensors\" "
                               f"(or a registry name: {', '.join(names_of('speed_lora'))}); no local file {path}")
    raise ModelUnavailable(f"{key} = {spec!r}: no such file or directory ({path.absolute()})")


def names_of(kind: str) -> list[str]:
    return [m.name for m in HUB_MODELS.values() if m.kind == kind]


def _download_hint(src: Source) -> str:
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


def _unavailable(src: Source, error: BaseException, download: bool) -> ModelUnavailable:
    """One message for every way a Hub or local model can fail to load."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    reason = first_line(error)
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


def first_line(error: BaseException) -> str:
    """The first line of an error's message (library errors run to many lines), else its type."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError

    # Hub and transformers/diffusers loaders raise OSError subclasses (LocalEntryNotFoundError, HfHubHTTPError,
    # OfflineModeIsEnabled, EnvironmentError); EntryNotFoundError is the one that is not.
    return (OSError, EntryNotFoundError)


@contextmanager
def loading(src: Source, download: bool) -> Iterator[None]:
    try:
        yield
    except ModelUnavailable:
        raise
    except _load_errors() as e:
        raise _unavailable(src, e, download) from e


@dataclass(frozen=True)
class Loader:
    download: bool
    dtype: torch.dtype
    cache_dir: str | None

    def hub_kwargs(self, src: Source) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"local_files_only": not self.download}
        if src.path is None:
            kwargs.update(revision=src.revision, cache_dir=self.cache_dir)
        return kwargs

    def config(self, cls: Any, src: Source, subfolder: str | None = None) -> dict[str, Any]:
        """A model's or a pipeline's config.json / model_index.json, as a dict."""
        with loading(src, self.download):
            return dict(cls.load_config(src.where, subfolder=subfolder, **self.hub_kwargs(src)))

    def model(self, cls: Any, src: Source, subfolder: str | None = None, transformers: bool = False) -> Any:
        """`cls.from_pretrained`, trying the fp16 weights first in float16 (half the download and the reading)."""
        import torch

        kwargs = self.hub_kwargs(src)
        if subfolder:
            kwargs["subfolder"] = subfolder
        kwargs["dtype" if transformers else "torch_dtype"] = self.dtype
        with loading(src, self.download):
            if self.dtype == torch.float16:
                try:
                    return cls.from_pretrained(src.where, variant="fp16", **kwargs)
                except _load_errors():
                    pass  # no fp16 variant (or not cached): the full-precision files, converted on load
            return cls.from_pretrained(src.where, **kwargs)

    def tokenizer(self, src: Source, subfolder: str) -> Any:
        from transformers import CLIPTokenizer

        with loading(src, self.download):
            return CLIPTokenizer.from_pretrained(src.where, subfolder=subfolder, **self.hub_kwargs(src))

    def file(self, src: Source) -> Path:
        """A single file: the local path, or `weight_name` from the Hub cache (downloaded if allowed)."""
        if src.path is not None:
            return src.path
        from huggingface_hub import hf_hub_download

        assert src.weight_name is not None
        with loading(src, self.download):
            return Path(hf_hub_download(src.repo_id, src.weight_name, revision=src.revision, cache_dir=self.cache_dir,
                                        local_files_only=not self.download))


def require(src: Source, *names: str) -> None:
    """A local folder must hold one of `names` (model_index.json, config.json ...) to be a diffusers model."""
    if src.path is None:
        return
    if src.path.is_file():
        raise ModelUnavailable(f"{src.label}: {src.path} is a file; expected a diffusers-format folder (with "
                               f"{' or '.join(names)})")
    if not any((src.path / name).is_file() for name in names):
        raise ModelUnavailable(f"{src.label}: {src.path} is not a diffusers-format model (no {' or '.join(names)} "
                               "in it); point it at the folder `save_pretrained` or `hf download` made")


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
