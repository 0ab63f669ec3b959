"""Face-aware relighting: auto exposure and white balance measured on the face, plus a soft key light.

Per frame: `face_region_stats` measures the face, `update_light` moves the per-channel gains toward
their target, `tone_luts` turns gains into a lookup table with a soft shoulder, and `apply` runs the
table and multiplies by a cached key-light gain map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.skin import FACE_OVAL
from engine.types import Landmarks, RGBImage
from engine.validation import check_range

KEY_SIDES = ("left", "right", "none")
_SIDES_TEXT = ", ".join(repr(s) for s in KEY_SIDES)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""Rec. 601 luma weights on the encoded (gamma) RGB values."""
SKIN_REFERENCE_RG = 1.42
SKIN_REFERENCE_BG = 0.85
"""R/G and B/G of well-balanced skin: the middle of the range measured on the test portraits
(R/G 1.25..1.56, B/G 0.72..0.94, across skin tones)."""
WB_GAIN_RANGE = (0.8, 1.25)
KEY_MAP_UNIT = 128
"""Key-light maps hold gains in 1/128 units: 128 = 1.0, 255 = 1.99."""

# Without a face the gains return to 1 this many times slower than they adapt, so a tracking dropout of
# a few frames barely changes the exposure.
_DRIFT_FACTOR = 4.0
# Tone curve: below the knee the gain is a straight multiply; above it a shoulder rolls off to white.
_KNEE = 0.75
# The key map is computed on a grid this many times coarser than the output, then upscaled: it is smooth.
_KEY_MAP_STEP = 8
# Face stats are measured on the face resized to about this height (pixels): plenty for a mean.
_STATS_HEIGHT = 48
# The hull is shrunk toward its centre so the measurement avoids hair, ears and background at its edge.
_STATS_SHRINK = 0.8

# Centred on 0: added before rounding (convertScaleAbs rounds to nearest).
_BAYER_4 = (np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], np.float32) + 0.5) / 16 - 0.5


@dataclass(frozen=True)
class RelightSettings:
    """Exposure, white balance and key light."""

    enabled: bool = True
    target_luma: float = 0.55
    """Face mean luma to reach, 0..1."""
    max_gain: float = 2.0
    """Largest exposure gain (and 1/max_gain the smallest)."""
    white_balance: float = 0.6
    """How far (0..1) to move the face's R/G and B/G toward a neutral skin reference."""
    key_light: str = "left"
    """Side the key light comes from, as the viewer sees the output: "left", "right" or "none"."""
    key_strength: float = 0.25
    """Key-light strength 0..1."""
    adapt_s: float = 0.6
    """Time constant with which the gains follow their target, seconds."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled = {self.enabled!r}: must be true or false")
        check_range("target_luma", self.target_luma, 0.2, 0.9)
        check_range("max_gain", self.max_gain, 1.0, 4.0)
        check_range("white_balance", self.white_balance, 0.0, 1.0)
        if self.key_light not in KEY_SIDES:
            raise ValueError(f"key_light = {self.key_light!r}: must be one of {_SIDES_TEXT}")
        check_range("key_strength", self.key_strength, 0.0, 1.0)
        check_range("adapt_s", self.adapt_s, 0.0, 10.0)


@dataclass(frozen=True)
class LightState:
    """Per-stream light state: the current per-channel (R, G, B) gains and the last frame's time."""

    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    last_ms: int | None = None


