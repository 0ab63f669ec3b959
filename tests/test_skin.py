"""Skin smoothing: the skin mask from real landmarks and the edge-preserving smoothing."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from engine import skin as sk
from engine.skin import SkinSettings
from tests._landmarks import photo_landmarks, read_rgb

PHOTO = "images/faces/obama_official_2012.jpg"


def point(landmarks: np.ndarray, index: int) -> tuple[int, int]:
    """(row, col) of a landmark, for indexing."""
    return int(landmarks[index, 1]), int(landmarks[index, 0])


def test_index_lists_are_closed_polygons_of_valid_indices() -> None:
    for polygon in (sk.FACE_OVAL, *sk.FEATURES):
        assert len(set(polygon)) == len(polygon) >= 10
        assert all(0 <= i < 468 for i in polygon)


def test_skin_mask_covers_skin_and_spares_eyes_brows_lips() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    mask = sk.skin_mask(image.shape, landmarks)
    assert mask.shape == image.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    cheek_left, cheek_right, forehead = point(landmarks, 50), point(landmarks, 280), point(landmarks, 151)
    assert mask[cheek_left] > 0.9 and mask[cheek_right] > 0.9 and mask[forehead] > 0.9
    for feature in (468, 473, 13, 14, 105, 334):  # iris centres, inner lips, brows
        assert mask[point(landmarks, feature)] < 0.2, feature
    assert mask[20, 20] == 0.0 and mask[-20, -20] == 0.0


def high_frequency(image: np.ndarray, weight: np.ndarray) -> float:
    """Mean absolute Laplacian of the luma, weighted by `weight`."""
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float((np.abs(cv2.Laplacian(luma, cv2.CV_32F)) * weight).sum() / weight.sum())


@pytest.mark.parametrize("scale", [1.0, 0.35])  # face ~300 px (worked at 1/3 size) and ~100 px (full)
def test_smoothing_reduces_fine_detail_on_the_skin_only(scale: float) -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        landmarks = landmarks * np.float32(scale)
    original = image.copy()
    out = sk.smooth_skin(image, landmarks, 0.8)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(original, image)  # the input is not modified
    skin = (sk.skin_mask(image.shape, landmarks) > 0.95).astype(np.float32)
    assert high_frequency(out, skin) < 0.75 * high_frequency(image, skin)
    stronger = sk.smooth_skin(image, landmarks, 1.0)
    assert high_frequency(stronger, skin) < high_frequency(out, skin)
    # Outside the face's box nothing changes, bit for bit.
    roi = sk.face_roi(image.shape, landmarks)
    assert roi is not None
    x0, y0, x1, y1 = roi
    outside = np.ones(image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], image[outside])
    # The eyes stay sharp.
    r, c = point(landmarks, 468)
    half = max(3, round(8 * scale))
    eye = (slice(r - half, r + half), slice(c - half, c + half))
    assert np.abs(out[eye].astype(int) - image[eye]).mean() < 2.0


def test_zero_strength_and_no_face_area_change_nothing() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    assert np.array_equal(sk.smooth_skin(image, landmarks, 0.0), image)
    elsewhere = landmarks.copy()
    elsewhere[:, :2] += 5000  # the face is outside this image
    assert np.array_equal(sk.smooth_skin(image, elsewhere, 0.5), image)


def test_settings_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^strength = 1.5: must be between 0.0 and 1.0"):
        dataclasses.replace(SkinSettings(), strength=1.5)
    with pytest.raises(ValueError, match=r"^enabled = 'yes'"):
        SkinSettings(enabled="yes")  # type: ignore[arg-type]
