"""The diffusion engine's device-side work on the CPU: the square resized and pasted with torch (as on the GPU)
against the OpenCV path on real frames, per-stage times, ControlNet residual reuse, and the compiled engine's
warm-up behind studio frames. Tiny random SDXL components (real diffusers code), real photos and landmarks."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from engine.denoiser import Denoiser, DiffusionComponents, encode_prompt, host_pipeline
from engine.diffusion_settings import DiffusionSettings
from engine.square_ops import (
    DeviceSquare,
    area_matrix,
    cut_square,
    feather_mask,
    paste_square,
    paste_weight,
    paste_with_weight,
)
from engine.types import Face
from models.face_landmarker import detect_faces
from tests.conftest import load_rgb
from tests.test_diffusion_engine import PROMPT, SIZE, components, renderer, studio


@pytest.fixture(scope="module")
def photo(landmarker_path: Path) -> tuple[np.ndarray, Face]:
    image = load_rgb("images/faces/obama_official_2012.jpg")
    landmarks = detect_faces(landmarker_path, image)[0]
    return image, Face(landmarks, (image.shape[1], image.shape[0]))


@pytest.fixture(scope="module")
def shared() -> DiffusionComponents:
    return components()


@pytest.fixture(scope="module")
def canvas(photo: tuple[np.ndarray, Face]) -> np.ndarray:
    """A real studio canvas at the live default size (1280x720)."""
    from engine.background import BackgroundSettings
    from engine.framing import FramingSettings
    from engine.relight import RelightSettings
    from engine.skin import SkinSettings
    from engine.studio import StudioRenderer

    image, face = photo
    r = StudioRenderer((1280, 720), FramingSettings(), BackgroundSettings(), RelightSettings(), SkinSettings())
    r.prepare()
    return r.render(image, face, None, 0)


def test_area_matrix_is_opencvs_area_resize() -> None:
    m = area_matrix(720, 512)
    assert m.shape == (512, 720) and np.allclose(m.sum(axis=1), 1.0, atol=1e-5)
    line = np.random.default_rng(0).integers(0, 256, (1, 720)).astype(np.float32)
    expected = cv2.resize(line, (512, 1), interpolation=cv2.INTER_AREA)[0]
    np.testing.assert_allclose(m @ line[0], expected, atol=1e-3)


@pytest.mark.parametrize("size", [512, 64])
def test_the_device_square_matches_the_opencv_path_on_a_real_canvas(canvas: np.ndarray, size: int) -> None:
    """The torch resize in and feathered paste out (the GPU path, here on the CPU) against cut_square and
    paste_square on a 1280x720 studio canvas: within a grey level."""
    x0, y0, side = 280, 0, 720
    feather = feather_mask(size, 0.08)
    weight = paste_weight(feather, side)
    ops = DeviceSquare(side, size, weight, torch.device("cpu"))
    square = torch.from_numpy(np.ascontiguousarray(canvas[y0 : y0 + side, x0 : x0 + side]))
    crop = ops.crop(square)[0].permute(1, 2, 0).numpy()
    assert np.abs(crop - cut_square(canvas, x0, y0, side, size)).max() <= 1
    # A "generated" crop: the real one shifted and colour-swapped, so the blend has something to blend.
    rendered = np.ascontiguousarray(np.roll(cut_square(canvas, x0, y0, side, size), size // 20, axis=1)[..., ::-1])
    expected = paste_square(canvas, rendered, x0, y0, side, feather)
    np.testing.assert_array_equal(paste_with_weight(canvas, rendered, x0, y0, side, weight), expected)
    pasted = ops.paste(torch.from_numpy(rendered).permute(2, 0, 1)[None].float(), square).numpy()
    diff = np.abs(pasted.astype(int) - expected[y0 : y0 + side, x0 : x0 + side])
    assert diff.max() <= 1 and diff.mean() < 0.1
    assert np.abs(expected[:, :x0].astype(int) - canvas[:, :x0]).max() == 0  # outside the square: untouched


def test_the_renderer_on_device_matches_the_opencv_renderer(shared: DiffusionComponents,
                                                            photo: tuple[np.ndarray, Face]) -> None:
    image, face = photo
    cpu, dev = renderer(shared, square_on_device="off"), renderer(shared, square_on_device="on")
    assert dev.on_device and not cpu.on_device
    for t in (0, 33):
        a, b = cpu.render(image, face, None, t), dev.render(image, face, None, t)
        assert np.abs(a.astype(int) - b).max() <= 2
    assert dev.counts["generated"] == 2


def test_stage_times_come_with_each_collected_frame(shared: DiffusionComponents) -> None:
    d = Denoiser(shared, DiffusionSettings(size=SIZE, controlnet_reuse=0.0))
    d.prepare(*encode_prompt(host_pipeline(shared), PROMPT, shared.device))
    crop = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    d.submit(crop, crop)
    assert not d.stage_ms  # resolved when collected
    d.collect()
    stages = d.stage_ms[-1]
    assert {"upload", "encode", "unet", "controlnet", "decode", "frame"} <= set(stages)
    assert all(ms > 0 for ms in stages.values())
    assert stages["controlnet"] < stages["unet"] <= stages["frame"]  # the ControlNet runs inside the UNet stage
    assert stages["frame"] >= stages["upload"] + stages["encode"] + stages["unet"] + stages["decode"] - 1e-6


def _moved(face: Face, dx: float) -> Face:
    landmarks = face.landmarks.copy()
    landmarks[:, 0] += dx
    return Face(landmarks, face.frame_size)


def test_controlnet_residuals_are_reused_while_the_pose_stands_still(photo: tuple[np.ndarray, Face]) -> None:
    comp = components()
    calls = {"n": 0}

    def count(*args: Any) -> None:
        calls["n"] += 1

    comp.controlnet.register_forward_pre_hook(count)
    image, face = photo
    fresh, reuse = renderer(comp, controlnet_reuse=0.0), renderer(comp, controlnet_reuse=0.01, controlnet_reuse_max=3)
    expected = [fresh.render(image, face, None, t) for t in (0, 33, 66)]
    assert calls["n"] == 3
    calls["n"] = 0
    outs = [reuse.render(image, face, None, t) for t in (0, 33, 66)]
    assert calls["n"] == 1 and reuse.counts["controlnet_reused"] == 2  # the same pose: one ControlNet call
    for out, exp in zip(outs, expected, strict=True):
        np.testing.assert_array_equal(out, exp)  # the same frame: the kept residuals are the fresh ones
    reuse.render(image, face, None, 99)  # the third reuse in a row (controlnet_reuse_max = 3)
    reuse.render(image, face, None, 132)  # then it runs again
    assert calls["n"] == 2
    # A pose that moved beyond the threshold (0.01 of the side) runs it; a tiny move does not.
    reuse.render(image, _moved(face, 0.05), None, 165)
    assert calls["n"] == 2
    reuse.render(image, _moved(face, 200.0), None, 198)
    assert calls["n"] == 3


def test_a_compiled_engine_warms_up_behind_studio_frames(shared: DiffusionComponents, photo: tuple[np.ndarray, Face],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """compile = "on": the warm-up runs on a worker thread while render returns the studio canvas; then the
    generated frames come. (torch.compile itself is switched off here: compiling on this CPU takes minutes.)"""
    compiled: list[dict[str, Any]] = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(kw) or model)
    release, shapes = threading.Event(), []
    real_warm_up = Denoiser.warm_up

    def slow_warm_up(self: Denoiser) -> None:
        assert threading.current_thread() is not threading.main_thread()
        release.wait(30)
        real_warm_up(self)

    monkeypatch.setattr(Denoiser, "warm_up", slow_warm_up)
    hook = shared.unet.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        image, face = photo
        r = renderer(shared, compile="on", steps=2, stream_batch=True)
        assert [kw["dynamic"] for kw in compiled] == [False, False]  # UNet and ControlNet, static shapes
        canvas_only = studio()
        canvas_only.prepare()
        assert r.warming
        out = r.render(image, face, None, 0)
        np.testing.assert_array_equal(out, canvas_only.render(image, face, None, 0))
        assert r.counts["warming_frames"] == 1 and r.counts["generated"] == 0
        release.set()
        assert r.wait_warm(60) and not r.warming
        warm_shapes = set(shapes)
        assert {s[0] for s in warm_shapes} == {1, 2}  # batch 1 and the stream batch of 2, both warmed up
        shapes.clear()
        for t in (33, 66, 99):
            r.render(image, face, None, t)
        assert set(shapes) <= warm_shapes  # no shape a live frame runs was left for it to compile
        assert r.counts["generated"] >= 2
        r.close()
    finally:
        hook.remove()


def test_a_warm_up_that_fails_runs_the_engine_uncompiled(shared: DiffusionComponents, photo: tuple[np.ndarray, Face],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)

    def no_compiler(self: Denoiser) -> None:
        raise RuntimeError("no C compiler for Triton")

    monkeypatch.setattr(Denoiser, "warm_up", no_compiler)
    image, face = photo
    with caplog.at_level(logging.WARNING, logger="livecam.engine"):
        r = renderer(shared, compile="on")
        assert r.wait_warm(30)
    assert any("running it uncompiled" in m for m in caplog.messages)
    plain = renderer(shared)
    np.testing.assert_array_equal(r.render(image, face, None, 0), plain.render(image, face, None, 0))


def test_compile_is_on_by_default_only_with_cuda(shared: DiffusionComponents) -> None:
    settings = DiffusionSettings(size=SIZE)
    assert settings.compile == "auto" and settings.cuda_graphs
    assert not Denoiser(shared, settings).compiled  # this CPU
    assert DiffusionSettings(compile=True).compile == "on" and DiffusionSettings(compile=False).compile == "off"
    with pytest.raises(ValueError, match="compile"):
        DiffusionSettings(compile="sometimes")
    with pytest.raises(ValueError, match="square_on_device"):
        DiffusionSettings(square_on_device="gpu")



def test_warm_up_compiles_every_shape_and_live_frames_compile_nothing(shared: DiffusionComponents,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The real torch.compile (Dynamo) with a backend that counts the graphs it is handed: batch 1 and the stream
    batch k, ControlNet run and reused, are all compiled by `warm_up`; live frames then compile nothing (no
    recompile between batch 1 and k)."""
    real_compile = torch.compile
    graphs: list[int] = []

    def counting(gm: Any, inputs: Any) -> Any:
        graphs.append(len(graphs))
        return gm.forward

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=counting,
                                                                             dynamic=kw["dynamic"]))
    torch._dynamo.reset()
    d = Denoiser(shared, DiffusionSettings(size=SIZE, steps=2, stream_batch=True, compile="on",
                                           controlnet_reuse=0.01))
    d.prepare(*encode_prompt(host_pipeline(shared), PROMPT, shared.device))
    d.warm_up()
    warmed = len(graphs)
    assert warmed >= 4  # UNet and ControlNet, each at batch 1 and 2
    crop = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(5):
        d.submit(crop, crop, i, reuse_control=i % 2 == 1)
        d.collect()
    assert len(graphs) == warmed
    torch._dynamo.reset()
