"""The person matte: from the segmenter's confidence, the frame and the tracked face, an alpha that decides the
person's edge instead of only softening the segmenter's.

The segmenter (a 256x256 network) labels every person-like thing in its picture as person: runners behind the
user, a striped panel beside the shoulder; its edge is a 5-10 pixel blur at webcam resolution. Steps, all on
the region around the tracked face (nothing outside it can be the user):

1. A head-and-shoulders template placed on the face (sizes in face heights, generous for hair and broad
   shoulders) gives every pixel its signed distance to where a person can be; far outside it nothing is kept.
2. Colour models, one for the head and one for the body (the face and the confident person core against the
   sure background and the pixels beyond the template), score each pixel's colour; a stream rebuilds them
   every `_COLOUR_EVERY` frames.
3. Other people: the segmenter's person beyond the template is someone else's; flooded inward over the frame's
   colours (a watershed against the user's sure parts and the room), what it reaches is theirs unless its
   colour is clearly the user's.
4. The confidence (clipped, so the network cannot overrule everything else), the colour score, the template
   distance and the other people add up as log-odds; hysteresis keeps the confident parts connected to the
   face and grows them a little into the uncertain ones (other people and blobs that touch the user only
   through a thin bridge, or not at all, are dropped); small holes inside the person are filled.
5. At working resolution (the face about `face_px` tall) the decided alpha is sharpened and snapped to the
   frame's edges by a (fast) guided filter, applied only in the unknown band along the edge.
6. A per-pixel running average over frames, weighted by how little each pixel's brightness changed: static
   edges stop flickering, moving ones follow at once (no smear).

Pure arrays: no file I/O. Coordinates are continuous pixels as in `engine.framing`. Long because the six
steps share the coarse grid, the template and the stream's state, and were tuned together on the matting kit:
split, each would need the others' internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.framing import face_height_px
from engine.skin import FACE_OVAL
from engine.types import Affine, Landmarks, Mask, RGBImage, Segmenter

Alpha8 = npt.NDArray[np.uint8]

# The template, in face heights (forehead landmark 10 to chin 152) from the face oval's centre, y down. The
# head: an ellipse `_HEAD_HALF_WIDTH` wide each side and reaching `_HEAD_TOP` above the centre (hair included).
# The body: half-widths at depths below the centre (neck, shoulder slope, upper arms), then straight down.
_HEAD_HALF_WIDTH = 0.8
_HEAD_TOP = 1.0
_BODY = ((0.6, 0.3), (1.45, 0.8), (1.7, 1.3))
_REACH = 0.5
"""Beyond the template by more than this (face heights) nothing is the person."""
_REGION_HALF = 2.35
"""Half the side of the square the segmenter sees (face heights): the template's widest reach and a margin."""
_REGION_CENTRE = 0.8
"""The square's centre below the face's centre (face heights)."""

