"""Benchmark: the studio engine's picture, measured on what it puts out (issue 13, part 5).

Every input (benchmarks/picture_inputs.py: webcam-like clips made from the shared assets, the shared
videos and photos) runs through the product's live pieces, made by livecam.assembly from the config
(`open_tracker`, `open_segmenter`, `build_renderer`; studio engine, output 1280x720, every default on),
called as the live loop (livecam/live/loop.py) calls them: the product's segmenter model on the square
around the face predicted from earlier frames (`engine.matte.segment_person`; the whole frame while there
is none), the renderer given that face (else the frame's own), frame after frame at the input's frame
rate in time stamps (no frame dropped, so the run is repeatable on a busy machine). CPU ms per frame =
process CPU time spent in tracking, segmentation and rendering / frames; wall ms likewise.

Measured on the output with MediaPipe afresh (face landmarker and person segmenter on the output frame;
definitions in benchmarks/picture_measure.py): face height, headroom, eye line, centring, head cut,
key-light ratio, clipped and brightness of the face's skin, each beside the same on the input; medians and
fractions of frames within the issue's targets per input and pooled (`summary`).

Mattes: the matting kit (../shared/assets/matting) stills and videos through the same pieces with
MATTE_SET (saturated green backdrop, no reframing, no relight or skin: output = input over green), the
alpha recovered by the kit's composite mode and scored by its score_matte.py; the raw segmenter (the
kit's baseline method: the landscape model on the whole frame) scored beside it in the same run, per
size, per background and per video, with the README's baseline figures alongside.

    python -m benchmarks.picture_quality [--out benchmarks/results/picture_quality.json]
        [--sheet /tmp/picture_quality_sheet.png] [--every 2] [--only NAME] [--set KEY=VALUE ...]
        [--matte-set KEY=VALUE ...] [--no-matte] [--matte-only TEXT] [--per-frame] [--quick]
        [--before benchmarks/results/picture_quality_before.json]

The contact sheet (input | output, middle frame, one row per input, matte rows over green) goes to
--sheet, never into the repository: it shows the MEDS-II photos, which are for testing only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from benchmarks import picture_measure as pm
from benchmarks.live_loop import machine, versions
from benchmarks.picture_inputs import SIZES, Input, make_inputs, read_video, scratch_dir
from engine.matte import segment_person
from engine.types import Face, Landmarks, RGBImage
from livecam.assembly import build_renderer, open_segmenter, open_tracker, resolve_model
from livecam.config import Config, load_config
from livecam.errors import LivecamError
from livecam.live.stats import Stats, write_json
from livecam.photos import read_image
from models.face_landmarker import ImageFaceLandmarker, MediaPipeFaceTracker
from models.registry import FACE_LANDMARKER
from models.segmenter import MediaPipeSegmenter
from tests.media import assets_dir

MATTE_BACKDROP = "#00ff00"
MATTE_SET = ("background.mode=color", f"background.color={MATTE_BACKDROP}", "framing.enabled=false",
             "relight.enabled=false", "skin.enabled=false")
"""The matte runs: the person over saturated green, not reframed, not relit, so the output is
`a * input + (1 - a) * green` and the kit's composite mode recovers the alpha `a`."""
MATTE_REPEATS = 4
"""Each matte still is shown this many times, 500 ms apart, and the last output scored (a settled matte)."""
SHEET_MATTE_SUBJECT = "S008-02"
FLICKER_TOLERANCE = 0.02
ROW_HEIGHT = 180


