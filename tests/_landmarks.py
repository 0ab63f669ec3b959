"""Real MediaPipe face landmarks of the stored test photos, cached per photo.

A thin layer over the project's own reading and detection (`livecam.live.capture.read_image`, which applies
EXIF orientation, and `models.face_landmarker.detect_faces`), so the engine tests measure on exactly what the
app sees. The photos and the model live in the shared assets folder; nothing is copied into the repo.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt

from livecam.photos import read_image
from models.face_landmarker import detect_faces
from tests.media import assets_dir

ASSETS = assets_dir()
MODEL = ASSETS / "models" / "face_landmarker" / "face_landmarker.task"


def asset(relative: str) -> Path:
    """Path of a file under the assets folder (e.g. "images/faces/obama_official_2012.jpg")."""
    return ASSETS / relative


@functools.cache
def _read_rgb(relative: str) -> npt.NDArray[np.uint8]:
    rgb = read_image(asset(relative))
    rgb.setflags(write=False)  # shared between tests through the cache
    return rgb


def read_rgb(relative: str) -> npt.NDArray[np.uint8]:
    """A photo as RGB uint8 HxWx3 (a fresh, writable copy)."""
    return _read_rgb(relative).copy()


def detect(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32] | None:
    """(478, 3) float32 pixel landmarks of the largest face in an RGB uint8 image, or None."""
    faces = detect_faces(MODEL, np.ascontiguousarray(image), max_faces=1)
    return faces[0] if faces else None


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
