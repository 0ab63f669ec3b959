"""Enrolment: the photo checks on the shared photos (each bad photo rejected with its reason), the
identity store, and a whole enrolment with tiny models: real MediaPipe, YuNet, the re-id encoder and the
real training code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from livecam.config import load_config
from livecam.errors import LivecamError
from livecam.identity.enroll import check_photo, check_set, expand_photos, training_crop
from livecam.identity.store import delete_identity, identities_dir, list_identities, resolve_identity_lora
from tests.conftest import asset

IDENTITY = [asset(f"images/identity/meds-aa-S001-0{i}.jpg") for i in range(1, 7)]


@pytest.fixture(scope="module")
def checkers(model_dir: Path) -> tuple:
    from models.face_detector import YuNetDetector
    from models.face_encoder import load_face_encoder
    from models.face_landmarker import detect_faces
    from models.registry import FACE_DETECTOR, FACE_LANDMARKER

    encoder = load_face_encoder("reid", model_dir, {}, False)
    detector = YuNetDetector(model_dir / FACE_DETECTOR.filename)
    landmarker = model_dir / FACE_LANDMARKER.filename
    yield (lambda image: detect_faces(landmarker, image, max_faces=2)), detector.detect, encoder
    encoder.close()


def _check(path: Path, checkers: tuple, **settings: object) -> str | None:
    config = load_config(None, [f"enroll.{k}={v}" for k, v in settings.items()])
    return check_photo(path, config.enroll, *checkers).reason


@pytest.fixture(scope="module")
def bad_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    selfie = cv2.imread(str(IDENTITY[0]))
    files = {
        "corrupt": root / "corrupt.jpg", "truncated": root / "partial.jpg", "text": root / "notes.jpg",
        "tiny": root / "tiny.jpg",
        "blurry": root / "blurry.jpg", "dark": root / "dark.jpg", "cut": root / "cut.jpg",
    }
    files["corrupt"].write_bytes(IDENTITY[0].read_bytes()[:200])
    whole = IDENTITY[0].read_bytes()
    files["truncated"].write_bytes(whole[:len(whole) * 2 // 3])  # an unfinished copy: the chin is missing
    files["text"].write_text("these are my selfies\n")
    cv2.imwrite(str(files["tiny"]), cv2.resize(selfie, (120, 150)))
    cv2.imwrite(str(files["blurry"]), cv2.GaussianBlur(selfie, (0, 0), 6))
    cv2.imwrite(str(files["dark"]), (selfie * 0.12).astype(np.uint8))
    cv2.imwrite(str(files["cut"]), selfie[:, 150:])  # the left part of the face is outside the photo
    return files


@pytest.mark.parametrize(("photo", "reason"), [
    ("images/no_face/lp-bmw.jpg", "no face"),
    ("images/multi_face/obama_biden_two_people.jpg", "2 faces"),
    ("images/multi_face/race_ccby.jpg", "faces (the largest"),
    ("images/faces/meds-af-S419-01_40deg.jpg", "2 faces"),
])
def test_shared_photos_are_rejected_with_their_reason(photo: str, reason: str, checkers: tuple) -> None:
    result = _check(asset(photo), checkers)
    assert result is not None and reason in result, result


@pytest.mark.parametrize(("name", "reason"), [
    ("corrupt", "truncated"), ("truncated", "truncated"), ("text", "not an image"), ("tiny", "too small (120x150"),
    ("blurry", "too blurry"), ("dark", "too dark"), ("cut", "cut off"),
])
def test_bad_files_are_rejected_with_their_reason(name: str, reason: str, bad_photos: dict[str, Path],
                                                  checkers: tuple) -> None:
    result = _check(bad_photos[name], checkers)
    assert result is not None and reason in result, result


def test_missing_file_and_small_face(tmp_path: Path, checkers: tuple) -> None:
    assert _check(tmp_path / "nope.jpg", checkers) == "no such file"
    result = _check(IDENTITY[0], checkers, min_face_px=400)
    assert result is not None and "face too small" in result


def test_good_selfies_pass_and_the_exif_rotated_one_aligns_like_its_twin(checkers: tuple) -> None:
    config = load_config(None)
    reports = [check_photo(p, config.enroll, *checkers) for p in IDENTITY]
    assert [r.reason for r in reports] == [None] * 6
    rotated = check_photo(asset("images/faces/meds-aa-S001-01-exif-rotation.jpg"), config.enroll, *checkers)
    assert rotated.ok and rotated.image is not None and rotated.landmarks is not None
    upright = reports[0]
    assert upright.image is not None and upright.landmarks is not None
    a = training_crop(upright.image, upright.landmarks, 128).astype(int)
    b = training_crop(rotated.image, rotated.landmarks, 128).astype(int)
    assert np.abs(a - b).mean() < 2.0  # the same crop: EXIF orientation was applied before aligning


def test_duplicates_and_a_different_person_are_found(checkers: tuple, tmp_path: Path) -> None:
    config = load_config(None)
    copy = tmp_path / "copy-of-01.jpg"
    cv2.imwrite(str(copy), cv2.resize(cv2.imread(str(IDENTITY[0])), (400, 500)))  # resized: not the same bytes
    stranger = asset("images/identity/meds-aa-S008-01.jpg")
    paths = [*IDENTITY, copy, stranger]
    reports = [check_photo(p, config.enroll, *checkers) for p in paths]
    check_set(reports, config.enroll, checkers[2].threshold)
    reasons = {r.path.name: r.reason for r in reports}
    assert reasons["copy-of-01.jpg"] == "a near duplicate of meds-aa-S001-01.jpg"
    assert reasons["meds-aa-S008-01.jpg"] is not None and "different person" in reasons["meds-aa-S008-01.jpg"]
    assert all(reasons[p.name] is None for p in IDENTITY)


def test_folders_expand_to_their_images(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_photos([str(tmp_path)])] == ["a.png", "b.jpg"]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIVECAM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_too_few_usable_photos_stop_with_what_to_retake_and_write_nothing(data_dir: Path, tmp_path: Path) -> None:
    from livecam.identity.enroll import enroll

    bad = tmp_path / "blurry.jpg"
    cv2.imwrite(str(bad), cv2.GaussianBlur(cv2.imread(str(IDENTITY[0])), (0, 0), 6))
    with pytest.raises(LivecamError) as e:
        enroll([*map(str, IDENTITY[1:4]), str(bad), str(asset("images/no_face/lp-bmw.jpg"))], "me",
               load_config(None))
    message = str(e.value)
    assert "only 3 usable photo(s) of the 8 needed" in message
    assert "blurry.jpg: too blurry" in message and "lp-bmw.jpg: no face found" in message
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


def test_a_truncated_selfie_is_reported_unusable_with_its_reason(data_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from livecam.cli import main

    whole = IDENTITY[5].read_bytes()
    partial = tmp_path / "partial-06.jpg"
    partial.write_bytes(whole[:len(whole) * 2 // 3])
    assert main(["enroll", *map(str, IDENTITY[:5]), str(partial), "--name", "me", "--set",
                 "enroll.min_photos=6"]) == 2
    captured = capsys.readouterr()
    assert "-- partial-06.jpg: truncated" in captured.out  # the photo table
    assert "only 5 usable photo(s) of the 6 needed" in captured.err and "partial-06.jpg: truncated" in captured.err
    assert "Traceback" not in captured.err
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


def test_identity_names_and_deleting(data_dir: Path) -> None:
    with pytest.raises(LivecamError, match="identity name"):
        resolve_identity_lora("Bad Name!")
    with pytest.raises(LivecamError, match="not enrolled"):
        resolve_identity_lora("nobody")
    folder = identities_dir() / "ann"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "a.jpg").write_bytes(b"x")
    (folder / "identity.json").write_text(json.dumps({"name": "ann", "trigger": "ohwx"}))
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    assert [i.name for i in list_identities()] == ["ann"]
    assert resolve_identity_lora("ann")[0] == folder / "pytorch_lora_weights.safetensors"
    delete_identity("ann")
    assert not folder.exists() and list_identities() == []
    with pytest.raises(LivecamError, match="does not exist"):
        delete_identity("ann")
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL saved as a diffusers folder: what `models.base = DIR` points at."""
    import diffusers

    from tests.tiny_sdxl import tiny_components

    c = tiny_components(0)
    path = tmp_path_factory.mktemp("tiny") / "base"
    diffusers.StableDiffusionXLPipeline(
        vae=c["vae"], text_encoder=c["text_encoder"], text_encoder_2=c["text_encoder_2"], tokenizer=c["tokenizer"],
        tokenizer_2=c["tokenizer_2"], unet=c["unet"], scheduler=c["scheduler"]).save_pretrained(path)
    return path


