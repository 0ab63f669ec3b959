"""A still run's folder and what goes in it: the kept images and their platform crops (each with the
disclosure), the contact sheet, and `report.json`, whose candidate entries are `Candidate`s. Everything is
written into a hidden staging folder, which the run renames into place only when it is complete."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import livecam
from engine.crops import PlatformSpec, Room, cut, plan_crop
from engine.gate import GateSettings
from engine.styles import StylePreset
from engine.types import Landmarks, RGBImage
from livecam.config import Config, StillSettings
from livecam.errors import LivecamError
from livecam.identity.store import Identity
from livecam.stills.provenance import COMPOSITE, GENERATED, Disclosure, sign_c2pa, write_image
from livecam.stills.subject import Subject
from livecam.stills.workbench import Workbench

log = logging.getLogger("livecam")

REPORT_FILE = "report.json"
CONTACT_SHEET = "contact-sheet"


@dataclass
class Candidate:
    """One image a run made and put through the gate: an entry of report.json's "candidates" (`to_report`)."""

    style: str
    variant: int
    attempt: int
    seed: int | None
    """The diffusion seed it was made with; None: the studio engine (no seed)."""
    light: tuple[str, float] | None
    """The variant's lighting setup and key strength factor (the square the diffusion engine starts from is lit
    the same way)."""
    figures: dict[str, Any]
    """The gate's measurements (`engine.gate.Assessment.figures`)."""
    failed: list[str]
    """The gate checks it failed ("extra" for the caller's own check)."""
    reasons: list[str]
    """Why it was rejected, one line per failed check; empty: kept."""
    size: tuple[int, int]
    advice: list[str] = field(default_factory=list)
    """What to do about each failed check, in plain words (`engine.gate.ADVICE`; an extra check's own reason)."""
    tips: list[str] = field(default_factory=list)
    """Plain advice for checks that failed but do not reject (a photo that cuts the top of the head)."""
    look: dict[str, Any] | None = None
    """The variant's look: lighting setup and backdrop (`livecam.stills.variants.Look.to_report`), and for the
    diffusion engine the prompt that names them."""
    file: str | None = None
    """The kept image's file in the run folder (set when written)."""
    crops: list[dict[str, Any]] = field(default_factory=list)
    """One entry per platform: the crop's plan and file, or a note on why it was not written."""

    @property
    def kept(self) -> bool:
        return not self.reasons

    def reject(self, check: str, reason: str) -> None:
        self.failed.append(check)
        self.reasons.append(reason)
        self.advice.append(reason)

    @property
    def verdict(self) -> str:
        """"kept", or "rejected: " and what to do about the first failed check."""
        return "kept" if self.kept else f"rejected: {self.advice[0] if self.advice else self.reasons[0]}"

    def measured(self) -> dict[str, Any]:
        """The entry as the gate leaves it, before the verdict (what an extra check is shown)."""
        entry: dict[str, Any] = {"style": self.style, "variant": self.variant, "attempt": self.attempt,
                                 "seed": self.seed}
        if self.light is not None:
            entry["lighting"] = {"key_light": self.light[0], "key_strength_factor": self.light[1]}
        if self.look is not None:
            entry["look"] = dict(self.look)
        entry.update(figures=self.figures, failed=list(self.failed), reasons=list(self.reasons),
                     advice=list(self.advice), tips=list(self.tips), size=list(self.size))
        return entry

    def to_report(self) -> dict[str, Any]:
        """The report.json entry: `measured`, then "kept", and for a kept one its "file" and "crops"."""
        entry = self.measured()
        entry["kept"] = self.kept
        if self.kept:
            entry.update(file=self.file, crops=self.crops)
        return entry


class Writer:
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


@dataclass(frozen=True)
class RunContext:
    """What one run's files are written with: the models that made them (named in every disclosure), the
    identity, the styles and platforms asked for, and the writer of the staging folder."""

    config: Config
    bench: Workbench
    identity: Identity | None
    styles: dict[str, StylePreset]
    """Each requested style's name -> the style as resolved (overrides, brand), in the request's order."""
    platforms: list[tuple[str, PlatformSpec]]
    variants: int
    """Kept images wanted per style."""
    writer: Writer
    name: str
    """The run folder's final name."""

    def disclosure(self, platform: str, style: str = "", seed: int | None = None,
                   likeness: float | None = None) -> Disclosure:
        engine = self.bench.engine
        return Disclosure(source_type=GENERATED if engine == "diffusion" else COMPOSITE, engine=engine,
                          model=self.bench.model, licence=self.bench.licence, style=style, seed=seed,
                          likeness=likeness, identity=self.identity.name if self.identity is not None else "",
                          platform=platform)


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


