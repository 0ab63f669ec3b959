"""Benchmark: the diffusion engine's per-frame core (`Denoiser`) on a CUDA GPU, against a plain diffusers
pipeline in the same run.

Models: the real SDXL architectures (UNet, ControlNet, TAESD-XL, the full VAE) with random weights, built
offline by `tests.tiny_sdxl.full_size_components`: speed does not depend on the weights, so no
download is needed. Random prompt embeddings of the real shapes stand in for the text encoders.

For each size x steps x ControlNet on/off ("configs", e.g. `512_1step_cn`):

- `livecam`: `Denoiser` with TAESD-XL, fixed noise, precomputed embeddings, channels_last and, for 2+ steps,
  the stream batch (one UNet call per frame). Latency is one `denoiser(crop, condition)` call, upload and
  download included, on varying input crops (CUDA events and wall clock, synchronised).
- `baseline`: a plain `StableDiffusionXLControlNetImg2ImgPipeline` (`StableDiffusionXLImg2ImgPipeline`
  without ControlNet) on the same UNet and ControlNet, with the full AutoencoderKL, the embeddings passed
  directly, guidance_scale 0, output_type "np", called once per frame on PIL images; `num_inference_steps`
  and `strength` give the same real steps (1 step at strength 0.5 = 2 steps x 0.5, timestep 499). It runs
  the same modules, so channels_last too: the difference is the pipeline's path, not the weights' layout.
- `livecam_compiled` (opt-in, `--compile`): the same with `DiffusionSettings(compile=True, cuda_graphs=True)`.

Runs are interleaved over rounds, each after a warm-up; each reports the median over rounds. Peak GPU memory
is `torch.cuda.max_memory_allocated`, reset per run, weights of every model included (they stay resident).
The issue's target, "512x512, 1 step, ControlNet + TAESD: >= 60 fps, p95 <= 50 ms, >= 5x baseline", is
checked in the JSON's `target` block.

    python -m benchmarks.diffusion_gpu [--out benchmarks/results/diffusion_gpu_<device>.json] [--frames 50]
        [--warmup 5] [--rounds 3] [--sizes 512 1024] [--steps 1 2] [--dtype fp16] [--compile]
        [--baseline-configs all] [--tiny --device cpu]

`--tiny --device cpu` runs the whole code path on tiny random models at 64 px in seconds (a smoke test).
See benchmarks/gpu_setup.md for a GPU machine without diffusers.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.gpu_common import (
    DTYPES,
    device_slug,
    finite_watch,
    machine,
    preflight,
    quiet_libraries,
    smoke_threads,
    torch_threads,
    versions,
)

TARGET = {"fps_min": 60.0, "latency_ms_p95_max": 50.0, "speedup_min": 5.0}
"""The issue's target, on 512x512, 1 step, ControlNet + TAESD (TARGET_CASE)."""


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: render size, real denoising steps, ControlNet on or off."""

    size: int
    steps: int
    controlnet: bool

    @property
    def name(self) -> str:
        return f"{self.size}_{self.steps}step_{'cn' if self.controlnet else 'nocn'}"


TARGET_CASE = Case(512, 1, True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/diffusion_gpu_<device>.json)")
    parser.add_argument("--frames", type=int, default=50, help="measured frames per run and round")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up frames per run and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default 512 1024 (64 with --tiny)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--controlnet", choices=("on", "off"), nargs="+", default=["on", "off"])
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default fp16 on CUDA, fp32 on the CPU")
    parser.add_argument("--compile", action="store_true",
                        help="also run DiffusionSettings(compile=True, cuda_graphs=True) for --compile-configs")
    parser.add_argument("--compile-configs", nargs="+", default=None,
                        help="config names for the compiled rows, or 'all' (default: the target config)")
    parser.add_argument("--baseline-configs", nargs="+", default=["all"],
                        help="config names (e.g. 512_1step_cn) for the baseline pipeline, 'all' or 'none'")
    parser.add_argument("--baseline-vae-upcast", action="store_true",
                        help="the baseline VAE in fp32 as the stock SDXL VAE config asks (force_upcast); "
                             "default off, as with the fp16-fix VAE: the stronger baseline")
    parser.add_argument("--tiny", action="store_true", help="tiny random models (a smoke test of the code path)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def select(names: list[str], cases: list[Case], what: str) -> set[str]:
    """The case names `names` picks ('all', 'none' or names); an unknown name is an error naming the choices."""
    known = [c.name for c in cases]
    if names == ["all"]:
        return set(known)
    if names == ["none"]:
        return set()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"diffusion_gpu: {what} {unknown}: expected 'all', 'none' or some of {known}")
    return set(names)


def tiny_models(device: Any, dtype: Any, seed: int) -> dict[str, Any]:
    """`tiny_components` on `device` in `dtype`, with random embeddings of its shapes in place of the text
    encoders, as `full_size_components` gives them."""
    import torch

    from tests.tiny_sdxl import tiny_components

    c = tiny_components(seed)
    for key in ("unet", "controlnet", "vae", "tiny_vae"):
        c[key] = c[key].to(device, dtype).eval().requires_grad_(False)
    cfg = c["unet"].config
    pooled_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    generator = torch.Generator("cpu").manual_seed(seed)
    c["prompt_embeds"] = torch.randn((1, 77, cfg.cross_attention_dim), generator=generator).to(device, dtype)
    c["pooled_embeds"] = torch.randn((1, pooled_dim), generator=generator).to(device, dtype)
    return c


def make_inputs(size: int, count: int, seed: int) -> list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]:
    """`count` different (crop, condition) pairs: smooth random images, and skeleton-like lines on black."""
    import cv2

    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        small = rng.integers(0, 256, (max(size // 16, 2), max(size // 16, 2), 3), dtype=np.uint8)
        crop = np.ascontiguousarray(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), np.uint8)
        cond = np.zeros((size, size, 3), np.uint8)
        for _ in range(8):
            p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.line(cond, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), color, max(1, size // 64))
        pairs.append((crop, cond))
    return pairs


class Timer:
    """Per-call latency: wall clock (the call is synchronous) and, on CUDA, events around it."""

    def __init__(self, device: Any) -> None:
        self.cuda = device.type == "cuda"
        self.wall_ms: list[float] = []
        self.gpu_ms: list[float] = []

    def measure(self, call: Callable[[], Any]) -> Any:
        import torch

        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter_ns()
        out = call()
        if self.cuda:
            end.record()
            torch.cuda.synchronize()
        self.wall_ms.append((time.perf_counter_ns() - t0) / 1e6)
        if self.cuda:
            self.gpu_ms.append(start.elapsed_time(end))
        return out


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def run_once(call: Callable[[int], Any], frames: int, warmup: int, device: Any) -> dict[str, Any]:
    """Warm-up, then `frames` timed calls (`call(i)` renders input i); fps over the measured span."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup):
        call(i)
    timer = Timer(device)
    t0 = time.perf_counter()
    for i in range(frames):
        timer.measure(partial(call, warmup + i))
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {
        "fps": round(frames / elapsed, 2),
        "latency_ms_p50": _pct(timer.wall_ms, 50), "latency_ms_p95": _pct(timer.wall_ms, 95),
        "gpu_ms_p50": _pct(timer.gpu_ms, 50), "gpu_ms_p95": _pct(timer.gpu_ms, 95),
    }
    if cuda:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        result["resident_memory_gib"] = round(resident / 2**30, 3)
    return result


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (the largest peak memory), and every round's figures."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return {"error": rounds[0]["error"], "rounds": rounds}
    out: dict[str, Any] = {}
    for key in ("fps", "latency_ms_p50", "latency_ms_p95", "gpu_ms_p50", "gpu_ms_p95"):
        values = [r[key] for r in ok if r.get(key) is not None]
        out[key] = round(float(np.median(values)), 3) if values else None
    if "peak_memory_gib" in ok[0]:
        out["peak_memory_gib"] = max(r["peak_memory_gib"] for r in ok)
        out["resident_memory_gib"] = ok[0]["resident_memory_gib"]
    out["rounds"] = rounds
    return out


