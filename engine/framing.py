"""Head-and-shoulders framing: where the person goes in the output, and how the framing follows them.

The framing is a photographer's: the face a set fraction of the output height, the top of the hair a little
below the top edge, the eyes near one third, the face centred. With a person cut-out (a matte) the crop box may
reach beyond the camera picture, where the backdrop shows: close-ups zoom out and people at the picture's edge
are brought to the centre. Where the picture then ends inside the output, the person's alpha fades out over a
soft ramp (`fade_alpha`) instead of showing the camera's edge as a hard line; a head the camera cuts at the top
is framed so that the cut falls on the output's top edge. Without a matte the box stays inside the picture.

Coordinates: every point, box and affine here uses continuous pixel coordinates in which the frame
spans [0, width] x [0, height] and pixel (i, j) covers [i, i+1] x [j, j+1] (its centre is at i + 0.5).
That is MediaPipe's convention (x_px = x_normalised * width), so landmarks need no shift. OpenCV puts
pixel centres at integers; `warp` converts at the call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar, cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.placement import CHIN as CHIN
from engine.placement import EYE_CORNERS as EYE_CORNERS
from engine.placement import FOREHEAD as FOREHEAD
from engine.placement import NOSE_TIP as NOSE_TIP
from engine.placement import Box as Box
from engine.placement import HeadTop as HeadTop
from engine.placement import compose as compose
from engine.placement import eye_centre as eye_centre
from engine.placement import face_height_px as face_height_px
from engine.placement import fade_alpha as fade_alpha
from engine.placement import head_top as head_top
from engine.placement import picture_edges as picture_edges
from engine.types import Affine, Landmarks, Mask, RGBImage
from engine.validation import check_range

# What `warp` accepts and returns: RGB uint8 images and float32 masks.
PixelT = TypeVar("PixelT", np.uint8, np.float32)

# When following, the camera keeps moving until the remaining error is this fraction of the deadband,
# so a move that started ends centred instead of parking at the deadband's edge (hysteresis).
_SETTLE_FRACTION = 0.1


@dataclass(frozen=True)
class FramingSettings:
    """Where the person goes in the output and how the framing follows the face."""

    enabled: bool = True
    face_height: float = 0.31
    """Face height (forehead landmark 10 to chin 152) as a fraction of the output height."""
    face_growth: float = 1.1
    """With the background on, the face may grow by up to this factor to let a body the camera picture cuts run
    off the output's bottom edge (what remains above it fades out)."""
    eye_line: float = 0.34
    """Eyes' vertical position, fraction of the output height from the top (kept within the headroom)."""
    headroom_min: float = 0.05
    headroom_max: float = 0.08
    """Space above the top of the hair, fraction of the output height: the eye line gives way to keep it in
    this range."""
    max_zoom: float = 3.0
    """Largest upscale of source pixels."""
    fade: float = 0.25
    """Width of the soft edge where the camera picture ends inside the output, in face heights (three times
    that at the picture's bottom, where the body ends)."""
    follow_s: float = 0.35
    """Time constant of the smooth follow, seconds (0 = jump)."""
    deadband: float = 0.03
    """Fraction of the crop size the face may move before the camera follows."""
    hold_s: float = 1.0
    """With no face, hold the last framing this long, seconds."""
    return_s: float = 1.5
    """Then glide back to the full frame with this time constant, seconds."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled = {self.enabled!r}: must be true or false")
        check_range("face_height", self.face_height, 0.05, 0.9)
        check_range("face_growth", self.face_growth, 1.0, 2.0)
        check_range("eye_line", self.eye_line, 0.1, 0.9)
        check_range("headroom_min", self.headroom_min, 0.0, 0.5)
        check_range("headroom_max", self.headroom_max, self.headroom_min, 1.0)
        check_range("max_zoom", self.max_zoom, 1.0, 8.0)
        check_range("fade", self.fade, 0.0, 2.0)
        check_range("follow_s", self.follow_s, 0.0, 5.0)
        check_range("deadband", self.deadband, 0.0, 0.5)
        check_range("hold_s", self.hold_s, 0.0, 30.0)
        check_range("return_s", self.return_s, 0.0, 30.0)


@dataclass(frozen=True)
class FramingState:
    """Per-stream framing state, passed in and returned by `update_framing`."""

    box: Box | None = None
    last_face_ms: int | None = None
    last_ms: int | None = None
    following: bool = False
    """True while the camera is catching up after the face left the deadband."""


def full_frame_box(frame_size: tuple[int, int], output_size: tuple[int, int]) -> Box:
    """The largest box of the output's aspect centred in a frame of `frame_size` (width, height)."""
    fw, fh = frame_size
    aspect = output_size[0] / output_size[1]
    height = min(float(fh), fw / aspect)
    return Box(fw / 2.0, fh / 2.0, height * aspect, height)


