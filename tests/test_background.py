"""Background: settings, backdrops, blur, mask refinement and compositing."""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np
import pytest

from engine import background as bg
from engine.background import BackgroundSettings
from tests._landmarks import read_rgb

SIZE = (1280, 720)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"mode": "space"}, r"^mode = 'space': must be one of 'studio', 'blur', 'color', 'image'"),
        ({"color": "red"}, r"^color = 'red': must be a hex colour"),
        ({"color": "#12345"}, r"^color = '#12345'"),
        ({"mode": "image"}, r"^image = '': must name an image file"),
        ({"blur_sigma": 0.1}, r"^blur_sigma = 0.1: must be between 0.5 and 100"),
        ({"feather_px": 51.0}, r"^feather_px = 51.0: must be between"),
        ({"mask_smoothing": 0.99}, r"^mask_smoothing = 0.99: must be between 0.0 and 0.95"),
        ({"enabled": 1}, r"^enabled = 1: must be true or false"),
    ],
)
def test_settings_validation_names_the_field(changes: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(BackgroundSettings(), **changes)


def test_valid_settings() -> None:
    BackgroundSettings(mode="image", image="/some/where.png")
    BackgroundSettings(mode="color", color="#A0b0C0")


def test_studio_backdrop_is_lit_behind_the_head_and_smooth() -> None:
    backdrop = bg.studio_backdrop(SIZE)
    assert backdrop.shape == (720, 1280, 3) and backdrop.dtype == np.uint8
    assert np.array_equal(backdrop, bg.studio_backdrop(SIZE))  # deterministic
    luma = backdrop.astype(np.float32).mean(axis=2)
    centre = luma[250:300, 615:665].mean()
    corners = [luma[:40, :40].mean(), luma[:40, -40:].mean(), luma[-40:, :40].mean(), luma[-40:, -40:].mean()]
    assert centre > max(corners) + 40  # a pool of light, darker vignette
    assert luma[:40, 600:680].mean() > luma[-40:, 600:680].mean()  # lighter top than floor
    # Smooth: neighbouring pixels differ by a couple of levels at most (dither, no steps or edges).
    assert np.abs(np.diff(luma, axis=1)).max() <= 3.0
    # Dithered: a row is not a staircase of long runs of equal values.
    row = backdrop[360, 200:1080, 1].astype(int)
    assert (np.diff(row) != 0).mean() > 0.3


def test_solid() -> None:
    image = bg.solid((64, 32), "#2b3a4a")
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    assert (image == (0x2B, 0x3A, 0x4A)).all()
    with pytest.raises(ValueError, match="color"):
        bg.solid((8, 8), "blue")


def test_cover_resize_fills_and_crops_centrally() -> None:
    photo = read_rgb("images/faces/biden_official_portrait.jpg")  # 1200x1200
    out = bg.cover_resize(photo, SIZE)
    assert out.shape == (720, 1280, 3) and out.dtype == np.uint8
    # The square is scaled to 1280 wide and its middle 720 rows kept: the centre stays the centre.
    scaled_centre = photo[560:640, 560:640].astype(np.float32).mean(axis=(0, 1))
    assert np.abs(out[320:400, 600:680].astype(np.float32).mean(axis=(0, 1)) - scaled_centre).max() < 8
    tall = bg.cover_resize(photo[:, :300], (100, 100))
    assert tall.shape == (100, 100, 3)


def test_blurred_removes_detail_and_keeps_flat_areas() -> None:
    photo = bg.cover_resize(read_rgb("images/faces/obama_official_2012.jpg"), SIZE)
    out = bg.blurred(photo, 12.0)
    assert out.shape == photo.shape and out.dtype == np.uint8

    def detail(image: np.ndarray) -> float:
        return float(np.abs(cv2.Laplacian(image.astype(np.float32), cv2.CV_32F)).mean())

    assert detail(out) < detail(photo) / 5  # what is left is mostly 8-bit rounding
    flat = np.full((90, 160, 3), 77, np.uint8)
    assert np.array_equal(bg.blurred(flat, 12.0), flat)
    assert np.array_equal(bg.blurred(flat, 1.0), flat)


def test_masked_blur_keeps_the_person_out_of_the_background() -> None:
    image = np.full((90, 160, 3), 40, np.uint8)
    image[:, 80:] = 250  # the "person" on the right is bright
    person = np.zeros((90, 160), np.float32)
    person[:, 80:] = 1.0
    plain = bg.masked_blur(image, 6.0)
    masked = bg.masked_blur(image, 6.0, person)
    # Just left of the outline the plain blur glows; the masked one stays background-coloured.
    assert plain[45, 76, 0] > 80
    assert abs(int(masked[45, 76, 0]) - 40) <= 1
    assert np.array_equal(bg.masked_blur(image, 6.0, (person * 255).astype(np.uint8))[:, :70], masked[:, :70])


def test_refine_mask_feathers_and_smooths_over_time() -> None:
    step = np.zeros((60, 80), np.float32)
    step[:, 40:] = 1.0
    assert np.array_equal(bg.refine_mask(step, 0.0, None, 0.4), step)
    soft = bg.refine_mask(step, 3.0, None, 0.4)
    assert soft.dtype == np.float32 and soft.shape == step.shape
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    assert 0.05 < soft[30, 38] < 0.5 < soft[30, 41] < 0.95  # a soft edge where the hard one was
    assert soft[30, 5] == pytest.approx(0.0, abs=1e-6) and soft[30, 75] == pytest.approx(1.0, abs=1e-6)
    previous = np.ones((60, 80), np.float32)
    mixed = bg.refine_mask(np.zeros((60, 80), np.float32), 0.0, previous, 0.4)
    assert mixed == pytest.approx(np.full((60, 80), 0.4, np.float32))
    # Denormal floats from a segmenter (and the decaying average) are flushed to 0.
    tiny = np.full((60, 80), 1e-40, np.float32)
    assert not bg.refine_mask(tiny, 2.0, tiny, 0.4).any()
    # A previous mask of another size (the camera changed) is ignored.
    assert np.array_equal(bg.refine_mask(step, 0.0, np.ones((10, 10), np.float32), 0.4), step)


def test_composite_alpha_one_and_zero_give_fg_and_bg_exactly() -> None:
    fg = read_rgb("images/faces/obama_official_2012.jpg")[:200, :300]
    back = bg.solid((300, 200), "#2b3a4a")
    ones = np.ones((200, 300), np.float32)
    assert np.array_equal(bg.composite(fg, back, ones), fg)
    assert np.array_equal(bg.composite(fg, back, np.zeros_like(ones)), back)
    assert np.array_equal(bg.composite(fg, back, np.full((200, 300), 255, np.uint8)), fg)
    half = bg.composite(fg, back, ones * 0.5)
    expected = (fg.astype(np.float32) + back) / 2
    assert np.abs(half - expected).max() <= 1.5
    split = ones.copy()
    split[:, :150] = 0.0
    out = bg.composite(fg, back, split)
    assert np.array_equal(out[:, 150:], fg[:, 150:]) and np.array_equal(out[:, :150], back[:, :150])


def test_composite_of_a_foreground_part_placed_at_its_rectangle() -> None:
    """The studio engine makes only the part of the foreground the alpha shows: placed `at` (x, y), the result
    is the composite of the whole foreground."""
    fg = read_rgb("images/faces/obama_official_2012.jpg")[:200, :300]
    back = bg.studio_backdrop((300, 200))
    alpha = np.zeros((200, 300), np.uint8)
    cv2.ellipse(alpha, (150, 110), (60, 80), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 3.0)
    x, y, w, h = cv2.boundingRect(alpha)
    whole = bg.composite(fg, back, alpha)
    for (px, py), part in (((x, y), fg[y : y + h, x : x + w]), ((x - 5, y - 7), fg[y - 7 : y + h + 3, x - 5 : x + w])):
        assert np.array_equal(bg.composite(part, back, alpha, (px, py)), whole)
    assert np.array_equal(bg.composite(fg[:10, :10], back, alpha, (0, 0)), back)  # the alpha is 0 there
