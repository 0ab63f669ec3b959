"""Platform crops of a finished headshot: pure geometry on the kept image and its landmarks.

A platform (LinkedIn, a CV, a company website, a meeting avatar, X, print) wants a given aspect and size and
the face at a given size and height in the frame. The crop is the box of that aspect that puts the face
there; where the image has too little room around the face, the box is moved, then shrunk (the face comes
out larger), never padded with invented pixels. Upscaling is limited: a box with too few pixels is written
smaller than asked, and the plan says so.

Coordinates as in `engine.framing`: continuous pixels, the image spans [0, width] x [0, height].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from engine import framing as fr
from engine.types import Landmarks, RGBImage
from engine.validation import check_range


@dataclass(frozen=True)
class PlatformSpec:
    """What one platform asks for."""

    width: int
    height: int
    """Recommended size in pixels."""
    min_width: int = 0
    """Smallest width the platform accepts; a crop below it is not written. 0: no minimum."""
    face_height: float = 0.30
    """Face (forehead to chin) as a fraction of the crop height."""
    eye_line: float = 0.42
    """Eyes' height from the top, as a fraction of the crop height."""
    dpi: int = 0
    """Print resolution written into the file (0: none)."""
    label: str = ""
    """What it is for, shown by `livecam still --help` and in the report."""

    def __post_init__(self) -> None:
        check_range("width", self.width, 16, 20_000)
        check_range("height", self.height, 16, 20_000)
        check_range("min_width", self.min_width, 0, self.width)
        check_range("face_height", self.face_height, 0.05, 0.9)
        check_range("eye_line", self.eye_line, 0.1, 0.9)
        check_range("dpi", self.dpi, 0, 2400)


DEFAULT_PLATFORMS: dict[str, PlatformSpec] = {
    "linkedin": PlatformSpec(1024, 1024, min_width=400, face_height=0.34, eye_line=0.42,
                             label="LinkedIn profile photo: square, 1024 px recommended, 400 px minimum"),
    "resume": PlatformSpec(600, 800, min_width=300, face_height=0.30, eye_line=0.40,
                           label="resume / CV photo: 3:4 portrait"),
    "website": PlatformSpec(1080, 1350, min_width=400, face_height=0.26, eye_line=0.38,
                            label="company website team page: 4:5 portrait"),
    "avatar": PlatformSpec(648, 648, min_width=256, face_height=0.42, eye_line=0.45,
                           label="Zoom / Teams avatar: square, shown in a circle (Teams recommends 648 px)"),
    "x": PlatformSpec(400, 400, min_width=200, face_height=0.42, eye_line=0.45,
                      label="X / Twitter profile photo: square, 400 px, shown in a circle"),
    "print": PlatformSpec(1200, 1500, min_width=600, face_height=0.26, eye_line=0.38, dpi=300,
                          label="print: 4x5 in at 300 dpi"),
}


@dataclass(frozen=True)
class CropPlan:
    """Where to cut (source pixels) and how large to write it."""

    x0: float
    y0: float
    width: float
    height: float
    out_width: int
    out_height: int
    scale: float
    """Output pixels per source pixel (above 1: upscaled)."""
    limited: bool
    """True when the asked size would have needed more upscaling than allowed: written smaller."""
    shrunk: bool
    """True when the image had too little room around the face: the face is larger than asked."""
    moved: bool = False
    """True when the box was moved to stay inside the image: the face is off its asked place."""

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.width, self.height


def plan_crop(image_size: tuple[int, int], landmarks: Landmarks, spec: PlatformSpec,
              max_upscale: float = 1.0) -> CropPlan:
    """The crop of an image of `image_size` (width, height) for `spec`, face from `landmarks` (pixels).

    The face is centred horizontally on the eyes, the eyes at `spec.eye_line`, the face `spec.face_height` of
    the crop; the box is kept inside the image (moved, then shrunk about the eyes). The output is
    `spec.width` x `spec.height` unless that needs a scale above `max_upscale`, in which case it is the largest
    size at that scale (`limited`).
    """
    check_range("max_upscale", max_upscale, 1.0, 8.0)
    iw, ih = image_size
    aspect = spec.width / spec.height
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    eyes = points[list(fr.EYE_CORNERS)].mean(axis=0)
    height = fr.face_height_px(landmarks) / spec.face_height
    width = height * aspect
    shrunk = False
    if width > iw or height > ih:
        height = min(ih, iw / aspect)
        width = height * aspect
        shrunk = True
    x0 = float(eyes[0]) - width / 2
    y0 = float(eyes[1]) - spec.eye_line * height
    fitted_x, fitted_y = min(max(x0, 0.0), iw - width), min(max(y0, 0.0), ih - height)
    moved = abs(fitted_x - x0) > 0.5 or abs(fitted_y - y0) > 0.5
    x0, y0 = fitted_x, fitted_y
    scale = spec.width / width
    limited = scale > max_upscale + 1e-9
    if limited:
        scale = max_upscale
    out_w = spec.width if not limited else max(1, int(width * scale))
    out_h = spec.height if not limited else max(1, round(out_w / aspect))
    return CropPlan(x0, y0, width, height, out_w, out_h, scale, limited, shrunk, moved)


def cut(image: RGBImage, plan: CropPlan) -> RGBImage:
    """The planned crop, resampled to (out_height, out_width): area averaging when shrinking (the box rounded
    to whole pixels, under a pixel off), Lanczos when enlarging."""
    sx = plan.out_width / plan.width
    sy = plan.out_height / plan.height
    size = (plan.out_width, plan.out_height)
    if max(sx, sy) <= 1.0:
        x0, y0 = round(plan.x0), round(plan.y0)
        x1 = min(image.shape[1], max(x0 + 1, round(plan.x0 + plan.width)))
        y1 = min(image.shape[0], max(y0 + 1, round(plan.y0 + plan.height)))
        return cast(RGBImage, cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA))
    # Continuous pixel coordinates -> OpenCV's integer pixel centres (see engine.framing).
    affine = np.array([[sx, 0.0, -plan.x0 * sx + 0.5 * sx - 0.5], [0.0, sy, -plan.y0 * sy + 0.5 * sy - 0.5]])
    return cast(RGBImage, cv2.warpAffine(image, affine, size, flags=cv2.INTER_LANCZOS4,
                                         borderMode=cv2.BORDER_REPLICATE))
