"""Face-aware relighting: auto exposure and white balance measured on the face's skin, and a key light.

Per frame: `face_region_stats` measures the skin and `scene_highlight` the picture's brightest parts,
`update_light` moves the per-channel gains toward their target, `tone_tables` turns the gains into lookup
tables with a soft highlight shoulder, and `apply` runs them with a key-light map (`engine.lighting`): the
key light's per-pixel gain goes into the tone curve, before its shoulder, so it never clips highlights.

Exposure treats every skin tone alike: a face moves `exposure_strength` of the way (in log) toward
`target_luma`, so darker skin stays darker than lighter skin, and all the way where the picture has room for
it (its highlights are dim too: an under-exposed picture, not a dark skin); no face stays below `min_luma`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine import lighting
from engine.lighting import KEY_LIGHTS, KEY_STYLES, LUMA_WEIGHTS, SETUPS, KeyMap, LightingSetup
from engine.skin import FACE_OVAL, FEATURES, fill_polygons
from engine.types import Landmarks, RGBImage
from engine.validation import check_choice, check_range

__all__ = ["KEY_LIGHTS", "KEY_STYLES", "LUMA_WEIGHTS", "SETUPS", "KeyMap", "LightingSetup", "setup"]
SKIN_REFERENCE_RG = 1.42
SKIN_REFERENCE_BG = 0.85
"""R/G and B/G of well-balanced skin: the middle of the range measured on the test portraits
(R/G 1.25..1.56, B/G 0.72..0.94, across skin tones)."""
WB_GAIN_RANGE = (0.8, 1.25)

# Without a face the gains return to 1 this many times slower than they adapt, so a tracking dropout of
# a few frames barely changes the exposure.
_DRIFT_FACTOR = 4.0
# Tone curve: below the knee the gain is a straight multiply; above it a shoulder rolls off to white.
_KNEE = 0.75
# Face stats are measured on the face resized to about this height (pixels): plenty for a mean.
_STATS_HEIGHT = 64
# The oval is shrunk toward its centre so the measurement avoids hair, ears and background at its edge, and
# eyes, brows and lips are cut out with a margin of this many face heights: the skin alone is measured.
_STATS_SHRINK = 0.9
_STATS_FEATURE_MARGIN = 0.05
# The picture's highlights (this percentile of its luma, on about this many pixels) may be brought up to
# _SCENE_WHITE: that much lift is exposure the picture lacks, whatever the skin tone.
_SCENE_PERCENTILE = 98.0
_SCENE_SAMPLES = 4000
_SCENE_WHITE = 0.7


@dataclass(frozen=True)
class RelightSettings:
    """Exposure, white balance and key light."""

    enabled: bool = True
    target_luma: float = 0.55
    """Face (skin) mean luma to aim for, 0..1."""
    exposure_strength: float = 0.6
    """How far (0..1, in log) a face moves toward `target_luma` when the picture's highlights leave no room
    to go all the way: 1 = every skin tone to the same brightness, less keeps darker skin darker."""
    min_luma: float = 0.3
    """No face's skin is left darker than this (0..1), within `max_gain`."""
    max_gain: float = 4.0
    """Largest exposure gain (and 1/max_gain the smallest)."""
    white_balance: float = 0.6
    """How far (0..1) to move the face's R/G and B/G toward a neutral skin reference."""
    key_light: str = "left"
    """Lighting setup (`SETUPS`): "left"/"right" (the key's side as the viewer sees it), "broad", "short",
    "butterfly", "rim"; or "none"."""
    key_style: str = "soft"
    """"soft" (the key side about 1.3x the other, measured by benchmarks/picture_quality.py) or "strong" (about
    1.45x)."""
    key_strength: float = 1.0
    """How much of the style's key light, 0..1 (0 = none)."""
    adapt_s: float = 0.6
    """Time constant with which the gains follow their target, seconds."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled = {self.enabled!r}: must be true or false")
        check_range("target_luma", self.target_luma, 0.2, 0.9)
        check_range("exposure_strength", self.exposure_strength, 0.0, 1.0)
        check_range("min_luma", self.min_luma, 0.0, 0.6)
        check_range("max_gain", self.max_gain, 1.0, 4.0)
        check_range("white_balance", self.white_balance, 0.0, 1.0)
        check_choice("key_light", self.key_light, KEY_LIGHTS)
        check_choice("key_style", self.key_style, tuple(KEY_STYLES))
        check_range("key_strength", self.key_strength, 0.0, 1.0)
        check_range("adapt_s", self.adapt_s, 0.0, 10.0)


@dataclass(frozen=True)
class LightState:
    """Per-stream light state: the current per-channel (R, G, B) gains and the last frame's time."""

    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    last_ms: int | None = None


