"""Identity LoRA training on tiny random SDXL components and the six S001 photos: the evaluation loss goes
down, the saved file loads into the diffusion engine and changes its output, resuming gives exactly the
uninterrupted result, a seed gives the same weights, and the caller's model is left as it was."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from benchmarks import training_gpu
from engine.background import BackgroundSettings
from engine.denoiser import DiffusionComponents
from engine.diffusion import DiffusionRenderer
from engine.diffusion_settings import DiffusionSettings
from engine.framing import FramingSettings
from engine.relight import RelightSettings
from engine.skin import SkinSettings
from engine.studio import StudioRenderer
from engine.types import Face, RGBImage
from livecam.photos import read_image
from models import lora_adapters, lora_training
from models.lora_adapters import LORA_FILE
from models.lora_checkpoints import latest_checkpoint
from models.lora_data import training_resolution
from models.lora_file import load_lora
from models.lora_training import TrainingSettings, evaluation_loss, train_identity_lora
from tests._landmarks import asset, photo_landmarks
from tests.tiny_sdxl import full_size_components, tiny_components

Weights = dict[str, Any]
"""Tensors by name."""
SIZE = 64
PHOTOS = [f"images/identity/meds-aa-S001-0{i}.jpg" for i in range(1, 7)]
CAPTION = "a photo of ohwx person"
# Tiny random models learn slowly at the real default (1e-4); rank 4 keeps the steps quick.
FAST: dict[str, Any] = {"resolution": SIZE, "learning_rate": 3e-3, "rank": 4, "checkpoint_every": 0}


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of training."""


def square(image: RGBImage, size: int) -> RGBImage:
    """The centred square of a photo, resized to size x size."""
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = image[y0 : y0 + side, x0 : x0 + side]
    return np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))


def build() -> DiffusionComponents:
    c = tiny_components(0)
    comp = DiffusionComponents(unet=c["unet"], tiny_vae=c["tiny_vae"], text_encoder=c["text_encoder"],
                               tokenizer=c["tokenizer"], scheduler=c["scheduler"], device=torch.device("cpu"),
                               dtype=torch.float32, controlnet=c["controlnet"], text_encoder_2=c["text_encoder_2"],
                               tokenizer_2=c["tokenizer_2"], vae=c["vae"])
    for module in (c["unet"], c["controlnet"], c["tiny_vae"], c["vae"], c["text_encoder"], c["text_encoder_2"]):
        module.eval().requires_grad_(False)  # as models.diffusion.load_components gives them
    return comp


@pytest.fixture(scope="module")
def pristine() -> DiffusionComponents:
    """Built once; tests that train take a deep copy (`fresh`)."""
    return build()


def fresh(pristine: DiffusionComponents) -> DiffusionComponents:
    return copy.deepcopy(pristine)


@pytest.fixture(scope="module")
def examples() -> list[tuple[RGBImage, str]]:
    return [(square(read_image(asset(p)), SIZE), CAPTION) for p in PHOTOS]


def snapshot(comp: DiffusionComponents) -> Weights:
    return {f"{name}.{key}": value.clone() for name in ("unet", "text_encoder", "text_encoder_2", "vae")
            for key, value in getattr(comp, name).state_dict().items()}


@pytest.fixture(scope="module")
def trained(pristine: DiffusionComponents, examples: list[tuple[RGBImage, str]],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[DiffusionComponents, Any, Weights]:
    """(components after training, the TrainingResult, the weights before): 30 steps, evaluated every 10."""
    comp = fresh(pristine)
    before = snapshot(comp)
    result = train_identity_lora(comp, examples, TrainingSettings(steps=30, **FAST), tmp_path_factory.mktemp("lora"),
                                 progress=False, eval_every=10)
    return comp, result, before


def lora_tensors(path: Path) -> Weights:
    return load_file(str(path))


def test_training_lowers_the_evaluation_loss(trained: tuple[DiffusionComponents, Any, Weights],
                                             examples: list[tuple[RGBImage, str]]) -> None:
    comp, result, _ = trained
    steps = [s for s, _ in result.eval_losses]
    losses = [v for _, v in result.eval_losses]
    assert steps == [0, 10, 20, 30] and result.steps == 30
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] and result.final_loss == losses[-1]
    assert np.isfinite(result.train_loss) and result.seconds > result.prepare_seconds > 0
    settings = TrainingSettings(**FAST)
    # The saved file (diffusers format) reproduces the trained model's loss; without it the base's comes back.
    assert evaluation_loss(comp, examples, settings, result.lora_path) == pytest.approx(losses[-1], rel=1e-5)
    assert evaluation_loss(comp, examples, settings) == pytest.approx(losses[0], rel=1e-6)
    assert not (result.lora_path.parent / "checkpoints").exists()  # nothing left to resume


