"""`livecam still`: studio-engine stills from the real photos (sizes, crops, centred faces, metadata read
back), diffusion stills with tiny random models (the gate on every candidate, regeneration after a reject, a
report consistent with the files), identities, the camera frame, and bad input leaving nothing behind."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from engine import framing as fr
from engine.alignment import centroid
from engine.crops import DEFAULT_PLATFORMS
from engine.gate import ADVICE, DEFAULT_CHECKS
from livecam.assembly import open_workbench
from livecam.cli import main
from livecam.config import Config, load_config
from livecam.errors import LivecamError
from livecam.photos import read_image
from livecam.stills.export import StillRequest, export_stills
from livecam.stills.files import REPORT_FILE
from livecam.stills.provenance import COMPOSITE, GENERATED, read_disclosure
from livecam.stills.workbench import Workbench
from models.face_landmarker import detect_faces
from tests.conftest import asset
from tests.tiny_sdxl import tiny_lora, tiny_still_components

OBAMA = "images/faces/obama_official_2012.jpg"
S001 = [f"images/identity/meds-aa-S001-0{i}.jpg" for i in range(1, 7)]
NO_BACKGROUND = "still.checks=" + ",".join(c for c in DEFAULT_CHECKS if c != "background")
"""For the tests of other things on the official portrait: today's matte leaves bits of its flags and curtains
around the hair, which the background check rejects (its own tests are below)."""


def studio_config(*overrides: str) -> Config:
    return load_config(None, ["engine.kind=studio", *overrides])


@pytest.fixture(scope="module")
def studio_bench(model_dir: Path) -> Any:
    bench = open_workbench(studio_config())
    yield bench
    bench.close()


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / REPORT_FILE).read_text())


def _assert_consistent(folder: Path, report: dict[str, Any]) -> None:
    """Every file the report names is there, and every file there is named by the report."""
    named = {REPORT_FILE, *report["files"]}
    assert _files(folder) == named
    for cand in report["candidates"]:
        if cand["kept"]:
            assert cand["file"] in named and not cand["reasons"]
            assert all(c["file"] is None or c["file"] in named for c in cand["crops"])
        else:
            assert cand["reasons"] and cand["failed"] and "file" not in cand
    summary = report["summary"]
    assert summary["tried"] == len(report["candidates"])
    assert summary["kept"] == sum(c["kept"] for c in report["candidates"])


# --- studio engine, real photos ----------------------------------------------------------------------------------

def _padded(tmp_path: Path) -> Path:
    """The official portrait with room around it (a wider shot): every platform can place the face as asked."""
    image = read_image(asset(OBAMA))
    padded = cv2.copyMakeBorder(image[:, :, ::-1], 500, 300, 450, 450, cv2.BORDER_REPLICATE)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), padded)
    return path


@pytest.mark.parametrize("photo", [OBAMA, S001[0], "wide"])
def test_studio_stills_have_every_platform_crop_face_centred_and_disclosed(tmp_path: Path, photo: str,
                                                                            studio_bench: Workbench,
                                                                            landmarker_path: Path) -> None:
    config = studio_config(NO_BACKGROUND)
    path = _padded(tmp_path) if photo == "wide" else asset(photo)
    run = export_stills(StillRequest(path, ("corporate",), variants=2, out=tmp_path / "out"), config,
                        bench=studio_bench, progress=False)
    report = run.report
    assert run.kept == 2 and run.tried == 2 and report["engine"] == "studio"
    _assert_consistent(run.folder, report)
    source = read_image(path)
    placed: list[str] = []
    for cand in report["candidates"]:
        master = read_image(run.folder / cand["file"])
        # At the photo's own resolution: the face in the square no larger than in the photo, never enlarged (the
        # square may reach beyond the photo, the backdrop around it).
        assert master.shape[0] == master.shape[1] <= config.still.max_size
        photo_face = fr.face_height_px(detect_faces(landmarker_path, source)[0])
        assert cand["figures"]["face_height"] * master.shape[0] <= photo_face * 1.05  # landmarks: +-4%
        # The photo itself, edited: far above the same-person pairs of different photos (0.58-0.89) though the
        # key light (1.3x) reshades the face.
        assert cand["figures"]["likeness"] > 0.85
        assert {c["platform"] for c in cand["crops"]} == set(DEFAULT_PLATFORMS)
        for crop in cand["crops"]:
            spec = DEFAULT_PLATFORMS[crop["platform"]]
            if crop["file"] is None:  # too few pixels for the platform's minimum: said, not written
                assert crop["width"] < spec.min_width and "minimum" in crop["note"]
                continue
            image = read_image(run.folder / crop["file"])
            assert image.shape[1::-1] == (crop["width"], crop["height"])
            if crop["limited"]:
                assert (crop["width"], crop["height"]) != (spec.width, spec.height)
                assert "max_upscale" in crop["note"] and crop["scale"] == pytest.approx(1.5)
            else:
                assert (crop["width"], crop["height"]) == (spec.width, spec.height)
            assert abs(crop["width"] / crop["height"] - spec.width / spec.height) < 0.01
            faces = detect_faces(landmarker_path, image)
            assert len(faces) == 1, crop["platform"]
            eyes = faces[0][list(fr.EYE_CORNERS), :2].mean(axis=0)
            if not crop["shrunk"] and not crop["moved"]:  # else the photo had no room: the face is off its place
                assert abs(eyes[0] / image.shape[1] - 0.5) < 0.03, crop["platform"]  # centred
                assert abs(eyes[1] / image.shape[0] - spec.eye_line) < 0.03, crop["platform"]
                height = fr.face_height_px(faces[0]) / image.shape[0]
                assert abs(height - spec.face_height) < 0.03, crop["platform"]
                placed.append(crop["platform"])
            else:
                assert abs(eyes[0] / image.shape[1] - 0.5) < 0.15, crop["platform"]
            meta = read_disclosure(run.folder / crop["file"])
            assert meta["DigitalSourceType"] == COMPOSITE
            assert meta["livecam:platform"] == crop["platform"] and meta["livecam:style"] == "corporate"
        # Read back independently of livecam: Pillow finds the XMP packet in the JPEG.
        with Image.open(run.folder / cand["file"]) as im:
            xmp = im.info["xmp"]
        xmp_text = xmp.decode() if isinstance(xmp, bytes) else xmp
        assert "compositeWithTrainedAlgorithmicMedia" in xmp_text
        assert f"{cand['figures']['likeness']:.4f}" in xmp_text
    if photo == "wide":  # room around the head: the face lands exactly where each platform asks
        assert set(placed) == set(DEFAULT_PLATFORMS)
    # The print crop carries its print resolution.
    prints = [c for c in report["candidates"][0]["crops"] if c["platform"] == "print" and c["file"]]
    if prints:
        with Image.open(run.folder / prints[0]["file"]) as im:
            assert round(im.info["dpi"][0]) == 300
    assert report["contact_sheet"] == "contact-sheet.jpg"


def test_png_stills_carry_text_chunks(tmp_path: Path, studio_bench: Workbench) -> None:
    config = studio_config("still.format=png", NO_BACKGROUND)
    run = export_stills(StillRequest(asset(OBAMA), ("healthcare",), variants=1, platforms=("linkedin",),
                                     out=tmp_path), config, bench=studio_bench, progress=False)
    cand = run.report["candidates"][0]
    assert cand["file"] == "healthcare-v1.png" and cand["crops"][0]["file"] == "healthcare-v1-linkedin.png"
    with Image.open(run.folder / cand["crops"][0]["file"]) as im:
        text = dict(im.text)  # type: ignore[attr-defined]
    assert text["DigitalSourceType"] == COMPOSITE
    assert text["livecam:style"] == "healthcare" and text["livecam:platform"] == "linkedin"
    assert "XML:com.adobe.xmp" in text


def test_brand_colour_and_axes(tmp_path: Path, studio_bench: Workbench) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[engine]\nkind = "studio"\n[styles.acme]\nattire = "navy polo"\nlighting = "soft"\n'
                    'background = "deep blue"\ncolor = "#1f4e79"\n')
    config = load_config(path, [NO_BACKGROUND])
    run = export_stills(StillRequest(asset(OBAMA), ("corporate",), variants=2, platforms=(), out=tmp_path / "o",
                                     brand="acme", attire="legal"), config, bench=studio_bench, progress=False)
    style = run.report["styles"]["corporate"]
    assert style["color"] == "#1f4e79" and style["background"] == "deep blue"
    assert style["attire"] == config.styles["legal"].attire
    for cand in run.report["candidates"]:  # the brand colour behind the person in every variant: only the light varies
        master = read_image(run.folder / cand["file"])
        corner = master[:40, :40].reshape(-1, 3).mean(axis=0)
        assert np.abs(corner - [0x1F, 0x4E, 0x79]).max() < 12
        assert cand["look"]["backdrop"] == "" and "backdrop" not in cand["look"]["words"]
    assert run.report["candidates"][0]["look"]["setup"] != run.report["candidates"][1]["look"]["setup"]


def test_a_frame_from_the_camera_when_no_photo_is_given(tmp_path: Path, studio_bench: Workbench,
                                                        short_face_video: Path) -> None:
    config = studio_config(f"input.source={short_face_video}", "still.checks=one_face,likeness")
    run = export_stills(StillRequest(None, ("corporate",), variants=1, platforms=("x",), out=tmp_path), config,
                        bench=studio_bench, progress=False)
    assert run.report["photo"]["camera"] == str(short_face_video) and run.folder.name.startswith("camera-")
    assert run.tried == 1


# --- the background check, the variants and the contact sheet (studio engine, real photos) ---------------------

KIT_FRAME = "S001-06__sh_flags_curtains_1280x720"
"""A matting-kit frame: a real portrait over flags and curtains, with its ground-truth alpha."""
KIT_RUNNERS = "S001-04__sh_street_people_1280x720"
"""The same kind of frame with runners in the street behind the person."""


def _kit_still(bench: Workbench, config: Config, frame_name: str, matte: np.ndarray | None) -> tuple[Any, np.ndarray]:
    """A kit frame made into a studio still as `livecam still` makes one (variant 1), with `matte` as the
    person mask instead of livecam's own (None: livecam's), and the gate's verdict on it."""
    from livecam.stills.render import measure, resolve_style, studio_square
    from livecam.stills.subject import Subject
    from livecam.stills.surroundings import surroundings
    from livecam.stills.variants import look

    frame = read_image(asset(f"matting/images/{frame_name}.jpg"))
    landmarks = max(bench.landmarker.detect(frame), key=fr.face_height_px)  # the runners' faces are far smaller
    subject = Subject(frame, landmarks, bench.encoder(config.models.face_encoder).embed(frame, landmarks), "", {})
    if matte is not None:
        subject._mask = matte
    style = resolve_style(config, "corporate")
    variant = look(config, style, 1)
    lit = variant.style(style)
    still, _, affine = studio_square(bench, config, subject, lit, None, variant.light)
    around = surroundings(bench, config, lit, still, matte=(subject.mask(bench.segmenter), affine))
    return measure(bench, still, subject, config.still, around)[0], still