def setup(name: str) -> LightingSetup:
    """The lighting setup called `name` (one of `SETUPS`: the stills' variants use them by name)."""
    check_choice("key_light", name, tuple(SETUPS))
    return SETUPS[name]


def face_region_stats(image: RGBImage, landmarks: Landmarks) -> npt.NDArray[np.float32] | None:
    """Mean RGB (float32[3], 0..255) of the face's skin in `image` (RGB uint8): the face oval shrunk a
    little, less eyes, brows and lips (so hair, background, eye whites and lips do not count), measured at
    low resolution. None when the face lies outside the image."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    oval = points[list(FACE_OVAL)]
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
    to_small = np.array([small_size[0] / (x1 - x0), small_size[1] / (y1 - y0)])
    region = np.zeros(small.shape[:2], np.uint8)
    fill_polygons(region, [(hull - [x0, y0]) * to_small], 255)
    face_px = float(np.hypot(*(points[152] - points[10]))) * to_small[1]
    features = [(points[list(f)] - [x0, y0]) * to_small for f in FEATURES]
    fill_polygons(region, features, 0, outline_px=_STATS_FEATURE_MARGIN * face_px)
    if not region.any():
        return None
    return np.array(cv2.mean(small, region)[:3], dtype=np.float32)


def scene_highlight(image: RGBImage) -> float:
    """The picture's highlight level: the 98th percentile of its luma (0..1), on about `_SCENE_SAMPLES`
    pixels taken on a regular grid (a percentile needs no more, and a grid costs nothing to take)."""
    ih, iw = image.shape[:2]
    stride = max(1, math.isqrt(ih * iw // _SCENE_SAMPLES))
    luma = image[::stride, ::stride].reshape(-1, 3) @ np.array(LUMA_WEIGHTS, np.float32)
    return float(np.percentile(luma, _SCENE_PERCENTILE)) / 255.0


def target_gains(face_mean_rgb: npt.NDArray[np.float32], settings: RelightSettings,
                 highlight: float = 1.0) -> tuple[float, float, float]:
    """Per-channel gains that white-balance the face toward the skin reference and move its luma toward
    `target_luma`: `exposure_strength` of the way (in log), all of it where the picture's `highlight`
    (`scene_highlight`, 0..1) leaves room, and at least to `min_luma`. `face_mean_rgb`: float32[3], 0..255."""
    r, g, b = (max(float(v), 1.0) / 255.0 for v in face_mean_rgb)
    lo, hi = WB_GAIN_RANGE
    strength = settings.white_balance
    wb_r = min(max((SKIN_REFERENCE_RG / (r / g)) ** strength, lo), hi)
    wb_b = min(max((SKIN_REFERENCE_BG / (b / g)) ** strength, lo), hi)
    wr, wg, wb = LUMA_WEIGHTS
    luma = wr * r * wb_r + wg * g + wb * b * wb_b
    full = math.log(settings.target_luma / luma)
    change = settings.exposure_strength * full
    if full > 0.0:  # a dark face: go further where the picture's highlights have room to rise
        room = math.log(_SCENE_WHITE / max(highlight, 1e-3))
        change = max(change, min(full, room), math.log(settings.min_luma / luma))
    exposure = min(max(math.exp(change), 1.0 / settings.max_gain), settings.max_gain)
    return (exposure * wb_r, exposure, exposure * wb_b)


def update_light(
    state: LightState,
    face_mean_rgb: npt.NDArray[np.float32] | None,
    timestamp_ms: int,
    settings: RelightSettings,
    highlight: float = 1.0,
) -> LightState:
    """Move the gains toward the target for this frame's face (exponential, time constant `adapt_s`);
    `highlight`: the frame's `scene_highlight`.

    The first measurement snaps; without a face the gains drift back to 1 (more slowly).
    """
    if not settings.enabled:
        return LightState((1.0, 1.0, 1.0), timestamp_ms)
    if face_mean_rgb is None:
        target = (1.0, 1.0, 1.0)
        time_constant = settings.adapt_s * _DRIFT_FACTOR
    else:
        target = target_gains(face_mean_rgb, settings, highlight)
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


@dataclass(frozen=True)
class ToneTables:
    """The tone tables for one set of gains: `base`, the curve at those gains; with a key map, `up` from it to
    the curve at the map's highest gain (`KeyMap.hi`) and `down` from it to the curve at its lowest."""

    base: npt.NDArray[np.uint8]
    up: npt.NDArray[np.uint8] | None = None
    down: npt.NDArray[np.uint8] | None = None


