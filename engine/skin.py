"""Skin smoothing: an edge-preserving blur of the face's skin, sparing eyes, brows and lips.

The index lists are MediaPipe face-mesh landmark indices (from `FaceLandmarksConnections`), written out
as closed polygons in drawing order so the engine needs no mediapipe import. "Left"/"right" are the
subject's, as in MediaPipe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from engine.framing import face_height_px
from engine.types import Landmarks, Mask, RGBImage
from engine.validation import check_range

FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYEBROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
RIGHT_EYEBROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
"""Outer lip contour."""
FEATURES = (LEFT_EYE, RIGHT_EYE, LEFT_EYEBROW, RIGHT_EYEBROW, LIPS)

# Sizes as fractions of the face height (forehead 10 to chin 152), so they scale with the face.
_OVAL_SHRINK = 0.96  # pull the oval's edge in, so the feather does not reach hair or background
_FEATURE_MARGIN = 0.06  # stroke width around eyes/brows/lips (grows each by half): they stay sharp
_FEATHER = 0.015  # Gaussian sigma of the mask's edge
_ROI_PAD = 0.05
_SPATIAL_SIGMA_PX = 2.0  # bilateral spatial sigma at the working resolution
_WORK_FACE_PX = 80.0  # face height at which the smoothing runs
_COLOR_SIGMA = 22.0  # bilateral range sigma in 8-bit levels: blemishes yes, edges no


@dataclass(frozen=True)
class SkinSettings:
    """Skin smoothing on/off and strength."""

    enabled: bool = True
    strength: float = 0.35
    """0 = off, 1 = the fully smoothed skin."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled = {self.enabled!r}: must be true or false")
        check_range("strength", self.strength, 0.0, 1.0)


def fill_polygons(
    canvas: npt.NDArray[np.uint8],
    polygons: Sequence[npt.NDArray[np.floating]],
    value: int,
    outline_px: float = 0.0,
) -> None:
    """Fill (in place) closed polygons given in edge-convention pixel coordinates (pixel i spans [i, i+1])
    into a uint8 canvas, with sub-pixel precision; `outline_px` > 0 also grows them by a stroke that wide."""
    # OpenCV puts pixel centres at integers: shift by half a pixel, keep 4 fractional bits.
    fixed = [np.round((np.asarray(p, dtype=np.float64) - 0.5) * 16).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, fixed, value, lineType=cv2.LINE_8, shift=4)
    if outline_px > 0.0:
        thickness = max(1, round(outline_px))
        cv2.polylines(canvas, fixed, True, value, thickness=thickness, lineType=cv2.LINE_8, shift=4)


def _region_mask(size: tuple[int, int], points: npt.NDArray[np.float64], face_px: float) -> Mask:
    """The feathered skin region (float32 HxW in [0, 1]) for `size` (width, height); `points` are
    landmarks already in this canvas's pixels and `face_px` the face height in those pixels."""
    canvas = np.zeros((size[1], size[0]), np.uint8)
    oval = points[list(FACE_OVAL)]
    centre = oval.mean(axis=0)
    fill_polygons(canvas, [centre + _OVAL_SHRINK * (oval - centre)], 255)
    fill_polygons(canvas, [points[list(f)] for f in FEATURES], 0, outline_px=_FEATURE_MARGIN * face_px)
    sigma = max(_FEATHER * face_px, 0.5)
    mask = cv2.GaussianBlur(canvas, (0, 0), sigma)
    return mask.astype(np.float32) * np.float32(1.0 / 255.0)


def skin_mask(shape: tuple[int, ...], landmarks: Landmarks) -> Mask:
    """The face's skin (face oval minus eyes, brows and lips), feathered: float32 HxW in [0, 1] for an
    image of `shape` (H, W[, C]); `landmarks` (478, 2+) in that image's pixels."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    return _region_mask((shape[1], shape[0]), points, face_height_px(landmarks))


def face_roi(shape: tuple[int, ...], landmarks: Landmarks) -> tuple[int, int, int, int] | None:
    """The face oval's bounding box, padded, clipped to an image of `shape`: (x0, y0, x1, y1) or None."""
    oval = np.asarray(landmarks, dtype=np.float64)[list(FACE_OVAL), :2]
    pad = _ROI_PAD * face_height_px(landmarks)
    x0, y0 = (max(math.floor(v - pad), 0) for v in oval.min(axis=0))
    x1 = min(math.ceil(oval[:, 0].max() + pad), shape[1])
    y1 = min(math.ceil(oval[:, 1].max() + pad), shape[0])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return x0, y0, x1, y1


def smooth_skin(image: RGBImage, landmarks: Landmarks, strength: float, inplace: bool = False) -> RGBImage:
    """Smooth the skin of the face in `image` (RGB uint8 HxWx3; `landmarks` (478, 2+) in its pixels).

    Works only inside the face's padded bounding box: a bilateral filter at reduced resolution, blended
    into the original by the skin mask times `strength` (0..1). Pixels outside that box are unchanged.
    Returns a new image, or `image` itself written over with `inplace` (a frame's copy is not free).
    """
    out = image if inplace else image.copy()
    roi = face_roi(image.shape, landmarks)
    if strength <= 0.0 or roi is None:
        return out
    x0, y0, x1, y1 = roi
    patch = image[y0:y1, x0:x1]
    pw, ph = x1 - x0, y1 - y0
    face_px = face_height_px(landmarks)
    # Work at the size where the face is about _WORK_FACE_PX tall: the look is the same for any face
    # size, the cost stays flat however large the face is, and what is smoothed away (blemishes,
    # pores) is the detail this downscale removes anyway. Smaller faces are worked at their own size.
    scale = min(1.0, _WORK_FACE_PX / face_px)
    resample = scale < 0.9
    work_size = (max(8, round(pw * scale)), max(8, round(ph * scale))) if resample else (pw, ph)
    small = cv2.resize(patch, work_size, interpolation=cv2.INTER_AREA) if resample else patch
    sx, sy = work_size[0] / pw, work_size[1] / ph
    # d = 5 is OpenCV's fast bilateral path (7 costs ~4x more); sigma_space is set to match it.
    smooth = cv2.bilateralFilter(small, 5, _COLOR_SIGMA, _SPATIAL_SIGMA_PX)
    smooth_full = cv2.resize(smooth, (pw, ph), interpolation=cv2.INTER_LINEAR) if resample else smooth

    # The mask is smooth, so it is drawn at the working resolution too and upscaled.
    points = (np.asarray(landmarks, dtype=np.float64)[:, :2] - [x0, y0]) * [sx, sy]
    mask_small = _region_mask(work_size, points, face_px * sy) * np.float32(strength)
    weight = cv2.resize(mask_small, (pw, ph), interpolation=cv2.INTER_LINEAR) if resample else mask_small
    out[y0:y1, x0:x1] = cv2.blendLinear(smooth_full, patch, weight, 1.0 - weight)
    return out