class Pipeline:
    """The product's tracker and segmenter (kept across inputs, reset between them) driving a renderer."""

    def __init__(self, config: Config) -> None:
        self.tracker: MediaPipeFaceTracker = open_tracker(config)
        self.segmenter: MediaPipeSegmenter = open_segmenter(config)
        self._clock_ms = 0.0

    def run(self, config: Config, frames: Iterable[RGBImage], step_ms: float,
            on_frame: Callable[[int, RGBImage, RGBImage], None]) -> dict[str, Any]:
        """Render `frames` with a fresh renderer; `on_frame(index, input, output)` sees each (not timed)."""
        stats = Stats()
        renderer = build_renderer(config, stats)
        renderer.prepare()
        self.tracker.reset()
        cpu_s = wall_s = 0.0
        count = 0
        start_ms = self._clock_ms + 1000.0
        try:
            for index, image in enumerate(frames):
                t_ms = int(start_ms + index * step_ms)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                face: Face | None = self.tracker.predict(t_ms) if config.tracking.predict else None
                if face is not None and face.frame_size != (image.shape[1], image.shape[0]):
                    face = None
                with stats.section("track"):
                    tracked = self.tracker.track(image, t_ms)
                mask = None
                if renderer.needs_mask:
                    with stats.section("segment"):
                        # As the live loop: on the square around the predicted face (whole frame without one).
                        mask = segment_person(self.segmenter, image, t_ms, face.landmarks if face else None)
                with stats.section("render"):
                    out = renderer.render(image, face or tracked, mask, t_ms)
                cpu_s += time.process_time() - cpu0
                wall_s += time.perf_counter() - wall0
                count += 1
                self._clock_ms = t_ms
                on_frame(index, image, out)
        finally:
            renderer.close()
        sections = {k: {"ms_p50": v["ms_p50"], "ms_mean": v["ms_mean"]} for k, v in stats.summary()["sections"].items()}
        return {"frames": count, "cpu_ms_per_frame": round(1000.0 * cpu_s / max(count, 1), 2),
                "wall_ms_per_frame": round(1000.0 * wall_s / max(count, 1), 2), "sections": sections}

    def close(self) -> None:
        self.tracker.close()
        self.segmenter.close()


class Meter:
    """MediaPipe afresh on any frame: the largest face's landmarks, the person mask around the head (the
    square selfie model on a square around it) and the raw segmenter's mask of the whole frame (the kit's
    baseline: `raw_model`, the landscape model)."""

    def __init__(self, config: Config, head_model: Path, raw_model: Path) -> None:
        self.landmarker = ImageFaceLandmarker(resolve_model(config, FACE_LANDMARKER), max_faces=1)
        self.segmenter = MediaPipeSegmenter(raw_model)
        self.head_segmenter = MediaPipeSegmenter(head_model)
        self._clock_ms = 0

    def _tick(self) -> int:
        self._clock_ms += 40  # VIDEO mode, but the selfie segmenters keep no state between frames
        return self._clock_ms

    def mask(self, image: RGBImage) -> np.ndarray:
        """The kit's baseline segmenter on the whole frame, as it is (the raw baseline)."""
        return self.segmenter.segment(image, self._tick())

    def view(self, image: RGBImage, key_side: str) -> pm.FaceView | None:
        faces = self.landmarker.detect(image)
        if not faces:
            return None
        crop, origin = pm.head_crop(image, faces[0])
        mask = pm.uncrop(self.head_segmenter.segment(crop, self._tick()), origin, image.shape)
        return pm.measure(image, faces[0], mask, key_side)

    def detect(self, image: RGBImage) -> list[Landmarks]:
        return self.landmarker.detect(image)

    def close(self) -> None:
        self.landmarker.close()
        self.segmenter.close()
        self.head_segmenter.close()


# --- the picture --------------------------------------------------------------------------------------------------