def tone_tables(gains: tuple[float, float, float], key: KeyMap | None = None) -> ToneTables:
    """`ToneTables` for the per-channel `gains`, and for `key`'s gain range when there is a key map."""
    base = tone_luts(gains)
    if key is None:
        return ToneTables(base)
    hi = tone_luts((gains[0] * key.hi, gains[1] * key.hi, gains[2] * key.hi))
    lo = tone_luts((gains[0] * key.lo, gains[1] * key.lo, gains[2] * key.lo))
    # The curves rise with the gain at every input level, so neither difference is ever negative.
    up, down = cv2.subtract(hi, base), cv2.subtract(base, lo)
    return ToneTables(base, cast(npt.NDArray[np.uint8], up), cast(npt.NDArray[np.uint8], down))


def key_light_map(size: tuple[int, int], landmarks: Landmarks, settings: RelightSettings) -> KeyMap | None:
    """The key-light map for a frame of `size` (width, height) with the face at `landmarks`, or None when
    there is no key light (`key_light` "none", strength 0)."""
    if settings.key_light == "none" or settings.key_strength <= 0.0:
        return None
    return lighting.key_map(size, lighting.head_from_landmarks(landmarks), SETUPS[settings.key_light],
                            KEY_STYLES[settings.key_style], settings.key_strength)


def apply(image: RGBImage, tables: ToneTables, key: KeyMap | None = None,
          region: tuple[int, int, int, int] | None = None) -> RGBImage:
    """Relight `image` (RGB uint8 HxWx3): each pixel through the tone curve of its gain, the exposure gains
    times `key`'s gain there (1 outside it). Where the key brightens, the curve at gain 1 is blended toward
    the curve at the map's highest gain by the map's weight, where it darkens toward the lowest: exact
    wherever the curves are straight (below the shoulder), and above it a blend of curves that all roll off
    to white, so the key light adds no clipping. Returns a new image.

    `region` (x0, y0, x1, y1), inside the image: relight only that part and return it (a new array of its
    size), equal to the same part of the whole image relit; `key` stays in the whole image's pixels."""
    x0, y0 = (0, 0) if region is None else region[:2]
    source = image if region is None else image[region[1] : region[3], region[0] : region[2]]
    out = cast(RGBImage, cv2.LUT(source, tables.base))
    if key is None or tables.up is None or tables.down is None:
        return out
    height, width = out.shape[:2]
    for patch, table, combine in ((key.up, tables.up, cv2.add), (key.down, tables.down, cv2.subtract)):
        if patch is None:
            continue
        ph, pw = patch.weights.shape[:2]
        # The patch's part inside the region, in the region's pixels and in the patch's.
        rx0, ry0 = max(patch.x0 - x0, 0), max(patch.y0 - y0, 0)
        rx1, ry1 = min(patch.x0 + pw - x0, width), min(patch.y0 + ph - y0, height)
        if rx1 <= rx0 or ry1 <= ry0:
            continue
        inside = (slice(ry0, ry1), slice(rx0, rx1))
        weights = patch.weights[ry0 + y0 - patch.y0 : ry1 + y0 - patch.y0, rx0 + x0 - patch.x0 : rx1 + x0 - patch.x0]
        step = cv2.LUT(source[inside], table)
        cv2.multiply(step, weights, dst=step, scale=1.0 / 255.0)
        target = out[inside]
        combine(target, step, dst=target)
    return out