def test_training_leaves_the_base_model_unchanged(
        trained: tuple[DiffusionComponents, Any, Weights]) -> None:
    comp, _, before = trained
    after = snapshot(comp)
    assert after.keys() == before.keys()  # no adapter weights left behind
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    modules: list[Any] = [comp.unet, comp.text_encoder, comp.text_encoder_2]
    for module in modules:
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training and not lora_adapters.is_checkpointing(module)
    attn = comp.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert type(attn.to_q) is torch.nn.Linear and type(attn.to_out[0]) is torch.nn.Linear


def test_the_lora_loads_into_the_engine_and_changes_its_output(
        trained: tuple[DiffusionComponents, Any, Weights]) -> None:
    comp, result, _ = trained
    assert result.lora_path.name == LORA_FILE
    keys = lora_tensors(result.lora_path)
    assert keys and all(k.startswith("unet.") for k in keys)
    assert any(".to_q.lora.down.weight" in k for k in keys) and any(".to_out.0.lora.up.weight" in k for k in keys)
    with pipeline_loaded(comp, result.lora_path) as adapters:
        assert adapters == ["identity"]  # diffusers' own loader takes the file as is
    lora = load_lora(result.lora_path)
    photo = read_image(asset(PHOTOS[0]))
    face = Face(photo_landmarks(PHOTOS[0]), (photo.shape[1], photo.shape[0]))
    studio = StudioRenderer((160, 120), FramingSettings(), BackgroundSettings(enabled=False), RelightSettings(),
                            SkinSettings())
    renderer = DiffusionRenderer(comp, DiffusionSettings(size=SIZE, similar_threshold=0.0), studio, CAPTION)
    renderer.prepare()
    base = renderer.render(photo, face, None, 0)
    renderer.set_identity(lora, 1.0)
    with_identity = renderer.render(photo, face, None, 33)
    assert renderer.counters()["failures"] == 0
    assert np.abs(with_identity.astype(int) - base).mean() > 0.1
    renderer.set_identity(None)
    np.testing.assert_array_equal(renderer.render(photo, face, None, 66), base)


class pipeline_loaded:
    """The LoRA file loaded by diffusers' `load_lora_weights` (as the engine does), unloaded on exit."""

    def __init__(self, comp: DiffusionComponents, path: Path) -> None:
        from engine.denoiser import host_pipeline

        self.host = host_pipeline(comp)
        self.path = path

    def __enter__(self) -> list[str]:
        self.host.load_lora_weights(str(self.path), adapter_name="identity")
        return list(self.host.get_active_adapters())

    def __exit__(self, *exc: object) -> None:
        self.host.unload_lora_weights()