def run_input(pipeline: Pipeline, meter: Meter, config: Config, item: Input, every: int, per_frame: bool = False
              ) -> tuple[dict[str, Any], tuple[RGBImage, RGBImage] | None, list[pm.FrameRecord]]:
    """Render one input, measure its frames; returns its JSON entry, the middle (input, output) pair and
    the frame records."""
    records: list[pm.FrameRecord] = []
    middle = item.count - 1 if item.still else (item.measure_from + item.count) // 2
    pair: list[tuple[RGBImage, RGBImage]] = []
    key_side = config.relight.key_light

    def on_frame(index: int, image: RGBImage, out: RGBImage) -> None:
        if (index >= item.measure_from and (index - item.measure_from) % every == 0) or index == item.count - 1:
            records.append(pm.FrameRecord(index, meter.view(image, key_side), meter.view(out, key_side)))
        if index == middle:
            pair.append((image, out))

    timing = pipeline.run(config, item.load(), item.step_ms, on_frame)
    entry = {"group": item.group, "source": item.source, "size": list(item.size), "frames": timing["frames"],
             **pm.summarise(records), "cpu_ms_per_frame": timing["cpu_ms_per_frame"],
             "wall_ms_per_frame": timing["wall_ms_per_frame"], "sections": timing["sections"]}
    if per_frame:
        entry["per_frame"] = [r.as_json() for r in records]
    return entry, (pair[0] if pair else None), records


# --- mattes -------------------------------------------------------------------------------------------------------

def matte_configs(overrides: list[str], matte_set: list[str]) -> dict[str, Config]:
    return {f"{w}x{h}": load_config(None, [*overrides, *MATTE_SET, *matte_set, f"output.width={w}",
                                           f"output.height={h}"]) for w, h in SIZES}


def run_matte(pipeline: Pipeline, meter: Meter, configs: dict[str, Config], kit: Path, quick: bool,
              sheet: list[tuple[str, RGBImage, RGBImage]], only: str = "") -> dict[str, Any]:
    """The product's matte and the raw segmenter's, scored by the kit on its stills and videos (those whose
    name holds `only`)."""
    scorer = pm.load_scorer(kit)
    stills: dict[str, dict[str, list[dict[str, Any]]]] = {}
    cpu: dict[str, list[float]] = {}
    images = sorted((kit / "images").glob("*.jpg"))
    if quick:
        images = [p for p in images if p.stem.startswith("S008-01__sh_stripes")]
    images = [p for p in images if only in p.stem]
    for path in images:
        stem = path.stem
        size = stem.rsplit("_", 1)[1]
        background = stem.split("__", 1)[1].rsplit("_", 1)[0]
        image = read_image(path)
        gt = scorer.read_alpha(str(kit / "alpha" / f"{stem}.png"))
        outs: list[RGBImage] = []

        def keep(_index: int, _image: RGBImage, out: RGBImage, outs: list[RGBImage] = outs) -> None:
            outs.append(out)

        timing = pipeline.run(configs[size], [image] * MATTE_REPEATS, 500.0, keep)
        cpu.setdefault(f"stills_{size}", []).append(timing["cpu_ms_per_frame"])
        alpha, unresolved, residual = pm.alpha_from_output(scorer, outs[-1], image, MATTE_BACKDROP)
        product = scorer.metrics(alpha, gt) | {"unresolved_frac": unresolved, "composite_residual": residual}
        raw = scorer.metrics(meter.mask(image), gt)
        entry = stills.setdefault(size, {}).setdefault(background, [])
        entry.append({"image": stem, "product": product, "raw": raw})
        if size == "1280x720" and stem.startswith(SHEET_MATTE_SUBJECT):
            sheet.append((f"matte {stem}: SAD {product['sad']:.1f} (raw {raw['sad']:.1f}) leakage "
                          f"{product['leakage']:.3f} (raw {raw['leakage']:.3f})", image, outs[-1]))
    result: dict[str, Any] = {"backdrop": MATTE_BACKDROP, "set": list(MATTE_SET), "repeats": MATTE_REPEATS,
                              "stills": {}, "videos": {}}
    for size, by_background in stills.items():
        everything = [e for items in by_background.values() for e in items]
        result["stills"][size] = {
            "product": pm.mean_scores([e["product"] for e in everything]),
            "raw_segmenter": pm.mean_scores([e["raw"] for e in everything]),
            "readme_baseline": pm.README_BASELINE.get(f"stills_{size}"),
            "cpu_ms_per_frame": round(float(np.median(cpu[f"stills_{size}"])), 2),
            "per_background": {bg: {"product": pm.mean_scores([e["product"] for e in items]),
                                    "raw_segmenter": pm.mean_scores([e["raw"] for e in items])}
                               for bg, items in sorted(by_background.items())},
        }
    for video in [v for v in sorted((kit / "video").glob("*.mp4")) if only in v.stem]:
        result["videos"][video.stem] = score_video(pipeline, meter, configs["1280x720"], scorer, video, quick)
    return result


