"""Calibration: the quality gate's background check on real studio stills, and how much a style's variants differ.

Background check (`engine.quality.leftovers`, gate threshold `still.max_leftovers`). Every frame of the matting
kit (../shared/assets/matting: real portraits composited over busy rooms, with their ground-truth alpha) is
made into a studio still three times, the way `livecam still` makes one (`studio_square`, then `surroundings`
and the measure): with livecam's matte (`Subject.mask`, what an export uses), with the raw segmenter's
confidence (the matte before issue 13; it lets the room through) and with the ground-truth alpha as the matte.
What really leaked is known from the ground truth: the pixels outside the true person (its alpha, warped into
the still, under 0.05) that differ from the backdrop by more than 30 levels, in face areas (face height
squared) -- "room shown". Halos inside the person's soft edge are not in it (the ground truth cannot tell a
halo from hair); the figure sees them. So each kit still is also made again from the frame with its room
(the kit's background plate) replaced by the still's backdrop, same matte and landmarks: the difference is
exactly what the room contributes, through the hair and the soft edge too -- "room exact" (the mean absolute
difference summed, in the leftovers' unit: percent of the face's area in entirely foreign colour) and "room
visible" (pixels more than 30 levels off, per face height squared). Every shared single-face photo is
measured too (no ground truth: looked at on the sheet `--sheet` writes).

Variants: the mean absolute difference (grey levels, 0-255, whole still and face box) between every pair of the
4 studio variants of a style, before (a lighting setup each on the style's backdrop: the table kept here) and
after (`livecam.stills.variants`: lighting setup and backdrop tone), on four photos and two styles.

    python -m benchmarks.still_gate_calibration [--step N] [--out FILE] [--sheet PNG]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.live_loop import machine, versions
from engine import framing as fr
from engine import quality
from engine.types import RGBImage
from livecam.assembly import open_workbench
from livecam.config import Config, load_config
from livecam.live.stats import write_json
from livecam.photos import read_image
from livecam.stills.render import resolve_style, studio_square
from livecam.stills.sheet import SheetEntry, contact_sheet, thumbnail
from livecam.stills.subject import Subject
from livecam.stills.surroundings import surroundings
from livecam.stills.variants import look
from livecam.stills.workbench import Workbench
from tests.media import assets_dir

PHOTOS = ("faces/obama_official_2012.jpg", "faces/obama_congress_2009.jpg", "faces/biden_official_portrait.jpg",
          "faces/meds-aa-S001-01-exif-rotation.jpg",
          *(f"identity/meds-aa-{s}-0{i}.jpg" for s, n in (("S001", 6), ("S006", 3), ("S008", 3))
            for i in range(1, n + 1)))
VARIANT_PHOTOS = ("faces/obama_official_2012.jpg", "faces/biden_official_portrait.jpg",
                  "identity/meds-aa-S001-01.jpg", "identity/meds-aa-S008-01.jpg")
SETUPS_ONLY = (("broad", 1.0), ("short", 1.0), ("butterfly", 1.0), ("rim", 1.0))
"""The studio variants before this change: a lighting setup each, the style's backdrop unchanged (main at
6e18564; before that, the key light from either side at 1x and 1.5x: 1.4-2.8 grey levels apart on average)."""
ROOM_LEVELS = 30.0
SHOWN_ALPHA = 0.05


def _subject(bench: Workbench, image: RGBImage, matte: np.ndarray | None) -> Subject:
    faces = bench.landmarker.detect(image)
    landmarks = max(faces, key=fr.face_height_px)
    subject = Subject(image, landmarks, np.zeros(1, np.float32), "", {})
    if matte is not None:  # else livecam's own matte (`Subject.mask`), as a still export makes it
        subject._mask = matte
    return subject


def measure(bench: Workbench, config: Config, subject: Subject, truth: np.ndarray | None,
            plate: np.ndarray | None = None) -> tuple[dict[str, Any], RGBImage]:
    """The still of `subject` (corporate style, variant 1), the gate's figure on it, and with the ground-truth
    alpha `truth` (frame pixels), the room it shows; with the background `plate` behind the frame too, the
    room it shows exactly (`_exact`)."""
    style = resolve_style(config, "corporate")
    variant = look(config, style, 1)
    lit = variant.style(style)
    still, landmarks, affine = studio_square(bench, config, subject, lit, None, variant.light)
    around = surroundings(bench, config, lit, still, matte=(subject.mask(bench.segmenter), affine))
    found = bench.landmarker.detect(still)
    face_px = fr.face_height_px(found[0] if found else landmarks)
    assert around.backdrop is not None
    row: dict[str, Any] = {"leftovers": round(quality.leftovers(still, around.person, around.backdrop, face_px), 3)}
    if truth is not None:
        size = (still.shape[1], still.shape[0])
        true_alpha = fr.warp(truth, affine, size)
        off = np.linalg.norm(still.astype(np.float32) - around.backdrop.astype(np.float32), axis=2) > ROOM_LEVELS
        row["room_shown"] = round(float((off & (true_alpha < SHOWN_ALPHA)).sum()) / face_px**2, 4)
        if plate is not None:
            row.update(_exact(bench, config, subject, truth, plate, still, affine, around.backdrop, face_px))
    return row, still


def _exact(bench: Workbench, config: Config, subject: Subject, truth: np.ndarray, plate: np.ndarray,
           still: RGBImage, affine: np.ndarray, backdrop: RGBImage, face_px: float) -> dict[str, float]:
    """The still made again from the frame with its room replaced by the still's backdrop (same matte, same
    landmarks): how much the room changes it."""
    frame = subject.image
    back = cv2.warpAffine(backdrop, cv2.invertAffineTransform(affine), (frame.shape[1], frame.shape[0]),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    roomless = np.clip(frame + (1.0 - truth)[..., None] * (back - plate) + 0.5, 0, 255).astype(np.uint8)
    twin = Subject(roomless, subject.landmarks, subject.reference, "", {})
    twin._mask = subject.mask(bench.segmenter)
    variant = look(config, resolve_style(config, "corporate"), 1)
    again, _, _ = studio_square(bench, config, twin, variant.style(resolve_style(config, "corporate")), None,
                                variant.light)
    diff = np.abs(still.astype(np.float32) - again.astype(np.float32)).mean(axis=2)
    return {"room_exact": round(float(diff.sum()) / 255.0 / face_px**2 * 100.0, 3),
            "room_visible": round(float((diff > ROOM_LEVELS).sum()) / face_px**2, 4)}


def matting(bench: Workbench, config: Config, step: int, sheet: list[SheetEntry]) -> list[dict[str, Any]]:
    kit = assets_dir() / "matting"
    rows = []
    for path in sorted((kit / "images").glob("*.jpg"))[::step]:
        frame = read_image(path)
        alpha = cv2.imread(str(kit / "alpha" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
        if alpha is None:
            raise SystemExit(f"no ground truth for {path.name} in {kit / 'alpha'}")
        truth = alpha.astype(np.float32) / 255
        plate = read_image(kit / "backgrounds" / f"{path.stem.split('__')[1]}.png").astype(np.float32)
        raw = bench.segmenter.segment(frame, 0)
        for matte_kind, matte in (("livecam", None), ("raw_segmenter", raw), ("ground_truth", truth)):
            row, still = measure(bench, config, _subject(bench, frame, matte), truth, plate)
            rows.append({"frame": path.stem, "matte": matte_kind, **row})
            sheet.append(SheetEntry(thumbnail(still), "kit", path.stem[:24], matte_kind,
                                    f"leftovers {row['leftovers']:.2f}, room {row['room_shown']:.2f}, "
                                    f"exact {row['room_exact']:.1f}",
                                    row["leftovers"] <= config.still.max_leftovers))
        print(f"{path.stem}: " + " / ".join(f"{r['leftovers']:.2f}" for r in rows[-3:]), flush=True)
    return rows


def photos(bench: Workbench, config: Config, sheet: list[SheetEntry]) -> list[dict[str, Any]]:
    rows = []
    for relative in PHOTOS:
        row, still = measure(bench, config, _subject(bench, read_image(assets_dir() / "images" / relative), None),
                             None)
        rows.append({"photo": relative, **row})
        sheet.append(SheetEntry(thumbnail(still), "photos", Path(relative).stem[:24], "livecam",
                                f"leftovers {row['leftovers']:.2f}", row["leftovers"] <= config.still.max_leftovers))
    return rows


def _pairwise(images: list[np.ndarray]) -> list[float]:
    return [float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) for a, b in itertools.combinations(images, 2)]


def variants(bench: Workbench, config: Config) -> list[dict[str, Any]]:
    rows = []
    for relative, style_name in itertools.product(VARIANT_PHOTOS, ("corporate", "creative")):
        subject = _subject(bench, read_image(assets_dir() / "images" / relative), None)
        style = resolve_style(config, style_name)
        before = [studio_square(bench, config, subject, style, None, light) for light in SETUPS_ONLY]
        looks = [look(config, style, v) for v in range(1, 5)]
        after = [studio_square(bench, config, subject, lk.style(style), None, lk.light)[0] for lk in looks]
        x0, y0, x1, y1 = (int(v) for v in quality.face_box(before[0][1]))
        row: dict[str, Any] = {"photo": relative, "style": style_name, "looks": [lk.words() for lk in looks]}
        for name, stills in (("before", [b[0] for b in before]), ("after", after)):
            whole, face = _pairwise(stills), _pairwise([s[y0:y1, x0:x1] for s in stills])
            row[name] = {"mean": round(statistics.mean(whole), 2), "min": round(min(whole), 2),
                         "max": round(max(whole), 2), "face_mean": round(statistics.mean(face), 2),
                         "face_min": round(min(face), 2)}
        rows.append(row)
        print(f"{relative} {style_name}: before {row['before']} after {row['after']}", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    def share(selected: list[dict[str, Any]]) -> dict[str, Any]:
        if not selected:
            return {"count": 0}
        values = [r["leftovers"] for r in selected]
        return {"count": len(selected), "rejected": sum(v > threshold for v in values),
                "leftovers_min": min(values), "leftovers_median": round(statistics.median(values), 3),
                "leftovers_max": max(values)}
    out: dict[str, Any] = {"threshold": threshold}
    for kind in ("livecam", "raw_segmenter"):
        made = [r for r in rows if r["matte"] == kind]
        out[f"{kind}_matte_room_shown_over_0.15"] = share([r for r in made if r["room_shown"] > 0.15])
        out[f"{kind}_matte_room_shown_0.05_to_0.15"] = share([r for r in made if 0.05 <= r["room_shown"] <= 0.15])
        out[f"{kind}_matte_room_shown_under_0.05"] = share([r for r in made if r["room_shown"] < 0.05])
    gt = [r for r in rows if r["matte"] == "ground_truth"]
    out["ground_truth_matte"] = share(gt)
    for kind in ("livecam", "ground_truth"):  # by the exact figure: the room seen through hair and edges too
        made = [r for r in rows if r["matte"] == kind]
        out[f"{kind}_matte_room_exact_under_2"] = share([r for r in made if r["room_exact"] < 2])
        out[f"{kind}_matte_room_exact_2_to_5"] = share([r for r in made if 2 <= r["room_exact"] <= 5])
        out[f"{kind}_matte_room_exact_over_5"] = share([r for r in made if r["room_exact"] > 5])
    out["ground_truth_matte_S001"] = share([r for r in gt if r["frame"].startswith("S001")])
    return out


def shared_models() -> list[str]:
    """Config overrides that take the models from ../shared/assets/models where it holds them (the cache or
    LIVECAM_MODEL_DIR otherwise): the benchmark runs offline on a fresh checkout."""
    models = assets_dir() / "models"
    reid = models / "face_recognition/face-reidentification-retail-0095/FP16/face-reidentification-retail-0095"
    files = {"face_landmarker": models / "face_landmarker/face_landmarker.task",
             "segmenter": models / "segmentation/selfie_segmentation.tflite",
             "face_detector": models / "face_detection/face_detection_yunet_2023mar.onnx",
             "face_reid_xml": reid.with_suffix(".xml"), "face_reid_bin": reid.with_suffix(".bin")}
    return [f"models.{key}={path}" for key, path in files.items() if path.is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--step", type=int, default=1, help="every Nth matting frame (default: all 112)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/still_gate_calibration.json"))
    parser.add_argument("--sheet", type=Path, default=None, help="a PNG of every still measured, with its figures")
    args = parser.parse_args()
    config = load_config(None, ["engine.kind=studio", *shared_models()])
    bench = open_workbench(config)
    sheet: list[SheetEntry] = []
    started = time.perf_counter()
    try:
        kit = matting(bench, config, args.step, sheet)
        shared = photos(bench, config, sheet)
        differ = variants(bench, config)
    finally:
        bench.close()
    summary = summarise(kit, config.still.max_leftovers)
    data = {
        "benchmark": "still_gate_calibration",
        "machine": machine(),
        "versions": versions(),
        "seconds": round(time.perf_counter() - started, 1),
        "method": {"room_shown": f"pixels with true alpha < {SHOWN_ALPHA} that differ from the backdrop by more "
                                 f"than {ROOM_LEVELS} levels, per face height squared",
                   "room_exact": "the still made again with the frame's room replaced by the backdrop: the mean "
                                 "absolute difference summed, percent of the face's area (the leftovers' unit)",
                   "room_visible": f"pixels of that difference over {ROOM_LEVELS} levels, per face height squared",
                   "style": "corporate, variant 1 (studio engine)", "variants_style": "corporate and creative"},
        "summary": summary,
        "photos": shared,
        "matting": kit,
        "variants": differ,
    }
    write_json(args.out, data)
    if args.sheet is not None:
        image = contact_sheet(sheet, f"leftovers > {config.still.max_leftovers} is rejected (red)", columns=8)
        cv2.imwrite(str(args.sheet), image[:, :, ::-1])
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
