"""Identity encoders: five-point alignment maths on real photos, the Apache-2.0 re-id encoder on the shared
photos (same person above its threshold, different people below), and the ArcFace adapter driven by a tiny
ONNX model built here."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from engine.alignment import (
    ARCFACE_112,
    REID_128,
    align_face,
    centroid,
    cosine,
    five_points,
    likeness,
    similarity_transform,
)
from engine.framing import transform_points
from engine.types import FaceEncoder
from models.face_encoder import (
    ARCFACE_THRESHOLD,
    REID_THRESHOLD,
    ArcFaceOnnxEncoder,
    OpenVinoReidEncoder,
    load_face_encoder,
)
from models.registry import FACE_DETECTOR, FACE_REID_BIN, FACE_REID_XML
from models.store import ModelUnavailable, sha256_of
from tests._landmarks import detect, photo_landmarks, read_rgb
from tests.conftest import asset

UPRIGHT = "images/identity/meds-aa-S001-01.jpg"
EXIF_ROTATED = "images/faces/meds-aa-S001-01-exif-rotation.jpg"
PHOTOS: dict[str, str] = {
    **{f"images/identity/meds-aa-S001-0{i}.jpg": "S001" for i in range(1, 7)},
    **{f"images/identity/meds-aa-{s}-0{i}.jpg": s for s in ("S006", "S008") for i in range(1, 4)},
    "images/faces/obama_official_2012.jpg": "A",
    "images/faces/obama_congress_2009.jpg": "A",
    "images/faces/biden_official_portrait.jpg": "B",
}


# --- alignment maths ---------------------------------------------------------------------------------


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> npt.NDArray[np.float64]:
    a = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rotation, [[tx], [ty]]])


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, size=(5, 2))
    known = _similarity(-33.0, 0.37, 12.5, -40.0)
    recovered = similarity_transform(src, transform_points(src, known))
    np.testing.assert_allclose(recovered, known, atol=1e-9)
    # A mirrored target is fitted with a rotation, never a reflection (that would flip the face).
    mirrored = transform_points(src, known) * [-1, 1]
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), src)


def test_five_points_of_a_real_face_in_yunet_order() -> None:
    landmarks = photo_landmarks(UPRIGHT)
    points = five_points(landmarks)
    assert points.shape == (5, 2) and points.dtype == np.float32
    right_eye, left_eye, nose, mouth_right, mouth_left = points
    assert right_eye[0] < nose[0] < left_eye[0] and mouth_right[0] < mouth_left[0]  # image-left first
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(mouth_right[1], mouth_left[1])
    np.testing.assert_array_equal(five_points(points), points)  # five points (YuNet) pass through
    with pytest.raises(ValueError, match="468/478"):
        five_points(landmarks[:100])


def test_known_rotation_of_a_real_photo_is_recovered_from_its_landmarks() -> None:
    image = read_rgb(UPRIGHT)
    height, width = image.shape[:2]
    known = cv2.getRotationMatrix2D((width / 2, height / 2), 25.0, 0.8)
    rotated = np.asarray(cv2.warpAffine(image, known, (width, height)), dtype=np.uint8)
    found = detect(rotated)
    assert found is not None
    recovered = similarity_transform(photo_landmarks(UPRIGHT)[:, :2], found[:, :2])
    angle = np.rad2deg(np.arctan2(recovered[1, 0], recovered[0, 0]))
    scale = np.hypot(recovered[0, 0], recovered[1, 0])
    assert angle == pytest.approx(-25.0, abs=1.0)  # getRotationMatrix2D turns counter-clockwise on screen
    assert scale == pytest.approx(0.8, rel=0.02)
    np.testing.assert_allclose(recovered[:, 2], known[:, 2], atol=6.0)
    # Aligned, the rotated copy gives nearly the same crop as the upright photo.
    upright_crop = align_face(image, five_points(photo_landmarks(UPRIGHT)), REID_128, 128).astype(np.float32)
    rotated_crop = align_face(rotated, five_points(found), REID_128, 128).astype(np.float32)
    assert np.abs(upright_crop - rotated_crop).mean() < 12.0


@pytest.mark.parametrize("reference", [ARCFACE_112, REID_128 * np.float32(112 / 128)], ids=["arcface", "reid"])
def test_aligned_face_has_its_eyes_on_the_reference(reference: npt.NDArray[np.float32]) -> None:
    # Aligned 4x larger than the networks' inputs, so that MediaPipe can find the face again in the crop.
    size, zoom = 448, np.float32(4)
    crop = align_face(read_rgb(UPRIGHT), five_points(photo_landmarks(UPRIGHT)), reference * zoom, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    found = detect(crop)
    assert found is not None
    error = np.linalg.norm(five_points(found) - reference * zoom, axis=1)
    assert error[:2].max() < 0.03 * size, error  # both eyes within 3% of the crop
    assert error.max() < 0.06 * size, error


def test_cosine_and_centroid() -> None:
    a, b = np.array([3.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    assert cosine(a, 5 * a) == pytest.approx(1.0) and cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, b) == pytest.approx(0.0)
    # Each embedding counts once whatever its length: the centroid of a long and a short vector bisects them.
    c = centroid(np.stack([10 * a, b]))
    assert c.dtype == np.float32 and np.linalg.norm(c) == pytest.approx(1.0)
    np.testing.assert_allclose(c, [np.sqrt(0.5), np.sqrt(0.5), 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="zero"):
        centroid(np.stack([a, np.zeros(3)]))
    with pytest.raises(ValueError, match="differ in length"):
        cosine(a, np.ones(4))


# --- the re-id encoder (Apache-2.0) on the shared photos ------------------------------------------------


@pytest.fixture(scope="module")
def reid(model_dir: Path) -> FaceEncoder:
    encoder = load_face_encoder("reid", model_dir, {}, download=False)
    assert isinstance(encoder, OpenVinoReidEncoder)
    return encoder


@pytest.fixture(scope="module")
def embeddings(reid: FaceEncoder) -> dict[str, npt.NDArray[np.float32]]:
    return {photo: reid.embed(read_rgb(photo), photo_landmarks(photo)) for photo in [*PHOTOS, EXIF_ROTATED]}


def test_reid_embedding_is_a_unit_vector_and_deterministic(reid: FaceEncoder,
                                                          embeddings: dict[str, npt.NDArray[np.float32]]) -> None:
    e = embeddings[UPRIGHT]
    assert e.shape == (256,) and e.dtype == np.float32 and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(reid.embed(read_rgb(UPRIGHT), photo_landmarks(UPRIGHT)), e)
    # Five points (as YuNet gives them) embed exactly like the full mesh they come from.
    np.testing.assert_array_equal(reid.embed(read_rgb(UPRIGHT), five_points(photo_landmarks(UPRIGHT))), e)


def test_reid_separates_same_person_from_different_people(reid: FaceEncoder,
                                                          embeddings: dict[str, npt.NDArray[np.float32]]) -> None:
    assert reid.name == "reid" and reid.threshold == REID_THRESHOLD
    same: list[tuple[float, str, str]] = []
    different: list[tuple[float, str, str]] = []
    for a, b in itertools.combinations(PHOTOS, 2):
        (same if PHOTOS[a] == PHOTOS[b] else different).append((cosine(embeddings[a], embeddings[b]), a, b))
    assert len(same) == 15 + 3 + 3 + 1 and len(different) == 15 * 14 // 2 - len(same)
    assert min(same)[0] > reid.threshold, min(same)
    assert max(different)[0] < reid.threshold, max(different)


def test_exif_rotated_photo_embeds_like_its_upright_twin(embeddings: dict[str, npt.NDArray[np.float32]]) -> None:
    # Measured 1.000: read_image applies the EXIF orientation, so both give the same pixels.
    assert cosine(embeddings[EXIF_ROTATED], embeddings[UPRIGHT]) > 0.99


def test_likeness_against_an_enrolled_identity(reid: FaceEncoder,
                                               embeddings: dict[str, npt.NDArray[np.float32]]) -> None:
    enrolled = centroid(np.stack([embeddings[f"images/identity/meds-aa-S001-0{i}.jpg"] for i in range(1, 6)]))
    held_out = "images/identity/meds-aa-S001-06.jpg"
    match = likeness(reid, read_rgb(held_out), photo_landmarks(held_out), enrolled)
    assert match.same_person and match.encoder == "reid" and match.threshold == REID_THRESHOLD
    stranger = "images/identity/meds-aa-S006-01.jpg"
    other = likeness(reid, read_rgb(stranger), photo_landmarks(stranger), enrolled)
    assert not other.same_person and other.score < match.score


def test_registry_pins_the_encoder_files() -> None:
    reid = "models/face_recognition/face-reidentification-retail-0095/FP16/"
    for model, relative in ((FACE_REID_XML, reid + FACE_REID_XML.filename),
                            (FACE_REID_BIN, reid + FACE_REID_BIN.filename),
                            (FACE_DETECTOR, "models/face_detection/face_detection_yunet_2023mar.onnx")):
        path = asset(relative)
        assert model.url.startswith("https://") and model.url.endswith(model.filename)
        assert path.stat().st_size == model.size and sha256_of(path) == model.sha256, model.name


def test_missing_reid_file_offline_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as e:
        load_face_encoder("reid", tmp_path, {}, download=False)
    message = str(e.value)
    assert FACE_REID_XML.filename in message and FACE_REID_XML.url in message
    assert str(tmp_path / FACE_REID_XML.filename) in message and "models.face_reid_xml" in message


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="reid, arcface"):
        load_face_encoder("facenet", Path("."), {}, download=False)


# --- the ArcFace adapter, driven by a tiny ONNX model of the same signature --------------------------


def _channel_mean_model(path: Path, size: int = 112) -> Path:
    """input "data" 1x3xSxS -> 1x512 = [mean R-ish channel 0, channel 1, channel 2, 1, 0, ...]: the constant
    1 survives L2 normalisation as the scale, so the test reads back each input channel's mean."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((3, 512), dtype=np.float32)
    weight[[0, 1, 2], [0, 1, 2]] = 1.0
    bias = np.zeros(512, dtype=np.float32)
    bias[3] = 1.0
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "weight", "bias"], ["embedding"])],
        "channel_means",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    # IR version 8 / opset 13: what every onnxruntime of the last years reads (onnx's newest default is
    # newer than some onnxruntime releases accept).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _solid_face(rgb: tuple[int, int, int]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """A 400x400 image of one colour and five points placed so that the whole 112 px crop lies inside it."""
    image = np.empty((400, 400, 3), dtype=np.uint8)
    image[:] = rgb
    return image, ARCFACE_112 * np.float32(2) + np.float32(100)


