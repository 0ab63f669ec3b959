"""Benchmark: a whole still-export job (`livecam.stills.export.export_stills`) on a CUDA GPU, against a plain diffusers
pipeline in the same run.

Issue 5's target: "7 presets x 4 variants at 1024x1024, including the quality gate: <= 60 s on one H100".

Models: the real SDXL architectures with random weights, built offline (nothing downloaded; speed does not
depend on the weights): UNet, ControlNet and the full AutoencoderKL from `tests.tiny_sdxl`, and the two
SDXL CLIP text encoders (CLIP ViT-L/14 and OpenCLIP bigG/14 text towers, their published configs) built here,
because stills encode each style's prompt with the real encoders. The tokenizer is `random_sdxl.tiny_tokenizer`
(byte-level, no merges: the prompt becomes more tokens than CLIP's BPE makes, but both pad or truncate to 77,
so the encoders do the same work). The face models are the real MediaPipe, YuNet and face-reid files from
../shared/assets, and the subject is a real photo.

- `livecam`: `export_stills` for every style x `--variants` at `--size`, with `still.max_retries=0` (a fixed
  number of candidates) and `still.checks=""` (every candidate is measured by the whole gate and kept, so its
  file and every platform crop are written: the whole job). Timed wall clock, start to end, after a warm-up
  run (one style, one variant); the Workbench (models loaded) is open before, as in a batch. The split into
  phases (prompt encoding, framing, generation, gate, files) times the functions `export_stills` calls.
- `baseline`: a plain `StableDiffusionXLControlNetImg2ImgPipeline` on the same modules (full VAE, the
  embeddings passed directly, guidance_scale 0, the same real steps and strength, output_type "np"), one call
  per candidate on the same framed photos, pose images and seeds; no gate, no files.

Random weights make noise, in which the face landmarker finds no face: the gate would then skip the face
encoder and no platform crop could be placed, which is less work than the real job. So by default
(`--gate-input photo`) the generated image is computed in full and then set aside, and the gate, the crops and
the files get the studio-framed photo that went into the generator (a real face, at the same size);
`--gate-input generated` hands on the noise instead.

    python -m benchmarks.stills_gpu [--out benchmarks/results/stills_gpu_<device>.json] [--size 1024]
        [--steps 4] [--variants 4] [--styles all] [--dtype fp16] [--rounds 1] [--gate-input photo]
        [--tiny --device cpu]

`--tiny --device cpu` runs the same code path on tiny random models (2 styles x 2 variants at 128 px) in well
under a minute: a smoke test (its timings mean nothing). See benchmarks/gpu_setup.md for a GPU machine without
diffusers or mediapipe.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from unittest import mock

import numpy as np

from benchmarks.diffusion_gpu import (
    DTYPES,
    build_pipeline,
    device_slug,
    finite_watch,
    machine,
    preflight,
    quiet_libraries,
    versions,
)
from tests.media import assets_dir

if TYPE_CHECKING:
    from engine.denoiser import DiffusionComponents
    from engine.still import StillGenerator
    from engine.types import RGBImage
    from livecam.config import Config
    from livecam.stills.workbench import Workbench

TARGET: dict[str, Any] = {"what": "7 presets x 4 variants at 1024x1024 incl. the quality gate", "limit_s": 60.0,
                          "size": 1024, "styles": 7, "variants": 4}
"""Issue 5's target; `met` is judged only on a run at these settings, on CUDA, with the full-size models."""
PHOTO = "images/faces/obama_official_2012.jpg"
# The face models' registry names -> their files in ../shared/assets.
MODEL_FILES = {
    "FACE_LANDMARKER": "models/face_landmarker/face_landmarker.task",
    "SELFIE_SEGMENTER": "models/segmentation/selfie_segmentation.tflite",
    "FACE_DETECTOR": "models/face_detection/face_detection_yunet_2023mar.onnx",
    "FACE_REID_XML": "models/face_recognition/face-reidentification-retail-0095/FP16/"
                     "face-reidentification-retail-0095.xml",
    "FACE_REID_BIN": "models/face_recognition/face-reidentification-retail-0095/FP16/"
                     "face-reidentification-retail-0095.bin",
}
# The text towers of SDXL's two encoders, as in text_encoder/ and text_encoder_2/config.json of
# stabilityai/stable-diffusion-xl-base-1.0 (123,060,480 and 694,659,840 parameters). Token ids follow
# tiny_tokenizer (bos 0, eos and pad 1); the vocabulary keeps CLIP's size.
SDXL_TEXT_ENCODER_CONFIGS: tuple[dict[str, Any], ...] = (
    {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
     "hidden_act": "quick_gelu", "projection_dim": 768},
    {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
     "hidden_act": "gelu", "projection_dim": 1280},
)
GATE_INPUTS = {
    "photo": "gate input: the studio-framed photo that went into the generator (the generated image is computed, "
             "then set aside), so the gate, the crops and the files work on a real face",
    "generated": "gate input: the generated image (random-weight noise: the gate finds no face, so it skips the "
                 "face encoder and no crop is written)",
}
PHASES = ("prompt", "subject", "framing", "generate", "gate", "files")
"""Where a livecam run's time goes: the functions of livecam.stills.export (or the generator's methods) timed."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/stills_gpu_<device>.json)")
    parser.add_argument("--size", type=int, default=None, help="generated square's side (default 1024; 128 tiny)")
    parser.add_argument("--steps", type=int, default=None, help="real denoising steps (default still.steps)")
    parser.add_argument("--strength", type=float, default=None, help="default still.strength")
    parser.add_argument("--variants", type=int, default=None, help="per style (default 4; 2 with --tiny)")
    parser.add_argument("--styles", nargs="+", default=None,
                        help="style names or 'all' (default all seven; the first two with --tiny)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default fp16 on CUDA, fp32 on the CPU")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs of each (medians reported)")
    parser.add_argument("--gate-input", choices=("photo", "generated"), default="photo",
                        help="what the gate and crops get: the framed photo (a real face) or the generated image")
    parser.add_argument("--photo", type=Path, default=None, help=f"subject photo (default ../shared/assets/{PHOTO})")
    parser.add_argument("--tiny", action="store_true", help="tiny random models (a smoke test of the code path)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's CPU threads while the benchmark runs; 0: as torch has them (default; 1 with "
                             "--tiny on the CPU, where the timings mean nothing and a busy machine's OpenMP "
                             "threads would wait on each other)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# --- models ----------------------------------------------------------------------------------------------------

def face_model_dir(directory: Path) -> Path:
    """`directory` holding the face models of ../shared/assets under their registry file names."""
    from models import registry

    for name, relative in MODEL_FILES.items():
        source = assets_dir() / relative
        if not source.is_file():
            raise SystemExit(f"stills_gpu: {source} is missing (the benchmark needs ../shared/assets, or "
                             "LIVECAM_ASSETS pointing at it)")
        (directory / getattr(registry, name).filename).symlink_to(source)
    return directory


def sdxl_text_encoders(device: Any, dtype: Any, seed: int) -> tuple[Any, Any]:
    """SDXL's two CLIP text encoders at full size, random weights, built on `device`."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    common: dict[str, Any] = {"vocab_size": 49408, "max_position_embeddings": 77, "layer_norm_eps": 1e-5,
                              "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    with torch.device(device):
        encoders = (CLIPTextModel(CLIPTextConfig(**common, **SDXL_TEXT_ENCODER_CONFIGS[0])),
                    CLIPTextModelWithProjection(CLIPTextConfig(**common, **SDXL_TEXT_ENCODER_CONFIGS[1])))
    for encoder in encoders:
        encoder.to(dtype).eval().requires_grad_(False)
    return encoders