def face_region_stats(image: RGBImage, landmarks: Landmarks) -> npt.NDArray[np.float32] | None:
    """Mean RGB (float32[3], 0..255) of the face in `image` (RGB uint8), over the convex hull of the
    face oval shrunk a little; measured at low resolution. None when the face lies outside the image."""
    oval = np.asarray(landmarks, dtype=np.float32)[list(FACE_OVAL), :2]
    centre = oval.mean(axis=0)
    hull = centre + _STATS_SHRINK * (oval - centre)
    ih, iw = image.shape[:2]
    x0, y0 = (max(int(v), 0) for v in hull.min(axis=0))
    x1, y1 = (math.ceil(v) for v in hull.max(axis=0))
    x1, y1 = min(x1, iw), min(y1, ih)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    scale = min(1.0, _STATS_HEIGHT / (y1 - y0))
    small_size = (max(2, round((x1 - x0) * scale)), max(2, round((y1 - y0) * scale)))
    small = cv2.resize(image[y0:y1, x0:x1], small_size, interpolation=cv2.INTER_AREA)
    region = np.zeros(small.shape[:2], np.uint8)
    # Edge-convention points to OpenCV's pixel-centre convention, with 4 bits of sub-pixel precision.
    poly = np.round(((hull - [x0, y0]) * [small_size[0] / (x1 - x0), small_size[1] / (y1 - y0)] - 0.5) * 16)
    cv2.fillConvexPoly(region, poly.astype(np.int32), 255, lineType=cv2.LINE_8, shift=4)
    if not region.any():
        return None
    return np.array(cv2.mean(small, region)[:3], dtype=np.float32)


def target_gains(face_mean_rgb: npt.NDArray[np.float32], settings: RelightSettings) -> tuple[float, float, float]:
    """Per-channel gains that white-balance the face toward the skin reference and bring its luma to
    `target_luma`. `face_mean_rgb`: float32[3], 0..255."""
    r, g, b = (max(float(v), 1.0) / 255.0 for v in face_mean_rgb)
    lo, hi = WB_GAIN_RANGE
    strength = settings.white_balance
    wb_r = min(max((SKIN_REFERENCE_RG / (r / g)) ** strength, lo), hi)
    wb_b = min(max((SKIN_REFERENCE_BG / (b / g)) ** strength, lo), hi)
    wr, wg, wb = LUMA_WEIGHTS
    luma = wr * r * wb_r + wg * g + wb * b * wb_b
    exposure = min(max(settings.target_luma / luma, 1.0 / settings.max_gain), settings.max_gain)
    return (exposure * wb_r, exposure, exposure * wb_b)


def update_light(
    state: LightState,
    face_mean_rgb: npt.NDArray[np.float32] | None,
    timestamp_ms: int,
    settings: RelightSettings,
) -> LightState:
    """Move the gains toward the target for this frame's face (exponential, time constant `adapt_s`).

    The first measurement snaps; without a face the gains drift back to 1 (more slowly).
    """
    if not settings.enabled:
        return LightState((1.0, 1.0, 1.0), timestamp_ms)
    if face_mean_rgb is None:
        target = (1.0, 1.0, 1.0)
        time_constant = settings.adapt_s * _DRIFT_FACTOR
    else:
        target = target_gains(face_mean_rgb, settings)
        time_constant = settings.adapt_s
        if state.last_ms is None:
            return LightState(target, timestamp_ms)
    dt_s = 0.0 if state.last_ms is None else max(timestamp_ms - state.last_ms, 0) / 1000.0
    k = 1.0 if time_constant <= 0.0 else 1.0 - math.exp(-dt_s / time_constant)
    # In log space, so brightening and darkening by the same factor take the same time.
    r, g, b = (c * (t / c) ** k for c, t in zip(state.gains, target, strict=True))
    return LightState((r, g, b), timestamp_ms)


