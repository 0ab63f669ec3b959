"""StudioRenderer end to end on a real photo with real landmarks."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

from engine import background as bg
from engine import framing as fr
from engine import matte as mt
from engine import placement as pl
from engine import relight as rl
from engine import skin as sk
from engine import studio as studio_module
from engine.background import BackgroundSettings
from engine.framing import FramingSettings
from engine.relight import RelightSettings
from engine.skin import SkinSettings
from engine.studio import StudioRenderer, shown_region
from engine.types import Face, Renderer
from tests._landmarks import detect, read_rgb

OUT = (1280, 720)
EYES = list(fr.EYE_CORNERS)


@functools.cache
def _webcam_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 640x480 'webcam' frame: the portrait scaled down, a little left of centre in a plain room; its real
    landmarks; and a rough person mask (an ellipse over head and shoulders)."""
    photo = read_rgb("images/faces/obama_official_2012.jpg")
    # Face ~90 px tall, eyes at x ~300: the crop (~530x300) can centre it without leaving the frame.
    small = cv2.resize(photo, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[100 : 100 + small.shape[0], 150 : 150 + small.shape[1]] = small
    landmarks = detect(frame)
    assert landmarks is not None
    mask = np.zeros((480, 640), np.float32)
    cv2.ellipse(mask, (int(landmarks[1, 0]), 330), (120, 230), 0, 0, 360, 1.0, -1)
    for array in (frame, landmarks, mask):
        array.setflags(write=False)
    return frame, landmarks, mask


def webcam() -> tuple[np.ndarray, Face, np.ndarray]:
    frame, landmarks, mask = _webcam_frame()
    return frame.copy(), Face(landmarks.copy(), (640, 480)), mask.copy()


def renderer(
    framing: FramingSettings | None = None,
    background: BackgroundSettings | None = None,
    relight: RelightSettings | None = None,
    skin: SkinSettings | None = None,
    **kwargs: object,
) -> StudioRenderer:
    r = StudioRenderer(
        OUT,
        framing or FramingSettings(),
        background or BackgroundSettings(),
        relight or RelightSettings(),
        skin or SkinSettings(),
        **kwargs,  # type: ignore[arg-type]
    )
    r.prepare()
    return r


def test_is_a_renderer() -> None:
    r: Renderer = renderer()
    assert r.name == "studio" and r.output_size == OUT and r.needs_mask
    assert not renderer(background=BackgroundSettings(enabled=False)).needs_mask
    r.close()
    r.close()  # more than once is fine


def test_output_shape_dtype_and_determinism() -> None:
    image, face, mask = webcam()
    outputs = []
    for _ in range(2):
        r = renderer()
        frames = [r.render(image, face, mask, t) for t in (0, 33, 66)]
        outputs.append(frames[-1])
    out = outputs[0]
    assert out.shape == (720, 1280, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(outputs[0], outputs[1])
    assert np.array_equal(image, webcam()[0])  # the input is not modified


def test_the_face_is_framed_in_the_output() -> None:
    image, face, mask = webcam()
    settings = FramingSettings()
    r = renderer(framing=settings)
    out = r.render(image, face, mask, 0)
    found = detect(out)
    assert found is not None
    eyes = found[EYES, :2].mean(axis=0)
    assert eyes[0] == pytest.approx(OUT[0] / 2, abs=12)
    assert 0.25 * OUT[1] < eyes[1] < settings.eye_line * OUT[1] + 12  # the headroom range may lift the eyes
    assert np.hypot(*(found[152, :2] - found[10, :2])) == pytest.approx(settings.face_height * OUT[1], rel=0.06)
    box = r.last_box
    assert box is not None and box.cx < 320  # the face was left of the frame's centre
    matte = mt.Matter().update(image, mask, face.landmarks, 0)  # the renderer's first frame: the same matte
    head = pl.head_top_in_matte(face.landmarks, matte.alpha, matte.to_source)
    headroom = (head.y - (box.cy - box.height / 2)) / box.height
    assert settings.headroom_min - 1e-6 <= headroom <= settings.headroom_max + 1e-6


def test_zero_mask_shows_the_backdrop_and_no_mask_replaces_nothing() -> None:
    image, face, mask = webcam()
    empty = np.zeros_like(mask)
    assert np.array_equal(renderer().render(image, face, empty, 0), bg.studio_backdrop(OUT))
    colour = BackgroundSettings(mode="color", color="#336699")
    assert np.array_equal(renderer(background=colour).render(image, face, empty, 0), bg.solid(OUT, "#336699"))
    without_mask = renderer().render(image, face, None, 0)
    no_background = renderer(background=BackgroundSettings(enabled=False)).render(image, face, mask, 0)
    assert np.array_equal(without_mask, no_background)


def test_background_is_replaced_outside_the_person() -> None:
    image, face, mask = webcam()
    out = renderer().render(image, face, mask, 0)
    backdrop = bg.studio_backdrop(OUT)
    assert np.array_equal(out[:60, :60], backdrop[:60, :60])  # corners: background
    coloured = renderer(background=BackgroundSettings(mode="color")).render(image, face, mask, 0)
    assert np.array_equal(out[300:400, 600:680], coloured[300:400, 600:680])  # the face: the person, any backdrop
    assert not np.array_equal(out[:60, :60], coloured[:60, :60])


def test_everything_off_is_a_plain_warp_of_the_full_frame() -> None:
    image, face, mask = webcam()
    r = renderer(
        framing=FramingSettings(enabled=False),
        background=BackgroundSettings(enabled=False),
        relight=RelightSettings(enabled=False),
        skin=SkinSettings(enabled=False),
    )
    out = r.render(image, face, mask, 0)
    box = fr.full_frame_box((640, 480), OUT)
    assert r.last_box == box
    assert np.array_equal(out, fr.warp(image, fr.box_to_affine(box, OUT), OUT))


def test_each_effect_changes_the_output() -> None:
    image, face, mask = webcam()
    off = {
        "background": BackgroundSettings(enabled=False),
        "relight": RelightSettings(enabled=False),
        "skin": SkinSettings(enabled=False),
    }
    base = renderer(**off).render(image, face, mask, 0)  # type: ignore[arg-type]
    for name, on in [
        ("background", BackgroundSettings()),
        ("relight", RelightSettings(key_strength=0.5)),
        ("skin", SkinSettings(strength=0.8)),
    ]:
        out = renderer(**{**off, name: on}).render(image, face, mask, 0)  # type: ignore[arg-type]
        assert not np.array_equal(out, base), name


def test_blur_and_image_modes() -> None:
    image, face, mask = webcam()
    blurred = renderer(background=BackgroundSettings(mode="blur")).render(image, face, mask, 0)
    assert blurred.shape == (720, 1280, 3)
    assert not np.array_equal(blurred, renderer().render(image, face, mask, 0))
    backdrop = read_rgb("images/no_face/lp-bmw.jpg")
    settings = BackgroundSettings(mode="image", image="lp-bmw.jpg")
    out = renderer(background=settings, background_image=backdrop).render(image, face, np.zeros_like(mask), 0)
    assert np.array_equal(out, bg.cover_resize(backdrop, OUT))
    with pytest.raises(ValueError, match="background_image"):
        StudioRenderer(OUT, FramingSettings(), settings, RelightSettings(), SkinSettings())


def test_no_face_keeps_rendering_the_full_frame() -> None:
    image, _, mask = webcam()
    r = renderer()
    out = r.render(image, None, mask, 0)
    assert out.shape == (720, 1280, 3)
    assert r.last_box == fr.full_frame_box((640, 480), OUT)


def test_sections_are_timed_by_name() -> None:
    seen: list[str] = []

    class Recorder:
        @contextmanager
        def section(self, name: str) -> Iterator[None]:
            seen.append(name)
            yield

    image, face, mask = webcam()
    renderer(sections=Recorder()).render(image, face, mask, 0)
    assert sorted(seen) == ["alpha", "background", "frame", "matte", "relight", "skin", "warp"]


@pytest.mark.parametrize("box", [fr.Box(300.0, 200.0, 320.0, 180.0), fr.Box(320.0, 240.0, 1200.0, 675.0)])
def test_relight_and_skin_on_the_shown_part_equal_the_whole_frame_done(box: fr.Box) -> None:
    """Relight and skin run only on the part of the frame that the output shows (plus the warp's margin):
    the output is the same as relighting and smoothing the whole frame and warping it, for a close framing
    and for one that shows the frame with the backdrop around it."""
    image, face, _ = webcam()
    settings = RelightSettings()
    ours = renderer(background=BackgroundSettings(enabled=False), relight=settings).render(image, face, None, 0,
                                                                                           box=box)
    size = (image.shape[1], image.shape[0])
    stats = rl.face_region_stats(image, face.landmarks)
    gains = rl.update_light(rl.LightState(), stats, 0, settings, rl.scene_highlight(image)).gains
    key = rl.key_light_map(size, face.landmarks, settings)
    lit = rl.apply(image, rl.tone_tables(gains, key), key)
    lit = sk.smooth_skin(lit, face.landmarks, SkinSettings().strength)
    whole = fr.warp(lit, fr.box_to_affine(box, OUT), OUT)
    assert np.array_equal(ours, whole)


@pytest.mark.parametrize("box", [None, fr.Box(300.0, 200.0, 320.0, 180.0), fr.Box(320.0, 240.0, 1200.0, 675.0)])
def test_the_person_is_made_only_where_the_alpha_shows_them(box: fr.Box | None) -> None:
    """Over a cached backdrop only the output rectangle around the person's alpha is relit and warped: the
    result is the whole relit picture composited by that alpha, within the warp's resampling (a rectangle's
    resize samples up to half an output pixel elsewhere than the whole output's), and a still subject
    renders to the same bits frame after frame."""
    image, face, mask = webcam()
    ours = renderer()
    outputs = [ours.render(image, face, mask, t, box=box) for t in (0, 33)]
    assert np.array_equal(outputs[0], outputs[1])
    # The reference: the same framing and matte (a fresh renderer's first frame), the whole picture warped.
    ref = renderer()
    matte = ref._matter.update(image, mask, face.landmarks, 0)
    affine = ref._frame(face.landmarks, matte, (640, 480), 0, box)
    alpha = ref._person_alpha(matte, affine)[0]
    picture = renderer(background=BackgroundSettings(enabled=False)).render(image, face, None, 0,
                                                                            box=ref.last_box)
    picture = picture.copy()
    pl.extend_below(picture, ref._body_end, ref._fade[1][0])
    assert ref._backdrop is not None
    expected = bg.composite(picture, ref._backdrop, alpha)
    diff = np.abs(outputs[0].astype(np.int16) - expected)
    # Measured: mean 0.64 and 99th percentile 9 levels at this 2.5x upscale, 0 for the close box.
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 16
    x, y, w, h = cv2.boundingRect(alpha)
    outside = np.ones(alpha.shape, bool)
    outside[y : y + h, x : x + w] = False
    assert np.array_equal(outputs[0][outside], ref._backdrop[outside])


@pytest.mark.parametrize("box", [None, fr.Box(300.0, 200.0, 320.0, 180.0)])
def test_blur_mode_relit_on_the_shown_part_equals_the_whole_frame_relit(box: fr.Box | None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Blur mode's backdrop is the framed room: relit only on the shown part (with a margin, aligned for its
    halvings), it comes out as when the whole frame is relit, to the bit."""
    image, face, mask = webcam()
    blur = BackgroundSettings(mode="blur")
    ours = renderer(background=blur).render(image, face, mask, 0, box=box)
    monkeypatch.setattr(studio_module, "shown_region", lambda affine, frame_size, size, margin: (0, 0, *frame_size))
    whole = renderer(background=blur).render(image, face, mask, 0, box=box)
    assert np.array_equal(ours, whole)


def test_shown_region_is_the_boxs_part_of_the_frame_with_a_margin() -> None:
    affine = fr.box_to_affine(fr.Box(300.0, 200.0, 320.0, 180.0), OUT)
    assert shown_region(affine, (640, 480), OUT, 2) == (138, 108, 462, 292)
    beyond = fr.box_to_affine(fr.Box(320.0, 240.0, 1200.0, 675.0), OUT)
    assert shown_region(beyond, (640, 480), OUT, 2) == (0, 0, 640, 480)
    rotated = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert shown_region(rotated, (640, 480), OUT, 2) == (0, 0, 640, 480)


def test_bad_inputs_are_refused_with_a_message() -> None:
    image, face, mask = webcam()
    r = StudioRenderer(OUT, FramingSettings(), BackgroundSettings(), RelightSettings(), SkinSettings())
    with pytest.raises(RuntimeError, match="prepare"):
        r.render(image, face, mask, 0)
    r.prepare()
    with pytest.raises(ValueError, match="mask shape"):
        r.render(image, face, mask[:100], 0)
    with pytest.raises(ValueError, match="RGB uint8"):
        r.render(image.astype(np.float32), face, mask, 0)
    with pytest.raises(ValueError, match="frame_size"):
        r.render(image, Face(face.landmarks, (320, 240)), mask, 0)


def test_without_a_mask_the_box_stays_inside_the_picture() -> None:
    """No person cut-out (background off, or no mask): nothing can be put on a backdrop, so the crop stays inside
    the camera picture, as before recomposition."""
    image, face, mask = webcam()
    for r, m in ((renderer(background=BackgroundSettings(enabled=False)), mask), (renderer(), None)):
        r.render(image, face, m, 0)
        box = r.last_box
        assert box is not None
        assert box.cx - box.width / 2 >= -1e-6 and box.cx + box.width / 2 <= 640 + 1e-6
        assert box.cy - box.height / 2 >= -1e-6 and box.cy + box.height / 2 <= 480 + 1e-6


def test_the_person_is_placed_beyond_the_picture_with_the_backdrop_around() -> None:
    """A close-up (a 320x240 region around the face enlarged 4x: face ~360 px of 960) zooms out: the picture is
    narrower than the output, the backdrop shows beyond it in every mode (blur mode: the room continued, no dark
    holes)."""
    image, face, mask = webcam()
    x0, y0 = int(face.landmarks[EYES, 0].mean()) - 160, int(face.landmarks[10, 1]) - 60
    big = np.asarray(cv2.resize(image[y0 : y0 + 240, x0 : x0 + 320], (1280, 960)), np.uint8)
    points = face.landmarks.copy()
    points[:, :2] = (points[:, :2] - [x0, y0]) * 4.0
    points[:, 2] *= 4.0
    big_face = Face(points, (1280, 960))
    big_mask = np.asarray(cv2.resize(mask[y0 : y0 + 240, x0 : x0 + 320], (1280, 960)), np.float32)
    r = renderer()
    out = r.render(big, big_face, big_mask, 0)
    box = r.last_box
    assert box is not None and box.width > 1280  # wider than the picture
    left, _, right, _ = fr.picture_edges(fr.box_to_affine(box, OUT), (1280, 960))
    assert left > 20 and right < OUT[0] - 20
    backdrop = bg.studio_backdrop(OUT)
    assert np.array_equal(out[:, : int(left)], backdrop[:, : int(left)])
    blurred = renderer(background=BackgroundSettings(mode="blur")).render(big, big_face, big_mask, 0)
    room = float(image[:, :100].mean())  # the plain grey room beside the portrait
    beyond = blurred[:, : int(left)].astype(np.float32)
    assert abs(float(beyond.mean()) - room) < 25 and float(beyond.min()) > room - 60
