"""Benchmark: the whole diffusion engine on the CPU with tiny random SDXL models, on a real face video, against
a plain diffusers pipeline in the same run.

Each frame is tracked (MediaPipe FaceLandmarker), then rendered: the studio canvas (framing, relight, skin;
no background replacement), the head-and-shoulders square cropped, the pose condition drawn, re-rendered
and pasted back. Runs, each after a warm-up, interleaved over rounds (this 2-core VM's speed drifts):

- `livecam_<k>step`: `DiffusionRenderer.render` (the `Denoiser`: TAESD, fixed noise, precomputed
  embeddings, the stream batch for 2 steps), with `livecam.live.stats.Stats` as its sections, so every stage is
  timed: the studio's relight/skin/frame, then crop, condition, upload, encode, unet, decode, download,
  paste.
- `baseline_<k>step`: the same tracking, studio canvas, crop, condition and paste around a plain
  `StableDiffusionXLControlNetImg2ImgPipeline` call per frame (full AutoencoderKL, PIL in, output_type
  "np", the prompt embeddings passed directly as in benchmarks/diffusion_gpu.py), same size, same real
  steps (`num_inference_steps` x `strength`).

The models are tiny, so these figures show the cost of the engine's stages around the models and that the
whole path runs; GPU speed is benchmarks/diffusion_gpu.py's job. Writes JSON with the machine, versions and
config to benchmarks/results/.

    python -m benchmarks.diffusion_cpu [--frames 20] [--rounds 3] [--out benchmarks/results/diffusion_cpu_tiny.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import torch

from benchmarks.gpu_common import quiet_libraries
from benchmarks.live_loop import machine, model_paths, summarise
from benchmarks.live_loop import versions as base_versions
from engine import framing as fr
from engine.background import BackgroundSettings
from engine.denoiser import DiffusionComponents, encode_prompt
from engine.diffusion import (
    DiffusionRenderer,
    badge_patch,
    crop_geometry,
    cut_square,
    draw_badge,
    feather_mask,
    paste_square,
)
from engine.diffusion_settings import DiffusionSettings
from engine.framing import FramingSettings
from engine.pose import draw_pose
from engine.relight import RelightSettings
from engine.skin import SkinSettings
from engine.studio import StudioRenderer
from engine.styles import DEFAULT_STYLES
from engine.types import Face, RGBImage
from livecam.live.stats import Stats, write_json
from models.face_landmarker import MediaPipeFaceTracker
from tests.media import make_face_video
from tests.tiny_sdxl import tiny_components

FRAME_MS = 33  # the face video plays at 29.97 fps; tracking and framing smooth over these timestamps


class SwitchSections:
    """A `Sections` forwarding to whichever `Stats` is current, so one renderer serves warm-up and measure."""

    def __init__(self) -> None:
        self.target = Stats()

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        with self.target.section(name):
            yield


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {**base_versions(), **{n: version(n) for n in ("torch", "diffusers", "transformers")}}


def load_frames(video: Path) -> list[RGBImage]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cast(RGBImage, np.ascontiguousarray(bgr[:, :, ::-1])))
    cap.release()
    return frames


def studio(output_size: tuple[int, int], sections: SwitchSections) -> StudioRenderer:
    return StudioRenderer(output_size, FramingSettings(), BackgroundSettings(enabled=False), RelightSettings(),
                          SkinSettings(), sections=sections)


def components(models: dict[str, Any]) -> DiffusionComponents:
    return DiffusionComponents(unet=models["unet"], tiny_vae=models["tiny_vae"], text_encoder=models["text_encoder"],
                               tokenizer=models["tokenizer"], scheduler=models["scheduler"],
                               device=torch.device("cpu"), dtype=torch.float32, controlnet=models["controlnet"],
                               text_encoder_2=models["text_encoder_2"], tokenizer_2=models["tokenizer_2"])


def settings(size: int, steps: int, strength: float) -> DiffusionSettings:
    return DiffusionSettings(size=size, steps=steps, strength=strength, similar_threshold=0.0)


def drive(frames: list[RGBImage], args: argparse.Namespace, sections: SwitchSections,
          render: Callable[[RGBImage, Face | None, int, Stats], object]) -> Stats:
    """Warm-up, then the measured frames: track each frame, then `render(image, face, t_ms, stats)`; the
    returned Stats hold the measured frames only."""
    landmarker, _ = model_paths()
    stats = Stats()
    with MediaPipeFaceTracker(landmarker) as tracker:
        t_ms = 0
        for n, stats in ((args.warmup, Stats()), (args.frames, Stats())):
            sections.target = stats
            for i in range(n):
                image = frames[i % len(frames)]
                t_capture = time.perf_counter_ns()
                stats.frames_in += 1
                t_ms += FRAME_MS
                with stats.section("track"):
                    face = tracker.track(image, t_ms)
                if face is None:
                    stats.no_face += 1
                with stats.section("render"):
                    render(image, face, t_ms, stats)
                stats.published(t_capture)
    return stats


def run_livecam(frames: list[RGBImage], models: dict[str, Any], args: argparse.Namespace, steps: int) -> dict[str, Any]:
    sections = SwitchSections()
    renderer = DiffusionRenderer(components(models), settings(args.size, steps, args.strength),
                                 studio(args.output_size, sections), prompt=DEFAULT_STYLES["corporate"].prompt(),
                                 sections=sections)
    renderer.prepare()
    stats = drive(frames, args, sections, lambda image, face, t_ms, _: renderer.render(image, face, None, t_ms))
    renderer.close()
    return {**stats.summary(), "counts": renderer.counters()}


def run_baseline(frames: list[RGBImage], models: dict[str, Any], args: argparse.Namespace,
                 steps: int) -> dict[str, Any]:
    """Tracking, studio canvas, crop, condition and paste as in the engine, around a plain pipeline call."""
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline
    from PIL import Image

    sections = SwitchSections()
    canvas_renderer = studio(args.output_size, sections)
    canvas_renderer.prepare()
    pipe: Any = StableDiffusionXLControlNetImg2ImgPipeline(
        vae=models["vae"], text_encoder=models["text_encoder"], text_encoder_2=models["text_encoder_2"],
        tokenizer=models["tokenizer"], tokenizer_2=models["tokenizer_2"], unet=models["unet"],
        controlnet=models["controlnet"], scheduler=type(models["scheduler"]).from_config(models["scheduler"].config),
        add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    embeds, pooled = encode_prompt(pipe, DEFAULT_STYLES["corporate"].prompt(), torch.device("cpu"))
    size = args.size
    feather = feather_mask(size, DiffusionSettings().feather)
    badge = badge_patch(args.output_size[1])
    num_steps = max(steps, round(steps / args.strength))

    def render(image: RGBImage, face: Face | None, t_ms: int, stats: Stats) -> None:
        canvas = canvas_renderer.render(image, face, None, t_ms)
        if face is None:
            return
        box = canvas_renderer.last_box
        assert box is not None
        x0, y0, side, to_crop = crop_geometry(args.output_size, fr.box_to_affine(box, args.output_size),
                                              face.landmarks, size)
        with stats.section("crop"):
            crop = cut_square(canvas, x0, y0, side, size)
        with stats.section("condition"):
            condition = draw_pose(face.landmarks, to_crop, (size, size))
        with stats.section("pipeline"):
            result = pipe(image=Image.fromarray(crop), control_image=Image.fromarray(condition),
                          prompt_embeds=embeds, pooled_prompt_embeds=pooled, num_inference_steps=num_steps,
                          strength=args.strength, guidance_scale=0.0, output_type="np")
            rendered = cast(RGBImage, (np.clip(result.images[0], 0, 1) * 255).round().astype(np.uint8))
        with stats.section("paste"):
            draw_badge(paste_square(canvas, rendered, x0, y0, side, feather), *badge)

    return drive(frames, args, sections, render).summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20, help="measured frames per run and round")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=64, help="engine size (the square the model renders)")
    parser.add_argument("--output-size", type=int, nargs=2, default=[640, 360], metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusion_cpu_tiny.json"))
    args = parser.parse_args(argv)
    args.output_size = (args.output_size[0], args.output_size[1])
    with quiet_libraries():
        return run(args)


def run(args: argparse.Namespace) -> int:
    models = tiny_components(0)
    for key in ("unet", "controlnet", "vae", "tiny_vae", "text_encoder", "text_encoder_2"):
        models[key].eval().requires_grad_(False)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rounds: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # The same input as benchmarks/live_loop.py; decoded once, so decoding is not in the figures.
        video = make_face_video(Path(tmp) / "face.mp4", size=(640, 480), frames=90)
        frames = load_frames(video)
    for _ in range(args.rounds):
        for steps in args.steps:
            rounds.setdefault(f"livecam_{steps}step", []).append(run_livecam(frames, models, args, steps))
            rounds.setdefault(f"baseline_{steps}step", []).append(run_baseline(frames, models, args, steps))
    runs = {}
    for name, results in rounds.items():
        runs[name] = summarise(results)
        if "counts" in results[0]:
            runs[name]["counts"] = results[-1]["counts"]
    speedup = {f"{k}step": round(runs[f"livecam_{k}step"]["fps"] / max(runs[f"baseline_{k}step"]["fps"], 1e-9), 2)
               for k in args.steps}
    result = {
        "benchmark": "diffusion_cpu",
        "engine": "diffusion, tiny random SDXL (tests.tiny_sdxl.tiny_components)",
        "machine": {**machine(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()], "torch_threads":
                    torch.get_num_threads()},
        "versions": versions(),
        "rounds": args.rounds,
        "input": {"size": [640, 480], "fps": 29.97, "frames": len(frames),
                  "source": "video_01_ccby_multiface.mp4, region x=20 y=110 240x180 scaled to 640x480"},
        "config": {"frames": args.frames, "warmup": args.warmup, "steps": args.steps, "size": args.size,
                   "output_size": list(args.output_size), "strength": args.strength,
                   "baseline_num_inference_steps": {f"{k}step": max(k, round(k / args.strength)) for k in args.steps},
                   "stream_delay_frames": {f"{k}step": k - 1 for k in args.steps},
                   "settings": dataclasses.asdict(settings(args.size, args.steps[0], args.strength)),
                   "studio": {"framing": dataclasses.asdict(FramingSettings()), "background": "disabled",
                              "relight": dataclasses.asdict(RelightSettings()),
                              "skin": dataclasses.asdict(SkinSettings())}},
        "runs": runs,
        "speedup_fps_vs_baseline": speedup,
        "duration_s": round(time.perf_counter() - t0, 1),
    }
    write_json(args.out, result)
    print_table(result)
    print(f"wrote {args.out}")
    return 0


def print_table(result: dict[str, Any]) -> None:
    for name, run in result["runs"].items():
        each = ", ".join(f"{r['fps']:.1f}" for r in run["rounds"])
        print(f"{name:<16} {run['fps']:6.1f} fps  latency p50 {run['latency_ms_p50']:6.1f} ms  "
              f"p95 {run['latency_ms_p95']:6.1f} ms  (fps by round: {each})")
        for section, s in run["sections"].items():
            print(f"    {section:<10} p50 {s['ms_p50']:7.2f} ms  p95 {s['ms_p95']:7.2f} ms")
    print("speedup (fps) vs baseline: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["speedup_fps_vs_baseline"]
                                                     .items()))


if __name__ == "__main__":
    raise SystemExit(main())