def _fit_inside(cx: float, cy: float, height: float, frame_size: tuple[int, int], aspect: float) -> Box:
    """Shrink a box of the output aspect to fit the frame, then shift it inside."""
    fw, fh = frame_size
    height = min(height, float(fh), fw / aspect)
    width = height * aspect
    cx = min(max(cx, width / 2.0), fw - width / 2.0)
    cy = min(max(cy, height / 2.0), fh - height / 2.0)
    return Box(cx, cy, width, height)


def target_box(
    landmarks: Landmarks,
    frame_size: tuple[int, int],
    output_size: tuple[int, int],
    settings: FramingSettings,
    head: HeadTop | None = None,
    outside: bool = False,
) -> Box:
    """The box that makes the face `face_height` of the output (zoom limited by `max_zoom`), centres it,
    puts the eyes at `eye_line` within the headroom range. `outside`: the box may reach beyond the frame
    (the person is cut out and put on a backdrop, see `compose`); else it is shrunk and moved inside.

    `landmarks`: (478, 2 or 3) source-pixel landmarks; sizes are (width, height); `head`: the top of the
    hair (None: estimated from the landmarks).
    """
    head = head if head is not None else head_top(landmarks)
    aspect = output_size[0] / output_size[1]
    height = max(face_height_px(landmarks) / settings.face_height, output_size[1] / settings.max_zoom)
    fw, fh = frame_size
    picture = (0.0, 0.0, float(fw), float(fh))
    grow = min(settings.face_growth, height * settings.max_zoom / output_size[1])
    box = compose(landmarks, head, aspect, height, settings.eye_line, (settings.headroom_min, settings.headroom_max),
                  picture if outside else None, grow)
    return box if outside else _fit_inside(box.cx, box.cy, box.height, frame_size, aspect)


def _fits(box: Box, frame_size: tuple[int, int]) -> bool:
    """True when `box` lies inside the frame (a state from a differently sized frame does not)."""
    fw, fh = frame_size
    tol = 1e-6 * max(fw, fh)
    return (
        box.cx - box.width / 2.0 >= -tol
        and box.cy - box.height / 2.0 >= -tol
        and box.cx + box.width / 2.0 <= fw + tol
        and box.cy + box.height / 2.0 <= fh + tol
    )


def _approach(box: Box, target: Box, dt_s: float, time_constant_s: float) -> Box:
    """Exponential approach of `box` toward `target` over `dt_s` seconds.

    Linear interpolation of two boxes inside the frame with the same aspect stays inside with that aspect.
    """
    if time_constant_s <= 0.0:
        return target
    k = 1.0 - math.exp(-max(dt_s, 0.0) / time_constant_s)
    return Box(
        box.cx + k * (target.cx - box.cx),
        box.cy + k * (target.cy - box.cy),
        box.width + k * (target.width - box.width),
        box.height + k * (target.height - box.height),
    )


def _error(box: Box, target: Box) -> float:
    """How far `target` is from `box`, as a fraction of the box's size (position or scale)."""
    return max(
        abs(target.cx - box.cx) / box.width,
        abs(target.cy - box.cy) / box.height,
        abs(target.height - box.height) / box.height,
    )


