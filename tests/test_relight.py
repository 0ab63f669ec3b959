"""Relighting on real photos with real landmarks: exposure on the skin for every skin tone, white balance,
tone tables, a key light you can see that adds no clipping, and the lighting setups."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import cv2
import numpy as np
import pytest

from engine import lighting
from engine import relight as rl
from engine.lighting import measure_face_light
from engine.relight import LightState, RelightSettings
from engine.skin import FACE_OVAL, FEATURES, fill_polygons
from tests._landmarks import photo_landmarks, read_rgb

PHOTO = "images/faces/obama_official_2012.jpg"  # well exposed, frontal: skin luma about 0.63
TURNED = "images/faces/obama_congress_2009.jpg"  # head turned a little; the old key light clipped 17% of it
LIGHT_SKIN = "images/identity/meds-aa-S001-01.jpg"
DARK_SKIN = "images/identity/meds-aa-S008-01.jpg"
LUMA = np.array(rl.LUMA_WEIGHTS, np.float32)


def face_luma(image: np.ndarray, landmarks: np.ndarray) -> float:
    stats = rl.face_region_stats(image, landmarks)
    assert stats is not None
    return float(stats @ LUMA / 255.0)


def relit(image: np.ndarray, landmarks: np.ndarray, settings: RelightSettings) -> np.ndarray:
    """The relight stage as the studio engine runs it on a still: the gains snap to this face."""
    stats = rl.face_region_stats(image, landmarks)
    state = rl.update_light(LightState(), stats, 0, settings, rl.scene_highlight(image))
    key = rl.key_light_map((image.shape[1], image.shape[0]), landmarks, settings)
    return rl.apply(image, rl.tone_tables(state.gains, key), key)


NO_KEY = RelightSettings(key_light="none")


def test_face_region_stats_measure_the_skin_only() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    stats = rl.face_region_stats(image, landmarks)
    assert stats is not None and stats.dtype == np.float32 and stats.shape == (3,)
    # Reference at full resolution: the oval shrunk the same, less eyes, brows and lips.
    oval = landmarks[list(FACE_OVAL), :2].astype(np.float64)
    region = np.zeros(image.shape[:2], np.uint8)
    fill_polygons(region, [oval.mean(axis=0) + 0.9 * (oval - oval.mean(axis=0))], 255)
    face_px = float(np.hypot(*(landmarks[152, :2] - landmarks[10, :2])))
    fill_polygons(region, [landmarks[list(f), :2] for f in FEATURES], 0, outline_px=0.05 * face_px)
    assert np.abs(stats - np.array(cv2.mean(image, region)[:3])).max() < 3.0
    assert stats[0] > stats[1] > stats[2]  # skin: R > G > B
    # White eyes and teeth, or black hair and background: the skin's measure barely moves.
    white_features = image.copy()
    fill_polygons(white_features, [landmarks[list(f), :2] for f in FEATURES], 255)
    black_surround = image.copy()
    fill_polygons(black_surround, [oval], 0)
    black_surround[:] = np.where(black_surround == 0, image, 0)  # everything outside the whole oval
    for painted in (white_features, black_surround):
        assert np.abs(rl.face_region_stats(painted, landmarks) - stats).max() < 3.0  # type: ignore[operator]
    far_away = landmarks.copy()
    far_away[:, :2] += 5000
    assert rl.face_region_stats(image, far_away) is None


def test_a_darkened_photo_is_lifted_to_the_target() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    settings = RelightSettings(key_light="none")
    dark = cv2.convertScaleAbs(image, alpha=0.35)  # the whole picture under-exposed: its highlights are dim
    before = face_luma(dark, landmarks)
    after = face_luma(relit(dark, landmarks, settings), landmarks)
    assert before < 0.25
    assert abs(after - settings.target_luma) < 0.06, after
    # The pipeline before lifted it to 0.38 (max_gain 2); the cap still holds when asked for.
    capped = face_luma(relit(cv2.convertScaleAbs(image, alpha=0.15), landmarks,
                             dataclasses.replace(settings, max_gain=2.0)), landmarks)
    assert capped < 0.25


@pytest.mark.parametrize("photo", [LIGHT_SKIN, DARK_SKIN, "images/identity/meds-aa-S008-03.jpg"])
def test_every_skin_tone_lands_in_a_good_range_without_clipping(photo: str) -> None:
    image, landmarks = read_rgb(photo), photo_landmarks(photo)
    out = relit(image, landmarks, RelightSettings())
    before, after = measure_face_light(image, landmarks), measure_face_light(out, landmarks)
    assert 0.3 <= after.luma <= 0.7, after
    assert after.clipped_pct <= before.clipped_pct + 0.5


def test_darker_skin_stays_darker_than_lighter_skin() -> None:
    """Exposure moves faces toward the target, not onto it: a dark-skinned face in a well-exposed photo is
    lifted (0.25 -> about 0.39) but stays darker than a light-skinned one (0.61 -> about 0.57)."""
    lumas = {}
    for photo in (LIGHT_SKIN, DARK_SKIN):
        image, landmarks = read_rgb(photo), photo_landmarks(photo)
        lumas[photo] = (face_luma(image, landmarks), face_luma(relit(image, landmarks, NO_KEY), landmarks))
    (light_in, light_out), (dark_in, dark_out) = lumas[LIGHT_SKIN], lumas[DARK_SKIN]
    assert dark_out > dark_in + 0.1 and abs(light_out - 0.55) < abs(light_in - 0.55)
    assert dark_out < light_out - 0.1


def test_well_exposed_face_is_nearly_unchanged() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    out = relit(image, landmarks, NO_KEY)
    assert np.abs(out.astype(np.float32) - image).mean() < 8.0
    assert abs(face_luma(out, landmarks) - face_luma(image, landmarks)) < 0.05


def test_scene_highlight_is_the_pictures_bright_end() -> None:
    grey = np.full((720, 1280, 3), 100, np.uint8)
    assert rl.scene_highlight(grey) == pytest.approx(100 / 255, abs=1e-3)
    grey[:100] = 250  # 14% of the picture bright
    assert rl.scene_highlight(grey) == pytest.approx(250 / 255, abs=1e-3)


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
    dim = rl.update_light(LightState(), mean, 0, settings, highlight=0.3)  # a dim picture: lifted further
    assert dim.gains[1] > target[1]
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


@pytest.mark.parametrize("photo", [PHOTO, TURNED, LIGHT_SKIN, DARK_SKIN])
def test_the_key_light_is_visible_and_adds_no_clipping(photo: str) -> None:
    """Default strength: the key half of the face (the viewer's left) at least 1.2x the other half, more
    than the photo's own light gave it; at most 0.5 percentage points more clipped skin than the input.
    (Before: 1.03x, and 17% of the skin at 255 on the turned photo.)"""
    image, landmarks = read_rgb(photo), photo_landmarks(photo)
    before = measure_face_light(image, landmarks)
    soft = measure_face_light(relit(image, landmarks, RelightSettings()), landmarks)
    strong = measure_face_light(relit(image, landmarks, RelightSettings(key_style="strong")), landmarks)
    off = measure_face_light(relit(image, landmarks, NO_KEY), landmarks)
    ratio_in = before.left / before.right
    assert off.left / off.right == pytest.approx(ratio_in, rel=0.02)  # no key light: the photo's own balance
    assert soft.left / soft.right >= 1.2 * ratio_in
    assert strong.left / strong.right >= 1.1 * soft.left / soft.right
    for result in (soft, strong):
        assert result.clipped_pct <= before.clipped_pct + 0.5


def test_key_light_none_and_strength_zero_are_the_tone_table_alone() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    assert rl.key_light_map((image.shape[1], image.shape[0]), landmarks, NO_KEY) is None
    zero = RelightSettings(key_strength=0.0)
    assert rl.key_light_map((image.shape[1], image.shape[0]), landmarks, zero) is None
    gains = (1.1, 1.0, 0.9)
    assert np.array_equal(rl.apply(image, rl.tone_tables(gains)), cv2.LUT(image, rl.tone_luts(gains)))
    assert np.array_equal(relit(image, landmarks, NO_KEY), relit(image, landmarks, zero))


@pytest.mark.parametrize("region", [(0, 0, 1, 1), (100, 80, 500, 420), (0, 0, 10_000, 10_000), (300, 0, 320, 5)])
def test_a_region_is_relit_as_the_whole_frame_is_there(region: tuple[int, int, int, int]) -> None:
    """The studio engine relights only the part of the frame the output shows: that part must come out as it
    does when the whole frame is relit, key light included (its patches cut where the region ends)."""
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    ih, iw = image.shape[:2]
    x0, y0, x1, y1 = region[0], region[1], min(region[2], iw), min(region[3], ih)
    key = rl.key_light_map((iw, ih), landmarks, RelightSettings())
    assert key is not None
    tables = rl.tone_tables((1.2, 1.1, 0.95), key)
    part = rl.apply(image, tables, key, (x0, y0, x1, y1))
    assert part.shape == (y1 - y0, x1 - x0, 3)
    assert np.array_equal(part, rl.apply(image, tables, key)[y0:y1, x0:x1])


def test_key_map_parts_and_below_the_shoulder_a_multiply() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    size = (image.shape[1], image.shape[0])
    key = rl.key_light_map(size, landmarks, RelightSettings())
    assert key is not None and key.lo < 1.0 < key.hi and key.up is not None and key.down is not None
    gain = np.ones(image.shape[:2])
    for patch, end, sign in ((key.up, key.hi, 1.0), (key.down, key.lo, -1.0)):
        assert patch.weights.dtype == np.uint8 and patch.weights.shape[2] == 3
        gain[patch.box()] += sign * abs(end - 1.0) * patch.weights[:, :, 0] / 255.0
    head = lighting.head_from_landmarks(landmarks)
    left, right = gain[:, : int(head.cx)], gain[:, int(head.cx):]
    assert left.max() > 1.1 and right.min() < 0.9  # the key on the viewer's left, the fill side darker
    assert np.ptp(gain[:, :40]) < 0.01  # far from the head: 1
    grey = np.full_like(image, 80)
    gains = (1.0, 1.0, 1.0)
    out = rl.apply(grey, rl.tone_tables(gains, key), key)
    # At 80 the curves are straight lines: the output is 80 times the map's gain, to the rounding.
    assert np.abs(out[:, :, 0] - 80.0 * gain).max() <= 1.5
    # Nothing rises to 255 that was not there (the shoulder takes the light); white where the key adds
    # light stays white, and a highlight where the map is about 1 keeps its level.
    lit = rl.apply(np.full_like(image, 220), rl.tone_tables((1.3, 1.3, 1.3), key), key)
    assert lit.max() < 255
    white = rl.apply(np.full_like(image, 255), rl.tone_tables(gains, key), key)
    assert (white[:, :, 0][gain >= 1.0] == 255).all()
    bright = rl.apply(np.full_like(image, 235), rl.tone_tables(gains, key), key)
    assert np.abs(bright[:, :, 0].astype(int) - 235)[np.abs(gain - 1.0) < 0.005].max() <= 2


def _gain(key: lighting.KeyMap, shape: tuple[int, int]) -> np.ndarray:
    gain = np.ones(shape)
    for patch, end, sign in ((key.up, key.hi, 1.0), (key.down, key.lo, -1.0)):
        if patch is not None:
            gain[patch.box()] += sign * abs(end - 1.0) * patch.weights[:, :, 0] / 255.0
    return gain


def test_a_key_map_moved_with_the_head_is_the_map_of_the_moved_head() -> None:
    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    size = (image.shape[1], image.shape[0])
    settings = RelightSettings()
    key = rl.key_light_map(size, landmarks, settings)
    assert key is not None
    for dx, dy in ((9, -4), (-13, 6)):
        moved = landmarks.copy()
        moved[:, 0] += dx
        moved[:, 1] += dy
        fresh = rl.key_light_map(size, moved, settings)
        shifted = lighting.shift_map(key, dx, dy, size)
        assert fresh is not None and shifted is not None and (shifted.lo, shifted.hi) == (key.lo, key.hi)
        head = lighting.head_from_landmarks(moved)
        face = (slice(int(head.cy - head.half_height), int(head.cy + head.half_height)),
                slice(int(head.cx - head.half_width), int(head.cx + head.half_width)))
        difference = np.abs(_gain(shifted, image.shape[:2]) - _gain(fresh, image.shape[:2]))[face]
        # The coarse grid's cells lie differently and the dither moves: not bit-exact (max 0.033 measured).
        assert difference.mean() < 0.002 and np.percentile(difference, 99) < 0.015 and difference.max() < 0.05
    # Cut where it leaves the frame, gone when it leaves it whole.
    edge = lighting.shift_map(key, -size[0] // 2, 0, size)
    assert edge is not None and all(p is None or p.x0 >= 0 for p in (edge.up, edge.down))
    assert lighting.shift_map(key, size[0] * 2, 0, size) is None


def test_the_key_light_holds_steady_on_a_moving_head() -> None:
    """The studio engine rebuilds its key map only when the head moved noticeably; in between the map moves with
    the head. A map left in place lit a moving face's key side less each frame, then snapped back: the ratio
    pumped by 0.12 over a few frames (benchmarks/picture_quality.py, cam_laptop clip)."""
    from engine.background import BackgroundSettings
    from engine.framing import FramingSettings
    from engine.skin import SkinSettings
    from engine.studio import StudioRenderer
    from engine.types import Face

    image, landmarks = read_rgb(PHOTO), photo_landmarks(PHOTO)
    height, width = image.shape[:2]
    settings = RelightSettings(key_light="left")
    renderer = StudioRenderer((width, height), FramingSettings(enabled=False), BackgroundSettings(enabled=False),
                              settings, SkinSettings(enabled=False))
    renderer.prepare()
    head = lighting.head_from_landmarks(landmarks)
    ratios = []
    for step in range(6):  # 2 px a frame: within the rebuild tolerance throughout
        dx = 2 * step
        frame = np.ascontiguousarray(np.roll(image, dx, axis=1))
        moved = landmarks.copy()
        moved[:, 0] += dx
        out = renderer.render(frame, Face(moved, (width, height)), None, step * 33)
        cx = int(head.cx) + dx
        band = slice(int(head.cy - 0.3 * head.half_height), int(head.cy + 0.3 * head.half_height))
        luma = out[band].astype(np.float32) @ LUMA
        half = int(0.6 * head.half_width)
        ratios.append(float(luma[:, cx - half:cx].mean() / luma[:, cx:cx + half].mean()))
    assert max(ratios) - min(ratios) < 0.01, ratios


def test_the_setups_differ_visibly() -> None:
    """Four setups, every pair at least 4 grey levels apart on average over the skin (the stills' variants
    before: 0.7 to 2.2 levels apart)."""
    for photo in (PHOTO, TURNED):
        image, landmarks = read_rgb(photo), photo_landmarks(photo)
        skin = lighting.skin_mask(image.shape, landmarks) > 0.5
        outs = {name: relit(image, landmarks, RelightSettings(key_light=name))
                for name in ("broad", "short", "butterfly", "rim")}
        for a, b in itertools.combinations(outs, 2):
            difference = cv2.absdiff(outs[a], outs[b]).mean(axis=2)[skin].mean()
            assert difference >= 4.0, (photo, a, b, difference)


def test_broad_and_short_follow_the_heads_turn() -> None:
    image, landmarks = read_rgb(TURNED), photo_landmarks(TURNED)
    head = lighting.head_from_landmarks(landmarks)
    assert abs(head.turn) > 0.1  # the turned photo
    mirrored = np.ascontiguousarray(image[:, ::-1])
    flipped = landmarks.copy()
    flipped[:, 0] = image.shape[1] - landmarks[:, 0]
    assert lighting.head_from_landmarks(flipped).turn == pytest.approx(-head.turn, abs=1e-6)
    broad, short = rl.setup("broad"), rl.setup("short")
    assert np.sign(lighting.key_azimuth(broad, head.turn)) == -np.sign(head.turn)  # the side toward the camera
    assert np.sign(lighting.key_azimuth(short, head.turn)) == np.sign(head.turn)  # where the nose points
    # Mirroring the photo mirrors the light: the lit half swaps.
    for name in ("broad", "short"):
        a = measure_face_light(relit(image, landmarks, RelightSettings(key_light=name)), landmarks)
        b = measure_face_light(relit(mirrored, flipped, RelightSettings(key_light=name)), flipped)
        assert (a.left > a.right) == (b.right > b.left)
    with pytest.raises(ValueError, match=r"^key_light = 'loop': must be one of 'left', 'right', 'broad'"):
        rl.setup("loop")


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("target_luma", 0.1, r"^target_luma = 0.1: must be between 0.2 and 0.9"),
        ("max_gain", 5.0, r"^max_gain = 5.0: must be between"),
        ("white_balance", 1.5, r"^white_balance = 1.5"),
        ("key_light", "top", r"^key_light = 'top': must be one of 'left', 'right', 'broad', .*'none'"),
        ("key_style", "hard", r"^key_style = 'hard': must be one of 'soft', 'strong'"),
        ("key_strength", -0.1, r"^key_strength = -0.1"),
        ("exposure_strength", 1.5, r"^exposure_strength = 1.5"),
        ("min_luma", 0.9, r"^min_luma = 0.9"),
        ("adapt_s", 11.0, r"^adapt_s = 11.0"),
    ],
)
def test_settings_validation_names_the_field(field: str, value: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(RelightSettings(), **{field: value})
