"""Resolving and loading the diffusion engine's models (models/sources.py, diffusion.py, lora_file.py), offline on
tiny random models.

Every loading path runs for real: diffusers folders, a Hub repo read from a (hand-made) Hugging Face cache, one
original-format checkpoint, LoRA files in diffusers, PEFT-with-alpha and kohya formats, a fused speed LoRA. No
network: downloads are off and the cache is a temporary folder.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

import diffusers
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.denoiser import Denoiser, DiffusionComponents, encode_prompt, host_pipeline
from models.diffusion import load_components, resolve_device, resolve_dtype
from models.lora_file import load_lora
from models.registry import HUB_MODELS
from models.sources import hub_status, licence_warning
from models.store import ModelUnavailable
from tests._single_file import sdxl_original_state_dict, unet_to_original, write_sdxl_single_file
from tests.tiny_sdxl import tiny_components, tiny_tokenizer

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]


def _save_sdxl(c: dict[str, Any], directory: Path) -> Path:
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=c["vae"], text_encoder=c["text_encoder"], text_encoder_2=c["text_encoder_2"], tokenizer=c["tokenizer"],
        tokenizer_2=c["tokenizer_2"], unet=c["unet"], scheduler=c["scheduler"])
    pipe.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The tiny SDXL components in diffusers format: base/, controlnet/, taesd/, and vae/ (a full VAE whose
    weights differ from the base's, so that loading it is visible)."""
    root = tmp_path_factory.mktemp("tiny")
    c = tiny_components()
    _save_sdxl(c, root / "base")
    c["controlnet"].save_pretrained(root / "controlnet")
    c["tiny_vae"].save_pretrained(root / "taesd")
    stills_vae = copy.deepcopy(c["vae"])
    with torch.no_grad():
        stills_vae.decoder.conv_out.weight.add_(1.0)
    stills_vae.save_pretrained(root / "vae")
    c["stills_vae"] = stills_vae
    return root, c


@pytest.fixture(scope="module")
def diffusers_lora(saved: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA on the tiny UNet's attention, saved by diffusers (random B: it really changes the weights)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = copy.deepcopy(saved[1]["unet"])
    torch.manual_seed(1)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=ATTENTION, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    directory = tmp_path_factory.mktemp("lora")
    diffusers.StableDiffusionXLPipeline.save_lora_weights(directory, unet_lora_layers=layers)
    return directory / "pytorch_lora_weights.safetensors"


def _load(root: Path, **kwargs: Any) -> DiffusionComponents:
    options: dict[str, Any] = {"base": str(root / "base"), "tiny_vae": str(root / "taesd"), "device": "cpu",
                               "download": False}
    options.update(kwargs)
    return load_components(**options)


def _assert_same(loaded: Any, original: Any) -> None:
    """Every parameter equal (the models are small enough to compare them all)."""
    want = original.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key].to(value.dtype), value), key


def _fused_unet(root: Path, lora: Any) -> dict[str, Any]:
    """The base UNet's weights after fusing `lora` (a file path or a state dict) the way the engine does."""
    c = _load(root)
    host = host_pipeline(c)
    host.load_lora_weights(lora if isinstance(lora, str) else dict(lora), adapter_name="identity")
    host.fuse_lora(lora_scale=1.0, adapter_names=["identity"])
    host.unload_lora_weights()
    return {k: v.clone() for k, v in c.unet.state_dict().items()}


# --- diffusers folders ---------------------------------------------------------------------------------------