# Log-odds weights, tuned on the matting kit (benchmarks/matte_quality.py).
_CONF_CLIP = 0.05
"""Confidence clipped to [c, 1 - c] before its log-odds: the network alone can outvote at most about 3."""
_COLOUR_WEIGHT = 1.5
_COLOUR_CLIP = 3.0
_CORE_SCALE = 0.55
"""The sure person: the template at this scale, where the confidence is above _CORE_CONF (and the face)."""
_CORE_CONF = 0.95
_NONE = 0.02
"""Where the network is this sure there is no person, nothing overrules it."""
_BG_CONF = 0.2
_BG_OUTSIDE = 0.2
"""The sure background: confidence below _BG_CONF, or this far (face heights) outside the template."""
_ZONES = (0.3, 0.6)
"""Depths (face heights below the face's centre) between which the head's colour model gives way to the body's."""
_TEMPLATE_WEIGHT = 8.0
"""Log-odds lost per face height outside the template."""
_OTHER_WEIGHT = 6.0
"""Log-odds lost where another person's part (flooded from beyond the template) reaches."""
_OTHER_CONF = 0.5
"""Beyond the template, confidence from this on is another person (the seed of the flood)."""
_OTHER_COLOUR = 1.0
"""...but a pixel whose colour log-ratio (the user's against the room's) is above this stays the user's."""
_BIAS = 0.5
"""Log-odds added everywhere: a doubtful pixel next to the person is kept (lost hair shows more than a
sliver of room)."""
_SURE_FG = 0.8
"""Hysteresis: the person's sure parts (kept when connected to the face)..."""
_SURE_BG = 0.3
"""...and the uncertain parts they may grow into."""
_GROW = 0.17
"""How far (face heights) the kept person grows from its confident core into uncertain pixels."""
_COARSE_FACE_PX = 48.0
"""Face height in the coarse grid where the decisions are made (about the segmenter's own resolution)."""
_GAIN = 4.0
"""Contrast applied to the decided alpha before the guided filter (edge width / gain)."""
_EDGE_GAIN = 3.0
"""Contrast applied after the guided filter."""
_GUIDE_EPS = 1e-2
_HOLE = 0.3
"""Holes in the person narrower than about this (face heights) are filled."""
_COLOUR_EVERY = 3
"""A stream's colour models are rebuilt every this many frames (the colours of person and room change slowly)."""
_HOLD_MS = 500
"""A face lost for up to this long is still used (a tracking dropout must not bring the runners back)."""
_STILL_DIFF = 12.0
"""Brightness change (0..255) at which a pixel counts as moving: its previous alpha gets no weight."""


PHOTO_FACE_PX = 100_000.0
"""A `Matter.face_px` that keeps any photo at its full resolution."""