def staging_folder(out: Path, name: str) -> tuple[Path, Path]:
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


def run_name(name: str, source: dict[str, Any]) -> str:
    """The run folder's name: `name` as asked (a plain folder name), else the photo's name and the time."""
    if name:
        if "/" in name or name.startswith("."):
            raise LivecamError(f"run name {name!r}: a plain folder name, not a path")
        return name
    stem = Path(source["file"]).stem if source.get("file") else "live" if source.get("live") else "camera"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_kept(run: RunContext, candidate: Candidate, master: RGBImage,
               crop_source: tuple[RGBImage, Landmarks | None, Room | None]) -> None:
    """The kept image and its platform crops, cut from `crop_source` (image, landmarks, room): the kept image
    itself (room None), or for the studio engine the canvas of the photo on its backdrop (`crop_canvas`).
    Records the files in `candidate`."""
    s = run.config.still
    style = candidate.style
    stem = f"{style}-v{candidate.variant}"
    likeness = candidate.figures["likeness"]
    candidate.file = run.writer.image(stem, master, run.disclosure("", style, candidate.seed, likeness))
    candidate.crops = []
    image, landmarks, room = crop_source
    size = (image.shape[1], image.shape[0])
    for name, spec in run.platforms:
        if landmarks is None:  # possible only when the gate does not enforce one_face
            candidate.crops.append({"platform": name, "file": None, "note": "not written: no face to centre on"})
            continue
        plan = plan_crop(size, landmarks, spec, s.max_upscale, room)
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
            disclosure = run.disclosure(name, style, candidate.seed, likeness)
            crop["file"] = run.writer.image(f"{stem}-{name}", cut(image, plan), disclosure, dpi=spec.dpi)
        candidate.crops.append(crop)


def advice_counts(candidates: Sequence[Candidate], tips: bool = False) -> list[dict[str, Any]]:
    """Each distinct piece of advice of the rejected candidates (`tips`: of every candidate's tips) with how
    many candidates it concerns, most frequent first."""
    counts: Counter[str] = Counter()
    for c in candidates:
        counts.update(set(c.tips if tips else c.advice))
    return [{"advice": text, "candidates": n} for text, n in counts.most_common()]


def advice_lines(report: dict[str, Any]) -> list[str]:
    """The console's lines on what to do: one per distinct reason the gate gave, most frequent first, then the
    tips."""
    summary = report["summary"]
    lines = []
    if summary.get("advice"):
        lines.append("  rejected, and what to do (most frequent first):")
        lines.extend(f"    - {a['advice']} ({a['candidates']} of {summary['tried']})" for a in summary["advice"])
    if summary.get("tips"):
        lines.append("  tips:")
        lines.extend(f"    - {a['advice']}" for a in summary["tips"])
    return lines


def build_report(run: RunContext, subject: Subject, candidates: list[Candidate], sheet_file: str | None,
                 seconds: float) -> dict[str, Any]:
    """report.json's content."""
    config, bench, identity = run.config, run.bench, run.identity
    kept = [c for c in candidates if c.kept]
    rejections: Counter[str] = Counter(f for c in candidates for f in c.failed)
    per_style = {n: {"tried": sum(c.style == n for c in candidates), "kept": sum(c.style == n for c in kept)}
                 for n in run.styles}
    generation = bench.generator.describe() if bench.generator is not None else {"photo_resolution": True}
    return {
        "livecam": livecam.__version__,
        "run": run.name,
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
        "styles": {n: {**dataclasses.asdict(st), "prompt": st.prompt()} for n, st in run.styles.items()},
        "summary": {"tried": len(candidates), "kept": len(kept), "rejected": len(candidates) - len(kept),
                    "rejections": dict(rejections), "advice": advice_counts([c for c in candidates if not c.kept]),
                    "tips": advice_counts(candidates, tips=True), "per_style": per_style,
                    "variants_wanted": run.variants},
        "candidates": [c.to_report() for c in candidates],
        "contact_sheet": sheet_file,
        "files": sorted(f for f, _ in run.writer.files),
    }
