"""The CPU "studio" renderer: head-and-shoulders framing, relighting, skin smoothing and a studio
background, all plain OpenCV so that one 1280x720 frame takes a few milliseconds on two cores."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine import background as bgmod
from engine import framing as fr
from engine import relight as rl
from engine import skin as sk
from engine.background import BackgroundSettings
from engine.framing import Box, FramingSettings, FramingState
from engine.relight import LightState, RelightSettings
from engine.skin import SkinSettings
from engine.types import Face, Mask, NoSections, RGBImage, Sections

# Rebuild the cached key-light map only when the face (in output pixels) moved or resized by more than
# this fraction of its height: the map is broad, and framing keeps the face nearly still in the output.
_KEY_REBUILD = 0.08
# Rebuild the tone LUT only when a gain changed by more than this (relative): below one 8-bit level.
_LUT_REBUILD = 1.0 / 512.0


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
        self._reset()

    def _reset(self) -> None:
        """Forget per-stream state and caches."""
        self._frame_state = FramingState()
        self._light_state = LightState()
        self._box: Box | None = None
        self._backdrop: RGBImage | None = None
        self._lut = rl.tone_luts((1.0, 1.0, 1.0))
        self._lut_gains = (1.0, 1.0, 1.0)
        self._key_map: npt.NDArray[np.uint8] | None = None
        self._key_at: tuple[float, float, float] | None = None
        # Where the face last was in the source (centre x, centre y, height), for the key light when
        # tracking drops out for a moment.
        self._face_src: tuple[float, float, float] | None = None
        self._mask_prev: Mask | None = None

    @property
    def last_box(self) -> Box | None:
        """The crop box (source pixels) used for the latest frame."""
        return self._box

    def prepare(self) -> None:
        """Build what does not change per frame: the backdrop canvas and the identity tone table."""
        self._reset()
        bg = self._background
        if bg.enabled and bg.mode == "studio":
            self._backdrop = bgmod.studio_backdrop(self.output_size)
        elif bg.enabled and bg.mode == "color":
            self._backdrop = bgmod.solid(self.output_size, bg.color)
        elif bg.enabled and bg.mode == "image" and self._background_image is not None:
            self._backdrop = bgmod.cover_resize(self._background_image, self.output_size)
        self._prepared = True

    def close(self) -> None:
        """Drop the caches; safe to call more than once."""
        self._reset()
        self._prepared = False

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        """One output canvas (output_size, RGB uint8) from a source frame, its face and person mask."""
        if not self._prepared:
            raise RuntimeError("StudioRenderer.render: call prepare() first")
        _check_rgb("image", image)
        ih, iw = image.shape[:2]
        landmarks = None
        if face is not None:
            if tuple(face.frame_size) != (iw, ih):
                raise ValueError(
                    f"face.frame_size = {face.frame_size!r}: expected the image's (width, height) {iw, ih}"
                )
            landmarks = face.landmarks

        with self._sections.section("frame"):
            self._frame_state, box = fr.update_framing(
                self._frame_state, landmarks, (iw, ih), self.output_size, timestamp_ms, self._framing
            )
            self._box = box
            affine = fr.box_to_affine(box, self.output_size)
            out = fr.warp(image, affine, self.output_size)
            out_landmarks = None if landmarks is None else fr.transform_points(landmarks, affine)

        if self._relight.enabled:
            with self._sections.section("relight"):
                out = self._apply_relight(image, landmarks, out, affine, timestamp_ms)

        if self._skin.enabled and out_landmarks is not None and self._skin.strength > 0.0:
            with self._sections.section("skin"):
                out = sk.smooth_skin(out, out_landmarks, self._skin.strength)

        if self._background.enabled and mask is not None:
            with self._sections.section("background"):
                out = self._apply_background(out, mask, (iw, ih), affine)
        return out

    def _apply_relight(
        self,
        image: RGBImage,
        landmarks: npt.NDArray[np.float32] | None,
        out: RGBImage,
        affine: npt.NDArray[np.float64],
        timestamp_ms: int,
    ) -> RGBImage:
        """Measure the face on the source, move the gains, apply LUT and key light to the output."""
        settings = self._relight
        stats = None if landmarks is None else rl.face_region_stats(image, landmarks)
        self._light_state = rl.update_light(self._light_state, stats, timestamp_ms, settings)
        gains = self._light_state.gains
        if max(abs(math.log(g / c)) for g, c in zip(gains, self._lut_gains, strict=True)) > _LUT_REBUILD:
            self._lut = rl.tone_luts(gains)
            self._lut_gains = gains

        if landmarks is not None:
            oval = np.asarray(landmarks, dtype=np.float32)[list(sk.FACE_OVAL), :2]
            centre = oval.mean(axis=0)
            self._face_src = (float(centre[0]), float(centre[1]), sk.face_height_px(landmarks))
        key_map = None
        if settings.key_light != "none" and settings.key_strength > 0.0 and self._face_src is not None:
            cx, cy, fh = self._face_src
            (ox, oy) = fr.transform_points(np.array([[cx, cy]]), affine)[0]
            ofh = fh * float(affine[1, 1])
            key_map = self._cached_key_map(float(ox), float(oy), ofh)
        return rl.apply(out, self._lut, key_map)

    def _cached_key_map(self, cx: float, cy: float, face_px: float) -> npt.NDArray[np.uint8]:
        """The 3-channel key-light map for a face at (cx, cy) of height `face_px` in output pixels."""
        at = self._key_at
        if (
            self._key_map is None
            or at is None
            or math.hypot(cx - at[0], cy - at[1]) > _KEY_REBUILD * at[2]
            or abs(face_px - at[2]) > _KEY_REBUILD * at[2]
        ):
            single = rl.key_light_map(
                self.output_size, (cx, cy), face_px, self._relight.key_light, self._relight.key_strength
            )
            self._key_map = np.repeat(single[:, :, None], 3, axis=2)
            self._key_at = (cx, cy, face_px)
        return self._key_map

    def _apply_background(
        self, out: RGBImage, mask: Mask, frame_size: tuple[int, int], affine: npt.NDArray[np.float64]
    ) -> RGBImage:
        """Refine the mask in source pixels (stable under camera moves), warp it, composite."""
        if mask.shape != (frame_size[1], frame_size[0]):
            expected = (frame_size[1], frame_size[0])
            raise ValueError(f"mask shape {mask.shape!r}: expected the image's (height, width) {expected!r}")
        settings = self._background
        scale = float(affine[1, 1])
        self._mask_prev = bgmod.refine_mask(
            mask, settings.feather_px / scale, self._mask_prev, settings.mask_smoothing
        )
        alpha = fr.warp(self._mask_prev, affine, self.output_size)
        backdrop = self._backdrop if self._backdrop is not None else bgmod.blurred(out, settings.blur_sigma)
        return bgmod.composite(out, backdrop, alpha)


def _check_rgb(name: str, image: npt.NDArray[np.generic]) -> None:
    """Raise ValueError unless `image` is RGB uint8 HxWx3."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected RGB uint8 HxWx3, got {image.dtype} {image.shape!r}")
