"""Photo quality measures for enrolment selfies and exported stills: pure functions on RGB uint8 arrays.

Each measure works on a face crop normalised for size (`face_crop`), so that the same threshold holds for
a 480x600 selfie and a 4000x3000 one.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.framing import face_height_px
from engine.types import Landmarks, RGBImage

CROP = 128
"""Side of the normalised face crop the measures use."""


def face_box(landmarks: Landmarks) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the landmarks, in their pixels."""
    xy = np.asarray(landmarks, dtype=np.float32)[:, :2]
    return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def face_crop(image: RGBImage, landmarks: Landmarks, size: int = CROP) -> RGBImage:
    """The face's landmark bounding square (a little margin), resized to size x size."""
    x0, y0, x1, y1 = face_box(landmarks)
    side = max(x1 - x0, y1 - y0) * 1.1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = size / side
    affine = np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]])
    return cast(RGBImage, cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_AREA,
                                         borderMode=cv2.BORDER_REPLICATE))


def sharpness(crop: RGBImage) -> float:
    """Variance of the Laplacian of the grey crop: low means blurred (or featureless)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def exposure(crop: RGBImage) -> tuple[float, float, float]:
    """(mean luma 0-1, fraction of near-black pixels, fraction of blown-out pixels) of the crop."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(grey.mean()) / 255.0, float((grey < 12).mean()), float((grey > 247).mean())


def cut_off(landmarks: Landmarks, image_size: tuple[int, int], margin: float = 0.02) -> bool:
    """True when the face touches the image border (within `margin` of the face height): part of it is
    probably outside the photo."""
    x0, y0, x1, y1 = face_box(landmarks)
    width, height = image_size
    pad = margin * face_height_px(landmarks)
    return x0 < pad or y0 < pad or x1 > width - 1 - pad or y1 > height - 1 - pad


def dhash(crop: RGBImage, bits: int = 8) -> int:
    """A difference hash of the crop (bits x bits bits): near-identical pictures have nearly equal hashes."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (bits + 1, bits), interpolation=cv2.INTER_AREA).astype(np.int16)
    diff: npt.NDArray[np.bool_] = small[:, 1:] > small[:, :-1]
    return int("".join("1" if b else "0" for b in diff.ravel()), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# MediaPipe face-mesh eye contours: outer corner, two upper-lid points, inner corner, two lower-lid points.
_EYES = ((33, 160, 158, 133, 153, 144), (362, 385, 387, 263, 373, 380))


def eye_openness(landmarks: Landmarks) -> float:
    """The eye aspect ratio (lid gap over eye width) of the less open eye: about 0.25-0.35 open, under 0.1
    closed. Scale-free, so the same threshold holds for any face size."""
    xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
    ratios = []
    for outer, up1, up2, inner, low2, low1 in _EYES:
        width = float(np.linalg.norm(xy[outer] - xy[inner]))
        gap = float(np.linalg.norm(xy[up1] - xy[low1]) + np.linalg.norm(xy[up2] - xy[low2])) / 2
        ratios.append(gap / width if width > 0 else 0.0)
    return min(ratios)
