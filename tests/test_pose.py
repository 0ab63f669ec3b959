"""The ControlNet pose condition image, drawn from real MediaPipe landmarks on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import pose
from engine.framing import FramingSettings, box_to_affine, target_box, transform_points
from models.face_landmarker import detect_faces
from tests.conftest import load_rgb


def _crop(photo: str, landmarker_path: Path, size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = load_rgb(photo)
    landmarks = detect_faces(landmarker_path, image)[0]
    box = target_box(landmarks, (image.shape[1], image.shape[0]), (size, size), FramingSettings(face_height=0.35))
    return landmarks, box_to_affine(box, (size, size)), image


def _centroid(condition: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    ys, xs = np.nonzero(np.all(condition == np.array(color, np.uint8), axis=2))
    assert len(xs) > 0, f"no pixel of colour {color}"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("photo", ["images/faces/obama_official_2012.jpg", "images/faces/biden_official_portrait.jpg",
                                   "images/faces/obama_congress_2009.jpg"])
def test_keypoints_land_where_the_landmarks_are(photo: str, landmarker_path: Path) -> None:
    landmarks, affine, _ = _crop(photo, landmarker_path)
    condition = pose.draw_pose(landmarks, affine, (512, 512))
    assert condition.shape == (512, 512, 3) and condition.dtype == np.uint8
    assert (condition.sum(axis=2) == 0).mean() > 0.8  # black, with a sparse drawing
    expected = transform_points(pose.body_keypoints(landmarks), affine)
    # Joint circles are drawn on top of the limbs: each joint's colour is centred on its keypoint (those
    # well inside the crop; a shoulder may be cut off by a tight crop).
    inside = [k for k in (pose.NECK, pose.R_SHOULDER, pose.L_SHOULDER, pose.R_EAR, pose.L_EAR)
              if (expected[k] >= 8).all() and (expected[k] < 504).all()]
    assert {pose.NECK, pose.R_EAR, pose.L_EAR} <= set(inside)
    for k in inside:
        assert np.linalg.norm(_centroid(condition, pose.COLORS[k]) - expected[k]) < 3.0, k
    # White face dots sit on the transformed landmarks (68 of them).
    face = transform_points(landmarks[list(pose.FACE_68), :2], affine)
    white = np.all(condition == 255, axis=2)
    on_dot = [white[round(y), round(x)] for x, y in face if 0 <= x < 512 and 0 <= y < 512]
    assert len(on_dot) == 68 and all(on_dot)
    assert np.linalg.norm(_centroid(condition, (255, 255, 255)) - face.mean(axis=0)) < 6.0


def test_body_keypoints_follow_openpose_conventions(landmarker_path: Path) -> None:
    landmarks, _, _ = _crop("images/faces/obama_official_2012.jpg", landmarker_path)
    k = pose.body_keypoints(landmarks)
    # the person's right is the image's left on an unmirrored photo, as OpenPose labels it
    assert k[pose.R_EYE, 0] < k[pose.NOSE, 0] < k[pose.L_EYE, 0]
    assert k[pose.R_SHOULDER, 0] < k[pose.NECK, 0] < k[pose.L_SHOULDER, 0]
    # the neck is below the chin and the shoulders below the neck
    assert k[pose.NECK, 1] > landmarks[152, 1] and k[pose.R_SHOULDER, 1] > k[pose.NECK, 1]
    # arms and legs are out of a head-and-shoulders view
    assert np.isnan(k[[pose.R_ELBOW, pose.L_WRIST, pose.R_HIP, pose.L_ANKLE]]).all()


def test_strokes_scale_with_the_crop(landmarker_path: Path) -> None:
    landmarks, _, image = _crop("images/faces/obama_official_2012.jpg", landmarker_path)
    small_box = target_box(landmarks, (image.shape[1], image.shape[0]), (256, 256), FramingSettings(face_height=0.35))
    big_box = target_box(landmarks, (image.shape[1], image.shape[0]), (1024, 1024), FramingSettings(face_height=0.35))
    small = pose.draw_pose(landmarks, box_to_affine(small_box, (256, 256)), (256, 256))
    big = pose.draw_pose(landmarks, box_to_affine(big_box, (1024, 1024)), (1024, 1024))
    drawn = [(img.sum(axis=2) > 0).mean() for img in (small, big)]
    assert drawn[0] == pytest.approx(drawn[1], rel=0.35)  # same drawing, in proportion
    assert not pose.draw_pose(landmarks, box_to_affine(small_box, (256, 256)), (256, 256), face_dots=False).all(
        axis=2).any()  # no white dots without face_dots