@dataclass(frozen=True)
class Region:
    """A rectangle of source pixels: [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class Matte:
    """The person's alpha over a region of the source frame, at working resolution.

    Outside the region the alpha is 0 on the left, right and top (the region reaches past the template), and
    below it the body continues: its bottom row extends down (what `fr.warp`'s replicated border does).
    """

    alpha: Alpha8
    """HxW uint8, 255 = person."""
    to_source: Affine
    """alpha pixels -> source pixels."""


def person_region(landmarks: Landmarks | None, frame_size: tuple[int, int]) -> Region | None:
    """The square around the head and shoulders that the segmenter should see, clipped to the frame; None
    without a face, or when the square would cover nearly the whole frame anyway."""
    if landmarks is None:
        return None
    width, height = frame_size
    cx, cy, fh = _face_geometry(landmarks)
    half = _REGION_HALF * fh
    region = _clip(cx - half, cy + _REGION_CENTRE * fh - half, cx + half, cy + _REGION_CENTRE * fh + half,
                   frame_size)
    if region is None or region.width * region.height >= 0.9 * width * height:
        return None
    return region


def segment_person(segmenter: Segmenter, image: RGBImage, timestamp_ms: int,
                   landmarks: Landmarks | None) -> Mask:
    """The person confidence of `image` (HxW float32, same size): the segmenter run on `person_region` (the whole
    frame without a face), 0 outside it. On the region the person fills the network's square input: about
    twice the pixels across the face of a whole 16:9 frame, and the room and other people mostly left out."""
    region = person_region(landmarks, (image.shape[1], image.shape[0]))
    if region is None:
        return segmenter.segment(image, timestamp_ms)
    crop = np.ascontiguousarray(image[region.y0 : region.y1, region.x0 : region.x1])
    conf = np.zeros(image.shape[:2], np.float32)
    conf[region.y0 : region.y1, region.x0 : region.x1] = segmenter.segment(crop, timestamp_ms)
    return conf


class Matter:
    """Mattes the frames of one stream (or one photo): keeps the temporal state and the last face.

    `face_px`: the face's height in working pixels (the source is reduced by a whole factor to come near it;
    never enlarged); more is finer hair and more CPU. `smoothing`: the largest weight of the previous alpha
    for a still pixel (0 = none).
    """

    def __init__(self, face_px: float = 120.0, smoothing: float = 0.4) -> None:
        self.face_px = float(face_px)
        self.smoothing = float(smoothing)
        self.reset()

    def reset(self) -> None:
        self._factor = 0
        self._frame_size: tuple[int, int] | None = None
        self._prev_alpha: Alpha8 | None = None
        self._prev_grey: Alpha8 | None = None
        self._last_face: tuple[Landmarks, int] | None = None
        self._colours = _ColourModels()

    def update(self, image: RGBImage, confidence: Mask, landmarks: Landmarks | None,
               timestamp_ms: int = 0) -> Matte:
        """The matte of `image` (RGB uint8) from its person `confidence` (HxW float32 in [0, 1]) and the face's
        `landmarks` (source pixels; None: not tracked in this frame)."""
        height, width = image.shape[:2]
        if confidence.shape != (height, width):
            raise ValueError(f"confidence shape {confidence.shape!r}: expected the image's {(height, width)!r}")
        if self._frame_size != (width, height):
            self.reset()
            self._frame_size = (width, height)
        landmarks = self._held(landmarks, timestamp_ms)
        geometry = _face_geometry(landmarks) if landmarks is not None else None
        face_h = geometry[2] if geometry is not None else height / 4.0
        factor = self._work_factor(face_h)
        # The coarse grid, where the decisions are made, is the working grid reduced by a whole factor too:
        # whole-factor area resizes are several times faster than fractional ones.
        coarse = max(1, round(face_h / factor / _COARSE_FACE_PX))
        region = _work_region(geometry, (width, height), factor * coarse)
        if region is None:  # the face's region lies outside the frame
            return Matte(np.zeros((1, 1), np.uint8), np.array([[width, 0.0, 0.0], [0.0, height, 0.0]]))
        rows, cols = slice(region.y0, region.y1), slice(region.x0, region.x1)
        work_size = (region.width // factor, region.height // factor)
        coarse_size = (work_size[0] // coarse, work_size[1] // coarse)
        guide = image[rows, cols]
        if factor > 1:
            guide = cast(RGBImage, cv2.resize(guide, work_size, interpolation=cv2.INTER_AREA))
        small = guide if coarse == 1 else cast(RGBImage, cv2.resize(guide, coarse_size, interpolation=cv2.INTER_AREA))
        conf = cast(Mask, cv2.resize(confidence[rows, cols], coarse_size, interpolation=cv2.INTER_AREA))
        decided = _decide(small, conf, landmarks, region, factor * coarse, face_h, self._colours)
        alpha = decided if coarse == 1 else cast(Mask, cv2.resize(decided, work_size, interpolation=cv2.INTER_LINEAR))
        grey = cast(Alpha8, cv2.cvtColor(guide, cv2.COLOR_RGB2GRAY))
        alpha8 = _refine_edge(alpha, grey, face_h / factor)
        alpha8 = self._stabilise(alpha8, grey, region, factor)
        to_source = np.array([[float(factor), 0.0, region.x0], [0.0, float(factor), region.y0]])
        return Matte(alpha8, to_source)

    def _held(self, landmarks: Landmarks | None, timestamp_ms: int) -> Landmarks | None:
        if landmarks is not None:
            self._last_face = (landmarks, timestamp_ms)
            return landmarks
        if self._last_face is not None and 0 <= timestamp_ms - self._last_face[1] <= _HOLD_MS:
            return self._last_face[0]
        return None

    def _work_factor(self, face_h: float) -> int:
        """The whole reduction factor of the working grid, kept while the face stays within its range (so the
        temporal state stays on one grid)."""
        wanted = max(1.0, face_h / self.face_px)
        if self._factor and abs(wanted - self._factor) < 0.75:
            return self._factor
        factor = max(1, round(wanted))
        if factor != self._factor:
            self._prev_alpha = self._prev_grey = None
            self._colours = _ColourModels()
            self._factor = factor
        return factor

    def _stabilise(self, alpha: Alpha8, grey: Alpha8, region: Region, factor: int) -> Alpha8:
        """Blend with the previous frame's alpha where the picture did not change; remember this frame."""
        assert self._frame_size is not None
        gx, gy = region.x0 // factor, region.y0 // factor
        h, w = alpha.shape
        rows, cols = slice(gy, gy + h), slice(gx, gx + w)
        if self._prev_alpha is None or self._prev_grey is None:
            grid = (-(-self._frame_size[1] // factor), -(-self._frame_size[0] // factor))
            self._prev_alpha = np.zeros(grid, np.uint8)
            self._prev_grey = np.zeros(grid, np.uint8)
            fresh = True
        else:
            fresh = False
        prev_alpha = self._prev_alpha[rows, cols]
        if not fresh and self.smoothing > 0.0 and prev_alpha.shape == alpha.shape:
            diff = cv2.absdiff(grey, self._prev_grey[rows, cols])
            # Weight of the past: `smoothing` where nothing changed, 0 from a change of _STILL_DIFF on.
            still = cv2.subtract(np.full_like(diff, int(_STILL_DIFF)), diff)
            weight = cv2.multiply(still, self.smoothing / _STILL_DIFF, dtype=cv2.CV_32F)
            alpha = cast(Alpha8, cv2.blendLinear(prev_alpha, alpha, weight, 1.0 - weight))
        self._prev_alpha.fill(0)
        self._prev_alpha[rows, cols] = alpha
        self._prev_grey[rows, cols] = grey
        return alpha


def full_alpha(matte: Matte, frame_size: tuple[int, int]) -> Alpha8:
    """The matte as a source-sized uint8 alpha (HxW of `frame_size` (width, height))."""
    from engine import framing as fr

    return fr.warp(matte.alpha, matte.to_source, frame_size)


def photo_alpha(image: RGBImage, confidence: Mask, landmarks: Landmarks | None) -> Alpha8:
    """The matte of a photo at its own resolution (uint8 HxW): what stills and `livecam cutout` use."""
    matte = Matter(face_px=PHOTO_FACE_PX, smoothing=0.0).update(image, confidence, landmarks)
    return full_alpha(matte, (image.shape[1], image.shape[0]))


# --- the steps ----------------------------------------------------------------------------------------------

def _face_geometry(landmarks: Landmarks) -> tuple[float, float, float]:
    """The face oval's centre (x, y) and the face height, source pixels."""
    oval = np.asarray(landmarks, dtype=np.float32)[list(FACE_OVAL), :2]
    centre = oval.mean(axis=0)
    return float(centre[0]), float(centre[1]), max(face_height_px(landmarks), 1.0)


def _clip(x0: float, y0: float, x1: float, y1: float, frame_size: tuple[int, int]) -> Region | None:
    width, height = frame_size
    region = Region(max(0, int(np.floor(x0))), max(0, int(np.floor(y0))),
                    min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1))))
    return region if region.width >= 8 and region.height >= 8 else None


