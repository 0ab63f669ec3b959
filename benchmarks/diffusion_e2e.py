"""Benchmark: the live diffusion renderer end to end on a GPU, CPU work included, on a real video, beside the
Denoiser alone and the plain diffusers pipeline on the same models in the same run.

Models: the real SDXL architectures with random weights built directly on the device (UNet, ControlNet,
TAESD-XL, the full VAE for the baseline, both text encoders: `tests.tiny_sdxl`), and a random rank-16 LoRA on
the UNet's attention fused into the weights as an enrolled identity's is (`--lora-rank 0`: none). Speed does
not depend on the weights.

Input: `matting/video/video_01_S001-04__sh_bookshelf.mp4` of ../shared/assets (1280x720, 30 fps, one person),
decoded before the timed loop. Each live run is the app's own loop (`livecam.live.loop.run_loop`): the face
tracked by MediaPipe's FaceLandmarker on the main thread while the compose thread segments (MediaPipe selfie
segmentation) and renders the frame before (the render uses the tracker's predicted face, as the app does),
then `DiffusionRenderer.render` (studio canvas with background, relight and skin, crop, pose image, upload,
TAESD encode, UNet + ControlNet, decode, paste, keep-face, badge) with the config's defaults apart from
`--size`, `--steps`, `similar_threshold` (0: every frame rendered) and `pipeline`. Warm-up frames first, in
the same loop; then the figures start afresh.

Runs (`--runs`), interleaved over rounds, each reporting the median over rounds:

- `live_on`, `live_off`: `engine.pipeline` on / off, every frame handed over the moment the loop asks for it
  (throughput). fps over the frames published; capture->publish from the moment the loop took the frame the
  published picture shows (with the pipeline, the frame before) to its publish (the loop takes frame n while
  n-1 is still composed, so this includes that wait); render latency (the `render` section); per-stage wall
  times (`sections`) and, on CUDA, the GPU time of upload, encode, UNet and decode and of the whole frame
  from CUDA events (`gpu_sections`, around the engine's sections) and the engine's own per-stage times
  (`engine_stages`: CUDA events recorded by the Denoiser, the ControlNet apart; wall clock on the CPU).
- `paced_on`, `paced_off`: the same fed by a capture thread at `--camera-fps` (60: the target's rate), as a
  camera: the capture->publish latency a viewer sees; frames the loop is too slow for are dropped.
- `denoiser`: `Denoiser` alone on 512 px crops (`benchmarks.diffusion_gpu.run_once`: each call synchronous).
- `baseline`: a plain `StableDiffusionXLControlNetImg2ImgPipeline` call per crop (full VAE, embeddings passed
  directly, no CPU work around it: the baseline's best case).
- `live_on_reuse`: `live_on` with `engine.controlnet_reuse` at its default (the ControlNet's residuals reused
  while the pose stands still; every other run runs the ControlNet on every frame).
- `live_on_opencv`: `live_on` with `engine.square_on_device = "off"`: the crop resize and feathered paste by
  OpenCV on the CPU, as before they moved to the device (the other runs: on the device on CUDA).
- `live_on_compiled`, `paced_on_compiled`, `denoiser_compiled`, `live_on_compiled_reuse` (not by default):
  with `engine.compile = "on"` and `engine.cuda_graphs` (every other run: compile "off"); the warm-up (compile,
  capture) is waited for before the loop starts and reported as `warm_up_s`.

The target (512 px, 1 step): a `live_*` run's fps >= 60 and >= 5x the baseline's, and the p95 capture->publish
of the `paced_*` run of the same mode (of the `live_*` run itself when there is none) <= 50 ms, with no
failed frame.

The JSON is written after every round (a run cut short by a time cap keeps what it measured: `complete` says).

    python -m benchmarks.diffusion_e2e [--out benchmarks/results/diffusion_e2e_<device>.json] [--frames 100]
        [--warmup 10] [--rounds 3] [--size 512] [--steps 1] [--runs ...] [--camera-fps 30] [--lora-rank 16]
        [--tiny --device cpu]

`--tiny --device cpu` runs every path on tiny random models (64 px, 640x360 frames, one torch thread) in well
under a minute: a smoke test (its timings mean nothing). `bash benchmarks/gpu_suite.sh` runs it on the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from benchmarks.diffusion_gpu import TARGET, baseline_steps, build_pipeline, make_inputs, run_once
from benchmarks.gpu_common import (
    DTYPES,
    device_slug,
    machine,
    preflight,
    quiet_libraries,
    smoke_threads,
    torch_dtype,
    torch_threads,
    versions,
)
from benchmarks.live_harness import BenchSink, GpuSections, MemoryReader, OnDemandSource, SwitchStats, load_frames
from tests.media import assets_dir

VIDEO = "matting/video/video_01_S001-04__sh_bookshelf.mp4"
RUNS = ("live_on", "live_off", "paced_on", "paced_off", "denoiser", "baseline", "live_on_reuse", "live_on_opencv",
        "live_on_compiled", "paced_on_compiled", "denoiser_compiled", "live_on_compiled_reuse")
DEFAULT_RUNS = RUNS[:8]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/diffusion_e2e_<device>.json)")
    parser.add_argument("--frames", type=int, default=None, help="measured frames per run and round (100; 6 tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up frames per run and round (10; 2 tiny)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; 1 tiny)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(DEFAULT_RUNS))
    parser.add_argument("--size", type=int, default=None, help="side of the rendered square (512; 64 tiny)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--output-size", type=int, nargs=2, default=None, metavar=("WIDTH", "HEIGHT"),
                        help="output canvas (the config's, 1280x720; 640x360 tiny)")
    parser.add_argument("--camera-fps", type=float, default=60.0, help="the paced runs' camera rate")
    parser.add_argument("--lora-rank", type=int, default=16, help="the fused random identity LoRA's rank; 0 = none")
    parser.add_argument("--video", type=Path, default=None, help=f"input video (default ../shared/assets/{VIDEO})")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default fp16 on CUDA, fp32 on the CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny random models (a smoke test of the code path)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.frames = args.frames or (6 if tiny else 100)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 10)
    args.rounds = args.rounds or (1 if tiny else 3)
    args.size = args.size or (64 if tiny else 512)
    args.output_size = tuple(args.output_size) if args.output_size else ((640, 360) if tiny else None)
    args.video = args.video or assets_dir() / VIDEO
    if not args.video.is_file():
        parser.error(f"--video {args.video}: no such file (the default needs ../shared/assets or LIVECAM_ASSETS)")
    return args


def build_models(args: argparse.Namespace, device: Any, dtype: Any) -> dict[str, Any]:
    """unet, controlnet, tiny_vae, vae, text encoders and tokenizers, scheduler: full size on CUDA (built there
    directly), tiny with --tiny."""
    from tests.tiny_sdxl import full_size_components, full_size_text_encoders, tiny_components, tiny_tokenizer

    if args.tiny:
        models = tiny_components(args.seed)
        for key in ("unet", "controlnet", "vae", "tiny_vae", "text_encoder", "text_encoder_2"):
            models[key] = models[key].to(device, dtype).eval().requires_grad_(False)
    else:
        models = full_size_components(device, dtype, controlnet=True, seed=args.seed)
        models["text_encoder"], models["text_encoder_2"] = full_size_text_encoders(device, dtype, args.seed)
        models["tokenizer"], models["tokenizer_2"] = tiny_tokenizer(), tiny_tokenizer()
    models["vae"].register_to_config(force_upcast=False)  # the baseline's VAE in fp16, as sdxl-vae-fp16-fix
    return models


class Bench:
    """What every run shares: the models, the config, the decoded frames, the segmenter."""

    def __init__(self, args: argparse.Namespace, device: Any, dtype: Any) -> None:
        from engine.denoiser import DiffusionComponents, encode_prompt, host_pipeline
        from livecam.config import load_config
        from models.segmenter import MediaPipeSegmenter

        self.args, self.device = args, device
        self.cuda = device.type == "cuda"
        overrides = ["engine.kind=diffusion", f"engine.size={args.size}", f"engine.steps={args.steps}",
                     f"engine.strength={args.strength}", "engine.similar_threshold=0", f"engine.seed={args.seed}"]
        if args.output_size:
            overrides += [f"output.width={args.output_size[0]}", f"output.height={args.output_size[1]}"]
        self.config = load_config(None, overrides)
        self.output_size = (self.config.output.width, self.config.output.height)
        t0 = time.perf_counter()
        self.models = build_models(args, device, dtype)
        m = self.models
        self.components = DiffusionComponents(
            unet=m["unet"], tiny_vae=m["tiny_vae"], text_encoder=m["text_encoder"], tokenizer=m["tokenizer"],
            scheduler=m["scheduler"], device=device, dtype=dtype, controlnet=m["controlnet"],
            text_encoder_2=m["text_encoder_2"], tokenizer_2=m["tokenizer_2"])
        self.build_s = time.perf_counter() - t0
        self.lora = self._fuse_lora(args.lora_rank)
        self.prompt = self.config.styles[self.config.engine.style].prompt(self.config.engine.subject)
        self.embeds = encode_prompt(host_pipeline(self.components), self.prompt, device)
        self.frames = load_frames(args.video, 150 if not args.tiny else 30, args.output_size if args.tiny else None)
        landmarker, segmenter = (assets_dir() / "models" / p for p in (
            "face_landmarker/face_landmarker.task", "segmentation/selfie_segmentation.tflite"))
        self.landmarker = landmarker
        self.segmenter = MediaPipeSegmenter(segmenter)
        self.crops = make_inputs(args.size, 8, args.seed)
        self._pipe: Any = None

    def _fuse_lora(self, rank: int) -> dict[str, Any]:
        """A random LoRA fused into the UNet once, as `DiffusionRenderer(identity=...)` fuses an enrolled one."""
        if rank == 0:
            return {"rank": 0, "fused": False}
        from engine.denoiser import host_pipeline
        from engine.identity_fuser import IdentityFuser
        from tests.tiny_sdxl import random_lora

        lora = random_lora(self.components.unet, rank, self.args.seed)
        t0 = time.perf_counter()
        IdentityFuser(self.components, host_pipeline(self.components)).fuse(lora, 1.0)
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return {"rank": rank, "fused": True, "layers": len(lora) // 2, "fuse_s": round(time.perf_counter() - t0, 2),
                "parameters": sum(t.numel() for t in lora.values())}

    def settings(self, pipeline: bool, compiled: bool, reuse: bool = False, opencv: bool = False) -> Any:
        """The config's engine settings with the run's switches; the ControlNet runs on every frame unless
        `reuse` (then at the config's default threshold); the square on the device unless `opencv`."""
        base = self.config.engine.diffusion
        return dataclasses.replace(base, pipeline="on" if pipeline else "off", compile="on" if compiled else "off",
                                   cuda_graphs=compiled, controlnet_reuse=base.controlnet_reuse if reuse else 0.0,
                                   square_on_device="off" if opencv else "auto")

    def run(self, name: str) -> dict[str, Any]:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            if name.startswith(("live", "paced")):
                result = self.live(pipeline="_on" in name, paced=name.startswith("paced"),
                                   compiled="compiled" in name, reuse=name.endswith("reuse"),
                                   opencv=name.endswith("opencv"))
            elif name.startswith("denoiser"):
                result = self.denoiser(compiled=name.endswith("compiled"))
            else:
                result = self.baseline()
        except torch.OutOfMemoryError as e:  # recorded; the other runs may still fit
            result = {"error": f"out of memory: {str(e).splitlines()[0]}"}
            torch.cuda.empty_cache()
        if self.cuda and "error" not in result:
            result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        return result

    def live(self, pipeline: bool, paced: bool, compiled: bool, reuse: bool = False,
             opencv: bool = False) -> dict[str, Any]:
        from engine.diffusion import DiffusionRenderer
        from livecam.assembly import build_studio
        from livecam.live.capture import FrameSource
        from livecam.live.loop import run_loop
        from livecam.live.stats import Stats
        from models.face_landmarker import MediaPipeFaceTracker

        args = self.args
        stats = SwitchStats()
        sections = GpuSections(stats, self.cuda)
        renderer = DiffusionRenderer(self.components, self.settings(pipeline, compiled, reuse, opencv),
                                     build_studio(self.config, sections), self.prompt, sections=sections)
        t0 = time.perf_counter()
        renderer.prepare()
        # A compiled engine warms up on a worker thread while the app shows studio frames; measured here apart.
        renderer.wait_warm()
        warm_up_s = time.perf_counter() - t0

        def warm() -> None:
            stats.switch()
            sections.reset()
            renderer.stage_times(clear=True)

        sink = BenchSink(self.output_size, args.warmup, args.warmup + 1 + args.frames, warm)
        reader = MemoryReader(self.frames, args.camera_fps)
        source: Any = FrameSource(reader, pace=True) if paced else OnDemandSource(reader)
        t = self.config.tracking
        try:
            with MediaPipeFaceTracker(self.landmarker, smoothing=t.smoothing) as tracker:
                if paced:
                    source.start()
                run_loop(source, tracker, self.segmenter, renderer, sink, cast(Stats, stats), predict=t.predict)
        finally:
            if paced:
                source.close()
            counts = renderer.counters()
            stages = renderer.stage_times()
            renderer.close()
        s = stats.current.summary()
        sections_ms = s["sections"]
        render = sections_ms.get("render", {})
        return {
            "fps": s["fps"], "latency_ms_p50": s["latency_ms_p50"], "latency_ms_p95": s["latency_ms_p95"],
            "render_ms_p50": render.get("ms_p50"), "render_ms_p95": render.get("ms_p95"),
            "frames_out": s["frames_out"], "drops_with_warmup": s["drops"], "no_face_frames": s["no_face_frames"],
            "render_errors": s["render_errors"], "counts": counts, "sections": sections_ms,
            "gpu_sections": sections.summary(), "engine_stages": stages, "warm_up_s": round(warm_up_s, 2),
            "square_on_device": renderer.on_device,
        }

    def denoiser(self, compiled: bool) -> dict[str, Any]:
        from engine.denoiser import Denoiser

        d = Denoiser(self.components, self.settings(False, compiled))
        d.prepare(*self.embeds)

        def call(i: int) -> Any:
            crop, cond = self.crops[i % len(self.crops)]
            return d(crop, cond, i)[0]

        return run_once(call, self.args.frames, self.args.warmup, self.device)

    def baseline(self) -> dict[str, Any]:
        from PIL import Image

        args = self.args
        if self._pipe is None:
            self._pipe = build_pipeline(self.models, controlnet=True)
        n_steps = baseline_steps(args.steps, args.strength)

        def call(i: int) -> Any:
            crop, cond = self.crops[i % len(self.crops)]
            return self._pipe(image=Image.fromarray(crop), control_image=Image.fromarray(cond),
                              prompt_embeds=self.embeds[0], pooled_prompt_embeds=self.embeds[1],
                              num_inference_steps=n_steps, strength=args.strength, guidance_scale=0.0,
                              output_type="np").images

        return run_once(call, self.args.frames, self.args.warmup, self.device)

    def close(self) -> None:
        self.segmenter.close()


HEADLINE = ("fps", "latency_ms_p50", "latency_ms_p95", "render_ms_p50", "render_ms_p95", "gpu_ms_p50",
            "gpu_ms_p95")


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the headline figures; the sections and counts of the median round (by fps)."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return {"error": rounds[0]["error"], "rounds": rounds}
    out: dict[str, Any] = {}
    for key in HEADLINE:
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            out[key] = round(float(np.median(values)), 3)
    median = sorted(ok, key=lambda r: r["fps"])[len(ok) // 2]
    for key in ("frames_out", "drops_with_warmup", "no_face_frames", "render_errors", "counts", "sections",
                "gpu_sections", "engine_stages", "warm_up_s", "square_on_device"):
        if key in median:
            out[key] = median[key]
    if "peak_memory_gib" in ok[0]:
        out["peak_memory_gib"] = max(r["peak_memory_gib"] for r in ok)
    out["rounds"] = [{k: r.get(k) for k in (*HEADLINE, "peak_memory_gib", "error") if r.get(k) is not None}
                     for r in rounds]
    return out


def target_check(runs: dict[str, Any], applicable: bool) -> dict[str, Any]:
    """The issue's end-to-end target per pipeline mode: the unpaced run's fps and speedup over the plain pipeline
    of the same run, the paced run's p95 capture->publish (the unpaced one's without a paced run); a run with
    failed frames (the studio canvas stood in) does not pass."""
    block: dict[str, Any] = {"config": "512x512, 1 step, ControlNet, TAESD-XL, fused LoRA",
                             "fps_min": TARGET["fps_min"], "latency_ms_p95_max": TARGET["latency_ms_p95_max"],
                             "speedup_min": TARGET["speedup_min"], "applicable": applicable}
    if not applicable:
        block["note"] = "--tiny or another size/steps: the figures check the code path, not the target"
    base = (runs.get("baseline") or {}).get("fps")
    verdicts = []
    for name in ("live_on", "live_off", "live_on_reuse", "live_on_compiled", "live_on_compiled_reuse"):
        run = runs.get(name)
        if not run or run.get("fps") is None:
            continue
        paced = runs.get(name.replace("live", "paced")) or {}
        latency_from = name.replace("live", "paced") if paced.get("latency_ms_p95") is not None else name
        latency = runs[latency_from]["latency_ms_p95"]
        failures = sum(runs[n].get("counts", {}).get("failures", 0) for n in {name, latency_from})
        speedup = round(run["fps"] / base, 2) if base else None
        check = {"fps": run["fps"], "latency_ms_p95": latency, "latency_from": latency_from, "speedup": speedup,
                 "failures": failures, "fps_ok": run["fps"] >= TARGET["fps_min"],
                 "latency_ok": latency <= TARGET["latency_ms_p95_max"],
                 "speedup_ok": None if speedup is None else speedup >= TARGET["speedup_min"]}
        check["passed"] = bool(check["fps_ok"] and check["latency_ok"] and check["speedup_ok"] and not failures)
        block[name] = check
        verdicts.append(check["passed"])
    block["passed"] = any(verdicts) if applicable and verdicts else None
    return block


def report(bench: Bench, rounds: dict[str, list[dict[str, Any]]], complete: bool, run_s: float) -> dict[str, Any]:
    args = bench.args
    runs = {name: summarise(r) for name, r in rounds.items()}
    base = (runs.get("baseline") or {}).get("fps")
    info = machine(bench.device)
    import torch

    return {
        "benchmark": "diffusion_e2e",
        "complete": complete,
        "device": info["device"],
        "models": ("tiny random SDXL (tests.tiny_sdxl.tiny_components)" if args.tiny else
                   "SDXL base UNet + SDXL ControlNet + TAESD-XL + SDXL VAE + both SDXL text encoders, random "
                   "weights (tests.tiny_sdxl), built on the device"),
        "machine": info,
        "versions": versions(),
        "dtype": str(bench.components.dtype).removeprefix("torch."),
        "input": {"video": args.video.name, "frames_decoded": len(bench.frames),
                  "frame_size": [bench.frames[0].shape[1], bench.frames[0].shape[0]],
                  "faces": "tracked in the loop by MediaPipe FaceLandmarker on the main thread, beside the compose "
                           "thread (the render takes the predicted face, tracking.predict)",
                  "segmentation": "MediaPipe selfie segmentation on the compose thread, per frame",
                  "decoding": "before the timed loop"},
        "settings": dataclasses.asdict(bench.settings(True, False)),
        "lora": bench.lora,
        "config": {"runs": args.runs, "frames": args.frames, "warmup": args.warmup, "rounds": args.rounds,
                   "size": args.size, "steps": args.steps, "strength": args.strength,
                   "output_size": list(bench.output_size), "camera_fps": args.camera_fps, "tiny": args.tiny,
                   "seed": args.seed, "torch_threads": torch.get_num_threads(),
                   "baseline_num_inference_steps": baseline_steps(args.steps, args.strength),
                   "build_s": round(bench.build_s, 1), "run_s": round(run_s, 1)},
        "runs": runs,
        "speedup_vs_baseline": {n: round(r["fps"] / base, 2) for n, r in runs.items()  # fps of the unpaced runs
                                if base and n != "baseline" and not n.startswith("paced") and r.get("fps")},
        "target": target_check(runs, applicable=not args.tiny and args.size == 512 and args.steps == 1),
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['device']}, {result['dtype']}, {result['config']['size']} px, {result['config']['steps']} step(s);"
          f" fps, capture->publish p50/p95 (ms), render p50/p95 (ms)")
    for name, run in result["runs"].items():
        if "error" in run:
            print(f"{name:<18} error: {run['error']}")
            continue
        cells = [f"{run.get(k, float('nan')):8.1f}" for k in ("fps", "latency_ms_p50", "latency_ms_p95")]
        render = [f"{run[k]:8.1f}" if run.get(k) is not None else f"{'-':>8}" for k in ("render_ms_p50",
                                                                                         "render_ms_p95")]
        speedup = result["speedup_vs_baseline"].get(name)
        failures = run.get("counts", {}).get("failures")
        print(f"{name:<18} {' '.join(cells + render)} {'' if speedup is None else f'{speedup:6.2f}x'}"
              f"{f'  FAILED FRAMES {failures}' if failures else ''}")
    t = result["target"]
    verdict = "n/a" if not t["applicable"] else {True: "PASS", False: "FAIL", None: "not measured"}[t["passed"]]
    print(f"target: >= {t['fps_min']:g} fps, p95 <= {t['latency_ms_p95_max']:g} ms, >= {t['speedup_min']:g}x: "
          f"{verdict}{'' if result['complete'] else ' (incomplete run)'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modules = ("diffusers", "transformers", "mediapipe", *(("peft",) if args.lora_rank else ()))
    device = preflight("diffusion_e2e", args.device, args.tiny, modules)
    if device is None:
        return 2
    from livecam.live.stats import write_json

    with quiet_libraries(), torch_threads(smoke_threads(args.tiny, device)):
        dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
        bench = Bench(args, device, torch_dtype(dtype_name))
        out = args.out or Path("benchmarks/results") / (
            f"diffusion_e2e_{'tiny_' if args.tiny else ''}{device_slug(machine(device)['device'])}.json")
        rounds: dict[str, list[dict[str, Any]]] = {}
        t0 = time.perf_counter()
        try:
            for r in range(args.rounds):
                for name in args.runs:
                    rounds.setdefault(name, []).append(bench.run(name))
                    last = rounds[name][-1]
                    print(f"round {r + 1} {name}: " + ", ".join(f"{k} {last[k]}" for k in (*HEADLINE, "error")
                                                              if last.get(k) is not None), flush=True)
                    write_json(out, report(bench, rounds, complete=False, run_s=time.perf_counter() - t0))
            result = report(bench, rounds, complete=True, run_s=time.perf_counter() - t0)
            write_json(out, result)
        finally:
            bench.close()
    print_table(result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