def test_arcface_adapter_feeds_rgb_scaled_to_plus_minus_one(tmp_path: Path) -> None:
    path = _channel_mean_model(tmp_path / "w600k_r50.onnx")
    encoder = load_face_encoder("arcface", tmp_path, {"arcface": str(path)}, download=False)
    assert isinstance(encoder, ArcFaceOnnxEncoder)
    assert encoder.name == "arcface" and encoder.threshold == ARCFACE_THRESHOLD
    assert encoder.providers[-1] == "CPUExecutionProvider"
    with encoder:
        image, points = _solid_face((200, 100, 50))
        e = encoder.embed(image, points)
        assert e.shape == (512,) and e.dtype == np.float32 and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
        means = e[:3] / e[3]
        expected = (np.array([200, 100, 50]) - 127.5) / 127.5  # RGB order, (x - 127.5) / 127.5
        np.testing.assert_allclose(means, expected, atol=1e-4)
    with pytest.raises(RuntimeError, match="closed"):
        encoder.embed(image, points)
    encoder.close()  # a second close is harmless


def test_arcface_adapter_rejects_a_model_of_another_signature(tmp_path: Path) -> None:
    path = _channel_mean_model(tmp_path / "other.onnx", size=128)
    with pytest.raises(ModelUnavailable, match=r"not an ArcFace recognition model.*Nx3x112x112"):
        ArcFaceOnnxEncoder(path, providers=["CPUExecutionProvider"])


def test_missing_arcface_weights_say_non_commercial_and_how_to_get_them(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # insightface's cache, ~/.insightface, is then empty
    with pytest.raises(ModelUnavailable) as e:
        load_face_encoder("arcface", tmp_path, {}, download=False)
    message = str(e.value)
    assert "NON-COMMERCIAL" in message and "buffalo_l.zip" in message and "models.arcface" in message
    assert str(tmp_path / ".insightface/models/buffalo_l/w600k_r50.onnx") in message
    assert "`reid`" in message  # the commercially usable alternative
    with pytest.raises(ModelUnavailable, match=r"models.arcface = '/nope.onnx' names no file.*NON-COMMERCIAL"):
        load_face_encoder("arcface", tmp_path, {"arcface": "/nope.onnx"}, download=False)
