"""What the picture-quality benchmark measures on a frame, and how it pools frames into figures.

Per frame, on the product's OUTPUT (and the same on its input, for comparison), from MediaPipe face
landmarks found afresh on that frame and a person mask of that frame:

- face height: forehead (landmark 10, at the hairline) to chin (152), fraction of the frame height;
- eye line: the eye corners' mean height, fraction from the top; centring: |eyes' x / width - 0.5|;
- head top: the highest person pixel above the face (the mask's part that holds the nose, in the middle
  60% of the face's width), fraction of the height from the top: the headroom; `head_cut` when it is
  within CUT_FRAC of the top edge. The mask is the square selfie segmenter's on a square around the head
  (`head_crop`): on the matting kit's portraits it finds the hair top within 2 px of the ground truth over
  a plain backdrop and within 6 px over its busy rooms (the landscape model on the whole frame: 22 px);
- key-light ratio: mean luma of the face's skin on the key side (as the viewer sees it) over the other
  side, split along the forehead-chin line; the skin is the face oval shrunk 10% minus eyes, brows, lips;
- clipped: % of skin pixels with any channel at 255; brightness: mean skin luma, 0..1.

`summarise` turns frame records into medians and the fraction of frames within the issue's targets.
Matte scores use the matting kit's own scorer (`score_matte.py`, loaded from the kit), so its numbers
compare with the kit README's baseline.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.skin import FACE_OVAL, FEATURES, fill_polygons
from engine.types import Landmarks, Mask, RGBImage

FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
EYE_CORNERS = (33, 133, 362, 263)
LUMA = np.array([0.299, 0.587, 0.114], np.float64)
_SKIN_SHRINK = 0.9
_FEATURE_MARGIN = 0.06  # of the face height: the stroke that keeps eyes, brows and lips out of the skin
_HEAD_BAND = 0.3  # half-width of the columns searched for the head top, fraction of the face's width
CUT_FRAC = 0.012
"""A head top this close to the top edge (fraction of the height) counts as cut by it: with the hair cut
off 3-40 px into it, the segmenter puts the top 0-7 px below the edge of a 720 px frame (kit portraits)."""
HEAD_CROP = 2.8  # side of the square segmented around the head, in face heights

TARGETS: dict[str, Any] = {
    "face_height": [0.28, 0.35],
    "headroom": [0.05, 0.12],
    "centring_max": 0.05,
    "key_ratio_min": 1.2,
    "new_clipping_max_pp": 0.5,
    "headroom_where_whole_head_min_frac": 0.95,
}
"""Issue 13's targets for 16:9 video: face 28-35% of the height, hair top 5-12% below the edge, eyes within
5% of the width of the centre, the key side 20% brighter than the other (against the input's balance), at
most 0.5 percentage points more clipped skin than the input, 5-12% headroom in >= 95% of the frames where
the camera saw the whole head."""


@dataclass(frozen=True)
class FaceView:
    """One face in one frame, every figure a fraction of the frame unless named otherwise."""

    face_height: float
    eye_line: float
    centring: float
    head_top: float
    head_cut: bool
    key_ratio: float
    clipped_pct: float
    brightness: float
    face_inside: bool = True
    """The whole face oval lies inside the frame: where the picture cuts the face, its two sides (the key
    ratio) cannot be compared."""


def skin_pixels(shape: tuple[int, ...], landmarks: Landmarks) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Rows and columns of the face's skin: the oval shrunk toward its centre, minus eyes, brows and lips."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    face_px = float(np.hypot(*(points[CHIN] - points[FOREHEAD])))
    canvas = np.zeros(shape[:2], np.uint8)
    oval = points[list(FACE_OVAL)]
    centre = oval.mean(axis=0)
    fill_polygons(canvas, [centre + _SKIN_SHRINK * (oval - centre)], 255)
    fill_polygons(canvas, [points[list(f)] for f in FEATURES], 0, outline_px=_FEATURE_MARGIN * face_px)
    rows, cols = np.nonzero(canvas)
    return rows, cols


def head_crop(image: RGBImage, landmarks: Landmarks) -> tuple[RGBImage, tuple[int, int]]:
    """A square of the frame around the head, HEAD_CROP face heights wide (the frame's edge pixels
    repeated where it leaves the frame), and its top-left corner in the frame."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    side = max(int(HEAD_CROP * float(np.hypot(*(points[CHIN] - points[FOREHEAD])))), 16)
    centre = 0.5 * (points[CHIN] + points[FOREHEAD])
    x0, y0 = int(centre[0] - side / 2), int(centre[1] - 0.6 * side)
    height, width = image.shape[:2]
    top, bottom = max(0, -y0), max(0, y0 + side - height)
    left, right = max(0, -x0), max(0, x0 + side - width)
    inside = image[max(y0, 0):min(y0 + side, height), max(x0, 0):min(x0 + side, width)]
    if inside.size == 0:
        return np.zeros((side, side, 3), np.uint8), (x0, y0)
    crop = cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return cast(RGBImage, np.ascontiguousarray(crop)), (x0, y0)


def uncrop(mask: Mask, origin: tuple[int, int], shape: tuple[int, ...]) -> Mask:
    """A crop's mask placed back in a frame of `shape` (0 elsewhere)."""
    full = np.zeros(shape[:2], np.float32)
    x0, y0 = origin
    side = mask.shape[0]
    ys, xs = slice(max(y0, 0), min(y0 + side, shape[0])), slice(max(x0, 0), min(x0 + side, shape[1]))
    full[ys, xs] = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return full


def head_top(mask: Mask, landmarks: Landmarks) -> tuple[int, bool]:
    """The top row of the head (person pixels connected to the face, above it, in the face's middle
    columns) and whether the top edge cuts it. Falls back to the forehead landmark without a mask there."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    height, width = mask.shape
    person = (mask >= 0.5).astype(np.uint8)
    oval_x = points[list(FACE_OVAL), 0]
    centre, half = 0.5 * (oval_x.min() + oval_x.max()), _HEAD_BAND * float(np.ptp(oval_x))
    c0, c1 = int(np.clip(centre - half, 0, width - 1)), int(np.clip(centre + half + 1, 1, width))
    _, labels = cv2.connectedComponents(person, connectivity=8)
    nx, ny = (int(np.clip(v, 0, lim - 1)) for v, lim in zip(points[NOSE_TIP], (width, height), strict=True))
    label = labels[ny, nx]
    band = labels[:, c0:c1] == label if label else person[:, c0:c1].astype(bool)
    rows = np.flatnonzero(band.any(axis=1))
    top = int(rows[0]) if rows.size else max(int(points[FOREHEAD, 1]), 0)
    return top, top <= max(1, round(CUT_FRAC * height))


def measure(image: RGBImage, landmarks: Landmarks, mask: Mask, key_side: str) -> FaceView:
    """The figures of one face (`landmarks` in `image`'s pixels) in one frame; `mask` its person mask."""
    height, width = image.shape[:2]
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    eyes = points[list(EYE_CORNERS)].mean(axis=0)
    oval = points[list(FACE_OVAL)]
    top, cut = head_top(mask, landmarks)
    rows, cols = skin_pixels(image.shape, landmarks)
    pixels = image[rows, cols].astype(np.float64)
    luma = pixels @ LUMA
    a, b = points[FOREHEAD], points[CHIN]
    # > 0: left of the line from forehead down to chin, as the viewer sees it (y grows downward).
    cross = (b[0] - a[0]) * (rows + 0.5 - a[1]) - (b[1] - a[1]) * (cols + 0.5 - a[0])
    key = cross < 0 if key_side == "right" else cross > 0
    ratio = float("nan")
    if key.any() and (~key).any():
        ratio = float(luma[key].mean() / max(luma[~key].mean(), 1e-3))
    return FaceView(
        face_height=float(np.hypot(*(b - a))) / height,
        eye_line=float(eyes[1]) / height,
        centring=abs(float(eyes[0]) / width - 0.5),
        head_top=top / height,
        head_cut=cut,
        key_ratio=ratio,
        clipped_pct=float((image[rows, cols] == 255).any(axis=1).mean() * 100.0) if rows.size else float("nan"),
        brightness=float(luma.mean() / 255.0) if rows.size else float("nan"),
        face_inside=bool((oval >= 0.0).all() and (oval[:, 0] <= width).all() and (oval[:, 1] <= height).all()),
    )


def whole_head(view: FaceView | None) -> bool:
    """Whether the camera saw the whole head: a face, and its top below the frame's top edge."""
    return view is not None and not view.head_cut


@dataclass(frozen=True)
class FrameRecord:
    """The input's and the output's figures for one frame (None where no face was found)."""

    index: int
    inp: FaceView | None
    out: FaceView | None

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "in": asdict(self.inp) if self.inp else None,
                "out": asdict(self.out) if self.out else None}


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return round(float(np.median(finite)), 4) if finite else None


def _fraction(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summarise(records: list[FrameRecord]) -> dict[str, Any]:
    """Medians of every figure and the fraction of frames within each target."""
    outs = [r.out for r in records if r.out is not None]
    both = [(r.inp, r.out) for r in records if r.inp is not None and r.out is not None]
    whole = [r for r in records if whole_head(r.inp)]
    lo_face, hi_face = TARGETS["face_height"]
    lo_top, hi_top = TARGETS["headroom"]

    def framed(v: FaceView | None) -> bool:
        return v is not None and not v.head_cut and lo_top <= v.head_top <= hi_top

    # The light the product adds, on frames where the camera saw the whole face (else one side is missing).
    gains = [o.key_ratio / i.key_ratio for i, o in both if i.face_inside]
    medians = {
        "face_height": _median([v.face_height for v in outs]),
        "headroom": _median([v.head_top for v in outs]),
        "eye_line": _median([v.eye_line for v in outs]),
        "centring": _median([v.centring for v in outs]),
        "key_ratio": _median(gains),
        "key_ratio_out_abs": _median([v.key_ratio for v in outs]),
        "key_ratio_in_abs": _median([i.key_ratio for i, _ in both]),
        "clipped_pct_out": _median([v.clipped_pct for v in outs]),
        "clipped_pct_in": _median([i.clipped_pct for i, _ in both]),
        "new_clipped_pp": _median([o.clipped_pct - i.clipped_pct for i, o in both]),
        "brightness_out": _median([v.brightness for v in outs]),
        "brightness_in": _median([i.brightness for i, _ in both]),
        "face_height_in": _median([i.face_height for i, _ in both]),
        "headroom_in": _median([i.head_top for i, _ in both]),
    }
    within = {
        "face_height": _fraction([lo_face <= v.face_height <= hi_face for v in outs]),
        "headroom": _fraction([framed(v) for v in outs]),
        "headroom_where_whole_head": _fraction([framed(r.out) for r in whole]),
        "eyes_centred": _fraction([v.centring <= TARGETS["centring_max"] for v in outs]),
        "key_ratio": _fraction([g >= TARGETS["key_ratio_min"] for g in gains if np.isfinite(g)]),
        "no_new_clipping": _fraction([o.clipped_pct <= i.clipped_pct + TARGETS["new_clipping_max_pp"]
                                      for i, o in both]),
    }
    return {
        "frames_measured": len(records),
        "face_found_out": _fraction([r.out is not None for r in records]),
        "face_found_in": _fraction([r.inp is not None for r in records]),
        "whole_head_frames": len(whole),
        "head_cut_frac": _fraction([r.out.head_cut for r in whole if r.out is not None]),
        "medians": medians,
        "within_targets": within,
    }


# --- mattes -------------------------------------------------------------------------------------------------------

MATTE_KEYS = ("sad", "mse", "grad", "leakage", "missing", "floor")

README_BASELINE: dict[str, dict[str, float]] = {
    "stills_1280x720": {"sad": 47.76, "leakage": 0.0636, "missing": 0.0213, "floor": 0.0068},
    "stills_640x480": {"sad": 21.88, "leakage": 0.0592, "missing": 0.0137, "floor": 0.0051},
    "video_01_S001-04__sh_bookshelf": {"sad": 19.83, "leakage": 0.0170, "missing": 0.0982, "floor": 0.0095},
    "video_02_S008-02__sh_bright_window": {"sad": 10.53, "leakage": 0.0256, "missing": 0.0108, "floor": 0.0040},
}
"""The raw MediaPipe segmenter's figures as the matting kit's README gives them (mediapipe 1.2.3)."""


def load_scorer(kit: Path) -> ModuleType:
    """The matting kit's `score_matte.py` as a module (numpy + OpenCV only)."""
    path = kit / "score_matte.py"
    spec = importlib.util.spec_from_file_location("score_matte", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alpha_from_output(scorer: ModuleType, out: RGBImage, inp: RGBImage, backdrop_hex: str
                      ) -> tuple[npt.NDArray[np.float64], float, float]:
    """The alpha the product used, recovered by the kit's composite mode from `out = a*in + (1-a)*backdrop`;
    with the unresolved fraction and the mean residual (0..255) of that model: a large residual means the
    output is not the input over the backdrop pixel for pixel (it was reframed or relit)."""
    bgr_out, bgr_in = out[:, :, ::-1], inp[:, :, ::-1]
    backdrop = scorer.parse_backdrop(backdrop_hex, inp.shape[:2])
    alpha, unresolved = scorer.alpha_from_composite(bgr_out, bgr_in, backdrop)
    model = alpha[:, :, None] * bgr_in + (1.0 - alpha[:, :, None]) * backdrop
    residual = float(np.abs(bgr_out.astype(np.float64) - model).mean())
    return alpha, float(unresolved), residual


def flicker(scorer: ModuleType, pred: npt.NDArray[np.float64], pred_prev: npt.NDArray[np.float64],
            gt: npt.NDArray[np.float64], gt_prev: npt.NDArray[np.float64]) -> float:
    """Temporal error over the boundary band: mean |(pred_t - pred_t-1) - (gt_t - gt_t-1)| (0 = moves
    exactly as the truth does; edge flicker and lag both count)."""
    band = scorer.boundary_band(gt, 60)
    return float(np.abs((pred - pred_prev) - (gt - gt_prev))[band].mean())


def mean_scores(items: list[dict[str, float]]) -> dict[str, float]:
    """The mean of every score over images (the kit's convention), rounded."""
    if not items:
        return {}
    keys = [k for k in items[0] if isinstance(items[0][k], float)]
    return {k: round(float(np.mean([i[k] for i in items])), 5) for k in keys} | {"count": len(items)}
