"""Calibration: the same-person threshold of an identity encoder, measured on the shared test photos.

Every photo of images/identity (MEDS-II subjects S001 x6, S006 x3, S008 x3) and images/faces (two photos
of person A, one of person B, and S001's first photo stored rotated with an EXIF orientation) is read the
way livecam reads a still (`read_image`, EXIF applied), its largest face found by MediaPipe, embedded, and
every pair compared by cosine. The EXIF photo against its upright twin is the same picture, so that pair
is reported on its own and kept out of the same-person figures.

The threshold is the midpoint of the gap between the highest different-person cosine and the lowest
same-person one, rounded to two decimals. Writes JSON with the machine, versions and every pair.

    python -m benchmarks.face_encoder_calibration [--backend reid|arcface] [--arcface PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.live_loop import machine
from engine.alignment import cosine
from engine.types import FaceEncoder
from livecam.live.stats import write_json
from livecam.photos import read_image
from models.face_encoder import load_face_encoder
from models.face_landmarker import detect_faces
from models.registry import ARCFACE_W600K, FACE_REID_BIN, FACE_REID_XML
from models.store import model_dir
from tests.media import assets_dir

EXIF_TWIN = ("faces/meds-aa-S001-01-exif-rotation.jpg", "identity/meds-aa-S001-01.jpg")


@dataclass(frozen=True)
class Photo:
    relative: str
    """Path under the assets' images/ folder."""
    person: str


def photos() -> list[Photo]:
    """The calibration set: every identity photo plus the single-face photos of images/faces."""
    found = [Photo(f"identity/meds-aa-{s}-0{i}.jpg", s) for s, n in (("S001", 6), ("S006", 3), ("S008", 3))
             for i in range(1, n + 1)]
    return [*found,
            Photo("faces/obama_official_2012.jpg", "A"),
            Photo("faces/obama_congress_2009.jpg", "A"),
            Photo("faces/biden_official_portrait.jpg", "B"),
            Photo(EXIF_TWIN[0], "S001")]


def shared_overrides() -> dict[str, str]:
    """The re-id model files in the shared assets, when they are there (else the model directory is used)."""
    folder = assets_dir() / "models/face_recognition/face-reidentification-retail-0095/FP16"
    paths = {FACE_REID_XML.name: folder / FACE_REID_XML.filename, FACE_REID_BIN.name: folder / FACE_REID_BIN.filename}
    return {k: str(v) for k, v in paths.items() if v.is_file()}


def embed_all(encoder: FaceEncoder, landmarker: Path) -> tuple[dict[str, npt.NDArray[np.float32]], list[float]]:
    """Embedding of each photo's largest face, and the time each `embed` call took (ms)."""
    images = assets_dir() / "images"
    embeddings: dict[str, npt.NDArray[np.float32]] = {}
    times_ms: list[float] = []
    for photo in photos():
        image = read_image(images / photo.relative)
        faces = detect_faces(landmarker, image, max_faces=1)
        if not faces:
            raise SystemExit(f"no face found in {photo.relative}")
        encoder.embed(image, faces[0])  # warm-up: the first inference allocates
        start = time.perf_counter()
        embeddings[photo.relative] = encoder.embed(image, faces[0])
        times_ms.append((time.perf_counter() - start) * 1000)
    return embeddings, times_ms


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4),
            "max": round(max(values), 4), "count": len(values)}


def calibrate(embeddings: dict[str, npt.NDArray[np.float32]]) -> dict[str, Any]:
    """Every pair's cosine, the same/different spreads, the gap and the threshold in its middle."""
    person = {p.relative: p.person for p in photos()}
    scored: list[tuple[str, str, str, float]] = []
    for a, b in itertools.combinations(embeddings, 2):
        kind = ("twin" if {a, b} == set(EXIF_TWIN) else "same" if person[a] == person[b] else "different")
        scored.append((a, b, kind, round(cosine(embeddings[a], embeddings[b]), 4)))
    pairs = [{"a": a, "b": b, "kind": kind, "cosine": value} for a, b, kind, value in scored]
    same = [value for _, _, kind, value in scored if kind == "same"]
    different = [value for _, _, kind, value in scored if kind == "different"]
    twin = next(value for _, _, kind, value in scored if kind == "twin")
    gap = min(same) - max(different)
    return {
        "same_person": spread(same),
        "different_person": spread(different),
        "exif_twin_cosine": twin,
        "gap": {"from": max(different), "to": min(same), "width": round(gap, 4)},
        "separable": gap > 0,
        "threshold_midpoint": round((min(same) + max(different)) / 2, 2),
        "pairs": pairs,
    }


def _versions(backend: str) -> dict[str, str]:
    names = ["numpy", "opencv-contrib-python", "mediapipe", "openvino" if backend == "reid" else "onnxruntime-gpu"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=("reid", "arcface"), default="reid")
    parser.add_argument("--arcface", default="", help="path to w600k_r50.onnx (default: insightface's cache)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default: benchmarks/results/face_encoder_calibration[_arcface].json)")
    args = parser.parse_args()
    out = args.out or Path("benchmarks/results") / (
        "face_encoder_calibration.json" if args.backend == "reid" else "face_encoder_calibration_arcface.json")
    overrides = {**shared_overrides(), ARCFACE_W600K.name: args.arcface}
    landmarker = assets_dir() / "models/face_landmarker/face_landmarker.task"
    encoder = load_face_encoder(args.backend, model_dir(), overrides, download=True)
    try:
        embeddings, times_ms = embed_all(encoder, landmarker)
        threshold = encoder.threshold
    finally:
        encoder.close()
    result = calibrate(embeddings)
    data = {
        "benchmark": "face_encoder_calibration",
        "encoder": args.backend,
        "machine": machine(),
        "versions": _versions(args.backend),
        "landmarks": "MediaPipe FaceLandmarker (IMAGE mode), largest face; five points from the mesh",
        "photos": [{"file": p.relative, "person": p.person} for p in photos()],
        "embed_ms": {"median": round(statistics.median(times_ms), 2), "max": round(max(times_ms), 2)},
        "encoder_threshold": threshold,
        **result,
    }
    write_json(out, data)

    print(f"{args.backend}: {len(embeddings)} photos, {len(result['pairs'])} pairs, "
          f"embed {data['embed_ms']['median']} ms (median, one face)")
    print(f"{'pairs':<18}{'count':>6}{'min':>9}{'median':>9}{'max':>9}")
    for label, key in (("same person", "same_person"), ("different people", "different_person")):
        s = result[key]
        print(f"{label:<18}{s['count']:>6}{s['min']:>9.3f}{s['median']:>9.3f}{s['max']:>9.3f}")
    gap = result["gap"]
    print(f"gap {gap['from']:.3f} .. {gap['to']:.3f} (width {gap['width']:.3f}); "
          f"midpoint {result['threshold_midpoint']}; encoder threshold {threshold}; "
          f"EXIF twin {result['exif_twin_cosine']:.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