def _work_region(geometry: tuple[float, float, float] | None, frame_size: tuple[int, int],
                 factor: int) -> Region | None:
    """The region matted: the template's reach around the face (the whole frame without one), its corners and
    size multiples of `factor` (it may stop up to `factor` - 1 pixels short of the frame's edge)."""
    width, height = frame_size
    if geometry is None:
        region: Region | None = Region(0, 0, width, height)
    else:
        cx, cy, fh = geometry
        half = _REGION_HALF * fh
        region = _clip(cx - half, cy - (_HEAD_TOP + _REACH + 0.05) * fh, cx + half,
                       cy + _REGION_CENTRE * fh + half, frame_size)
    if region is None:
        return None
    x0, y0 = region.x0 // factor * factor, region.y0 // factor * factor
    x1 = x0 + (region.x1 - x0) // factor * factor
    y1 = y0 + (region.y1 - y0) // factor * factor
    return _clip(x0, y0, x1, y1, frame_size)


def _template(shape: tuple[int, int], cx: float, cy: float, fh: float) -> npt.NDArray[np.uint8]:
    """The head-and-shoulders template (255 inside) in a grid of `shape` with the face at (cx, cy), fh tall."""
    mask = np.zeros(shape, np.uint8)
    head_centre = (round(cx), round(cy - 0.1 * fh))
    axes = (max(1, round(_HEAD_HALF_WIDTH * fh)), max(1, round((_HEAD_TOP - 0.1) * fh)))
    cv2.ellipse(mask, head_centre, axes, 0, 0, 360, 255, -1)
    right = [(cx + u * fh, cy + v * fh) for u, v in _BODY]
    bottom = cy + (_BODY[-1][1] + 100.0) * fh
    outline = [*right, (cx + _BODY[-1][0] * fh, bottom), (cx - _BODY[-1][0] * fh, bottom)]
    outline += [(2 * cx - x, y) for x, y in reversed(right)]
    cv2.fillPoly(mask, [np.round(np.array(outline)).astype(np.int32).clip(-(2**20), 2**20)], 255)
    return mask