def score_video(pipeline: Pipeline, meter: Meter, config: Config, scorer: Any, video: Path, quick: bool
                ) -> dict[str, Any]:
    """One kit video through the product (and the raw segmenter), every frame scored, plus flicker."""
    gt_all = np.load(video.with_name(f"{video.stem}_alpha.npz"))["alpha"]
    frames = read_video(video, 4 if quick else len(gt_all))
    scores: dict[str, list[dict[str, float]]] = {"product": [], "raw_segmenter": []}
    previous: dict[str, Any] = {}

    def score(kind: str, index: int, pred: np.ndarray) -> None:
        gt = gt_all[index].astype(np.float64) / 255.0
        item = scorer.metrics(pred, gt)
        if kind in previous:
            item["flicker"] = pm.flicker(scorer, pred, previous[kind][0], gt, previous[kind][1])
        previous[kind] = (pred, gt)
        scores[kind].append(item)

    def on_frame(index: int, image: RGBImage, out: RGBImage) -> None:
        alpha, unresolved, residual = pm.alpha_from_output(scorer, out, image, MATTE_BACKDROP)
        score("product", index, alpha)
        scores["product"][-1] |= {"unresolved_frac": unresolved, "composite_residual": residual}

    timing = pipeline.run(config, frames, 1000.0 / 30.0, on_frame)
    for index, image in enumerate(frames):
        score("raw_segmenter", index, meter.mask(image).astype(np.float64))
    result: dict[str, Any] = {}
    for kind, items in scores.items():
        with_flicker = [i["flicker"] for i in items if "flicker" in i]
        result[kind] = pm.mean_scores([{k: v for k, v in i.items() if k != "flicker"} for i in items])
        result[kind]["flicker"] = round(float(np.mean(with_flicker)), 5) if with_flicker else None
    result["readme_baseline"] = pm.README_BASELINE.get(video.stem)
    result["cpu_ms_per_frame"] = timing["cpu_ms_per_frame"]
    return result


# --- summary, sheet, main -----------------------------------------------------------------------------------------

def summary(inputs: dict[str, Any], pooled: dict[str, list[pm.FrameRecord]], matte: dict[str, Any] | None,
            before: dict[str, Any] | None) -> dict[str, Any]:
    """Pooled figures per group, the matte against the raw segmenter, and the issue's checks (met when
    at least 95% of the frames are within a target; the matte when at most half the raw segmenter's; edge
    flicker when at most FLICKER_TOLERANCE above the `before` run's)."""
    groups = {group: pm.summarise(records) for group, records in pooled.items()}
    cpu = {group: round(float(np.median([v["cpu_ms_per_frame"] for v in inputs.values() if v["group"] == group])), 2)
           for group in pooled}
    checks: dict[str, Any] = {}
    for group, figures in groups.items():
        for key in ("headroom_where_whole_head", "face_height", "eyes_centred", "key_ratio", "no_new_clipping"):
            value = figures["within_targets"][key]
            checks[f"{group}s_{key}_frac"] = {"value": value, "met": value is not None and value >= 0.95}
    if matte:
        for size, s in matte["stills"].items():
            checks.update(_matte_checks(f"stills_{size}", s["product"], s["raw_segmenter"]))
        for name, v in matte["videos"].items():
            checks.update(_matte_checks(name, v["product"], v["raw_segmenter"]))
            then = ((before or {}).get("matte") or {}).get("videos", {}).get(name)
            if then is not None and v["product"]["flicker"] is not None and then["product"]["flicker"]:
                ratio = v["product"]["flicker"] / then["product"]["flicker"]
                checks[f"{name}_flicker_vs_before"] = {"value": round(ratio, 3), "met": ratio <= 1 + FLICKER_TOLERANCE}
    return {"groups": groups, "cpu_ms_per_frame_median": cpu, "checks": checks}


