"""Reading a user's photo (`livecam still PHOTO`, `livecam enroll PHOTO...`) strictly: a file that is cut short
or damaged is refused with its reason instead of being used with part of the picture missing.

OpenCV decodes the pixels (and applies the EXIF orientation), as everywhere else in livecam, but libjpeg only
warns on a truncated JPEG and OpenCV then returns the picture with its lower part grey. So Pillow reads the
whole file first, with truncated images refused (its default, `ImageFile.LOAD_TRUNCATED_IMAGES = False`,
which livecam never changes): a JPEG at 1/8 scale, which still reads every
byte of the compressed data but decodes 1/64 of the pixels.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from engine.types import RGBImage
from livecam.errors import LivecamError


class PhotoError(LivecamError):
    """A photo that cannot be used as an image: `reason` says why (the message also names the file)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"photo {path}: {reason}")
        self.path = path
        self.reason = reason


NOT_AN_IMAGE = "not an image (it cannot be decoded; is the file complete?)"


def read_image(path: Path) -> RGBImage:
    """`path` as RGB uint8, EXIF orientation applied. PhotoError when it is not a file, cannot be read, is not
    an image, or is truncated or damaged."""
    if path.is_dir():
        raise PhotoError(path, "is a folder, not a photo")
    if not path.is_file():
        raise PhotoError(path, "no such file")
    reason = _damage(path)
    if reason is not None:
        raise PhotoError(path, reason)
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. more pixels than OpenCV allows
        bgr = None
    if bgr is None:
        if not _readable(path):
            raise PhotoError(path, "cannot be read (permission denied?)")
        raise PhotoError(path, NOT_AN_IMAGE)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _damage(path: Path) -> str | None:
    """Why Pillow cannot read the whole of `path` (None: it can, or it does not know the format, which is then
    OpenCV's to decode or refuse)."""
    try:
        with warnings.catch_warnings():
            # A very large photo: OpenCV decodes it (it has its own limit); only the check is skipped.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, PermissionError):
        return None
    except (OSError, EOFError) as e:
        if "truncated" in str(e).lower() or isinstance(e, EOFError):
            return "truncated: the file ends before the picture does (an unfinished download or copy?)"
        return f"damaged image data ({e})"
    except (SyntaxError, ValueError, struct.error) as e:  # what Pillow's decoders raise on malformed data
        return f"damaged image data ({e})"
    return None


def _readable(path: Path) -> bool:
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False
