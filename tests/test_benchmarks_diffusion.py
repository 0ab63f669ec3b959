"""The diffusion benchmarks run end to end on tiny models and write their JSON; the full-size SDXL components
have the published architectures (built on the meta device: no memory, about a second).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import diffusion_cpu, diffusion_gpu
from tests.tiny_sdxl import full_size_components


def test_gpu_benchmark_tiny_runs_every_path_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    argv = ["--tiny", "--device", "cpu", "--frames", "2", "--warmup", "0", "--rounds", "1", "--steps", "1", "2",
            "--baseline-configs", "64_1step_cn", "64_2step_nocn", "--out", str(out)]
    assert diffusion_gpu.main(argv) == 0
    result = json.loads(out.read_text())
    assert {"machine", "versions", "dtype", "settings", "config", "results", "target"} <= set(result)
    assert result["versions"]["torch"] and result["versions"]["diffusers"] and result["dtype"] == "fp32"
    assert set(result["results"]) == {"64_1step_cn", "64_1step_nocn", "64_2step_cn", "64_2step_nocn"}
    for name, row in result["results"].items():
        live = row["livecam"]
        assert live["fps"] > 0 and live["latency_ms_p95"] >= live["latency_ms_p50"] > 0
        assert live["outputs_finite"] is True and len(live["rounds"]) == 1
        has_baseline = name in ("64_1step_cn", "64_2step_nocn")
        assert (row["baseline"] is not None) == has_baseline == (row["speedup"] is not None)
        if has_baseline:
            assert row["baseline"]["fps"] > 0 and row["baseline"]["outputs_finite"] is True
    assert result["results"]["64_2step_cn"]["baseline_num_inference_steps"] == 4  # 4 x 0.5 = 2 real steps
    target = result["target"]
    assert target["config"] == "64_1step_cn" and target["applicable"] is False and target["passed"] is None
    assert {"fps", "latency_ms_p95", "speedup", "fps_ok", "latency_ok", "speedup_ok"} <= set(target["livecam"])


def test_gpu_benchmark_without_cuda_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert diffusion_gpu.main(["--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA GPU is needed" in err and "--tiny --device cpu" in err and "\n" not in err
    assert not (tmp_path / "x.json").exists()


def test_full_size_components_have_the_published_sdxl_shapes() -> None:
    c = full_size_components("meta", torch.float16)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    # The parameter counts of the published checkpoints' configs.
    assert count(c["unet"]) == 2_567_463_684
    assert count(c["controlnet"]) == 1_251_014_160
    assert count(c["vae"]) == 83_653_863
    assert count(c["tiny_vae"]) == 2_445_063
    unet = c["unet"]
    assert unet.dtype == torch.float16 and unet.device.type == "meta"
    assert unet.config.cross_attention_dim == 2048 and unet.config.addition_embed_type == "text_time"
    # time ids (6 x 256) + pooled text (1280) feed the added embedding, as SDXL was trained.
    assert unet.add_embedding.linear_1.in_features == 6 * 256 + c["pooled_embeds"].shape[-1]
    assert tuple(c["prompt_embeds"].shape) == (1, 77, 2048) and tuple(c["pooled_embeds"].shape) == (1, 1280)
    assert c["controlnet"].config.conditioning_embedding_out_channels == (16, 32, 96, 256)
    assert c["vae"].config.scaling_factor == 0.13025 and c["tiny_vae"].config.scaling_factor == 1.0
    assert c["scheduler"].config.timestep_spacing == "trailing"
    assert full_size_components("meta", torch.float16, controlnet=False)["controlnet"] is None


def test_cpu_benchmark_runs_the_whole_engine_with_sections(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    assert diffusion_cpu.main(["--frames", "3", "--warmup", "1", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"livecam_1step", "baseline_1step", "livecam_2step", "baseline_2step"}
    engine_stages = {"track", "relight", "skin", "frame", "crop", "condition", "paste"}
    for name, run in result["runs"].items():
        assert run["frames_out"] == 3 and run["fps"] > 0
        model_stages = {"upload", "encode", "unet", "decode", "download"} if "livecam" in name else {"pipeline"}
        assert engine_stages | model_stages <= set(run["sections"])
    assert result["runs"]["livecam_1step"]["counts"]["generated"] == 4  # warm-up + measured, none skipped
    assert set(result["speedup_fps_vs_baseline"]) == {"1step", "2step"}
    assert result["versions"]["torch"] and result["config"]["output_size"] == [640, 360]


def test_stability_benchmark_smoke(tmp_path: Path) -> None:
    from benchmarks.diffusion_stability import VARIANTS
    from benchmarks.diffusion_stability import main as stability_main

    out = tmp_path / "stability.json"
    assert stability_main(["--frames", "3", "--warmup", "1", "--size", "64", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["results"]) == {v.name for v in VARIANTS}
    assert result["input_frame_difference"] > 1.0  # the sensor noise
    baseline = result["results"]["baseline"]["output_frame_difference"]
    fixed = result["results"]["+fixed_noise"]["output_frame_difference"]
    assert fixed < baseline / 10  # fixed noise is what keeps a still picture still