@dataclass
class _ColourModels:
    """A stream's colour models (`_colour_table`: head, body) and the frames they have served."""

    tables: tuple[Mask, Mask] | None = None
    age: int = 0


def _decide(small: RGBImage, conf: Mask, landmarks: Landmarks | None, region: Region, cell: int,
            face_h: float, colours: _ColourModels | None = None) -> Mask:
    """The decided alpha (float32 0..1) of the region in the coarse grid (`cell` source pixels a side), from
    the frame and the confidence in that grid: template, colour, hysteresis. `colours`: the stream's colour
    models, reused for `_COLOUR_EVERY` frames (None: built for this frame only)."""
    clipped = np.clip(conf, _CONF_CLIP, 1.0 - _CONF_CLIP)
    score = np.log(clipped / (1.0 - clipped))
    shape = conf.shape[:2]
    fh = face_h / cell
    grow = max(1, round(_GROW * fh))
    if landmarks is None:
        return _hysteresis(_sigmoid(score), None, grow)
    oval = np.asarray(landmarks, dtype=np.float32)[list(FACE_OVAL), :2]
    oval = (oval - np.array([region.x0, region.y0], np.float32)) / np.float32(cell)
    cx, cy = (float(v) for v in oval.mean(axis=0))
    inside = _template(shape, cx, cy, fh)
    # Signed distance to the template in face heights (> 0 outside).
    outside_d = cv2.distanceTransform(cv2.bitwise_not(inside), cv2.DIST_L2, 3)
    inside_d = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    signed = (outside_d - inside_d) * np.float32(1.0 / fh)
    face = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(face, np.round(oval).astype(np.int32), 1)
    core = _template(shape, cx, cy, _CORE_SCALE * fh)  # a smaller template: the sure person
    sure_fg = ((conf > _CORE_CONF) & (core > 0)) | (face > 0)
    sure_bg = (conf < _BG_CONF) | (signed > _BG_OUTSIDE)
    # Two colour models, the head's (hair, skin: what may hang beside the neck) and the body's (clothes),
    # blended between the chin and the shoulders: another person's shirt beside the head is not the user's
    # hair, though the user's shirt has its colour.
    depth = (np.arange(shape[0], dtype=np.float32)[:, None] + 0.5 - cy) / fh
    head_rows, body_rows = depth < _ZONES[1], depth > _ZONES[0]
    colour = _colour_index(small)
    if colours is None or colours.tables is None or colours.age >= _COLOUR_EVERY:
        tables = (_colour_table(colour, sure_fg & head_rows, sure_bg & head_rows),
                  _colour_table(colour, sure_fg & body_rows, sure_bg & body_rows))
        if colours is not None:
            colours.tables, colours.age = tables, 0
    else:
        tables = colours.tables
    if colours is not None:
        colours.age += 1
    head, body = tables[0][colour], tables[1][colour]
    blend = np.clip((depth - _ZONES[0]) / (_ZONES[1] - _ZONES[0]), 0.0, 1.0)
    colour_score = head + blend * (body - head)
    score += _COLOUR_WEIGHT * colour_score
    score -= _TEMPLATE_WEIGHT * np.maximum(signed, 0.0)
    others = (conf >= _OTHER_CONF) & (signed > 0.0) & (core == 0)
    if others.any():
        # Not where the colour is clearly the user's: a broad shoulder beyond the template, or the room's
        # confidence bleeding next to it, would flood into the user's own edge.
        theirs = _flood_others(small, sure_fg, sure_bg, others) & (colour_score < _OTHER_COLOUR)
        score -= np.float32(_OTHER_WEIGHT) * theirs
    person = _sigmoid(score + _BIAS)
    person[face > 0] = 1.0  # the tracked face is the person, whatever its colours
    person[(signed > _REACH) | (conf < _NONE)] = 0.0
    return _fill_holes(_hysteresis(person, face, grow), (_HOLE * fh) ** 2)