def build_components(tiny: bool, device: Any, dtype: Any, seed: int) -> DiffusionComponents:
    """The diffusion components stills load (text encoders, UNet, ControlNet, full VAE), random weights."""
    from engine.denoiser import DiffusionComponents
    from tests.tiny_sdxl import full_size_components, tiny_components, tiny_tokenizer

    if tiny:
        models = tiny_components(seed)
        for key in ("unet", "controlnet", "vae", "tiny_vae", "text_encoder", "text_encoder_2"):
            models[key] = models[key].to(device, dtype).eval().requires_grad_(False)
    else:
        models = full_size_components(device, dtype, controlnet=True, seed=seed)
        models["text_encoder"], models["text_encoder_2"] = sdxl_text_encoders(device, dtype, seed)
        models["tokenizer"], models["tokenizer_2"] = tiny_tokenizer(), tiny_tokenizer()
    # The stills VAE livecam uses (sdxl-vae-fp16-fix) runs in fp16; the published SDXL VAE would ask for fp32.
    models["vae"].register_to_config(force_upcast=False)
    kind = "tiny random" if tiny else "random-weight"
    names = {"base": f"{kind} SDXL", "controlnet": f"{kind} SDXL ControlNet", "vae": f"{kind} SDXL VAE"}
    return DiffusionComponents(unet=models["unet"], tiny_vae=models["tiny_vae"], text_encoder=models["text_encoder"],
                               tokenizer=models["tokenizer"], scheduler=models["scheduler"], device=device,
                               dtype=dtype, controlnet=models["controlnet"], text_encoder_2=models["text_encoder_2"],
                               tokenizer_2=models["tokenizer_2"], vae=models["vae"], names=names)


