"""Benchmark: the diffusion engine's square work outside the model, and how often the ControlNet may rest.

Part 1, the square in and out (no model), on a real 1280x720 studio canvas (a frame of the live benchmark's
video through the studio engine), 512 px render, 720 px square, interleaved, medians:

- `crop_opencv`: `cut_square` (OpenCV INTER_AREA, CPU) - the crop the engine uploads on the CPU path;
- `crop_torch`: `DeviceSquare.crop` on `--device` (the square's upload included on CUDA);
- `paste_before`: `paste_square` as the engine ran it up to this change (`engine.framing.paste_back`: the
  decoded crop and the constant float feather mask both warped every frame);
- `paste_cached`: `paste_with_weight`, the same picture with the feather warped once per side (CPU path now);
- `paste_torch`: `DeviceSquare.paste` on `--device` (with the square's download on CUDA): the device path.
On CUDA the torch rows are timed with CUDA events around the work (and the wall clock beside).

Part 2, ControlNet reuse on real video: MediaPipe's FaceLandmarker tracks the clips (the live benchmark's
1280x720 bookshelf clip and tests/media.py's face clip), the studio engine frames each frame, and
`engine.pose.PoseReuse` (the renderer's own rule) says which frames would reuse the kept ControlNet residuals
at each threshold (`engine.controlnet_reuse`, the default marked) with the default `controlnet_reuse_max`.
The fraction reused is the share of ControlNet calls saved (28% of a frame's FLOPs at 512 px).

    python -m benchmarks.diffusion_square [--device cuda|cpu] [--repeats 50] [--frames 150] [--tiny]
        [--out benchmarks/results/diffusion_square_<device>.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_common import device_slug, machine, versions
from benchmarks.live_harness import load_frames
from tests.media import assets_dir, make_face_video

VIDEO = "matting/video/video_01_S001-04__sh_bookshelf.mp4"
THRESHOLDS = (0.002, 0.004, 0.008, 0.016)


def studio_canvases(frames: list[Any], size: tuple[int, int]) -> list[tuple[Any, Any, Any]]:
    """(canvas, face, canvas affine) per frame with a face: the frames tracked and rendered as live."""
    from engine import framing as fr
    from engine.types import NoSections
    from livecam.assembly import build_studio
    from livecam.config import load_config
    from models.face_landmarker import MediaPipeFaceTracker

    config = load_config(None, [f"output.width={size[0]}", f"output.height={size[1]}", "background.enabled=false"])
    studio = build_studio(config, NoSections())
    studio.prepare()
    out = []
    landmarker = assets_dir() / "models" / "face_landmarker" / "face_landmarker.task"
    with MediaPipeFaceTracker(landmarker, smoothing=config.tracking.smoothing) as tracker:
        for i, frame in enumerate(frames):
            face = tracker.track(frame, i * 33)
            if face is None:
                continue
            canvas = studio.render(frame, face, None, i * 33)
            assert studio.last_box is not None
            out.append((canvas, face, fr.box_to_affine(studio.last_box, size)))
    studio.close()
    return out


def time_square(canvas: Any, device: Any, repeats: int) -> dict[str, Any]:
    import torch

    from engine.square_ops import (
        DeviceSquare,
        cut_square,
        feather_mask,
        paste_square,
        paste_weight,
        paste_with_weight,
    )

    size, side, x0, y0 = 512, 720, (canvas.shape[1] - 720) // 2, 0
    feather = feather_mask(size, 0.08)
    weight = paste_weight(feather, side)
    ops = DeviceSquare(side, size, weight, device)
    rendered = np.ascontiguousarray(np.roll(cut_square(canvas, x0, y0, side, size), 25, axis=1)[..., ::-1])
    rendered_dev = torch.from_numpy(rendered).to(device).permute(2, 0, 1)[None].float()
    square_np = np.ascontiguousarray(canvas[y0 : y0 + side, x0 : x0 + side])
    cuda = device.type == "cuda"
    pin = torch.empty(square_np.shape, dtype=torch.uint8, pin_memory=cuda)
    out_host = torch.empty(square_np.shape, dtype=torch.uint8, pin_memory=cuda)

    def upload() -> Any:
        pin.numpy()[...] = square_np
        return pin.to(device, non_blocking=True)

    square_dev = upload()
    rows: dict[str, Any] = {
        "crop_opencv": lambda: cut_square(canvas, x0, y0, side, size),
        "crop_torch": lambda: ops.crop(upload()),
        "paste_before": lambda: paste_square(canvas, rendered, x0, y0, side, feather),
        "paste_cached": lambda: paste_with_weight(canvas, rendered, x0, y0, side, weight),
        "paste_torch": lambda: out_host.copy_(ops.paste(rendered_dev, square_dev), non_blocking=cuda),
    }
    wall: dict[str, list[float]] = {name: [] for name in rows}
    gpu: dict[str, list[float]] = {name: [] for name in rows if name.endswith("torch")}
    for _ in range(3):  # warm-up
        for fn in rows.values():
            fn()
    for _ in range(repeats):
        for name, fn in rows.items():
            if cuda:
                torch.cuda.synchronize()
            start = end = None
            if cuda and name in gpu:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            fn()
            if end is not None:
                end.record()
            if cuda:
                torch.cuda.synchronize()
            wall[name].append((time.perf_counter() - t0) * 1e3)
            if start is not None and end is not None:
                gpu[name].append(start.elapsed_time(end))
    # How far the device path is from the OpenCV path on this canvas.
    crop_diff = np.abs(ops.crop(square_dev)[0].permute(1, 2, 0).cpu().numpy() - cut_square(canvas, x0, y0, side, size))
    paste_diff = np.abs(ops.paste(rendered_dev, square_dev).cpu().numpy().astype(int)
                        - paste_with_weight(canvas, rendered, x0, y0, side, weight)[y0 : y0 + side, x0 : x0 + side])
    result: dict[str, Any] = {name: {"wall_ms_p50": round(float(np.median(v)), 3)} for name, v in wall.items()}
    for name, v in gpu.items():
        if v:
            result[name]["gpu_ms_p50"] = round(float(np.median(v)), 3)
    result["paste_cached_vs_before"] = round(result["paste_before"]["wall_ms_p50"]
                                             / result["paste_cached"]["wall_ms_p50"], 2)
    result["max_abs_diff"] = {"crop": float(crop_diff.max()), "paste": int(paste_diff.max()),
                              "paste_mean": round(float(paste_diff.mean()), 4)}
    return result


def reuse_fractions(shots: list[tuple[Any, Any, Any]], output_size: tuple[int, int]) -> dict[str, Any]:
    from engine import framing as fr
    from engine.diffusion_settings import DiffusionSettings
    from engine.pose import PoseReuse, body_keypoints
    from engine.square_ops import crop_geometry

    defaults = DiffusionSettings()
    out: dict[str, Any] = {}
    for threshold in sorted({*THRESHOLDS, defaults.controlnet_reuse}):
        rule = PoseReuse(threshold, defaults.controlnet_reuse_max, defaults.size)
        moves = []
        reused = 0
        last = None
        for _canvas, face, affine in shots:
            *_, to_crop = crop_geometry(output_size, affine, face.landmarks, defaults.size)
            points = fr.transform_points(body_keypoints(face.landmarks), to_crop)
            if last is not None:
                moves.append(float(np.nanmean(np.linalg.norm(points - last, axis=1))) / defaults.size)
            last = points
            reused += rule.reuse(points)
        key = f"{threshold:g}" + (" (default)" if threshold == defaults.controlnet_reuse else "")
        out[key] = round(reused / max(1, len(shots)), 3)
    out["pose_move_per_frame_p50"] = round(float(np.median(moves)), 5) if moves else None
    out["frames"] = len(shots)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (50; 5 with --tiny)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip for the reuse figures (150; 40)")
    parser.add_argument("--tiny", action="store_true", help="a smoke test: few repeats and frames, one thread")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (5 if args.tiny else 50)
    args.frames = args.frames or (40 if args.tiny else 150)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from engine.diffusion_settings import DiffusionSettings
    from livecam.live.stats import write_json

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("diffusion_square: no CUDA device here; --device cpu times the torch path on the CPU")
        return 2
    if args.tiny:
        torch.set_num_threads(1)
    size = (1280, 720)
    bookshelf = load_frames(assets_dir() / VIDEO, args.frames)
    shots = studio_canvases(bookshelf, size)
    if not shots:
        raise SystemExit(f"diffusion_square: no face found in {VIDEO}")
    square = time_square(shots[len(shots) // 2][0], device, args.repeats)
    clip = Path(tempfile.gettempdir()) / f"livecam_square_clip_{args.frames}.mp4"
    if not clip.exists():
        make_face_video(clip, frames=args.frames)
    reuse = {VIDEO.rsplit("/", 1)[-1]: reuse_fractions(shots, size),
             "tests/media.py face clip": reuse_fractions(studio_canvases(load_frames(clip, args.frames), size), size)}
    info = machine(device)
    result = {"benchmark": "diffusion_square", "device": info["device"], "machine": info, "versions": versions(),
              "torch_threads": torch.get_num_threads(),
              "config": {"output_size": list(size), "size": 512, "side": 720, "repeats": args.repeats,
                         "frames": args.frames, "controlnet_reuse_max": DiffusionSettings().controlnet_reuse_max},
              "square": square, "controlnet_reuse_fraction": reuse}
    out = args.out or Path("benchmarks/results") / f"diffusion_square_{device_slug(info['device'])}.json"
    write_json(out, result)
    for name, row in square.items():
        print(f"{name:<24} {row}")
    for clip_name, row in reuse.items():
        print(f"reuse {clip_name}: {row}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
