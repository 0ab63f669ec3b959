"""The re-rendered square's way in and out, on the device where the model's tensors already are.

In: the canvas's square (side x side, uint8) is uploaded once and resized to the model's size x size with
OpenCV's INTER_AREA weights as two small matrix products (exact area averaging for any ratio). Out: the
decoded image is scaled back to side x side (bilinear, pixel centres as `engine.framing.paste_back` warps
them) and blended into the uploaded square through a feather weight made once per side, then downloaded as
the finished square. The CPU path (`cut_square`, `paste_square`) does the same with
OpenCV; the two agree to a level or two (tests/test_square_ops.py).
"""

from __future__ import annotations

import math
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from engine import framing as fr
from engine.types import Affine, Mask, RGBImage

__all__ = ["DeviceSquare", "area_matrix", "crop_geometry", "cut_square", "feather_mask", "paste_square", "paste_weight",
           "paste_with_weight", "square_region"]


def square_region(canvas_size: tuple[int, int], centre_x: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the largest square in a canvas of `canvas_size` (width, height), centred on
    `centre_x` where it fits."""
    width, height = canvas_size
    side = min(width, height)
    x0 = min(max(round(centre_x - side / 2), 0), width - side)
    return x0, (height - side) // 2, side


def feather_mask(side: int, feather: float) -> Mask:
    """side x side float32 weight: 1 inside, falling smoothly to 0 over `feather` * side at each edge."""
    ramp_px = feather * side
    if ramp_px < 1:
        return np.ones((side, side), np.float32)
    d = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32) + 0.5
    edge = np.clip(d / ramp_px, 0.0, 1.0)
    edge = edge * edge * (3 - 2 * edge)  # smoothstep
    return np.outer(edge, edge).astype(np.float32)


def crop_geometry(canvas_size: tuple[int, int], canvas_affine: Affine, landmarks: npt.NDArray[np.float32],
                  size: int) -> tuple[int, int, int, Affine]:
    """Where to re-render: the square (x0, y0, side) of the canvas around the face (its nose), and the affine
    from source pixels to the size x size crop of it. `canvas_affine` maps source pixels to the canvas."""
    centre_x = float(fr.transform_points(landmarks[[1], :2], canvas_affine)[0, 0])
    x0, y0, side = square_region(canvas_size, centre_x)
    scale = size / side
    to_crop: Affine = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]]) @ np.vstack(
        [canvas_affine - [[0, 0, x0], [0, 0, y0]], [0, 0, 1]])
    return x0, y0, side, to_crop


def cut_square(canvas: RGBImage, x0: int, y0: int, side: int, size: int) -> RGBImage:
    """The canvas's square at (x0, y0) resized to size x size."""
    square = canvas[y0 : y0 + side, x0 : x0 + side]
    return cast(RGBImage, cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


def paste_square(canvas: RGBImage, rendered: RGBImage, x0: int, y0: int, side: int, feather: Mask) -> RGBImage:
    """`rendered` scaled to side x side and blended into a copy of `canvas` at (x0, y0) through `feather`
    (rendered-sized weight)."""
    scale = side / rendered.shape[0]
    # Continuous pixels (engine.framing's convention): the render's [0, size] spans the canvas's [x0, x0 + side].
    affine: Affine = np.array([[scale, 0.0, x0], [0.0, scale, y0]])
    return fr.paste_back(canvas, rendered, affine, feather)


def area_matrix(src: int, dst: int) -> npt.NDArray[np.float32]:
    """(dst, src) weights of OpenCV's INTER_AREA shrink from `src` to `dst` pixels along one axis: output pixel
    i averages the source interval [i * src / dst, (i + 1) * src / dst), partial pixels by their overlap."""
    if dst > src:
        raise ValueError(f"area_matrix: {src} -> {dst} is not a shrink")
    scale = src / dst
    m = np.zeros((dst, src), np.float64)
    for i in range(dst):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(math.floor(lo), min(src, math.ceil(hi))):
            m[i, j] = min(hi, j + 1) - max(lo, j)
    return (m / scale).astype(np.float32)


def _paste_affine(size: int, side: int) -> Affine:
    """The affine from a size x size render to a side x side square at the origin (as `paste_square` places it)."""
    scale = side / size
    return np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5]])


def paste_weight(feather: Mask, side: int) -> Mask:
    """The render-sized `feather` weight warped to the side x side square exactly as `paste_back` warps it each
    frame (bilinear, 0 beyond the render's edge): the same for every frame of a given side, so made once."""
    size = feather.shape[0]
    return cast(Mask, cv2.warpAffine(np.asarray(feather, np.float32), _paste_affine(size, side), (side, side),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0))


def paste_with_weight(canvas: RGBImage, rendered: RGBImage, x0: int, y0: int, side: int, weight: Mask) -> RGBImage:
    """A copy of `canvas` with `rendered` scaled to side x side blended in at (x0, y0) through `weight` (side x side,
    from `paste_weight`): `paste_square`'s result without re-warping the constant weight."""
    out = canvas.copy()
    size = rendered.shape[0]
    warped = cv2.warpAffine(rendered, _paste_affine(size, side), (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    region = out[y0 : y0 + side, x0 : x0 + side]
    region[...] = cv2.blendLinear(warped, region, weight, 1.0 - weight)
    return out


class DeviceSquare:
    """The resize in and the feathered paste out for one square side, as tensors on `device`."""

    def __init__(self, side: int, size: int, weight: Mask, device: torch.device) -> None:
        self.side, self.size, self.device = side, size, device
        self._down: torch.Tensor | None = None
        if side > size:
            self._down = torch.from_numpy(area_matrix(side, size)).to(device)
        self._weight = torch.from_numpy(np.ascontiguousarray(weight, np.float32)).to(device)

    def crop(self, square: torch.Tensor) -> torch.Tensor:
        """(side, side, 3) uint8 on the device -> (1, 3, size, size) float32 in whole grey levels 0..255 (rounded
        as OpenCV's uint8 resize rounds)."""
        x = square.permute(2, 0, 1).float()
        if self._down is not None:
            x = torch.matmul(torch.matmul(self._down, x), self._down.T)
        elif self.side != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return x.round_().clamp_(0, 255).unsqueeze(0)

    def paste(self, rendered: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        """`rendered` (1, 3, size, size) float in grey levels, scaled to the square and blended into `square`
        ((side, side, 3) uint8) through the weight: the finished square, (side, side, 3) uint8 on the device."""
        up = rendered.float()
        if self.side != self.size:
            up = F.interpolate(up, size=(self.side, self.side), mode="bilinear", align_corners=False)
        base = square.permute(2, 0, 1).float()
        out = torch.lerp(base, up[0], self._weight)
        return out.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