def test_the_background_check_rejects_room_let_through_by_the_matte_and_passes_a_clean_cutout(
        studio_bench: Workbench) -> None:
    config = studio_config("still.max_face=0.8", "still.checks=background")
    # A matte that reaches past the person (the ground truth grown by 30 px, a sixth of the face's height: a band
    # of the room, flags and curtains, around the head and shoulders). livecam's own matte no longer lets the
    # kit's runners through, the leak this test used before; a 12 px band still passes (leftovers 0.45).
    truth = cv2.imread(str(asset(f"matting/alpha/{KIT_FRAME}.png")), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    loose = cv2.dilate(truth, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61)))
    leaky, _ = _kit_still(studio_bench, config, KIT_FRAME, loose)
    assert leaky.failed == ["background"], leaky.reasons
    assert leaky.figures["leftovers"] > 3 * config.still.max_leftovers  # measured 3.7
    assert leaky.advice == [ADVICE["background.leftovers"]]
    # Flags and curtains behind the hair: with livecam's matte (the hair kept at 0.5-0.9 is the person's, not
    # room) and with the ground-truth alpha, nothing of the room shows, and the still passes.
    own, _ = _kit_still(studio_bench, config, KIT_FRAME, None)
    assert own.ok, own.reasons
    assert own.figures["leftovers"] < config.still.max_leftovers / 2  # measured 0.10 (3.07 counting the hair)
    clean, _ = _kit_still(studio_bench, config, KIT_FRAME, truth)
    assert clean.ok, clean.reasons
    assert clean.figures["leftovers"] < config.still.max_leftovers / 4  # measured 0.02


