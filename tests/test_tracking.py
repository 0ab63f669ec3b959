"""Face tracking and segmentation with the real MediaPipe models on real photos and video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.one_euro import one_euro
from livecam.live.capture import open_reader, read_image
from models.face_landmarker import MediaPipeFaceTracker, detect_faces
from models.segmenter import MediaPipeSegmenter
from tests.conftest import asset, load_rgb

SINGLE_FACE = [
    "images/faces/obama_official_2012.jpg",
    "images/faces/obama_congress_2009.jpg",
    "images/faces/biden_official_portrait.jpg",
    "images/faces/meds-aa-S001-01-exif-rotation.jpg",
    *[f"images/identity/meds-aa-S001-0{i}.jpg" for i in range(1, 7)],
]


@pytest.mark.parametrize("photo", SINGLE_FACE)
def test_478_landmarks_on_each_single_face_photo(landmarker_path: Path, photo: str) -> None:
    image = load_rgb(photo)
    faces = detect_faces(landmarker_path, image)
    assert len(faces) == 1
    lm = faces[0]
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    h, w = image.shape[:2]
    assert lm[:, 0].min() >= 0 and lm[:, 0].max() <= w and lm[:, 1].min() >= 0 and lm[:, 1].max() <= h
    assert lm[10, 1] < lm[1, 1] < lm[152, 1]  # forehead above nose above chin: upright


def test_no_face_photo_gives_none(landmarker_path: Path) -> None:
    assert detect_faces(landmarker_path, load_rgb("images/no_face/lp-bmw.jpg")) == []


def test_two_people_give_two_faces(landmarker_path: Path) -> None:
    assert len(detect_faces(landmarker_path, load_rgb("images/multi_face/obama_biden_two_people.jpg"))) == 2


def test_exif_orientation_gives_the_same_landmarks(landmarker_path: Path) -> None:
    rotated = read_image(asset("images/faces/meds-aa-S001-01-exif-rotation.jpg"))
    upright = read_image(asset("images/identity/meds-aa-S001-01.jpg"))
    a = detect_faces(landmarker_path, rotated)[0]
    b = detect_faces(landmarker_path, upright)[0]
    assert np.abs(a[:, :2] - b[:, :2]).mean() < 3.0


def test_video_tracking_finds_the_face_in_every_frame(landmarker_path: Path, face_video: Path) -> None:
    reader = open_reader(str(face_video))
    found = 0
    with MediaPipeFaceTracker(landmarker_path) as tracker:
        for i in range(90):
            image = reader.read()
            assert image is not None
            # repeated and backwards timestamps are forced forward, never an error
            face = tracker.track(image, i * 33 if i != 5 else 0)
            found += face is not None
            if face is not None:
                assert face.landmarks.shape == (478, 3) and face.frame_size == (640, 480)
    reader.close()
    assert found == 90


def test_smoothing_steadies_a_still_face(landmarker_path: Path) -> None:
    """The same photo with pixel noise: smoothed landmarks jitter less frame to frame than raw ones."""
    image = load_rgb("images/identity/meds-aa-S001-01.jpg")
    jitter = {}
    for smoothing in (False, True):
        rng = np.random.default_rng(0)
        with MediaPipeFaceTracker(landmarker_path, smoothing=smoothing) as tracker:
            points = []
            for i in range(30):
                noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
                face = tracker.track(noisy, i * 33)
                assert face is not None
                points.append(face.landmarks[:, :2])
        track = np.array(points)
        jitter[smoothing] = float(np.abs(np.diff(track, n=2, axis=0)).mean())  # high-frequency motion
    assert jitter[True] < 0.5 * jitter[False]


def test_one_euro_follows_a_step_and_smooths_noise() -> None:
    rng = np.random.default_rng(1)
    state = None
    out = []
    for i in range(200):
        x = np.array([0.0 if i < 100 else 1.0]) + rng.normal(0, 0.01, 1)
        state, y = one_euro(state, x, i / 30, min_cutoff=1.0, beta=20.0)
        out.append(float(y[0]))
    assert np.std(out[50:100]) < 0.006  # noise of 0.01 smoothed at rest
    assert abs(out[115] - 1.0) < 0.05  # a fast step is followed within half a second


def test_segmenter_marks_the_person(segmenter_path: Path) -> None:
    image = load_rgb("images/faces/obama_official_2012.jpg")
    segmenter = MediaPipeSegmenter(segmenter_path)
    try:
        mask = segmenter.segment(image, 0)
        mask2 = segmenter.segment(image, 0)  # same timestamp again: forced forward
    finally:
        segmenter.close()
        segmenter.close()
    h, w = image.shape[:2]
    assert mask.shape == (h, w) and mask.dtype == np.float32 and mask2.shape == (h, w)
    assert mask[int(h * 0.35), w // 2] > 0.9  # the face
    assert mask[int(h * 0.05), int(w * 0.05)] < 0.2  # the backdrop in the top corner


def test_native_log_silencing_restores_stderr_across_threads() -> None:
    """Overlapping silenced blocks on two threads (tracker and segmenter start together) leave fd 2 as
    it was."""
    import os
    import threading

    from models.native_log import native_stderr_silenced

    before = os.fstat(2)
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with native_stderr_silenced():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(5)
    with native_stderr_silenced():
        release.set()
    t.join(5)
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)


def test_prediction_lands_near_the_next_tracked_face(landmarker_path: Path, face_video: Path) -> None:
    reader = open_reader(str(face_video))
    errors = []
    with MediaPipeFaceTracker(landmarker_path) as tracker:
        assert tracker.predict(0) is None  # nothing tracked yet
        for i in range(60):
            image = reader.read()
            assert image is not None
            predicted = tracker.predict(i * 33)
            face = tracker.track(image, i * 33)
            assert face is not None
            if predicted is not None:
                assert predicted.landmarks.shape == (478, 3) and predicted.frame_size == face.frame_size
                errors.append(np.abs(predicted.landmarks[:, :2] - face.landmarks[:, :2]).mean())
        assert tracker.track(np.zeros_like(image), 60 * 33) is None
        assert tracker.predict(61 * 33) is None  # a lost face is not predicted
    reader.close()
    assert len(errors) == 59
    assert np.mean(errors) < 4.0  # px, on a ~180 px face moving at 30 fps


def test_a_new_frame_size_starts_the_tracker_afresh(landmarker_path: Path) -> None:
    """Landmarks of a 480x600 photo are not smoothed into those of a 910x1137 one, and after `reset()` (the
    loop calls it when the size changes) nothing from the old frames is predicted."""
    small = load_rgb("images/identity/meds-aa-S001-01.jpg")
    large = load_rgb("images/faces/obama_official_2012.jpg")
    with MediaPipeFaceTracker(landmarker_path) as fresh:
        expected = fresh.track(large, 0)
    assert expected is not None
    with MediaPipeFaceTracker(landmarker_path) as tracker:
        for i in range(5):
            assert tracker.track(small, i * 33) is not None
        assert tracker.predict(5 * 33) is not None
        tracker.reset()
        assert tracker.predict(5 * 33) is None
        for i in range(5):
            assert tracker.track(small, (6 + i) * 33) is not None
        face = tracker.track(large, 12 * 33)  # no reset by the caller: the tracker notices the size itself
        assert face is not None and face.frame_size == (910, 1137)
        # as a fresh tracker finds it: MediaPipe detected the face anew instead of looking where it was
        assert np.abs(face.landmarks - expected.landmarks).max() < 0.01
        predicted = tracker.predict(13 * 33)
        assert predicted is not None and predicted.frame_size == (910, 1137)
