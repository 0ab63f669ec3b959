"""Make a test/benchmark input with a face from the shared assets' video (nothing is committed).

`video_01_ccby_multiface.mp4` is 640x480 with faces too small for MediaPipe; the region x=20, y=110,
240x180, scaled to 640x480, holds a face in 90 of 90 frames (measured with livecam's tracker).
Video by Aaron 'tango' Tang (2012), flickr.com/photos/hahatango/7484510910, CC BY 2.0.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2

FACE_REGION = (20, 110, 240, 180)


def assets_dir() -> Path:
    """$LIVECAM_ASSETS, else ../shared/assets beside the checkout."""
    env = os.environ.get("LIVECAM_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "assets"


def make_face_video(dst: Path, size: tuple[int, int] = (640, 480), frames: int = 90,
                    region: tuple[int, int, int, int] = FACE_REGION) -> Path:
    """Write `frames` frames of the face region of the shared video, scaled to `size`, to `dst` (mp4v).

    Past the source's 90 frames it plays back and forth, so motion stays continuous.
    """
    src = assets_dir() / "video" / "video_01_ccby_multiface.mp4"
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    x, y, w, h = region
    clip = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        clip.append(cv2.resize(bgr[y:y + h, x:x + w], size, interpolation=cv2.INTER_CUBIC))
    cap.release()
    if not clip:
        raise FileNotFoundError(f"cannot read {src}")
    order = clip + clip[-2:0:-1]  # ping-pong
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        writer.write(order[i % len(order)])
    writer.release()
    return dst