def _matte_checks(name: str, product: dict[str, float], raw: dict[str, float]) -> dict[str, Any]:
    sad = product["sad"] / max(raw["sad"], 1e-9)
    leak = (product["leakage"] - product["floor"]) / max(raw["leakage"] - raw["floor"], 1e-9)
    return {f"{name}_sad_vs_raw": {"value": round(sad, 3), "met": sad <= 0.5},
            f"{name}_leakage_above_floor_vs_raw": {"value": round(leak, 3), "met": leak <= 0.5}}


def label(name: str, entry: dict[str, Any]) -> str:
    m, w = entry["medians"], entry["within_targets"]

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return (f"{name}: face {f(m['face_height'], '.2f')} (in {f(m['face_height_in'], '.2f')})  head top "
            f"{f(m['headroom'], '.1%')}  eyes {f(m['eye_line'], '.2f')}  off {f(m['centring'], '.2f')}  cut "
            f"{f(entry['head_cut_frac'], '.0%')}  key {f(m['key_ratio'], '.2f')}  clip {f(m['clipped_pct_out'], '.1f')}"
            f"/{f(m['clipped_pct_in'], '.1f')}%  bright {f(m['brightness_out'], '.2f')}/{f(m['brightness_in'], '.2f')}"
            f"  cpu {entry['cpu_ms_per_frame']:.0f} ms  ok-head {f(w['headroom'], '.0%')}")


