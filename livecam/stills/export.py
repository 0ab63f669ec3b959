"""`livecam still`: professional headshots from a photo (or the camera's frame), kept only when they pass the
quality gate, cropped for each platform and labelled as AI-made.

One run, start to finish:

1. The photo is read and checked: exactly one person-sized face (YuNet counts faces, MediaPipe finds the
   landmarks), and with `--identity`, that it is that person (face encoder against the enrolled centroid).
2. Per style, the studio engine frames the photo as a head-and-shoulders square with the style's backdrop and
   relighting. The diffusion engine re-renders that square at the base model's full resolution (full VAE, the
   pose ControlNet from the photo's landmarks, the identity LoRA), one candidate per recorded seed; without
   one, the studio engine's square itself is the still, at the photo's own resolution, in lighting variants.
3. Every candidate goes through the quality gate (`engine/gate.py`): a reject is made again with the next seed,
   up to `still.max_retries` times per variant, and the report says why each was rejected.
4. Each kept image is cropped for every platform (`engine/crops.py`), never enlarged past `still.max_upscale`
   without saying so, and written with the disclosure (`livecam/stills/provenance.py`), optionally C2PA-signed.
5. `report.json` and `contact-sheet.jpg` complete the run folder.

The run is built in a hidden staging folder beside the output and renamed into place only when complete: an
error or Ctrl-C leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

import livecam
from engine import background as bgmod
from engine import framing as fr
from engine import quality
from engine.alignment import cosine
from engine.crops import PlatformSpec, cut, plan_crop
from engine.gate import Assessment, GateSettings, assess
from engine.pose import draw_pose
from engine.studio import StudioRenderer
from engine.styles import StylePreset
from engine.types import Landmarks, RGBImage
from livecam.assembly import background_picture, open_workbench, prompt_subject, style_background
from livecam.config import Config, StillSettings
from livecam.errors import LivecamError
from livecam.identity.store import Identity, load_identity
from livecam.photos import read_image
from livecam.stills.provenance import COMPOSITE, GENERATED, Disclosure, sign_c2pa, write_image
from livecam.stills.workbench import Workbench

if TYPE_CHECKING:
    pass

log = logging.getLogger("livecam")

REPORT_FILE = "report.json"
CONTACT_SHEET = "contact-sheet"
# Studio-engine variants: the key light from either side at a few strengths (the photo itself does not change).
_STUDIO_LIGHTS = (("left", 1.0), ("right", 1.0), ("left", 1.5), ("right", 1.5), ("left", 0.6), ("right", 0.6))

ExtraCheck = Callable[[dict[str, Any]], str | None]
"""An additional gate check: the candidate's report entry in, a reject reason (or None) out."""


@dataclass(frozen=True)
class StillRequest:
    """What one run is asked to make."""

    photo: Path | None
    """The photo; None: a frame from the camera (`input.source`)."""
    styles: tuple[str, ...] = ("corporate",)
    identity: str = ""
    """An enrolled identity's name; empty: likeness is measured against the photo's own face."""
    variants: int | None = None
    """Kept images wanted per style; None: `still.variants`."""
    platforms: tuple[str, ...] | None = None
    """Platform crops; None: `still.platforms`."""
    out: Path = Path("headshots")
    name: str = ""
    """The run folder's name inside `out`; empty: the photo's name and the time."""
    attire: str = ""
    lighting: str = ""
    background: str = ""
    """Axis overrides: a style's name (take that axis from it) or a description."""
    seed: int | None = None
    """First seed; None: `still.seed`."""
    frame: RGBImage | None = field(default=None, repr=False, compare=False)
    """A frame already in memory (the live camera's current frame), used instead of `photo`."""
    brand: str = ""
    """A style whose background (description, brand colour, picture) every style takes: a team's shared look."""


@dataclass
class StillRun:
    folder: Path
    report: dict[str, Any]

    @property
    def kept(self) -> int:
        return int(self.report["summary"]["kept"])

    @property
    def tried(self) -> int:
        return int(self.report["summary"]["tried"])