def test_loads_every_component_from_diffusers_folders(saved: tuple[Path, dict[str, Any]]) -> None:
    """base + ControlNet + tiny VAE + full VAE: the right classes, on the CPU in float32, eval mode without
    gradients, every weight equal to what was saved, and `names` saying what was loaded."""
    root, c = saved
    comp = _load(root, controlnet=str(root / "controlnet"), vae=str(root / "vae"), load_full_vae=True)
    assert isinstance(comp.unet, diffusers.UNet2DConditionModel)
    assert isinstance(comp.controlnet, diffusers.ControlNetModel)
    assert isinstance(comp.tiny_vae, diffusers.AutoencoderTiny)
    assert isinstance(comp.vae, diffusers.AutoencoderKL)
    assert type(comp.text_encoder).__name__ == "CLIPTextModel"
    assert type(comp.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert comp.tokenizer_2 is not None and comp.is_sdxl
    assert comp.device == torch.device("cpu") and comp.dtype == torch.float32
    for name in ("unet", "controlnet", "tiny_vae", "text_encoder", "text_encoder_2"):
        _assert_same(getattr(comp, name), c[name])
    _assert_same(comp.vae, c["stills_vae"])  # models.vae, not the base's own
    for module in (comp.unet, comp.controlnet, comp.tiny_vae, comp.vae, comp.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
        assert next(module.parameters()).dtype == torch.float32
    assert isinstance(comp.scheduler, diffusers.EulerAncestralDiscreteScheduler)
    assert comp.scheduler.config.prediction_type == "epsilon" and len(comp.scheduler.alphas_cumprod) == 1000
    assert comp.tokenizer("a headshot").input_ids == c["tokenizer"]("a headshot").input_ids
    assert comp.names == {"base": str(root / "base"), "tiny_vae": str(root / "taesd"), "vae": str(root / "vae"),
                          "controlnet": str(root / "controlnet")}


def test_without_tiny_vae_the_live_path_uses_the_base_vae_and_no_stills_vae(saved: tuple[Path, dict[str, Any]]) -> None:
    """tiny_vae "" encodes live frames with the base's own AutoencoderKL; the full VAE is not loaded unless asked
    for, and "" for it means the base's."""
    root, c = saved
    comp = _load(root, tiny_vae="")
    assert isinstance(comp.tiny_vae, diffusers.AutoencoderKL) and comp.vae is None and comp.controlnet is None
    _assert_same(comp.tiny_vae, c["vae"])
    assert comp.names["tiny_vae"] == f"{root / 'base'} (its vae)" and "vae" not in comp.names
    stills = _load(root, load_full_vae=True)
    assert isinstance(stills.tiny_vae, diffusers.AutoencoderTiny)
    _assert_same(stills.vae, c["vae"])


def test_loaded_components_render_through_the_engine(saved: tuple[Path, dict[str, Any]]) -> None:
    """What load_components returns is what the engine takes: prompt encoding and one ControlNet frame run."""
    from engine.diffusion_settings import DiffusionSettings

    root, _ = saved
    comp = _load(root, controlnet=str(root / "controlnet"))
    denoiser = Denoiser(comp, DiffusionSettings(size=64, steps=1))
    denoiser.prepare(*encode_prompt(host_pipeline(comp), "a professional headshot", comp.device))
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out, tag = denoiser(crop, np.zeros_like(crop), tag=7)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and tag == 7


def test_sd2_family_base_has_no_second_text_encoder(tmp_path: Path) -> None:
    """An SD 2.x-family pipeline (SD-Turbo's layout: one text encoder, no text_time embedding) loads with
    text_encoder_2 and tokenizer_2 None."""
    from transformers import CLIPTextConfig, CLIPTextModel

    c = tiny_components()
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, hidden_size=32, intermediate_size=37,
                                                num_attention_heads=4, num_hidden_layers=2, pad_token_id=1,
                                                vocab_size=520))
    diffusers.StableDiffusionPipeline(
        vae=c["vae"], text_encoder=text_encoder, tokenizer=tiny_tokenizer(), unet=unet, scheduler=c["scheduler"],
        safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(tmp_path / "sd2")
    c["tiny_vae"].save_pretrained(tmp_path / "taesd")
    comp = load_components(base=str(tmp_path / "sd2"), tiny_vae=str(tmp_path / "taesd"), device="cpu", download=False)
    assert comp.text_encoder_2 is None and comp.tokenizer_2 is None and not comp.is_sdxl
    _assert_same(comp.unet, unet)
    _assert_same(comp.text_encoder, text_encoder)


def test_float16_prefers_the_fp16_weights_and_falls_back_to_full_precision(
        saved: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """In float16 a model's `.fp16` weights are read when it has them (half the download); a model without
    them loads from its float32 weights, converted."""
    from models.sources import Loader, Source

    _, c = saved
    half = copy.deepcopy(c["tiny_vae"]).to(torch.float16)
    with_fp16 = tmp_path / "with_fp16"
    half.save_pretrained(with_fp16, variant="fp16")
    assert (with_fp16 / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loader = Loader(download=False, dtype=torch.float16, cache_dir=None)
    for folder in (with_fp16, saved[0] / "taesd"):
        model = loader.model(diffusers.AutoencoderTiny, Source("models.tiny_vae", str(folder), path=folder))
        assert next(model.parameters()).dtype == torch.float16
        _assert_same(model, half)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loads_on_cuda_in_float16_and_renders(saved: tuple[Path, dict[str, Any]], diffusers_lora: Path) -> None:
    root, _ = saved
    comp = _load(root, controlnet=str(root / "controlnet"), speed_lora=str(diffusers_lora), device="cuda")
    assert comp.dtype == torch.float16 and comp.device.type == "cuda"
    assert next(comp.unet.parameters()).device.type == "cuda"
    from engine.diffusion_settings import DiffusionSettings

    denoiser = Denoiser(comp, DiffusionSettings(size=64, steps=2))
    denoiser.prepare(*encode_prompt(host_pipeline(comp), "a professional headshot", comp.device))
    crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out, _ = denoiser(crop, np.zeros_like(crop))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


# --- the Hugging Face cache ----------------------------------------------------------------------------------


def _cache_repo(cache: Path, repo_id: str, files: Path | dict[str, Path]) -> Path:
    """Put a folder (or single files) into `cache` the way the Hugging Face cache lays out a snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    if isinstance(files, Path):
        shutil.copytree(files, snapshot, dirs_exist_ok=True)
    else:
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, source in files.items():
            shutil.copy(source, snapshot / name)
    return snapshot


@pytest.fixture()
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and offline mode, through the environment and huggingface_hub's constants
    (read once at import)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_registry_names_load_from_the_hub_cache(saved: tuple[Path, dict[str, Any]], diffusers_lora: Path,
                                                offline: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Registry names resolve to their repos in the Hugging Face cache (here filled by hand with the tiny
    models), with no network; the speed LoRA comes from its repo file and is fused; a LoRA made for another
    base is loaded with a warning."""
    root, c = saved
    _cache_repo(offline, "stabilityai/sdxl-turbo", root / "base")
    _cache_repo(offline, "xinsir/controlnet-openpose-sdxl-1.0", root / "controlnet")
    _cache_repo(offline, "madebyollin/taesdxl", root / "taesd")
    _cache_repo(offline, "ByteDance/SDXL-Lightning", {"sdxl_lightning_2step_lora.safetensors": diffusers_lora})
    with caplog.at_level(logging.WARNING, logger="models.diffusion"):
        comp = load_components(base="sdxl-turbo", controlnet="openpose-sdxl", tiny_vae="taesdxl",
                               speed_lora="sdxl-lightning-2step", device="cpu", download=False, cache_dir=offline)
    assert comp.names == {"base": "stabilityai/sdxl-turbo", "controlnet": "xinsir/controlnet-openpose-sdxl-1.0",
                          "tiny_vae": "madebyollin/taesdxl",
                          "speed_lora": "ByteDance/SDXL-Lightning:sdxl_lightning_2step_lora.safetensors"}
    _assert_same(comp.controlnet, c["controlnet"])
    assert "trained on stabilityai/stable-diffusion-xl-base-1.0" in caplog.text
    fused = comp.unet.state_dict()
    assert not any("lora" in key for key in fused)  # no adapter layers left to cost time per frame
    q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(fused[q], c["unet"].state_dict()[q])
    assert torch.equal(fused["conv_in.weight"], c["unet"].state_dict()["conv_in.weight"])  # not a LoRA target


def test_hub_status_reads_the_cache_only(saved: tuple[Path, dict[str, Any]], diffusers_lora: Path,
                                         offline: Path) -> None:
    root, _ = saved
    assert hub_status(HUB_MODELS["sdxl-turbo"], cache_dir=offline) == "not downloaded"
    _cache_repo(offline, "stabilityai/sdxl-turbo", root / "base")
    assert hub_status(HUB_MODELS["sdxl-turbo"], cache_dir=offline) == "in cache"
    _cache_repo(offline, "madebyollin/taesdxl", {"config.json": root / "taesd" / "config.json"})
    assert hub_status(HUB_MODELS["taesdxl"], cache_dir=offline) == "partly in cache"
    _cache_repo(offline, "latent-consistency/lcm-lora-sdxl", {"pytorch_lora_weights.safetensors": diffusers_lora})
    assert hub_status(HUB_MODELS["lcm-lora-sdxl"], cache_dir=offline) == "in cache"
    assert hub_status(HUB_MODELS["hyper-sdxl-1step"], cache_dir=offline) == "not downloaded"


# --- what is missing, and how the user hears about it -----------------------------------------------------------


def test_missing_base_offline_says_which_setting_which_model_and_how_to_get_it(offline: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        load_components(base="sdxl-turbo", device="cpu", download=False, cache_dir=offline)
    message = str(info.value)
    assert "\n" not in message
    for part in ("models.base", "'sdxl-turbo'", "stabilityai/sdxl-turbo", "downloads are off",
                 "hf download stabilityai/sdxl-turbo", "diffusers-format folder"):
        assert part in message, part


def test_missing_controlnet_and_speed_lora_name_their_settings(saved: tuple[Path, dict[str, Any]],
                                                               offline: Path) -> None:
    root, _ = saved
    with pytest.raises(ModelUnavailable, match=r"models\.controlnet = 'openpose-sdxl' "
                                               r"\(xinsir/controlnet-openpose-sdxl-1\.0\) is not in the Hugging Face"):
        _load(root, controlnet="openpose-sdxl", cache_dir=offline)
    with pytest.raises(ModelUnavailable) as info:
        _load(root, speed_lora="sdxl-lightning-2step", cache_dir=offline)
    assert "models.speed_lora" in str(info.value)
    assert "hf download ByteDance/SDXL-Lightning sdxl_lightning_2step_lora.safetensors" in str(info.value)
    with pytest.raises(ModelUnavailable, match=r"models\.tiny_vae = 'someone/tiny-vae' \(there is no local folder"):
        _load(root, tiny_vae="someone/tiny-vae", cache_dir=offline)


def test_bad_local_paths_and_wrong_kinds_are_named(saved: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = saved
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelUnavailable, match=r"models\.base = .*no-such-model.*no such file or directory"):
        load_components(base=str(missing), device="cpu", download=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"models\.base = .*empty.* is not a diffusers-format model "
                                               r"\(no model_index\.json"):
        load_components(base=str(tmp_path / "empty"), device="cpu", download=False)
    with pytest.raises(ModelUnavailable, match=r"models\.controlnet = .*empty.*no config\.json"):
        _load(root, controlnet=str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailable, match=r"models\.controlnet = 'taesdxl' is an autoencoder for live frames"):
        _load(root, controlnet="taesdxl")
    with pytest.raises(ModelUnavailable, match=r"models\.speed_lora = .*no-such\.safetensors.*no such file"):
        _load(root, speed_lora=str(tmp_path / "no-such.safetensors"))
    with pytest.raises(ModelUnavailable, match=r"models\.base = ''"):
        load_components(base="", device="cpu", download=False)


# --- one original-format checkpoint ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """The tiny SDXL as one SGM-layout .safetensors, plus its diffusers folder for the configs.

    The two text encoders get different widths (16 and 48, like SDXL's 768 and 1280; together the UNet's 64):
    diffusers tells CLIP-L from OpenCLIP-bigG in a single file by width, and with equal widths it would read
    the second encoder from the first's weights.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(width: int) -> Any:
        return CLIPTextConfig(bos_token_id=0, eos_token_id=1, hidden_size=width, intermediate_size=37,
                              num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=520,
                              projection_dim=32)

    root = tmp_path_factory.mktemp("single")
    c = tiny_components(seed=3)
    c["text_encoder"] = CLIPTextModel(config(16))
    c["text_encoder_2"] = CLIPTextModelWithProjection(config(48))
    _save_sdxl(c, root / "config")
    c["tiny_vae"].save_pretrained(root / "taesd")
    path = write_sdxl_single_file(root / "tiny_sdxl.safetensors", c["unet"], c["vae"], c["text_encoder"],
                                  c["text_encoder_2"])
    # The older pickle format, nested under "state_dict" as SD checkpoints were saved by PyTorch Lightning.
    state = sdxl_original_state_dict(c["unet"], c["vae"], c["text_encoder"], c["text_encoder_2"])
    torch.save({"state_dict": {k: v.contiguous() for k, v in state.items()}}, root / "tiny_sdxl.ckpt")
    return path, root, c


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_base_loads_with_its_configs(single_file: tuple[Path, Path, dict[str, Any]], suffix: str) -> None:
    """UNet, both text encoders and the VAE come out of the one checkpoint weight for weight."""
    path, root, c = single_file
    path = path.with_suffix(suffix)
    comp = load_components(base=str(path), base_config=str(root / "config"), device="cpu", download=False)
    assert comp.is_sdxl and isinstance(comp.tiny_vae, diffusers.AutoencoderKL)
    for name in ("unet", "text_encoder", "text_encoder_2"):
        _assert_same(getattr(comp, name), c[name])
    _assert_same(comp.tiny_vae, c["vae"])
    assert comp.names["base"] == str(path)
    assert comp.tokenizer_2 is not None and len(comp.scheduler.alphas_cumprod) == 1000


def test_single_file_base_skips_its_vae_when_a_tiny_vae_is_set(single_file: tuple[Path, Path, dict[str, Any]]) -> None:
    path, root, c = single_file
    comp = load_components(base=str(path), base_config=str(root / "config"), tiny_vae=str(root / "taesd"),
                           device="cpu", download=False)
    assert isinstance(comp.tiny_vae, diffusers.AutoencoderTiny) and comp.vae is None
    _assert_same(comp.unet, c["unet"])


def test_single_file_without_configs_offline_asks_for_base_config(single_file: tuple[Path, Path, dict[str, Any]],
                                                                   offline: Path) -> None:
    """diffusers would go online for the configs of the family it infers; with downloads off it must not."""
    path, _, _ = single_file
    with pytest.raises(ModelUnavailable, match=r"models\.base = .*single checkpoint whose configs come from .* "
                                               r"downloads are off.*models\.base_config"):
        load_components(base=str(path), device="cpu", download=False, cache_dir=offline)


# --- LoRA files -----------------------------------------------------------------------------------------------


def test_diffusers_lora_loads_and_fuses_like_the_file(saved: tuple[Path, dict[str, Any]], diffusers_lora: Path) -> None:
    """load_lora's dict is what DiffusionRenderer.set_identity takes: fused, it gives the same weights as
    diffusers loading the file itself."""
    root, c = saved
    lora = load_lora(diffusers_lora)
    assert lora and all("lora" in key for key in lora) and all(isinstance(v, torch.Tensor) for v in lora.values())
    via_dict, via_file = _fused_unet(root, lora), _fused_unet(root, str(diffusers_lora))
    q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(via_dict[q], c["unet"].state_dict()[q])
    for key, value in via_file.items():
        torch.testing.assert_close(via_dict[key], value)


def test_peft_lora_alpha_in_metadata_is_kept(saved: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """A LoRA saved with lora_alpha = 2 * r in its metadata: the dict (which carries no metadata) still fuses
    at the trained strength, as the file does."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root, _ = saved
    unet = copy.deepcopy(saved[1]["unet"])
    config = LoraConfig(r=4, lora_alpha=8, target_modules=ATTENTION, init_lora_weights=False)
    unet.add_adapter(config)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    diffusers.StableDiffusionXLPipeline.save_lora_weights(tmp_path, unet_lora_layers=layers,
                                                          unet_lora_adapter_metadata=config.to_dict())
    path = tmp_path / "pytorch_lora_weights.safetensors"
    via_dict, via_file = _fused_unet(root, load_lora(path)), _fused_unet(root, str(path))
    for key, value in via_file.items():
        torch.testing.assert_close(via_dict[key], value)


def test_kohya_lora_with_sgm_names_and_alpha(saved: tuple[Path, dict[str, Any]], diffusers_lora: Path,
                                             tmp_path: Path) -> None:
    """The same LoRA written the kohya way for SDXL (lora_unet_input_blocks_..., original block names, alpha =
    r / 2): it fuses as diffusers fuses the file, at half the diffusers LoRA's strength."""
    from safetensors.torch import load_file

    root, c = saved
    kohya: dict[str, Any] = {}
    for key, down in load_file(diffusers_lora).items():
        if ".lora.down." not in key:
            continue
        module = key.removeprefix("unet.").split(".lora.down.")[0]
        (sgm,) = unet_to_original({f"{module}.weight": down}, c["unet"].config)
        name = "lora_unet_" + sgm.removesuffix(".weight").replace(".", "_")
        kohya[f"{name}.lora_down.weight"] = down
        kohya[f"{name}.lora_up.weight"] = load_file(diffusers_lora)[key.replace(".down.", ".up.")]
        kohya[f"{name}.alpha"] = torch.tensor(down.shape[0] / 2)
    assert any("input_blocks_4_1_transformer_blocks_0_attn1_to_q" in k for k in kohya)
    path = tmp_path / "kohya.safetensors"
    save_file(kohya, str(path))
    lora = load_lora(path)
    assert all(key.startswith("unet.") for key in lora) and not any(key.endswith(".alpha") for key in lora)
    via_dict, via_file = _fused_unet(root, lora), _fused_unet(root, str(path))
    full = _fused_unet(root, str(diffusers_lora))
    base = c["unet"].state_dict()
    for key, value in via_file.items():
        torch.testing.assert_close(via_dict[key], value)
    q = "up_blocks.0.attentions.2.transformer_blocks.1.attn2.to_q.weight"
    torch.testing.assert_close(via_dict[q] - base[q], (full[q] - base[q]) / 2)


def test_lora_files_that_are_missing_or_not_loras(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"LoRA file .*absent\.safetensors does not exist"):
        load_lora(tmp_path / "absent.safetensors")
    weights = tmp_path / "weights.safetensors"
    save_file({"conv_in.weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(ModelUnavailable, match=r"LoRA file .*weights\.safetensors is not a LoRA .*conv_in\.weight.*"
                                               r"expected a LoRA"):
        load_lora(weights)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelUnavailable, match=r"LoRA file .*garbage\.safetensors cannot be read .*expected a LoRA"):
        load_lora(garbage)


def test_speed_lora_file_is_fused_at_load(saved: tuple[Path, dict[str, Any]], diffusers_lora: Path) -> None:
    root, c = saved
    comp = _load(root, speed_lora=str(diffusers_lora))
    q = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(comp.unet.state_dict()[q], c["unet"].state_dict()[q])
    assert not any("lora" in key for key in comp.unet.state_dict())
    assert comp.names["speed_lora"] == str(diffusers_lora)


# --- settings, licences, `livecam models` ---------------------------------------------------------------------


def test_device_and_dtype_settings() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "mps"):
        with pytest.raises(ValueError, match=rf"device = '{bad}': expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device = 'cuda': .* sees no CUDA GPU"):
            resolve_device("cuda")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32 and resolve_dtype("auto", cuda) == torch.float16
    assert resolve_dtype("fp32", cpu) == torch.float32 and resolve_dtype("bf16", cuda) == torch.bfloat16
    assert resolve_dtype("fp16", "cuda:0") == torch.float16
    for half in ("fp16", "bf16"):
        with pytest.raises(ValueError, match=rf"dtype = '{half}': half precision needs CUDA; use fp32"):
            resolve_dtype(half, cpu)
    with pytest.raises(ValueError, match=r"dtype = 'fp64': expected auto, fp16, bf16 or fp32"):
        resolve_dtype("fp64", cpu)


def test_licence_warning_for_non_commercial_bases() -> None:
    warning = licence_warning("sdxl-turbo")
    assert warning is not None and "\n" not in warning
    assert "stabilityai/sdxl-turbo" in warning and "non-commercial use only" in warning
    assert "Stability AI Non-Commercial Research Community License" in warning
    assert licence_warning("stabilityai/sd-turbo") is not None
    assert licence_warning("sdxl-base") is None
    assert licence_warning("stabilityai/stable-diffusion-xl-base-1.0") is None
    assert licence_warning("/models/my-finetune.safetensors") is None


def test_registry_entries_are_consistent() -> None:
    for name, model in HUB_MODELS.items():
        assert name == model.name and "/" in model.repo_id and model.revision
        if model.kind == "speed_lora":
            assert model.weight_name and model.base == HUB_MODELS["sdxl-base"].repo_id
    assert not HUB_MODELS["sdxl-turbo"].commercial_use and HUB_MODELS["sdxl-turbo"].default_steps == 1
    assert HUB_MODELS["sdxl-base"].commercial_use


def test_livecam_models_lists_the_hub_models(capsys: pytest.CaptureFixture[str], offline: Path) -> None:
    from livecam.config import load_config
    from livecam.doctor import list_models

    list_models(load_config(None))
    out = capsys.readouterr().out
    assert "sdxl-turbo (base): not downloaded" in out
    turbo = out.split("sdxl-turbo (base)")[1].split("\n\n")[0]
    assert "NON-COMMERCIAL" in turbo and "stabilityai/sdxl-turbo" in turbo
    sdxl_base = out.split("sdxl-base (base)")[1].split("\n\n")[0]
    assert "NON-COMMERCIAL" not in sdxl_base
    assert "ByteDance/SDXL-Lightning / sdxl_lightning_2step_lora.safetensors" in out


def test_livecam_models_on_a_partial_install_without_diffusers(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from livecam.config import load_config
    from livecam.doctor import list_models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "diffusers" else real(name, *args))
    list_models(load_config(None))
    out = capsys.readouterr().out
    assert "diffusers is missing (a partial install: reinstall livecam: pip install -c constraints.txt -e .)" in out
    assert "sdxl-turbo (base): status unknown" in out and "face_landmarker" in out
