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

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from engine.crops import PlatformSpec
from engine.gate import ADVICE
from engine.keep_face import keep_face_in_place
from engine.pose import draw_pose
from engine.styles import StylePreset
from engine.types import Landmarks, RGBImage
from livecam.assembly import open_workbench, prompt_subject
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.identity.store import Identity, load_identity
from livecam.stills.files import (
    CONTACT_SHEET,
    REPORT_FILE,
    Candidate,
    RunContext,
    Writer,
    build_report,
    check_output,
    run_name,
    staging_folder,
    write_kept,
)
from livecam.stills.render import brand_backdrop, crop_canvas, measure, resolve_style, studio_square
from livecam.stills.sheet import SheetEntry, contact_sheet, style_title, thumbnail
from livecam.stills.subject import Subject, grab_frame, load_subject, read_photo
from livecam.stills.surroundings import photo_cuts_head, surroundings
from livecam.stills.variants import look
from livecam.stills.workbench import Workbench

log = logging.getLogger("livecam")

ExtraCheck = Callable[[dict[str, Any]], str | None]
"""An additional gate check: the candidate's report entry as the gate left it (`Candidate.measured`) in, a
reject reason (or None) out."""


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
    first_seed = s.seed if request.seed is None else request.seed
    subject_words = prompt_subject(config, identity)
    staging, final = staging_folder(request.out, run_name(request.name, source))
    run = RunContext(config, bench, identity, dict(zip(request.styles, styles, strict=True)), platforms,
                     request.variants or s.variants, Writer(staging, s), final.name)
    candidates: list[Candidate] = []
    sheet: list[SheetEntry] = []
    bar = tqdm(total=len(styles) * run.variants, desc="headshots", unit="variant", leave=False,
               disable=not progress)
    try:
        for style_name, style in run.styles.items():
            _make_style(run, subject, style_name, style, first_seed, subject_words, candidates, sheet, extra_check,
                        bar)
        bar.close()
        kept = sum(c.kept for c in candidates)
        heading = f"{run.name}: kept {kept} of {len(candidates)} ({bench.engine} engine)"
        sheet_file = (run.writer.image(CONTACT_SHEET, contact_sheet(sheet, heading), run.disclosure("contact-sheet"))
                      if s.contact_sheet else None)
        run.writer.sign()
        report = build_report(run, subject, candidates, sheet_file, time.perf_counter() - started)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.rename(staging, final)
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StillRun(final, report)


def _make_style(run: RunContext, subject: Subject, style_name: str, style: StylePreset, first_seed: int,
                subject_words: str, candidates: list[Candidate], sheet: list[SheetEntry],
                extra_check: ExtraCheck | None, bar: tqdm) -> None:
    """The variants of one style, each made (and remade after a reject, diffusion only) until it passes the gate
    or runs out of tries; every candidate goes into `candidates` and onto the contact `sheet`."""
    config, bench = run.config, run.bench
    s = config.still
    generator = bench.generator
    seed = first_seed
    photo_cut = photo_cuts_head(bench, subject)
    for variant in range(1, run.variants + 1):
        variant_look = look(config, style, variant)
        lit = variant_look.style(style)
        base = condition = prompt = None
        if generator is not None:  # the photo framed and lit in this variant's look, prompted with it
            base = studio_square(bench, config, subject, lit, generator.size, variant_look.light)
            if generator.uses_controlnet:
                condition = draw_pose(subject.landmarks, base[2], (generator.size, generator.size))
            prompt = variant_look.prompted(style).prompt(subject_words)
            generator.set_prompt(prompt)
        attempts = 1 + (s.max_retries if generator is not None else 0)
        for attempt in range(1, attempts + 1):
            crop_source = None
            if generator is not None:
                assert base is not None
                made = _generate(run, base, condition, seed, style)
                around = surroundings(bench, config, lit, made, known=style.brand_backdrop, photo_cut=photo_cut)
                used_seed: int | None = seed
                seed += 1
            else:
                made, _, affine = studio_square(bench, config, subject, lit, None, variant_look.light)
                crop_source = crop_canvas(bench, config, subject, lit, variant_look.light)
                around = surroundings(bench, config, lit, made, matte=(subject.mask(bench.segmenter), affine),
                                      photo_cut=photo_cut)
                used_seed = None
            assessment, landmarks = measure(bench, made, subject, s, around)
            candidate = Candidate(style_name, variant, attempt, used_seed, variant_look.light, assessment.figures,
                                  list(assessment.failed), list(assessment.reasons), (made.shape[1], made.shape[0]),
                                  advice=assessment.advice, tips=[ADVICE[t] for t in assessment.tips],
                                  look={**variant_look.to_report(), **({"prompt": prompt} if prompt else {})})
            extra = extra_check(candidate.measured()) if extra_check is not None else None
            if extra:
                candidate.reject("extra", extra)
            candidates.append(candidate)
            words = variant_look.words() + (f", seed {used_seed}" if used_seed is not None else "")
            sheet.append(SheetEntry(thumbnail(made), style_name, f"{style_title(style_name)} - v{variant}", words,
                                    candidate.verdict, candidate.kept))
            if candidate.kept:
                write_kept(run, candidate, made, crop_source or (made, landmarks, None))
                break
            log.debug("rejected %s v%d attempt %d: %s", style_name, variant, attempt, "; ".join(candidate.reasons))
        bar.update(1)
        bar.set_postfix(kept=sum(c.kept for c in candidates), tried=len(candidates))


def _generate(run: RunContext, base: tuple[RGBImage, Landmarks, npt.NDArray[np.float64]],
              condition: RGBImage | None, seed: int, style: StylePreset) -> RGBImage:
    """One diffusion candidate from the studio square `base` (square, its landmarks, affine photo -> square)
    under the pose image `condition`, with the person's own face from the square blended back when
    `still.keep_face` is on, and the style's brand colour or picture put back behind it."""
    bench, generator = run.bench, run.bench.generator
    assert generator is not None
    square, landmarks, _ = base
    made = generator.generate(square, condition, seed)
    if run.config.still.keep_face:
        made = made.copy()
        keep_face_in_place(made, square, landmarks[:, :2])
    if style.brand_backdrop:
        made = brand_backdrop(bench, run.config, made, style)
    return made
