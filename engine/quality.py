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


# --- the background around the person ---------------------------------------------------------------------

_SCALE_FACE = 80.0
"""The background measures work on the image resized so that the face is this tall (pixels): the same
thresholds then hold for any resolution, and the work is small."""
_CORE_ERODE = 0.03
_COLOUR_SIGMA = 0.10
_PALETTE_REACH = 0.10
_RING = 0.60
"""Sizes in face heights: how far inside the person's edge the person's own colours are taken from, how far
they are spread (the local mean colour, and each palette colour's reach), and how far outside the edge
leftovers are looked for."""
_PALETTE = 8
_PALETTE_LEVELS = 6
_PALETTE_SHARE = 0.05
"""The person's palette: the `_PALETTE` commonest colours of the person (RGB quantised to `_PALETTE_LEVELS`
levels a channel), each counted as nearby where it makes at least `_PALETTE_SHARE` of the person close by."""
_UNEXPLAINED = 20.0
"""RGB distance (0-255 levels) a pixel may stray from a mix of person and backdrop before it counts: JPEG
noise, dither and the feathered edge stay below it."""


def _disk(radius: float) -> npt.NDArray[np.uint8]:
    r = max(1, round(radius))
    return cast(npt.NDArray[np.uint8], cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def _stray(pixels: npt.NDArray[np.float32], back: npt.NDArray[np.float32],
           colour: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Distance of each pixel (N x 3) from the mixes of its backdrop and `colour` (N x 3 or 3): the segment
    between them, which a soft edge, a strand of hair or a shadow can make."""
    along = colour - back
    t = np.clip(((pixels - back) * along).sum(axis=1) / np.maximum((along * along).sum(axis=1), 1e-3), 0.0, 1.0)
    return cast(npt.NDArray[np.float32], np.linalg.norm(pixels - (back + t[:, None] * along), axis=1))


def leftovers(image: RGBImage, person: npt.NDArray[np.float32], backdrop: RGBImage, face_px: float) -> float:
    """How much of the old background shows around the person of a composite: halos, spikes and patches of
    room near the person's edge, as the area of the face (percent) that pixels of entirely foreign colour
    would cover. About 0-0.9 on clean studio stills (median 0.12), up to 1.4 with a halo from a bright window;
    a patch of room beside the shoulder 0.7 or more.

    `image`: the composite (RGB uint8); `person`: HxW float32 0-1, the person's pixels (a segmenter's
    confidence on `image`, optionally limited to the matte's confident part); `backdrop`: what `image` shows
    where there is no person (RGB uint8, same size); `face_px`: the face height in `image`'s pixels.

    Every pixel within `_RING` face heights outside the person should be the backdrop, or a mix of the
    backdrop with a colour of the person nearby (a soft hair edge, a strand over the shoulder, a shadow): its
    distance from the nearest such mix, beyond `_UNEXPLAINED`, is what is counted. What `person` counts as the
    person is not looked at: a wide glow of old wall that the segmenter takes for part of the person is not seen.
    """
    height, width = image.shape[:2]
    scale = _SCALE_FACE / max(face_px, 1.0)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    shown = cv2.resize(image, size, interpolation=interpolation).astype(np.float32)
    back = cv2.resize(backdrop, size, interpolation=interpolation).astype(np.float32)
    inside = (cv2.resize(person, size, interpolation=interpolation) > 0.5).astype(np.uint8)
    ring = (cv2.dilate(inside, _disk(_RING * _SCALE_FACE)) > 0) & (inside == 0)
    core = cv2.erode(inside, _disk(_CORE_ERODE * _SCALE_FACE)).astype(np.float32)
    if not ring.any() or not core.any():
        return 0.0
    ys, xs = np.nonzero(ring)
    pixels, behind = shown[ys, xs], back[ys, xs]
    # The person's mean colour nearby: a normalised blur of the person's pixels a little inside the edge.
    sigma = _COLOUR_SIGMA * _SCALE_FACE
    weight = cv2.GaussianBlur(core, (0, 0), sigma)
    mean = cv2.GaussianBlur(shown * core[..., None], (0, 0), sigma) / np.maximum(weight, 1e-4)[..., None]
    stray = _stray(pixels, behind, mean[ys, xs].astype(np.float32))
    # And each of the person's commonest colours where it is close by (hair beside a face, a collar).
    levels = np.minimum((shown * (_PALETTE_LEVELS / 256.0)).astype(np.int32), _PALETTE_LEVELS - 1)
    bins = (levels[..., 0] * _PALETTE_LEVELS + levels[..., 1]) * _PALETTE_LEVELS + levels[..., 2]
    in_core = core > 0
    counts = np.bincount(bins[in_core], minlength=_PALETTE_LEVELS**3)
    reach = _PALETTE_REACH * _SCALE_FACE
    near = cv2.GaussianBlur(core, (0, 0), reach)[ys, xs]
    for b in np.argsort(counts)[::-1][:_PALETTE]:
        if counts[b] == 0:
            break
        members = (in_core & (bins == b)).astype(np.float32)
        colour = shown[members > 0].mean(axis=0)
        nearby = cv2.GaussianBlur(members, (0, 0), reach)[ys, xs] >= _PALETTE_SHARE * np.maximum(near, 1e-4)
        stray = np.where(nearby, np.minimum(stray, _stray(pixels, behind, colour.astype(np.float32))), stray)
    excess = np.maximum(stray - _UNEXPLAINED, 0.0)
    return float(excess.sum()) / 255.0 / _SCALE_FACE**2 * 100.0


def head_room(person: npt.NDArray[np.float32], landmarks: Landmarks) -> float:
    """The gap between the top edge and the top of the head, as a fraction of the image height: over the
    face's width, the median of each column's highest person pixel above the face (a median, so that a spike
    of background the segmenter took for the person does not count). 0: the head touches the top edge."""
    height, width = person.shape[:2]
    x0, y0, x1, _ = face_box(landmarks)
    left, right = max(0, int(x0)), min(width, int(np.ceil(x1)))
    bottom = min(height, max(1, int(y0)))
    if right <= left:
        return 0.0
    above = person[:bottom, left:right] > 0.5
    # Each column's first person row; bottom (the forehead) where the column has none above the face.
    tops = np.where(above.any(axis=0), above.argmax(axis=0), bottom)
    return float(np.median(tops)) / height
