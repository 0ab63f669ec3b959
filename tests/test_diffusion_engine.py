"""The diffusion engine on tiny random SDXL components: real diffusers models and LoRA code, real photos and
MediaPipe landmarks; only the weights are random."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch

from engine import framing as fr
from engine.background import BackgroundSettings
from engine.denoiser import Denoiser, DiffusionComponents, encode_prompt, host_pipeline, trailing_timesteps
from engine.diffusion import DiffusionRenderer, feather_mask, square_region
from engine.diffusion_settings import DiffusionSettings
from engine.framing import FramingSettings
from engine.relight import RelightSettings
from engine.skin import SkinSettings
from engine.studio import StudioRenderer
from engine.styles import DEFAULT_STYLES
from engine.types import Face
from models.face_landmarker import detect_faces
from tests.conftest import load_rgb
from tests.tiny_sdxl import tiny_components

OUT = (320, 180)
SIZE = 64
PROMPT = DEFAULT_STYLES["corporate"].prompt()


def components(seed: int = 0) -> DiffusionComponents:
    c = tiny_components(seed)
    return DiffusionComponents(unet=c["unet"], tiny_vae=c["tiny_vae"], text_encoder=c["text_encoder"],
                               tokenizer=c["tokenizer"], scheduler=c["scheduler"], device=torch.device("cpu"),
                               dtype=torch.float32, controlnet=c["controlnet"], text_encoder_2=c["text_encoder_2"],
                               tokenizer_2=c["tokenizer_2"])


def studio() -> StudioRenderer:
    return StudioRenderer(OUT, FramingSettings(), BackgroundSettings(enabled=False), RelightSettings(), SkinSettings())


def renderer(comp: DiffusionComponents | None = None, **settings: Any) -> DiffusionRenderer:
    defaults: dict[str, Any] = {"size": SIZE, "similar_threshold": 0.0}
    r = DiffusionRenderer(comp or components(), DiffusionSettings(**{**defaults, **settings}), studio(), PROMPT)
    r.prepare()
    return r


@pytest.fixture(scope="module")
def photo(landmarker_path: Path) -> tuple[np.ndarray, Face]:
    image = load_rgb("images/faces/obama_official_2012.jpg")
    landmarks = detect_faces(landmarker_path, image)[0]
    return image, Face(landmarks, (image.shape[1], image.shape[0]))


@pytest.fixture(scope="module")
def shared() -> DiffusionComponents:
    """Components for tests that do not change weights."""
    return components()


def _square(out: np.ndarray) -> np.ndarray:
    x0, y0, side = square_region(OUT, OUT[0] / 2)
    return out[y0 : y0 + side, x0 : x0 + side]


def test_timesteps_follow_trailing_spacing() -> None:
    assert trailing_timesteps(1, 0.5) == [499]
    assert trailing_timesteps(2, 0.5) == [499, 249]
    assert trailing_timesteps(1, 1.0) == [999]
    assert trailing_timesteps(4, 1.0) == [999, 749, 499, 249]


def test_render_gives_the_canvas_with_a_generated_square(photo: tuple[np.ndarray, Face],
                                                         shared: DiffusionComponents) -> None:
    image, face = photo
    r = renderer(shared)
    out = r.render(image, face, None, 0)
    assert out.shape == (OUT[1], OUT[0], 3) and out.dtype == np.uint8
    plain = studio()
    plain.prepare()
    canvas = plain.render(image, face, None, 0)
    x0, _, side = square_region(OUT, OUT[0] / 2)
    middle = slice(x0 + side // 4, x0 + 3 * side // 4)
    # The square was re-rendered (random weights: anything but the camera image); outside it, the canvas
    # is the studio engine's own, apart from the badge in the bottom-right corner.
    assert np.abs(out[:, middle].astype(int) - canvas[:, middle]).mean() > 5
    np.testing.assert_array_equal(out[: OUT[1] // 2, : max(x0 - 1, 0)], canvas[: OUT[1] // 2, : max(x0 - 1, 0)])
    corner = (slice(OUT[1] - 14, OUT[1] - 4), slice(OUT[0] - 30, OUT[0] - 4))
    assert np.abs(out[corner].astype(int) - canvas[corner]).mean() > 10  # the badge
    assert r.counters()["generated"] == 1


def test_same_seed_same_output_other_seed_differs(photo: tuple[np.ndarray, Face],
                                                  shared: DiffusionComponents) -> None:
    image, face = photo
    a = _square(renderer(shared, seed=0).render(image, face, None, 0))
    b = _square(renderer(shared, seed=0).render(image, face, None, 0))
    c = _square(renderer(shared, seed=1).render(image, face, None, 0))
    mid = slice(a.shape[0] // 2, a.shape[0] // 2 + 3)
    np.testing.assert_array_equal(a[mid, mid], b[mid, mid])  # the 3x3 slice
    assert np.abs(a.astype(int) - c).mean() > 1.0


def test_the_controlnet_condition_changes_the_output(shared: DiffusionComponents) -> None:
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    pose = np.zeros_like(crop)
    pose[20:40, 10:50] = (255, 0, 0)
    denoiser = Denoiser(shared, DiffusionSettings(size=SIZE))
    denoiser.prepare(*encode_prompt(host_pipeline(shared), PROMPT, shared.device))
    with_pose, _ = denoiser(crop, pose)
    black, _ = denoiser(crop, np.zeros_like(crop))
    again, _ = denoiser(crop, pose)
    np.testing.assert_array_equal(with_pose, again)
    assert np.abs(with_pose.astype(int) - black).mean() > 0.25  # a tiny random ControlNet steers weakly
    with pytest.raises(ValueError, match="condition"):
        denoiser(crop, None)
    with pytest.raises(ValueError, match="crop"):
        denoiser(crop[:32], pose)


@pytest.mark.parametrize("steps", [2, 3])
def test_stream_batch_gives_the_sequential_result_one_frame_later(steps: int, shared: DiffusionComponents) -> None:
    """With the input held still, each batched call finishes exactly what the step-by-step path would."""
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    pose = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    embeds = encode_prompt(host_pipeline(shared), PROMPT, shared.device)
    sequential = Denoiser(shared, DiffusionSettings(size=SIZE, steps=steps, stream_batch=False))
    stream = Denoiser(shared, DiffusionSettings(size=SIZE, steps=steps, stream_batch=True))
    sequential.prepare(*embeds)
    stream.prepare(*embeds)
    expected, _ = sequential(crop, pose)
    tags = []
    for frame in range(4):
        out, tag = stream(crop, pose, frame)
        tags.append(tag)
        np.testing.assert_allclose(out, expected, atol=1)  # batched matmuls may round differently
    # The first frame fills the batch; after that each output is the frame from steps-1 calls before.
    assert tags == [0] + [max(0, f - (steps - 1)) for f in range(1, 4)]


def _lora_file(comp: DiffusionComponents, path: Path) -> Path:
    """A LoRA on the tiny UNet with random (non-zero) up and down weights, saved as a .safetensors file."""
    import copy

    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = copy.deepcopy(comp.unet)
    # Attention and the transformer blocks' projections: in a tiny random UNet attention alone barely shows.
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    diffusers.StableDiffusionXLPipeline.save_lora_weights(path, unet_lora_layers=layers)
    return path / "pytorch_lora_weights.safetensors"


def test_identity_lora_changes_the_output_and_scale_zero_restores_it(tmp_path: Path,
                                                                     photo: tuple[np.ndarray, Face]) -> None:
    image, face = photo
    comp = components()
    weight = comp.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight
    original = weight.detach().clone()
    lora, _ = diffusers.StableDiffusionXLPipeline.lora_state_dict(str(_lora_file(comp, tmp_path)))
    r = renderer(comp)
    base = _square(r.render(image, face, None, 0))
    r.set_identity(lora, 1.0)
    fused = _square(r.render(image, face, None, 33))
    assert np.abs(fused.astype(int) - base).mean() > 0.3
    # Fused into the weights: no adapter layers are left to cost time per frame.
    assert type(comp.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q) is torch.nn.Linear
    r.set_identity(lora, 0.0)
    np.testing.assert_array_equal(_square(r.render(image, face, None, 66)), base)
    torch.testing.assert_close(weight, original, rtol=0, atol=0)
    r.set_identity(lora, 1.0)
    np.testing.assert_array_equal(_square(r.render(image, face, None, 99)), fused)
    r.set_identity(None)
    np.testing.assert_array_equal(_square(r.render(image, face, None, 132)), base)
    with pytest.raises(ValueError, match="identity_scale"):
        r.set_identity(lora, 5.0)


def test_switching_style_while_running_re_prepares(photo: tuple[np.ndarray, Face], shared: DiffusionComponents) -> None:
    image, face = photo
    r = renderer(shared)
    first = r.render(image, face, None, 0)
    r.set_style(DEFAULT_STYLES["technology"].prompt())
    second = r.render(image, face, None, 33)
    assert np.abs(_square(first).astype(int) - _square(second)).mean() > 0.01  # tiny random text encoders
    r.set_style(PROMPT)
    np.testing.assert_array_equal(_square(r.render(image, face, None, 66)), _square(first))


def test_render_loads_and_builds_nothing(photo: tuple[np.ndarray, Face], shared: DiffusionComponents,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    image, face = photo
    r = renderer(shared, steps=2)
    counts = {"modules": 0, "from_pretrained": 0}
    init = torch.nn.Module.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        # diffusers' mid block slices a ModuleList in forward (`self.resnets[1:]`), a view of existing
        # modules; anything else built here would be new work per frame.
        if not isinstance(self, torch.nn.ModuleList | torch.nn.Sequential | torch.nn.ModuleDict):
            counts["modules"] += 1
        init(self, *args, **kwargs)

    def no_from_pretrained(*args: Any, **kwargs: Any) -> Any:
        counts["from_pretrained"] += 1
        raise AssertionError("from_pretrained during render")

    monkeypatch.setattr(torch.nn.Module, "__init__", counting_init)
    for owner in (diffusers.ModelMixin, transformers.PreTrainedModel, diffusers.DiffusionPipeline):
        monkeypatch.setattr(owner, "from_pretrained", no_from_pretrained)
    for i in range(10):
        r.render(image, face, None, i * 33)
    assert counts == {"modules": 0, "from_pretrained": 0}
    assert r.counters()["generated"] == 10


def test_similar_frame_filter_skips_a_repeated_frame(photo: tuple[np.ndarray, Face],
                                                     shared: DiffusionComponents) -> None:
    image, face = photo
    r = renderer(shared, similar_threshold=0.004, max_skip=3)
    first = r.render(image, face, None, 0)
    repeat = r.render(image, face, None, 33)
    np.testing.assert_array_equal(first, repeat)
    assert r.counters()["similar_skips"] == 1 and r.counters()["generated"] == 1
    for i in range(2, 6):
        r.render(image, face, None, i * 33)
    # At most max_skip skips in a row, then a fresh render.
    assert r.counters()["generated"] == 2 and r.counters()["similar_skips"] == 4
    changed = image.copy()
    changed[:, : image.shape[1] // 2] //= 2
    r.render(changed, face, None, 300)
    assert r.counters()["generated"] == 3
    off = renderer(shared, similar_threshold=0.0)
    for i in range(3):
        off.render(image, face, None, i * 33)
    assert off.counters()["similar_skips"] == 0


def test_a_failing_frame_falls_back_to_the_studio_canvas(photo: tuple[np.ndarray, Face],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    image, face = photo
    comp = components()
    r = renderer(comp, max_failures=3)
    plain = studio()
    plain.prepare()
    failing = {"on": False}

    def out_of_memory(*args: Any) -> None:
        if failing["on"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    comp.unet.register_forward_pre_hook(out_of_memory)
    assert not np.array_equal(r.render(image, face, None, 0), plain.render(image, face, None, 0))
    failing["on"] = True
    with caplog.at_level(logging.WARNING, logger="livecam.engine"):
        for i in range(1, 5):
            np.testing.assert_array_equal(r.render(image, face, None, i * 33), plain.render(image, face, None, i * 33))
    assert r.counters()["failures"] == 3  # then it stopped trying
    assert not r.active
    assert any("OutOfMemoryError" in m for m in caplog.messages)
    assert any("switching to the studio engine" in m for m in caplog.messages)
    failing["on"] = False
    np.testing.assert_array_equal(r.render(image, face, None, 200), plain.render(image, face, None, 200))


def test_no_face_gives_the_studio_canvas(photo: tuple[np.ndarray, Face], shared: DiffusionComponents) -> None:
    image, _ = photo
    r = renderer(shared)
    plain = studio()
    plain.prepare()
    np.testing.assert_array_equal(r.render(image, None, None, 0), plain.render(image, None, None, 0))
    assert r.counters()["studio_frames"] == 1


def test_feather_and_square_geometry() -> None:
    assert square_region((1280, 720), 640) == (280, 0, 720)
    assert square_region((1280, 720), 100) == (0, 0, 720)
    assert square_region((1280, 720), 1250) == (560, 0, 720)
    assert square_region((480, 640), 240) == (0, 80, 480)
    f = feather_mask(100, 0.1)
    assert f.shape == (100, 100) and f.dtype == np.float32
    assert f[50, 50] == 1.0 and f[0, 0] < 0.01 and 0.3 < f[50, 5] < 0.7
    assert (feather_mask(50, 0.0) == 1).all()


@pytest.mark.parametrize(("field", "value", "text"), [
    ("size", 100, "multiple of 32"), ("steps", 5, "steps"), ("strength", 0.0, "strength"),
    ("latent_blend", 0.95, "latent_blend"),
])
def test_bad_settings_are_named(field: str, value: Any, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        DiffusionSettings(**{field: value})


def test_an_identity_that_does_not_fit_leaves_the_model_as_it_was(tmp_path: Path,
                                                                  photo: tuple[np.ndarray, Face]) -> None:
    image, face = photo
    comp = components()
    lora, _ = diffusers.StableDiffusionXLPipeline.lora_state_dict(str(_lora_file(comp, tmp_path)))
    key = next(k for k in lora if k.endswith("lora.up.weight") or k.endswith("lora_B.weight"))
    broken = {**lora, key: torch.zeros(lora[key].shape[0] + 3, lora[key].shape[1])}
    r = renderer(comp)
    base = r.render(image, face, None, 0)
    r.set_identity(broken, 1.0)
    r.render(image, face, None, 33)  # the switch fails: this frame is the studio canvas
    assert r.counters()["failures"] == 1
    np.testing.assert_array_equal(r.render(image, face, None, 66), base)  # and the model is untouched
    assert r.active


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() or os.environ.get("LIVECAM_SLOW_TESTS")),
                    reason="torch.compile is the GPU speed option (minutes on a CPU: LIVECAM_SLOW_TESTS=1)")
def test_compiled_denoiser_gives_the_same_frames(shared: DiffusionComponents) -> None:
    crop = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    embeds = encode_prompt(host_pipeline(shared), PROMPT, shared.device)
    plain = Denoiser(shared, DiffusionSettings(size=SIZE))
    compiled = Denoiser(shared, DiffusionSettings(size=SIZE, compile=True))
    plain.prepare(*embeds)
    compiled.prepare(*embeds)
    expected, _ = plain(crop, crop)
    for _ in range(2):
        out, _ = compiled(crop, crop)
        np.testing.assert_allclose(out, expected, atol=1)


def test_after_the_switch_to_studio_diffusion_is_tried_again(photo: tuple[np.ndarray, Face],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    image, face = photo
    comp = components()
    r = renderer(comp, max_failures=2, retry_s=1.0)
    failing = {"on": True}

    def out_of_memory(*args: Any) -> None:
        if failing["on"]:
            raise torch.OutOfMemoryError("CUDA out of memory")

    comp.unet.register_forward_pre_hook(out_of_memory)
    with caplog.at_level(logging.INFO, logger="livecam.engine"):
        r.render(image, face, None, 0)
        r.render(image, face, None, 33)  # second failure in a row: switched to studio at t=33 ms
        assert not r.active
        r.render(image, face, None, 900)  # before retry_s: studio, nothing tried
        assert r.counters()["failures"] == 2
        r.render(image, face, None, 1100)  # tried again, failed once: straight back to studio
        assert r.counters()["failures"] == 3 and not r.active
        failing["on"] = False
        r.render(image, face, None, 2200)  # tried again, works
    assert r.active and r.counters()["generated"] == 1
    assert sum("trying the diffusion engine again" in m for m in caplog.messages) == 2
    assert any("trying again in 1 s" in m for m in caplog.messages)


def test_keep_face_shows_the_cameras_face_on_every_frame(shared: DiffusionComponents, landmarker_path: Path,
                                                          photo: tuple[np.ndarray, Face]) -> None:
    """The live default: attire, light and background from the model, the face from the studio canvas. With
    random weights the model paints noise, so a face MediaPipe finds in the output can only be the kept one.
    Frames: the photo seen through a window that moves 6 px per frame (a person moving slightly)."""
    kept, generated, canvas_only = renderer(shared, size=128), renderer(shared, size=128, keep_face=False), studio()
    canvas_only.prepare()
    found = {"kept": 0, "generated": 0}
    core_diff = []
    full, _ = photo
    h, w = full.shape[:2]
    frames = 6
    for index in range(frames):
        image = np.ascontiguousarray(full[: h - 40, 6 * index : w - 40 + 6 * index])
        face = Face(detect_faces(landmarker_path, image)[0], (image.shape[1], image.shape[0]))
        t_ms = index * 33
        out, noise, canvas = (r.render(image, face, None, t_ms) for r in (kept, generated, canvas_only))
        found["kept"] += len(detect_faces(landmarker_path, out)) == 1
        found["generated"] += len(detect_faces(landmarker_path, noise)) == 1
        # The middle of the face (inner eye corners to the lips) is the camera's, to rounding.
        points = fr.transform_points(face.landmarks[[133, 362, 13, 168], :2],
                                     fr.box_to_affine(canvas_only.last_box, OUT)).astype(int)
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        assert x1 - x0 > 10 and y1 - y0 > 5
        core_diff.append(float(np.abs(out[y0:y1, x0:x1].astype(int) - canvas[y0:y1, x0:x1]).mean()))
        assert np.abs(noise[y0:y1, x0:x1].astype(int) - canvas[y0:y1, x0:x1]).mean() > 10
    assert found["kept"] == frames and found["generated"] < frames
    assert max(core_diff) < 1.0


def test_keep_face_seam_is_soft_and_colour_matched(shared: DiffusionComponents, photo: tuple[np.ndarray, Face]) -> None:
    from engine.diffusion import crop_geometry, cut_square
    from engine.keep_face import face_keep_mask, keep_face, seam_step

    image, face = photo
    canvas_renderer = studio()
    canvas_renderer.prepare()
    canvas = canvas_renderer.render(image, face, None, 0)
    affine = fr.box_to_affine(canvas_renderer.last_box, OUT)
    x0, y0, side, to_crop = crop_geometry(OUT, affine, face.landmarks, 128)
    real = cut_square(canvas, x0, y0, side, 128)
    # A generated picture in another light: the camera's crop, warmer, with texture of its own.
    rng = np.random.default_rng(0)
    tint = np.array([18, 8, -6])
    other = np.clip(real.astype(int) + tint + rng.normal(0, 3, real.shape), 0, 255).astype(np.uint8)
    alpha, core = face_keep_mask(fr.transform_points(face.landmarks[:, :2], to_crop), (128, 128))
    soft = keep_face(other, real, alpha, core)
    hard_alpha = (alpha > 0.5).astype(np.float32)
    hard = np.where(hard_alpha[..., None] > 0, real, other).astype(np.uint8)
    steps = seam_step(soft, other, alpha), seam_step(hard, other, alpha)
    assert steps[0] < 0.5 * steps[1], steps
    inner = core > 0.99
    assert inner.sum() > 200 and np.abs(soft[inner].astype(int) - real[inner]).max() <= 1  # the face's core


def test_the_pipelined_path_gives_the_sequential_outputs_one_frame_later(shared: DiffusionComponents,
                                                                         photo: tuple[np.ndarray, Face]) -> None:
    """Pipelined, frame n's GPU work runs while frame n+1's CPU work does: on the CPU (synchronous) the outputs
    are exactly the sequential path's, one frame later, each stamped with the frame it shows."""
    full, face0 = photo
    frames = []
    for index in range(5):  # a person moving slightly: the photo through a window moving 5 px per frame
        image = np.ascontiguousarray(full[:, 5 * index : full.shape[1] - 40 + 5 * index])
        landmarks = face0.landmarks.copy()
        landmarks[:, 0] -= 5 * index
        frames.append((image, Face(landmarks, (image.shape[1], image.shape[0]))))
    sequential, pipelined = renderer(shared, pipeline="off"), renderer(shared, pipeline="on")
    seq, pipe = [], []
    for index, (image, face) in enumerate(frames):
        seq.append((sequential.render(image, face, None, index * 33), sequential.shown_ms))
        pipe.append((pipelined.render(image, face, None, index * 33), pipelined.shown_ms))
    assert [ms for _, ms in seq] == [0, 33, 66, 99, 132]
    # Frame 0 runs alone; frame 1 starts the pipeline (frame 0's output shows again); then each output is the
    # frame before.
    assert [ms for _, ms in pipe] == [0, 0, 33, 66, 99]
    for (out, _), (expected, _) in zip(pipe[2:], seq[1:4], strict=True):
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(pipe[0][0], seq[0][0])
    assert pipelined.counts["generated"] == 4 and sequential.counts["generated"] == 5
