"""Every model file the project uses: what it is, where it comes from, its licence and checksum."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFile:
    """One downloadable model file, pinned by sha256."""

    name: str
    """Registry key, also the config key under [models] that overrides its path."""
    filename: str
    """File name in the model directory."""
    url: str
    sha256: str
    size: int
    licence: str
    source: str
    purpose: str


FACE_LANDMARKER = ModelFile(
    name="face_landmarker",
    filename="face_landmarker.task",
    url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size=3_758_596,
    licence="Apache-2.0",
    source="Google MediaPipe Face Landmarker, float16 v1",
    purpose="478 face landmarks per frame (tracking, framing, relighting)",
)

SELFIE_SEGMENTER = ModelFile(
    name="segmenter",
    filename="selfie_segmentation_landscape.tflite",
    # The landscape (144x256) selfie model suits 16:9 and 4:3 webcams; these are the bytes shipped in the
    # mediapipe 0.10.21 wheel and tagged in its repository.
    url="https://raw.githubusercontent.com/google/mediapipe/v0.10.21/mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
    sha256="a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
    size=250_145,
    licence="Apache-2.0",
    source="Google MediaPipe selfie segmentation (landscape), v0.10.21",
    purpose="person mask for background replacement",
)

REGISTRY: dict[str, ModelFile] = {m.name: m for m in (FACE_LANDMARKER, SELFIE_SEGMENTER)}
