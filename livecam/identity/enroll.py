"""`livecam enroll`: selfies in, an identity out (checked photos, aligned crops, a trained LoRA, metadata).

Every photo is checked before anything is trained or written, and each rejected photo gets its reason.
The identity is built in a hidden staging folder and renamed into place only when it is complete; a
failed enrolment removes the staging folder. An interrupted training (Ctrl-C) keeps it, with its
checkpoints, so that `--resume` can continue; `--resume` never removes it, and refuses at once when the
photos, the base model or a training setting differ from what the interrupted enrolment started with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from engine import framing as fr
from engine import quality
from engine.alignment import centroid, cosine
from engine.types import FaceEncoder, Landmarks, RGBImage
from livecam.config import Config, EnrollSettings
from livecam.errors import LivecamError
from livecam.identity.store import LORA_FILE, METADATA_FILE, Identity, identity_dir, load_identity, staging_dir
from livecam.photos import PhotoError, read_image
from models.face_detector import DetectedFace
from models.training_settings import TrainingSettings

log = logging.getLogger("livecam")

MANIFEST_FILE = "enrolment.json"
"""In an interrupted enrolment's staging folder: what it was started with, for `--resume` to compare."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic")


@dataclass
class PhotoReport:
    """One photo's check: `reason` is None when it is usable."""

    path: Path
    reason: str | None = None
    sha256: str = ""
    image: RGBImage | None = field(default=None, repr=False)
    landmarks: Landmarks | None = field(default=None, repr=False)
    embedding: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    fingerprint: int = 0
    similarity: float | None = None
    """Cosine to the centroid of the other usable photos (the same-person check)."""

    @property
    def ok(self) -> bool:
        return self.reason is None


