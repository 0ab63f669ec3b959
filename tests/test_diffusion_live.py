"""The diffusion engine in the live camera: tiny random-weight SDXL models saved in diffusers format and
loaded back through `models/`, real video from ../shared/assets, the real loop, tracker and outputs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import diffusers
import numpy as np
import pytest
import torch

from engine.diffusion import DiffusionRenderer
from engine.studio import StudioRenderer
from livecam.assembly import build_renderer
from livecam.cli import main
from livecam.config import load_config
from livecam.live.capture import FrameSource, open_reader
from livecam.live.loop import run_loop
from livecam.live.outputs.memory import MemorySink
from livecam.live.stats import Stats
from models.face_landmarker import MediaPipeFaceTracker
from tests.tiny_sdxl import tiny_components


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny models saved the way a download lands: a diffusers pipeline folder, a ControlNet folder, a
    TAESD folder and a VAE folder."""
    root = tmp_path_factory.mktemp("tiny_sdxl")
    c = tiny_components(0)
    diffusers.StableDiffusionXLPipeline(
        vae=c["vae"], text_encoder=c["text_encoder"], text_encoder_2=c["text_encoder_2"], tokenizer=c["tokenizer"],
        tokenizer_2=c["tokenizer_2"], unet=c["unet"], scheduler=c["scheduler"]).save_pretrained(root / "base")
    c["controlnet"].save_pretrained(root / "controlnet")
    c["tiny_vae"].save_pretrained(root / "taesd")
    c["vae"].save_pretrained(root / "vae")
    return {name: root / name for name in ("base", "controlnet", "taesd", "vae")}


def _settings(dirs: dict[str, Path], *extra: str) -> list[str]:
    return [f"models.base={dirs['base']}", f"models.controlnet={dirs['controlnet']}",
            f"models.tiny_vae={dirs['taesd']}", f"models.vae={dirs['vae']}", "models.device=cpu",
            "models.download=false", "engine.size=64", "output.width=320", "output.height=180", *extra]


