"""Where a person goes in a picture: the face's measures, the top of the hair, a photographer's box around the
face, and the soft edge where a camera picture ends inside an output.

The live framing (`engine.framing`) and the stills' platform crops (`engine.crops`) place the person with
`compose`; the studio engine fades the person's alpha at the camera picture's edges with `fade_alpha`.
Coordinates as in `engine.framing`: continuous pixels, a frame spans [0, width] x [0, height].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar, cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.types import Affine, Landmarks, Mask

PixelT = TypeVar("PixelT", np.uint8, np.float32)

# MediaPipe face-mesh indices used for framing.
FOREHEAD = 10
CHIN = 152
NOSE_TIP = 1
EYE_CORNERS = (33, 133, 362, 263)

HAIR_ABOVE_FOREHEAD = 0.35
"""Top of the hair above forehead landmark 10 (which sits below the hairline), in face heights: the median of
0.26-0.43 measured against the ground-truth alpha of the shared matting kit (8 portraits, 56 composites)."""
_HAIR_FROM_MASK = (-0.15, 0.30)
"""How far (face heights) the mask's end may lie from the landmark estimate, down and up, before the two are
averaged: the raw segmenter leaks into the room above a head (0.23 face heights on the matting kit, to the
top of the photo above Biden's official portrait), so the mask refines the estimate for big hair but cannot
move it far. Against the matting kit's ground truth the landmark estimate alone is within +-0.07 face heights
(5th-95th percentile)."""
_ABOVE_PICTURE = 3.0
"""The band of backdrop shown above the camera picture is at most this many times the hair's margin in the
picture: a head the picture cuts runs off the output's top edge, one that nearly touches it keeps a cut hair
strand near the output's edge, and the framing moves continuously as the hair nears the picture's edge."""
_BOTTOM_PUSH = 0.05
"""Fraction of the height the face may move down from the eye line to put the picture's bottom edge on the
output's (within the headroom range)."""
_GROW_STEPS = 8
"""Sizes tried between the asked face and `grow` times it (`compose`)."""
_CENTRE_SLACK = 0.03
"""Fraction of the output width the face may leave the centre to put a side of the camera picture on the
output's edge (no fade there)."""


@dataclass(frozen=True)
class Box:
    """A crop rectangle in source pixels: centre and size. Its aspect equals the output's."""

    cx: float
    cy: float
    width: float
    height: float


@dataclass(frozen=True)
class HeadTop:
    """The top of the person's hair in the source."""

    y: float
    """Source pixels; 0 or less when the picture's top edge cuts the head."""
    cut: bool
    """True when the camera picture cuts the head at its top edge."""


def face_height_px(landmarks: Landmarks) -> float:
    """The face's height: forehead (10) to chin (152), in the landmarks' pixels. Every size that
    scales with the face (framing, skin regions, key light, pose, tracking speed) is measured in it."""
    points = np.asarray(landmarks, dtype=np.float64)
    return float(np.hypot(*(points[CHIN, :2] - points[FOREHEAD, :2])))


def eye_centre(landmarks: Landmarks) -> tuple[float, float]:
    """The midpoint of the four eye corners (source pixels): the point the framing centres."""
    eyes = np.asarray(landmarks, dtype=np.float64)[list(EYE_CORNERS), :2].mean(axis=0)
    return float(eyes[0]), float(eyes[1])


def head_top(landmarks: Landmarks, mask: Mask | npt.NDArray[np.uint8] | None = None, trust: float = 0.5) -> HeadTop:
    """Where the top of the hair is: `HAIR_ABOVE_FOREHEAD` face heights above landmark 10 along the face's
    up direction, moved `trust` of the way (0..1) to where the person `mask` (the source's HxW, float32 in
    [0, 1] or uint8 alpha) ends above the forehead, that end first kept within `_HAIR_FROM_MASK` of the
    estimate. A raw segmenter's confidence leaks into the room above a head: trust it half; a refined matte
    that keeps only the tracked person (`engine.matte`) finds the hair itself: trust it (`MATTE_TRUST`).
    The head counts as cut when the result lies at or above the picture's top edge."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    face = face_height_px(landmarks)
    up = (points[FOREHEAD] - points[CHIN]) / max(face, 1e-6)
    estimate = float(points[FOREHEAD, 1] + HAIR_ABOVE_FOREHEAD * face * up[1])
    found = _mask_top(mask, points, face) if mask is not None else None
    if found is not None:
        low, high = _HAIR_FROM_MASK
        found = min(max(found, estimate - high * face), estimate - low * face)
        estimate += trust * (found - estimate)
    return HeadTop(estimate, estimate <= 0.0)


MATTE_TRUST = 0.85
"""How far the hair's top moves from the landmark estimate to a refined matte's top (`head_top_in_matte`): the
matte's hair edge is soft (its 0.5 contour lies a little inside wispy hair), so not all the way."""


def head_top_in_matte(landmarks: Landmarks, alpha: npt.NDArray[np.uint8], to_source: Affine,
                      trust: float = MATTE_TRUST) -> HeadTop:
    """`head_top` with a refined matte: `alpha` (uint8 HxW, 255 = person) over a region of the source mapped
    by the scale-and-shift `to_source` (alpha pixels -> source pixels), read where it lies: no source-sized
    copy. Where the alpha's region starts below the picture's top and the person reaches it, the hair's top is
    not seen: the landmark estimate (clamped as in `head_top`) stands."""
    m = np.asarray(to_source, dtype=np.float64)
    scale, x0, y0 = float(m[1, 1]), float(m[0, 2]), float(m[1, 2])
    local = np.asarray(landmarks, dtype=np.float64)[:, :2].copy()
    local[:, 0] = (local[:, 0] - x0) / scale
    local[:, 1] = (local[:, 1] - y0) / scale
    seen = head_top(local.astype(np.float32), alpha, trust)
    y = seen.y * scale + y0
    return HeadTop(y, y <= 0.0)


def _mask_top(mask: Mask | npt.NDArray[np.uint8], points: npt.NDArray[np.float64], face: float) -> float | None:
    """The first row above the forehead where the mask stops covering a band over the face (rows where at
    least a tenth of the band is person); 0 when the person reaches the picture's top edge. None when the mask
    does not cover the forehead (a mask that missed the person says nothing about the hair)."""
    height, width = mask.shape[:2]
    cx = float(points[list(EYE_CORNERS), 0].mean())
    x0, x1 = max(int(cx - 0.35 * face), 0), min(int(cx + 0.35 * face) + 1, width)
    y1 = min(int(points[FOREHEAD, 1]), height)
    y0 = max(int(points[FOREHEAD, 1] - face), 0)
    if x1 - x0 < 2 or y1 <= y0:
        return 0.0 if y1 <= 0 < x1 - x0 else None
    half = 128 if mask.dtype == np.uint8 else 0.5
    covered = (mask[y0:y1, x0:x1] >= half).mean(axis=1) >= 0.1
    if not covered[-1]:
        return None
    gaps = np.flatnonzero(~covered)
    return float(y0 + gaps[-1] + 1) if gaps.size else float(y0)


def compose(
    landmarks: Landmarks,
    head: HeadTop,
    aspect: float,
    height: float,
    eye_line: float,
    headroom: tuple[float, float],
    picture: tuple[float, float, float, float] | None,
    grow: float = 1.0,
) -> Box:
    """A box of `aspect` and `height` (source pixels) around the face: eyes centred horizontally and at
    `eye_line` of the height, moved so that the space above the hair (`head`) lies within `headroom` (min,
    max; fractions of the height).

    `picture` (x0, y0, x1, y1): where the camera picture (real pixels) is when the box may reach beyond it.
    Then the box is raised (the face moved down, at most `_BOTTOM_PUSH` of the height and within the headroom
    range) toward putting the picture's bottom edge on the output's, so the body runs off the bottom edge; a
    side edge of the picture close to the output's is put on it (the face up to `_CENTRE_SLACK` of the width
    off centre); and the backdrop shown above the picture's top is limited by the hair's margin in the
    picture (`_ABOVE_PICTURE`): a head the picture cuts runs off the output's top edge. Where the picture's
    bottom edge still lies inside the output, the face may grow by up to `grow` (the box shrinks) to bring it
    down to the output's.
    """
    cx, eyes_y = eye_centre(landmarks)
    low, high = headroom

    def place(height: float) -> float:  # the box's top for `height`
        top = eyes_y - eye_line * height
        top = min(max(top, head.y - high * height), head.y - low * height)
        if picture is None:
            return top
        if top + height > picture[3]:
            top = min(top, max(picture[3] - height, top - _BOTTOM_PUSH * height, head.y - high * height))
        return max(top, picture[1] - _ABOVE_PICTURE * max(head.y - picture[1], 0.0))

    top = place(height)
    if picture is not None and grow > 1.0 and top + height > picture[3]:
        # The face grows (the box shrinks), at most by `grow`, until the body runs off the bottom edge.
        for step in range(1, _GROW_STEPS + 1):
            smaller = height / grow ** (step / _GROW_STEPS)
            top = place(smaller)
            if top + smaller <= picture[3] or step == _GROW_STEPS:
                height = smaller
                break
    width = height * aspect
    if picture is None:
        return Box(cx, top + height / 2.0, width, height)
    px0, _, px1, _ = picture
    left_gap, right_gap = px0 - (cx - width / 2.0), (cx + width / 2.0) - px1
    slack = _CENTRE_SLACK * width
    if 0.0 < left_gap <= slack and right_gap < -left_gap:
        cx += left_gap
    elif 0.0 < right_gap <= slack and left_gap < -right_gap:
        cx -= right_gap
    return Box(cx, top + height / 2.0, width, height)


def picture_edges(affine: Affine, frame_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Where the source picture's edges (left, top, right, bottom) land in the output of a scale-and-shift
    `affine`, output pixels."""
    m = np.asarray(affine, dtype=np.float64)
    fw, fh = frame_size
    return float(m[0, 2]), float(m[1, 2]), float(m[0, 0] * fw + m[0, 2]), float(m[1, 1] * fh + m[1, 2])


def fade_alpha(
    alpha: npt.NDArray[np.uint8], edges: tuple[float, float, float, float], widths: tuple[float, float, float, float],
    body_end: bool = False,
) -> npt.NDArray[np.uint8]:
    """`alpha` (output-sized uint8 HxW) with 0 beyond the picture's `edges` (left, top, right, bottom; output
    pixels, see `picture_edges`) and a smoothstep ramp from 0 to 1 over `widths` (the same order, output
    pixels) inside each edge that lies within the output. Returns `alpha` itself when no edge does, else a
    new array. Only the ramps are multiplied; beyond them the alpha is zeroed or left as it is.

    `body_end`: the bottom edge is where a body continued below the camera picture ends (`extend_below`), not
    a picture edge: its ramp fades whatever part of it reaches into the output, though the edge itself may lie
    below the output (else a body continued to the output's bottom would end there at full opacity)."""
    height, width = alpha.shape[:2]
    bottom_beyond = edges[3] >= height and not (body_end and edges[3] - widths[3] < height)
    if edges[0] <= 0.0 and edges[1] <= 0.0 and edges[2] >= width and bottom_beyond:
        return alpha
    out = alpha.copy()
    for axis, size, near, far, w_near, w_far in ((1, width, edges[0], edges[2], widths[0], widths[2]),
                                                  (0, height, edges[1], edges[3], widths[1], widths[3])):
        view = out if axis == 0 else out.T  # rows of `view` run along this axis
        for edge, ramp_width, sign in ((near, w_near, 1.0), (far, w_far, -1.0)):
            if (sign > 0 and edge <= 0.0) or (sign < 0 and (bottom_beyond if axis == 0 else edge >= size)):
                continue
            ramp_width = max(ramp_width, 1e-3)
            # Pixels whose centre lies beyond the edge are 0; those within `ramp_width` inside it ramp up.
            lo, hi = (edge - 0.5, edge + ramp_width - 0.5) if sign > 0 else (edge - ramp_width - 0.5, edge - 0.5)
            start, stop = min(max(math.ceil(lo), 0), size), min(max(math.floor(hi) + 1, 0), size)
            if sign > 0:
                view[:start] = 0
            else:
                view[stop:] = 0
            if stop > start:
                centres = np.arange(start, stop, dtype=np.float32) + np.float32(0.5)
                ramp = _smoothstep(sign * (centres - np.float32(edge)) / np.float32(ramp_width))
                band = view[start:stop]
                band[...] = (band * ramp[:, None] + 0.5).astype(np.uint8)
    return out


def _smoothstep(t: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    t = np.clip(t, 0.0, 1.0)
    return cast(npt.NDArray[np.float32], t * t * (3.0 - 2.0 * t))


def fill_behind(image: npt.NDArray[np.uint8], alpha: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """`image` (RGB uint8 HxWx3) with the person (`alpha`, uint8 HxW, 255 = person) replaced by the
    background around them: a push-pull fill (each pyramid level's weighted mean fills the finer level's
    holes), so a blur of the result shows the room without the person's colours and without dark holes where
    the person is faded or was mirrored beyond the camera picture."""
    keep = 1.0 - alpha.astype(np.float32) * np.float32(1.0 / 255.0)
    premultiplied = [image.astype(np.float32) * keep[:, :, None]]
    weights = [keep]
    while min(weights[-1].shape[:2]) > 2:
        premultiplied.append(cast(npt.NDArray[np.float32], cv2.pyrDown(premultiplied[-1])))
        weights.append(cast(npt.NDArray[np.float32], cv2.pyrDown(weights[-1])))
    top_weight = weights[-1]
    if float(top_weight.max()) <= 1e-6:  # nothing but person: nothing to fill from
        return image
    # The coarsest level: the weighted mean, its empty pixels given the mean of the whole level.
    filled = premultiplied[-1] / np.maximum(top_weight, 1e-6)[:, :, None]
    empty = top_weight <= 1e-6
    if empty.any():
        filled[empty] = (premultiplied[-1].sum(axis=(0, 1)) / float(top_weight.sum()))
    for level in range(len(weights) - 2, -1, -1):
        height, width = weights[level].shape[:2]
        up = cast(npt.NDArray[np.float32], cv2.pyrUp(filled, dstsize=(width, height)))
        filled = premultiplied[level] + (1.0 - weights[level])[:, :, None] * up
    return np.clip(filled + 0.5, 0, 255).astype(np.uint8)


def extend_below(image: npt.NDArray[PixelT], start: int, sigma: float) -> None:
    """Continue `image` (HxW or HxWx3) below row `start`, in place: row `start - 1` blurred sideways by `sigma`
    pixels, reached over `sigma / 2` rows, so a body the camera picture cuts goes on as soft colour (then
    faded) instead of as streaks of its last row or a line where the picture ends."""
    height = image.shape[0]
    if not 0 < start < height:
        return
    row = image[start - 1 : start]
    blurred = cv2.GaussianBlur(row, (0, 0), sigmaX=max(sigma, 0.5), sigmaY=0.0, borderType=cv2.BORDER_REPLICATE)
    image[start:] = blurred
    steps = min(max(round(0.5 * sigma), 1), height - start)
    t = _smoothstep(np.arange(1, steps + 1, dtype=np.float32) * np.float32(1.0 / (steps + 1)))
    t = t.reshape((steps,) + (1,) * (image.ndim - 1))
    mixed = row.astype(np.float32) * (1.0 - t) + blurred.astype(np.float32) * t
    image[start : start + steps] = (mixed + 0.5).astype(image.dtype)
