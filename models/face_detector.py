"""YuNet (OpenCV's `FaceDetectorYN`): every face in a photo, small ones included, to count the people in
an enrolment selfie. MediaPipe's landmarker finds only faces of a fair size, so it cannot tell "one face"
from "one big face and three small ones"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.types import RGBImage


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]
    """(x, y, width, height) in pixels."""
    score: float


class YuNetDetector:
    """Faces in still images. Not thread-safe."""

    def __init__(self, model_path: Path, score_threshold: float = 0.7) -> None:
        self._detector = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, 0.3, 5000)

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        """Every face in `image` (RGB uint8), largest first."""
        height, width = image.shape[:2]
        self._detector.setInputSize((width, height))
        _, faces = self._detector.detect(np.ascontiguousarray(image[:, :, ::-1]))
        if faces is None:
            return []
        found = [DetectedFace((float(f[0]), float(f[1]), float(f[2]), float(f[3])), float(f[14])) for f in faces]
        return sorted(found, key=lambda f: -f.box[3])