def test_the_background_check_counts_other_people_as_room() -> None:
    """Someone the matte let through apart from the subject (the segmenter run on the still calls them person
    too) is room to the background check; the subject's own strands of hair near them are not."""
    from livecam.stills.surroundings import _subject_only

    person = np.zeros((200, 300), np.float32)
    cv2.ellipse(person, (100, 120), (50, 80), 0, 0, 360, 1.0, -1)  # the subject
    cv2.rectangle(person, (240, 60), (280, 190), 0.9, -1)  # a passer-by, well apart
    cv2.line(person, (100, 38), (104, 36), 0.8, 1)  # a strand just above the head, cut off by the threshold
    kept = _subject_only(person)
    assert kept[120, 100] == 1.0 and kept[36, 104] == 0.8
    assert kept[100:190, 240:280].max() == 0.0


def test_the_backdrop_compared_with_is_the_one_the_still_shows(studio_bench: Workbench) -> None:
    from livecam.stills.render import resolve_style, studio_square
    from livecam.stills.subject import load_subject
    from livecam.stills.surroundings import backdrop_image

    config = studio_config()
    subject = load_subject(studio_bench, read_image(asset(S001[0])), "photo", None)
    for name in ("corporate", "technology"):
        style = dataclasses.replace(resolve_style(config, name), backdrop="#5a7a9a")
        still = studio_square(studio_bench, config, subject, style, None, ("left", 1.0))[0]
        backdrop = backdrop_image(config, style, (still.shape[1], still.shape[0]))
        assert backdrop is not None and backdrop.shape == still.shape
        corners = (slice(0, 40), slice(0, 40)), (slice(0, 40), slice(-40, None))
        for rows, cols in corners:  # far from the person: the backdrop itself, pixel for pixel
            assert np.abs(still[rows, cols].astype(int) - backdrop[rows, cols]).max() <= 2, name
    blur = studio_config("background.mode=blur")
    assert backdrop_image(blur, resolve_style(blur, "corporate"), (64, 64)) is None  # the room blurred: not compared


