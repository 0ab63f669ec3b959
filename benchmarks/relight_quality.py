"""Benchmark: what the relight stage does to real faces, today's pipeline beside the one before issue 13.

On every shared single-face photo (images/identity/*, images/faces/*; the rotated two-face picture is
measured on its largest face), the relight stage runs on the photo at its own resolution with its real
MediaPipe landmarks, as the studio engine runs it on a still (the gains snap to the face). Measured on the
face's skin (face oval less eyes, brows and lips; `engine.lighting.measure_face_light`):

- `luma`: mean skin luma 0..1; `ratio`: left half over right half (the default key is on the viewer's left);
  `key_effect`: the output's ratio over the input's, i.e. what the light itself did;
- `clipped_pct`: skin pixels with a channel at 255, and `new_clipped_pp` = output minus input.

Runs: `input`, `old` (the pipeline before: tone table, then the key map multiplied in with saturation,
copied below), `old_key_off`, `new` (defaults), `new_key_off` (key_light "none"), `new_strong`, and every
lighting setup; `setup_difference` is the mean absolute difference (grey levels) between setups on the skin
and on the head's region (every pair of the four). A darkened copy of each photo (x0.35) shows the exposure
lift. `cpu` times the
stage per 1280x720 frame (a face of a laptop's distance, and a close one), old and new, interleaved: median
wall and process-CPU milliseconds (the old stage with its tables and map cached, as the new).

    python -m benchmarks.relight_quality [--out benchmarks/results/relight_quality.json] [--sheet PNG]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.live_loop import machine, versions
from engine import lighting
from engine import relight as rl
from engine.framing import face_height_px
from engine.lighting import measure_face_light
from engine.relight import LightState, RelightSettings
from engine.skin import FACE_OVAL, skin_mask
from engine.types import Landmarks, RGBImage
from livecam.photos import read_image
from models.face_landmarker import detect_faces
from tests.media import assets_dir

PHOTOS = ("images/identity", "images/faces")
SKIN = {"S001": "light", "S006": "dark", "S008": "dark", "S419": "dark", "biden": "light", "obama": "medium"}
"""Skin tone of each subject, as seen on the photos (for the report's per-tone medians)."""
SETUP_NAMES = ("broad", "short", "butterfly", "rim")
DARKEN = 0.35


# --- the relight stage before issue 13, kept here to measure beside today's -------------------------------

def legacy_relight(image: RGBImage, landmarks: Landmarks, key: bool = True) -> RGBImage:
    """Exposure 0.55 within max_gain 2, white balance 0.6, key light "left" at 0.25, as they were."""
    oval = np.asarray(landmarks, dtype=np.float32)[list(FACE_OVAL), :2]
    centre = oval.mean(axis=0)
    hull = centre + 0.8 * (oval - centre)
    region = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(region, np.round(hull - 0.5).astype(np.int32), 255)
    r, g, b = (max(v, 1.0) / 255.0 for v in cv2.mean(image, region)[:3])
    wb_r = min(max((rl.SKIN_REFERENCE_RG / (r / g)) ** 0.6, 0.8), 1.25)
    wb_b = min(max((rl.SKIN_REFERENCE_BG / (b / g)) ** 0.6, 0.8), 1.25)
    luma = 0.299 * r * wb_r + 0.587 * g + 0.114 * b * wb_b
    exposure = min(max(0.55 / luma, 0.5), 2.0)
    out: RGBImage = cv2.LUT(image, rl.tone_luts((exposure * wb_r, exposure, exposure * wb_b)))  # type: ignore[assignment]
    if not key:
        return out
    height, width = image.shape[:2]
    fh = face_height_px(landmarks)
    gw, gh = max(2, -(-width // 8)), max(2, -(-height // 8))
    u = ((np.arange(gw, dtype=np.float32) + 0.5) * (width / gw) - centre[0]) / fh
    v = ((np.arange(gh, dtype=np.float32) + 0.5) * (height / gh) - centre[1]) / fh
    uu, vv = np.meshgrid(u, v)
    lobe = np.exp(-((uu + 0.9) ** 2 + (vv + 0.4) ** 2) / (2.0 * 1.1**2))
    fill = 1.0 / (1.0 + np.exp(-uu / 0.5))
    gain = cv2.resize((1.0 + 0.25 * (0.45 * lobe - 0.25 * fill)).astype(np.float32), (width, height))
    key_map = cv2.convertScaleAbs(gain, alpha=128.0)
    cv2.multiply(out, cv2.merge([key_map] * 3), dst=out, scale=1.0 / 128)
    return out


# --- today's stage, as the studio engine runs it on a still -----------------------------------------------

def relight(image: RGBImage, landmarks: Landmarks, settings: RelightSettings) -> RGBImage:
    stats = rl.face_region_stats(image, landmarks)
    state = rl.update_light(LightState(), stats, 0, settings, rl.scene_highlight(image))
    key = rl.key_light_map((image.shape[1], image.shape[0]), landmarks, settings)
    return rl.apply(image, rl.tone_tables(state.gains, key), key)


def photos() -> list[Path]:
    root = assets_dir()
    return [p for folder in PHOTOS for p in sorted((root / folder).glob("*.jpg"))]


def skin_tone(path: Path) -> str:
    return next((tone for key, tone in SKIN.items() if key in path.name), "unknown")


def landmarks_of(image: RGBImage) -> Landmarks | None:
    model = assets_dir() / "models/face_landmarker/face_landmarker.task"
    faces = detect_faces(model, np.ascontiguousarray(image), max_faces=2)
    return max(faces, key=face_height_px) if faces else None


def figures(image: RGBImage, landmarks: Landmarks, reference: lighting.FaceLight | None) -> dict[str, float]:
    light = measure_face_light(image, landmarks)
    out = {"luma": round(light.luma, 4), "ratio": round(light.left / light.right, 4),
           "clipped_pct": round(light.clipped_pct, 3)}
    if reference is not None:
        out["key_effect"] = round(out["ratio"] / (reference.left / reference.right), 4)
        out["new_clipped_pp"] = round(light.clipped_pct - reference.clipped_pct, 3)
    return out


def head_region(image: RGBImage, landmarks: Landmarks) -> tuple[slice, slice]:
    head = lighting.head_from_landmarks(landmarks)
    x0, x1 = max(int(head.cx - 1.6 * head.half_width), 0), int(head.cx + 1.6 * head.half_width)
    y0, y1 = max(int(head.cy - 1.5 * head.half_height), 0), int(head.cy + 1.6 * head.half_height)
    return slice(y0, min(y1, image.shape[0])), slice(x0, min(x1, image.shape[1]))


def outputs(image: RGBImage, landmarks: Landmarks) -> dict[str, RGBImage]:
    base = RelightSettings()
    runs = {"input": image, "old": legacy_relight(image, landmarks),
            "old_key_off": legacy_relight(image, landmarks, key=False), "new": relight(image, landmarks, base),
            "new_key_off": relight(image, landmarks, dataclasses.replace(base, key_light="none")),
            "new_strong": relight(image, landmarks, dataclasses.replace(base, key_style="strong"))}
    for name in SETUP_NAMES:
        runs[name] = relight(image, landmarks, dataclasses.replace(base, key_light=name))
    return runs


def setup_difference(runs: dict[str, RGBImage], image: RGBImage, landmarks: Landmarks) -> dict[str, float]:
    skin = skin_mask(image.shape, landmarks) > 0.5
    region = head_region(image, landmarks)
    names = SETUP_NAMES
    on_skin, on_head = [], []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = cv2.absdiff(runs[a], runs[b]).mean(axis=2)
            on_skin.append(float(diff[skin].mean()))
            on_head.append(float(diff[region].mean()))
    return {"skin_mean": round(statistics.mean(on_skin), 2), "skin_min": round(min(on_skin), 2),
            "head_mean": round(statistics.mean(on_head), 2), "head_min": round(min(on_head), 2)}


def measure_photo(path: Path) -> tuple[dict[str, Any], dict[str, RGBImage], Landmarks] | None:
    image = read_image(path)
    landmarks = landmarks_of(image)
    if landmarks is None:
        return None
    runs = outputs(image, landmarks)
    reference = measure_face_light(image, landmarks)
    entry: dict[str, Any] = {"photo": path.name, "skin": skin_tone(path),
                             "face_height_px": round(face_height_px(landmarks))}
    for name, out in runs.items():
        entry[name] = figures(out, landmarks, None if name == "input" else reference)
    entry["setup_difference"] = setup_difference(runs, image, landmarks)
    dark: RGBImage = cv2.convertScaleAbs(image, alpha=DARKEN)  # type: ignore[assignment]
    dark_ref = measure_face_light(dark, landmarks)
    runs["darkened"], runs["darkened_old"] = dark, legacy_relight(dark, landmarks)
    runs["darkened_new"] = relight(dark, landmarks, RelightSettings())
    entry["darkened"] = {"input": figures(dark, landmarks, None),
                         "old": figures(runs["darkened_old"], landmarks, dark_ref),
                         "new": figures(runs["darkened_new"], landmarks, dark_ref)}
    return entry, runs, landmarks


def cpu_frames() -> dict[str, tuple[RGBImage, Landmarks]]:
    """1280x720 frames of the official portrait: "laptop" (face about 220 px tall, a third of the frame,
    on a blurred copy of itself) and "close" (the portrait covering the frame, face about 410 px)."""
    photo = read_image(assets_dir() / "images/faces/obama_official_2012.jpg")
    scale = 1280 / photo.shape[1]
    close = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[60:780]
    laptop = cv2.GaussianBlur(cv2.resize(photo, (1280, 720), interpolation=cv2.INTER_AREA), (0, 0), 15)
    small = cv2.resize(photo, None, fx=0.74, fy=0.74, interpolation=cv2.INTER_AREA)[:620]
    laptop[100:100 + small.shape[0], 303:303 + small.shape[1]] = small
    frames: dict[str, tuple[RGBImage, Landmarks]] = {}
    for name, picture in (("laptop", laptop), ("close", close)):
        frame: RGBImage = np.ascontiguousarray(picture)
        landmarks = landmarks_of(frame)
        assert landmarks is not None
        frames[name] = (frame, landmarks)
    return frames


def time_stage(image: RGBImage, landmarks: Landmarks, frames: int) -> dict[str, Any]:
    """The relight stage per frame in steady state (tables and maps cached, as the studio keeps them), old
    and new interleaved; plus the new key map's build (when the head moves)."""
    from engine.background import BackgroundSettings
    from engine.framing import FramingSettings
    from engine.skin import SkinSettings
    from engine.studio import StudioRenderer

    size = (image.shape[1], image.shape[0])
    studio = StudioRenderer(size, FramingSettings(), BackgroundSettings(enabled=False), RelightSettings(),
                            SkinSettings(enabled=False))
    studio.prepare()
    old_lut = rl.tone_luts((1.1, 1.0, 0.95))
    old_map = cv2.merge([np.full(image.shape[:2], 130, np.uint8)] * 3)

    def old_stage() -> None:  # the old stage's per-frame work: stats, LUT, saturating multiply (map cached)
        oval = landmarks[list(FACE_OVAL), :2]
        hull = oval.mean(axis=0) + 0.8 * (oval - oval.mean(axis=0))
        x0, y0 = (max(int(v), 0) for v in hull.min(axis=0))
        x1, y1 = (math.ceil(v) for v in hull.max(axis=0))
        small = cv2.resize(image[y0:y1, x0:x1], (max(2, round((x1 - x0) * 48 / (y1 - y0))), 48),
                           interpolation=cv2.INTER_AREA)
        cv2.mean(small)
        out = cv2.LUT(image, old_lut)
        cv2.multiply(out, old_map, dst=out, scale=1.0 / 128)

    stages = {"old": old_stage, "new": lambda: studio._apply_relight(image, landmarks, 0)}
    samples: dict[str, dict[str, list[float]]] = {k: {"wall_ms": [], "cpu_ms": []} for k in stages}
    for index in range(frames + 5):
        for name, stage in stages.items():
            wall, cpu = time.perf_counter_ns(), time.process_time_ns()
            stage()
            if index >= 5:
                samples[name]["wall_ms"].append((time.perf_counter_ns() - wall) / 1e6)
                samples[name]["cpu_ms"].append((time.process_time_ns() - cpu) / 1e6)
    build = []
    for _ in range(max(frames // 5, 3)):
        start = time.process_time_ns()
        rl.key_light_map(size, landmarks, RelightSettings())
        build.append((time.process_time_ns() - start) / 1e6)
    result: dict[str, Any] = {"frame": list(size), "frames": frames, "face_height_px": round(face_height_px(landmarks))}
    for name, values in samples.items():
        result[name] = {k: round(statistics.median(v), 3) for k, v in values.items()}
    result["new_key_map_build_cpu_ms"] = round(statistics.median(build), 3)
    return result


def contact_sheet(rows: list[tuple[str, dict[str, RGBImage], Landmarks]], path: Path) -> None:
    """input | old | new | strong | each setup | the darkened copy: input, old, new; a head crop per tile, one
    row per photo."""
    columns = ("input", "old", "new", "new_strong", *SETUP_NAMES, "darkened", "darkened_old", "darkened_new")
    tile_w, tile_h, label_h = 150, 190, 18
    sheet_rows = []
    header = np.full((label_h, tile_w * len(columns), 3), 255, np.uint8)
    for i, name in enumerate(columns):
        cv2.putText(header, name, (i * tile_w + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    sheet_rows.append(header)
    for title, runs, landmarks in rows:
        tiles = []
        for name in columns:
            region = head_region(runs[name], landmarks)
            crop = runs[name][region]
            scale = min(tile_w / crop.shape[1], tile_h / crop.shape[0])
            small = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
            tile = np.full((tile_h, tile_w, 3), 40, np.uint8)
            tile[: small.shape[0], : small.shape[1]] = small
            tiles.append(tile)
        row = np.hstack(tiles)
        cv2.putText(row, title, (4, tile_h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        sheet_rows.append(row)
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(sheet_rows), cv2.COLOR_RGB2BGR))


def medians(entries: list[dict[str, Any]], run: str, key: str, group: str | None = None) -> float | None:
    values = [e[run][key] for e in entries if key in e[run] and (group is None or e["skin"] == group)]
    return round(statistics.median(values), 4) if values else None


def summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in (None, "dark", "medium", "light"):
        name = group or "all"
        out[name] = {run: {key: medians(entries, run, key, group)
                           for key in ("luma", "ratio", "key_effect", "clipped_pct", "new_clipped_pp")}
                     for run in ("input", "old", "old_key_off", "new", "new_key_off", "new_strong")}
    out["worst_new_clipped_pp"] = max(e["new"]["new_clipped_pp"] for e in entries)
    out["min_key_effect_new"] = min(e["new"]["key_effect"] for e in entries)
    out["setup_difference_skin_mean"] = round(statistics.median(
        e["setup_difference"]["skin_mean"] for e in entries), 2)
    out["darkened_luma"] = {run: round(statistics.median(e["darkened"][run]["luma"] for e in entries), 4)
                            for run in ("input", "old", "new")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/relight_quality.json"))
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet PNG here")
    parser.add_argument("--frames", type=int, default=60, help="frames timed per pipeline (CPU)")
    parser.add_argument("--limit", type=int, default=0, help="measure only the first N photos (0 = all)")
    args = parser.parse_args(argv)
    entries, rows = [], []
    for path in photos()[: args.limit or None]:
        measured = measure_photo(path)
        if measured is None:
            continue
        entry, runs, landmarks = measured
        entries.append(entry)
        rows.append((f"{path.stem} ({entry['skin']})", runs, landmarks))
    result = {"benchmark": "relight_quality", "machine": machine(), "versions": versions(),
              "settings": dataclasses.asdict(RelightSettings()), "summary": summary(entries),
              "cpu": {name: time_stage(frame, marks, args.frames) for name, (frame, marks) in cpu_frames().items()},
              "photos": entries}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.sheet is not None:
        contact_sheet(rows, args.sheet)
    print(json.dumps(result["summary"], indent=1))
    print(json.dumps(result["cpu"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
