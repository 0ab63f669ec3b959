"""Real MediaPipe face landmarks for tests: runs the Face Landmarker (IMAGE mode) on a stored photo.

The photos and the model live in the shared assets folder (env `LIVECAM_ASSETS`, default
`<repo>/../shared/assets`); nothing is copied into the repository.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

ASSETS = Path(os.environ.get("LIVECAM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
MODEL = ASSETS / "models" / "face_landmarker" / "face_landmarker.task"


def asset(relative: str) -> Path:
    """Path of a file under the assets folder (e.g. "images/faces/obama_official_2012.jpg")."""
    return ASSETS / relative


@functools.cache
def _read_rgb(relative: str) -> npt.NDArray[np.uint8]:
    # cv2.imread applies the EXIF orientation; BGR becomes RGB here, once.
    bgr = cv2.imread(str(asset(relative)), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read test photo {asset(relative)}")
    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    rgb.setflags(write=False)  # shared between tests through the cache
    return rgb


def read_rgb(relative: str) -> npt.NDArray[np.uint8]:
    """A photo as RGB uint8 HxWx3 (a fresh, writable copy)."""
    return _read_rgb(relative).copy()


def detect(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32] | None:
    """Landmarks of the first face in an RGB uint8 image: (478, 3) float32 pixels
    (x*width, y*height, z*width), or None when no face is found."""
    # Imported here so that test modules that never need landmarks stay light.
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode

    options = FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(MODEL)),
        running_mode=RunningMode.IMAGE,
        num_faces=1,
    )
    landmarker = FaceLandmarker.create_from_options(options)
    try:
        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        result = landmarker.detect(frame)
    finally:
        landmarker.close()
    if not result.face_landmarks:
        return None
    h, w = image.shape[:2]
    points = np.array([(p.x * w, p.y * h, p.z * w) for p in result.face_landmarks[0]], dtype=np.float32)
    return points


@functools.cache
def _photo_landmarks(relative: str) -> npt.NDArray[np.float32]:
    points = detect(_read_rgb(relative))
    if points is None:
        raise AssertionError(f"no face found in {relative}")
    points.setflags(write=False)
    return points


def photo_landmarks(relative: str) -> npt.NDArray[np.float32]:
    """(478, 3) float32 pixel landmarks of the face in a stored photo (cached per photo)."""
    return _photo_landmarks(relative).copy()
