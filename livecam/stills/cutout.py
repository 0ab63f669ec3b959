"""`livecam cutout PHOTO... --out DIR`: the person of each photo as an RGBA PNG at the photo's resolution (for a
transparent headshot on a web page), with the matte the still export uses (`engine.matte.photo_alpha` on the
segmenter's confidence around the largest face).

Every photo is checked (readable, an image, a face in it, a person around the face) and the output folder proved
writable before any file is written; each PNG is written to a temporary name and renamed into place, so no
half-written file is left.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine import framing as fr
from engine.matte import photo_alpha, segment_person
from engine.types import Landmarks, RGBImage
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.photos import read_image
from livecam.stills.files import check_output

MIN_FACE_PX = 32
"""A face smaller than this (forehead to chin) is too small to place the person by."""


@dataclass(frozen=True)
class Cutout:
    """One file written."""

    photo: Path
    path: Path
    size: tuple[int, int]
    """(width, height)."""
    coverage: float
    """Fraction of the picture that is the person (alpha >= 128)."""


def cutout_name(photo: Path) -> str:
    return f"{photo.stem}.png"


def make_cutouts(photos: Sequence[Path], out: Path, config: Config,
                 report: Callable[[Cutout], None] | None = None) -> list[Cutout]:
    """Write DIR/<photo stem>.png (RGBA, the photo's size) for every photo; `report` is called after each file.
    LivecamError naming the photo or the folder, before any file is written, for a photo that is missing, not an
    image, or has no face (or no person around it), two photos with one name, or an output folder that cannot be
    written."""
    from livecam.assembly import open_segmenter, resolve_model
    from models.face_landmarker import ImageFaceLandmarker
    from models.registry import FACE_LANDMARKER

    if not photos:
        raise LivecamError("no photo given: livecam cutout PHOTO... --out DIR")
    names: dict[str, Path] = {}
    for photo in photos:
        other = names.setdefault(cutout_name(photo), photo)
        if other != photo:
            raise LivecamError(f"photos {other} and {photo} would both be written as {out / cutout_name(photo)}; "
                               "rename one, or cut them out into two folders")
    _check_output(out)
    with ImageFaceLandmarker(resolve_model(config, FACE_LANDMARKER), max_faces=4) as landmarker:
        faces = [_face(landmarker.detect(read_image(photo)), photo) for photo in photos]
    # Every photo is read, has its face found and its person matted before the first file is written.
    alphas = []
    segmenter = open_segmenter(config)
    try:
        for photo, landmarks in zip(photos, faces, strict=True):
            image = read_image(photo)
            alpha = photo_alpha(image, segment_person(segmenter, image, 0, landmarks), landmarks)
            if not np.any(alpha >= 128):
                raise LivecamError(f"photo {photo}: no person found around the face; use a photo of a person "
                                   "against a background")
            alphas.append(alpha)
    finally:
        segmenter.close()
    written: list[Cutout] = []
    for photo, alpha in zip(photos, alphas, strict=True):
        image = read_image(photo)
        result = Cutout(photo, out / cutout_name(photo), (image.shape[1], image.shape[0]),
                        float(np.count_nonzero(alpha >= 128)) / alpha.size)
        _write_png(result.path, image, alpha)
        written.append(result)
        if report is not None:
            report(result)
    return written


def _face(faces: list[Landmarks], photo: Path) -> Landmarks:
    """The largest face of `photo`; LivecamError when there is none big enough to cut the person out by."""
    if not faces:
        raise LivecamError(f"photo {photo}: no face found; cutout needs a photo of a person facing the camera")
    face_px = fr.face_height_px(faces[0])
    if face_px < MIN_FACE_PX:
        raise LivecamError(f"photo {photo}: the face is too small ({face_px:.0f} px from forehead to chin; "
                           f"at least {MIN_FACE_PX})")
    return faces[0]


def _check_output(out: Path) -> None:
    """`out` created if needed and known to take files (`files.check_output`); a file in its place named."""
    if out.exists() and not out.is_dir():
        raise LivecamError(f"--out {out}: is a file, not a folder")
    check_output(out)


def _write_png(path: Path, image: RGBImage, alpha: np.ndarray) -> None:
    """`image` with `alpha` as an RGBA PNG at `path`, written whole or not at all."""
    bgra = np.dstack([image[:, :, ::-1], alpha])
    ok, data = cv2.imencode(".png", bgra)
    if not ok:
        raise LivecamError(f"cannot encode {path} as PNG")
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_bytes(data.tobytes())
        os.replace(temporary, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise LivecamError(f"cannot write {path}: {e.strerror or e}") from None
