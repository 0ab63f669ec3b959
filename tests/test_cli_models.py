"""A model key pointing at a file that is not the model: `livecam run` says so in one line, and `livecam
doctor` reports it as a problem. Real MediaPipe files, the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from livecam.cli import main
from tests.conftest import asset

PHOTO = "images/faces/obama_official_2012.jpg"


@pytest.mark.parametrize("key", ["face_landmarker", "segmenter"])
def test_run_with_a_photo_or_text_as_the_model_is_one_line(key: str, tmp_path: Path, short_face_video: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    for wrong in (notes, asset(PHOTO)):
        out = tmp_path / "out.mp4"
        code = main(["run", "--input", str(short_face_video), "--output", str(out), "--no-pace", "--engine", "studio",
                     "--set", f"models.{key}={wrong}"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("livecam: error:")]
        assert len(errors) == 1, err
        assert f"models.{key}" in errors[0] and str(wrong) in errors[0]
        assert "not a valid MediaPipe model" in errors[0]
        assert not out.exists()


@pytest.mark.parametrize("key", ["face_landmarker", "segmenter"])
def test_doctor_reports_a_file_that_is_not_the_model(key: str, capsys: pytest.CaptureFixture[str]) -> None:
    photo = asset(PHOTO)
    code = main(["doctor", "--set", f"models.{key}={photo}"])
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().split()[1:2] == [key])
    assert line.strip().startswith("!!"), out
    assert "not a valid MediaPipe model" in line and str(photo) in line
    assert code == 1
    listing_code = main(["models", "--set", f"models.{key}={photo}"])
    listing = capsys.readouterr().out
    assert listing_code == 0
    assert f"{key}: NOT A VALID MODEL" in listing, listing
