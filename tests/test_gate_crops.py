"""The quality gate and the platform crops: pure functions, on a real photo and its real landmarks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import background as bgmod
from engine import framing as fr
from engine.crops import DEFAULT_PLATFORMS, PlatformSpec, cut, plan_crop
from engine.gate import ADVICE, CHECKS, DEFAULT_CHECKS, PROBLEMS, Assessment, GateSettings, Surroundings, assess
from engine.quality import eye_openness
from models.face_landmarker import detect_faces
from models.segmenter import MediaPipeSegmenter
from tests.conftest import load_rgb


@pytest.fixture(scope="module")
def portrait(landmarker_path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = load_rgb("images/faces/obama_official_2012.jpg")
    return image, detect_faces(landmarker_path, image)[0]


def test_a_good_portrait_passes_with_every_figure(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    image, landmarks = portrait
    result = assess(image, 1, landmarks, 0.8, 0.37, GateSettings())
    assert result.ok, result.reasons
    assert set(result.figures) == {"likeness", "likeness_threshold", "faces", "face_height", "offset", "eyes_open",
                                   "sharpness", "brightness", "clipped", "head_room", "leftovers"}
    assert result.figures["leftovers"] is None  # no backdrop given: not measured, and no reject
    assert 0.15 < result.figures["eyes_open"] < 0.4  # type: ignore[operator]


@pytest.mark.parametrize(("change", "check", "words"), [
    ("blur", "sharpness", "blurred"),
    ("dark", "exposure", "too dark"),
    ("closed", "eyes_open", "eyes closed"),
    ("two", "one_face", "2 faces"),
    ("stranger", "likeness", "does not look like"),
    ("off_centre", "position", "off centre"),
    ("tiny", "face_size", "too small"),
])
def test_each_check_rejects_with_its_reason(portrait: tuple[np.ndarray, np.ndarray], change: str, check: str,
                                           words: str) -> None:
    image, landmarks = portrait
    faces, likeness, marks = 1, 0.8, landmarks.copy()
    if change == "blur":
        image = cv2.GaussianBlur(image, (0, 0), 6)
    elif change == "dark":
        image = (image * 0.12).astype(np.uint8)
    elif change == "closed":  # the lids meet: upper-lid points moved onto the lower lid
        for upper, lower in ((160, 144), (158, 153), (385, 380), (387, 373)):
            marks[upper] = marks[lower]
    elif change == "two":
        faces = 2
    elif change == "stranger":
        likeness = 0.1
    elif change == "off_centre":
        marks[:, 0] -= image.shape[1] * 0.3
    elif change == "tiny":
        centre = marks[:, :2].mean(axis=0)
        marks[:, :2] = centre + (marks[:, :2] - centre) * 0.2
    result = assess(image, faces, marks, likeness, 0.37, GateSettings())
    assert result.failed[0] == check and words in result.reasons[0]
    assert result.failed == [check] or change == "tiny"  # a tiny face's crop is also blurred
    assert result.problems[0].startswith(f"{check}.") and result.advice[0] == ADVICE[result.problems[0]]
    # Not enforced: measured and reported, but no reject.
    others = ",".join(c for c in CHECKS if c != check)
    assert check not in assess(image, faces, marks, likeness, 0.37, GateSettings(checks=others)).failed


def test_no_face_is_a_reject_and_unknown_checks_are_named(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = portrait
    result = assess(image, 0, None, None, 0.37, GateSettings())
    assert result.failed == ["likeness", "one_face"] and "no face found" in result.reasons
    assert result.figures["face_height"] is None and result.figures["sharpness"] is not None
    with pytest.raises(ValueError, match="unknown check 'smile'"):
        GateSettings(checks="likeness,smile")


# --- the background check and the advice --------------------------------------------------------------------

@pytest.fixture(scope="module")
def cutout(portrait: tuple[np.ndarray, np.ndarray], segmenter_path: Path) -> dict[str, np.ndarray]:
    """The portrait's person (its segmenter mask, hardened and pulled a little inside the edge, so that none of
    the flags and curtains behind him comes along) on a plain studio backdrop, and that backdrop."""
    image, landmarks = portrait
    segmenter = MediaPipeSegmenter(segmenter_path)
    try:
        mask = segmenter.segment(image, 0)
    finally:
        segmenter.close()
    face = fr.face_height_px(landmarks)
    inner = int(0.08 * face) | 1
    alpha = cv2.erode((mask > 0.5).astype(np.uint8) * 255, np.ones((inner, inner), np.uint8))
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.5)
    backdrop = bgmod.studio_backdrop((image.shape[1], image.shape[0]))
    return {"image": bgmod.composite(image, backdrop, alpha), "backdrop": backdrop, "photo": image}


def _surroundings(image: np.ndarray, backdrop: np.ndarray, segmenter_path: Path) -> Surroundings:
    segmenter = MediaPipeSegmenter(segmenter_path)
    try:
        return Surroundings(segmenter.segment(image, 0), backdrop)
    finally:
        segmenter.close()


def _with_room(cutout: dict[str, np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """The cut-out with a patch of the photo's own room (the flag and curtain behind him) left beside the
    head, as a leaky matte leaves it."""
    image = cutout["image"].copy()
    x0, y0 = (int(v) for v in landmarks[:, :2].min(axis=0))
    face = int(fr.face_height_px(landmarks))
    patch = (slice(max(0, y0 - face // 3), y0 + face // 3), slice(max(0, x0 - face // 2), x0 - face // 12))
    image[patch] = cutout["photo"][patch]
    return image


def test_the_background_check_passes_a_clean_cutout_and_rejects_room_left_beside_the_head(
        portrait: tuple[np.ndarray, np.ndarray], cutout: dict[str, np.ndarray], segmenter_path: Path) -> None:
    _, landmarks = portrait
    clean = assess(cutout["image"], 1, landmarks, 0.8, 0.37, GateSettings(),
                   _surroundings(cutout["image"], cutout["backdrop"], segmenter_path))
    assert clean.ok, clean.reasons
    assert clean.figures["leftovers"] is not None and clean.figures["leftovers"] < 0.15  # measured 0.10
    assert clean.figures["head_room"] is not None and clean.figures["head_room"] > 0.02  # the photo has room above
    leaky_image = _with_room(cutout, landmarks)
    leaky = assess(leaky_image, 1, landmarks, 0.8, 0.37, GateSettings(),
                   _surroundings(leaky_image, cutout["backdrop"], segmenter_path))
    assert leaky.failed == ["background"] and leaky.problems == ["background.leftovers"]
    assert leaky.figures["leftovers"] > 2.0  # type: ignore[operator]  # a patch of room (measured 4.4)
    assert "a plainer wall behind you helps" in leaky.advice[0]


def _problems(result: Assessment) -> set[str]:
    return {*result.problems, *result.tips}


def test_every_problem_the_gate_can_report_has_plain_advice(portrait: tuple[np.ndarray, np.ndarray],
                                                             cutout: dict[str, np.ndarray],
                                                             segmenter_path: Path) -> None:
    """Every check's every problem is reached below on the real portrait, and each has advice in plain words."""
    image, landmarks = portrait
    settings = GateSettings(checks=",".join(CHECKS))  # head_cut too
    seen: set[str] = set()

    def judge(picture: np.ndarray, marks: np.ndarray | None, faces: int = 1, likeness: float | None = 0.8,
              around: Surroundings | None = None) -> None:
        seen.update(_problems(assess(picture, faces, marks, likeness, 0.37, settings, around)))

    centre = landmarks[:, :2].mean(axis=0)
    big, small = landmarks.copy(), landmarks.copy()
    big[:, :2] = centre + (landmarks[:, :2] - centre) * 4.0
    small[:, :2] = centre + (landmarks[:, :2] - centre) * 0.2
    judge(image, None, faces=0, likeness=None)  # likeness.unmeasured, one_face.none
    judge(image, landmarks, likeness=0.1)  # likeness.low
    judge(image, landmarks, faces=2)  # one_face.many
    judge(image, big)  # face_size.large
    judge(image, small)  # face_size.small
    judge(image, landmarks - np.float32([image.shape[1] * 0.3, 0, 0]))  # position.off_centre
    judge(cv2.GaussianBlur(image, (0, 0), 6), landmarks)  # sharpness.blurred
    judge((image * 0.12).astype(np.uint8), landmarks)  # exposure.dark
    judge(np.clip(image.astype(np.int16) + 150, 0, 255).astype(np.uint8), landmarks)  # exposure.bright
    contrast = np.where(image > 128, 255, 0).astype(np.uint8)
    judge(contrast, landmarks)  # exposure.clipped
    closed = landmarks.copy()
    for upper, lower in ((160, 144), (158, 153), (385, 380), (387, 373)):
        closed[upper] = closed[lower]
    judge(image, closed)  # eyes_open.closed
    top = int(landmarks[fr.FOREHEAD, 1] - 0.1 * fr.face_height_px(landmarks))  # the photo cut through the hair
    cut_image = np.ascontiguousarray(image[top:])
    cut_marks = landmarks - np.float32([0, top, 0])
    cut_around = _surroundings(cut_image, cutout["backdrop"][top:], segmenter_path)
    judge(cut_image, cut_marks, around=cut_around)  # head_cut.cut: the photo itself cuts it
    judge(cut_image, cut_marks, around=dataclasses.replace(cut_around, photo_cuts_head=False))  # head_cut.framing
    leaky = _with_room(cutout, landmarks)
    judge(leaky, landmarks, around=_surroundings(leaky, cutout["backdrop"], segmenter_path))  # background

    assert seen == set(ADVICE), set(ADVICE) - seen
    assert set(PROBLEMS) == set(CHECKS) and all(PROBLEMS[c] for c in CHECKS)
    for key, advice in ADVICE.items():
        assert advice and advice == advice.strip() and not any(ch.isdigit() for ch in advice), key
        assert "_" not in advice and "=" not in advice, key  # words, not setting or check names
        assert ": " in advice or advice.startswith(("use", "add", "move")), key  # what is wrong: what to do
    assert len(set(ADVICE.values())) == len(ADVICE)
    # A cut head is a tip by default (a photo that cuts it still makes a tight headshot), a reject when listed.
    assert "head_cut" not in DEFAULT_CHECKS
    default = assess(cut_image, 1, cut_marks, 0.8, 0.37, GateSettings(), cut_around)
    assert "head_cut" not in default.failed and default.tips == ["head_cut.cut"]
    assert default.figures["head_room"] == pytest.approx(0.0, abs=0.01)


