"""What the GPU benchmarks share: the preflight that says whether one can run here, the machine and versions
for the JSON, quiet libraries, torch's CPU threads, and a watch for non-finite outputs."""

from __future__ import annotations

import importlib
import logging
import os
import platform
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

DTYPES = ("fp16", "bf16", "fp32")
VERSIONED = ("torch", "diffusers", "transformers", "peft", "safetensors", "numpy", "mediapipe", "openvino",
             "pillow", "tqdm", "opencv-contrib-python", "opencv-python", "opencv-python-headless")


def preflight(script: str, device_name: str, tiny: bool, modules: tuple[str, ...] = ("diffusers",)) -> Any:
    """The torch.device a GPU benchmark may run on, or None after one line on stderr saying why not: no
    torch, no CUDA (only --tiny runs on a CPU: full size there would take hours), or a missing package."""
    try:
        import torch
    except ImportError:
        print(f"{script}: PyTorch is not installed (see benchmarks/gpu_setup.md)", file=sys.stderr)
        return None
    device = torch.device(device_name)
    if (device.type == "cuda" or not tiny) and not (device.type == "cuda" and torch.cuda.is_available()):
        print(f"{script}: a CUDA GPU is needed (torch.cuda.is_available() is False); "
              f"`python -m benchmarks.{script} --tiny --device cpu` runs a smoke test on the CPU", file=sys.stderr)
        return None
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            print(f"{script}: {module} is not installed (pip install -e \".[diffusion]\"; see "
                  "benchmarks/gpu_setup.md)", file=sys.stderr)
            return None
    return device


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def machine(device: Any) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    with suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    info: dict[str, Any] = {"device_type": device.type, "cpu": cpu, "cores": os.cpu_count(),
                            "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=torch.cuda.get_device_name(device), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["device"] = f"CPU ({cpu})"
    return info


def package_versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        with suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages the benchmarks use (those not installed left out)."""
    return {"python": platform.python_version(), **package_versions(*VERSIONED)}


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """diffusers and transformers at error level while inside: a benchmark casts modules and truncates
    the tiny tokenizer's prompt on purpose, and their warnings would repeat on every frame."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])


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


def smoke_threads(tiny: bool, device: Any) -> int:
    """torch threads for a run: 1 for a --tiny run on the CPU (its timings mean nothing), else 0 (as they are)."""
    return 1 if tiny and device.type == "cpu" else 0


def _all_finite(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all()) if value.is_floating_point() else True
    if isinstance(value, (tuple, list)):
        return all(_all_finite(v) for v in value)
    return True


@contextmanager
def finite_watch(modules: list[Any]) -> Iterator[dict[str, bool]]:
    """Whether every output of `modules` stayed finite while inside (random weights in fp16 could overflow,
    and the uint8 output would hide a NaN)."""
    seen = {"finite": True}

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        seen["finite"] = seen["finite"] and _all_finite(output)

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


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
