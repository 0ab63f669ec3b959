"""What the quality gate's background check compares a candidate with: where the person is in it, and the
backdrop that should show everywhere else."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from engine import background as bgmod
from engine import framing as fr
from engine import quality
from engine.gate import HEAD_CUT, Surroundings
from engine.styles import StylePreset
from engine.types import Mask, RGBImage
from livecam.config import Config
from livecam.stills.render import _backdrop
from livecam.stills.subject import Subject
from livecam.stills.workbench import Workbench

CONFIDENT = 0.5
"""Matte value from which a pixel can be the person (where the segmenter run on the still agrees): below it the
matte let the room through at most half-opaque, and what shows there is looked at. At 0.9 the person's own hair,
which the matte keeps at 0.5-0.9, was looked at as leftovers: 43 of 93 clean kit stills rejected
(`benchmarks/still_gate_calibration.py`)."""


def backdrop_image(config: Config, style: StylePreset, size: tuple[int, int]) -> RGBImage | None:
    """The backdrop the studio engine puts behind the person for `style` at `size` (width, height), built as
    `engine.studio.StudioRenderer` builds it; None when there is none to compare with (the background is off,
    or it is the photo's own room blurred)."""
    background, picture = _backdrop(config, style)
    if not background.enabled:
        return None
    if background.mode == "studio":
        return bgmod.studio_backdrop(size, background.tint)
    if background.mode == "color":
        return bgmod.solid(size, background.color)
    if background.mode == "image" and picture is not None:
        return bgmod.cover_resize(picture, size)
    return None


def photo_cuts_head(bench: Workbench, subject: Subject) -> bool:
    """Whether the subject's photo itself cuts the top of the head (its person touches the top edge above the
    face): then no crop can show the whole head."""
    return quality.head_room(subject.mask(bench.segmenter), subject.landmarks) < HEAD_CUT


def surroundings(bench: Workbench, config: Config, style: StylePreset, image: RGBImage, known: bool = True,
                 matte: tuple[Mask, npt.NDArray[np.float64]] | None = None, photo_cut: bool = True) -> Surroundings:
    """The person in `image` (the segmenter's confidence on it) and its backdrop. `known`: the backdrop is the
    style's (a studio square, or a brand colour put back behind a generated image); False: a generated
    background, not compared. `matte`: (the photo's person mask, affine photo -> `image`) of a studio square:
    only its part from `CONFIDENT` counts as the person, so that room pixels it let through half-opaque, which a
    segmenter run on the result may take for hair, are still looked at. `photo_cut`: `photo_cuts_head`."""
    size = (image.shape[1], image.shape[0])
    person = bench.segmenter.segment(image, 0)
    if matte is not None:
        mask, affine = matte
        person = np.where(fr.warp(mask, affine, size) >= CONFIDENT, person, np.float32(0.0)).astype(np.float32)
    return Surroundings(_subject_only(person), backdrop_image(config, style, size) if known else None, photo_cut)


def _subject_only(person: Mask) -> Mask:
    """`person` kept only on its largest connected part (from `CONFIDENT`) and what lies within reach of it:
    other people a matte let through, which the segmenter run on the still also calls person, are room to the
    background check, not the subject."""
    solid = (person >= CONFIDENT).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count <= 2:
        return person
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    reach = max(3, round(_REACH * float(np.sqrt(stats[largest, cv2.CC_STAT_AREA]))))
    near = cv2.dilate((labels == largest).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                                     (2 * reach + 1,) * 2))
    keep = np.zeros(count, bool)
    keep[np.unique(labels[near > 0])] = True
    keep[0] = True  # below CONFIDENT: left as the segmenter says (soft edges)
    return np.where(keep[labels], person, np.float32(0.0)).astype(np.float32)


_REACH = 0.02
"""Parts of the person mask this far from the subject's largest part (times the square root of its area: a few
pixels) still count as the subject: strands of hair the threshold cut off."""