def _pairwise_difference(images: list[np.ndarray]) -> list[float]:
    return [float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) for a, b in itertools.combinations(images, 2)]


def test_variants_differ_visibly_in_light_and_backdrop(tmp_path: Path, studio_bench: Workbench) -> None:
    config = studio_config("still.max_face=0.8")  # a mugshot: the face fills the photo
    run = export_stills(StillRequest(asset(S001[0]), ("corporate",), variants=4, platforms=(), out=tmp_path),
                        config, bench=studio_bench, progress=False)
    assert run.kept == 4, [c["reasons"] for c in run.report["candidates"]]
    looks = [c["look"] for c in run.report["candidates"]]
    assert len({lk["words"] for lk in looks}) == 4 and len({lk["backdrop"] for lk in looks}) == 4
    assert [lk["setup"] for lk in looks] == ["short", "broad", "butterfly", "rim"]
    assert [lk["backdrop_name"] for lk in looks] == ["grey", "light grey", "charcoal", "warm grey"]
    masters = [read_image(run.folder / c["file"]) for c in run.report["candidates"]]
    differences = _pairwise_difference(masters)
    # Every pair differs by 11.8-68 grey levels (mean 37) on this photo; with the lighting setup alone (one
    # backdrop) by 0.9-3.6 (mean 2.3: the face box differs by 21, but it is a small part of the recomposed
    # still), and with the key light's side alone before that by 1.0-3.0 (mean 2.1):
    # benchmarks/results/still_gate_calibration.json.
    assert min(differences) > 8.0 and float(np.mean(differences)) > 15.0, differences
    for cand in run.report["candidates"]:
        assert cand["figures"]["leftovers"] is not None and cand["figures"]["leftovers"] < 0.1  # a plain wall