def update_framing(
    state: FramingState,
    landmarks: Landmarks | None,
    frame_size: tuple[int, int],
    output_size: tuple[int, int],
    timestamp_ms: int,
    settings: FramingSettings,
    head: HeadTop | None = None,
    outside: bool = False,
) -> tuple[FramingState, Box]:
    """Advance the framing by one frame; returns the new state and the crop box to use now.

    The first face snaps; later the box follows with time constant `follow_s` once the face leaves the
    deadband. Without a face the last box is held for `hold_s`, then glides back to the full frame.
    `head` and `outside`: as in `target_box` (with `outside` false a box that does not fit the frame, kept
    from frames when it was true, snaps to the new target).
    """
    full = full_frame_box(frame_size, output_size)
    if not settings.enabled:
        return FramingState(full, state.last_face_ms, timestamp_ms, False), full
    dt_s = 0.0 if state.last_ms is None else (timestamp_ms - state.last_ms) / 1000.0
    box = state.box if state.box is not None and (outside or _fits(state.box, frame_size)) else None

    if landmarks is not None:
        target = target_box(landmarks, frame_size, output_size, settings, head, outside)
        if box is None:
            return FramingState(target, timestamp_ms, timestamp_ms, False), target
        error = _error(box, target)
        following = state.following or error > settings.deadband
        if following:
            box = _approach(box, target, dt_s, settings.follow_s)
            following = _error(box, target) > settings.deadband * _SETTLE_FRACTION
        return FramingState(box, timestamp_ms, timestamp_ms, following), box

    if box is None:
        return FramingState(full, state.last_face_ms, timestamp_ms, False), full
    since_face_s = math.inf if state.last_face_ms is None else (timestamp_ms - state.last_face_ms) / 1000.0
    if since_face_s > settings.hold_s:
        # Only the part of this step that lies after the hold counts toward the return glide.
        glide_s = min(dt_s, since_face_s - settings.hold_s)
        box = _approach(box, full, glide_s, settings.return_s)
    return FramingState(box, state.last_face_ms, timestamp_ms, False), box


def box_to_affine(box: Box, output_size: tuple[int, int]) -> Affine:
    """2x3 float64 affine mapping source pixels to output pixels so that `box` fills the output."""
    scale = output_size[1] / box.height
    x0 = box.cx - box.width / 2.0
    y0 = box.cy - box.height / 2.0
    return np.array([[scale, 0.0, -scale * x0], [0.0, scale, -scale * y0]], dtype=np.float64)


def _to_cv(affine: Affine) -> Affine:
    """The same affine in OpenCV's convention (pixel centres at integers)."""
    m = np.asarray(affine, dtype=np.float64).copy()
    # x_cv_dst = A (x_cv_src + 0.5) + t - 0.5
    m[:, 2] += 0.5 * (m[:, 0] + m[:, 1]) - 0.5
    return m


def _warp_by_resize(
    image: npt.NDArray[PixelT], affine: Affine, output_size: tuple[int, int], interpolation: int, border: int
) -> npt.NDArray[PixelT] | None:
    """Scale-and-shift warp as crop + `cv2.resize` (about 4x faster than warpAffine here), the part of the
    output beyond the image filled by `cv2.copyMakeBorder` with `border` (replicate or constant: a mirror of the
    resized crop would not be the mirror of the image).

    Exact in scale; the shift is rounded to the nearest output pixel (at most 0.5 px off). Returns None
    when the affine rotates or flips, or the output shows none of the image (then the caller warps).
    """
    (a, b, tx), (c, d, ty) = affine
    if b != 0.0 or c != 0.0 or a <= 0.0 or d <= 0.0:
        return None
    out_w, out_h = output_size
    ih, iw = image.shape[:2]
    x0, x1 = -tx / a, (out_w - tx) / a
    y0, y1 = -ty / d, (out_h - ty) / d
    # One source pixel of margin keeps the interpolation away from the crop's edge (or, at the image's
    # edge, resize replicates it just as BORDER_REPLICATE would).
    xi0, yi0 = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
    xi1, yi1 = min(math.ceil(x1) + 1, iw), min(math.ceil(y1) + 1, ih)
    if xi1 - xi0 < 2 or yi1 - yi0 < 2:
        return None
    # The crop's pixels land at output x = a * x + tx: its resized copy starts at (px, py) in the output.
    px, py = round(a * xi0 + tx), round(d * yi0 + ty)
    rw = max(round(a * xi1 + tx) - px, 1)
    rh = max(round(d * yi1 + ty) - py, 1)
    cx0, cy0 = max(-px, 0), max(-py, 0)
    cx1, cy1 = min(rw, out_w - px), min(rh, out_h - py)
    if cx1 - cx0 < 1 or cy1 - cy0 < 1:
        return None
    crop = image[yi0:yi1, xi0:xi1]
    resized = cast(npt.NDArray[PixelT], cv2.resize(crop, (rw, rh), interpolation=interpolation))
    left, top = px + cx0, py + cy0
    right, bottom = out_w - (px + cx1), out_h - (py + cy1)
    inner = resized[cy0:cy1, cx0:cx1]
    if left == top == right == bottom == 0:
        return resized if inner.shape[:2] == resized.shape[:2] else np.ascontiguousarray(inner)
    return cast(npt.NDArray[PixelT], cv2.copyMakeBorder(inner, top, bottom, left, right, border, value=0))


