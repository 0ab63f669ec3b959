"""The CPU "studio" renderer: head-and-shoulders framing, relighting, skin smoothing and a studio
background, all plain OpenCV so that one 1280x720 frame takes a few milliseconds on two cores."""

from __future__ import annotations

import math
import threading
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from engine import background as bgmod
from engine import framing as fr
from engine import lighting
from engine import matte as mt
from engine import placement as pl
from engine import relight as rl
from engine import skin as sk
from engine.background import BackgroundSettings
from engine.framing import Box, FramingSettings, FramingState
from engine.relight import LightState, RelightSettings
from engine.skin import SkinSettings
from engine.types import Face, Mask, NoSections, RGBImage, Sections

# Rebuild the cached key-light map only when the head (in source pixels) moved or resized by more than this
# fraction of its height, or turned by more than this much (`lighting.Head.turn`): the map is smooth.
_KEY_REBUILD = 0.08
# Rebuild the tone tables only when a gain changed by more than this (relative): below one 8-bit level.
_LUT_REBUILD = 1.0 / 512.0
# Source pixels relit beyond the part the output shows (`shown_region`): the warp reads one beyond it; blur
# mode's backdrop halves the frame up to three times first (pyrDown reads two beyond at each level).
_WARP_MARGIN = 2
# The person's output rectangle is padded by this many pixels and kept until the person leaves it or it is
# this many times larger (in area) than a fresh one.
_RECT_PAD = 24
_RECT_SLACK = 1.5
_BLUR_MARGIN = 32
# ... and starts that part on a multiple of 8, so its halvings sample where the whole frame's would.
_BLUR_ALIGN = 8


