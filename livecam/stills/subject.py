"""The subject of a still run: the photo (a file, or the camera's sharpest frame) and who is in it, checked
before anything is made from it (one person-sized face, big enough, and the enrolled identity's when one is
given)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine import framing as fr
from engine import quality
from engine.alignment import cosine
from engine.foreground import foreground
from engine.matte import photo_alpha, segment_person
from engine.types import Landmarks, Mask, RGBImage, Segmenter
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.identity.store import Identity
from livecam.photos import read_image
from livecam.stills.workbench import Workbench


@dataclass
class Subject:
    """The photo and who is in it."""

    image: RGBImage
    landmarks: Landmarks
    reference: npt.NDArray[np.float32]
    """The embedding likeness is measured against (the identity's centroid, or the photo's face)."""
    reference_kind: str
    source: dict[str, Any]
    _mask: Mask | None = field(default=None, init=False, repr=False)
    _foreground: RGBImage | None = field(default=None, init=False, repr=False)

    def mask(self, segmenter: Segmenter) -> Mask:
        """The person confidence of the photo (the segmenter run on the square around the face), segmented on
        first use: every framing and lighting variant of a run renders the same photo, so one serves them all."""
        if self._mask is None:
            self._mask = segment_person(segmenter, self.image, 0, self.landmarks)
        return self._mask

    def foreground(self, segmenter: Segmenter) -> RGBImage:
        """The photo with the room taken out of its soft matte edge (`engine.foreground`): what a still puts on
        a backdrop, so that no bookshelf shows through the hair and no window leaves a halo."""
        if self._foreground is None:
            alpha = photo_alpha(self.image, self.mask(segmenter), self.landmarks)
            self._foreground = foreground(self.image, alpha, fr.face_height_px(self.landmarks))
        return self._foreground


def count_people(bench: Workbench, image: RGBImage) -> int:
    """Person-sized faces: YuNet's faces at least 30% of the largest one's height (a face on a poster or far in
    the background does not count)."""
    detected = bench.detector.detect(image)
    if not detected:
        return 0
    largest = detected[0].box[3]
    return sum(1 for f in detected if f.box[3] >= 0.3 * largest)


def load_subject(bench: Workbench, image: RGBImage, what: str, identity: Identity | None) -> Subject:
    """Check the photo (`what` names it in errors): one face, big enough, and the identity's when one is given."""
    people = count_people(bench, image)
    faces = bench.landmarker.detect(image)
    if people > 1 or (len(faces) > 1 and fr.face_height_px(faces[1]) >= 0.3 * fr.face_height_px(faces[0])):
        raise LivecamError(f"{what}: {max(people, len(faces))} faces; use a photo with only you in it")
    if not faces:
        raise LivecamError(f"{what}: no face found; use a photo of your face, looking at the camera")
    landmarks = faces[0]
    face_px = fr.face_height_px(landmarks)
    if face_px < 64:
        raise LivecamError(f"{what}: the face is too small ({face_px:.0f} px from forehead to chin; at least 64): "
                           "use a larger photo, or one taken closer")
    if identity is not None:
        backend = str(identity.metadata.get("encoder", bench.config.models.face_encoder))
        encoder = bench.encoder(backend)
        if "centroid" not in identity.metadata:
            raise LivecamError(f"identity {identity.name!r} has no face centroid; enrol it again")
        reference = np.asarray(identity.metadata["centroid"], dtype=np.float32)
        score = cosine(encoder.embed(image, landmarks), reference)
        if score < encoder.threshold:
            raise LivecamError(f"{what} does not look like identity {identity.name!r} (likeness {score:.2f}, "
                               f"same-person threshold {encoder.threshold:.2f}): use a photo of {identity.name}")
        kind = f"identity {identity.name} (centroid of its enrolment photos)"
    else:
        reference = bench.encoder(bench.config.models.face_encoder).embed(image, landmarks)
        kind = "the face in the photo"
    return Subject(image, landmarks, reference, kind, {})


def read_photo(path: Path) -> tuple[RGBImage, dict[str, Any]]:
    """The photo (EXIF orientation applied) and its source entry for the report; LivecamError naming the file
    when it is a folder, missing, unreadable, not an image, or truncated or damaged."""
    if path.is_dir():
        raise LivecamError(f"photo {path}: is a folder; still takes one photo (for several people, --batch CSV)")
    if not path.is_file():
        raise LivecamError(f"photo {path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LivecamError(f"photo {path} cannot be read ({e.strerror or e})") from None
    image = read_image(path)
    return image, {"file": str(path), "sha256": hashlib.sha256(data).hexdigest(), "size": list(image.shape[1::-1])}


def grab_frame(bench: Workbench, config: Config, frames: int = 30) -> tuple[RGBImage, dict[str, Any]]:
    """The camera's (`input.source`) sharpest frame with exactly one face among its first `frames` (the
    first ones are skipped while the camera settles its exposure)."""
    from livecam.live.capture import open_reader

    c = config.input
    reader = open_reader(c.source, width=c.width, height=c.height, fps=c.fps, loop=False, reconnect_s=0)
    best: tuple[float, RGBImage] | None = None
    try:
        for index in range(frames):
            image = reader.read()
            if image is None:
                break
            if index < min(5, frames // 3):
                continue
            faces = bench.landmarker.detect(image)
            if len(faces) == 1:
                sharp = quality.sharpness(quality.face_crop(image, faces[0]))
                if best is None or sharp > best[0]:
                    best = (sharp, image)
    finally:
        reader.close()
    if best is None:
        raise LivecamError(f"no frame from the camera ({c.source}) showed exactly one face; look at the camera "
                           "and try again, or pass a photo")
    return best[1], {"file": None, "camera": c.source, "size": list(best[1].shape[1::-1])}