@dataclass
class Subject:
    """The photo and who is in it."""

    image: RGBImage
    landmarks: Landmarks
    reference: npt.NDArray[np.float32]
    """The embedding likeness is measured against (the identity's centroid, or the photo's face)."""
    reference_kind: str
    source: dict[str, Any]


# --- the subject -----------------------------------------------------------------------------------------------

def count_people(bench: Workbench, image: RGBImage) -> int:
    """Person-sized faces: YuNet's faces at least 30% of the largest one's height (a face on a poster or far in
    the background does not count)."""
    detected = bench.detector.detect(image)
    if not detected:
        return 0
    largest = detected[0].box[3]
    return sum(1 for f in detected if f.box[3] >= 0.3 * largest)


def load_subject(bench: Workbench, image: RGBImage, what: str, identity: Identity | None) -> Subject:
    """Check the photo (`what` names it in errors): one face, big enough, and the identity's when one is given."""
    people = count_people(bench, image)
    faces = bench.landmarker.detect(image)
    if people > 1 or (len(faces) > 1 and fr.face_height_px(faces[1]) >= 0.3 * fr.face_height_px(faces[0])):
        raise LivecamError(f"{what}: {max(people, len(faces))} faces; use a photo with only you in it")
    if not faces:
        raise LivecamError(f"{what}: no face found; use a photo of your face, looking at the camera")
    landmarks = faces[0]
    face_px = fr.face_height_px(landmarks)
    if face_px < 64:
        raise LivecamError(f"{what}: the face is too small ({face_px:.0f} px from forehead to chin; at least 64)")
    if identity is not None:
        backend = str(identity.metadata.get("encoder", bench.config.models.face_encoder))
        encoder = bench.encoder(backend)
        if "centroid" not in identity.metadata:
            raise LivecamError(f"identity {identity.name!r} has no face centroid; enrol it again")
        reference = np.asarray(identity.metadata["centroid"], dtype=np.float32)
        score = cosine(encoder.embed(image, landmarks), reference)
        if score < encoder.threshold:
            raise LivecamError(f"{what} does not look like identity {identity.name!r} (likeness {score:.2f}, "
                               f"same-person threshold {encoder.threshold:.2f}): use a photo of {identity.name}")
        kind = f"identity {identity.name} (centroid of its enrolment photos)"
    else:
        reference = bench.encoder(bench.config.models.face_encoder).embed(image, landmarks)
        kind = "the face in the photo"
    return Subject(image, landmarks, reference, kind, {})


