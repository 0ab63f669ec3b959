"""Making and judging a still's candidates: a style resolved with its axis overrides, the photo framed and
relit as the studio engine's square (or the whole photo edited the same way), a brand backdrop put back behind
a generated image, and the quality gate measured on a candidate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine import background as bgmod
from engine import framing as fr
from engine.alignment import cosine
from engine.gate import Assessment, GateSettings, assess
from engine.matte import PHOTO_FACE_PX, photo_alpha, segment_person
from engine.studio import StudioRenderer
from engine.styles import StylePreset
from engine.types import Face, Landmarks, RGBImage
from livecam.assembly import background_picture, style_background
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.photos import read_image
from livecam.stills.subject import Subject, count_people
from livecam.stills.workbench import Workbench


def resolve_style(config: Config, name: str, attire: str = "", lighting: str = "", background: str = "",
                  brand: str = "") -> StylePreset:
    """Style `name` with axis overrides, each a style's name (take that axis from it) or a description, and
    the background of the `brand` style."""
    for style in (name, brand):
        if style and style not in config.styles:
            raise LivecamError(f"unknown style {style!r}; styles: {', '.join(config.styles)} (livecam styles)")
    if brand:
        b = config.styles[brand]
        base = dataclasses.replace(config.styles[name], background=b.background, color=b.color,
                                   background_image=b.background_image)
        return base.with_axes(_axis(config, attire, "attire"), _axis(config, lighting, "lighting"))

    return config.styles[name].with_axes(_axis(config, attire, "attire"), _axis(config, lighting, "lighting"),
                                         _axis(config, background, "background"))


def _axis(config: Config, value: str, key: str) -> str | None:
    if not value:
        return None
    return str(getattr(config.styles[value], key)) if value in config.styles else value


def _backdrop(config: Config, style: StylePreset) -> tuple[bgmod.BackgroundSettings, RGBImage | None]:
    """The studio background settings for `style`: its brand picture or colour, else [background]."""
    bg = config.background
    if style.background_image:
        path = Path(style.background_image).expanduser()
        if not path.is_file():
            raise LivecamError(f"style background_image {style.background_image!r}: no such file")
        return dataclasses.replace(bg, enabled=True, mode="image"), read_image(path)
    if style.color:
        return dataclasses.replace(bg, enabled=True, mode="color", color=style.color), None
    return style_background(bg, style), background_picture(bg)


def studio_square(bench: Workbench, config: Config, subject: Subject, style: StylePreset, side: int | None,
                  light: tuple[str, float] | None = None, whole: bool = False
                  ) -> tuple[RGBImage, Landmarks, npt.NDArray[np.float64]]:
    """The photo framed as a head-and-shoulders square with the style's backdrop, relit: (square, landmarks in
    it, affine photo -> square). `side`: its size; None: the photo's own resolution (up to `still.max_size`).
    `whole`: the whole photo edited the same way instead of a square (at most `still.max_size` on its long
    side), which gives the platform crops every pixel and all the room the photo has."""
    s = config.still
    image = subject.image
    frame_size = (image.shape[1], image.shape[0])
    framing = dataclasses.replace(config.framing, enabled=not whole, face_height=s.face_height,
                                  eye_line=s.eye_line, follow_s=0.0, max_zoom=8.0)
    size: tuple[int, int]
    if whole:
        scale = min(1.0, s.max_size / max(frame_size))
        size = (max(16, round(frame_size[0] * scale)), max(16, round(frame_size[1] * scale)))
    else:
        if side is None:  # the box at 1:1 scale, so that no photo pixel is enlarged
            box = fr.target_box(subject.landmarks, frame_size, (1, 1), framing)
            side = max(64, min(int(box.height), s.max_size))
        size = (side, side)
    background, picture = _backdrop(config, style)
    background = dataclasses.replace(background, matte_face_px=PHOTO_FACE_PX)  # the photo's full resolution
    relight = config.relight
    if light is not None:
        relight = dataclasses.replace(relight, enabled=True, key_light=light[0],
                                      key_strength=min(1.0, relight.key_strength * light[1]))
    studio = StudioRenderer(size, framing, background, dataclasses.replace(relight, adapt_s=0.0),
                            config.skin, background_image=picture)
    studio.prepare()
    mask = subject.mask(bench.segmenter) if studio.needs_mask else None
    square = studio.render(image, Face(subject.landmarks, frame_size), mask, 0)
    assert studio.last_box is not None
    affine = fr.box_to_affine(studio.last_box, size)
    landmarks = subject.landmarks.copy()
    landmarks[:, :2] = fr.transform_points(subject.landmarks[:, :2], affine)
    studio.close()
    return square, landmarks, affine


def brand_backdrop(bench: Workbench, config: Config, image: RGBImage, style: StylePreset) -> RGBImage:
    """The style's exact brand colour or picture put back behind the person of a generated image (the model
    only approximates it)."""
    background, picture = _backdrop(config, style)
    size = (image.shape[1], image.shape[0])
    backdrop = bgmod.cover_resize(picture, size) if picture is not None else bgmod.solid(size, background.color)
    # A generated image, new each time: its face found and its person matted each time.
    faces = bench.landmarker.detect(image)
    landmarks = faces[0] if faces else None
    alpha = photo_alpha(image, segment_person(bench.segmenter, image, 0, landmarks), landmarks)
    return bgmod.composite(image, backdrop, alpha)


def measure(bench: Workbench, image: RGBImage, subject: Subject, settings: GateSettings) -> tuple[Assessment,
                                                                                             Landmarks | None]:
    """The quality gate on one candidate; also returns the landmarks found in it (for the crops)."""
    faces = bench.landmarker.detect(image)
    landmarks = faces[0] if faces else None
    large = [f for f in faces if landmarks is not None and fr.face_height_px(f) >= 0.3 * fr.face_height_px(landmarks)]
    people = max(count_people(bench, image), len(large))
    encoder = bench.encoder(_reference_backend(bench, subject))
    score = cosine(encoder.embed(image, landmarks), subject.reference) if landmarks is not None else None
    return assess(image, people, landmarks, score, encoder.threshold, settings), landmarks


def _reference_backend(bench: Workbench, subject: Subject) -> str:
    return str(subject.source.get("encoder", bench.config.models.face_encoder))