def img2img_steps(steps: int, strength: float) -> int:
    """The smallest num_inference_steps with which diffusers' img2img runs exactly `steps` steps at `strength`
    (it runs min(int(n * strength), n))."""
    n = steps
    while min(int(n * strength), n) != steps:
        n += 1
        if n > 1000:
            raise SystemExit(f"stills_gpu: no num_inference_steps gives {steps} steps at strength {strength}")
    return n


@contextmanager
def count_calls(module: Any) -> Iterator[dict[str, int]]:
    """How many times `module` ran while inside."""
    seen = {"calls": 0}

    def hook(*_: Any) -> None:
        seen["calls"] += 1

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


# --- the livecam run -------------------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One generate() call: its inputs (the baseline makes the same candidates) and how long it took."""

    prompt: str
    canvas: RGBImage
    condition: RGBImage | None
    seed: int


@dataclass
class Phases:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    generate: list[float] = field(default_factory=list)
    gate: list[float] = field(default_factory=list)

    def timed(self, phase: str, call: Callable[..., Any], each: list[float] | None = None) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                self.seconds[phase] += elapsed
                if each is not None:
                    each.append(elapsed)
        return wrapper


class TimedGenerator:
    """The workbench's StillGenerator, its calls timed and recorded; with `pass_photo`, generate() hands on
    the framed photo it was given instead of the (random-weight) image it made."""

    def __init__(self, inner: StillGenerator, pass_photo: bool) -> None:
        self.inner = inner
        self.pass_photo = pass_photo
        self.phases = Phases()
        self.candidates: list[Candidate] = []
        self._prompt = ""

    def __getattr__(self, name: str) -> Any:  # size, uses_controlnet, set_identity, close, describe, ...
        return getattr(self.inner, name)

    def set_prompt(self, prompt: str) -> None:
        self._prompt = prompt
        self.phases.timed("prompt", self.inner.set_prompt)(prompt)

    def generate(self, canvas: RGBImage, condition: RGBImage | None, seed: int) -> RGBImage:
        self.candidates.append(Candidate(self._prompt, canvas, condition, seed))
        out: RGBImage = self.phases.timed("generate", self.inner.generate, self.phases.generate)(
            canvas, condition, seed)
        return canvas.copy() if self.pass_photo else out


@contextmanager
def timed_phases(generator: TimedGenerator) -> Iterator[Phases]:
    """A fresh `Phases` on `generator`, with the subject, framing, gate and file functions the run loop of
    livecam.stills.export calls timed into it while inside (patched where that loop looks them up; a function
    that is not there is left out: the split is then coarser, never wrong)."""
    from livecam.stills import export as stills

    phases = generator.phases = Phases()
    wrapped = {"load_subject": ("subject", None), "studio_square": ("framing", None),
               "measure": ("gate", phases.gate), "write_kept": ("files", None)}
    with ExitStack() as stack:
        for name, (phase, each) in wrapped.items():
            if hasattr(stills, name):
                stack.enter_context(mock.patch.object(stills, name, phases.timed(phase, getattr(stills, name), each)))
        yield phases


@dataclass
class Job:
    """What every run of both sides makes."""

    config: Config
    photo: Path
    styles: tuple[str, ...]
    variants: int
    out: Path
    device: Any