def check_finite(runners: dict[tuple[str, str], Callable[[int], Any]], cases: list[Case],
                 modules: list[Any]) -> dict[tuple[str, str], bool]:
    """One untimed pass per eager run (`steps` frames, so the stream batch's batched call too): whether the
    UNet and ControlNet outputs (livecam) or the images (baseline) stayed finite. Compiled runs are left
    out: hooks would change their graphs."""
    steps = {c.name: c.steps for c in cases}
    finite: dict[tuple[str, str], bool] = {}
    for (name, kind), call in runners.items():
        if kind == "livecam":
            with finite_watch(modules) as seen:
                for i in range(steps[name]):
                    call(i)
            finite[(name, kind)] = seen["finite"]
        elif kind == "baseline":
            finite[(name, kind)] = bool(np.isfinite(call(0)).all())
    return finite


def build_pipeline(models: dict[str, Any], controlnet: bool) -> Any:
    """The plain diffusers img2img pipeline on the same modules (its own scheduler instance: it keeps state)."""
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    scheduler = type(models["scheduler"]).from_config(models["scheduler"].config)
    common = {"vae": models["vae"], "text_encoder": None, "text_encoder_2": None, "tokenizer": None,
              "tokenizer_2": None, "unet": models["unet"], "scheduler": scheduler, "add_watermarker": False}
    pipe: Any
    if controlnet:
        pipe = StableDiffusionXLControlNetImg2ImgPipeline(controlnet=models["controlnet"], **common)
    else:
        pipe = StableDiffusionXLImg2ImgPipeline(**common)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def baseline_steps(steps: int, strength: float) -> int:
    """num_inference_steps that makes diffusers' img2img run `steps` real steps at `strength`."""
    return max(steps, round(steps / strength))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = preflight("diffusion_gpu", args.device, args.tiny)
    if device is None:
        return 2
    with quiet_libraries(), torch_threads(smoke_threads(args.tiny, device)):
        return run(args, device)