def _flood_others(small: RGBImage, person: npt.NDArray[np.bool_], room: npt.NDArray[np.bool_],
                  others: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Where the other people's parts reach when they, the user's sure parts and the room flood the picture
    together (a watershed over its colours): a runner beside the user's shoulder that continues beyond the
    template is theirs up to the strongest edge between them and the user."""
    markers = np.full(person.shape, 0, np.int32)
    markers[room] = 3
    markers[others] = 2
    markers[person] = 1
    cv2.watershed(np.ascontiguousarray(small), markers)
    return cast(npt.NDArray[np.bool_], markers == 2)


def _sigmoid(score: npt.NDArray[np.floating]) -> Mask:
    return cast(Mask, (1.0 / (1.0 + np.exp(-score))).astype(np.float32))


def _colour_index(image: RGBImage) -> npt.NDArray[np.int32]:
    """Each pixel's bin among 16 x 16 x 16 RGB bins."""
    q = (image >> 4).astype(np.int32)
    return cast(npt.NDArray[np.int32], (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2])


def _colour_table(index: npt.NDArray[np.int32], fg: npt.NDArray[np.bool_], bg: npt.NDArray[np.bool_]) -> Mask:
    """log(P(colour | person) / P(colour | background)) per colour bin (`index`: `_colour_index`), from the
    colour histograms of the frame's sure person and sure background, clipped to +-_COLOUR_CLIP."""
    fg_hist = np.bincount(index[fg], minlength=4096).astype(np.float32)
    bg_hist = np.bincount(index[bg], minlength=4096).astype(np.float32)
    if not fg_hist.any() or not bg_hist.any():
        return np.zeros(4096, np.float32)
    eps = np.float32(1e-4)
    table = np.log((fg_hist / fg_hist.sum() + eps) / (bg_hist / bg_hist.sum() + eps))
    return cast(Mask, np.clip(table, -_COLOUR_CLIP, _COLOUR_CLIP).astype(np.float32))


def _hysteresis(person: Mask, seed: npt.NDArray[np.uint8] | None, grow: int) -> Mask:
    """Keep the sure parts (> _SURE_FG) connected to `seed` (without one: every sizeable part), grown by up to
    `grow` cells into the uncertain ones (> _SURE_BG); 0 elsewhere."""
    sure = (person > _SURE_FG).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(sure, connectivity=8)
    if count <= 1:
        return np.zeros_like(person)
    if seed is not None:
        keep = np.unique(labels[(seed > 0) & (sure > 0)])
        keep = keep[keep > 0]
        if keep.size == 0:  # the face itself is not sure person: keep the largest part
            keep = np.array([1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))])
    else:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = 1 + np.nonzero(areas >= 0.1 * areas.max())[0]
    chosen = np.zeros(count, np.uint8)
    chosen[keep] = 1
    kept = chosen[labels]
    allowed = (person > _SURE_BG).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(grow):
        kept = cast(npt.NDArray[np.uint8], cv2.bitwise_and(cv2.dilate(kept, kernel), allowed))
    return cast(Mask, np.where(kept > 0, person, np.float32(0.0)))