def test_run_with_the_diffusion_engine_writes_a_video(tiny_dirs: dict[str, Path], short_face_video: Path,
                                                      tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's command, with tiny models saved in diffusers format."""
    out = tmp_path / "out.mp4"
    args = ["run", "--engine", "diffusion", "--input", str(short_face_video), "--output", str(out), "--no-pace"]
    for item in _settings(tiny_dirs):
        args += ["--set", item]
    with caplog.at_level(logging.INFO, logger="livecam"):
        assert main(args) == 0
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 24 and frames[0].shape == (180, 320, 3)
    assert "diffusion engine: generated" in caplog.text and "failures 0" in caplog.text


def test_a_renderer_that_fails_mid_stream_falls_back_without_stopping(tiny_dirs: dict[str, Path],
                                                                       short_face_video: Path,
                                                                       landmarker_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(None, _settings(tiny_dirs, "engine.kind=diffusion", "engine.max_failures=4",
                                         "background.enabled=false"))
    stats = Stats()
    renderer = build_renderer(config, stats)
    assert isinstance(renderer, DiffusionRenderer)
    calls = {"n": 0}

    def fail_after_ten_frames(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    renderer.components.unet.register_forward_pre_hook(fail_after_ten_frames)
    renderer.prepare()
    sink = MemorySink((320, 180))
    with caplog.at_level(logging.WARNING), FrameSource(open_reader(str(short_face_video)), pace=False) as source, \
            MediaPipeFaceTracker(landmarker_path) as tracker:
        run_loop(source, tracker, None, renderer, sink, stats)
    assert sink.count == 24 == stats.frames_out  # every frame of the video went out
    counts = renderer.counters()
    assert counts["generated"] == 10 and counts["failures"] == 4
    assert counts["studio_frames"] == 14  # 4 failed frames, then the studio engine for the rest
    assert not renderer.active
    assert sum("switching to the studio engine" in m for m in caplog.messages) == 1
    # After the switch each frame is exactly the studio engine's.
    last = sink.frames[-1].image
    assert last.shape == (180, 320, 3) and last.dtype == np.uint8


def test_auto_takes_the_studio_engine_without_cuda_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.INFO, logger="livecam"):
        renderer = build_renderer(load_config(None, ["engine.kind=auto"]), Stats())
    assert isinstance(renderer, StudioRenderer)
    assert [m for m in caplog.messages if m.startswith("engine auto")] == [
        "engine auto: the studio engine (no CUDA GPU; the diffusion engine needs one for live frame rates)"]


def test_auto_with_missing_weights_takes_the_studio_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """As if on a GPU machine where the models were never downloaded: the GPU is the one part faked (there is
    none here); the rule that picks the engine and the loaders run as they are."""
    import models.device

    monkeypatch.setattr(models.device, "cuda_available", lambda: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO, logger="livecam"):
        renderer = build_renderer(load_config(None, ["engine.kind=auto", "models.device=auto",
                                                     f"models.base={tmp_path / 'nothing-here'}"]), Stats())
    assert isinstance(renderer, StudioRenderer)
    line = [m for m in caplog.messages if m.startswith("engine auto")]
    assert len(line) == 1 and "models.base" in line[0] and "nothing-here" in line[0]


def test_missing_weights_offline_is_one_clear_line(tmp_path: Path, short_face_video: Path) -> None:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "livecam", "run", "--engine", "diffusion", "--input",
                             str(short_face_video), "--output", str(tmp_path / "o.mp4"), "--set", "models.device=cpu"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("livecam: error:")]
    assert len(errors) == 1, result.stderr
    assert "models.base" in errors[0] and "stabilityai/sdxl-turbo" in errors[0]
    assert not (tmp_path / "o.mp4").exists()


def test_still_with_the_diffusion_engine_from_saved_models(tiny_dirs: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`livecam still --engine diffusion` through the real loaders (full VAE included), tiny models on disk."""
    import json

    from engine.gate import ADVICE
    from tests.conftest import asset

    args = ["still", str(asset("images/faces/obama_official_2012.jpg")), "--engine", "diffusion", "--out",
            str(tmp_path), "--name", "run", "--styles", "corporate", "--variants", "1", "--platforms", "none"]
    for item in [*_settings(tiny_dirs), "still.size=128", "still.steps=2", "still.max_retries=1"]:
        args += ["--set", item]
    assert main(args) == 1  # tiny random models paint noise: the gate rejects it, and says why
    out = capsys.readouterr().out
    assert "kept 0 of 2 candidates (diffusion engine" in out and f"{ADVICE['one_face.none']} (2 of 2)" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert str(tiny_dirs["base"]) in report["model"] and str(tiny_dirs["vae"]) in report["model"]
    assert [c["seed"] for c in report["candidates"]] == [0, 1]


class _Loads:
    """Counts every model, pipeline and tokenizer load (`from_pretrained`, `from_single_file`) from now on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import transformers

        self.calls: list[str] = []
        for owner in (diffusers.ModelMixin, diffusers.DiffusionPipeline, transformers.PreTrainedModel,
                      transformers.PreTrainedTokenizerBase):
            for name in ("from_pretrained", "from_single_file"):
                if name in vars(owner):
                    monkeypatch.setattr(owner, name, self._counting(vars(owner)[name].__func__, name))

    def _counting(self, load: Any, name: str) -> classmethod:  # type: ignore[type-arg]
        def counted(cls: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(f"{cls.__name__}.{name}")
            return load(cls, *args, **kwargs)

        return classmethod(counted)


def test_a_live_diffusion_sessions_export_loads_nothing_new(tiny_dirs: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The export runs on the live models (one SDXL + ControlNet on the GPU, not two); the live identity, here a
    LoRA file the export does not use, is given back to the live engine afterwards."""
    import time

    from livecam.serve.session import LiveSession
    from tests.conftest import asset
    from tests.tiny_sdxl import tiny_lora

    monkeypatch.setenv("LIVECAM_DATA_DIR", str(tmp_path / "data"))
    lora = tiny_lora(tmp_path / "someone.safetensors")
    photo = asset("images/faces/obama_official_2012.jpg")
    config = load_config(None, _settings(tiny_dirs, "engine.kind=diffusion", f"input.source={photo}",
                                         "input.loop=true", f"models.identity={lora}",
                                         "still.size=64", "still.steps=2", "still.checks=", "still.min_sharpness=0",
                                         "still.platforms=", "serve.export_variants=1"))
    loads = _Loads(monkeypatch)
    with LiveSession(config) as session:
        renderer = session._live_diffusion()
        assert isinstance(renderer, DiffusionRenderer) and renderer.components.vae is not None
        weight = renderer.components.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight
        deadline = time.monotonic() + 60
        while session.frames_out < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert renderer.counts["generated"] >= 1 and session.frames_out >= 3
        live_weight = weight.detach().clone()
        loaded = len(loads.calls)
        assert any(c.startswith("UNet2DConditionModel") for c in loads.calls)  # the counter sees the loads

        run = session.export()
        assert run.report["engine"] == "diffusion" and len(run.report["candidates"]) >= 1
        assert loads.calls[loaded:] == []  # the export loaded nothing
        session.export()  # a second export: the workbench is kept, still nothing loaded
        assert loads.calls[loaded:] == []
        generated, frames = renderer.counts["generated"], session.frames_out
        while (renderer.counts["generated"] == generated or session.frames_out < frames + 3) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        # The live engine runs on after the exports, and renders again (the weights were handed back to it).
        assert renderer.counts["generated"] > generated and session.frames_out >= frames + 3
        torch.testing.assert_close(weight, live_weight, rtol=0, atol=0)  # with its own identity fused again
        assert renderer.keep_face  # the live default; the page's switch reaches the engine
        session.update(keep_face=False)
        assert not renderer.keep_face and session.state()["keep_face"] is False


def test_published_frames_carry_the_clock_of_the_frame_they_show(tiny_dirs: dict[str, Path], tmp_path: Path,
                                                                 landmarker_path: Path) -> None:
    """Stream batching shows an earlier frame's pixels (one frame of delay per extra step): the published frame
    carries that frame's index and capture time. The frames' pixels encode their index (a brightness step), and
    each output's pixels outside the re-rendered square are decoded back to the index they show."""
    from livecam.photos import read_image
    from tests.conftest import asset

    photo = read_image(asset("images/faces/obama_official_2012.jpg"))
    photo = cv2.resize(photo, (320, 400), interpolation=cv2.INTER_AREA)
    folder = tmp_path / "frames"
    folder.mkdir()
    count = 8
    for i in range(count):  # frame i: the photo brighter by 12 * i grey levels
        frame = np.clip(photo.astype(np.int16) + 12 * i, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    config = load_config(None, _settings(tiny_dirs, "engine.kind=diffusion", "engine.steps=2",
                                         "engine.stream_batch=true", "engine.similar_threshold=0",
                                         "background.enabled=false", "relight.enabled=false",
                                         "skin.enabled=false", "engine.badge=false"))
    stats = Stats()
    renderer = build_renderer(config, stats)
    renderer.prepare()
    sink = MemorySink((320, 180))
    with FrameSource(open_reader(str(folder)), pace=False) as source, MediaPipeFaceTracker(landmarker_path) as tracker:
        run_loop(source, tracker, None, renderer, sink, stats)
    assert isinstance(renderer, DiffusionRenderer) and renderer.counts["generated"] == count
    # The brightness of the output's left strip (outside the square) says which frame it shows.
    strip = [float(f.image[:, :24].mean()) for f in sink.frames]
    step = (strip[-1] - strip[0]) / (count - 2)  # the last output shows frame count - 2
    assert step > 3
    shown = [round((s - strip[0]) / step) for s in strip]
    # Frame 0 fills the batch and shows itself; from then on each output shows the frame before.
    assert shown == [0, *range(count - 1)]
    assert [f.index for f in sink.frames] == shown
    assert stats.summary()["latency_ms_p50"] > 0
