"""The person segmenter component: MediaPipe Tasks ImageSegmenter on the selfie segmentation model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.types import Mask, RGBImage

os.environ.setdefault("GLOG_minloglevel", "2")

import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision


class MediaPipeSegmenter:
    """Implements `engine.types.Segmenter` for a stream (VIDEO mode, timestamps forced increasing)."""

    def __init__(self, model_path: Path) -> None:
        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.VIDEO,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        self._segmenter = vision.ImageSegmenter.create_from_options(options)
        self._last_ms = -1
        self._closed = False

    def segment(self, image: RGBImage, timestamp_ms: int) -> Mask:
        """Person probability, HxW float32 in [0, 1], same size as `image`."""
        timestamp_ms = max(timestamp_ms, self._last_ms + 1)
        self._last_ms = timestamp_ms
        result = self._segmenter.segment_for_video(
            mp.Image(image_format=mp.ImageFormat.SRGB, data=image), timestamp_ms)
        # The selfie model has a single output: the person confidence. Copy out of MediaPipe's buffer.
        mask = np.array(result.confidence_masks[-1].numpy_view(), dtype=np.float32, copy=True)
        return mask.reshape(mask.shape[0], mask.shape[1])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._segmenter.close()
