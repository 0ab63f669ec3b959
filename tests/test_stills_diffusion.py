"""Diffusion stills on the tiny random-weight SDXL (`tests/tiny_sdxl.py`, the real diffusers pipeline): each
variant in its own look (the studio square relit in the variant's lighting setup and backdrop tone, the prompt
naming them), and `still.keep_face` (the person's own face from the studio square blended into the still)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.keep_face import face_keep_mask
from livecam.assembly import open_workbench
from livecam.config import load_config
from livecam.photos import read_image
from livecam.stills.export import StillRequest, export_stills
from livecam.stills.render import resolve_style, studio_square
from livecam.stills.subject import load_subject
from livecam.stills.variants import look
from livecam.stills.workbench import Workbench
from tests.conftest import asset
from tests.tiny_sdxl import tiny_still_components

OBAMA = "images/faces/obama_official_2012.jpg"
SIZE = 128
BASE = [f"still.size={SIZE}", "still.steps=2", "still.checks=", "still.min_sharpness=0", "still.format=png"]


@pytest.fixture(scope="module")
def bench(model_dir: Path) -> Iterator[Workbench]:
    workbench = open_workbench(load_config(None, BASE), "diffusion", components=tiny_still_components())
    yield workbench
    workbench.close()


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


def test_the_four_variants_start_from_their_own_look_and_name_it(tmp_path: Path, bench: Workbench) -> None:
    config = load_config(None, BASE)
    run = export_stills(StillRequest(asset(OBAMA), ("corporate",), variants=4, platforms=(), out=tmp_path), config,
                        bench=bench, progress=False)
    cands = run.report["candidates"]
    assert run.tried == 4 and run.kept == 4
    looks = [c["look"] for c in cands]
    assert len({lk["setup"] for lk in looks}) == 4  # short, broad, butterfly, rim
    assert len({lk["backdrop"] for lk in looks}) >= 3  # the style's grey, lighter, darker, warmer
    assert len({lk["prompt"] for lk in looks}) == 4
    for lk in looks:
        assert f"{lk['setup']} lighting" in lk["prompt"]
        assert f"plain {lk['backdrop_name']} studio backdrop" in lk["prompt"]
    assert [c["lighting"]["key_light"] for c in cands] == [lk["setup"] for lk in looks]
    # The squares the model started from differ by look: relit and on their own backdrop tone.
    style = resolve_style(config, "corporate")
    subject = load_subject(bench, read_image(asset(OBAMA)), "photo", None)
    squares = []
    for variant in range(1, 5):
        lk = look(config, style, variant)
        squares.append(studio_square(bench, config, subject, lk.style(style), SIZE, lk.light)[0].astype(np.int16))
    corner = [float(s[:12, :12].mean()) for s in squares]  # the backdrop, far from the person
    assert max(corner) - min(corner) > 20
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(squares[a] - squares[b]).mean() > 3
    # The still itself differs per variant (a different start and prompt), with the same seed policy.
    stills = [_rgb(run.folder / c["file"]).astype(np.int16) for c in cands]
    assert all(np.abs(stills[0] - s).mean() > 1 for s in stills[1:])
    assert [c["seed"] for c in cands] == [0, 1, 2, 3]
    assert (run.folder / "contact-sheet.png").is_file()


@pytest.mark.parametrize("keep", [True, False])
def test_keep_face_puts_the_studio_squares_own_face_in_the_still(tmp_path: Path, bench: Workbench,
                                                                 keep: bool) -> None:
    config = load_config(None, [*BASE, f"still.keep_face={str(keep).lower()}"])
    run = export_stills(StillRequest(asset(OBAMA), ("corporate",), variants=1, platforms=(), out=tmp_path), config,
                        bench=bench, progress=False)
    assert run.kept == 1
    still = _rgb(run.folder / run.report["candidates"][0]["file"]).astype(np.int16)
    style = resolve_style(config, "corporate")
    lk = look(config, style, 1)
    subject = load_subject(bench, read_image(asset(OBAMA)), "photo", None)
    square, landmarks, _ = studio_square(bench, config, subject, lk.style(style), SIZE, lk.light)
    alpha, core = face_keep_mask(landmarks[:, :2], (SIZE, SIZE))
    inside, outside = core > 0.99, alpha < 0.01
    assert inside.sum() > 100  # the face core (the face is 25% of the square's height)
    face_diff = np.abs(still - square.astype(np.int16))[inside].mean()
    if keep:
        assert face_diff <= 1.0  # the camera's own face, exactly, inside the seam
        seam = (alpha > 0.01) & (core <= 0.99)
        assert np.abs(still - square.astype(np.int16))[seam].mean() < np.abs(still - square)[outside].mean()
    else:
        assert face_diff > 10  # the generated (random-weight) face