def contact_sheet(rows: list[tuple[str, RGBImage, RGBImage]], path: Path) -> None:
    """input | output per row (scaled to ROW_HEIGHT), each row under its label."""
    strip = 22
    scaled = [(text, _scale(a), _scale(b)) for text, a, b in rows]
    width_in = max(a.shape[1] for _, a, _ in scaled)
    width = max(width_in + 8 + max(b.shape[1] for _, _, b in scaled), 1100)
    sheet = np.full((len(rows) * (ROW_HEIGHT + strip + 6), width, 3), 255, np.uint8)
    y = 0
    for text, a, b in scaled:
        cv2.putText(sheet, text, (4, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        y += strip
        sheet[y:y + a.shape[0], :a.shape[1]] = a
        sheet[y:y + b.shape[0], width_in + 8:width_in + 8 + b.shape[1]] = b
        y += ROW_HEIGHT + 6
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet[:, :, ::-1])


def _scale(image: RGBImage) -> RGBImage:
    h, w = image.shape[:2]
    return cast(RGBImage, cv2.resize(image, (max(1, round(w * ROW_HEIGHT / h)), ROW_HEIGHT),
                                     interpolation=cv2.INTER_AREA))


def git_commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return run.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/picture_quality.json"))
    parser.add_argument("--sheet", type=Path, default=Path("/tmp/picture_quality_sheet.png"))
    parser.add_argument("--every", type=int, default=2, help="measure every Nth frame of a clip (default 2)")
    parser.add_argument("--only", default="", help="only the inputs whose name holds this text")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, all runs")
    parser.add_argument("--matte-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the matte runs only (after MATTE_SET)")
    parser.add_argument("--no-matte", action="store_true", help="skip the matting kit")
    parser.add_argument("--matte-only", metavar="TEXT", help="only the matting kit's stills and videos whose name "
                        "holds TEXT ('' for all of them), no other input: e.g. 'video_01', 'street_people_1280'")
    parser.add_argument("--before", type=Path, help="an earlier run's JSON (e.g. picture_quality_before.json): "
                        "edge flicker is checked against it")
    parser.add_argument("--per-frame", action="store_true", help="also write every measured frame's figures")
    parser.add_argument("--quick", action="store_true", help="a few frames of a few inputs (tests)")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be 1 or more")
    before = None
    if args.before is not None:
        try:
            before = json.loads(args.before.read_text())
        except (OSError, ValueError) as e:
            print(f"picture_quality: --before {args.before}: cannot read it as JSON ({e})", file=sys.stderr)
            return 2
    assets = assets_dir()
    kit = assets / "matting"
    model_files = (assets / "models/face_landmarker/face_landmarker.task",
                   assets / "models/segmentation/selfie_segmentation_landscape.tflite", kit / "score_matte.py",
                   assets / "models/segmentation/selfie_segmentation.tflite")
    missing = [str(p) for p in model_files if not p.is_file()]
    if missing:
        print(f"picture_quality: {missing[0]} is missing (the benchmark needs ../shared/assets beside the "
              "checkout, or LIVECAM_ASSETS pointing at it)", file=sys.stderr)
        return 2
    overrides = ["engine.kind=studio", "models.download=false", f"models.face_landmarker={model_files[0]}",
                 f"models.segmenter={model_files[3]}", "output.width=1280", "output.height=720", *args.set]
    try:
        config = load_config(None, overrides)
        matte_cfgs = matte_configs(overrides, args.matte_set)
    except LivecamError as e:
        print(f"picture_quality: {e}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    pipeline, meter = Pipeline(config), Meter(config, model_files[3], model_files[1])
    inputs: dict[str, Any] = {}
    pooled: dict[str, list[pm.FrameRecord]] = {}
    rows: list[tuple[str, RGBImage, RGBImage]] = []
    matte_rows: list[tuple[str, RGBImage, RGBImage]] = []
    matte = None
    try:
        with scratch_dir() as scratch:
            items = [] if args.matte_only is not None else make_inputs(assets, meter.detect, Path(scratch),
                                                                       args.quick, args.only)
            for item in items:
                entry, pair, records = run_input(pipeline, meter, config, item, args.every, args.per_frame)
                inputs[item.name] = entry
                pooled.setdefault(item.group, []).extend(records)
                if pair is not None:
                    rows.append((label(item.name, entry), *pair))
                print(label(item.name, entry), flush=True)
        if not args.no_matte:
            matte = run_matte(pipeline, meter, matte_cfgs, kit, args.quick, matte_rows, args.matte_only or "")
    finally:
        pipeline.close()
        meter.close()
    result = {
        "benchmark": "picture_quality",
        "engine": "studio",
        "code": git_commit(),
        "machine": machine(),
        "versions": versions(),
        "quick": args.quick,
        "every": args.every,
        "seconds": round(time.perf_counter() - started, 1),
        "targets": pm.TARGETS,
        "definitions": {
            "face_height": "forehead (landmark 10) to chin (152) / output height",
            "headroom": "top row of the head (person mask, face's middle columns) / output height",
            "eye_line": "eye corners' mean y / height", "centring": "|eye corners' mean x / width - 0.5|",
            "head_cut_frac": "frames whose output head touches the top edge, of those where the input showed "
                             "the whole head",
            "key_ratio": "(key side / other side mean skin luma) on the output over the same on the input: the "
                         "balance the product adds; key side = relight.key_light as the viewer sees it",
            "clipped_pct": "% of face skin pixels with any channel at 255",
            "brightness": "mean face skin luma, 0..1",
            "cpu_ms_per_frame": "process CPU time in tracking + segmentation + rendering / frames (serial)",
            "matte": "alpha recovered from the output over green by score_matte's composite mode; raw_segmenter "
                     "= the kit's baseline method (landscape selfie segmenter confidence) in this run",
        },
        "config": dataclasses.asdict(config),
        "inputs": inputs,
        "matte": matte,
        "before": str(args.before) if args.before else None,
        "summary": summary(inputs, pooled, matte, before),
    }
    write_json(args.out, result)
    if rows or matte_rows:
        contact_sheet(rows + matte_rows, args.sheet)
    for name, check in result["summary"]["checks"].items():
        print(f"  {name:<58} {check['value']!s:>8}  {'met' if check['met'] else 'NOT met'}")
    print(f"wrote {args.out} and {args.sheet} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