def _shoulder_rate(reach: float) -> float:
    """The b > 0 for which (1 - exp(-b * reach)) / b = 1, for reach > 1 (bisection; about 40 steps)."""
    lo, hi = 1e-9, 1.0
    while (1.0 - math.exp(-hi * reach)) / hi > 1.0:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (1.0 - math.exp(-mid * reach)) / mid > 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def tone_curve(gain: float) -> npt.NDArray[np.float32]:
    """256 float32 outputs (0..1) of the tone curve for one channel's `gain`.

    Straight `gain * x` up to the knee; above it, for gain > 1, an exponential shoulder with slope 1 at
    the knee that reaches exactly 1 at x = 1, so highlights roll off instead of clipping. Gain <= 1 is
    linear. Gain 1 is the identity.
    """
    x = np.arange(256, dtype=np.float64) / 255.0
    y = gain * x
    if gain > 1.0:
        reach = (gain - _KNEE) / (1.0 - _KNEE)  # the input x = 1 in shoulder units
        if reach > 1.0 + 1e-9:
            rate = _shoulder_rate(reach)
            u = np.maximum(y - _KNEE, 0.0) / (1.0 - _KNEE)
            y = np.where(y > _KNEE, _KNEE + (1.0 - _KNEE) * (1.0 - np.exp(-rate * u)) / rate, y)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def tone_luts(gains: tuple[float, float, float]) -> npt.NDArray[np.uint8]:
    """An OpenCV lookup table (256, 1, 3) uint8: per-channel (R, G, B) `gains` with a soft shoulder."""
    curves = np.stack([tone_curve(g) for g in gains], axis=-1)
    return np.rint(curves * 255.0).astype(np.uint8).reshape(256, 1, 3)


def key_light_map(
    size: tuple[int, int],
    face_center_xy: tuple[float, float],
    face_height_px: float,
    side: str,
    strength: float,
) -> npt.NDArray[np.uint8]:
    """A smooth HxW uint8 gain map in 1/128 units (128 = unchanged) for an output of `size` (width, height).

    A broad soft lobe above and beside the face on the key `side` ("left"/"right" as the viewer sees it)
    brightens; the other side falls off gently (fill). `side` "none" or strength 0 gives all 128.
    """
    width, height = size
    if side not in KEY_SIDES:
        raise ValueError(f"key_light = {side!r}: must be one of {_SIDES_TEXT}")
    if side == "none" or strength <= 0.0:
        return np.full((height, width), KEY_MAP_UNIT, np.uint8)
    sign = 1.0 if side == "right" else -1.0
    fx, fy = face_center_xy
    fh = max(face_height_px, 1.0)
    # Coarse grid at the centres of _KEY_MAP_STEP x _KEY_MAP_STEP cells, in face heights from the face.
    gw, gh = max(2, -(-width // _KEY_MAP_STEP)), max(2, -(-height // _KEY_MAP_STEP))
    u = ((np.arange(gw, dtype=np.float32) + 0.5) * (width / gw) - fx) / fh
    v = ((np.arange(gh, dtype=np.float32) + 0.5) * (height / gh) - fy) / fh
    uu, vv = np.meshgrid(u, v)
    lobe = np.exp(-((uu - sign * 0.9) ** 2 + (vv + 0.4) ** 2) / (2.0 * 1.1**2))
    fill = 1.0 / (1.0 + np.exp(sign * uu / 0.5))  # ~1 on the fill side, ~0 on the key side
    gain = 1.0 + strength * (0.45 * lobe - 0.25 * fill)
    full = cv2.resize(gain.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    # Ordered dither before rounding: 1/128 steps would otherwise show as faint contours. All in cv2
    # (no full-size numpy temporaries): this runs whenever the face moves noticeably.
    dither = cv2.repeat(_BAYER_4, -(-height // 4), -(-width // 4))[:height, :width]
    return cast(npt.NDArray[np.uint8], cv2.convertScaleAbs(cv2.scaleAdd(full, float(KEY_MAP_UNIT), dither)))


def apply(image: RGBImage, lut: npt.NDArray[np.uint8], key_map: npt.NDArray[np.uint8] | None) -> RGBImage:
    """Relight `image` (RGB uint8 HxWx3): the tone `lut` (256, 1, 3), then the key-light gain map
    (HxW or HxWx3 uint8, 1/128 units; HxWx3 avoids a per-call channel merge). Returns a new image."""
    out = cast(RGBImage, cv2.LUT(image, lut))
    if key_map is not None:
        gains = key_map if key_map.ndim == 3 else cv2.merge([key_map, key_map, key_map])
        cv2.multiply(out, gains, dst=out, scale=1.0 / KEY_MAP_UNIT)
    return out
