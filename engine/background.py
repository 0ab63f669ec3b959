"""Background replacement: backdrops (studio, colour, user image, blur), mask refinement, compositing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias, cast

import cv2
import numpy as np
import numpy.typing as npt

from engine.types import Mask, RGBImage
from engine.validation import check_choice, check_range

Alpha: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.uint8]
"""HxW opacity: float32 in [0, 1] (a Mask) or uint8 0..255."""

MODES = ("studio", "blur", "color", "image")
MASK_FLOOR = 1.0 / 1024.0
"""Mask values below this (a quarter of an 8-bit level) are treated as 0."""
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class BackgroundSettings:
    """What replaces the background behind the person, and how the person mask is cleaned up."""

    enabled: bool = True
    mode: str = "studio"
    """One of "studio", "blur", "color", "image"."""
    color: str = "#2b3a4a"
    """Backdrop colour for mode "color", hex #rrggbb."""
    tint: str = ""
    """Colour of mode "studio"'s lit backdrop (#rrggbb, its brightest point); empty: neutral grey."""
    image: str = ""
    """Path of the backdrop image for mode "image"; the app loads it and hands the array to the renderer."""
    blur_sigma: float = 12.0
    """Gaussian sigma of mode "blur", in output pixels."""
    feather_px: float = 1.0
    """Softness of the person's edge, in output pixels (a blur of the matte's decided edge)."""
    mask_smoothing: float = 0.4
    """Largest weight of the previous frame's matte for a pixel whose brightness did not change (0 = none)."""
    matte_face_px: float = 120.0
    """The face's height (forehead to chin) in the matte's working pixels: the frame is reduced by a whole
    factor to come near it, never enlarged. More is finer hair and more CPU (stills use their full resolution)."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled = {self.enabled!r}: must be true or false")
        check_choice("mode", self.mode, MODES)
        if not isinstance(self.color, str) or not _HEX_COLOR.fullmatch(self.color):
            raise ValueError(f"color = {self.color!r}: must be a hex colour like '#2b3a4a'")
        if not isinstance(self.tint, str) or (self.tint and not _HEX_COLOR.fullmatch(self.tint)):
            raise ValueError(f"tint = {self.tint!r}: must be a hex colour like '#3e6b6b', or empty")
        if not isinstance(self.image, str):
            raise ValueError(f"image = {self.image!r}: must be a path string")
        if self.mode == "image" and not self.image:
            raise ValueError("image = '': must name an image file when mode = 'image'")
        check_range("blur_sigma", self.blur_sigma, 0.5, 100.0)
        check_range("feather_px", self.feather_px, 0.0, 50.0)
        check_range("mask_smoothing", self.mask_smoothing, 0.0, 0.95)
        check_range("matte_face_px", self.matte_face_px, 16.0, 100_000.0)


def studio_backdrop(size: tuple[int, int], tint: str = "") -> RGBImage:
    """A studio backdrop of `size` (width, height): RGB uint8 HxWx3; grey, or `tint` (#rrggbb) at its
    brightest point.

    A soft pool of light behind where the head sits, falling off to a darker vignette, a little lighter
    at the top than the floor; a faint fixed dither keeps the smooth gradient from banding.
    """
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # Distances in units of the output height so the look does not depend on the aspect.
    dx = (x + 0.5 - width * 0.5) / height
    dy = (y + 0.5 - height * 0.38) / height
    pool = np.exp(-(dx * dx + dy * dy * 1.6) / (2 * 0.48**2))
    vertical = 1.0 - 0.18 * (y / height)
    level = (0.20 + 0.34 * pool) * vertical
    if tint:
        if not _HEX_COLOR.fullmatch(tint):
            raise ValueError(f"tint = {tint!r}: must be a hex colour like '#3e6b6b'")
        colour = np.array([int(tint[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)
        rgb = level[..., None] / 0.54 * colour
    else:
        # Slightly cool greys read as "studio paper" rather than dirty beige.
        rgb = level[..., None] * np.array([0.97, 1.0, 1.03], dtype=np.float32) * 255.0
    # Triangular dither of +-1 LSB, fixed seed: deterministic output, no visible contour lines.
    rng = np.random.default_rng(0)
    shape = (height, width, 1)
    noise = rng.random(shape, dtype=np.float32) - rng.random(shape, dtype=np.float32)
    return np.clip(rgb + noise + 0.5, 0, 255).astype(np.uint8)


def solid(size: tuple[int, int], color_hex: str) -> RGBImage:
    """A flat RGB uint8 HxWx3 canvas of `size` (width, height) filled with `#rrggbb`."""
    if not _HEX_COLOR.fullmatch(color_hex):
        raise ValueError(f"color = {color_hex!r}: must be a hex colour like '#2b3a4a'")
    rgb = [int(color_hex[i : i + 2], 16) for i in (1, 3, 5)]
    return np.full((size[1], size[0], 3), rgb, dtype=np.uint8)


def cover_resize(image: RGBImage, size: tuple[int, int]) -> RGBImage:
    """Scale `image` (RGB uint8) to fill `size` (width, height), cropping the overflow evenly."""
    width, height = size
    ih, iw = image.shape[:2]
    aspect = width / height
    # The largest centred crop of the output's aspect, then one resize to exactly `size`.
    crop_w, crop_h = (ih * aspect, ih) if iw / ih > aspect else (iw, iw / aspect)
    x0 = round((iw - crop_w) / 2)
    y0 = round((ih - crop_h) / 2)
    crop = image[y0 : y0 + round(crop_h), x0 : x0 + round(crop_w)]
    shrinking = crop.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return _u8(cv2.resize(crop, (width, height), interpolation=interpolation))


def blur_factor(sigma: float) -> int:
    """The downscale (1..8) at which a blur of `sigma` px is done: sigma stays at least 1.5 downscaled
    pixels, so the bilinear upscale of the result shows no grid."""
    return int(min(8, max(1, sigma // 1.5)))


def masked_blur(image: RGBImage, sigma: float, exclude: Alpha | None = None) -> RGBImage:
    """Gaussian blur of `image` (RGB uint8 HxWx3) with `sigma` px at its own resolution.

    `exclude` (HxW alpha, float32 0..1 or uint8 0..255; 1 = the person) keeps those pixels out of the
    average (a normalised blur), so a blurred background does not glow with the person's colours around
    their outline. Deep inside the excluded region the result is arbitrary but within 0..255.
    """
    if exclude is None:
        return _u8(cv2.GaussianBlur(image, (0, 0), sigma))
    keep = 1.0 - _alpha_f32(exclude)
    weighted = cv2.GaussianBlur(image.astype(np.float32) * keep[:, :, None], (0, 0), sigma)
    weight = cv2.GaussianBlur(keep, (0, 0), sigma)
    result = weighted / np.maximum(weight, np.float32(1e-3))[:, :, None]
    return np.clip(result + 0.5, 0, 255).astype(np.uint8)


def blurred(image: RGBImage, sigma: float, exclude: Alpha | None = None) -> RGBImage:
    """`masked_blur` of `image` (RGB uint8 HxWx3) with `sigma` px, done at reduced resolution for speed:
    downscale by `blur_factor(sigma)`, blur, upscale. `exclude`: as in `masked_blur`, full size."""
    h, w = image.shape[:2]
    factor = blur_factor(sigma)
    if factor == 1:
        return masked_blur(image, sigma, exclude)
    small_size = (max(1, w // factor), max(1, h // factor))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    small_exclude: Alpha | None = None
    if exclude is not None:
        small_exclude = cast(Alpha, cv2.resize(exclude, small_size, interpolation=cv2.INTER_AREA))
    result = masked_blur(_u8(small), sigma / factor, small_exclude)
    return _u8(cv2.resize(result, (w, h), interpolation=cv2.INTER_LINEAR))


def alpha_u8(mask: Mask) -> npt.NDArray[np.uint8]:
    """A float32 HxW mask in [0, 1] as uint8 alpha 0..255 (rounded)."""
    return cast(npt.NDArray[np.uint8], cv2.convertScaleAbs(mask, alpha=255.0))


def _alpha_f32(alpha: Alpha) -> Mask:
    """HxW alpha (float32 0..1 or uint8 0..255) as float32 0..1."""
    if alpha.dtype == np.uint8:
        return alpha.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.asarray(alpha, dtype=np.float32)


def refine_mask(mask: Mask, feather_px: float, previous: Mask | None, smoothing: float) -> Mask:
    """Feather a person mask (float32 HxW in [0, 1]) and average it with the previous refined mask.

    `feather_px` is a Gaussian sigma in this mask's pixels; `smoothing` is the previous mask's weight
    (ignored when `previous` is None or another size). Values below `MASK_FLOOR` become 0. Returns a
    new float32 HxW mask in [0, 1].
    """
    # Segmenters emit denormal floats (~1e-40) far from the person, and the running average decays
    # into them; denormal arithmetic made the blur 4.5x slower on this CPU. Zeroing them is invisible.
    out = _floor(np.asarray(mask, dtype=np.float32))
    if feather_px > 0.0:
        out = cast(Mask, cv2.GaussianBlur(out, (0, 0), feather_px))
    if previous is not None and previous.shape == out.shape and smoothing > 0.0:
        # Feather first, then average: the history is blurred once, not once per frame.
        out = _floor(cast(Mask, cv2.addWeighted(out, 1.0 - smoothing, previous, smoothing, 0.0)))
    return out


def _floor(mask: Mask) -> Mask:
    """A new float32 mask with values below MASK_FLOOR set to 0."""
    return cast(Mask, cv2.threshold(mask, MASK_FLOOR, 0.0, cv2.THRESH_TOZERO)[1])


def composite(fg: RGBImage, bg: RGBImage, alpha: Alpha, at: tuple[int, int] | None = None) -> RGBImage:
    """`fg * alpha + bg * (1 - alpha)` for RGB uint8 HxWx3 images; `alpha` HxW float32 in [0, 1] or
    uint8 0..255. Alpha 1 (255) gives `fg` and 0 gives `bg` exactly; in between within one level.

    `at` (x, y): `fg` is only the part of the picture at that place in `bg` (`alpha` is `bg`'s size and 0 beyond
    `fg`): the caller made no more of the foreground than the alpha shows. Returns a new image."""
    a8 = alpha if alpha.dtype == np.uint8 else alpha_u8(np.asarray(alpha, dtype=np.float32))
    fx, fy = (0, 0) if at is None else at
    # Outside the rectangle around the person the result is the background: blend only inside it.
    x, y, w, h = cv2.boundingRect(a8)
    x0, y0 = max(x, fx), max(y, fy)
    x1, y1 = min(x + w, fx + fg.shape[1]), min(y + h, fy + fg.shape[0])
    # Numpy's copy() of a large image costs several times an allocation and copyto here (measured, numpy 2.4).
    out = np.empty_like(bg)
    np.copyto(out, bg)
    if x1 <= x0 or y1 <= y0:
        return out
    rows, cols = slice(y0, y1), slice(x0, x1)
    front_part = fg[y0 - fy : y1 - fy, x0 - fx : x1 - fx]
    # Two 8-bit multiplies and an add: about twice as fast as cv2.blendLinear's float path. The
    # background half is computed in place in the output's rectangle (OpenCV writes into the view).
    a3 = cv2.merge([a8[rows, cols]] * 3)
    front = cv2.multiply(front_part, a3, scale=1.0 / 255.0)
    inverse = cv2.bitwise_not(a3, dst=a3)
    region = out[rows, cols]
    cv2.multiply(region, inverse, dst=region, scale=1.0 / 255.0)
    cv2.add(front, region, dst=region)
    return out


def _u8(image: npt.NDArray[np.generic]) -> RGBImage:
    """Type an OpenCV result known to be uint8 (the stubs return a generic array)."""
    return cast(RGBImage, image)
