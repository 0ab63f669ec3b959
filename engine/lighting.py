"""Studio lighting setups and the key-light gain map they make on a face, plus the face-light measurements.

The head is modelled as a spheroid fitted to the face landmarks (as wide as the cheeks, a little taller than
forehead-to-chin). Each setup places a key light (azimuth and elevation as the camera sees it, or relative
to the head's turn for "broad" and "short"), a fill and an optional rim light; the map is the light that
model receives, shaded with a soft (wrapped) Lambert term, divided by its mean over the face so the face's
overall brightness is left to the exposure. Far from the head the map fades to 1 (unchanged).

The map is a per-pixel gain on the encoded (gamma) values, applied by `engine.relight.apply` inside the tone
curve's highlight roll-off, so it never clips what the input did not.

"Left"/"right" here are as the viewer sees the output (image x), unlike MediaPipe's subject-side names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.framing import face_height_px
from engine.skin import FACE_OVAL, skin_mask
from engine.types import Landmarks, RGBImage


@dataclass(frozen=True)
class LightingSetup:
    """Where the lights stand. Angles in degrees as the camera sees them: azimuth 0 = beside the camera,
    positive = toward the viewer's right (image +x), 90 = beside the subject; elevation 0 = eye level."""

    key_azimuth: float
    key_elevation: float
    follows_turn: str = ""
    """"broad": the key goes to the side of the face turned toward the camera; "short": to the side turned
    away (where the nose points). Empty: `key_azimuth`'s sign is fixed."""
    fill: float = 1.0
    """Fill relative to the style's fill (more = flatter)."""
    rim: float = 0.0
    """Strength of a rim (kicker) light from behind on the key side, 0..1."""
    description: str = ""


SETUPS: dict[str, LightingSetup] = {
    "left": LightingSetup(-45.0, 30.0, description="key light 45 degrees to the left, above eye level"),
    "right": LightingSetup(45.0, 30.0, description="key light 45 degrees to the right, above eye level"),
    "broad": LightingSetup(50.0, 30.0, follows_turn="broad",
                           description="broad lighting: the side of the face turned toward the camera lit"),
    "short": LightingSetup(60.0, 30.0, follows_turn="short", fill=0.7,
                           description="short lighting: the side turned away lit, the near cheek in shade"),
    "butterfly": LightingSetup(0.0, 50.0, fill=0.8,
                               description="butterfly lighting: the key high in front, shade under cheeks and chin"),
    "rim": LightingSetup(-20.0, 20.0, fill=1.2, rim=1.0,
                         description="a soft front key with a rim light outlining the head from behind"),
}
"""The named setups; "left" and "right" are the classic fixed key for live video."""

KEY_LIGHTS = (*SETUPS, "none")
KEY_STYLES = {"soft": 0.33, "strong": 0.12}
"""Fill level of each style: the share of the face's light that does not come from the key."""

# The spheroid: half-width is half the cheek-to-cheek distance times this; half-height half the face height
# (forehead landmark to chin) times this, centred this many face heights above the face oval's centre.
_HEAD_WIDTH = 1.05
_HEAD_HEIGHT = 1.2
_HEAD_RAISE = 0.04
# The wrap of the soft Lambert term: a large soft source lights a little past the terminator.
_WRAP = 0.45
# Outside the head the effect fades with this Gaussian width (in head radii) past its edge.
_FADE = 0.55
_RIM_FADE = 0.15
# Where the effect has faded to nothing (head radii): the map's region of interest.
_REACH = 1.0 + 2.5 * _FADE
# A turn (nose offset from the cheeks' midpoint / half the face width) below this counts as frontal.
_FRONTAL = 0.06
# The map is computed on a grid this many times coarser than the frame, then upscaled: it is smooth.
_GRID_STEP = 8
# Centred on 0: added before rounding (convertScaleAbs rounds to nearest).
_BAYER_4 = (np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], np.float32) + 0.5) / 16 - 0.5
# Landmarks down the middle of the face, forehead to chin (they split it into halves).
_MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 17, 18, 200, 199, 175, 152)
_CHEEKS = (234, 454)
_NOSE_TIP = 1