def test_enroll_then_run_with_the_identity(data_dir: Path, tiny_base: Path, short_face_video: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's command: six S001 selfies, tiny models, 20 steps; then the live camera uses it by name."""
    from livecam.cli import main

    sets = ["--set", f"models.base={tiny_base}", "--set", "models.device=cpu"]
    code = main(["enroll", *map(str, IDENTITY), "--name", "s001", *sets, "--set", "enroll.steps=20",
                 "--set", "enroll.min_photos=6", "--set", "enroll.resolution=64", "--set", "enroll.learning_rate=1e-3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "use it with: livecam run --set models.identity=s001" in out
    folder = identities_dir() / "s001"
    meta = json.loads((folder / "identity.json").read_text())
    assert meta["name"] == "s001" and meta["trigger"] == "ohwx" and meta["steps"] == 20
    assert len(meta["photos"]) == 6 and all(len(p["sha256"]) == 64 for p in meta["photos"])
    assert len(meta["centroid"]) > 100 and 0 < meta["threshold"] < 1 and meta["encoder"]
    assert sorted(p.name for p in (folder / "photos").iterdir()) == [p.name for p in IDENTITY]
    assert len(list((folder / "dataset").glob("*.png"))) == 6
    assert not (folder / "checkpoints").exists()
    assert not list(identities_dir().glob(".*"))  # no staging left behind

    video_out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    assert main(["run", "--engine", "diffusion", "--input", str(short_face_video), "--output", str(video_out),
                 "--no-pace", "--frames", "5", "--stats-json", str(stats), *sets, "--set", "models.identity=s001",
                 "--set", "models.tiny_vae=",
                 "--set", "models.controlnet=", "--set", "engine.size=64", "--set", "output.width=320",
                 "--set", "output.height=180"]) == 0
    assert video_out.is_file()
    counts = json.loads(stats.read_text())["engine_counts"]
    assert counts["generated"] + counts["similar_skips"] == 5
    assert counts["likeness_checks"] == 1 and -1 <= counts["likeness_median"] <= 1  # scored with the reid encoder

    assert main(["identities"]) == 0
    assert "s001: 6 photos" in capsys.readouterr().out
    assert main(["identities", "--delete", "s001"]) == 0
    assert not folder.exists()


def test_an_interrupted_enrolment_resumes_to_the_same_identity(data_dir: Path, tiny_base: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during training keeps the staging folder (not listed as an identity); --resume finishes it
    with the same weights an uninterrupted enrolment gives."""
    from safetensors.torch import load_file

    import models.lora_training
    from livecam.identity.enroll import enroll

    config = load_config(None, [f"models.base={tiny_base}", "models.device=cpu", "enroll.min_photos=6",
                                "enroll.steps=4", "enroll.checkpoint_every=2", "enroll.resolution=64"])
    photos = [str(p) for p in IDENTITY]
    enroll(photos, "whole", config, progress=False)
    real = models.lora_training.train_identity_lora

    def interrupted(*args: object, **kwargs: object) -> object:
        def stop(step: int, loss: float) -> None:
            if step == 3:
                raise KeyboardInterrupt
        return real(*args, **kwargs, on_step=stop)  # type: ignore[arg-type]

    monkeypatch.setattr(models.lora_training, "train_identity_lora", interrupted)
    with pytest.raises(KeyboardInterrupt):
        enroll(photos, "halves", config, progress=False)
    assert (identities_dir() / ".halves.partial" / "checkpoints").is_dir()
    assert [i.name for i in list_identities()] == ["whole"]
    with pytest.raises(LivecamError, match="--resume"):
        enroll(photos, "halves", config, progress=False)
    monkeypatch.setattr(models.lora_training, "train_identity_lora", real)
    result = enroll(photos, "halves", config, resume=True, progress=False)
    a = load_file(identities_dir() / "whole" / "pytorch_lora_weights.safetensors")
    b = load_file(result.identity.lora_path)
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)
    assert not (identities_dir() / ".halves.partial").exists()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_with_other_photos_or_settings_keeps_the_interrupted_enrolment(
        data_dir: Path, tiny_base: Path, checkers: tuple, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--resume never deletes an interrupted enrolment: a change of photos or of a training setting is one
    line saying what changed and what to do, and the checkpoints stay for the right command."""
    import models.lora_training
    from livecam.cli import main
    from livecam.identity.enroll import check_resumable, enroll

    sets = [f"models.base={tiny_base}", "models.device=cpu", "enroll.min_photos=6", "enroll.steps=3",
            "enroll.checkpoint_every=2", "enroll.resolution=64"]
    photos = [str(p) for p in IDENTITY]
    real = models.lora_training.train_identity_lora

    def interrupted(*args: object, **kwargs: object) -> object:
        def stop(step: int, loss: float) -> None:
            if step == 2:  # just after the checkpoint
                raise KeyboardInterrupt
        return real(*args, **kwargs, on_step=stop)  # type: ignore[arg-type]

    monkeypatch.setattr(models.lora_training, "train_identity_lora", interrupted)
    with pytest.raises(KeyboardInterrupt):
        enroll(photos, "me", load_config(None, sets), progress=False)
    monkeypatch.setattr(models.lora_training, "train_identity_lora", real)
    staging = identities_dir() / ".me.partial"
    kept = _files(staging)
    assert any(name.startswith("checkpoints/step-000002/") for name in kept)
    capsys.readouterr()

    rotated = str(asset("images/faces/meds-aa-S001-01-exif-rotation.jpg"))  # the same face, other bytes
    cases = [
        ([rotated, *photos[1:]], [], ["photos", "meds-aa-S001-01-exif-rotation.jpg", "meds-aa-S001-01.jpg"]),
        (photos, ["enroll.rank=8"], ["enroll.rank (16 -> 8)"]),
    ]
    for given, changes, words in cases:  # the whole command
        args = [a for change in [*sets, *changes] for a in ("--set", change)]
        assert main(["enroll", *given, "--name", "me", "--resume", *args]) == 2, changes
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("livecam: error: --resume") and "Traceback" not in err, err
        assert all(w in lines[0] for w in words), lines[0]
        assert "same photos and settings" in lines[0] and "livecam identities --delete me" in lines[0]
        assert _files(staging) == kept, changes  # nothing deleted, nothing overwritten
    usable = [check_photo(p, load_config(None, sets).enroll, *checkers) for p in IDENTITY]
    for changes, words in [(["enroll.trigger=sks"], ["enroll.trigger ('ohwx' -> 'sks')"]),
                           (["enroll.steps=1"], ["enroll.steps = 1", "the 2 steps", "enroll.steps=2"]),
                           (["models.base=sdxl-turbo"], ["models.base", "'sdxl-turbo'"])]:  # the same check, quicker
        with pytest.raises(LivecamError) as e:
            check_resumable(staging, "me", usable, load_config(None, [*sets, *changes]))
        assert all(w in str(e.value) for w in words), str(e.value)
    with pytest.raises(LivecamError, match="another order"):
        check_resumable(staging, "me", usable[::-1], load_config(None, sets))
    (staging / "enrolment.json").unlink()  # an enrolment interrupted before there was a manifest
    with pytest.raises(LivecamError, match=r"enroll\.rank"):
        check_resumable(staging, "me", usable, load_config(None, [*sets, "enroll.rank=8"]))
    with pytest.raises(LivecamError, match=r"meds-aa-S001-06\.jpg is not among them"):
        check_resumable(staging, "me", usable[:5], load_config(None, sets))
    assert _files(staging) == {k: v for k, v in kept.items() if k != "enrolment.json"}

    # The same photos and settings continue it.
    result = enroll(photos, "me", load_config(None, sets), resume=True, progress=False)
    assert result.identity.metadata["steps"] == 3 and not staging.exists()


def torch_equal(a: object, b: object) -> bool:
    import torch

    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return bool(torch.equal(a, b))


def test_photos_of_two_people_equally_often_are_refused(checkers: tuple) -> None:
    config = load_config(None)
    paths = [asset(f"images/identity/meds-aa-S00{p}-0{i}.jpg") for p in (6, 8) for i in (1, 2, 3)]
    reports = [check_photo(p, config.enroll, *checkers) for p in paths]
    check_set(reports, config.enroll, checkers[2].threshold)
    assert all(r.reason is not None and "no one person is in most of the photos" in r.reason for r in reports)