def test_the_contact_sheet_shows_every_candidate_captioned_in_words(tmp_path: Path, studio_bench: Workbench) -> None:
    from livecam.stills.sheet import CAPTION_PX, PAD, THUMB

    config = studio_config("still.max_face=0.8")

    def second_variant_fails(entry: dict[str, Any]) -> str | None:
        return "forced reject (test)" if entry["variant"] == 2 else None

    run = export_stills(StillRequest(asset(S001[0]), ("corporate", "creative"), variants=2, platforms=(),
                                     out=tmp_path), config, bench=studio_bench, progress=False,
                        extra_check=second_variant_fails)
    assert run.tried == 4 and run.kept == 2
    sheet = read_image(run.folder / "contact-sheet.jpg")
    # A heading, then one row per style with its two candidates (kept and rejected alike).
    heading = PAD + 22 + PAD
    assert sheet.shape[:2] == (heading + PAD + 2 * (THUMB + CAPTION_PX + PAD), max(480, PAD + 2 * (THUMB + PAD)))
    green, red = np.array([22, 120, 50]), np.array([180, 30, 30])
    for row in range(2):
        for column in range(2):
            x, y = PAD + column * (THUMB + PAD), heading + PAD + row * (THUMB + CAPTION_PX + PAD)
            tile = sheet[y:y + THUMB, x:x + THUMB]
            caption = sheet[y + THUMB + 4:y + THUMB + CAPTION_PX, x:x + THUMB].reshape(-1, 3).astype(int)
            assert tile.std() > 20  # a photo, not paper
            ink = (caption.max(axis=1) < 90).mean()  # the dark title and look lines
            kept, rejected = ((np.abs(caption - colour).max(axis=1) < 50).mean() for colour in (green, red))
            # "kept" in green under the first, "rejected: ..." in red (longer) under the second.
            assert ink > 0.01 and (kept > 0.001 > rejected if column == 0 else rejected > 0.005 > kept), \
                (row, column, ink, kept, rejected)
    words = [c["look"]["words"] for c in run.report["candidates"]]
    assert words[0] == "short light, grey backdrop" and words[3] == "broad light, light teal backdrop"


# --- the gate and identities ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, studio_bench: Workbench) -> Path:
    """Identity s001 as `livecam enroll` writes it: metadata with the re-id centroid of its photos, a LoRA."""
    data = tmp_path_factory.mktemp("data")
    folder = data / "identities" / "s001"
    folder.mkdir(parents=True)
    encoder = studio_bench.encoder("reid")
    embeddings = []
    for name in S001:
        image = read_image(asset(name))
        embeddings.append(encoder.embed(image, studio_bench.landmarker.detect(image)[0]))
    meta = {"name": "s001", "trigger": "ohwx", "class_word": "person", "encoder": "reid",
            "centroid": [float(v) for v in centroid(np.stack(embeddings))], "photos": []}
    (folder / "identity.json").write_text(json.dumps(meta))
    tiny_lora(folder / "pytorch_lora_weights.safetensors")
    return data