def _fill_holes(person: Mask, max_area: float) -> Mask:
    """`person` with its enclosed holes smaller than `max_area` cells filled (a shadowed fold of the cheek, a
    shirt's pattern: not the room). Larger holes, such as the room seen between an arm and the body, stay."""
    outside = (person < 0.5).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=4)
    h, w = person.shape
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (area < max_area)
    if not enclosed.any():
        return person
    holes = np.concatenate([[False], enclosed])[labels]
    return cast(Mask, np.where(holes, np.float32(1.0), person))


def _refine_edge(alpha: Mask, grey: Alpha8, face_px: float) -> Alpha8:
    """Sharpen the decided alpha and snap it to the picture's edges: a guided filter (the frame's brightness
    as guide, `_fast_guided`), applied only in the unknown band along the edge. Returns uint8."""
    sharp = _contrast(alpha, _GAIN)
    radius = max(1, round(face_px / 30.0))
    unknown = cv2.inRange(sharp, 1, 254)
    band = cv2.dilate(unknown, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
    x, y, w, h = cv2.boundingRect(band)
    if w == 0 or h == 0:
        return cast(Alpha8, sharp)
    # The filter's window reaches `radius` beyond the band: give it that context.
    x0, y0 = max(0, x - radius), max(0, y - radius)
    x1, y1 = min(sharp.shape[1], x + w + radius), min(sharp.shape[0], y + h + radius)
    rows, cols = slice(y0, y1), slice(x0, x1)
    src = sharp[rows, cols].astype(np.float32) * np.float32(1.0 / 255.0)
    guide = grey[rows, cols].astype(np.float32) * np.float32(1.0 / 255.0)
    filtered = _fast_guided(guide, src, radius, _GUIDE_EPS)
    edge = _contrast(filtered, _EDGE_GAIN)
    out = sharp.copy()
    region = out[rows, cols]
    np.copyto(region, edge, where=band[rows, cols] > 0)
    return cast(Alpha8, out)


def _fast_guided(guide: Mask, src: Mask, radius: int, eps: float) -> Mask:
    """A guided filter of `src` (float32) by `guide` (float32, one channel) with its linear coefficients found
    at half resolution and applied at full (He and Sun's fast guided filter): the edge follows the guide's
    full-resolution detail at about a third of the cost."""
    h, w = src.shape
    size = (max(1, w // 2), max(1, h // 2))
    gs = cv2.resize(guide, size, interpolation=cv2.INTER_AREA)
    ps = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
    r = max(1, round(radius / 2))
    k = (2 * r + 1, 2 * r + 1)
    mi = cv2.boxFilter(gs, -1, k)
    mp = cv2.boxFilter(ps, -1, k)
    mii = cv2.boxFilter(gs * gs, -1, k)
    mip = cv2.boxFilter(gs * ps, -1, k)
    a = (mip - mi * mp) / (mii - mi * mi + np.float32(eps))
    b = mp - a * mi
    ma = cv2.resize(cv2.boxFilter(a, -1, k), (w, h), interpolation=cv2.INTER_LINEAR)
    mb = cv2.resize(cv2.boxFilter(b, -1, k), (w, h), interpolation=cv2.INTER_LINEAR)
    return cast(Mask, ma * guide + mb)


def _contrast(alpha: Mask, gain: float) -> Alpha8:
    """`(alpha - 0.5) * gain + 0.5` as uint8 0..255 (saturated)."""
    return cast(Alpha8, cv2.addWeighted(alpha, 255.0 * gain, alpha, 0.0, 127.5 * (1.0 - gain), dtype=cv2.CV_8U))