def test_resume_gives_the_uninterrupted_result(pristine: DiffusionComponents,
                                               examples: list[tuple[RGBImage, str]], tmp_path: Path) -> None:
    examples = examples[:3]
    settings = TrainingSettings(steps=8, **{**FAST, "checkpoint_every": 4})
    whole = train_identity_lora(fresh(pristine), examples, settings, tmp_path / "whole", progress=False, eval_every=4)
    comp = fresh(pristine)
    before = snapshot(comp)

    def crash(step: int, loss: float) -> None:
        if step == 6:  # two steps after the checkpoint at 4: their work is lost, as in a real crash
            raise Interrupted

    with pytest.raises(Interrupted):
        train_identity_lora(comp, examples, settings, tmp_path / "split", progress=False, eval_every=4, on_step=crash)
    assert latest_checkpoint(tmp_path / "split") == (4, tmp_path / "split" / "checkpoints" / "step-000004")
    assert not (tmp_path / "split" / LORA_FILE).exists()
    after_crash = snapshot(comp)
    assert all(torch.equal(after_crash[k], v) for k, v in before.items()) and after_crash.keys() == before.keys()
    resumed = train_identity_lora(comp, examples, settings, tmp_path / "split", resume=True, progress=False,
                                  eval_every=4)
    assert resumed.resumed_from == 4 and whole.resumed_from == 0
    a, b = lora_tensors(whole.lora_path), lora_tensors(resumed.lora_path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.eval_losses == whole.eval_losses and resumed.train_loss == whole.train_loss


def test_resume_without_a_checkpoint_starts_from_the_beginning(pristine: DiffusionComponents,
                                                               examples: list[tuple[RGBImage, str]],
                                                               tmp_path: Path) -> None:
    result = train_identity_lora(fresh(pristine), examples[:2], TrainingSettings(steps=2, **FAST), tmp_path,
                                 resume=True, progress=False)
    assert result.resumed_from == 0 and result.lora_path.is_file()


def test_a_seed_gives_the_same_weights(pristine: DiffusionComponents, examples: list[tuple[RGBImage, str]],
                                       tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        settings = TrainingSettings(steps=3, seed=seed, **FAST)
        result = train_identity_lora(fresh(pristine), examples[:3], settings, tmp_path / name, progress=False)
        runs[name] = lora_tensors(result.lora_path)
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_gradient_checkpointing_and_mixed_precision_paths(pristine: DiffusionComponents,
                                                          examples: list[tuple[RGBImage, str]], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-only code paths, forced on the CPU: gradient checkpointing computes the same update; bf16
    autocast with loss scaling and checkpointed text encoders trains to finite weights."""
    settings = TrainingSettings(steps=2, **FAST)
    plain = lora_tensors(train_identity_lora(fresh(pristine), examples[:2], settings, tmp_path / "plain",
                                             progress=False).lora_path)
    forced = {"plan": lora_training.TrainingPlan(autocast=None, scaler=False, checkpointing=True)}
    monkeypatch.setattr(lora_training, "training_plan", lambda *_: forced["plan"])
    comp = fresh(pristine)
    checkpointed = lora_tensors(train_identity_lora(comp, examples[:2], settings, tmp_path / "ckpt",
                                                    progress=False).lora_path)
    assert not comp.unet.is_gradient_checkpointing  # switched off again
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-4, atol=1e-6)
    forced["plan"] = lora_training.TrainingPlan(autocast=torch.bfloat16, scaler=True, checkpointing=True)
    comp = fresh(pristine)
    during: list[bool] = []

    modules: list[Any] = [comp.unet, comp.text_encoder, comp.text_encoder_2]

    def look(step: int, loss: float) -> None:
        during.append(all(lora_adapters.is_checkpointing(m) and m.training for m in modules))

    mixed = train_identity_lora(comp, examples[:2], TrainingSettings(steps=2, train_text_encoder=True, **FAST),
                                tmp_path / "mixed", progress=False, on_step=look)
    assert during == [True, True]
    weights = lora_tensors(mixed.lora_path)
    assert {k.split(".")[0] for k in weights} == {"unet", "text_encoder", "text_encoder_2"}
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in weights.values())
    assert np.isfinite(mixed.final_loss)
    assert not any(lora_adapters.is_checkpointing(m) or m.training for m in modules)


@pytest.mark.parametrize(("dtype", "mode", "bf16_gpu", "expected"), [
    ("float16", "auto", True, "float16 autocast, loss scaling, gradient checkpointing"),
    ("bfloat16", "auto", True, "bfloat16 autocast, gradient checkpointing"),
    ("float32", "auto", True, "bfloat16 autocast, gradient checkpointing"),
    ("float32", "auto", False, "float16 autocast, loss scaling, gradient checkpointing"),
    ("float16", "bf16", True, "bfloat16 autocast, gradient checkpointing"),
    ("float16", "no", True, "no autocast, loss scaling, gradient checkpointing"),
    ("float32", "no", True, "no autocast, gradient checkpointing"),
])
def test_the_cuda_plan_follows_the_settings(dtype: str, mode: str, bf16_gpu: bool, expected: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What mixed_precision = auto/fp16/bf16/no comes to on a GPU (decided without one)."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: bf16_gpu)
    gpu: Any = SimpleNamespace(device=torch.device("cuda"), dtype=getattr(torch, dtype))
    assert lora_training.training_plan(TrainingSettings(mixed_precision=mode), gpu).describe() == expected
    cpu: Any = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    assert lora_training.training_plan(TrainingSettings(), cpu).describe() == "no autocast"


def test_training_the_text_encoders_too(pristine: DiffusionComponents, examples: list[tuple[RGBImage, str]],
                                        tmp_path: Path) -> None:
    comp = fresh(pristine)
    before = snapshot(comp)
    settings = TrainingSettings(steps=2, train_text_encoder=True, text_encoder_learning_rate=3e-3, **FAST)
    result = train_identity_lora(comp, examples[:2], settings, tmp_path, progress=False)
    prefixes = {key.split(".")[0] for key in lora_tensors(result.lora_path)}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
    after = snapshot(comp)
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    lora = load_lora(result.lora_path)
    assert any(k.startswith("text_encoder_2.") for k in lora)
    # diffusers' loader puts the text encoders' weights back where training had them.
    assert evaluation_loss(comp, examples[:2], settings, result.lora_path) == pytest.approx(result.final_loss,
                                                                                          rel=1e-5)


def test_training_resolution_is_the_base_native_size(pristine: DiffusionComponents) -> None:
    assert training_resolution(pristine, TrainingSettings()) == SIZE  # tiny: sample_size 32, VAE x2
    assert training_resolution(pristine, TrainingSettings(resolution=128)) == 128
    full = full_size_components("meta", torch.float16, controlnet=False)
    sdxl = DiffusionComponents(unet=full["unet"], tiny_vae=full["tiny_vae"], text_encoder=None, tokenizer=None,
                               scheduler=full["scheduler"], device=torch.device("meta"), dtype=torch.float16,
                               vae=full["vae"])
    assert training_resolution(sdxl, TrainingSettings()) == 1024
    sdxl.vae = None  # TAESD-XL downsamples 8x too
    assert training_resolution(sdxl, TrainingSettings()) == 1024
    with pytest.raises(ValueError, match="resolution = 1000: this model needs a multiple of 32"):
        training_resolution(sdxl, TrainingSettings(resolution=1000))


def test_bad_inputs_are_named(pristine: DiffusionComponents, examples: list[tuple[RGBImage, str]],
                              tmp_path: Path) -> None:
    settings = TrainingSettings(steps=1, **FAST)
    image = examples[0][0]
    cases: list[tuple[Any, str]] = [
        ([], "examples: no training photos"),
        ([(image[:32], CAPTION)],
         r"examples\[0\]: expected a uint8 RGB image of \(64, 64, 3\).*got uint8 \(32, 64, 3\)"),
        ([(image, CAPTION), (image.astype(np.float32), CAPTION)], r"examples\[1\]: .*got float32"),
        ([(image, " ")], r"examples\[0\]: the caption is empty"),
        ([(image,)], r"examples\[0\]: expected an \(image, caption\) pair"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            train_identity_lora(pristine, bad, settings, tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="mixed_precision = 'fp16': needs CUDA"):
        train_identity_lora(pristine, examples, TrainingSettings(**{**FAST, "mixed_precision": "fp16"}), tmp_path)
    with pytest.raises(ValueError, match="eval_every"):
        train_identity_lora(pristine, examples, settings, tmp_path, eval_every=-1)
    assert not (tmp_path / "bad").exists()


def test_resume_refuses_other_photos_or_settings(pristine: DiffusionComponents,
                                                 examples: list[tuple[RGBImage, str]], tmp_path: Path) -> None:
    settings = TrainingSettings(steps=3, **{**FAST, "checkpoint_every": 1})

    def stop(step: int, loss: float) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        train_identity_lora(fresh(pristine), examples[:2], settings, tmp_path, progress=False, on_step=stop)
    state = json.loads((tmp_path / "checkpoints" / "step-000001" / "state.json").read_text())
    assert state["step"] == 1 and state["settings"]["rank"] == FAST["rank"]
    with pytest.raises(ValueError, match="other photos or captions"):
        train_identity_lora(fresh(pristine), examples[2:4], settings, tmp_path, resume=True, progress=False)
    other = TrainingSettings(steps=3, **{**FAST, "checkpoint_every": 1, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match=r"other settings: learning_rate \(0.003 -> 0.001\)"):
        train_identity_lora(fresh(pristine), examples[:2], other, tmp_path, resume=True, progress=False)
    assert latest_checkpoint(tmp_path) is not None  # a refused resume keeps the checkpoint
    # The config's [enroll] section extends TrainingSettings; its own fields do not change training.
    extended = Extended(steps=3, extra=1, **{**FAST, "checkpoint_every": 1})
    result = train_identity_lora(fresh(pristine), examples[:2], extended, tmp_path, resume=True, progress=False)
    assert result.resumed_from == 1


@dataclasses.dataclass(frozen=True)
class Extended(TrainingSettings):
    extra: int = 0


def test_a_model_that_already_has_an_adapter_is_refused(pristine: DiffusionComponents,
                                                        examples: list[tuple[RGBImage, str]], tmp_path: Path) -> None:
    from peft import LoraConfig

    comp = fresh(pristine)
    comp.unet.add_adapter(LoraConfig(r=2, target_modules=["to_q"]), adapter_name="other")
    with pytest.raises(ValueError, match=r"components\.unet already carries LoRA adapter layers"):
        train_identity_lora(comp, examples, TrainingSettings(steps=1, **FAST), tmp_path, progress=False)
    assert "other" in comp.unet.peft_config  # someone else's adapter is left alone


@pytest.mark.parametrize(("field", "value", "text"), [
    ("steps", 0, "steps"), ("rank", 0, "rank"), ("learning_rate", 1.0, "learning_rate"),
    ("batch_size", 0, "batch_size"), ("resolution", 100, "resolution = 100: must be 0"),
    ("resolution", 32, "resolution"), ("mixed_precision", "fp8", "mixed_precision = 'fp8': must be one of"),
    ("checkpoint_every", -1, "checkpoint_every"), ("trigger", "oh wx", "trigger"), ("trigger", "", "trigger"),
    ("class_word", " ", "class_word"), ("seed", -1, "seed"),
])
def test_bad_settings_are_named(field: str, value: Any, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        TrainingSettings(**{field: value})


def test_benchmark_tiny_runs_every_variant_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "training.json"
    assert training_gpu.main(["--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--photos", "2",
                              "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"machine", "versions", "settings", "config", "results", "target"} <= set(result)
    assert result["versions"]["torch"] and result["versions"]["peft"] and result["settings"]["steps"] == 500
    rows = result["results"]["64"]
    for variant in ("livecam", "no_checkpointing", "baseline"):
        row = rows[variant]
        assert row["step_s_p95"] >= row["step_s_p50"] > 0 and row["projected_enrolment_s"] > 0
        assert row["final_loss_finite"] is True and row["ran_with"] == "no autocast"  # the CPU: float32
    assert rows["speedup"] > 0
    target = result["target"]
    assert target["applicable"] is False and target["passed"] is None and target["max_s"] == 300


def test_benchmark_without_cuda_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_gpu.main(["--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA GPU is needed" in err and "--tiny --device cpu" in err and "\n" not in err
    assert not (tmp_path / "x.json").exists()