def run(args: argparse.Namespace, device: Any) -> int:
    import torch
    from PIL import Image

    from engine.denoiser import Denoiser, DiffusionComponents
    from engine.diffusion_settings import DiffusionSettings
    from tests.tiny_sdxl import full_size_components

    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    sizes = args.sizes or ([64] if args.tiny else [512, 1024])
    cases = [Case(size, steps, cn == "on") for size in sizes for steps in args.steps for cn in args.controlnet]
    # --tiny checks the same code path on its own size.
    target_case = dataclasses.replace(TARGET_CASE, size=64) if args.tiny else TARGET_CASE
    baseline_names = select(args.baseline_configs, cases, "--baseline-configs")
    compile_names: set[str] = set()
    if args.compile:
        default = [target_case.name] if target_case in cases else [cases[0].name]
        compile_names = select(args.compile_configs or default, cases, "--compile-configs")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes per run: let cuDNN pick its fastest kernels

    t_build = time.perf_counter()
    models = (tiny_models(device, dtype, args.seed) if args.tiny
              else full_size_components(device, dtype, controlnet=any(c.controlnet for c in cases), seed=args.seed))
    # The published SDXL VAE asks for fp32 (force_upcast); the fp16-fix VAE, which fast setups use, does not.
    models["vae"].register_to_config(force_upcast=args.baseline_vae_upcast)
    build_s = time.perf_counter() - t_build
    parameters = {k: sum(p.numel() for p in models[k].parameters())
                  for k in ("unet", "controlnet", "vae", "tiny_vae") if models.get(k) is not None}
    embeds, pooled = models["prompt_embeds"], models["pooled_embeds"]

    def components(controlnet: bool) -> DiffusionComponents:
        return DiffusionComponents(unet=models["unet"], tiny_vae=models["tiny_vae"], text_encoder=None,
                                   tokenizer=None, scheduler=models["scheduler"], device=device, dtype=dtype,
                                   controlnet=models["controlnet"] if controlnet else None)

    def settings(case: Case, compiled: bool) -> DiffusionSettings:
        return DiffusionSettings(size=case.size, steps=case.steps, strength=args.strength, seed=args.seed,
                                 stream_batch=True, channels_last=True, compile="on" if compiled else "off",
                                 cuda_graphs=compiled)

    inputs = {size: make_inputs(size, 8, args.seed) for size in sizes}
    pipelines = {cn: build_pipeline(models, cn) for cn in {c.controlnet for c in cases if c.name in baseline_names}}
    runners: dict[tuple[str, str], Callable[[int], Any]] = {}
    for case in cases:
        pairs = inputs[case.size]
        variants = [("livecam", False)] + ([("livecam_compiled", True)] if case.name in compile_names else [])
        for kind, compiled in variants:
            denoiser = Denoiser(components(case.controlnet), settings(case, compiled))
            denoiser.prepare(embeds, pooled)

            def livecam(i: int, d: Denoiser = denoiser, pairs: list[Any] = pairs) -> Any:
                crop, cond = pairs[i % len(pairs)]
                return d(crop, cond, i)[0]

            runners[(case.name, kind)] = livecam
        if case.name in baseline_names:
            pipe = pipelines[case.controlnet]
            n_steps = baseline_steps(case.steps, args.strength)

            def baseline(i: int, pipe: Any = pipe, pairs: list[Any] = pairs, case: Case = case,
                         n_steps: int = n_steps) -> Any:
                crop, cond = pairs[i % len(pairs)]
                extra = {"control_image": Image.fromarray(cond)} if case.controlnet else {}
                result = pipe(image=Image.fromarray(crop), prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                              num_inference_steps=n_steps, strength=args.strength, guidance_scale=0.0,
                              output_type="np", **extra)
                return result.images

            runners[(case.name, "baseline")] = baseline

    finite = check_finite(runners, cases, [m for m in (models["unet"], models["controlnet"]) if m is not None])
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    t_run = time.perf_counter()
    for _ in range(args.rounds):
        for (name, kind), call in runners.items():
            try:
                result = run_once(call, args.frames, args.warmup, device)
            except torch.OutOfMemoryError as e:  # record it and go on: other configs may still fit
                result = {"error": f"out of memory: {str(e).splitlines()[0]}"}
                torch.cuda.empty_cache()
            rounds.setdefault((name, kind), []).append(result)
    run_s = time.perf_counter() - t_run

    results: dict[str, Any] = {}
    for case in cases:
        row: dict[str, Any] = {"size": case.size, "steps": case.steps, "controlnet": case.controlnet,
                               "baseline_num_inference_steps": baseline_steps(case.steps, args.strength)}
        for kind in ("livecam", "livecam_compiled", "baseline"):
            if (case.name, kind) in rounds:
                row[kind] = summarise(rounds[(case.name, kind)])
                row[kind]["outputs_finite"] = finite.get((case.name, kind))
            else:
                row[kind] = None
        for kind, key in (("livecam", "speedup"), ("livecam_compiled", "speedup_compiled")):
            fast, base = row[kind], row["baseline"]
            ok = fast and base and fast.get("fps") and base.get("fps")
            row[key] = round(fast["fps"] / base["fps"], 2) if ok else None
        results[case.name] = row

    result = {
        "benchmark": "diffusion_gpu",
        "models": ("tiny random SDXL (tests.tiny_sdxl.tiny_components)" if args.tiny else
                   "SDXL base UNet + SDXL ControlNet + TAESD-XL + SDXL VAE architectures, random weights "
                   "(tests.tiny_sdxl.full_size_components)"),
        "machine": machine(device),
        "versions": versions(),
        "dtype": dtype_name,
        "settings": dataclasses.asdict(settings(cases[0], False)),
        "config": {"frames": args.frames, "warmup": args.warmup, "rounds": args.rounds, "sizes": sizes,
                   "steps": args.steps, "controlnet": args.controlnet, "strength": args.strength,
                   "seed": args.seed, "tiny": args.tiny, "baseline_configs": sorted(baseline_names),
                   "compile_configs": sorted(compile_names), "baseline_vae_force_upcast": args.baseline_vae_upcast,
                   "parameters": parameters, "build_s": round(build_s, 1), "run_s": round(run_s, 1)},
        "results": results,
        "target": target_check(results, target_case, applicable=not args.tiny),
    }
    out = args.out or Path("benchmarks/results") / (
        f"diffusion_gpu_{'tiny_' if args.tiny else ''}{device_slug(result['machine']['device'])}.json")
    from livecam.live.stats import write_json

    write_json(out, result)
    print_table(result)
    print(f"wrote {out}")
    return 0


