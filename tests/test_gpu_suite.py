"""The one-call GPU suite (`benchmarks/gpu_suite.sh`) is ready for a GPU machine it never runs on here: every
command it would run there, and in its CPU smoke mode, is accepted by the benchmark it names; what it reads from
the carried assets is what `benchmarks/gpu_carry.sh` carries; the end-to-end benchmark's tiny mode runs every
path and writes its JSON. (The whole smoke run, `bash benchmarks/gpu_suite.sh --smoke`, takes about a minute:
too long for a unit test; its timings are in benchmarks/gpu_setup.md.)"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import diffusion_e2e, diffusion_square, stills_gpu, stills_models

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


def suite_commands(tmp_path: Path, *flags: str) -> dict[str, list[str]]:
    """Step name -> the command line the suite would run (DRY=1 prints them)."""
    env = {**os.environ, "DRY": "1", "OUT": str(tmp_path)}
    env.pop("STEPS", None)
    done = subprocess.run(["bash", str(SUITE), *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True, timeout=30)
    steps = {}
    for line in done.stdout.splitlines():
        name, sep, command = line.partition(": ")
        if sep and name.isidentifier():
            steps[name] = shlex.split(command)
    return steps


@pytest.mark.parametrize("flags", [(), ("--smoke",)], ids=["gpu", "smoke"])
def test_every_suite_command_is_accepted_by_its_benchmark(tmp_path: Path, flags: tuple[str, ...]) -> None:
    steps = suite_commands(tmp_path, *flags)
    assert set(steps) == {"live", "stills", "train", "square", "compiled"}
    for name, argv in steps.items():
        env = [a for a in argv if re.fullmatch(r"[A-Z_]+=\S*", a)]
        argv = [a for a in argv if a != "env" and a not in env]
        assert argv[1] == "-m" and argv[2].startswith("benchmarks."), argv
        module = importlib.import_module(argv[2])
        args = module.parse_args(argv[3:])  # exits (SystemExit) on a flag the benchmark does not take
        assert args.out == tmp_path / f"{name}.json"
        assert args.tiny == bool(flags)
        assert env == (["TORCH_COMPILE_DISABLE=1"] if flags and name == "compiled" else [])
    compiled_runs = steps["compiled"][steps["compiled"].index("--runs") + 1:]
    assert set(compiled_runs) >= {"live_on_compiled", "live_on_compiled_reuse", "live_on", "baseline"}
    # The GPU run is one short command (the device tool takes at most 2,000 characters).
    assert len("bash benchmarks/gpu_suite.sh") < 2000


def test_the_carried_assets_are_those_the_benchmarks_read() -> None:
    carry = (ROOT / "benchmarks" / "gpu_carry.sh").read_text()
    clip = "video/video_01_ccby_multiface.mp4"  # tests/media.py's face clip (the square benchmark's reuse figures)
    needed = {diffusion_e2e.VIDEO, diffusion_square.VIDEO, clip, stills_gpu.PHOTO, *stills_models.MODEL_FILES.values()}
    for relative in needed:
        assert relative in carry, relative
    wheels = carry[carry.index("-m pip download"):carry.index("for f in")]
    assert "mediapipe==" in wheels and "diffusers==" in wheels and "openvino" not in wheels  # 59 MB: does not fit
    assert "/.whl/" in (ROOT / ".gitignore").read_text().splitlines()


def test_e2e_benchmark_tiny_runs_every_path_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    threads = torch.get_num_threads()
    argv = ["--tiny", "--device", "cpu", "--frames", "3", "--warmup", "1", "--out", str(out)]
    assert diffusion_e2e.main(argv) == 0
    assert torch.get_num_threads() == threads
    result = json.loads(out.read_text())
    assert {"benchmark", "complete", "device", "machine", "versions", "dtype", "input", "settings", "lora", "config",
            "runs", "speedup_vs_baseline", "target"} <= set(result)
    assert result["complete"] is True and result["device"].startswith("CPU") and result["config"]["torch_threads"] == 1
    assert result["versions"]["torch"] and result["versions"]["mediapipe"]
    assert result["lora"]["fused"] is True and result["lora"]["layers"] > 0
    runs = result["runs"]
    assert set(runs) == set(diffusion_e2e.DEFAULT_RUNS)
    for name in ("live_on", "live_off", "paced_on", "paced_off"):
        run = runs[name]
        assert run["fps"] > 0 and run["latency_ms_p95"] >= run["latency_ms_p50"] > 0, name
        assert run["render_ms_p50"] > 0 and run["counts"]["failures"] == 0, name
        assert run["counts"]["generated"] > 0 and run["no_face_frames"] == 0, name
        # Every stage of the live render is timed: studio canvas, crop, pose image, the model, paste, keep-face.
        assert {"segment", "render", "frame", "crop", "condition", "upload", "unet", "decode", "paste",
                "keep_face"} <= set(run["sections"]), name
    assert result["settings"]["pipeline"] == "on" and result["settings"]["similar_threshold"] == 0
    for name in ("denoiser", "baseline"):
        assert runs[name]["fps"] > 0
    assert set(result["speedup_vs_baseline"]) == {"live_on", "live_off", "denoiser", "live_on_reuse", "live_on_opencv"}
    # The engine's own stage times (wall clock on the CPU), the square where the run put it.
    assert {"upload", "encode", "unet", "controlnet", "decode", "frame"} <= set(runs["live_on"]["engine_stages"])
    assert runs["live_on_opencv"]["square_on_device"] is False and runs["live_on"]["counts"]["controlnet_reused"] == 0
    target = result["target"]
    assert target["applicable"] is False and target["passed"] is None
    assert target["live_on"]["latency_from"] == "paced_on"
