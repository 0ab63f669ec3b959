"""The person segmenter component: MediaPipe Tasks ImageSegmenter on the selfie segmentation model."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from engine.types import Mask, RGBImage
from models.native_log import native_stderr_silenced


class MediaPipeSegmenter:
    """Implements `engine.types.Segmenter` for a stream (VIDEO mode, timestamps forced increasing)."""

    def __init__(self, model_path: Path) -> None:
        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.VIDEO,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        with native_stderr_silenced():
            self._segmenter = vision.ImageSegmenter.create_from_options(options)
        self._first = True
        self._last_ms = -1
        self._closed = False

    def segment(self, image: RGBImage, timestamp_ms: int) -> Mask:
        """Person probability, HxW float32 in [0, 1], same size as `image`."""
        timestamp_ms = max(timestamp_ms, self._last_ms + 1)
        self._last_ms = timestamp_ms
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=image)
        with native_stderr_silenced() if self._first else nullcontext():
            result = self._segmenter.segment_for_video(mp_image, timestamp_ms)
        self._first = False
        # The selfie model has a single output: the person confidence. Copy out of MediaPipe's buffer.
        mask = np.array(result.confidence_masks[-1].numpy_view(), dtype=np.float32, copy=True)
        return mask.reshape(mask.shape[0], mask.shape[1])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._segmenter.close()