def expand_photos(inputs: Sequence[str]) -> list[Path]:
    """Files as given; a folder stands for the image files in it (name order)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(path)
    return paths


def check_photo(path: Path, settings: EnrollSettings, detect_faces: Callable[[RGBImage], list[Landmarks]],
                count_faces: Callable[[RGBImage], list[DetectedFace]], encoder: FaceEncoder) -> PhotoReport:
    """Every check that needs only this photo, in the order a user would fix them."""
    report = PhotoReport(path)
    if not path.is_file():
        report.reason = "no such file"
        return report
    try:
        data = path.read_bytes()
    except OSError as e:
        report.reason = f"cannot be read ({e.strerror or e})"
        return report
    report.sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = read_image(path)
    except PhotoError as e:  # not an image, or cut short or damaged: unusable, with the reason
        report.reason = e.reason
        return report
    height, width = image.shape[:2]
    if min(width, height) < settings.min_image_px:
        report.reason = f"too small ({width}x{height}; at least {settings.min_image_px} px on the short side)"
        return report
    detected = count_faces(image)
    if detected:
        largest = detected[0].box[3]
        people = [f for f in detected if f.box[3] >= 0.3 * largest]
        if len(people) > 1:
            report.reason = (f"{len(people)} faces (the largest {largest:.0f} px tall): use photos with only you "
                             "in them")
            return report
    faces = detect_faces(image)
    if not faces:
        report.reason = ("face too small to use (move closer)" if detected else "no face found")
        return report
    landmarks = faces[0]
    face_px = fr.face_height_px(landmarks)
    if face_px < settings.min_face_px:
        report.reason = f"face too small ({face_px:.0f} px from forehead to chin; at least {settings.min_face_px})"
        return report
    if quality.cut_off(landmarks, (width, height)):
        report.reason = "face cut off by the edge of the photo"
        return report
    crop = quality.face_crop(image, landmarks)
    # Exposure first: a dark photo also measures as blurred (less contrast), but darkness is its problem.
    luma, dark, bright = quality.exposure(crop)
    if luma < settings.min_brightness or dark > 0.5:
        report.reason = f"too dark (face brightness {luma:.2f}; at least {settings.min_brightness:.2f})"
        return report
    if luma > settings.max_brightness or bright > 0.35:
        report.reason = f"too bright or blown out (face brightness {luma:.2f}, {bright:.0%} blown out)"
        return report
    sharp = quality.sharpness(crop)
    if sharp < settings.min_sharpness:
        report.reason = f"too blurry (sharpness {sharp:.0f}; at least {settings.min_sharpness:.0f})"
        return report
    report.image, report.landmarks = image, landmarks
    report.fingerprint = quality.dhash(crop)
    report.embedding = encoder.embed(image, landmarks)
    return report


def check_set(reports: list[PhotoReport], settings: EnrollSettings, threshold: float) -> None:
    """The checks across photos, in place: near duplicates, then a different person from the rest."""
    usable = [r for r in reports if r.ok]
    for i, report in enumerate(usable):
        for earlier in usable[:i]:
            if earlier.ok and (report.sha256 == earlier.sha256
                               or quality.hamming(report.fingerprint, earlier.fingerprint) <= settings.duplicate_bits):
                report.reason = f"a near duplicate of {earlier.path.name}"
                break
    usable = [r for r in reports if r.ok]
    if len(usable) < 3:
        return  # too few to tell who the person is; the count check says what to do
    embeddings = np.stack([r.embedding for r in usable if r.embedding is not None])
    # The person is the largest group of mutually matching photos: the photo that matches the most others
    # anchors it (a plain centroid of everything is dragged toward the intruders when there are several).
    pairs = embeddings @ embeddings.T
    matches = (pairs >= threshold).sum(axis=1)
    anchor = int(np.lexsort((pairs.mean(axis=1), matches))[-1])
    core = np.flatnonzero(pairs[anchor] >= threshold)
    for i, report in enumerate(usable):
        others = core[core != i]
        report.similarity = cosine(embeddings[i], centroid(embeddings[others])) if len(others) else None
    odd = [r for r in usable if r.similarity is None or r.similarity < threshold]
    rival = max((int(matches[i]) for i in range(len(usable)) if i not in core), default=0)
    if len(core) * 2 < len(usable) or rival >= len(core):  # no majority, or two people equally often
        for report in usable:
            report.reason = (f"no one person is in most of the photos ({len(core)} of {len(usable)} match each "
                             f"other at the same-person threshold {threshold:.2f}): use photos of only you")
        return
    for report in odd:
        similarity = "" if report.similarity is None else f"similarity {report.similarity:.2f}, "
        report.reason = (f"a different person from the rest ({similarity}below the same-person threshold "
                         f"{threshold:.2f})")


def summary_table(reports: list[PhotoReport]) -> str:
    lines = []
    for r in reports:
        mark = "ok " if r.ok else "-- "
        extra = f" (similarity to the rest {r.similarity:.2f})" if r.ok and r.similarity is not None else ""
        lines.append(f"  {mark}{r.path.name}: {'usable' if r.ok else r.reason}{extra}")
    return "\n".join(lines)


def require_enough(reports: list[PhotoReport], settings: EnrollSettings) -> list[PhotoReport]:
    """The usable photos; LivecamError listing what to retake when there are too few."""
    usable = [r for r in reports if r.ok]
    if len(usable) >= settings.min_photos:
        if settings.min_photos < 8:
            log.warning("enroll.min_photos = %d: fewer than 8 photos usually gives a weaker likeness",
                        settings.min_photos)
        return usable
    rejected = [r for r in reports if not r.ok]
    retake = "; ".join(f"{r.path.name}: {r.reason}" for r in rejected) or "none rejected"
    raise LivecamError(f"only {len(usable)} usable photo(s) of the {settings.min_photos} needed "
                       f"(enroll.min_photos). Retake or replace: {retake}")


def training_crop(image: RGBImage, landmarks: Landmarks, resolution: int) -> RGBImage:
    """A head-and-shoulders square at `resolution`, framed from the landmarks like the live engine's crop."""
    size = (resolution, resolution)
    framing = fr.FramingSettings(face_height=0.34, eye_line=0.40, max_zoom=8.0)
    box = fr.target_box(landmarks, (image.shape[1], image.shape[0]), size, framing)
    return fr.warp(image, fr.box_to_affine(box, size), size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class EnrollResult:
    identity: Identity
    reports: list[PhotoReport]
    seconds: float
    final_loss: float


def enroll(photos: Sequence[str], name: str, config: Config, resume: bool = False,
           progress: bool = True) -> EnrollResult:
    """Check `photos`, build the dataset, train the LoRA, write identity `name`. Raises LivecamError."""
    from livecam.identity.store import check_name

    check_name(name)
    settings = config.enroll
    final = identity_dir(name)
    staging = staging_dir(name)
    if final.exists():
        raise LivecamError(f"identity {name!r} already exists ({final}); pick another --name, or delete it first "
                           f"with `livecam identities --delete {name}`")
    if resume and not staging.is_dir():
        raise LivecamError(f"--resume: there is no interrupted enrolment of {name!r} to continue ({staging})")
    if not resume and staging.exists():
        raise LivecamError(f"an interrupted enrolment of {name!r} is waiting in {staging}: continue it with "
                           "--resume, or delete it with `livecam identities --delete " + name + "`")
    paths = expand_photos(photos)
    if not paths:
        raise LivecamError("no photos given: pass the selfie files (or a folder of them)")
    start = time.perf_counter()
    reports, encoder = _check_all(paths, config)
    print(f"checked {len(reports)} photo(s) with the {encoder.name} face encoder:\n{summary_table(reports)}")
    usable = require_enough(reports, settings)
    if resume:
        check_resumable(staging, name, usable, config)

    components, base_name = _load_base(config)
    from models.lora_data import training_resolution
    from models.lora_training import train_identity_lora

    try:
        resolution = training_resolution(components, settings)
    except ValueError as e:
        raise LivecamError(f"enroll.{e}") from None
    caption = f"a photo of {settings.trigger} {settings.class_word}"
    examples = [(training_crop(r.image, r.landmarks, resolution), caption) for r in usable
                if r.image is not None and r.landmarks is not None]
    written = False
    try:
        _write_inputs(staging, usable, examples, config)
        written = True
        try:
            result = train_identity_lora(components, examples, settings, staging, resume=resume, progress=progress)
        except ValueError as e:  # settings training refuses, or a checkpoint it cannot continue
            if resume:
                raise LivecamError(f"--resume: the interrupted enrolment of {name!r} cannot be continued ({e}); "
                                   f"it is kept in {staging}") from None
            raise LivecamError(f"enroll.{e}") from None
        embeddings = np.stack([r.embedding for r in usable if r.embedding is not None])
        metadata: dict[str, Any] = {
            "name": name, "trigger": settings.trigger, "class_word": settings.class_word, "caption": caption,
            "base_model": base_name, "base_revision": _revision(config.models.base),
            "rank": settings.rank, "steps": result.steps, "resolution": resolution,
            "training": asdict(settings), "final_loss": result.final_loss,
            "photos": [{"file": r.path.name, "sha256": r.sha256, "similarity": r.similarity} for r in usable],
            "encoder": encoder.name, "threshold": encoder.threshold,
            "centroid": [round(float(v), 6) for v in centroid(embeddings)],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "lora": LORA_FILE,
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(staging / "checkpoints", ignore_errors=True)
        (staging / MANIFEST_FILE).unlink(missing_ok=True)  # identity.json says it all from here on
        staging.rename(final)
    except KeyboardInterrupt:
        if written:
            log.info("enrolment interrupted: continue it with `livecam enroll ... --name %s --resume`", name)
        raise
    except BaseException:
        # --resume never deletes what it was asked to continue: its checkpoints stay for another try.
        if not resume:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        encoder.close()
    return EnrollResult(load_identity(name), reports, time.perf_counter() - start, result.final_loss)


def check_resumable(staging: Path, name: str, usable: list[PhotoReport], config: Config) -> None:
    """LivecamError (and nothing touched) when the interrupted enrolment in `staging` was started with other
    photos, another base model or other training settings than these, or has done more steps than asked for:
    it could not be continued, and training would fail only after the base model is loaded."""
    from models.lora_checkpoints import RESUMABLE_CHANGES, latest_checkpoint

    def refuse(what: str, to_continue: str = "rerun with the same photos and settings") -> LivecamError:
        return LivecamError(f"--resume: {what}; {to_continue} to continue it, or enrol under another --name "
                            f"without --resume, or delete it first with `livecam identities --delete {name}`")

    manifest = _read_json(staging / MANIFEST_FILE)
    now = [(r.path.name, r.sha256) for r in usable]
    listed = manifest.get("photos")
    if isinstance(listed, list):
        before = [(str(p.get("file")), str(p.get("sha256"))) for p in listed if isinstance(p, dict)]
    elif (staging / "photos").is_dir():  # an enrolment without a manifest: its copies of the photos (no order)
        before = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (staging / "photos").iterdir())
        now = sorted(now)
    else:
        before = now
    if before != now:
        old, new = dict(before), dict(now)
        changed = [f"{n} is another file" for n in sorted(new.keys() & old.keys()) if new[n] != old[n]]
        changed += [f"{n} is new" for n in sorted(new.keys() - old.keys())]
        changed += [f"{n} is not among them now" for n in sorted(old.keys() - new.keys())]
        if not changed:  # training sees the photos in the order given
            raise refuse(f"the photos are given in another order than the interrupted enrolment of {name!r} had",
                         f"give them in that order ({', '.join(n for n, _ in before)})")
        raise refuse(f"the usable photos are not the ones the interrupted enrolment of {name!r} was started with "
                     f"({'; '.join(changed)})")
    base = manifest.get("base_model")
    if base is not None and base != config.models.base:
        raise refuse(f"models.base changed ({base!r} -> {config.models.base!r}) since the interrupted enrolment "
                     f"of {name!r} started")
    checkpoint = latest_checkpoint(staging)
    state = _read_json(checkpoint[1] / "state.json") if checkpoint is not None else {}
    saved = manifest.get("training", state.get("settings"))
    if isinstance(saved, dict):
        current = {f.name: getattr(config.enroll, f.name) for f in fields(TrainingSettings)}
        changed = [f"enroll.{k} ({saved[k]!r} -> {v!r})" for k, v in current.items()
                   if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v]
        if changed:
            raise refuse(f"{', '.join(changed)} changed since the interrupted enrolment of {name!r} started")
    if checkpoint is not None and checkpoint[0] > config.enroll.steps:
        raise refuse(f"enroll.steps = {config.enroll.steps} is fewer than the {checkpoint[0]} steps the interrupted "
                     f"enrolment of {name!r} has done", f"rerun with at least enroll.steps={checkpoint[0]}")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; empty when the file is missing or damaged (then there is nothing to compare)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _check_all(paths: list[Path], config: Config) -> tuple[list[PhotoReport], FaceEncoder]:
    from livecam.assembly import face_encoder, resolve_model
    from models.face_detector import YuNetDetector
    from models.face_landmarker import detect_faces
    from models.registry import FACE_DETECTOR, FACE_LANDMARKER

    landmarker = resolve_model(config, FACE_LANDMARKER)
    detector = YuNetDetector(resolve_model(config, FACE_DETECTOR))
    encoder = face_encoder(config)
    reports = [check_photo(p, config.enroll, lambda image: detect_faces(landmarker, image, max_faces=2),
                           detector.detect, encoder) for p in paths]
    check_set(reports, config.enroll, encoder.threshold)
    return reports, encoder


def _load_base(config: Config) -> tuple[Any, str]:
    from livecam.assembly import diffusion_components

    # The base's own VAE: its latent space is the UNet's, and it comes with the base (nothing else to get).
    components = diffusion_components(config, controlnet="", tiny_vae="", vae="", download=config.models.download,
                                      load_full_vae=True)
    return components, components.names.get("base", config.models.base)


def _revision(spec: str) -> str:
    from models.registry import HUB_MODELS

    model = HUB_MODELS.get(spec)
    return model.revision if model is not None else "local"


def _write_inputs(staging: Path, usable: list[PhotoReport], examples: list[tuple[RGBImage, str]],
                  config: Config) -> None:
    """The accepted selfies as given, the training crops with their captions, and last the manifest that
    `--resume` compares against (the photos, the base model, the training settings)."""
    (staging / "photos").mkdir(parents=True, exist_ok=True)
    (staging / "dataset").mkdir(parents=True, exist_ok=True)
    for report in usable:
        shutil.copy2(report.path, staging / "photos" / report.path.name)
    captions = {}
    for i, (crop, caption) in enumerate(examples):
        file = f"{i:03d}.png"
        cv2.imwrite(str(staging / "dataset" / file), crop[:, :, ::-1])
        captions[file] = caption
    (staging / "dataset" / "captions.json").write_text(json.dumps(captions, indent=2) + "\n", encoding="utf-8")
    manifest = {"photos": [{"file": r.path.name, "sha256": r.sha256} for r in usable], "base_model": config.models.base,
                "training": {f.name: getattr(config.enroll, f.name) for f in fields(TrainingSettings)}}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
