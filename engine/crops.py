"""Platform crops of a finished headshot: pure geometry on the kept image and its landmarks.

A platform (LinkedIn, a CV, a company website, a meeting avatar, X, print) wants a given aspect and size and
the face at a given size and height in the frame. The crop is the box of that aspect that puts the face
there, composed as the live framing is (`engine.placement.compose`): eyes centred, on the platform's eye line,
at least `MIN_HEADROOM` above the hair. Cut from a canvas (`Room`: the photo placed on a backdrop larger than
the photo, the studio engine's stills) the box may reach beyond the photo, so close and off-centre photos make
headshots; a head the photo cuts runs off the crop's top edge. Cut from a plain image, the box is moved, then
shrunk (the face comes out larger) where the image has too little room, never padded with invented pixels.
Upscaling is limited: a box with too few pixels is written smaller than asked, and the plan says so.

Coordinates as in `engine.framing`: continuous pixels, the image spans [0, width] x [0, height].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from engine import placement as pl
from engine.placement import HeadTop
from engine.types import Landmarks, RGBImage
from engine.validation import check_range

MIN_HEADROOM = 0.06
"""Space a crop keeps above the top of the hair, fraction of its height (the eye line gives way)."""
MAX_GROWTH = 1.2
"""Cut from a canvas, the face may be up to this much larger than the platform asks where that lets the body
run off the crop's bottom edge instead of fading out above it (a photo that ends at the chest)."""


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
class Room:
    """What an image holds when it is a canvas: the photo's own pixels in `picture` (x0, y0, x1, y1), a backdrop
    around them, and the top of the person's hair (`head`), all in the image's pixels."""

    picture: tuple[float, float, float, float]
    head: HeadTop


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
    """True when the face is off its asked place: the box was moved to stay inside the image, to keep the hair
    `MIN_HEADROOM` below its top, or to keep it near a photo whose top edge is close to the hair."""

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.width, self.height


def crop_box(landmarks: Landmarks, spec: PlatformSpec, room: Room | None = None) -> pl.Box:
    """The box `plan_crop` wants for `spec` before it is kept inside the image (see there)."""
    head = room.head if room is not None else pl.head_top(landmarks)
    return pl.compose(landmarks, head, spec.width / spec.height, pl.face_height_px(landmarks) / spec.face_height,
                      spec.eye_line, (MIN_HEADROOM, 1.0), room.picture if room is not None else None, MAX_GROWTH)


def plan_crop(image_size: tuple[int, int], landmarks: Landmarks, spec: PlatformSpec,
              max_upscale: float = 1.0, room: Room | None = None) -> CropPlan:
    """The crop of an image of `image_size` (width, height) for `spec`, face from `landmarks` (pixels).

    The face is `spec.face_height` of the crop, centred horizontally on the eyes, the eyes at `spec.eye_line`
    unless that leaves less than `MIN_HEADROOM` above the hair. `room`: the image is a canvas (see `Room`): the
    box may reach beyond the photo (see `engine.placement.compose`). The box is then kept inside the image:
    moved, or shrunk about the eyes. The output is `spec.width` x `spec.height` unless that needs a scale above
    `max_upscale`, in which case it is the largest size at that scale (`limited`).
    """
    check_range("max_upscale", max_upscale, 1.0, 8.0)
    iw, ih = image_size
    aspect = spec.width / spec.height
    box = crop_box(landmarks, spec, room)
    height, width = box.height, box.width
    # A canvas is made to hold every platform's box: only rounding can leave one a hair outside it.
    tolerance = 1.0 if room is not None else 0.0
    shrunk = False
    if width > iw + tolerance or height > ih + tolerance:
        height = min(ih, iw / aspect)
        width = height * aspect
        shrunk = True
    width, height = min(width, float(iw)), min(height, float(ih))
    eyes_x, eyes_y = pl.eye_centre(landmarks)
    x0 = box.cx - box.width / 2 if not shrunk else eyes_x - width / 2
    y0 = box.cy - box.height / 2 if not shrunk else eyes_y - spec.eye_line * height
    x0, y0 = min(max(x0, 0.0), iw - width), min(max(y0, 0.0), ih - height)
    # Off the asked place: kept inside the image, below the hair, or held by the photo's top edge.
    moved = abs(x0 - (eyes_x - width / 2)) > 0.5 + tolerance or abs(y0 - (eyes_y - spec.eye_line * height)) > 0.5
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