def read_photo(path: Path) -> tuple[RGBImage, dict[str, Any]]:
    """The photo (EXIF orientation applied) and its source entry for the report; LivecamError naming the file
    when it is a folder, missing, unreadable, not an image, or truncated or damaged."""
    if path.is_dir():
        raise LivecamError(f"photo {path}: is a folder; still takes one photo (for several people, --batch CSV)")
    if not path.is_file():
        raise LivecamError(f"photo {path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LivecamError(f"photo {path} cannot be read ({e.strerror or e})") from None
    image = read_image(path)
    return image, {"file": str(path), "sha256": hashlib.sha256(data).hexdigest(), "size": list(image.shape[1::-1])}


def grab_frame(bench: Workbench, config: Config, frames: int = 30) -> tuple[RGBImage, dict[str, Any]]:
    """The camera's (`input.source`) sharpest frame with exactly one face among its first `frames` (the
    first ones are skipped while the camera settles its exposure)."""
    from livecam.live.capture import open_reader

    c = config.input
    reader = open_reader(c.source, width=c.width, height=c.height, fps=c.fps, loop=False, reconnect_s=0)
    best: tuple[float, RGBImage] | None = None
    try:
        for index in range(frames):
            image = reader.read()
            if image is None:
                break
            if index < min(5, frames // 3):
                continue
            faces = bench.landmarker.detect(image)
            if len(faces) == 1:
                sharp = quality.sharpness(quality.face_crop(image, faces[0]))
                if best is None or sharp > best[0]:
                    best = (sharp, image)
    finally:
        reader.close()
    if best is None:
        raise LivecamError(f"no frame from the camera ({c.source}) showed exactly one face; look at the camera "
                           "and try again, or pass a photo")
    return best[1], {"file": None, "camera": c.source, "size": list(best[1].shape[1::-1])}


# --- rendering -------------------------------------------------------------------------------------------------

def resolve_style(config: Config, name: str, attire: str = "", lighting: str = "", background: str = "",
                  brand: str = "") -> StylePreset:
    """Style `name` with axis overrides, each a style's name (take that axis from it) or a description, and
    the background of the `brand` style."""
    for style in (name, brand):
        if style and style not in config.styles:
            raise LivecamError(f"unknown style {style!r}; styles: {', '.join(config.styles)} (livecam styles)")
    if brand:
        b = config.styles[brand]
        base = dataclasses.replace(config.styles[name], background=b.background, color=b.color,
                                   background_image=b.background_image)
        return base.with_axes(_axis(config, attire, "attire"), _axis(config, lighting, "lighting"))

    return config.styles[name].with_axes(_axis(config, attire, "attire"), _axis(config, lighting, "lighting"),
                                         _axis(config, background, "background"))


def _axis(config: Config, value: str, key: str) -> str | None:
    if not value:
        return None
    return str(getattr(config.styles[value], key)) if value in config.styles else value


def _backdrop(config: Config, style: StylePreset) -> tuple[bgmod.BackgroundSettings, RGBImage | None]:
    """The studio background settings for `style`: its brand picture or colour, else [background]."""
    bg = config.background
    if style.background_image:
        path = Path(style.background_image).expanduser()
        if not path.is_file():
            raise LivecamError(f"style background_image {style.background_image!r}: no such file")
        return dataclasses.replace(bg, enabled=True, mode="image"), read_image(path)
    if style.color:
        return dataclasses.replace(bg, enabled=True, mode="color", color=style.color), None
    return style_background(bg, style), background_picture(bg)


def studio_square(bench: Workbench, config: Config, subject: Subject, style: StylePreset, side: int | None,
                  light: tuple[str, float] | None = None, whole: bool = False
                  ) -> tuple[RGBImage, Landmarks, npt.NDArray[np.float64]]:
    """The photo framed as a head-and-shoulders square with the style's backdrop, relit: (square, landmarks in
    it, affine photo -> square). `side`: its size; None: the photo's own resolution (up to `still.max_size`).
    `whole`: the whole photo edited the same way instead of a square (at most `still.max_size` on its long
    side), which gives the platform crops every pixel and all the room the photo has."""
    s = config.still
    image = subject.image
    frame_size = (image.shape[1], image.shape[0])
    framing = dataclasses.replace(config.framing, enabled=not whole, face_height=s.face_height,
                                  eye_line=s.eye_line, follow_s=0.0, max_zoom=8.0)
    size: tuple[int, int]
    if whole:
        scale = min(1.0, s.max_size / max(frame_size))
        size = (max(16, round(frame_size[0] * scale)), max(16, round(frame_size[1] * scale)))
    else:
        if side is None:  # the box at 1:1 scale, so that no photo pixel is enlarged
            box = fr.target_box(subject.landmarks, frame_size, (1, 1), framing)
            side = max(64, min(int(box.height), s.max_size))
        size = (side, side)
    background, picture = _backdrop(config, style)
    relight = config.relight
    if light is not None:
        relight = dataclasses.replace(relight, enabled=True, key_light=light[0],
                                      key_strength=min(1.0, relight.key_strength * light[1]))
    studio = StudioRenderer(size, framing, background, dataclasses.replace(relight, adapt_s=0.0),
                            config.skin, background_image=picture)
    studio.prepare()
    mask = bench.segmenter.segment(image, 0) if studio.needs_mask else None
    from engine.types import Face

    square = studio.render(image, Face(subject.landmarks, frame_size), mask, 0)
    assert studio.last_box is not None
    affine = fr.box_to_affine(studio.last_box, size)
    landmarks = subject.landmarks.copy()
    landmarks[:, :2] = fr.transform_points(subject.landmarks[:, :2], affine)
    studio.close()
    return square, landmarks, affine


def _brand_backdrop(bench: Workbench, config: Config, image: RGBImage, style: StylePreset) -> RGBImage:
    """The style's exact brand colour or picture put back behind the person of a generated image (the model
    only approximates it)."""
    background, picture = _backdrop(config, style)
    size = (image.shape[1], image.shape[0])
    backdrop = bgmod.cover_resize(picture, size) if picture is not None else bgmod.solid(size, background.color)
    mask = bench.segmenter.segment(image, 0)
    alpha = bgmod.alpha_u8(bgmod.refine_mask(mask, background.feather_px, None, 0.0))
    return bgmod.composite(image, backdrop, alpha)


def measure(bench: Workbench, image: RGBImage, subject: Subject, settings: GateSettings) -> tuple[Assessment,
                                                                                             Landmarks | None]:
    """The quality gate on one candidate; also returns the landmarks found in it (for the crops)."""
    faces = bench.landmarker.detect(image)
    landmarks = faces[0] if faces else None
    large = [f for f in faces if landmarks is not None and fr.face_height_px(f) >= 0.3 * fr.face_height_px(landmarks)]
    people = max(count_people(bench, image), len(large))
    encoder = bench.encoder(_reference_backend(bench, subject))
    score = cosine(encoder.embed(image, landmarks), subject.reference) if landmarks is not None else None
    return assess(image, people, landmarks, score, encoder.threshold, settings), landmarks


def _reference_backend(bench: Workbench, subject: Subject) -> str:
    return str(subject.source.get("encoder", bench.config.models.face_encoder))


# --- files -----------------------------------------------------------------------------------------------------

def contact_sheet(entries: Sequence[tuple[RGBImage, str, str]], thumb: int = 320) -> RGBImage:
    """Thumbnails with two caption lines each, four to a row, on white."""
    columns = max(1, min(4, len(entries)))
    rows = max(1, -(-len(entries) // columns))
    pad, caption = 12, 44
    sheet = np.full((pad + rows * (thumb + caption + pad), pad + columns * (thumb + pad), 3), 255, np.uint8)
    for i, (image, line1, line2) in enumerate(entries):
        r, c = divmod(i, columns)
        x, y = pad + c * (thumb + pad), pad + r * (thumb + caption + pad)
        h, w = image.shape[:2]
        scale = thumb / max(h, w)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        sheet[y:y + small.shape[0], x:x + small.shape[1]] = small
        for k, text in enumerate((line1, line2)):
            cv2.putText(sheet, text, (x + 2, y + thumb + 18 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (30, 30, 30), 1,
                        cv2.LINE_AA)
    if not entries:
        cv2.putText(sheet, "no image passed the quality gate", (pad, pad + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (30, 30, 30), 1, cv2.LINE_AA)
    return sheet


class _Writer:
    """Writes a run's files into the staging folder, remembering them for the report and for signing."""

    def __init__(self, folder: Path, settings: StillSettings) -> None:
        self.folder = folder
        self.settings = settings
        self.files: list[tuple[str, Disclosure]] = []
        self.ext = ".jpg" if settings.format == "jpeg" else ".png"

    def image(self, stem: str, image: RGBImage, disclosure: Disclosure, dpi: int = 0) -> str:
        name = stem + self.ext
        try:
            write_image(self.folder / name, image, disclosure, quality=self.settings.jpeg_quality, dpi=dpi or None)
        except OSError as e:
            raise LivecamError(f"cannot write {self.folder / name}: {e.strerror or e}") from None
        self.files.append((name, disclosure))
        return name

    def sign(self) -> None:
        s = self.settings
        if not s.c2pa_cert:
            return
        for name, disclosure in self.files:
            sign_c2pa(self.folder / name, disclosure, Path(s.c2pa_cert).expanduser(), Path(s.c2pa_key).expanduser(),
                      tsa_url=s.c2pa_tsa_url)


def check_output(out: Path) -> None:
    """`out` created if needed and known to take files (a file is written and removed): LivecamError naming it
    otherwise, before any work is done for it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LivecamError(f"cannot create the output directory {out}: {e.strerror or e}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".livecam-write-test-", dir=out)
    except OSError as e:
        raise LivecamError(f"cannot write to the output directory {out}: {e.strerror or e}") from None
    os.close(fd)
    with contextlib.suppress(OSError):  # a folder that takes a file but refuses its removal is still usable
        os.unlink(probe)


def _staging(out: Path, name: str) -> tuple[Path, Path]:
    """(staging folder, final folder) for run `name` in `out`; LivecamError when `out` cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LivecamError(f"cannot create the output directory {out}: {e.strerror or e}") from None
    final = out / name
    n = 2
    while final.exists():
        final = out / f"{name}-{n}"
        n += 1
    staging = out / f".{final.name}.partial"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    except OSError as e:
        raise LivecamError(f"cannot write to the output directory {out}: {e.strerror or e}") from None
    return staging, final


def _run_name(request: StillRequest, source: dict[str, Any]) -> str:
    if request.name:
        if "/" in request.name or request.name.startswith("."):
            raise LivecamError(f"run name {request.name!r}: a plain folder name, not a path")
        return request.name
    stem = Path(source["file"]).stem if source.get("file") else "live" if source.get("live") else "camera"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


# --- the run ---------------------------------------------------------------------------------------------------

def normalised(request: StillRequest) -> StillRequest:
    """`request` with each style and platform once (the first mention keeps its place): a style named twice
    would be made twice under one file name, and a list is bounded by the styles and platforms that exist."""
    platforms = tuple(dict.fromkeys(request.platforms)) if request.platforms is not None else None
    return dataclasses.replace(request, styles=tuple(dict.fromkeys(request.styles)), platforms=platforms)


def check_request(config: Config, request: StillRequest) -> tuple[list[StylePreset], list[tuple[str, PlatformSpec]]]:
    """Styles and platforms resolved, or LivecamError naming the unknown one (before anything is loaded).
    `request` must be `normalised`."""
    if not request.styles:
        raise LivecamError("no style given: --styles corporate,healthcare,... (livecam styles lists them)")
    styles = [resolve_style(config, name, request.attire, request.lighting, request.background, request.brand)
              for name in request.styles]
    names = list(request.platforms) if request.platforms is not None else config.still.platform_names
    unknown = [p for p in names if p not in config.platforms]
    if unknown:
        raise LivecamError(f"unknown platform {unknown[0]!r}; platforms: {', '.join(config.platforms)}")
    if request.variants is not None and not 1 <= request.variants <= 64:
        raise LivecamError(f"--variants {request.variants}: must be 1 to 64")
    return styles, [(p, config.platforms[p]) for p in names]


def export_stills(request: StillRequest, config: Config, bench: Workbench | None = None, progress: bool = True,
                  extra_check: ExtraCheck | None = None) -> StillRun:
    """Make the run `request` asks for; returns its folder and report. Raises LivecamError (nothing written).

    `bench`: loaded models to reuse (a batch); None: loaded here and closed at the end. `extra_check`: one more
    gate check (a team's own rule, or a test forcing a reject).
    """
    request = normalised(request)
    styles, platforms = check_request(config, request)
    identity = load_identity(request.identity) if request.identity else None
    # Everything the user gave is checked before the models load and the work starts: the photo, the folder.
    photo = read_photo(request.photo) if request.frame is None and request.photo is not None else None
    check_output(request.out)
    own = bench is None
    bench = bench if bench is not None else open_workbench(config)
    try:
        return _export(request, config, bench, styles, platforms, identity, photo, progress, extra_check)
    finally:
        if own:
            bench.close()


def _export(request: StillRequest, config: Config, bench: Workbench, styles: list[StylePreset],
            platforms: list[tuple[str, PlatformSpec]], identity: Identity | None,
            photo: tuple[RGBImage, dict[str, Any]] | None, progress: bool, extra_check: ExtraCheck | None) -> StillRun:
    s = config.still
    started = time.perf_counter()
    if request.frame is not None:
        image, what = np.ascontiguousarray(request.frame), "the live frame"
        source = {"file": None, "live": True, "size": list(image.shape[1::-1])}
    elif photo is not None:
        image, source = photo
        what = f"photo {request.photo}"
    else:
        image, source = grab_frame(bench, config)
        what = f"the camera's frame ({config.input.source})"
    subject = load_subject(bench, image, what, identity)
    if identity is not None:
        subject.source["encoder"] = str(identity.metadata.get("encoder", config.models.face_encoder))
    subject.source.update(source)
    bench.use_identity(identity)
    variants = request.variants or s.variants
    first_seed = s.seed if request.seed is None else request.seed
    generator = bench.generator
    engine = bench.engine
    subject_words = prompt_subject(config, identity)
    staging, final = _staging(request.out, _run_name(request, source))
    writer = _Writer(staging, s)
    candidates: list[dict[str, Any]] = []
    sheet: list[tuple[RGBImage, str, str]] = []
    bar = _progress(len(styles) * variants, progress)
    try:
        for style_name, style in zip(request.styles, styles, strict=True):
            seed = first_seed
            base_square = condition = None
            if generator is not None:  # the framed photo and its pose image, once per style
                base_square, _, affine = studio_square(bench, config, subject, style, generator.size)
                if generator.uses_controlnet:
                    condition = draw_pose(subject.landmarks, affine, (generator.size, generator.size))
                generator.set_prompt(style.prompt(subject_words))
            for variant in range(1, variants + 1):
                attempts = 1 + (s.max_retries if generator is not None else 0)
                for attempt in range(1, attempts + 1):
                    entry: dict[str, Any] = {"style": style_name, "variant": variant, "attempt": attempt}
                    crop_source = None
                    if generator is not None:
                        assert base_square is not None
                        candidate = generator.generate(base_square, condition, seed)
                        if style.brand_backdrop:
                            candidate = _brand_backdrop(bench, config, candidate, style)
                        entry["seed"] = seed
                        seed += 1
                    else:
                        light = _STUDIO_LIGHTS[(variant - 1) % len(_STUDIO_LIGHTS)]
                        candidate, _, _ = studio_square(bench, config, subject, style, None, light)
                        crop_source = studio_square(bench, config, subject, style, None, light, whole=True)[:2]
                        entry["seed"] = None
                        entry["lighting"] = {"key_light": light[0], "key_strength_factor": light[1]}
                    assessment, landmarks = measure(bench, candidate, subject, s)
                    entry.update(figures=assessment.figures, failed=list(assessment.failed),
                                 reasons=list(assessment.reasons), size=list(candidate.shape[1::-1]))
                    extra = extra_check(entry) if extra_check is not None else None
                    if extra:
                        entry["failed"].append("extra")
                        entry["reasons"].append(extra)
                    entry["kept"] = not entry["reasons"]
                    candidates.append(entry)
                    if entry["kept"]:
                        _write_kept(writer, entry, candidate, crop_source or (candidate, landmarks), platforms,
                                    style_name, engine, bench, identity, s)
                        sheet.append((candidate, _caption(entry), _scores(entry["figures"])))
                        break
                    log.debug("rejected %s v%d attempt %d: %s", style_name, variant, attempt,
                              "; ".join(entry["reasons"]))
                bar.update(1)
                bar.set_postfix(kept=sum(c["kept"] for c in candidates), tried=len(candidates))
        bar.close()
        disclosure = _disclosure(bench, "", None, None, identity, engine, "contact-sheet")
        sheet_file = writer.image(CONTACT_SHEET, contact_sheet(sheet), disclosure) if s.contact_sheet else None
        writer.sign()
        report = _report(request, config, bench, subject, styles, candidates, writer, sheet_file, identity,
                         time.perf_counter() - started, final.name)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.rename(staging, final)
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StillRun(final, report)


def _caption(entry: dict[str, Any]) -> str:
    seed = f" seed {entry['seed']}" if entry.get("seed") is not None else ""
    return f"{entry['style']} v{entry['variant']}{seed}"


def _scores(figures: dict[str, Any]) -> str:
    likeness = "-" if figures.get("likeness") is None else f"{figures['likeness']:.2f}"
    return f"likeness {likeness}  sharp {figures.get('sharpness', 0):.0f}"


def _write_kept(writer: _Writer, entry: dict[str, Any], master: RGBImage,
                crop_source: tuple[RGBImage, Landmarks | None], platforms: list[tuple[str, PlatformSpec]], style: str,
                engine: str, bench: Workbench, identity: Identity | None, s: StillSettings) -> None:
    """The kept image and its platform crops, cut from `crop_source` (image, landmarks): the kept image itself,
    or for the studio engine the whole edited photo."""
    stem = f"{style}-v{entry['variant']}"
    likeness = entry["figures"]["likeness"]
    entry["file"] = writer.image(stem, master, _disclosure(bench, style, entry["seed"], likeness, identity, engine,
                                                           ""))
    entry["crops"] = []
    image, landmarks = crop_source
    size = (image.shape[1], image.shape[0])
    for name, spec in platforms:
        if landmarks is None:  # possible only when the gate does not enforce one_face
            entry["crops"].append({"platform": name, "file": None, "note": "not written: no face to centre on"})
            continue
        plan = plan_crop(size, landmarks, spec, s.max_upscale)
        crop: dict[str, Any] = {"platform": name, "width": plan.out_width, "height": plan.out_height,
                                "scale": round(plan.scale, 4), "limited": plan.limited, "shrunk": plan.shrunk,
                                "moved": plan.moved,
                                "box": [round(v, 1) for v in plan.box]}
        if plan.out_width < spec.min_width:
            crop.update(file=None, note=f"not written: {plan.out_width} px wide, below {name}'s minimum "
                                        f"{spec.min_width} px (cut from {size[0]}x{size[1]} pixels)")
            log.warning("%s %s: %s", stem, name, crop["note"])
        else:
            if plan.limited:
                crop["note"] = (f"written at {plan.out_width}x{plan.out_height} instead of {spec.width}x{spec.height}: "
                                f"that needs {spec.width / plan.width:.2f}x enlargement, above still.max_upscale "
                                f"{s.max_upscale}")
                log.warning("%s %s: %s", stem, name, crop["note"])
            disclosure = _disclosure(bench, style, entry["seed"], likeness, identity, engine, name)
            crop["file"] = writer.image(f"{stem}-{name}", cut(image, plan), disclosure, dpi=spec.dpi)
        entry["crops"].append(crop)


def _disclosure(bench: Workbench, style: str, seed: int | None, likeness: float | None, identity: Identity | None,
                engine: str, platform: str) -> Disclosure:
    return Disclosure(source_type=GENERATED if engine == "diffusion" else COMPOSITE, engine=engine, model=bench.model,
                      licence=bench.licence, style=style, seed=seed, likeness=likeness,
                      identity=identity.name if identity is not None else "", platform=platform)


def _report(request: StillRequest, config: Config, bench: Workbench, subject: Subject, styles: list[StylePreset],
            candidates: list[dict[str, Any]], writer: _Writer, sheet_file: str | None, identity: Identity | None,
            seconds: float, name: str) -> dict[str, Any]:
    kept = [c for c in candidates if c["kept"]]
    rejections: Counter[str] = Counter(f for c in candidates for f in c["failed"])
    per_style = {n: {"tried": sum(c["style"] == n for c in candidates), "kept": sum(c["style"] == n for c in kept)}
                 for n in request.styles}
    generation = bench.generator.describe() if bench.generator is not None else {"photo_resolution": True}
    return {
        "livecam": livecam.__version__,
        "run": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 2),
        "photo": {k: v for k, v in subject.source.items() if k != "encoder"},
        "identity": identity.name if identity is not None else None,
        "likeness_reference": subject.reference_kind,
        "engine": bench.engine,
        "model": bench.model,
        "models": bench.model_names,
        "licence": bench.licence,
        "disclosure": GENERATED if bench.engine == "diffusion" else COMPOSITE,
        "c2pa": bool(config.still.c2pa_cert),
        "generation": generation,
        "gate": {k: getattr(config.still, k) for k in (f.name for f in dataclasses.fields(GateSettings))},
        "styles": {n: {**dataclasses.asdict(st), "prompt": st.prompt()} for n, st in zip(request.styles, styles,
                                                                                         strict=True)},
        "summary": {"tried": len(candidates), "kept": len(kept), "rejected": len(candidates) - len(kept),
                    "rejections": dict(rejections), "per_style": per_style, "variants_wanted": request.variants
                    or config.still.variants},
        "candidates": candidates,
        "contact_sheet": sheet_file,
        "files": sorted(f for f, _ in writer.files),
    }


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="headshots", unit="variant", leave=False)