def warp(
    image: npt.NDArray[PixelT],
    affine: Affine,
    output_size: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_REPLICATE,
) -> npt.NDArray[PixelT]:
    """Warp an RGB uint8 HxWx3 image, a uint8 HxW alpha or a float32 HxW mask by `affine` (source px ->
    output px) into `output_size` (width, height); same dtype and channels. Beyond the image: `border`
    (an OpenCV border mode; constant borders are 0; replicate and constant take the fast path)."""
    fast = _warp_by_resize(image, affine, output_size, interpolation, border) \
        if border in (cv2.BORDER_REPLICATE, cv2.BORDER_CONSTANT) else None
    if fast is not None:
        return fast
    warped = cv2.warpAffine(image, _to_cv(affine), output_size, flags=interpolation, borderMode=border,
                            borderValue=0)
    return cast(npt.NDArray[PixelT], warped)


def invert_affine(affine: Affine) -> Affine:
    """The inverse 2x3 affine (output px -> source px)."""
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64)).astype(np.float64)


def transform_points(points_xy: npt.NDArray[np.floating], affine: Affine) -> npt.NDArray[np.float32]:
    """Map (N, 2+) points through `affine`; x, y are transformed, a third column (landmark z, in x units)
    is scaled by the affine's scale. Returns float32 of the same shape."""
    pts = np.asarray(points_xy, dtype=np.float64)
    m = np.asarray(affine, dtype=np.float64)
    out = pts.copy()
    out[:, :2] = pts[:, :2] @ m[:, :2].T + m[:, 2]
    if pts.shape[1] > 2:
        out[:, 2:] *= math.sqrt(abs(float(np.linalg.det(m[:, :2]))))
    return out.astype(np.float32)


def paste_back(
    canvas: RGBImage, patch: RGBImage, affine_patch_to_canvas: Affine, alpha: Mask | None = None
) -> RGBImage:
    """Put `patch` (RGB uint8) onto a copy of `canvas` (RGB uint8) through `affine_patch_to_canvas`.

    `alpha`: patch-sized float32 HxW in [0, 1] (None = the whole patch, edges antialiased). Only the
    patch's bounding rectangle in the canvas is warped and blended. Returns a new canvas.
    """
    out = canvas.copy()
    ph, pw = patch.shape[:2]
    ch, cw = canvas.shape[:2]
    corners = transform_points(np.array([[0, 0], [pw, 0], [0, ph], [pw, ph]], dtype=np.float64), affine_patch_to_canvas)
    x0 = max(math.floor(float(corners[:, 0].min())), 0)
    y0 = max(math.floor(float(corners[:, 1].min())), 0)
    x1 = min(math.ceil(float(corners[:, 0].max())), cw)
    y1 = min(math.ceil(float(corners[:, 1].max())), ch)
    if x1 <= x0 or y1 <= y0:
        return out
    # Warp into the rectangle only: shift the destination origin to (x0, y0).
    m = _to_cv(np.asarray(affine_patch_to_canvas, dtype=np.float64) - [[0, 0, x0], [0, 0, y0]])
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(patch, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    weight_src = np.ones((ph, pw), np.float32) if alpha is None else np.asarray(alpha, dtype=np.float32)
    # Outside the patch the weight is 0, so only the patch shows through.
    weight = cv2.warpAffine(
        weight_src, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
    )
    region = out[y0:y1, x0:x1]
    region[...] = cv2.blendLinear(warped, region, weight, 1.0 - weight)
    return out