def livecam_run(bench: Workbench, generator: TimedGenerator, job: Job, name: str,
                styles: tuple[str, ...] | None = None, variants: int | None = None) -> dict[str, Any]:
    """One export_stills run, timed; its figures (its files are deleted after counting)."""
    import torch

    from livecam.stills.export import StillRequest, export_stills

    request = StillRequest(job.photo, styles=styles or job.styles, variants=variants or job.variants,
                           out=job.out, name=name)
    generator.candidates = []
    with timed_phases(generator) as phases:
        t0 = time.perf_counter()
        run = export_stills(request, job.config, bench=bench, progress=False)
        if job.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    files = [run.folder / f for f in run.report["files"]]
    result = {
        "seconds": round(seconds, 3), "report_seconds": run.report["seconds"],
        "candidates": run.report["summary"]["tried"], "kept": run.report["summary"]["kept"],
        "files": len(files), "file_mib": round(sum(f.stat().st_size for f in files) / 2**20, 2),
        "crops_written": sum(1 for c in run.report["candidates"] for crop in c.get("crops", []) if crop["file"]),
        "faces_found_by_gate": sum(1 for c in run.report["candidates"] if c["figures"].get("face_height") is not None),
        "phases_s": {k: round(v, 3) for k, v in phases.seconds.items()},
        "generate_s": [round(v, 4) for v in phases.generate], "gate_s": [round(v, 4) for v in phases.gate],
    }
    result["phases_s"]["other"] = round(seconds - sum(phases.seconds.values()), 3)
    shutil.rmtree(run.folder, ignore_errors=True)
    return result


# --- the baseline ----------------------------------------------------------------------------------------------

class Baseline:
    """The plain pipeline on the same modules: one call per candidate, its prompt's embeddings encoded
    beforehand (`prepare`, untimed: the pipeline takes them directly)."""

    def __init__(self, components: DiffusionComponents, steps: int, strength: float, controlnet_scale: float) -> None:
        from engine.denoiser import host_pipeline

        self.components = components
        self.host = host_pipeline(components)
        self.pipe = build_pipeline({"vae": components.vae, "unet": components.unet,
                                    "controlnet": components.controlnet, "scheduler": components.scheduler},
                                   controlnet=True)
        self.steps = img2img_steps(steps, strength)
        self.strength = strength
        self.controlnet_scale = controlnet_scale
        self.embeds: dict[str, Any] = {}

    def prepare(self, candidates: list[Candidate]) -> None:
        from engine.denoiser import encode_prompt

        for c in candidates:
            if c.prompt not in self.embeds:
                self.embeds[c.prompt] = encode_prompt(self.host, c.prompt, self.components.device)

    def __call__(self, c: Candidate) -> Any:
        import torch
        from PIL import Image

        prompt_embeds, pooled = self.embeds[c.prompt]
        result = self.pipe(image=Image.fromarray(c.canvas), control_image=Image.fromarray(cast(Any, c.condition)),
                           prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled, num_inference_steps=self.steps,
                           strength=self.strength, guidance_scale=0.0,
                           controlnet_conditioning_scale=self.controlnet_scale,
                           generator=torch.Generator("cpu").manual_seed(c.seed), output_type="np")
        return result.images


def baseline_run(call: Baseline, candidates: list[Candidate], device: Any) -> dict[str, Any]:
    import torch

    call.prepare(candidates)
    each = []
    t0 = time.perf_counter()
    for c in candidates:
        t = time.perf_counter()
        call(c)
        if device.type == "cuda":
            torch.cuda.synchronize()
        each.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "candidates": len(candidates), "call_s": [round(v, 4) for v in each]}


# --- main ------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = preflight("stills_gpu", args.device, args.tiny,
                       modules=("diffusers", "transformers", "mediapipe", "openvino"))
    if device is None:
        return 2
    if args.threads is None:
        args.threads = 1 if args.tiny and device.type == "cpu" else 0
    with (quiet_libraries(), quiet_livecam(), torch_threads(args.threads),
          tempfile.TemporaryDirectory(prefix="stills_gpu_") as tmp):
        return run(args, device, Path(tmp))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to `threads` while inside (0: left alone). On a busy small machine one
    thread avoids OpenMP's threads waiting on each other (a smoke test there runs several times faster)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def quiet_livecam() -> Iterator[None]:
    """livecam's log at error level while inside: its per-candidate warnings (a crop written smaller, the base
    model's licence) would repeat for every candidate; the JSON counts the crops written."""
    logger = logging.getLogger("livecam")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": _median(values), "p95": round(float(np.percentile(values, 95)), 4) if values else None,
            "max": round(max(values), 4) if values else None}


