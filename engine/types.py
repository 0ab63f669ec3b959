"""The engine's vocabulary: what each array means, shared by every renderer.

Pixel contract outside the engine: RGB, uint8, HxWx3, C-contiguous. BGR exists only at OpenCV calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

RGBImage: TypeAlias = npt.NDArray[np.uint8]
"""HxWx3 uint8 RGB, values 0..255."""

Mask: TypeAlias = npt.NDArray[np.float32]
"""HxW float32 in [0, 1]; 1 = person / foreground."""

Landmarks: TypeAlias = npt.NDArray[np.float32]
"""(N, 3) float32: x, y in pixels of the frame they were found in, z in MediaPipe's relative units
(about the same scale as x; smaller = closer to the camera). N = 478 for the face landmarker."""

Affine: TypeAlias = npt.NDArray[np.float64]
"""2x3 float64 matrix mapping source pixel coordinates to destination pixel coordinates."""


@dataclass(frozen=True)
class Face:
    """One tracked face in a source frame.

    `landmarks` are smoothed and in source-frame pixels; `frame_size` is that frame's (width, height).
    """

    landmarks: Landmarks
    frame_size: tuple[int, int]


class Segmenter(Protocol):
    """Person segmentation, built by `models/` and handed to a renderer ready to run."""

    def segment(self, image: RGBImage, timestamp_ms: int) -> Mask:
        """Person probability for `image` (HxW float32 in [0, 1], same HxW as `image`).

        `timestamp_ms` strictly increases between calls on a live stream.
        """
        ...

    def close(self) -> None: ...


class Sections(Protocol):
    """Named timing sections; `livecam.live.stats` supplies the real one."""

    def section(self, name: str) -> AbstractContextManager[None]: ...


class NoSections:
    """A `Sections` that measures nothing (the default for a renderer used on its own)."""

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        yield


class Renderer(Protocol):
    """Turns one captured frame plus its tracked face into one output canvas.

    `prepare()` runs once before the first frame and does every expensive set-up; `render()` runs per
    frame and does only per-frame work. A renderer holds per-stream state (framing, light smoothing), so
    one instance serves one stream. `close()` may be called more than once.
    """

    name: str
    output_size: tuple[int, int]
    """(width, height) of every image `render` returns."""
    needs_mask: bool
    """True when `render` uses a person mask; the loop then segments each frame (in parallel with
    face tracking) and passes the mask in."""
    @property
    def shown_ms(self) -> int | None:
        """The `timestamp_ms` of the frame whose pixels the latest `render` output shows (None before the
        first): usually the frame just passed in; an earlier one when the engine delays (stream batching) or
        repeats (a skipped, similar frame). The loop stamps the published frame with that frame's capture
        time."""
        ...

    def prepare(self) -> None: ...

    def render(self, image: RGBImage, face: Face | None, mask: Mask | None, timestamp_ms: int) -> RGBImage:
        """`image`: the source frame; `face`: its tracked face or None; `mask`: the person mask of
        `image` (same HxW) or None; `timestamp_ms`: capture time, increasing. Returns the output canvas
        (output_size, RGB uint8)."""
        ...

    def counters(self) -> dict[str, float]:
        """Engine-specific counts and figures for the run's summary (e.g. fallbacks); may be empty."""
        ...

    def close(self) -> None: ...


class FaceEncoder(Protocol):
    """A face-embedding network, built by `models/` and handed over ready to run: enrolment checks and the
    likeness score of every generated image compare its embeddings by cosine."""

    name: str
    threshold: float
    """Calibrated same-person cosine: two faces of one person score at or above it, of two people below."""

    def embed(self, image: RGBImage, landmarks: Landmarks) -> npt.NDArray[np.float32]:
        """The L2-normalised embedding ((D,) float32) of the face at `landmarks` (MediaPipe's 468/478
        points or five key points, in pixels of `image`); the face is aligned to the network's reference
        points first."""
        ...

    def close(self) -> None: ...


class FaceTracker(Protocol):
    def track(self, image: RGBImage, timestamp_ms: int) -> Face | None: ...

    def predict(self, timestamp_ms: int) -> Face | None:
        """The face expected at `timestamp_ms` from what was tracked so far; None without a recent face."""
        ...

    def reset(self) -> None:
        """Forget the faces tracked so far (the input changed size: their pixels mean nothing now)."""
        ...

    def close(self) -> None: ...