def target_check(results: dict[str, Any], case: Case, applicable: bool) -> dict[str, Any]:
    """The issue's target on `case`, for the eager and (when run) the compiled livecam rows."""
    block: dict[str, Any] = {"config": case.name, "fps_min": TARGET["fps_min"],
                             "latency_ms_p95_max": TARGET["latency_ms_p95_max"],
                             "speedup_min": TARGET["speedup_min"], "applicable": applicable}
    if not applicable:
        block["note"] = "--tiny: the figures check the code path, not the target"
    row = results.get(case.name)
    if row is None:
        block.update(passed=None, note=f"{case.name} was not in this run")
        return block
    verdicts = []
    for kind, speed_key in (("livecam", "speedup"), ("livecam_compiled", "speedup_compiled")):
        run = row.get(kind)
        if not run or run.get("fps") is None:
            continue
        speedup = row.get(speed_key)
        check = {"fps": run["fps"], "latency_ms_p95": run["latency_ms_p95"], "speedup": speedup,
                 "fps_ok": run["fps"] >= TARGET["fps_min"],
                 "latency_ok": run["latency_ms_p95"] <= TARGET["latency_ms_p95_max"],
                 "speedup_ok": None if speedup is None else speedup >= TARGET["speedup_min"]}
        check["passed"] = bool(check["fps_ok"] and check["latency_ok"] and check["speedup_ok"])
        block[kind] = check
        verdicts.append(check["passed"])
    block["passed"] = any(verdicts) if applicable and verdicts else None
    return block