@dataclass(frozen=True)
class Head:
    """The head as the light model sees it, in frame pixels."""

    cx: float
    cy: float
    half_width: float
    half_height: float
    turn: float
    """Nose offset from the cheeks' midpoint over half the face width: < 0 the nose points to the viewer's
    left, > 0 to the right, 0 frontal."""

    def moved(self, other: Head, tolerance: float) -> bool:
        """True when `other` differs by more than `tolerance` head heights in place or size, or its turn by
        more than `tolerance` (a broad or short key that changes side changes the map)."""
        scale = 2.0 * self.half_height
        return (
            math.hypot(other.cx - self.cx, other.cy - self.cy) > tolerance * scale
            or abs(other.half_height - self.half_height) > tolerance * scale
            or abs(other.turn - self.turn) > tolerance
        )


def head_from_landmarks(landmarks: Landmarks) -> Head:
    """The head spheroid and turn of a face's (478, 2+) pixel landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    oval = points[list(FACE_OVAL)]
    centre = oval.mean(axis=0)
    face_px = face_height_px(landmarks)
    left, right = points[_CHEEKS[0]], points[_CHEEKS[1]]
    half_face = max(abs(right[0] - left[0]) / 2.0, 1.0)
    turn = (points[_NOSE_TIP, 0] - (left[0] + right[0]) / 2.0) / half_face
    return Head(float(centre[0]), float(centre[1] - _HEAD_RAISE * face_px), _HEAD_WIDTH * half_face,
                _HEAD_HEIGHT * face_px / 2.0, float(np.clip(turn, -1.0, 1.0)))


def key_azimuth(setup: LightingSetup, turn: float) -> float:
    """The key's azimuth (degrees, + = viewer's right) for a head with `turn`. Broad puts it on the side away
    from where the nose points, short on the side the nose points to; a frontal face gets broad from the
    left and short from the right, so the two still differ."""
    magnitude = abs(setup.key_azimuth)
    if setup.follows_turn == "broad":
        return magnitude if turn < -_FRONTAL else -magnitude
    if setup.follows_turn == "short":
        return -magnitude if turn < -_FRONTAL else magnitude
    return setup.key_azimuth


def _direction(azimuth: float, elevation: float) -> npt.NDArray[np.float64]:
    """Unit vector toward a light in image axes: x right, y down, z toward the camera."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return np.array([math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el)])


