"""The ControlNet pose condition: an OpenPose-style image drawn from the 478 MediaPipe face landmarks.

SDXL OpenPose ControlNets were trained on OpenPose renderings: the 18 COCO body keypoints joined by
coloured limbs on black, and the face's 68 keypoints as white dots. The head keypoints (nose, eyes,
ears) come straight from the landmarks; the neck and shoulders, which a head-and-shoulders crop shows but
a face tracker does not see, are estimated from the face's size and position. Everything is drawn in
the render crop's pixels, given the affine from the source frame to the crop.

"Right" and "left" are the person's, as in OpenPose: on an unmirrored camera image, the person's right
eye is on the image's left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from engine.framing import face_height_px, transform_points
from engine.types import Affine, Landmarks, RGBImage

# COCO-18 keypoints, in OpenPose's order.
(NOSE, NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST, R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE,
 L_ANKLE, R_EYE, L_EYE, R_EAR, L_EAR) = range(18)

LIMBS: tuple[tuple[int, int], ...] = (
    (NECK, R_SHOULDER), (NECK, L_SHOULDER), (R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST),
    (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST), (NECK, R_HIP), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE),
    (NECK, L_HIP), (L_HIP, L_KNEE), (L_KNEE, L_ANKLE), (NECK, NOSE), (NOSE, R_EYE), (R_EYE, R_EAR),
    (NOSE, L_EYE), (L_EYE, L_EAR),
)
"""Limb i is drawn in COLORS[i]; keypoint k in COLORS[k]."""

COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
"""RGB."""

FACE_68: tuple[int, ...] = (
    # jaw (17), right brow (5), left brow (5), nose bridge (4), nostrils (5), right eye (6), left eye (6),
    # outer lips (12), inner lips (8): MediaPipe indices in the order of the 68-point (iBUG) layout
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)

# Body proportions in units of the face height (forehead landmark 10 to chin 152), read off the frontal
# portraits in the test assets: the base of the neck (OpenPose's neck point, at the collar) about 0.35
# below the chin, the shoulders about 1.15 either side of it and a little lower.
NECK_BELOW_CHIN = 0.35
SHOULDER_HALF_WIDTH = 1.15
SHOULDER_DROP = 0.1

REFERENCE_SIZE = 512
"""OpenPose's stroke widths (limbs 4 px, joints 4 px, face dots 3 px) are for ~512 px images; they scale
with the crop."""


def body_keypoints(landmarks: Landmarks) -> npt.NDArray[np.float32]:
    """(18, 2) COCO keypoints in the landmarks' pixels; NaN for those a head-and-shoulders view lacks."""
    lm = np.asarray(landmarks, dtype=np.float32)[:, :2]
    points = np.full((18, 2), np.nan, dtype=np.float32)
    face_height = face_height_px(landmarks)
    chin = lm[152]
    # The head may roll and turn, the shoulders mostly stay level: so the neck and shoulders hang
    # straight down from the chin in image coordinates.
    neck = chin + np.array([0.0, NECK_BELOW_CHIN * face_height], dtype=np.float32)
    points[NOSE] = lm[1]
    points[NECK] = neck
    points[R_SHOULDER] = neck + np.array([-SHOULDER_HALF_WIDTH, SHOULDER_DROP], dtype=np.float32) * face_height
    points[L_SHOULDER] = neck + np.array([SHOULDER_HALF_WIDTH, SHOULDER_DROP], dtype=np.float32) * face_height
    points[R_EYE] = lm[468] if len(lm) > 473 else lm[[33, 133]].mean(axis=0)
    points[L_EYE] = lm[473] if len(lm) > 473 else lm[[362, 263]].mean(axis=0)
    points[R_EAR] = lm[234]
    points[L_EAR] = lm[454]
    return points


def draw_pose(landmarks: Landmarks, affine: Affine, size: tuple[int, int], face_dots: bool = True) -> RGBImage:
    """The OpenPose-style condition image (size = (width, height), RGB uint8, black background) for a
    face whose `landmarks` are in source pixels; `affine` maps source pixels to the image's pixels."""
    width, height = size
    scale = min(width, height) / REFERENCE_SIZE
    stick = max(1, round(4 * scale))
    joint = max(1, round(4 * scale))
    dot = max(1, round(3 * scale))
    keypoints = transform_points(body_keypoints(landmarks), affine)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for (a, b), color in zip(LIMBS, COLORS, strict=False):
        pa, pb = keypoints[a], keypoints[b]
        if not (np.isfinite(pa).all() and np.isfinite(pb).all()):
            continue
        # OpenPose draws each limb as a filled ellipse blended at 60% over what is already there.
        centre = (pa + pb) / 2
        length = float(np.linalg.norm(pb - pa))
        angle = math.degrees(math.atan2(float(pb[1] - pa[1]), float(pb[0] - pa[0])))
        polygon = np.asarray(cv2.ellipse2Poly((round(float(centre[0])), round(float(centre[1]))),
                                              (max(1, round(length / 2)), stick), round(angle), 0, 360, 1),
                             np.int32)
        limb = canvas.copy()
        cv2.fillConvexPoly(limb, polygon, color)
        cv2.addWeighted(canvas, 0.4, limb, 0.6, 0, dst=canvas)
    for k, point in enumerate(keypoints):
        if np.isfinite(point).all():
            cv2.circle(canvas, (round(float(point[0])), round(float(point[1]))), joint, COLORS[k], thickness=-1)
    if face_dots:
        face = transform_points(np.asarray(landmarks, dtype=np.float32)[list(FACE_68), :2], affine)
        for x, y in face:
            cv2.circle(canvas, (round(float(x)), round(float(y))), dot, (255, 255, 255), thickness=-1)
    return canvas


@dataclass
class PoseReuse:
    """Whether the ControlNet's kept residuals stand for this frame's pose: it has moved less than `threshold`
    (mean displacement of the pose keypoints, fraction of the render's `size`) since the frame that last ran the
    ControlNet, and that frame is at most `max_run` frames back. `threshold` 0: never."""

    threshold: float
    max_run: int
    size: int
    _points: npt.NDArray[np.floating] | None = None
    _run: int = 0

    def reuse(self, points: npt.NDArray[np.floating]) -> bool:
        """Decide for this frame's keypoints (render pixels); a frame that runs the ControlNet becomes the
        reference."""
        if self.threshold > 0 and self._points is not None and self._run < self.max_run:
            moved = np.linalg.norm(points - self._points, axis=1)
            if float(np.nanmean(moved)) < self.threshold * self.size:
                self._run += 1
                return True
        self._points, self._run = points, 0
        return False

    def reset(self) -> None:
        """No reference: the next frame runs the ControlNet."""
        self._points, self._run = None, 0
