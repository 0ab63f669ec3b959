"""The quality gate for exported headshots: measure a candidate, keep it or say why not. Pure functions.

Every figure is measured and stored for every candidate; only the checks named in `GateSettings.checks`
can reject one, so a team can, say, stop enforcing open eyes for someone who always squints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np

from engine import framing as fr
from engine import quality
from engine.types import Landmarks, RGBImage
from engine.validation import check_range

CHECKS = ("likeness", "one_face", "face_size", "position", "sharpness", "exposure", "eyes_open")
"""Every check the gate knows, in the order a reject reports them."""


@dataclass(frozen=True)
class GateSettings:
    """Thresholds of the quality gate."""

    checks: str = ",".join(CHECKS)
    """Comma-separated checks that reject a candidate (the others are still measured and reported)."""
    min_likeness: float = 0.0
    """Cosine similarity to the identity a candidate needs; 0: the face encoder's same-person threshold."""
    min_face: float = 0.12
    max_face: float = 0.60
    """Face height (forehead to chin) as a fraction of the image height."""
    max_offset: float = 0.15
    """How far the eyes' midpoint may sit from the image's vertical centre line, fraction of its width."""
    min_sharpness: float = 20.0
    """Variance of the Laplacian on a 128 px face crop."""
    min_brightness: float = 0.15
    max_brightness: float = 0.85
    """Mean face brightness (0-1)."""
    max_clipped: float = 0.25
    """Largest fraction of the face crop that may be crushed to black or blown to white."""
    min_eyes_open: float = 0.10
    """Eye aspect ratio of the less open eye (about 0.25-0.35 open, under 0.1 closed)."""

    def __post_init__(self) -> None:
        unknown = [c for c in self.enforced if c not in CHECKS]
        if unknown:
            raise ValueError(f"checks = {self.checks!r}: unknown check {unknown[0]!r}; checks: {', '.join(CHECKS)}")
        check_range("min_likeness", self.min_likeness, -1.0, 1.0)
        check_range("min_face", self.min_face, 0.01, 1.0)
        check_range("max_face", self.max_face, self.min_face, 1.0)
        check_range("max_offset", self.max_offset, 0.0, 0.5)
        check_range("min_sharpness", self.min_sharpness, 0.0, 100_000.0)
        check_range("min_brightness", self.min_brightness, 0.0, 1.0)
        check_range("max_brightness", self.max_brightness, self.min_brightness, 1.0)
        check_range("max_clipped", self.max_clipped, 0.0, 1.0)
        check_range("min_eyes_open", self.min_eyes_open, 0.0, 1.0)

    @property
    def enforced(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.checks.split(",") if c.strip())


@dataclass
class Assessment:
    """A candidate's figures and, when it is rejected, why (one reason per failed check)."""

    figures: dict[str, float | int | None]
    reasons: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """The names of the failed checks, in `CHECKS` order."""

    @property
    def ok(self) -> bool:
        return not self.reasons


def assess(image: RGBImage, faces: int, landmarks: Landmarks | None, likeness: float | None,
           likeness_threshold: float, settings: GateSettings) -> Assessment:
    """Measure `image` (RGB uint8) and judge it.

    `faces`: how many people-sized faces a detector found; `landmarks`: the main face's (pixels), None when
    there is none; `likeness`: its cosine similarity to the identity (None: not measured);
    `likeness_threshold`: the face encoder's same-person threshold, used when `settings.min_likeness` is 0.
    """
    height, width = image.shape[:2]
    need = settings.min_likeness or likeness_threshold
    figures: dict[str, float | int | None] = {"likeness": None if likeness is None else round(likeness, 4),
                                              "likeness_threshold": round(need, 4), "faces": faces}
    if landmarks is not None:
        crop = quality.face_crop(image, landmarks)
        eyes = np.asarray(landmarks, dtype=np.float64)[list(fr.EYE_CORNERS), :2].mean(axis=0)
        figures["face_height"] = round(fr.face_height_px(landmarks) / height, 4)
        figures["offset"] = round(abs(float(eyes[0]) - width / 2) / width, 4)
        figures["eyes_open"] = round(quality.eye_openness(landmarks), 4)
    else:  # no face: the image measures stand in for the face's
        side = min(width, height)
        x0, y0 = (width - side) // 2, (height - side) // 2
        crop = cast(RGBImage, cv2.resize(image[y0:y0 + side, x0:x0 + side], (quality.CROP, quality.CROP),
                                         interpolation=cv2.INTER_AREA))
        figures.update(face_height=None, offset=None, eyes_open=None)
    luma, dark, bright = quality.exposure(crop)
    figures.update(sharpness=round(quality.sharpness(crop), 2), brightness=round(luma, 4),
                   clipped=round(dark + bright, 4))

    failures: dict[str, str] = {}
    if likeness is None:
        failures["likeness"] = "likeness not measured (no face to compare)"
    elif likeness < need:
        failures["likeness"] = f"does not look like the person (likeness {likeness:.2f} < {need:.2f})"
    if faces != 1 or landmarks is None:
        failures["one_face"] = "no face found" if faces == 0 or landmarks is None else f"{faces} faces"
    face_height, offset, eyes_open = figures["face_height"], figures["offset"], figures["eyes_open"]
    if face_height is not None and not settings.min_face <= face_height <= settings.max_face:
        failures["face_size"] = (f"face {'too small' if face_height < settings.min_face else 'too large'} "
                                 f"({face_height:.0%} of the height; {settings.min_face:.0%}-{settings.max_face:.0%})")
    if offset is not None and offset > settings.max_offset:
        failures["position"] = f"face off centre ({offset:.0%} of the width; at most {settings.max_offset:.0%})"
    sharp = float(figures["sharpness"] or 0.0)
    if sharp < settings.min_sharpness:
        failures["sharpness"] = f"blurred (sharpness {sharp:.0f} < {settings.min_sharpness:.0f})"
    if luma < settings.min_brightness:
        failures["exposure"] = f"too dark (brightness {luma:.2f} < {settings.min_brightness:.2f})"
    elif luma > settings.max_brightness:
        failures["exposure"] = f"too bright (brightness {luma:.2f} > {settings.max_brightness:.2f})"
    elif dark + bright > settings.max_clipped:
        failures["exposure"] = f"clipped ({dark + bright:.0%} of the face black or blown out)"
    if eyes_open is not None and eyes_open < settings.min_eyes_open:
        failures["eyes_open"] = f"eyes closed (openness {eyes_open:.2f} < {settings.min_eyes_open:.2f})"

    enforced = settings.enforced
    failed = [c for c in CHECKS if c in failures and c in enforced]
    return Assessment(figures, [failures[c] for c in failed], failed)