def _light(u: npt.NDArray[np.float32], v: npt.NDArray[np.float32], head: Head, setup: LightingSetup,
           fill: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The light (key, fill and rim, unnormalised) the head model receives at (u, v), and r there."""
    r = np.sqrt(u * u + v * v)
    depth = np.sqrt(np.maximum(1.0 - r * r, 0.0))
    norm = np.maximum(np.sqrt(u * u + v * v + depth * depth), 1e-6)  # outside the head: the edge's normal
    nx, ny, nz = u / norm, v / norm, depth / norm
    key = _direction(key_azimuth(setup, head.turn), setup.key_elevation)
    lambert = nx * key[0] + ny * key[1] + nz * key[2]
    shade = np.clip((lambert + _WRAP) / (1.0 + _WRAP), 0.0, 1.0)
    fill_share = min(fill * setup.fill, 0.95)
    light = fill_share + (1.0 - fill_share) * shade
    if setup.rim > 0.0:
        side = 1.0 if key[0] >= 0.0 else -1.0
        rim_dir = _direction(side * 115.0, 15.0)
        rim = np.clip(nx * rim_dir[0] + ny * rim_dir[1] + nz * rim_dir[2], 0.0, 1.0) ** 2
        # The rim outlines the head: it fades fast past its edge instead of glowing on the backdrop.
        rim *= np.exp(-((np.maximum(r - 1.0, 0.0) / _RIM_FADE) ** 2))
        light = light + setup.rim * rim
    return light, r


_REFERENCE = np.meshgrid(np.linspace(-0.8, 0.8, 33, dtype=np.float32), np.linspace(-0.8, 0.8, 33, dtype=np.float32))
_REFERENCE_INSIDE = _REFERENCE[0] ** 2 + _REFERENCE[1] ** 2 < 0.64


def gain_field(u: npt.NDArray[np.float32], v: npt.NDArray[np.float32], head: Head, setup: LightingSetup,
               fill: float) -> npt.NDArray[np.float32]:
    """The key/fill/rim gain at points (u, v) given in head radii from the head's centre (u right, v down):
    mean 1 over the face (the spheroid within 0.8 of its radius), fading to 1 far from the head. `fill`: the
    style's fill share (0..1)."""
    light, r = _light(u, v, head, setup, fill)
    reference, _ = _light(_REFERENCE[0], _REFERENCE[1], head, setup, fill)
    gain = light / float(reference[_REFERENCE_INSIDE].mean())
    fade = np.exp(-((np.maximum(r - 1.0, 0.0) / _FADE) ** 2))
    return (1.0 + (gain - 1.0) * fade).astype(np.float32)


@dataclass(frozen=True)
class Patch:
    """Weights (hxwx3 uint8, three equal channels so no merge per frame) over a box of the frame at (x0, y0)."""

    x0: int
    y0: int
    weights: npt.NDArray[np.uint8]

    def box(self) -> tuple[slice, slice]:
        h, w = self.weights.shape[:2]
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


@dataclass(frozen=True)
class KeyMap:
    """A key-light gain map in two parts: where it brightens, gain = 1 + (hi - 1) * up / 255; where it darkens,
    gain = 1 - (1 - lo) * down / 255; 1 elsewhere. Kept apart because the tone curve bends at gain 1 (above
    it highlights roll off, below it the curve is a straight line), so each part blends the curve at gain 1
    with the curve at its own end, never the two ends across the bend."""

    lo: float
    hi: float
    up: Patch | None
    down: Patch | None


def key_map(size: tuple[int, int], head: Head, setup: LightingSetup, fill: float, strength: float) -> KeyMap | None:
    """The key-light map for a frame of `size` (width, height); None when it would change nothing (strength
    0, or the head lies outside the frame). `strength` 0..1 scales the map's departure from 1."""
    width, height = size
    if strength <= 0.0:
        return None
    reach_x, reach_y = _REACH * head.half_width, _REACH * head.half_height
    region = (max(int(head.cx - reach_x), 0), max(int(head.cy - reach_y), 0),
              min(math.ceil(head.cx + reach_x), width), min(math.ceil(head.cy + reach_y), height))
    if region[2] - region[0] < 4 or region[3] - region[1] < 4:
        return None
    coarse = _gain_grid(region, head, setup, fill, strength)
    lo = math.floor(min(float(coarse.min()), 1.0) * 64.0) / 64.0
    hi = math.ceil(max(float(coarse.max()), 1.0) * 64.0) / 64.0
    x0, y0, x1, y1 = region
    w, h = x1 - x0, y1 - y0
    # The gain's departure from 1 at full resolution, signed: the up part is where it is positive, the down
    # part where it is negative, so no pixel is in both. Each is kept only over the box where it reaches a
    # weight level (found on the coarse grid).
    signed = cast(npt.NDArray[np.float32], cv2.resize(coarse - 1.0, (w, h), interpolation=cv2.INTER_LINEAR))
    # Ordered dither before rounding, so the 8-bit weights show no contours (|dither| < 0.5: 0 stays 0).
    dither = cast(npt.NDArray[np.float32], cv2.repeat(_BAYER_4, -(-h // 4), -(-w // 4))[:h, :w])
    up = down = None
    if hi > 1.0:
        box = _box(coarse > 1.0 + 0.5 * (hi - 1.0) / 255.0, region)
        if box is not None:
            part = cast(npt.NDArray[np.float32], cv2.max(signed[box], 0.0))
            up = Patch(x0 + box[1].start, y0 + box[0].start, _weights(part, 255.0 / (hi - 1.0), dither[box]))
    if lo < 1.0:
        box = _box(coarse < 1.0 - 0.5 * (1.0 - lo) / 255.0, region)
        if box is not None:
            part = cast(npt.NDArray[np.float32], cv2.min(signed[box], 0.0))
            down = Patch(x0 + box[1].start, y0 + box[0].start, _weights(part, -255.0 / (1.0 - lo), dither[box]))
    return None if up is None and down is None else KeyMap(lo, hi, up, down)


def shift_map(key: KeyMap, dx: int, dy: int, size: tuple[int, int]) -> KeyMap | None:
    """`key` moved by (`dx`, `dy`) pixels in a frame of `size` (width, height), cut where it leaves the frame
    (views of its weights, no copy): a map follows a head that moved a little without being rebuilt."""
    def moved(patch: Patch | None) -> Patch | None:
        if patch is None:
            return None
        h, w = patch.weights.shape[:2]
        x0, y0 = patch.x0 + dx, patch.y0 + dy
        cx0, cy0 = max(-x0, 0), max(-y0, 0)
        cx1, cy1 = min(w, size[0] - x0), min(h, size[1] - y0)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        return Patch(x0 + cx0, y0 + cy0, patch.weights[cy0:cy1, cx0:cx1])

    up, down = moved(key.up), moved(key.down)
    return None if up is None and down is None else KeyMap(key.lo, key.hi, up, down)


def _weights(part: npt.NDArray[np.float32], scale: float, dither: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """`part * scale` rounded to 8 bits after the dither, in three equal channels (no merge per frame)."""
    single = cv2.convertScaleAbs(cv2.scaleAdd(part, scale, dither))
    return cast(npt.NDArray[np.uint8], cv2.merge([single, single, single]))


def _grid_size(box: tuple[int, int, int, int]) -> tuple[int, int]:
    return max(2, -(-(box[2] - box[0]) // _GRID_STEP)), max(2, -(-(box[3] - box[1]) // _GRID_STEP))


def _gain_grid(box: tuple[int, int, int, int], head: Head, setup: LightingSetup, fill: float,
               strength: float) -> npt.NDArray[np.float32]:
    """The gain on a coarse grid over `box` = (x0, y0, x1, y1) of the frame: at the centres of its cells."""
    x0, y0, x1, y1 = box
    gw, gh = _grid_size(box)
    u = ((np.arange(gw, dtype=np.float32) + 0.5) * ((x1 - x0) / gw) + x0 - head.cx) / head.half_width
    v = ((np.arange(gh, dtype=np.float32) + 0.5) * ((y1 - y0) / gh) + y0 - head.cy) / head.half_height
    uu, vv = np.meshgrid(u, v)
    return (1.0 + strength * (gain_field(uu, vv, head, setup, fill) - 1.0)).astype(np.float32)


def _box(inside: npt.NDArray[np.bool_], region: tuple[int, int, int, int]) -> tuple[slice, slice] | None:
    """The rows and columns of `region` (x0, y0, x1, y1; as slices relative to it) covered by the coarse cells
    that are `inside`, grown by a cell."""
    rows, cols = np.nonzero(inside)
    if rows.size == 0:
        return None
    x0, y0, x1, y1 = region
    cell_w, cell_h = (x1 - x0) / inside.shape[1], (y1 - y0) / inside.shape[0]
    left, top = max(0, int((cols.min() - 1) * cell_w)), max(0, int((rows.min() - 1) * cell_h))
    right = min(x1 - x0, math.ceil((cols.max() + 2) * cell_w))
    bottom = min(y1 - y0, math.ceil((rows.max() + 2) * cell_h))
    return slice(top, bottom), slice(left, right)


# --- measurements: what the light does to the face ------------------------------------------------------------

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""Rec. 601 luma weights on the encoded (gamma) RGB values."""


@dataclass(frozen=True)
class FaceLight:
    """The light on a face's skin (face oval minus eyes, brows and lips): mean luma 0..1 of all of it and of
    each half (the viewer's left and right of the face's midline), and the percentage of skin pixels with a
    channel at 255."""

    luma: float
    left: float
    right: float
    clipped_pct: float


def measure_face_light(image: RGBImage, landmarks: Landmarks) -> FaceLight:
    """Measure the light on the skin of the face at `landmarks` (478, 2+, pixels of `image`, RGB uint8)."""
    mask = skin_mask(image.shape, landmarks) > 0.5
    luma = image.astype(np.float32) @ np.array(LUMA_WEIGHTS, np.float32) / 255.0
    points = np.asarray(landmarks, dtype=np.float64)[list(_MIDLINE), :2]
    order = np.argsort(points[:, 1])
    rows = np.arange(image.shape[0], dtype=np.float64) + 0.5
    mid_x = np.interp(rows, points[order, 1], points[order, 0])
    left = (np.arange(image.shape[1])[None, :] + 0.5) < mid_x[:, None]
    clipped = (image == 255).any(axis=2)
    return FaceLight(
        luma=float(luma[mask].mean()),
        left=float(luma[mask & left].mean()),
        right=float(luma[mask & ~left].mean()),
        clipped_pct=100.0 * float(clipped[mask].mean()),
    )
