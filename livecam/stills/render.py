"""Making and judging a still's candidates: a style resolved with its axis overrides, the photo framed and
relit as the studio engine's square (or as the canvas its platform crops are cut from), a brand backdrop put back
behind a generated image, and the quality gate measured on a candidate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine import background as bgmod
from engine import framing as fr
from engine.alignment import cosine
from engine.crops import MAX_GROWTH, MIN_HEADROOM, Room, crop_box, plan_crop
from engine.gate import Assessment, GateSettings, Surroundings, assess
from engine.matte import PHOTO_FACE_PX, photo_alpha, segment_person
from engine.studio import StudioRenderer
from engine.styles import StylePreset
from engine.types import Face, Landmarks, Mask, RGBImage
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
                  light: tuple[str, float] | None = None) -> tuple[RGBImage, Landmarks, npt.NDArray[np.float64]]:
    """The photo framed as a head-and-shoulders square with the style's backdrop, relit: (square, landmarks in
    it, affine photo -> square). `side`: its size; None: the photo's own resolution (up to `still.max_size`).
    The person is placed on the backdrop as the live framing places them (`engine.placement.compose`: the face
    `still.face_height` of the square, eyes on `still.eye_line`, the hair clear of the top), so the square may
    reach beyond a close or off-centre photo."""
    s = config.still
    frame_size = (subject.image.shape[1], subject.image.shape[0])
    framing = dataclasses.replace(config.framing, enabled=True, face_height=s.face_height, face_growth=MAX_GROWTH,
                                  eye_line=s.eye_line, headroom_min=MIN_HEADROOM, headroom_max=1.0, follow_s=0.0,
                                  max_zoom=8.0)
    if side is None:  # the box at 1:1 scale, so that no photo pixel is enlarged
        mask = subject.mask(bench.segmenter) if _backdrop(config, style)[0].enabled else None
        box = fr.target_box(subject.landmarks, frame_size, (1, 1), framing, fr.head_top(subject.landmarks, mask),
                            outside=mask is not None)
        side = max(64, min(int(box.height), s.max_size))
    studio, mask = _studio(bench, config, subject, style, (side, side), framing, light)
    photo = subject.foreground(bench.segmenter) if mask is not None else subject.image
    square = studio.render(photo, Face(subject.landmarks, frame_size), mask, 0)
    assert studio.last_box is not None
    affine = fr.box_to_affine(studio.last_box, (side, side))
    studio.close()
    return square, _moved(subject.landmarks, affine), affine


def crop_canvas(bench: Workbench, config: Config, subject: Subject, style: StylePreset,
                light: tuple[str, float] | None = None) -> tuple[RGBImage, Landmarks, Room | None]:
    """The canvas every platform crop is cut from: the photo edited as `studio_square` edits it, on a backdrop
    as large as the union of every platform's box (`engine.crops.plan_crop`), at most `still.max_size` on its
    long side; with the landmarks and the `Room` (where the photo is in it) for the crops. Without a backdrop
    (background off) the boxes stay inside the photo and the canvas is the part of the photo they cover."""
    s = config.still
    image = subject.image
    frame_size = (image.shape[1], image.shape[0])
    mask = subject.mask(bench.segmenter) if _backdrop(config, style)[0].enabled else None
    room = Room((0.0, 0.0, float(frame_size[0]), float(frame_size[1])), fr.head_top(subject.landmarks, mask)) \
        if mask is not None else None
    if room is None:
        plans = [plan_crop(frame_size, subject.landmarks, spec) for spec in config.platforms.values()]
        boxes = [fr.Box(p.x0 + p.width / 2, p.y0 + p.height / 2, p.width, p.height) for p in plans]
    else:
        boxes = [crop_box(subject.landmarks, spec, room) for spec in config.platforms.values()]
    x0, y0 = min(b.cx - b.width / 2 for b in boxes), min(b.cy - b.height / 2 for b in boxes)
    x1, y1 = max(b.cx + b.width / 2 for b in boxes), max(b.cy + b.height / 2 for b in boxes)
    scale = min(1.0, s.max_size / max(x1 - x0, y1 - y0))
    size = (max(16, round((x1 - x0) * scale)), max(16, round((y1 - y0) * scale)))
    box = fr.Box(x0 + size[0] / scale / 2.0, y0 + size[1] / scale / 2.0, size[0] / scale, size[1] / scale)
    studio, _ = _studio(bench, config, subject, style, size, config.framing, light)
    photo = subject.foreground(bench.segmenter) if mask is not None else image
    canvas = studio.render(photo, Face(subject.landmarks, frame_size), mask, 0, box=box)
    studio.close()
    affine = fr.box_to_affine(box, size)
    if room is None:
        return canvas, _moved(subject.landmarks, affine), None
    corners = fr.transform_points(np.array([[0.0, 0.0], [frame_size[0], frame_size[1]]]), affine)
    head = fr.HeadTop(float(affine[1, 1] * room.head.y + affine[1, 2]), room.head.cut)
    picture = (float(corners[0, 0]), float(corners[0, 1]), float(corners[1, 0]), float(corners[1, 1]))
    return canvas, _moved(subject.landmarks, affine), Room(picture, head)


def _studio(bench: Workbench, config: Config, subject: Subject, style: StylePreset, size: tuple[int, int],
            framing: fr.FramingSettings, light: tuple[str, float] | None) -> tuple[StudioRenderer, Mask | None]:
    """A prepared studio renderer for a still of `size` with the style's backdrop and `light` (key light side
    and strength factor), and the photo's person mask when the backdrop needs one."""
    background, picture = _backdrop(config, style)
    background = dataclasses.replace(background, matte_face_px=PHOTO_FACE_PX)  # the photo's full resolution
    relight = config.relight
    if light is not None:
        relight = dataclasses.replace(relight, enabled=True, key_light=light[0],
                                      key_strength=min(1.0, relight.key_strength * light[1]))
    studio = StudioRenderer(size, framing, background, dataclasses.replace(relight, adapt_s=0.0),
                            config.skin, background_image=picture)
    studio.prepare()
    return studio, subject.mask(bench.segmenter) if studio.needs_mask else None


def _moved(landmarks: Landmarks, affine: npt.NDArray[np.float64]) -> Landmarks:
    moved = landmarks.copy()
    moved[:, :2] = fr.transform_points(landmarks[:, :2], affine)
    return moved


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


def measure(bench: Workbench, image: RGBImage, subject: Subject, settings: GateSettings,
            surroundings: Surroundings | None = None) -> tuple[Assessment, Landmarks | None]:
    """The quality gate on one candidate; also returns the landmarks found in it (for the crops).
    `surroundings`: the person and backdrop in it, for the head-room and background checks."""
    faces = bench.landmarker.detect(image)
    landmarks = faces[0] if faces else None
    large = [f for f in faces if landmarks is not None and fr.face_height_px(f) >= 0.3 * fr.face_height_px(landmarks)]
    people = max(count_people(bench, image), len(large))
    encoder = bench.encoder(_reference_backend(bench, subject))
    score = cosine(encoder.embed(image, landmarks), subject.reference) if landmarks is not None else None
    return assess(image, people, landmarks, score, encoder.threshold, settings, surroundings), landmarks


def _reference_backend(bench: Workbench, subject: Subject) -> str:
    return str(subject.source.get("encoder", bench.config.models.face_encoder))
