"""The person's own colours at a soft matte edge, without the room behind them. Pure functions.

A pixel of a photo where the matte is between 0 and 1 (hair, the soft edge of the shoulders) is a mix of the
person and the room: I = a F + (1 - a) R. Composited as it is over a new backdrop, a I + (1 - a) B, the room's
share a (1 - a) R stays in it: the bookshelf seen through the hair, a white halo where a bright window was.
Compositing the foreground colour F instead leaves only person and backdrop. F is estimated by blur fusion
(Forte and Pitie, "Approximate Fast Foreground Colour Estimation", ICIP 2021): the local mean colours of the
person and of the room, from box blurs weighted by the matte, then the residual of the mix given to F; twice,
wide then narrow.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.types import RGBImage

WIDE = 0.6
NARROW = 0.04
"""The two passes' box sizes, in face heights: the first reaches across the hair to the person's and the room's
solid colours, the second refines them close to the edge."""

_F32 = npt.NDArray[np.float32]


def _pass(image: _F32, fore: _F32, back: _F32, alpha: _F32, size: int) -> tuple[_F32, _F32]:
    box = (size, size)
    a = alpha[..., None]
    blurred_a = cv2.blur(alpha, box)[..., None]
    mean_f = cv2.blur(fore * a, box) / (blurred_a + 1e-5)
    mean_b = cv2.blur(back * (1.0 - a), box) / ((1.0 - blurred_a) + 1e-5)
    estimate = mean_f + a * (image - a * mean_f - (1.0 - a) * mean_b)
    return cast(_F32, np.clip(estimate, 0.0, 1.0)), cast(_F32, mean_b)


def foreground(image: RGBImage, alpha: npt.NDArray[np.generic], face_px: float) -> RGBImage:
    """`image` (RGB uint8) with the colours where `alpha` (HxW, uint8 0-255 or float 0-1) is soft replaced by
    the person's estimated own colours; unchanged where alpha is 1 (and where it is 0: nothing of it shows).
    `face_px`: the face height in pixels, which sizes the blurs."""
    a = alpha.astype(np.float32)
    if alpha.dtype == np.uint8:
        a /= 255.0
    soft = (a > 0.0) & (a < 1.0)
    if not soft.any():
        return image
    shown = image.astype(np.float32) / 255.0
    wide = max(3, round(WIDE * face_px)) | 1
    narrow = max(3, round(NARROW * face_px)) | 1
    fore, back = _pass(shown, shown, shown, a, wide)
    fore, _ = _pass(shown, fore, back, a, narrow)
    out = image.copy()
    out[soft] = np.clip(fore[soft] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out
