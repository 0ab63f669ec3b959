"""Benchmark: the person matte on the shared matting kit (../shared/assets/matting), scored by the kit's own
`score_matte.py` (imported), the README's baseline rerun beside livecam in the same run.

Rows, on every still (56 at 1280x720, 56 at 640x480) and every frame of the kit's two videos:

- `baseline_raw`: the kit README's baseline: MediaPipe's landscape selfie model (144x256) on the whole frame,
  its confidence taken as alpha (the segmenter livecam used before this matte).
- `region_raw`: livecam's segmenter (the general 256x256 model) on the square around the face
  (`engine.matte.segment_person`), its confidence taken as alpha: what the region alone gives.
- `livecam`: that confidence through livecam's live matte (`engine.matte.Matter`, default settings, with its
  temporal state over a video), upscaled to the frame as the renderer does.
- `livecam_photo` (stills only): the matte at the photo's full resolution, as `livecam still` and
  `livecam cutout` use it.

Faces come from the real MediaPipe face landmarker (IMAGE mode for stills; for videos the live tracker, its
predicted face used for the region and the matte as in the live loop). Metrics are the kit's (SAD, MSE, Grad,
leakage, missing, floor over a 60 px boundary band), per size and per background; for videos also `flicker`:
the RMS over the boundary band of the error of the frame-to-frame change, ((p_t - p_t-1) - (g_t - g_t-1)),
in alpha units x 1000, averaged over frames (0: the prediction changes exactly as the truth does). The CPU
time of `Matter.update` per 1280x720 video frame, of the mask refinement it replaces (`refine_before`) and
of each segmenter call are reported as medians.

    python -m benchmarks.matte_quality [--quick] [--out benchmarks/results/matte_quality.json] [--sheet PNG]

`--sheet` writes a contact sheet (input | baseline confidence | livecam alpha | composite over a flat colour)
of a few kit frames. The kit's portraits are NIST mugshots: look at it, never publish it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.live_loop import machine, versions
from engine import background as bg
from engine import matte as mt
from engine.types import Landmarks, Mask, RGBImage
from models.face_landmarker import ImageFaceLandmarker, MediaPipeFaceTracker
from models.registry import SELFIE_SEGMENTER
from models.segmenter import MediaPipeSegmenter
from tests.media import assets_dir

BASELINE_MODEL = "models/segmentation/selfie_segmentation_landscape.tflite"
LIVECAM_MODEL = f"models/segmentation/{SELFIE_SEGMENTER.filename}"
LANDMARKER = "models/face_landmarker/face_landmarker.task"
SIZES = ("1280x720", "640x480")
QUICK_STILLS = ("S001-02__sh_street_people_1280x720", "S008-03__sh_stripes_1280x720",
                "S008-02__sh_bright_window_640x480")
QUICK_FRAMES = 8
SHEET_STILLS = ("S001-02__sh_street_people_1280x720", "S006-01__sh_street_people_1280x720",
                "S008-03__sh_stripes_1280x720", "S001-02__sh_stripes_640x480", "S008-02__sh_bright_window_1280x720",
                "S001-04__sh_bookshelf_1280x720", "S001-06__sh_kitchen_window_1280x720")
SHEET_COLOUR = (40, 170, 90)
KEYS = ("sad", "mse", "grad", "leakage", "missing", "floor")
Scores = dict[str, float]


def load_scorer(kit: Path) -> ModuleType:
    """The kit's score_matte.py, imported from the kit."""
    spec = importlib.util.spec_from_file_location("score_matte", kit / "score_matte.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {kit / 'score_matte.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_rgb(path: Path) -> RGBImage:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def unit(alpha: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """An alpha as the scorer reads a saved 8-bit PNG: rounded to 1/255, float64 0..1."""
    a = np.asarray(alpha)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return np.round(np.clip(a, 0.0, 1.0) * 255.0) / 255.0


def mean(rows: list[Scores], keys: tuple[str, ...] = KEYS) -> Scores:
    return {k: float(np.mean([r[k] for r in rows])) for k in keys if rows and k in rows[0]}


class _Clock:
    """CPU time (the whole process's, in ms) of the code inside `with`, appended to `into`."""

    def __init__(self, into: list[float]) -> None:
        self._into = into
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.process_time()

    def __exit__(self, *exc: object) -> None:
        self._into.append((time.process_time() - self._start) * 1000.0)


def run_stills(kit: Path, scorer: ModuleType, names: list[str], sheet: list[tuple[str, list[RGBImage]]],
               sheet_names: tuple[str, ...]) -> dict[str, Any]:
    assets = assets_dir()
    rows: dict[str, dict[str, list[Scores]]] = {}
    timing: dict[str, list[float]] = {"photo_matte_cpu_ms": []}
    found = 0
    with ImageFaceLandmarker(assets / LANDMARKER) as landmarker, _segmenter(assets / BASELINE_MODEL) as base, \
            _segmenter(assets / LIVECAM_MODEL) as region_seg:
        for t, name in enumerate(names):
            rgb = read_rgb(kit / "images" / f"{name}.jpg")
            gt = scorer.read_alpha(str(kit / "alpha" / f"{name}.png"))
            faces = landmarker.detect(rgb)
            landmarks: Landmarks | None = faces[0] if faces else None
            found += landmarks is not None
            baseline = base.segment(rgb, t * 33)
            region = mt.segment_person(region_seg, rgb, t * 33, landmarks)
            live = mt.full_alpha(mt.Matter().update(rgb, region, landmarks), (rgb.shape[1], rgb.shape[0]))
            with _Clock(timing["photo_matte_cpu_ms"]):
                photo = mt.photo_alpha(rgb, region, landmarks)
            for row, alpha in (("baseline_raw", baseline), ("region_raw", region), ("livecam", live),
                               ("livecam_photo", photo)):
                rows.setdefault(row, {}).setdefault(name, []).append(scorer.metrics(unit(alpha), gt))
            if name in sheet_names:
                sheet.append((name, [rgb, _grey(baseline), _grey(live), _over(rgb, live)]))
    result: dict[str, Any] = {"images": len(names), "faces_found": found, "rows": {}}
    for row, per_image in rows.items():
        out: dict[str, Any] = {}
        for size in SIZES:
            items = {n: v[0] for n, v in per_image.items() if n.endswith(size)}
            if not items:
                continue
            per_bg: dict[str, list[Scores]] = {}
            for n, scores in items.items():
                per_bg.setdefault(n.split("__")[1].rsplit("_", 1)[0], []).append(scores)
            out[size] = {"count": len(items), **mean(list(items.values())),
                         "per_background": {bg: {"count": len(v), **mean(v)} for bg, v in sorted(per_bg.items())}}
        result["rows"][row] = out
    result["photo_matte_cpu_ms_median"] = float(np.median(timing["photo_matte_cpu_ms"]))
    return result


def run_video(kit: Path, scorer: ModuleType, video: Path, frames: int | None) -> dict[str, Any]:
    assets = assets_dir()
    gt_all = np.load(video.with_name(f"{video.stem}_alpha.npz"))["alpha"]
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    matter = mt.Matter()
    rows: dict[str, list[Scores]] = {"baseline_raw": [], "region_raw": [], "livecam": []}
    flicker: dict[str, list[float]] = {k: [] for k in rows}
    previous: dict[str, npt.NDArray[np.float64]] = {}
    cpu: dict[str, list[float]] = {"matte": [], "refine_before": [], "segment_baseline": [], "segment_region": []}
    previous_mask: Mask | None = None
    no_face = 0
    with MediaPipeFaceTracker(assets / LANDMARKER) as tracker, _segmenter(assets / BASELINE_MODEL) as base, \
            _segmenter(assets / LIVECAM_MODEL) as region_seg:
        for i, rgb in enumerate(_frames(capture, frames if frames is not None else len(gt_all))):
            t_ms = round(i * 1000 / fps)
            predicted = tracker.predict(t_ms)
            with _Clock(cpu["segment_baseline"]):
                baseline = base.segment(rgb, t_ms)
            with _Clock(cpu["segment_region"]):
                region = mt.segment_person(region_seg, rgb, t_ms, predicted.landmarks if predicted else None)
            tracked = tracker.track(rgb, t_ms)
            face = predicted if predicted is not None else tracked
            no_face += face is None
            landmarks = face.landmarks if face is not None else None
            with _Clock(cpu["matte"]):
                matte = matter.update(rgb, region, landmarks, t_ms)
            with _Clock(cpu["refine_before"]):
                previous_mask = _refine_before(baseline, previous_mask)
            live = mt.full_alpha(matte, (rgb.shape[1], rgb.shape[0]))
            gt = gt_all[i].astype(np.float64) / 255.0
            band = scorer.boundary_band(gt, 60)
            for row, alpha in (("baseline_raw", baseline), ("region_raw", region), ("livecam", live)):
                pred = unit(alpha)
                rows[row].append(scorer.metrics(pred, gt))
                if row in previous:
                    change = (pred - previous[row]) - (gt - previous["gt"])
                    flicker[row].append(float(np.sqrt(np.mean(change[band] ** 2))) * 1000.0)
                previous[row] = pred
            previous["gt"] = gt
    capture.release()
    return {"frames": len(rows["livecam"]), "frames_without_face": no_face,
            "rows": {row: {**mean(v), "flicker": float(np.mean(flicker[row])) if flicker[row] else 0.0}
                     for row, v in rows.items()},
            "cpu_ms_median": {k: float(np.median(v[min(5, len(v) - 1):])) for k, v in cpu.items()}}


def _refine_before(mask: Mask, previous: Mask | None) -> Mask:
    """What the studio renderer did with the mask before this matte (its CPU cost is the baseline's): half
    size, feathered 3 output px (at 1:1 framing), averaged with the previous frame's."""
    height, width = mask.shape
    half = np.asarray(cv2.resize(mask, (width // 2, height // 2), interpolation=cv2.INTER_AREA), np.float32)
    refined = bg.refine_mask(half, 1.5, previous, 0.4)
    bg.alpha_u8(refined)
    return refined


def _frames(capture: cv2.VideoCapture, count: int) -> Iterator[RGBImage]:
    for _ in range(count):
        ok, bgr = capture.read()
        if not ok:
            return
        yield np.ascontiguousarray(bgr[:, :, ::-1])


class _segmenter:
    """A MediaPipeSegmenter as a context manager."""

    def __init__(self, path: Path) -> None:
        self._segmenter = MediaPipeSegmenter(path)

    def __enter__(self) -> MediaPipeSegmenter:
        return self._segmenter

    def __exit__(self, *exc: object) -> None:
        self._segmenter.close()


def _grey(alpha: Mask | npt.NDArray[np.uint8]) -> RGBImage:
    a8 = np.round(unit(alpha) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(a8[:, :, None], 3, axis=2))


def _over(rgb: RGBImage, alpha: npt.NDArray[np.uint8]) -> RGBImage:
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    flat = np.array(SHEET_COLOUR, np.float32)
    return np.clip(rgb * a + flat * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def write_sheet(path: Path, sheet: list[tuple[str, list[RGBImage]]], width: int = 1600) -> None:
    """One row per frame: input | baseline confidence | livecam alpha | composite over a flat colour."""
    rows = []
    for name, tiles in sheet:
        wide = np.hstack(tiles)
        row = cv2.resize(wide, (width, round(wide.shape[0] * width / wide.shape[1])), interpolation=cv2.INTER_AREA)
        cv2.putText(row, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows)[:, :, ::-1])


def targets(stills: dict[str, Any], videos: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's target: SAD and leakage above the floor at most half the baseline's (from this run), edge
    flicker no worse."""
    judged: dict[str, Any] = {}
    cases = [(f"stills_{size}", stills["rows"]["baseline_raw"].get(size), stills["rows"]["livecam"].get(size))
             for size in SIZES]
    cases += [(name, v["rows"]["baseline_raw"], v["rows"]["livecam"]) for name, v in videos.items()]
    for name, base, ours in cases:
        if base is None or ours is None:
            continue
        base_leak, ours_leak = base["leakage"] - base["floor"], ours["leakage"] - ours["floor"]
        entry = {"sad_ratio": ours["sad"] / base["sad"],
                 "leakage_above_floor_ratio": ours_leak / base_leak if base_leak > 0 else 0.0}
        if "flicker" in base:
            entry["flicker_ratio"] = ours["flicker"] / base["flicker"] if base["flicker"] > 0 else 0.0
        entry["met"] = bool(entry["sad_ratio"] <= 0.5 and entry["leakage_above_floor_ratio"] <= 0.5
                            and entry.get("flicker_ratio", 0.0) <= 1.0)
        judged[name] = entry
    return judged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_STILLS)} stills and {QUICK_FRAMES} "
                        "frames of one video (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/matte_quality.json"))
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet PNG here (never publish it)")
    args = parser.parse_args(argv)
    kit = assets_dir() / "matting"
    scorer = load_scorer(kit)
    started = time.monotonic()
    if args.quick:
        names = list(QUICK_STILLS)
        video_paths = sorted((kit / "video").glob("*.mp4"))[-1:]
    else:
        names = sorted(p.stem for p in (kit / "images").glob("*.jpg"))
        video_paths = sorted((kit / "video").glob("*.mp4"))
    sheet: list[tuple[str, list[RGBImage]]] = []
    stills = run_stills(kit, scorer, names, sheet, SHEET_STILLS if args.sheet else ())
    videos = {p.stem: run_video(kit, scorer, p, QUICK_FRAMES if args.quick else None) for p in video_paths}
    result = {
        "what": "person matte on the shared matting kit: the README's raw-segmenter baseline and livecam's matte, "
                "same run, scored by the kit's score_matte.metrics",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions(), "quick": args.quick,
        "models": {"baseline": BASELINE_MODEL, "livecam": LIVECAM_MODEL, "landmarker": LANDMARKER},
        "matte_settings": {"face_px": mt.Matter().face_px, "smoothing": mt.Matter().smoothing},
        "stills": stills, "videos": videos, "targets": targets(stills, videos),
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.sheet:
        write_sheet(args.sheet, sheet)
    for name, entry in result["targets"].items():
        print(f"{name}: SAD x{entry['sad_ratio']:.2f}, leakage above floor x{entry['leakage_above_floor_ratio']:.2f}"
              + (f", flicker x{entry['flicker_ratio']:.2f}" if "flicker_ratio" in entry else "")
              + f" of the baseline: {'met' if entry['met'] else 'NOT met'}")
    print(f"wrote {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
