"""Face alignment for identity encoders, and the maths of comparing face embeddings.

Pure: arrays in, arrays out. A face-embedding network expects a face whose five key points (two eye
centres, nose tip, two mouth corners) sit on the reference points it was trained with, so every encoder
warps the face onto its reference with a similarity transform (rotation, uniform scale, translation:
no shear, so the face keeps its proportions) before embedding it.

Five-point order everywhere (YuNet's and insightface's): the subject's right eye, left eye, nose tip,
right mouth corner, left mouth corner, i.e. for an upright, unmirrored face the image-left eye first.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from engine.types import Affine, FaceEncoder, Landmarks, RGBImage

FivePoints = npt.NDArray[np.float32]
"""(5, 2) float32 pixel coordinates, in the order above."""

Embedding = npt.NDArray[np.float32]
"""(D,) float32, L2-normalised."""

# MediaPipe face-mesh indices. Eye centres are the midpoints of each eye's two corners rather than the
# iris centres (468/473): corners do not move with the gaze, and the iris points are missing from
# 468-point meshes. Index 33/133 is the subject's right eye (image-left in an upright unmirrored face).
_RIGHT_EYE_CORNERS = (33, 133)
_LEFT_EYE_CORNERS = (362, 263)
_NOSE_TIP = 1
_MOUTH_RIGHT = 61
_MOUTH_LEFT = 291

ARCFACE_112: FivePoints = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
"""insightface's `arcface_dst`: where its recognition models (w600k_r50, ...) expect the five points in a
112x112 crop."""

REID_REFERENCE_NORMALISED: FivePoints = np.array(
    [[0.31556875000000000, 0.4615741071428571],
     [0.68262291666666670, 0.4615741071428571],
     [0.50026249999999990, 0.6405053571428571],
     [0.34947187500000004, 0.8246919642857142],
     [0.65343645833333330, 0.8246919642857142]],
    dtype=np.float32,
)
"""Open Model Zoo's reference points for face-reidentification-retail-0095, in [0, 1] of the crop (from
the model's README in openvinotoolkit/open_model_zoo, models/intel/face-reidentification-retail-0095)."""

REID_128: FivePoints = REID_REFERENCE_NORMALISED * np.float32(128)
"""The same for the model's 128x128 input, in pixels."""


def five_points(landmarks: Landmarks) -> FivePoints:
    """(5, 2) float32 key points from MediaPipe's 468/478 landmarks ((N, 3) float32 pixels), or the
    landmarks themselves when they already are five points ((5, 2) or (5, 3), e.g. from YuNet)."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise ValueError(f"landmarks must be (N, 2) or (N, 3), got shape {points.shape}")
    if points.shape[0] == 5:
        return np.ascontiguousarray(points[:, :2])
    if points.shape[0] < 468:
        raise ValueError(f"landmarks must be 5 points or MediaPipe's 468/478, got {points.shape[0]}")
    xy = points[:, :2]
    return np.stack([
        xy[list(_RIGHT_EYE_CORNERS)].mean(axis=0),
        xy[list(_LEFT_EYE_CORNERS)].mean(axis=0),
        xy[_NOSE_TIP],
        xy[_MOUTH_RIGHT],
        xy[_MOUTH_LEFT],
    ]).astype(np.float32)


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> Affine:
    """The least-squares similarity transform (Umeyama 1991) taking points `src` onto `dst`.

    `src`, `dst`: (K, 2) with K >= 2. Returns a 2x3 float64 matrix [s*R | t] with R a proper rotation
    (never a reflection, which would mirror the face).
    """
    a = np.asarray(src, dtype=np.float64)
    b = np.asarray(dst, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 2:
        raise ValueError(f"src and dst must both be (K, 2) with K >= 2, got {a.shape} and {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mean_a, b - mean_b
    var_a = float((ca**2).sum()) / len(a)
    if var_a <= 0.0:
        raise ValueError("src points all coincide: no transform is defined")
    covariance = cb.T @ ca / len(a)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((singular * sign).sum()) / var_a
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mean_b - scale * rotation @ mean_a
    return matrix


def align_face(image: RGBImage, points5: FivePoints, reference: FivePoints, size: int) -> RGBImage:
    """The size x size crop of `image` (HxWx3 uint8) in which `points5` land on `reference` (pixels of
    that crop). Outside the image is black, as in insightface's `norm_crop`."""
    matrix = similarity_transform(points5, reference)
    # Plain bilinear sampling, as insightface and Open Model Zoo do: an area pre-shrink of large faces
    # against aliasing was tried and separated the calibration photos slightly worse.
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
    return np.ascontiguousarray(crop)


def l2_normalise(vector: npt.ArrayLike) -> Embedding:
    """`vector` as a float32 unit vector; raises on a zero vector (no direction to compare)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("cannot normalise a zero or non-finite embedding")
    return (v / norm).astype(np.float32)


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity of two embeddings in [-1, 1] (they need not be normalised)."""
    va, vb = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if va.shape != vb.shape:
        raise ValueError(f"embeddings differ in length: {va.shape[0]} and {vb.shape[0]}")
    denominator = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if denominator == 0.0:
        raise ValueError("cosine of a zero embedding is undefined")
    return float(np.clip(va @ vb / denominator, -1.0, 1.0))


def centroid(embeddings: npt.ArrayLike) -> Embedding:
    """An identity's embedding: the mean of the (K, D) embeddings, each L2-normalised first so that no
    photo weighs more than another, then renormalised."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"embeddings must be (K, D) with K >= 1, got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError("an embedding is zero")
    return l2_normalise((e / norms).mean(axis=0))


@dataclass(frozen=True)
class Likeness:
    """How much a face looks like an identity: `score` is the cosine to the identity's centroid,
    `threshold` the encoder's calibrated same-person cosine."""

    score: float
    threshold: float
    encoder: str

    @property
    def same_person(self) -> bool:
        return self.score >= self.threshold


def likeness(encoder: FaceEncoder, image: RGBImage, landmarks: Landmarks, identity: Embedding) -> Likeness:
    """Score the face at `landmarks` in `image` against `identity` (a `centroid` made with the same
    encoder)."""
    embedding = encoder.embed(image, landmarks)
    return Likeness(cosine(embedding, identity), encoder.threshold, encoder.name)
