"""Benchmark: temporal stability of the diffusion engine on a still input, each measure on and off.

A person sitting still in front of a webcam still gives frames that differ by sensor noise. Input: a real
portrait (shared assets) with fresh Gaussian noise (sigma 2 levels) per frame, tracked by the real MediaPipe
tracker, re-rendered by the diffusion engine with tiny random-weight SDXL components on the CPU. The figure
is the mean absolute frame-to-frame difference of the output's re-rendered square, inside its soft
edge (0-255 levels; lower is steadier), measured cumulatively:

- `baseline`: fresh noise each frame, raw landmarks, every frame rendered, no latent blend;
- `+fixed_noise`: the same noise on every frame;
- `+smoothing`: One-Euro-smoothed landmarks (framing and pose image steady);
- `+latent_blend`: half of the previous frame's latent blended in;
- `+similar_filter`: frames that barely changed repeat the last output.

The input's own frame-to-frame difference (`input`) is given for scale. Random weights amplify noise
differently from a trained model, so the absolute numbers are this model's; the ordering is the point.

    python -m benchmarks.diffusion_stability [--frames 30] [--out benchmarks/results/diffusion_stability_cpu_tiny.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.live_loop import machine, versions
from engine.background import BackgroundSettings
from engine.denoiser import DiffusionComponents
from engine.diffusion import DiffusionRenderer
from engine.diffusion_settings import DiffusionSettings
from engine.framing import FramingSettings
from engine.relight import RelightSettings
from engine.skin import SkinSettings
from engine.studio import StudioRenderer
from engine.styles import DEFAULT_STYLES
from livecam.live.stats import write_json
from livecam.photos import read_image
from models.face_landmarker import MediaPipeFaceTracker
from tests.media import assets_dir
from tests.tiny_sdxl import tiny_components

OUTPUT = (640, 360)
PHOTO = "images/faces/obama_official_2012.jpg"
SENSOR_NOISE = 2.0
WARMUP = 15


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    fixed_noise: bool
    smoothing: bool
    latent_blend: float
    similar_threshold: float


VARIANTS = (
    Variant("baseline", False, False, 0.0, 0.0),
    Variant("+fixed_noise", True, False, 0.0, 0.0),
    Variant("+smoothing", True, True, 0.0, 0.0),
    Variant("+latent_blend", True, True, 0.5, 0.0),
    Variant("+similar_filter", True, True, 0.5, 0.004),
)


def still_frames(frames: int, seed: int = 0) -> list[np.ndarray]:
    """The portrait, 640 px wide, with fresh sensor noise per frame."""
    import cv2

    image = read_image(assets_dir() / PHOTO)
    height = round(image.shape[0] * 640 / image.shape[1]) // 2 * 2
    image = cv2.resize(image, (640, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    rng = np.random.default_rng(seed)
    return [np.clip(image + rng.normal(0, SENSOR_NOISE, image.shape), 0, 255).astype(np.uint8) for _ in range(frames)]


def frame_difference(outputs: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b.astype(np.int16) - a).mean() for a, b in itertools.pairwise(outputs)]))


def run(variant: Variant, frames: list[np.ndarray], size: int, warmup: int) -> dict[str, Any]:
    c = tiny_components(0)
    components = DiffusionComponents(unet=c["unet"], tiny_vae=c["tiny_vae"], text_encoder=c["text_encoder"],
                                     tokenizer=c["tokenizer"], scheduler=c["scheduler"], device=torch.device("cpu"),
                                     dtype=torch.float32, controlnet=c["controlnet"],
                                     text_encoder_2=c["text_encoder_2"], tokenizer_2=c["tokenizer_2"])
    settings = DiffusionSettings(size=size, fixed_noise=variant.fixed_noise, latent_blend=variant.latent_blend,
                                 similar_threshold=variant.similar_threshold, badge=False)
    # Relighting off: its exposure adapts over the first seconds, a real change the output should follow.
    studio = StudioRenderer(OUTPUT, FramingSettings(), BackgroundSettings(enabled=False),
                            RelightSettings(enabled=False), SkinSettings())
    renderer = DiffusionRenderer(components, settings, studio, DEFAULT_STYLES["corporate"].prompt())
    renderer.prepare()
    landmarker = assets_dir() / "models/face_landmarker/face_landmarker.task"
    outputs = []
    start = time.perf_counter()
    with MediaPipeFaceTracker(landmarker, smoothing=variant.smoothing) as tracker:
        for i, image in enumerate(frames):
            t_ms = i * 33
            face = tracker.track(image, t_ms)
            out = renderer.render(image, face, None, t_ms)
            if i >= warmup:  # after the framing has settled on the face
                outputs.append(out)
    # Inside the first square's soft edge only: there the output is purely generated (at the edge the
    # studio canvas, sensor noise and all, shows through). Framing keeps the square in place.
    assert renderer.last_square is not None
    x0, y0, side = renderer.last_square
    m = round(side * (settings.feather + 0.02))
    outputs = [o[y0 + m : y0 + side - m, x0 + m : x0 + side - m] for o in outputs]
    return {
        "settings": dataclasses.asdict(variant),
        "output_frame_difference": round(frame_difference(outputs), 4),
        "counts": renderer.counters(),
        "seconds": round(time.perf_counter() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=WARMUP, help="frames before measuring (framing settles)")
    parser.add_argument("--size", type=int, default=128, help="engine size (multiple of 32)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusion_stability_cpu_tiny.json"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    frames = still_frames(args.frames + args.warmup)
    results = {v.name: run(v, frames, args.size, args.warmup) for v in VARIANTS}
    summary = {
        "benchmark": "diffusion_stability",
        "machine": machine(),
        "versions": {**versions(), "torch": torch.__version__},
        "config": {"frames": args.frames, "warmup_frames": args.warmup, "relight": False,
                   "engine_size": args.size, "output": OUTPUT, "photo": PHOTO,
                   "sensor_noise_sigma": SENSOR_NOISE, "models": "tiny random-weight SDXL (tests/tiny_sdxl.py)"},
        "input_frame_difference": round(frame_difference(frames[args.warmup:]), 3),
        "results": results,
    }
    write_json(args.out, summary)
    print(f"input frame-to-frame difference: {summary['input_frame_difference']} levels")
    for name, r in results.items():
        print(f"{name:>16}: output frame-to-frame difference {r['output_frame_difference']:7.4f}  {r['counts']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