def test_identity_likeness_is_measured_against_the_enrolled_centroid(tmp_path: Path, enrolled: Path,
                                                                     studio_bench: Workbench,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVECAM_DATA_DIR", str(enrolled))
    config = studio_config("still.max_face=0.8")  # these mugshots fill the frame: a close-up
    run = export_stills(StillRequest(asset(S001[2]), ("corporate",), identity="s001", variants=1, platforms=(),
                                     out=tmp_path), config, bench=studio_bench, progress=False)
    assert run.report["identity"] == "s001" and "centroid" in run.report["likeness_reference"]
    likeness = run.report["candidates"][0]["figures"]["likeness"]
    assert 0.37 < likeness < 0.99  # the same person, but not this very photo
    assert read_disclosure(run.folder / "corporate-v1.jpg")["livecam:identity"] == "s001"
    # Somebody else's photo for this identity: a clear error before anything is made.
    with pytest.raises(LivecamError, match="does not look like identity 's001'"):
        export_stills(StillRequest(asset("images/identity/meds-aa-S008-01.jpg"), ("corporate",), identity="s001",
                                   out=tmp_path / "other"), config, bench=studio_bench, progress=False)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_a_forced_reject_is_reported_with_its_reason_and_what_to_do(tmp_path: Path, studio_bench: Workbench,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = studio_config("still.min_sharpness=100000", NO_BACKGROUND)
    run = export_stills(StillRequest(asset(OBAMA), ("corporate",), variants=2, out=tmp_path), config,
                        bench=studio_bench, progress=False)
    assert run.kept == 0 and run.tried == 2  # a studio still is the photo: a new try would be the same
    assert run.report["summary"]["rejections"] == {"sharpness": 2}  # the machine-readable reasons stay
    assert all("blurred" in c["reasons"][0] for c in run.report["candidates"])
    assert all(c["advice"] == [ADVICE["sharpness.blurred"]] for c in run.report["candidates"])
    assert run.report["summary"]["advice"] == [{"advice": ADVICE["sharpness.blurred"], "candidates": 2}]
    _assert_consistent(run.folder, run.report)
    capsys.readouterr()
    assert main(["still", str(asset(OBAMA)), "--engine", "studio", "--out", str(tmp_path / "cli"),
                 "--set", "still.min_sharpness=100000", "--set", "still.min_brightness=0.99", "--set",
                 "still.max_brightness=1.0", "--variants", "2", "--platforms", "linkedin"]) == 1
    printed = capsys.readouterr().out
    lines = [line.strip() for line in printed.splitlines()]
    # One line per distinct reason, in plain words, with how many candidates it concerns; no check names.
    assert f"- {ADVICE['sharpness.blurred']} (2 of 2)" in lines and f"- {ADVICE['exposure.dark']} (2 of 2)" in lines
    assert "rejected by" not in printed and "sharpness" not in printed and "exposure" not in printed


# --- bad input --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("photo", "message"), [
    ("images/no_face/lp-bmw.jpg", "no face found"),
    ("images/multi_face/obama_biden_two_people.jpg", "2 faces"),
    ("images/faces/meds-af-S419-01_40deg.jpg", "2 faces"),
])
def test_a_photo_without_exactly_one_face_is_refused(tmp_path: Path, photo: str, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["still", str(asset(photo)), "--engine", "studio", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and Path(photo).name in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_bad_input_gets_a_clear_error_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVECAM_DATA_DIR", str(tmp_path / "data"))
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(asset(OBAMA).read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = tmp_path / "out"
    cases = [
        ([str(corrupt)], "broken.jpg: truncated"),
        ([str(text)], "notes.jpg: not an image"),
        ([str(tmp_path / "missing.jpg")], "missing.jpg: no such file"),
        ([str(asset(OBAMA)), "--styles", "corporate,pirate"], "unknown style 'pirate'"),
        ([str(asset(OBAMA)), "--platforms", "myspace"], "unknown platform 'myspace'"),
        ([str(asset(OBAMA)), "--identity", "nobody"], "identity 'nobody' is not enrolled"),
        ([str(asset(OBAMA)), "--variants", "0"], "--variants 0"),
    ]
    for args, message in cases:
        assert main(["still", *args, "--engine", "studio", "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
        assert not out.exists() or not any(out.iterdir()), args
    unwritable = blocker / "headshots"
    assert main(["still", str(asset(OBAMA)), "--engine", "studio", "--out", str(unwritable)]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output directory" in err and str(unwritable) in err


def test_a_failure_midway_removes_the_partial_folder(tmp_path: Path, studio_bench: Workbench,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from livecam.stills.files import Writer

    def broken(*args: Any, **kwargs: Any) -> None:
        raise LivecamError("disk full (simulated)")

    monkeypatch.setattr(Writer, "sign", broken)  # after every image is written
    with pytest.raises(LivecamError, match="disk full"):
        export_stills(StillRequest(asset(OBAMA), ("corporate",), variants=1, out=tmp_path), studio_config(),
                      bench=studio_bench, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_styles_command_lists_presets_and_platforms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["styles"]) == 0
    out = capsys.readouterr().out
    for name in ("corporate", "creative", "healthcare", "real_estate", "technology", "legal", "education",
                 "linkedin", "print"):
        assert name in out


# --- diffusion engine, tiny random models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def diffusion_bench(model_dir: Path) -> Any:
    config = load_config(None, ["still.size=128", "still.steps=2"])
    bench = open_workbench(config, "diffusion", components=tiny_still_components())
    yield bench
    bench.close()


def test_diffusion_stills_gate_every_candidate_and_regenerate_after_a_reject(tmp_path: Path,
                                                                              diffusion_bench: Workbench) -> None:
    # Tiny random models paint noise, not faces: the gate enforces only what noise can pass here, and an extra
    # check forces the first attempt of every variant to be rejected.
    config = load_config(None, ["still.size=128", "still.steps=2", "still.checks=exposure", "still.seed=7",
                                "still.max_retries=2", "still.min_sharpness=0"])
    seen: list[dict[str, Any]] = []

    def first_attempt_fails(entry: dict[str, Any]) -> str | None:
        seen.append(entry)
        return "forced reject (test)" if entry["attempt"] == 1 else None

    run = export_stills(StillRequest(asset(OBAMA), ("corporate", "technology"), variants=2, platforms=("linkedin",),
                                     out=tmp_path), config, bench=diffusion_bench, progress=False,
                        extra_check=first_attempt_fails)
    report = run.report
    assert report["engine"] == "diffusion" and report["disclosure"] == GENERATED
    assert run.tried == 8 and run.kept == 4 and len(seen) == 8  # the gate ran on every candidate
    _assert_consistent(run.folder, report)
    for style in ("corporate", "technology"):
        cands = [c for c in report["candidates"] if c["style"] == style]
        assert [c["seed"] for c in cands] == [7, 8, 9, 10]  # a new seed for each try, recorded
        assert [(c["variant"], c["attempt"], c["kept"]) for c in cands] == [
            (1, 1, False), (1, 2, True), (2, 1, False), (2, 2, True)]
        for cand in cands:
            assert set(cand["figures"]) >= {"likeness", "faces", "sharpness", "brightness", "eyes_open"}
            assert cand["size"] == [128, 128]
        assert cands[0]["reasons"] == ["forced reject (test)"]
    kept = [c for c in report["candidates"] if c["kept"]]
    meta = read_disclosure(run.folder / kept[0]["file"])
    assert meta["DigitalSourceType"] == GENERATED and meta["livecam:seed"] == str(kept[0]["seed"])
    assert "tiny-random-sdxl" in meta["livecam:model"]
    assert report["generation"]["steps"] == 2 and report["generation"]["size"] == 128
    # No face in noise: the crop is not written, and the report says why.
    assert kept[0]["crops"][0] == {"platform": "linkedin", "file": None, "note": "not written: no face to centre on"}


def test_diffusion_stills_full_gate_rejects_noise_and_says_why(tmp_path: Path, diffusion_bench: Workbench) -> None:
    config = load_config(None, ["still.size=128", "still.steps=2", "still.max_retries=1"])
    run = export_stills(StillRequest(asset(OBAMA), ("corporate",), variants=2, out=tmp_path), config,
                        bench=diffusion_bench, progress=False)
    assert run.tried == 4 and run.kept == 0
    assert run.report["summary"]["rejections"]["one_face"] == 4
    assert all("no face found" in c["reasons"] for c in run.report["candidates"])
    _assert_consistent(run.folder, run.report)


def test_a_recorded_seed_regenerates_the_same_image(diffusion_bench: Workbench) -> None:
    generator = diffusion_bench.generator
    assert generator is not None
    generator.set_prompt("professional headshot photo of a person")
    canvas = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    condition = np.zeros_like(canvas)
    first = generator.generate(canvas, condition, 42)
    other = generator.generate(canvas, condition, 43)
    again = generator.generate(canvas, condition, 42)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_diffusion_stills_with_the_identity_lora(tmp_path: Path, enrolled: Path, diffusion_bench: Workbench,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVECAM_DATA_DIR", str(enrolled))
    generator = diffusion_bench.generator
    assert generator is not None
    config = load_config(None, ["still.size=128", "still.steps=2", "still.checks=", "still.min_sharpness=0"])
    canvas = np.full((128, 128, 3), 128, np.uint8)
    generator.set_prompt("x")
    without = generator.generate(canvas, np.zeros_like(canvas), 0)
    run = export_stills(StillRequest(asset(S001[0]), ("corporate",), identity="s001", variants=1, platforms=(),
                                     out=tmp_path), config, bench=diffusion_bench, progress=False)
    assert run.kept == 1 and run.report["identity"] == "s001"
    generator.set_prompt("x")
    with_lora = generator.generate(canvas, np.zeros_like(canvas), 0)
    assert not np.array_equal(without, with_lora)  # the identity is fused into the weights
    diffusion_bench.use_identity(None)
    generator.set_prompt("x")
    assert np.array_equal(generator.generate(canvas, np.zeros_like(canvas), 0), without)  # and given back


def test_c2pa_signed_stills_with_a_test_certificate(tmp_path: Path, studio_bench: Workbench) -> None:
    import c2pa  # noqa: F401  (part of the dev install: missing is a failure, not a skip)

    from livecam.stills.provenance import read_c2pa
    from tests.test_provenance import _certificates

    (tmp_path / "certs").mkdir()
    chain, key = _certificates(tmp_path / "certs")
    config = studio_config(f"still.c2pa_cert={chain}", f"still.c2pa_key={key}")
    run = export_stills(StillRequest(asset(OBAMA), ("corporate",), variants=1, platforms=("linkedin",),
                                     out=tmp_path / "out"), config, bench=studio_bench, progress=False)
    assert run.report["c2pa"] is True
    for name in run.report["files"]:
        store = read_c2pa(run.folder / name)
        assert store is not None, name
        assert COMPOSITE in json.dumps(store)
        assert read_disclosure(run.folder / name)["DigitalSourceType"] == COMPOSITE  # the XMP survives signing


# --- broken photos, requests and output folders ---------------------------------------------------------------

def _truncated(tmp_path: Path, source: Path, name: str = "partial.jpg", keep: float = 0.6) -> Path:
    """The first `keep` of a real JPEG: what an interrupted download or copy leaves."""
    data = source.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("livecam: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.99])
def test_a_truncated_photo_is_refused_with_one_line(tmp_path: Path, keep: float,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    partial, out = _truncated(tmp_path, asset(OBAMA), keep=keep), tmp_path / "out"
    assert main(["still", str(partial), "--engine", "studio", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "partial.jpg" in line and "truncated" in line
    assert not out.exists() or not any(out.iterdir())


def test_photos_are_read_with_their_exif_orientation(tmp_path: Path) -> None:
    from livecam.stills.subject import read_photo

    rotated, _ = read_photo(asset("images/faces/meds-aa-S001-01-exif-rotation.jpg"))
    upright, _ = read_photo(asset("images/identity/meds-aa-S001-01.jpg"))
    assert rotated.shape == upright.shape == (600, 480, 3)
    assert np.abs(rotated.astype(int) - upright.astype(int)).mean() < 3


def test_duplicate_styles_and_platforms_are_made_once(tmp_path: Path, studio_bench: Workbench,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["still", str(asset(OBAMA)), "--engine", "studio", "--out", str(out), "--variants", "1",
                 "--styles", "corporate,corporate,corporate", "--platforms", "linkedin,linkedin",
                 "--set", NO_BACKGROUND]) == 0
    printed = capsys.readouterr().out
    assert "kept 1 of 1 candidates" in printed and "corporate: 1 kept of 1" in printed
    (folder,) = out.iterdir()
    report = _report(folder)
    assert report["summary"]["per_style"] == {"corporate": {"tried": 1, "kept": 1}}
    assert [c["platform"] for c in report["candidates"][0]["crops"]] == ["linkedin"]
    _assert_consistent(folder, report)
    # The same through the API every entry point uses (serve's export, a batch row): order kept.
    run = export_stills(StillRequest(asset(OBAMA), ("technology", "corporate", "technology", "corporate"),
                                     variants=1, platforms=(), out=tmp_path / "api"), studio_config(NO_BACKGROUND),
                        bench=studio_bench, progress=False)
    assert list(run.report["styles"]) == ["technology", "corporate"] and run.tried == 2
    assert [c["style"] for c in run.report["candidates"]] == ["technology", "corporate"]


@pytest.mark.parametrize(("args", "message"), [
    (["--styles", ","], "--styles ','"),
    (["--styles", ""], "--styles ''"),
    (["--platforms", " , "], "--platforms ' , '"),
])
def test_empty_style_or_platform_lists_are_errors(tmp_path: Path, args: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["still", str(asset(OBAMA)), "--engine", "studio", "--out", str(out), *args]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert message in line, line
    assert not out.exists()


def test_a_folder_as_the_photo_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = asset(OBAMA).parent
    assert main(["still", str(folder), "--engine", "studio", "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(folder) in line and "is a folder" in line and "one photo" in line and "--batch" in line


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests._unwritable import unwritable_folder

    with unwritable_folder(tmp_path / "locked") as locked:
        # A photo with no face: had the run started, "no face found" would be the error.
        assert main(["still", str(asset("images/no_face/lp-bmw.jpg")), "--engine", "studio", "--out",
                     str(locked)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "cannot write to the output directory" in line and str(locked) in line
        assert main(["still", str(asset(OBAMA)), "--engine", "studio", "--out", str(locked / "sub")]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "cannot create the output directory" in line and str(locked / "sub") in line
        assert list(locked.iterdir()) == []