class StudioRenderer:
    """A `Renderer`: frame the face, relight, smooth skin, replace the background.

    One instance serves one stream (it keeps the framing, light and mask smoothing state).
    """

    name = "studio"

    def __init__(
        self,
        output_size: tuple[int, int],
        framing: FramingSettings,
        background: BackgroundSettings,
        relight: RelightSettings,
        skin: SkinSettings,
        background_image: RGBImage | None = None,
        sections: Sections | None = None,
    ) -> None:
        width, height = output_size
        if width < 16 or height < 16:
            raise ValueError(f"output_size = {output_size!r}: must be at least (16, 16)")
        if background.enabled and background.mode == "image":
            if background_image is None:
                raise ValueError("background_image: mode 'image' needs the loaded image array, got None")
            _check_rgb("background_image", background_image)
        self.output_size = (int(width), int(height))
        self.needs_mask = background.enabled
        self._framing = framing
        self._background = background
        self._relight = relight
        self._skin = skin
        self._background_image = background_image
        self._sections: Sections = sections if sections is not None else NoSections()
        self._prepared = False
        self.shown_ms: int | None = None
        self._look_lock = threading.Lock()
        self._pending_look: tuple[BackgroundSettings, RGBImage | None] | None = None
        self._matter = mt.Matter(background.matte_face_px, background.mask_smoothing)
        self._reset()

    def _reset(self) -> None:
        """Forget per-stream state and caches."""
        self._light_state = LightState()
        self._backdrop: RGBImage | None = None
        self._tables = rl.tone_tables((1.0, 1.0, 1.0))
        self._lut_gains = (1.0, 1.0, 1.0)
        self._lut_key_range: tuple[float, float] | None = None
        self._reset_source_state()

    def _reset_source_state(self) -> None:
        """Forget what is kept in source pixels: it means nothing for a frame of another size."""
        self._frame_size: tuple[int, int] | None = None
        self._frame_state = FramingState()
        self._box: Box | None = None
        # The key-light map and the head it was made for (kept through a tracking dropout).
        self._key_map: rl.KeyMap | None = None
        self._key_head: lighting.Head | None = None
        self._key_shift = (0, 0)
        # Where the camera picture's edges are in the output, and the fade widths there (`fr.fade_alpha`).
        self._fade: tuple[tuple[float, float, float, float], tuple[float, float, float, float]] = (
            (0.0, 0.0, float(self.output_size[0]), float(self.output_size[1])), (0.0, 0.0, 0.0, 0.0))
        self._body_end = self.output_size[1]
        """The first output row below the camera picture (output_size[1] when the picture reaches the bottom)."""
        self._rect: tuple[int, int, int, int] | None = None
        """The output rectangle that shows camera pixels (`_person_rect`)."""
        self._matter.reset()

    @property
    def last_box(self) -> Box | None:
        """The crop box (source pixels) used for the latest frame."""
        return self._box

    def set_look(self, background: BackgroundSettings, background_image: RGBImage | None = None) -> None:
        """Use `background` (and its picture, for mode "image") from the next frame on. Thread-safe: a control
        thread calls it while the render thread runs; the backdrop is rebuilt on the render thread."""
        if background.enabled and background.mode == "image":
            if background_image is None:
                raise ValueError("background_image: mode 'image' needs the loaded image array, got None")
            _check_rgb("background_image", background_image)
        with self._look_lock:
            self._pending_look = (background, background_image)

    def _apply_look(self) -> None:
        with self._look_lock:
            pending, self._pending_look = self._pending_look, None
        if pending is not None:
            self._background, self._background_image = pending
            self._matter.face_px = self._background.matte_face_px
            self._matter.smoothing = self._background.mask_smoothing
            self._build_backdrop()

    def prepare(self) -> None:
        """Build what does not change per frame: the backdrop canvas and the identity tone table."""
        self._reset()
        self._build_backdrop()
        self._prepared = True

    def _build_backdrop(self) -> None:
        self._backdrop = None
        bg = self._background
        if bg.enabled and bg.mode == "studio":
            self._backdrop = bgmod.studio_backdrop(self.output_size, bg.tint)
        elif bg.enabled and bg.mode == "color":
            self._backdrop = bgmod.solid(self.output_size, bg.color)
        elif bg.enabled and bg.mode == "image" and self._background_image is not None:
            self._backdrop = bgmod.cover_resize(self._background_image, self.output_size)

    def counters(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        """Drop the caches; safe to call more than once."""
        self._reset()
        self._prepared = False

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int,
               box: Box | None = None) -> RGBImage:
        """One output canvas (output_size, RGB uint8) from a source frame, its face and person mask.

        `box`: show this box of the source (source pixels, the output's aspect; it may reach beyond the frame)
        instead of following the face: a still's canvas for its platform crops."""
        if not self._prepared:
            raise RuntimeError("StudioRenderer.render: call prepare() first")
        self._apply_look()
        _check_rgb("image", image)
        self.shown_ms = timestamp_ms
        ih, iw = image.shape[:2]
        if mask is not None:
            _check_mask(mask, (iw, ih))
        if self._frame_size != (iw, ih):
            # A camera that came back at another resolution, or the next photo of a folder: frame it afresh
            # (the first face snaps into place) instead of gliding from a crop box meant for another frame.
            # The light's gains are kept: the scene and its light are the same.
            self._reset_source_state()
            self._frame_size = (iw, ih)
        landmarks = None
        if face is not None:
            if tuple(face.frame_size) != (iw, ih):
                raise ValueError(
                    f"face.frame_size = {face.frame_size!r}: expected the image's (width, height) {iw, ih}"
                )
            landmarks = face.landmarks

        cutout = self._background.enabled and mask is not None
        # The matte (source pixels; the unedited frame guides its edge) comes first: the framing reads the top
        # of the hair from it, and over a cached backdrop it says which part of the output shows the person.
        matte = None
        if cutout and mask is not None:
            with self._sections.section("matte"):
                matte = self._matter.update(image, mask, landmarks, timestamp_ms)
        with self._sections.section("frame"):
            affine = self._frame(landmarks, matte, (iw, ih), timestamp_ms, box)
        if matte is not None and self._backdrop is not None:
            return self._render_person(image, landmarks, matte, timestamp_ms, affine, self._backdrop)
        # Blur mode's backdrop is the framed room itself; without a cut-out the whole output is the picture.
        lit, lit_affine = self._lit_part(image, landmarks, timestamp_ms, affine, self.output_size,
                                         *((_BLUR_MARGIN, _BLUR_ALIGN) if cutout else (_WARP_MARGIN, 1)))
        with self._sections.section("warp"):
            out = fr.warp(lit, lit_affine, self.output_size)
            if cutout:
                pl.extend_below(out, self._body_end, self._fade[1][0])
        if matte is not None:
            with self._sections.section("alpha"):
                alpha, alpha_src, alpha_affine = self._person_alpha(matte, affine)
            with self._sections.section("background"):
                backdrop = self._blurred_backdrop(lit, lit_affine, alpha_src, alpha_affine, affine, (iw, ih))
                out = bgmod.composite(out, backdrop, alpha)
        return out

    def _render_person(self, image: RGBImage, landmarks: npt.NDArray[np.float32] | None, matte: mt.Matte,
                       timestamp_ms: int, affine: npt.NDArray[np.float64], backdrop: RGBImage) -> RGBImage:
        """The person over the cached `backdrop`. The person's alpha comes first: only the output rectangle it covers
        shows camera pixels, so only the part of the frame behind that rectangle is relit, smoothed and warped
        (a head-and-shoulders shot covers about half the output)."""
        with self._sections.section("alpha"):
            alpha = self._person_alpha(matte, affine)[0]
        x, y, w, h = self._person_rect(alpha)
        to_rect = affine - np.array([[0.0, 0.0, x], [0.0, 0.0, y]])
        lit, lit_affine = self._lit_part(image, landmarks, timestamp_ms, to_rect, (w, h), _WARP_MARGIN)
        with self._sections.section("warp"):
            person = fr.warp(lit, lit_affine, (w, h))
            pl.extend_below(person, self._body_end - y, self._fade[1][0])
        with self._sections.section("background"):
            return bgmod.composite(person, backdrop, alpha, (x, y))

    def _person_rect(self, alpha: npt.NDArray[np.uint8]) -> tuple[int, int, int, int]:
        """The output rectangle (x, y, w, h) that shows camera pixels: around the person's `alpha`, and wide
        enough below the camera picture for `extend_below`'s sideways blur. Kept while the person stays inside
        it (and it is not much larger than needed): the warp of a given rectangle resamples the picture at the
        same places each frame, so a still person stays still to the last bit."""
        width, height = self.output_size
        x, y, w, h = cv2.boundingRect(alpha)
        if w == 0 or h == 0:
            x, y, w, h = 0, 0, 1, 1  # no person: nothing shows, but the light still follows the frame
        if y + h > self._body_end:
            # Below the camera picture the body goes on as its last row blurred sideways: warp that row wide
            # enough that the blur sees what the whole row's would there.
            pad = math.ceil(4.0 * max(self._fade[1][0], 0.5)) + 2
            x, w = max(x - pad, 0), min(x + w + pad, width) - max(x - pad, 0)
            if y >= self._body_end:
                h, y = h + y - max(self._body_end - 1, 0), max(self._body_end - 1, 0)
        kept = self._rect
        if kept is not None:
            kx, ky, kw, kh = kept
            inside = kx <= x and ky <= y and x + w <= kx + kw and y + h <= ky + kh
            if inside and kw * kh <= _RECT_SLACK * (w + 2 * _RECT_PAD) * (h + 2 * _RECT_PAD):
                return kept
        x0, y0 = max(x - _RECT_PAD, 0), max(y - _RECT_PAD, 0)
        self._rect = (x0, y0, min(x + w + _RECT_PAD, width) - x0, min(y + h + _RECT_PAD, height) - y0)
        return self._rect

    def _lit_part(self, image: RGBImage, landmarks: npt.NDArray[np.float32] | None, timestamp_ms: int,
                  affine: npt.NDArray[np.float64], size: tuple[int, int],
                  margin: int, align: int = 1) -> tuple[RGBImage, npt.NDArray[np.float64]]:
        """Relight and smooth the skin of the part of `image` that `affine` shows in `size` (plus `margin` source
        pixels, its top-left corner on a multiple of `align`): that part and its affine (its pixels -> output).

        Both run on the source frame, before the warp: the warp upscales (2x or more at usual webcam sizes), so
        per-pixel work there costs a quarter or less of the same at the output."""
        ih, iw = image.shape[:2]
        region = shown_region(affine, (iw, ih), size, margin)
        region = (region[0] - region[0] % align, region[1] - region[1] % align, region[2], region[3])
        x0, y0 = region[:2]
        lit = image[y0 : region[3], x0 : region[2]]
        if self._relight.enabled:
            with self._sections.section("relight"):
                lit = self._apply_relight(image, landmarks, timestamp_ms, region)
        if self._skin.enabled and landmarks is not None and self._skin.strength > 0.0:
            with self._sections.section("skin"):
                # The relit part is this frame's own copy: smoothed in place.
                shifted = landmarks.copy()
                shifted[:, 0] -= x0
                shifted[:, 1] -= y0
                lit = sk.smooth_skin(lit, shifted, self._skin.strength, inplace=self._relight.enabled)
        lit_affine = affine.copy()
        lit_affine[:, 2] += affine[:, :2] @ np.array([x0, y0], np.float64)
        return lit, lit_affine

    def _frame(self, landmarks: npt.NDArray[np.float32] | None, matte: mt.Matte | None, frame_size: tuple[int, int],
               timestamp_ms: int, box: Box | None) -> npt.NDArray[np.float64]:
        """Move the framing (or take `box`), note where the camera picture ends in the output and how softly
        the person fades there; returns the affine source -> output.

        With a person cut-out (background on and a mask) the box may reach beyond the camera picture: the
        backdrop shows there. Without one there is nothing to put on a backdrop, so the box stays inside."""
        outside = matte is not None
        head = None
        if landmarks is not None:
            head = fr.head_top(landmarks) if matte is None else pl.head_top_in_matte(landmarks, matte.alpha,
                                                                                     matte.to_source)
        if box is None:
            self._frame_state, box = fr.update_framing(self._frame_state, landmarks, frame_size, self.output_size,
                                                       timestamp_ms, self._framing, head, outside)
        self._box = box
        affine = fr.box_to_affine(box, self.output_size)
        face = (fr.face_height_px(landmarks) * float(affine[1, 1]) if landmarks is not None
                else self._framing.face_height * self.output_size[1])
        side = self._framing.fade * face
        # Above the hair the ramp is no wider than the hair's margin in the picture, so the hair is not faded.
        top = side if head is None else min(side, max(head.y * float(affine[1, 1]), 2.0))
        # Below the picture the body goes on (its last row, blurred sideways) and fades out gradually.
        left, top_edge, right, bottom = fr.picture_edges(affine, frame_size)
        self._body_end = math.ceil(bottom - 0.5)
        self._fade = ((left, top_edge, right, bottom + 2.0 * side), (side, top, side, 3.0 * side))
        return affine

    def _fade_outside(self, alpha: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """The warped person alpha with the body continued below the camera picture and faded out where the
        picture ends inside the output (see `_frame`)."""
        edges, widths = self._fade
        continued = 0 < self._body_end < self.output_size[1]
        if continued:
            alpha = alpha.copy()
            pl.extend_below(alpha, self._body_end, widths[0])
        return fr.fade_alpha(alpha, edges, widths, body_end=continued)

    def _apply_relight(self, image: RGBImage, landmarks: npt.NDArray[np.float32] | None, timestamp_ms: int,
                       region: tuple[int, int, int, int] | None = None) -> RGBImage:
        """Measure the face's skin, move the gains, apply the tone tables with the key light (source pixels) to
        `region` (x0, y0, x1, y1) of the frame (None: all of it): returns that part, relit."""
        settings = self._relight
        stats, highlight = None, 1.0
        if landmarks is not None:
            stats = rl.face_region_stats(image, landmarks)
            highlight = rl.scene_highlight(image)
        self._light_state = rl.update_light(self._light_state, stats, timestamp_ms, settings, highlight)
        gains = self._light_state.gains
        key = self._cached_key_map((image.shape[1], image.shape[0]), landmarks)
        key_range = None if key is None else (key.lo, key.hi)
        if (
            max(abs(math.log(g / c)) for g, c in zip(gains, self._lut_gains, strict=True)) > _LUT_REBUILD
            or key_range != self._lut_key_range
        ):
            self._tables = rl.tone_tables(gains, key)
            self._lut_gains = gains
            self._lut_key_range = key_range
        return rl.apply(image, self._tables, key, region)

    def _cached_key_map(self, size: tuple[int, int], landmarks: npt.NDArray[np.float32] | None) -> rl.KeyMap | None:
        """The key-light map for a frame of `size` with the face at `landmarks`, rebuilt only when the head
        moved, resized or turned noticeably. Without a face (a tracking dropout) the last one is kept, so the
        light does not pop."""
        settings = self._relight
        if settings.key_light == "none" or settings.key_strength <= 0.0:
            return None
        if landmarks is not None:
            head = lighting.head_from_landmarks(landmarks)
            if self._key_head is None or self._key_head.moved(head, _KEY_REBUILD):
                self._key_map = rl.key_light_map(size, landmarks, settings)
                self._key_head = head
                self._key_shift = (0, 0)
            else:
                # Between rebuilds the map moves with the head: a map left behind by a moving head lights the
                # wrong side a little more each frame, then snaps back (a visible pumping of the key light).
                self._key_shift = (round(head.cx - self._key_head.cx), round(head.cy - self._key_head.cy))
        if self._key_map is None or self._key_shift == (0, 0):
            return self._key_map
        return lighting.shift_map(self._key_map, *self._key_shift, size)

    def _person_alpha(
        self, matte: mt.Matte, affine: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
        """Warp the person's `matte` (made in source pixels: stable under camera moves): the output's alpha, and
        the matte (feathered) with its affine to the output."""
        # The matte covers a region around the person at working resolution: alpha px -> source px -> output.
        alpha_affine = _compose(affine, matte.to_source)
        alpha_src = matte.alpha
        feather = self._background.feather_px / float(alpha_affine[1, 1])
        if feather > 0.05:
            alpha_src = cast(npt.NDArray[np.uint8], cv2.GaussianBlur(alpha_src, (0, 0), feather))
        alpha = fr.warp(alpha_src, alpha_affine, self.output_size)
        # Framing: no person beyond the camera picture, and a soft edge where it ends inside the output.
        return self._fade_outside(alpha), alpha_src, alpha_affine

    def _blurred_backdrop(
        self,
        lit: RGBImage,
        affine: npt.NDArray[np.float64],
        alpha_src: npt.NDArray[np.uint8],
        alpha_affine: npt.NDArray[np.float64],
        frame_affine: npt.NDArray[np.float64],
        frame_size: tuple[int, int],
    ) -> RGBImage:
        """The blur-mode backdrop: the framed source blurred with the person left out of the average. `lit` and
        `affine`: the relit part of the frame and its pixels -> output; `frame_affine`: the frame's own.

        Warped straight from the source to the small blur size, so no full-size image is downscaled;
        a pyrDown first keeps that warp from aliasing (INTER_AREA at a fractional scale costs 10x more).
        """
        sigma = self._background.blur_sigma
        factor = bgmod.blur_factor(sigma)
        width, height = self.output_size
        small_size = (max(1, width // factor), max(1, height // factor))
        to_small = np.array([[small_size[0] / width], [small_size[1] / height]])
        small_affine = affine * to_small
        source: RGBImage = lit
        while small_affine[1, 1] < 0.5 and min(source.shape[:2]) >= 32:
            source = cast(RGBImage, cv2.pyrDown(source))
            # pyrDown's pixel k is centred on source pixel 2k: x_source = 2 * x_half - 0.5 (edge coords).
            small_affine = small_affine * np.array([2.0, 2.0, 1.0])
            small_affine[:, 2] -= 0.25 * small_affine[:, :2].sum(axis=1)
        small = fr.warp(source, small_affine, small_size)
        # The person (the matte covers a region around them: replicated beyond it, as the composite warps it)
        # and, beyond the camera picture (a framing that reaches past it), no room: both count as left out, and
        # the fill below continues the room there (no mirrored person, no streaks).
        small_alpha = fr.warp(alpha_src, alpha_affine * to_small, small_size)
        iw, ih = frame_size
        corners = fr.transform_points(np.array([[0.0, 0.0], [float(iw), float(ih)]]), frame_affine * to_small)
        (x0, y0), (x1, y1) = np.floor(corners.min(axis=0)).astype(int), np.ceil(corners.max(axis=0)).astype(int)
        beyond = np.full((small_size[1], small_size[0]), 255, np.uint8)
        beyond[max(0, y0 + 1) : max(0, y1 - 1), max(0, x0 + 1) : max(0, x1 - 1)] = 0
        small_alpha = np.maximum(small_alpha, beyond)
        # The person (and the part beyond the picture) filled from the room around, not left out of the average:
        # where the framing fades the person or reaches beyond the picture, the room shows there, not holes.
        blurred = bgmod.masked_blur(pl.fill_behind(small, small_alpha), sigma / factor)
        return cast(RGBImage, cv2.resize(blurred, self.output_size, interpolation=cv2.INTER_LINEAR))


def shown_region(affine: npt.NDArray[np.float64], frame_size: tuple[int, int], output_size: tuple[int, int],
                 margin: int) -> tuple[int, int, int, int]:
    """The part of a frame of `frame_size` that a scale-and-shift `affine` (source px -> output px) shows in
    `output_size`, widened by `margin` source pixels (for the warp's interpolation) and clipped to the frame:
    (x0, y0, x1, y1). The whole frame when the affine is not a plain scale-and-shift."""
    (a, b, tx), (c, d, ty) = affine
    width, height = frame_size
    if b != 0.0 or c != 0.0 or a <= 0.0 or d <= 0.0:
        return 0, 0, width, height
    x0, x1 = -tx / a, (output_size[0] - tx) / a
    y0, y1 = -ty / d, (output_size[1] - ty) / d
    region = (min(max(math.floor(x0) - margin, 0), width - 1), min(max(math.floor(y0) - margin, 0), height - 1),
              max(min(math.ceil(x1) + margin, width), 1), max(min(math.ceil(y1) + margin, height), 1))
    if region[2] <= region[0] or region[3] <= region[1]:
        return 0, 0, width, height
    return region


def _compose(outer: npt.NDArray[np.float64], inner: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The 2x3 affine `outer` after `inner` (apply `inner` first)."""
    linear = outer[:, :2] @ inner[:, :2]
    shift = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return np.hstack([linear, shift[:, None]])


def _check_mask(mask: Mask, frame_size: tuple[int, int]) -> None:
    """Raise ValueError unless `mask` is float32 HxW of the frame's size."""
    if mask.dtype != np.float32:
        raise ValueError(f"mask: expected float32 HxW in [0, 1], got {mask.dtype}")
    if mask.shape != (frame_size[1], frame_size[0]):
        expected = (frame_size[1], frame_size[0])
        raise ValueError(f"mask shape {mask.shape!r}: expected the image's (height, width) {expected!r}")


def _check_rgb(name: str, image: npt.NDArray[np.generic]) -> None:
    """Raise ValueError unless `image` is RGB uint8 HxWx3."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected RGB uint8 HxWx3, got {image.dtype} {image.shape!r}")