def test_eye_openness_is_scale_free(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    _, landmarks = portrait
    scaled = landmarks.copy()
    scaled[:, :2] *= 3.0
    assert eye_openness(scaled) == pytest.approx(eye_openness(landmarks))


def test_crop_plans_place_the_face_and_limit_enlargement() -> None:
    # Synthetic landmarks: a 100 px face (forehead 10 to chin 152) with eyes at (500, 480) in a 1000x1000 image.
    marks = np.zeros((478, 3), np.float32)
    marks[:, :2] = (500, 500)
    marks[fr.FOREHEAD, :2] = (500, 440)
    marks[fr.CHIN, :2] = (500, 540)
    for i in fr.EYE_CORNERS:
        marks[i, :2] = (500, 480)
    spec = PlatformSpec(400, 500, min_width=100, face_height=0.25, eye_line=0.4)
    plan = plan_crop((1000, 1000), marks, spec, max_upscale=1.5)
    assert (plan.width, plan.height) == pytest.approx((320, 400))
    assert plan.x0 + plan.width / 2 == pytest.approx(500) and plan.y0 + 0.4 * plan.height == pytest.approx(480)
    assert (plan.out_width, plan.out_height, plan.limited, plan.shrunk, plan.moved) == (400, 500, False, False, False)
    assert plan.scale == pytest.approx(1.25)
    big = plan_crop((1000, 1000), marks, PlatformSpec(1200, 1500, face_height=0.25, eye_line=0.4), max_upscale=2.0)
    assert big.limited and (big.out_width, big.out_height) == (640, 800) and big.scale == 2.0
    # Near the top edge: moved down, not padded; in a small image: shrunk.
    top = marks.copy()
    top[:, 1] -= 400
    assert plan_crop((1000, 1000), top, spec).moved
    small = plan_crop((300, 300), (marks - [[350, 350, 0]]).astype(np.float32), spec)
    assert small.shrunk and small.width <= 300 and small.height <= 300
    image = np.zeros((1000, 1000, 3), np.uint8)
    assert cut(image, plan).shape == (500, 400, 3)
    assert cut(image, big).shape == (800, 640, 3)


def test_default_platforms_are_the_issue_list() -> None:
    assert {"linkedin", "resume", "website", "avatar", "x", "print"} <= set(DEFAULT_PLATFORMS)
    linkedin = DEFAULT_PLATFORMS["linkedin"]
    assert (linkedin.width, linkedin.height, linkedin.min_width) == (1024, 1024, 400)
    assert DEFAULT_PLATFORMS["website"].width / DEFAULT_PLATFORMS["website"].height == pytest.approx(0.8)
    assert DEFAULT_PLATFORMS["print"].dpi == 300