def run(args: argparse.Namespace, device: Any, tmp: Path) -> int:
    import torch

    from livecam.assembly import open_workbench
    from livecam.config import load_config

    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    size = args.size or (128 if args.tiny else 1024)
    variants = args.variants or (2 if args.tiny else 4)
    defaults = load_config(None)
    styles = tuple(defaults.styles) if args.styles in (None, ["all"]) else tuple(args.styles)
    if args.tiny and args.styles is None:
        styles = styles[:2]
    unknown = [name for name in styles if name not in defaults.styles]
    if unknown:
        raise SystemExit(f"stills_gpu: unknown style {unknown[0]!r}; styles: {', '.join(defaults.styles)}")
    overrides = [f"still.size={size}", "still.max_retries=0", "still.checks=", f"models.device={device}",
                 f"models.dir={face_model_dir(Path(tempfile.mkdtemp(dir=tmp)))}", "models.download=false"]
    overrides += [f"still.steps={args.steps}"] if args.steps else []
    overrides += [f"still.strength={args.strength}"] if args.strength else []
    config = load_config(None, overrides)
    s = config.still
    job = Job(config, args.photo or assets_dir() / PHOTO, styles, variants, tmp / "runs", device)

    t_build = time.perf_counter()
    components = build_components(args.tiny, device, dtype, args.seed)
    parameters = {k: sum(p.numel() for p in getattr(components, k).parameters())
                  for k in ("unet", "controlnet", "vae", "text_encoder", "text_encoder_2")}
    build_s = time.perf_counter() - t_build
    t_open = time.perf_counter()
    bench = open_workbench(config, engine="diffusion", components=components)
    open_s = time.perf_counter() - t_open
    try:
        assert bench.generator is not None
        generator = TimedGenerator(bench.generator, pass_photo=args.gate_input == "photo")
        bench.generator = cast("StillGenerator", generator)

        # Warm-up (untimed): one candidate each; the models' outputs watched for overflow, the UNet's calls
        # counted (the real steps). The last style, so that the timed run encodes its first prompt anew.
        c: Any = components
        texts = [getattr(t, "text_model", t) for t in (c.text_encoder, c.text_encoder_2)]
        watched = [c.unet, c.controlnet, c.vae.encoder, c.vae.decoder, c.text_encoder_2.text_projection,
                   *(t.encoder.layers[-2] for t in texts)]  # SDXL's prompt embeddings: the penultimate layers
        with finite_watch(watched) as livecam_finite, count_calls(components.unet) as livecam_unet:
            warmup = livecam_run(bench, generator, job, "warmup", styles=styles[-1:], variants=1)
        baseline = Baseline(components, s.steps, s.strength, generator.settings.controlnet_scale)
        baseline.prepare(generator.candidates)
        with count_calls(components.unet) as baseline_unet:
            baseline_finite = bool(np.isfinite(baseline(generator.candidates[0])).all())

        livecam_rounds, baseline_rounds = [], []
        peak_gib = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for r in range(args.rounds):  # interleaved, each side on the same candidates
            livecam_rounds.append(livecam_run(bench, generator, job, f"round{r}"))
            baseline_rounds.append(baseline_run(baseline, generator.candidates, device))
        if device.type == "cuda":
            peak_gib = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        describe = generator.describe()
    finally:
        bench.close()

    last = livecam_rounds[-1]
    live_s = _median([r["seconds"] for r in livecam_rounds])
    base_s = _median([r["seconds"] for r in baseline_rounds])
    assert live_s is not None and base_s is not None
    livecam = {
        "seconds": live_s, "seconds_rounds": [r["seconds"] for r in livecam_rounds],
        "per_candidate_s": round(live_s / last["candidates"], 4),
        "generate_s": _spread([v for r in livecam_rounds for v in r["generate_s"]]),
        "gate_s": _spread([v for r in livecam_rounds for v in r["gate_s"]]),
        "phases_s": {k: _median([r["phases_s"][k] for r in livecam_rounds]) for k in (*PHASES, "other")},
        "unet_calls_per_candidate": livecam_unet["calls"], "outputs_finite": livecam_finite["finite"],
        "warmup_s": warmup["seconds"], "rounds": livecam_rounds,
        **{k: last[k] for k in ("candidates", "kept", "files", "file_mib", "crops_written", "faces_found_by_gate")},
    }
    base = {
        "seconds": base_s, "seconds_rounds": [r["seconds"] for r in baseline_rounds],
        "per_candidate_s": round(base_s / baseline_rounds[-1]["candidates"], 4),
        "call_s": _spread([v for r in baseline_rounds for v in r["call_s"]]),
        "candidates": baseline_rounds[-1]["candidates"], "num_inference_steps": img2img_steps(s.steps, s.strength),
        "unet_calls_per_candidate": baseline_unet["calls"], "outputs_finite": baseline_finite,
        "pipeline": "diffusers StableDiffusionXLControlNetImg2ImgPipeline, full VAE, guidance_scale 0, "
                    "prompt embeddings passed directly, output_type np; no gate, no files",
    }
    info = machine(device)
    at_target = (device.type == "cuda" and size == TARGET["size"] and len(styles) == TARGET["styles"]
                 and variants == TARGET["variants"] and not args.tiny)
    result = {
        "benchmark": "stills_gpu",
        "device": info["device"],
        "models": ("tiny random SDXL (tests.tiny_sdxl.tiny_components)" if args.tiny else
                   "SDXL base UNet + SDXL ControlNet + SDXL VAE (random weights, tests.tiny_sdxl."
                   "full_size_components) + SDXL's two CLIP text encoders (published configs, random weights)"),
        "approximations": [
            "random weights: the same work as trained ones, but the images are noise",
            GATE_INPUTS[args.gate_input],
            "tokenizer: byte-level CLIPTokenizer without merges (tests.tiny_sdxl.tiny_tokenizer); prompts "
            "pad or truncate to 77 tokens either way, so the text encoders do the same work",
            "VAE force_upcast off, as with sdxl-vae-fp16-fix (livecam's models.vae)",
        ],
        "machine": info,
        "versions": {**versions(), **package_versions("mediapipe", "openvino", "pillow", "tqdm")},
        "dtype": dtype_name,
        "settings": {
            "size": size, "steps": s.steps, "strength": s.strength, "styles": list(styles), "variants": variants,
            "rounds": args.rounds, "seed": args.seed, "tiny": args.tiny, "gate_input": args.gate_input,
            "photo": str(job.photo), "max_retries": s.max_retries, "checks": s.checks, "format": s.format,
            "platforms": s.platform_names, "generation": describe,
            "config_overrides": [o for o in overrides if not o.startswith("models.dir=")],
            "torch_threads": torch.get_num_threads(),
            "torch_backends": {"cudnn_benchmark": torch.backends.cudnn.benchmark,
                               "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32},
            "parameters": parameters, "build_s": round(build_s, 1), "workbench_open_s": round(open_s, 1),
            "peak_gpu_memory_gib": peak_gib,
        },
        "livecam": livecam,
        "baseline": base,
        "gate_and_files_overhead_s": round(live_s - base_s, 3),
        "livecam_over_baseline": round(live_s / base_s, 3) if base_s else None,
        "target": {"what": TARGET["what"], "limit_s": TARGET["limit_s"], "measured_s": live_s,
                   "met": live_s <= TARGET["limit_s"] if at_target else None,
                   **({} if at_target else {"note": "not applicable: needs CUDA, 1024 px, 7 styles x 4 variants, "
                                                    "full-size models"})},
    }
    out = args.out or Path("benchmarks/results") / (
        f"stills_gpu_{'tiny_' if args.tiny else ''}{device_slug(info['device'])}.json")
    from livecam.live.stats import write_json

    write_json(out, result)
    print_summary(result)
    print(f"wrote {out}")
    return 0


def package_versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        with suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def print_summary(result: dict[str, Any]) -> None:
    s, live, base, target = result["settings"], result["livecam"], result["baseline"], result["target"]
    print(f"{result['device']}, {result['dtype']}: {len(s['styles'])} styles x {s['variants']} variants at "
          f"{s['size']} px, {s['steps']} steps, strength {s['strength']}")
    print(f"livecam  {live['seconds']:8.2f} s  ({live['candidates']} candidates, {live['kept']} kept, "
          f"{live['files']} files, {live['per_candidate_s']:.3f} s each)")
    print("  phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in live["phases_s"].items() if v is not None))
    print(f"baseline {base['seconds']:8.2f} s  ({base['candidates']} pipeline calls, "
          f"{base['per_candidate_s']:.3f} s each)")
    print(f"gate + files + the rest on top of plain generation: {result['gate_and_files_overhead_s']:.2f} s")
    verdict = {True: "MET", False: "NOT MET", None: "n/a"}[target["met"]]
    print(f"target: {target['what']} <= {target['limit_s']:g} s: {verdict} ({target['measured_s']:.2f} s)",
          file=sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
