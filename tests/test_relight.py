"""Relighting: face stats, exposure and white balance toward targets, tone tables, key light."""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np
import pytest

from engine import relight as rl
from engine.relight import LightState, RelightSettings
from engine.skin import FACE_OVAL
from tests._landmarks import photo_landmarks, read_rgb

PHOTO = "images/faces/obama_official_2012.jpg"  # well exposed: face luma about 0.57
LUMA = np.array(rl.LUMA_WEIGHTS, np.float32)


def face_luma(image: np.ndarray, landmarks: np.ndarray) -> float:
    stats = rl.face_region_stats(image, landmarks)
    assert stats is not None
    return float(stats @ LUMA / 255.0)


def relit(image: np.ndarray, landmarks: np.ndarray, settings: RelightSettings) -> np.ndarray:
    """One snap of the light state on this face, then the tone table applied (no key light)."""
    state = rl.update_light(LightState(), rl.face_region_stats(image, landmarks), 0, settings)
    return rl.apply(image, rl.tone_luts(state.gains), None)


def test_face_region_stats_is_the_mean_over_the_face() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    stats = rl.face_region_stats(image, landmarks)
    assert stats is not None and stats.dtype == np.float32 and stats.shape == (3,)
    # Reference: the same shrunken hull at full resolution.
    oval = landmarks[list(FACE_OVAL), :2]
    hull = oval.mean(axis=0) + 0.8 * (oval - oval.mean(axis=0))
    region = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(region, np.round(hull - 0.5).astype(np.int32), 255)
    reference = np.array(cv2.mean(image, region)[:3])
    assert np.abs(stats - reference).max() < 3.0
    assert stats[0] > stats[1] > stats[2]  # skin: R > G > B
    far_away = landmarks.copy()
    far_away[:, :2] += 5000
    assert rl.face_region_stats(image, far_away) is None


def test_dark_face_is_brought_toward_the_target() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    dark = cv2.convertScaleAbs(image, alpha=0.45)
    settings = RelightSettings()
    before = face_luma(dark, landmarks)
    after = face_luma(relit(dark, landmarks, settings), landmarks)
    assert before < 0.3
    assert abs(after - settings.target_luma) < 0.04
    # max_gain caps the correction of a very dark face.
    very_dark = cv2.convertScaleAbs(image, alpha=0.15)
    capped = face_luma(relit(very_dark, landmarks, RelightSettings(max_gain=2.0)), landmarks)
    assert capped < 0.25


def test_well_exposed_face_is_nearly_unchanged() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    out = relit(image, landmarks, RelightSettings())
    assert np.abs(out.astype(np.float32) - image).mean() < 6.0
    assert abs(face_luma(out, landmarks) - 0.55) < 0.03


def test_white_balance_moves_a_colour_cast_toward_skin() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    blue = image.copy()
    blue[:, :, 0] = (image[:, :, 0] * 0.8).astype(np.uint8)  # a cool cast: less red
    before = rl.face_region_stats(blue, landmarks)
    after = rl.face_region_stats(relit(blue, landmarks, RelightSettings(white_balance=1.0)), landmarks)
    assert before is not None and after is not None
    target = rl.SKIN_REFERENCE_RG
    assert abs(after[0] / after[1] - target) < abs(before[0] / before[1] - target) / 2
    gains = rl.target_gains(np.array([100.0, 100.0, 100.0], np.float32), RelightSettings(white_balance=1.0))
    assert rl.WB_GAIN_RANGE[0] <= gains[0] / gains[1] <= rl.WB_GAIN_RANGE[1]  # clamped
    assert rl.WB_GAIN_RANGE[0] <= gains[2] / gains[1] <= rl.WB_GAIN_RANGE[1]


def test_gains_adapt_with_the_time_constant_and_drift_back_without_a_face() -> None:
    settings = RelightSettings(adapt_s=0.6)
    mean = np.array([60.0, 40.0, 33.0], np.float32)  # a dark face
    target = rl.target_gains(mean, settings)
    start = LightState((1.0, 1.0, 1.0), 0)
    after = rl.update_light(start, mean, 600, settings)  # one time constant
    for g, t in zip(after.gains, target, strict=True):
        assert np.log(g) == pytest.approx((1 - np.exp(-1)) * np.log(t), rel=1e-6)
    snapped = rl.update_light(LightState(), mean, 0, settings)  # the very first face snaps
    assert snapped.gains == target
    state = snapped
    for i in range(1, 1000):  # 33 s: many drift time constants
        state = rl.update_light(state, None, i * 33, settings)
    assert state.gains == pytest.approx((1.0, 1.0, 1.0), abs=1e-3)
    off = rl.update_light(snapped, mean, 33, dataclasses.replace(settings, enabled=False))
    assert off.gains == (1.0, 1.0, 1.0)


def test_tone_luts_identity_monotonic_and_soft_shoulder() -> None:
    identity = rl.tone_luts((1.0, 1.0, 1.0))
    assert identity.shape == (256, 1, 3) and identity.dtype == np.uint8
    assert np.array_equal(identity[:, 0, 0], np.arange(256))
    lut = rl.tone_luts((2.0, 1.3, 0.7))
    for channel in range(3):
        assert (np.diff(lut[:, 0, channel].astype(int)) >= 0).all()
    red = lut[:, 0, 0].astype(int)
    assert red[50] == 100  # below the knee: a straight multiply
    assert red[255] == 255 and red[200] < 255 and red[160] < 255  # highlights roll off, no clipping
    assert lut[255, 0, 2] == round(0.7 * 255)


def test_key_light_brightens_the_key_side() -> None:
    size, centre, face = (640, 360), (320.0, 160.0), 110.0
    left = rl.key_light_map(size, centre, face, "left", 0.5)
    assert left.shape == (360, 640) and left.dtype == np.uint8
    assert left[:, :200].mean() > rl.KEY_MAP_UNIT > left[:, 440:].mean()
    right = rl.key_light_map(size, centre, face, "right", 0.5)
    assert right[:, 440:].mean() > right[:, :200].mean()
    assert (rl.key_light_map(size, centre, face, "none", 0.5) == rl.KEY_MAP_UNIT).all()
    assert (rl.key_light_map(size, centre, face, "left", 0.0) == rl.KEY_MAP_UNIT).all()
    gentle = rl.key_light_map(size, centre, face, "left", 0.25)
    assert np.abs(np.diff(gentle.astype(int), axis=1)).max() <= 2  # a broad soft lobe

    grey = np.full((360, 640, 3), 100, np.uint8)
    out = rl.apply(grey, rl.tone_luts((1.0, 1.0, 1.0)), left)
    face_left, face_right = out[120:200, 250:300].mean(), out[120:200, 340:390].mean()
    assert face_left > face_right  # the lit side of the face is brighter
    assert np.array_equal(out, rl.apply(grey, rl.tone_luts((1.0, 1.0, 1.0)), np.dstack([left] * 3)))


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("target_luma", 0.1, r"^target_luma = 0.1: must be between 0.2 and 0.9"),
        ("max_gain", 5.0, r"^max_gain = 5.0: must be between"),
        ("white_balance", 1.5, r"^white_balance = 1.5"),
        ("key_light", "top", r"^key_light = 'top': must be one of 'left', 'right', 'none'"),
        ("key_strength", -0.1, r"^key_strength = -0.1"),
        ("adapt_s", 11.0, r"^adapt_s = 11.0"),
    ],
)
def test_settings_validation_names_the_field(field: str, value: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(RelightSettings(), **{field: value})