def print_table(result: dict[str, Any]) -> None:
    def cell(run: dict[str, Any] | None) -> str:
        if not run:
            return f"{'-':>25}"
        if "error" in run:
            return f"{'error':>25}"
        mem = f"{run['peak_memory_gib']:5.1f}G" if "peak_memory_gib" in run else "     -"
        return f"{run['fps']:7.1f} {run['latency_ms_p50']:6.1f} {run['latency_ms_p95']:6.1f} {mem}"

    print(f"{result['machine']['device']}, {result['dtype']}; fps, latency p50 and p95 (ms), peak memory")
    print(f"{'config':<18} {'livecam':>25} {'compiled':>25} {'baseline':>25} {'speedup':>8}")
    for name, row in result["results"].items():
        speedup = row["speedup_compiled"] or row["speedup"]
        print(f"{name:<18} {cell(row['livecam'])} {cell(row['livecam_compiled'])} {cell(row['baseline'])} "
              f"{'-' if speedup is None else f'{speedup:.2f}x':>8}")
    t = result["target"]
    print(f"target {t['config']}: >= {t['fps_min']:g} fps, p95 <= {t['latency_ms_p95_max']:g} ms, "
          f">= {t['speedup_min']:g}x baseline: "
          f"{'n/a' if not t['applicable'] else {True: 'PASS', False: 'FAIL', None: 'not measured'}[t['passed']]}")


if __name__ == "__main__":
    raise SystemExit(main())
