"""Inputs of the picture-quality benchmark, made from the shared assets in memory (nothing is committed).

- Webcam-like clips: a fixed virtual camera over the matting kit's video 01 (a real portrait, S001-04,
  over a bookshelf, drifting +-90 px, bobbing and zooming slowly; 1280x720), aimed at the subject's mean
  place over the clip so that the face (forehead-chin) is `face` of the height with the eyes at (`eye_x`,
  `eye_y`): a laptop-distance subject (face 24%), a close one (face 60%, hair top about 8% below the
  edge), one at the edge (eyes at 12% of the width), each at 640x480 and 1280x720. Where the camera sees
  past the kit's frame it sees the kit's background plate (the room behind the person, mirrored at its
  edges); below the frame, the frame mirrored (the body runs on).
- A 512x512 talking head: the square face region of the shared CC BY video that benchmarks/soak.py uses
  (a real talking face, forehead-chin about 31% of the height, moving up and down by a face height),
  made by tests/media.py's make_face_video.
- The kit's two videos as they are (1280x720), the shared videos (640x480 with small faces; a 308x400 GIF).
- The shared photos (images/faces and images/identity), each shown to the engine as a camera that sees
  the photo for 3 s (STILL_FRAMES frames, STILL_STEP_MS apart): the figures are those of the settled output.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from benchmarks.picture_measure import CHIN, EYE_CORNERS, FOREHEAD
from engine.types import Landmarks, RGBImage
from livecam.photos import read_image
from tests.media import make_face_video

CLIP_FRAMES = 75
"""2.5 s at 30 fps; the first WARMUP_FRAMES (exposure and framing settling in) are not measured."""
WARMUP_FRAMES = 15
STILL_FRAMES = 6
STILL_STEP_MS = 500.0
KIT_VIDEO = "video/video_01_S001-04__sh_bookshelf.mp4"
KIT_PLATE = "backgrounds/sh_bookshelf_1280x720.png"
SIZES = ((640, 480), (1280, 720))
TALKING_REGION = (40, 100, 200, 200)
"""x, y, w, h of the shared CC BY video that holds one talking face (benchmarks/soak.py's region)."""


@dataclass(frozen=True)
class Shot:
    """Where the virtual camera puts the subject in its picture (fractions of the picture)."""

    name: str
    face: float
    eye_x: float
    eye_y: float


SHOTS = (
    Shot("laptop", 0.24, 0.50, 0.42),
    Shot("close", 0.60, 0.50, 0.50),
    Shot("edge", 0.26, 0.12, 0.40),
)


@dataclass(frozen=True)
class Input:
    """One input: `load()` yields its `count` frames (RGB); the engine sees them `step_ms` apart."""

    name: str
    group: str
    """"clip" (webcam-like and real videos) or "photo"."""
    source: str
    size: tuple[int, int]
    count: int
    step_ms: float
    measure_from: int
    load: Callable[[], Iterator[RGBImage]]

    @property
    def still(self) -> bool:
        return self.group == "photo"


def read_video(path: Path, limit: int) -> list[RGBImage]:
    """Up to `limit` frames of a video (or GIF) as RGB."""
    cap = cv2.VideoCapture(str(path))
    frames: list[RGBImage] = []
    while len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    cap.release()
    if not frames:
        raise FileNotFoundError(f"cannot read {path}")
    return frames


def video_info(path: Path, limit: int) -> tuple[tuple[int, int], int]:
    """(width, height) and the number of frames up to `limit` of a video, from its header."""
    cap = cv2.VideoCapture(str(path))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    if min(size) <= 0 or count <= 0:
        raise FileNotFoundError(f"cannot read {path}")
    return size, min(count, limit)


def camera_clip(frames: list[RGBImage], plate: RGBImage, landmarks: Landmarks, shot: Shot, size: tuple[int, int]
                ) -> Iterator[RGBImage]:
    """`frames` seen by a fixed camera that puts the face of `landmarks` where `shot` says.

    Where the camera sees past the kit's frame, it sees the room (`plate`, the kit's background behind the
    person, mirrored at its edges), except below the frame, where the frame itself is mirrored: the body
    runs on down."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    eyes = points[list(EYE_CORNERS)].mean(axis=0)
    face_px = float(np.hypot(*(points[CHIN] - points[FOREHEAD])))
    width, height = size
    scale = shot.face * height / face_px
    x0, y0 = eyes[0] - shot.eye_x * width / scale, eyes[1] - shot.eye_y * height / scale
    x1, y1 = x0 + width / scale, y0 + height / scale
    fh, fw = frames[0].shape[:2]
    pad = int(np.ceil(max(0.0, -x0, -y0, x1 - fw, y1 - fh))) + 2
    room = cv2.copyMakeBorder(plate, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    affine = np.array([[scale, 0.0, -scale * (x0 + pad)], [0.0, scale, -scale * (y0 + pad)]])
    sigma = 0.5 * float(np.sqrt(1.0 / scale**2 - 1.0)) if scale < 0.9 else 0.0  # against aliasing
    for frame in frames:
        seen = room.copy()
        seen[pad:, pad:pad + fw] = cv2.copyMakeBorder(frame, 0, pad, 0, 0, cv2.BORDER_REFLECT_101)
        if sigma > 0:
            seen = cv2.GaussianBlur(seen, (0, 0), sigma)
        yield np.ascontiguousarray(cv2.warpAffine(seen, affine, size, flags=cv2.INTER_LINEAR))


def _played(path: Path, limit: int) -> Iterator[RGBImage]:
    yield from read_video(path, limit)


def _repeat(image_path: Path, count: int) -> Iterator[RGBImage]:
    image = read_image(image_path)
    for _ in range(count):
        yield image


def make_inputs(assets: Path, detect: Callable[[RGBImage], list[Landmarks]], scratch: Path, quick: bool,
                only: str = "") -> list[Input]:
    """Every input of a run; `detect` finds the faces of a still (largest first); `quick`: a few frames of
    a few inputs (for tests). `only`: keep the inputs whose name holds this text."""
    kit = assets / "matting"
    clip_frames, warmup = (6, 2) if quick else (CLIP_FRAMES, WARMUP_FRAMES)
    inputs: list[Input] = []
    source = read_video(kit / KIT_VIDEO, clip_frames)
    # The camera is set on the subject's mean place over the clip (first, middle, last frame): it drifts
    # about that place as a person in front of a webcam does.
    found = [faces[0] for i in sorted({0, len(source) // 2, len(source) - 1}) if (faces := detect(source[i]))]
    if not found:
        raise RuntimeError(f"no face found in {kit / KIT_VIDEO}")
    where = np.mean(found, axis=0)
    plate = read_image(kit / KIT_PLATE)
    for size in SIZES[:1] if quick else SIZES:
        for shot in SHOTS[::2] if quick else SHOTS:
            inputs.append(Input(
                f"cam_{shot.name}_{size[0]}x{size[1]}", "clip",
                f"matting/{KIT_VIDEO} through a fixed camera: face {shot.face:.0%} of the height, eyes at "
                f"x {shot.eye_x:.0%} y {shot.eye_y:.0%}", size, len(source), 1000.0 / 30.0, warmup,
                partial(camera_clip, source, plate, where, shot, size)))
    if quick:
        photos = [assets / "images/identity/meds-aa-S001-01.jpg"]
    else:
        talking = make_face_video(scratch / "talking_head_512.mp4", size=(512, 512), frames=clip_frames,
                                  region=TALKING_REGION)
        inputs.append(Input("talking_head_512x512", "clip", f"video_01_ccby_multiface region {TALKING_REGION} "
                            "(CC BY 2.0, Aaron Tang) at 512x512", (512, 512), clip_frames, 1000.0 / 29.97, warmup,
                            partial(_played, talking, clip_frames)))
        for name, path, limit in (
            ("kit_video_01", kit / KIT_VIDEO, clip_frames),
            ("kit_video_02", kit / "video/video_02_S008-02__sh_bright_window.mp4", clip_frames),
            ("video_01_ccby_multiface", assets / "video/video_01_ccby_multiface.mp4", clip_frames),
            ("face_morphing_gif", assets / "video/face-morphing_pd.gif", clip_frames),
        ):
            size, count = video_info(path, limit)
            inputs.append(Input(name, "clip", str(path.relative_to(assets)), size, count, 1000.0 / 30.0,
                                min(warmup, count // 3), partial(_played, path, limit)))
        photos = sorted((assets / "images/faces").glob("*.jpg")) + sorted((assets / "images/identity").glob("*.jpg"))
    for photo in photos:
        image = read_image(photo)
        inputs.append(Input(f"photo_{photo.stem}", "photo", str(photo.relative_to(assets)),
                            (image.shape[1], image.shape[0]), STILL_FRAMES, STILL_STEP_MS, STILL_FRAMES - 1,
                            partial(_repeat, photo, STILL_FRAMES)))
    return [i for i in inputs if only in i.name]


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """Where made videos go for the run (removed at its end)."""
    return tempfile.TemporaryDirectory(prefix="picture_quality_")
