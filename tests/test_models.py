"""Model registry and resolution: config path, model directory, download (from a local server)."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.registry import FACE_LANDMARKER, REGISTRY, SELFIE_SEGMENTER, ModelFile
from models.store import ModelUnavailable, model_dir, resolve, sha256_of, status
from tests.conftest import asset

_REID = "models/face_recognition/face-reidentification-retail-0095/FP16/face-reidentification-retail-0095"
SHARED_COPY = {"face_landmarker": "models/face_landmarker/face_landmarker.task",
               "segmenter": "models/segmentation/selfie_segmentation.tflite",
               "face_reid_xml": f"{_REID}.xml", "face_reid_bin": f"{_REID}.bin",
               "face_detector": "models/face_detection/face_detection_yunet_2023mar.onnx"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_pins_the_real_files(name: str) -> None:
    model = REGISTRY[name]
    assert model.url.startswith("https://") and model.licence and model.source
    path = asset(SHARED_COPY[name])
    assert path.stat().st_size == model.size
    assert sha256_of(path) == model.sha256


def test_model_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVECAM_MODEL_DIR", str(tmp_path / "env"))
    assert model_dir("") == tmp_path / "env"
    assert model_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("LIVECAM_MODEL_DIR")
    assert model_dir("").name == "models" and "livecam" in str(model_dir(""))


def test_file_placed_by_hand_is_used_and_checked(tmp_path: Path) -> None:
    shutil.copy(asset(SHARED_COPY["segmenter"]), tmp_path / SELFIE_SEGMENTER.filename)
    assert resolve(SELFIE_SEGMENTER, tmp_path, download=False) == tmp_path / SELFIE_SEGMENTER.filename
    assert status(SELFIE_SEGMENTER, tmp_path).verified
    (tmp_path / SELFIE_SEGMENTER.filename).write_bytes(b"truncated")
    with pytest.raises(ModelUnavailable, match=r"expected 9ee168ec7c8f.*delete it"):
        resolve(SELFIE_SEGMENTER, tmp_path)


def test_config_path_override(tmp_path: Path) -> None:
    path = asset(SHARED_COPY["segmenter"])
    assert resolve(SELFIE_SEGMENTER, tmp_path, override=str(path)) == path
    with pytest.raises(ModelUnavailable, match=r"models.segmenter = '/nope.tflite': no such file"):
        resolve(SELFIE_SEGMENTER, tmp_path, override="/nope.tflite")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on localhost serving a copy of the segmentation model."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(asset(SHARED_COPY["segmenter"]), root / "model.tflite")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_checks_sha256_then_lands(served: str, tmp_path: Path) -> None:
    model = dataclasses.replace(SELFIE_SEGMENTER, url=f"{served}/model.tflite")
    directory = tmp_path / "cache" / "models"
    path = resolve(model, directory)
    assert path == directory / model.filename and sha256_of(path) == model.sha256
    assert sorted(p.name for p in directory.iterdir()) == [model.filename]  # no temp files left


def test_download_with_wrong_checksum_saves_nothing(served: str, tmp_path: Path) -> None:
    model = dataclasses.replace(SELFIE_SEGMENTER, url=f"{served}/model.tflite", sha256="0" * 64)
    directory = tmp_path / "models"
    with pytest.raises(ModelUnavailable, match="nothing was saved"):
        resolve(model, directory)
    assert list(directory.iterdir()) == []


def test_offline_message_names_file_url_and_place(tmp_path: Path) -> None:
    # A closed port on localhost fails the way an offline machine does, without touching the network.
    model = dataclasses.replace(SELFIE_SEGMENTER, url="http://127.0.0.1:9/selfie.tflite")
    with pytest.raises(ModelUnavailable) as info:
        resolve(model, tmp_path)
    message = str(info.value)
    assert model.filename in message and model.url in message
    assert str(tmp_path / model.filename) in message and "models.segmenter" in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelUnavailable, match="downloads are off"):
        resolve(model, tmp_path, download=False)


def _not_models(tmp_path: Path) -> dict[str, Path]:
    """Files a user may point a model key at by mistake: a text file, a photo, an empty file."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my face landmarker is in Downloads\n")
    empty = tmp_path / "empty.task"
    empty.touch()
    return {"text": notes, "jpeg": asset("images/faces/obama_official_2012.jpg"), "empty": empty}


@pytest.mark.parametrize(("model", "other"), [(FACE_LANDMARKER, "segmenter"), (SELFIE_SEGMENTER, "face_landmarker")])
def test_a_file_that_is_not_the_model_is_refused_by_key_and_name(tmp_path: Path, model: ModelFile,
                                                                  other: str) -> None:
    """Checked before MediaPipe opens it (which fails with a bare RuntimeError: 'Unable to open zip
    archive'). The other MediaPipe model is a wrong file too: both are zips, only one is a .task bundle."""
    for what, path in {**_not_models(tmp_path), "the other model": asset(SHARED_COPY[other])}.items():
        with pytest.raises(ModelUnavailable) as info:
            resolve(model, tmp_path, override=str(path))
        message = str(info.value)
        assert message.startswith(f"models.{model.name} = {str(path)!r}: ") and "\n" not in message, what
        assert "not a valid MediaPipe model" in message, (what, message)
        st = status(model, tmp_path, str(path))
        assert st.present and not st.verified and "not a valid MediaPipe model" in st.problem, what
    with pytest.raises(ModelUnavailable, match="it is a JPEG image"):
        resolve(model, tmp_path, override=str(_not_models(tmp_path)["jpeg"]))
    real = asset(SHARED_COPY[model.name])
    assert resolve(model, tmp_path, override=str(real)) == real
    assert status(model, tmp_path, str(real)).verified
