"""Framing: target box geometry on real landmarks, smooth follow, deadband, hold and return, warps."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import cv2
import numpy as np
import pytest

from engine import framing as fr
from engine.framing import Box, FramingSettings, FramingState
from tests._landmarks import photo_landmarks, read_rgb

PHOTO = "images/faces/obama_official_2012.jpg"  # 910x1137, face (10 -> 152) about 298 px
OUT = (1280, 720)
FRAME = (1920, 1080)
EYES = list(fr.EYE_CORNERS)


def placed_landmarks(scale: float = 0.5, offset: tuple[float, float] = (700.0, 300.0)) -> np.ndarray:
    """The photo's real landmarks as if the photo were scaled by `scale` and pasted at `offset` in a
    1920x1080 frame (a face of ~150 px in a wide room)."""
    points = photo_landmarks(PHOTO).astype(np.float64)
    points[:, :2] = points[:, :2] * scale + offset
    points[:, 2] *= scale
    return points.astype(np.float32)


def shifted(points: np.ndarray, dx: float, dy: float = 0.0) -> np.ndarray:
    out = points.copy()
    out[:, 0] += dx
    out[:, 1] += dy
    return out


def inside(box: Box, frame: tuple[int, int]) -> bool:
    eps = 1e-6
    return (
        box.cx - box.width / 2 >= -eps
        and box.cy - box.height / 2 >= -eps
        and box.cx + box.width / 2 <= frame[0] + eps
        and box.cy + box.height / 2 <= frame[1] + eps
    )


def test_target_box_puts_eyes_on_the_eye_line_and_sizes_the_face() -> None:
    settings = FramingSettings()
    box = fr.target_box(placed_landmarks(), FRAME, OUT, settings)
    assert box.width / box.height == pytest.approx(OUT[0] / OUT[1])
    out = fr.transform_points(placed_landmarks(), fr.box_to_affine(box, OUT))
    eyes = out[EYES, :2].mean(axis=0)
    assert eyes[0] == pytest.approx(OUT[0] / 2, abs=1.0)
    assert eyes[1] == pytest.approx(settings.eye_line * OUT[1], abs=1.0)
    face = np.hypot(*(out[152, :2] - out[10, :2]))
    assert face == pytest.approx(settings.face_height * OUT[1], abs=1.0)
    assert inside(box, FRAME)


def test_other_eye_line_and_face_height() -> None:
    settings = FramingSettings(face_height=0.2, eye_line=0.5)
    box = fr.target_box(placed_landmarks(), FRAME, OUT, settings)
    out = fr.transform_points(placed_landmarks(), fr.box_to_affine(box, OUT))
    assert out[EYES, 1].mean() == pytest.approx(0.5 * OUT[1], abs=1.0)
    assert np.hypot(*(out[152, :2] - out[10, :2])) == pytest.approx(0.2 * OUT[1], abs=1.0)


def test_max_zoom_limits_a_small_face() -> None:
    tiny = placed_landmarks(scale=0.1, offset=(900.0, 500.0))
    box = fr.target_box(tiny, FRAME, OUT, FramingSettings(max_zoom=3.0))
    assert OUT[1] / box.height == pytest.approx(3.0)
    out = fr.transform_points(tiny, fr.box_to_affine(box, OUT))
    assert out[EYES, 0].mean() == pytest.approx(OUT[0] / 2, abs=1.0)  # still centred


def test_box_is_shifted_inside_the_frame_near_an_edge() -> None:
    corner = placed_landmarks(offset=(-150.0, -60.0))  # face near the top-left corner
    box = fr.target_box(corner, FRAME, OUT, FramingSettings())
    assert inside(box, FRAME)
    assert box.cx - box.width / 2 == pytest.approx(0.0)
    assert box.cy - box.height / 2 == pytest.approx(0.0)


def test_box_larger_than_the_frame_is_shrunk_to_fit() -> None:
    # The full-size photo: the face is 298 px of a 910 px wide frame, too big for face_height 0.3.
    frame = (910, 1137)
    box = fr.target_box(photo_landmarks(PHOTO), frame, OUT, FramingSettings())
    assert box.width == pytest.approx(910.0)
    assert box.height == pytest.approx(910.0 * 9 / 16)
    assert inside(box, frame)


def test_full_frame_box() -> None:
    assert fr.full_frame_box((640, 480), OUT) == Box(320.0, 240.0, 640.0, 360.0)
    assert fr.full_frame_box((1920, 1080), OUT) == Box(960.0, 540.0, 1920.0, 1080.0)
    tall = fr.full_frame_box((480, 640), (640, 480))
    assert (tall.width, tall.height) == pytest.approx((480.0, 360.0))


def run(
    settings: FramingSettings,
    frames: list[np.ndarray | None],
    state: FramingState | None = None,
    start_ms: int = 0,
    step_ms: int = 33,
) -> tuple[FramingState, list[Box]]:
    state = state or FramingState()
    boxes = []
    for i, points in enumerate(frames):
        state, box = fr.update_framing(state, points, FRAME, OUT, start_ms + i * step_ms, settings)
        boxes.append(box)
    return state, boxes


def test_first_face_snaps_to_the_target() -> None:
    settings = FramingSettings()
    _, boxes = run(settings, [placed_landmarks()])
    assert boxes[0] == fr.target_box(placed_landmarks(), FRAME, OUT, settings)


def test_follow_is_exponential_and_converges() -> None:
    settings = FramingSettings(follow_s=0.35, deadband=0.0)
    start, moved = placed_landmarks(), shifted(placed_landmarks(), 150.0)
    state, _ = run(settings, [start])
    first = state.box
    assert first is not None
    goal = fr.target_box(moved, FRAME, OUT, settings)
    state, boxes = run(settings, [moved] * 90, state, start_ms=33)
    # One 33 ms step covers 1 - exp(-0.033 / 0.35) of the distance.
    k = 1 - np.exp(-0.033 / 0.35)
    assert boxes[0].cx - first.cx == pytest.approx(k * (goal.cx - first.cx), rel=1e-6)
    assert boxes[-1].cx == pytest.approx(goal.cx, abs=0.5)
    centres = [b.cx for b in boxes]
    assert all(b >= a for a, b in itertools.pairwise(centres))  # monotonic, no overshoot
    assert all(inside(b, FRAME) for b in boxes)


def test_deadband_holds_small_moves() -> None:
    settings = FramingSettings(deadband=0.03)
    state, boxes = run(settings, [placed_landmarks()])
    width = boxes[0].width
    nudged = shifted(placed_landmarks(), 0.02 * width, 0.01 * width)
    _, later = run(settings, [nudged] * 30, state, start_ms=33)
    assert all(b == boxes[0] for b in later)


def test_leaving_the_deadband_recentres_fully() -> None:
    settings = FramingSettings(deadband=0.03)
    state, boxes = run(settings, [placed_landmarks()])
    moved = shifted(placed_landmarks(), 0.05 * boxes[0].width)
    _, later = run(settings, [moved] * 120, state, start_ms=33)
    goal = fr.target_box(moved, FRAME, OUT, settings)
    # Hysteresis: the camera does not park at the deadband's edge but ends near the exact target.
    assert abs(later[-1].cx - goal.cx) < 0.1 * settings.deadband * boxes[0].width + 1e-6


def test_no_face_holds_then_returns_to_the_full_frame() -> None:
    settings = FramingSettings(hold_s=1.0, return_s=1.5)
    state, boxes = run(settings, [placed_landmarks()])
    framed = boxes[0]
    # 0.99 s without a face: held.
    state, held = run(settings, [None] * 30, state, start_ms=33)
    assert all(b == framed for b in held)
    # Then it glides, and after 10 time constants it is (almost) the full frame.
    state, gliding = run(settings, [None] * 500, state, start_ms=33 + 30 * 33)
    full = fr.full_frame_box(FRAME, OUT)
    assert gliding[0] != framed
    assert gliding[-1].height == pytest.approx(full.height, abs=0.5)
    assert gliding[-1].cx == pytest.approx(full.cx, abs=0.5)
    heights = [b.height for b in gliding]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(heights))


def test_no_face_ever_gives_the_full_frame() -> None:
    _, boxes = run(FramingSettings(), [None, None])
    assert boxes == [fr.full_frame_box(FRAME, OUT)] * 2


def test_disabled_always_gives_the_full_frame() -> None:
    _, boxes = run(FramingSettings(enabled=False), [placed_landmarks(), None, placed_landmarks()])
    assert boxes == [fr.full_frame_box(FRAME, OUT)] * 3


def test_zero_follow_time_jumps() -> None:
    settings = FramingSettings(follow_s=0.0)
    state, _ = run(settings, [placed_landmarks()])
    moved = shifted(placed_landmarks(), 200.0)
    _, boxes = run(settings, [moved], state, start_ms=33)
    assert boxes[0] == fr.target_box(moved, FRAME, OUT, settings)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("face_height", 0.01),
        ("face_height", 2.0),
        ("eye_line", 0.95),
        ("max_zoom", 0.5),
        ("follow_s", -1.0),
        ("deadband", 0.6),
        ("hold_s", 31.0),
        ("return_s", -0.1),
    ],
)
def test_settings_validation_names_the_field(field: str, value: float) -> None:
    changes: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=rf"^{field} = {value!r}: must be between "):
        dataclasses.replace(FramingSettings(), **changes)


def test_warp_crops_and_scales_like_the_box_says() -> None:
    image = read_rgb(PHOTO)
    box = Box(455.0, 400.0, 320.0, 180.0)  # 4x zoom, pixel-aligned
    affine = fr.box_to_affine(box, OUT)
    out = fr.warp(image, affine, OUT)
    assert out.shape == (720, 1280, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    expected = cv2.resize(image[310:490, 295:615], OUT, interpolation=cv2.INTER_LINEAR)
    assert np.abs(out.astype(int) - expected).mean() < 0.5


def test_warp_fast_path_matches_warp_affine() -> None:
    image = read_rgb(PHOTO)
    box = Box(431.37, 377.81, 405.3, 227.98)  # sub-pixel position and scale
    affine = fr.box_to_affine(box, OUT)
    fast = fr.warp(image, affine, OUT)
    reference = cv2.warpAffine(image, fr._to_cv(affine), OUT, flags=cv2.INTER_LINEAR)
    # At most half an output pixel of shift: tiny differences only.
    assert np.abs(fast.astype(int) - reference).mean() < 2.0
    mask = np.zeros(image.shape[:2], np.float32)
    mask[300:700, 200:700] = 1.0
    warped = fr.warp(mask, affine, OUT)
    assert warped.dtype == np.float32 and warped.shape == (720, 1280)
    assert warped.min() >= 0.0 and warped.max() <= 1.0


def test_warp_outside_the_frame_replicates_the_border() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = 200
    affine = fr.box_to_affine(Box(0.0, 50.0, 80.0, 45.0), (160, 90))  # half of it left of the frame
    out = fr.warp(image, affine, (160, 90))
    assert (out[:, :70] == 200).all()


def test_transform_points_round_trip() -> None:
    affine = fr.box_to_affine(Box(500.0, 400.0, 640.0, 360.0), OUT)
    points = placed_landmarks()
    out = fr.transform_points(points, affine)
    assert out.dtype == np.float32 and out.shape == points.shape
    assert out[:, 2] == pytest.approx(points[:, 2] * 2.0, rel=1e-5)  # z scales with the zoom
    back = fr.transform_points(out, fr.invert_affine(affine))
    assert np.abs(back[:, :2] - points[:, :2]).max() < 1e-2


def test_paste_back_puts_a_crop_where_it_came_from() -> None:
    canvas = read_rgb(PHOTO)
    before = canvas.copy()
    box = Box(455.0, 300.0, 256.0, 144.0)
    affine = fr.box_to_affine(box, (512, 288))
    patch = fr.warp(canvas, affine, (512, 288))
    painted = patch.copy()
    painted[:] = (255, 0, 0)
    out = fr.paste_back(canvas, painted, fr.invert_affine(affine), None)
    assert np.array_equal(canvas, before)  # pure
    assert (out[240:350, 340:570] == (255, 0, 0)).all()  # inside the box
    outside = np.ones(canvas.shape[:2], bool)
    outside[225:375, 325:585] = False
    assert np.array_equal(out[outside], before[outside])
    # Alpha 0 changes nothing; the round trip of the real crop is close to the original.
    transparent = np.zeros((288, 512), np.float32)
    assert np.array_equal(fr.paste_back(canvas, painted, fr.invert_affine(affine), transparent), canvas)
    again = fr.paste_back(canvas, patch, fr.invert_affine(affine), None)
    assert np.abs(again[240:350, 340:570].astype(int) - before[240:350, 340:570]).mean() < 3.0
