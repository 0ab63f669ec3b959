"""Keep the real face: the generated square supplies attire, light and background, and the person's own face
from the studio canvas (relit) is blended back inside a landmark face mask.

A video call needs the person's own expressions, gaze and lip movement on every frame, and likeness is the
product's promise: a one-step re-render of the whole head only approximates them. The seam is feathered and
colour-matched: near the mask's edge the real face takes on the generated picture's mean colour there, so
the generated light meets the face without a step, while the face's core stays exactly the camera's.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.skin import FACE_OVAL
from engine.types import Mask, RGBImage

INSET = 0.06
"""How far inside the face oval (landmark hull) the kept face ends, as a fraction of the face height: the
oval's landmarks run along the jaw and the hairline, where attire and hair are generated."""
FEATHER = 0.10
"""Width of the blend from generated to real, as a fraction of the face height."""
MAX_SHIFT = 12.0
"""The most the seam's colour match moves the real face's colour, grey levels per channel: it evens out the
generated light's tint, never repaints the face."""


def face_keep_mask(landmarks_xy: npt.NDArray[np.floating], size: tuple[int, int], inset: float = INSET,
                   feather: float = FEATHER) -> tuple[Mask, Mask]:
    """(alpha, core) for an image of `size` (width, height) whose face landmarks (all 478, its pixels) are
    `landmarks_xy`:
    `alpha` is 1 on the face, falling smoothly to 0 across the seam; `core` is 1 where the face is kept exactly
    (inside the seam band), 0 from the band outwards. Both float32 in [0, 1]."""
    oval = np.asarray(landmarks_xy, dtype=np.float32)[list(FACE_OVAL), :2]
    face_h = float(oval[:, 1].max() - oval[:, 1].min())
    width, height = size
    if face_h < 4:
        zeros = np.zeros((height, width), np.float32)
        return zeros, zeros
    hard = np.zeros((height, width), np.uint8)
    cv2.fillPoly(hard, [np.round(oval * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    inset_px = max(1, round(inset * face_h))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * inset_px + 1, 2 * inset_px + 1))
    inner = cv2.erode(hard, kernel)
    sigma = max(0.5, feather * face_h / 3)
    alpha = cv2.GaussianBlur(inner.astype(np.float32) / 255.0, (0, 0), sigma)
    core_px = max(1, round(feather * face_h))
    core_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * core_px + 1, 2 * core_px + 1))
    core = cv2.GaussianBlur(cv2.erode(inner, core_kernel).astype(np.float32) / 255.0, (0, 0), sigma)
    return cast(Mask, alpha.astype(np.float32)), cast(Mask, core.astype(np.float32))


def keep_face(generated: RGBImage, real: RGBImage, alpha: Mask, core: Mask) -> RGBImage:
    """`generated` with `real` blended back inside `alpha` (see `face_keep_mask`), colour-matched at the seam:
    the real face is shifted toward the generated picture's mean colour on the seam band, fully at the band and
    not at all in the core."""
    if not alpha.any():
        return generated
    band = (alpha > 0.05) & (core < 0.5)
    gen_f = generated.astype(np.float32)
    real_f = real.astype(np.float32)
    shift = np.zeros(3, np.float32)
    if band.any():
        shift = np.clip(gen_f[band].mean(axis=0) - real_f[band].mean(axis=0), -MAX_SHIFT, MAX_SHIFT)
    matched = real_f + shift * (1.0 - core)[..., None]
    a = alpha[..., None]
    out = matched * a + gen_f * (1.0 - a)
    return cast(RGBImage, np.clip(out + 0.5, 0, 255).astype(np.uint8))


def keep_face_in_place(out: RGBImage, real: RGBImage, landmarks_xy: npt.NDArray[np.floating]) -> None:
    """Blend the face of `real` (the studio canvas) back into `out` (the same canvas with the generated square
    pasted), in place and at the canvas's own resolution, around the face whose landmarks (canvas pixels) are
    `landmarks_xy`: the kept face is never resampled."""
    pts = np.asarray(landmarks_xy, dtype=np.float32)[:, :2]
    oval = pts[list(FACE_OVAL)]
    h, w = out.shape[:2]
    margin = 2 + 0.1 * float(oval[:, 1].max() - oval[:, 1].min())
    x0, y0 = (max(0, int(np.floor(v - margin))) for v in oval.min(axis=0))
    x1, y1 = int(np.ceil(oval[:, 0].max() + margin)), int(np.ceil(oval[:, 1].max() + margin))
    x1, y1 = min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    alpha, core = face_keep_mask(pts - [x0, y0], (x1 - x0, y1 - y0))
    out[y0:y1, x0:x1] = keep_face(out[y0:y1, x0:x1], real[y0:y1, x0:x1], alpha, core)


def seam_step(out: RGBImage, generated: RGBImage, alpha: Mask, width: int = 2) -> float:
    """How visible the seam is: the mean step, across the 0.5 contour of `alpha` (`width` pixels each way along
    its normal), of what keeping the face changed (`out` - `generated`, grey levels). A hard paste steps by the
    whole real/generated difference; a soft, colour-matched seam changes gradually. The picture's own edges
    (jaw, hairline) are in both images and cancel out."""
    change = (cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)
              - cv2.cvtColor(generated, cv2.COLOR_RGB2GRAY).astype(np.float32))
    gy, gx = np.gradient(cv2.GaussianBlur(alpha, (0, 0), 1.0))
    edge = (np.abs(alpha - 0.5) < 0.08) & (np.hypot(gx, gy) > 1e-4)
    ys, xs = np.nonzero(edge)
    if len(ys) == 0:
        return 0.0
    norm = np.hypot(gx[ys, xs], gy[ys, xs])
    nx, ny = gx[ys, xs] / norm, gy[ys, xs] / norm  # towards the face (alpha rises)
    h, w = change.shape
    xi = np.clip(np.round(xs + nx * width), 0, w - 1).astype(int)
    yi = np.clip(np.round(ys + ny * width), 0, h - 1).astype(int)
    xo = np.clip(np.round(xs - nx * width), 0, w - 1).astype(int)
    yo = np.clip(np.round(ys - ny * width), 0, h - 1).astype(int)
    return float(np.abs(change[yi, xi] - change[yo, xo]).mean())
