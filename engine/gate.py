"""The quality gate for exported headshots: measure a candidate, keep it or say why not. Pure functions.

Every figure is measured and stored for every candidate; only the checks named in `GateSettings.checks`
can reject one, so a team can, say, stop enforcing open eyes for someone who always squints. Every failed
check has a problem name (`PROBLEMS`) and, for the person, plain advice on what to do about it (`ADVICE`);
failed checks that are not enforced come back as tips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np

from engine import framing as fr
from engine import quality
from engine.types import Landmarks, Mask, RGBImage
from engine.validation import check_range

CHECKS = ("likeness", "one_face", "face_size", "position", "head_cut", "sharpness", "exposure", "eyes_open",
          "background")
"""Every check the gate knows, in the order a reject reports them."""
DEFAULT_CHECKS = tuple(c for c in CHECKS if c != "head_cut")
"""The checks that reject unless told otherwise. A cut head is reported as a tip, not a reject: a photo that
cuts the top of the head still makes a headshot (a tight crop), and no crop can put the hair back."""

ADVICE: dict[str, str] = {
    "likeness.unmeasured": "no face to compare with you: use a photo of your face, looking at the camera",
    "likeness.low": "it does not look enough like you: use a clear, front-on photo of yourself",
    "one_face.none": "no face found: use a photo of your face, looking at the camera",
    "one_face.many": "more than one face: use a photo with only you in it",
    "face_size.large": "the face fills the photo: use one taken from further away, or move back from the camera",
    "face_size.small": "the face is small in the photo: use one taken closer, or move nearer the camera",
    "position.off_centre": "the face is off to one side: use a photo with your face in the middle, or sit in "
                           "the middle of the camera's view",
    "head_cut.cut": "the photo cuts the top of your head: use one with a little room above your hair",
    "head_cut.framing": "the framing cuts the top of your head though the photo has room above it: a smaller "
                        "face height in the settings keeps the hair in",
    "sharpness.blurred": "the face is blurred: use a sharper photo, hold still, or wipe the camera lens",
    "exposure.dark": "the face is too dark: add light in front of you (face a window or a lamp)",
    "exposure.bright": "the face is too bright: move out of direct light, or turn the light in front of you down",
    "exposure.clipped": "parts of the face are blown out or black: use softer, even light in front of you",
    "eyes_open.closed": "the eyes look closed: use a photo with your eyes open",
    "background.leftovers": "bits of the room show around you: a plainer wall behind you helps",
}
"""Plain advice for every problem the gate can find, keyed "check.problem": what to do, not what was measured."""
PROBLEMS: dict[str, tuple[str, ...]] = {
    check: tuple(key.split(".")[1] for key in ADVICE if key.split(".")[0] == check) for check in CHECKS}
"""Check -> the problems it can report (each has its `ADVICE`)."""

HEAD_CUT = 0.01
"""Head room (fraction of the height) below which the head counts as cut by the top edge."""


@dataclass(frozen=True)
class GateSettings:
    """Thresholds of the quality gate."""

    checks: str = ",".join(DEFAULT_CHECKS)
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
    max_leftovers: float = 0.7
    """Old background showing around the person (`engine.quality.leftovers`: percent of the face's area). On the
    matting kit's studio stills (`benchmarks/still_gate_calibration.py`): clean ones 0-0.9 (median 0.12), with
    the ground-truth matte median 0.08, a halo from a bright window up to 1.4, a patch of room 0.7-9."""

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
        check_range("max_leftovers", self.max_leftovers, 0.0, 100.0)

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
    problems: list[str] = field(default_factory=list)
    """The `ADVICE` key of each failed check ("face_size.large"), in the same order."""
    tips: list[str] = field(default_factory=list)
    """`ADVICE` keys of the checks that failed but are not enforced: no reject, still worth saying."""

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def advice(self) -> list[str]:
        """What to do about each failed check, in plain words."""
        return [ADVICE[p] for p in self.problems]


@dataclass(frozen=True)
class Surroundings:
    """What the background check needs: the person's pixels in the candidate and the backdrop behind them."""

    person: Mask
    """HxW float32 0-1 (a segmenter's confidence on the candidate, optionally times the matte that made it)."""
    backdrop: RGBImage | None
    """What the candidate shows where there is no person (RGB uint8, same size); None: not known (a generated
    or blurred background), and the background check is not measured."""
    photo_cuts_head: bool = True
    """Whether the photo the candidate was made from cuts the top of the head itself (else a cut head is the
    framing's doing, and the advice says so)."""


def assess(image: RGBImage, faces: int, landmarks: Landmarks | None, likeness: float | None,
           likeness_threshold: float, settings: GateSettings, surroundings: Surroundings | None = None
           ) -> Assessment:
    """Measure `image` (RGB uint8) and judge it.

    `faces`: how many people-sized faces a detector found; `landmarks`: the main face's (pixels), None when
    there is none; `likeness`: its cosine similarity to the identity (None: not measured);
    `likeness_threshold`: the face encoder's same-person threshold, used when `settings.min_likeness` is 0;
    `surroundings`: the person and backdrop, for the head-room and background checks (None: not measured).
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
    figures["head_room"] = figures["leftovers"] = None
    if surroundings is not None and landmarks is not None:
        figures["head_room"] = round(quality.head_room(surroundings.person, landmarks), 4)
        if surroundings.backdrop is not None:
            figures["leftovers"] = round(quality.leftovers(image, surroundings.person, surroundings.backdrop,
                                                           fr.face_height_px(landmarks)), 3)

    failures = _failures(figures, likeness, need, faces, landmarks is not None, settings)
    if "head_cut" in failures and surroundings is not None and not surroundings.photo_cuts_head:
        failures["head_cut"] = ("framing", failures["head_cut"][1] + " (the photo has room above it)")
    enforced = settings.enforced
    failed = [c for c in CHECKS if c in failures and c in enforced]
    tips = [f"{c}.{failures[c][0]}" for c in CHECKS if c in failures and c not in enforced]
    return Assessment(figures, [failures[c][1] for c in failed], failed, [f"{c}.{failures[c][0]}" for c in failed],
                      tips)


def _failures(figures: dict[str, float | int | None], likeness: float | None, need: float, faces: int,
              has_face: bool, settings: GateSettings) -> dict[str, tuple[str, str]]:
    """Check -> (problem, reason) for every check the figures fail."""
    failures: dict[str, tuple[str, str]] = {}
    if likeness is None:
        failures["likeness"] = ("unmeasured", "likeness not measured (no face to compare)")
    elif likeness < need:
        failures["likeness"] = ("low", f"does not look like the person (likeness {likeness:.2f} < {need:.2f})")
    if faces != 1 or not has_face:
        none = faces == 0 or not has_face
        failures["one_face"] = ("none", "no face found") if none else ("many", f"{faces} faces")
    face_height, offset, eyes_open = figures["face_height"], figures["offset"], figures["eyes_open"]
    if face_height is not None and not settings.min_face <= face_height <= settings.max_face:
        small = face_height < settings.min_face
        failures["face_size"] = ("small" if small else "large",
                                 f"face {'too small' if small else 'too large'} ({face_height:.0%} of the height; "
                                 f"{settings.min_face:.0%}-{settings.max_face:.0%})")
    if offset is not None and offset > settings.max_offset:
        failures["position"] = ("off_centre",
                                f"face off centre ({offset:.0%} of the width; at most {settings.max_offset:.0%})")
    head_room = figures["head_room"]
    if head_room is not None and head_room < HEAD_CUT:
        failures["head_cut"] = ("cut", "the top of the head is cut by the top edge")
    sharp = float(figures["sharpness"] or 0.0)
    if sharp < settings.min_sharpness:
        failures["sharpness"] = ("blurred", f"blurred (sharpness {sharp:.0f} < {settings.min_sharpness:.0f})")
    luma, clipped = float(figures["brightness"] or 0.0), float(figures["clipped"] or 0.0)
    if luma < settings.min_brightness:
        failures["exposure"] = ("dark", f"too dark (brightness {luma:.2f} < {settings.min_brightness:.2f})")
    elif luma > settings.max_brightness:
        failures["exposure"] = ("bright", f"too bright (brightness {luma:.2f} > {settings.max_brightness:.2f})")
    elif clipped > settings.max_clipped:
        failures["exposure"] = ("clipped", f"clipped ({clipped:.0%} of the face black or blown out)")
    if eyes_open is not None and eyes_open < settings.min_eyes_open:
        failures["eyes_open"] = ("closed",
                                 f"eyes closed (openness {eyes_open:.2f} < {settings.min_eyes_open:.2f})")
    left = figures["leftovers"]
    if left is not None and left > settings.max_leftovers:
        failures["background"] = ("leftovers", f"background leftovers around the person ({left:.2f} > "
                                               f"{settings.max_leftovers:.2f})")
    return failures
