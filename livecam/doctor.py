"""`livecam doctor` and `livecam models`: what is here, what is missing, and what to do about it."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import cv2

from livecam.assembly import REINSTALL
from livecam.config import Config
from livecam.errors import LivecamError
from models.device import gpu_report
from models.registry import HUB_MODELS, REGISTRY, UNPINNED
from models.sources import hub_status
from models.store import model_dir, status

OK, PROBLEM, NOTE = "ok", "!!", "--"


def _line(mark: str, what: str, detail: str) -> None:
    print(f"  {mark:<3}{what:<16}{detail}")


def _check_camera(config: Config) -> bool:
    source = config.input.source
    if not source.isdigit():
        _line(NOTE, "camera", f"input.source is {source!r} (not a camera); skipped")
        return True
    found = []
    for index in range(4):
        cap = cv2.VideoCapture(index)
        try:
            if cap.isOpened():
                ok, frame = cap.read()
                if ok and frame is not None:
                    found.append(f"{index} ({frame.shape[1]}x{frame.shape[0]})")
        finally:
            cap.release()
    wanted = int(source)
    if any(f.startswith(f"{wanted} ") for f in found):
        _line(OK, "camera", f"camera {wanted} works; cameras found: {', '.join(found)}")
        return True
    hint = {
        "Linux": "is it plugged in? `ls /dev/video*`; your user needs the `video` group; close other apps using it",
        "Darwin": "allow camera access for your terminal in System Settings > Privacy & Security > Camera",
        "Windows": "allow desktop apps to use the camera in Settings > Privacy > Camera; close other apps using it",
    }.get(platform.system(), "check that it is connected and not used by another app")
    others = f" (cameras that work: {', '.join(found)}; set input.source)" if found else ""
    _line(PROBLEM, "camera", f"camera {wanted} cannot be read{others}: {hint}")
    return False


def _check_virtual_camera(config: Config) -> bool:
    from livecam.live.outputs.virtualcam import VirtualCamSink

    try:
        sink = VirtualCamSink((config.output.width, config.output.height), config.output.fps,
                              device=config.output.device, backend=config.output.backend)
    except LivecamError as e:
        _line(PROBLEM, "virtual camera", str(e))
        return False
    with sink:
        _line(OK, "virtual camera", f"{sink.device}")
    return True


def _check_display() -> None:
    if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        _line(NOTE, "preview", "no display: `--output preview` cannot open a window here (files and the "
                               "virtual camera still work)")
    else:
        _line(OK, "preview", "a display is available for `--output preview`")


def _check_models(config: Config) -> bool:
    directory = model_dir(config.models.dir)
    good = True
    for model in REGISTRY.values():
        # Default "": a registry entry can exist before config.py has its [models] key.
        st = status(model, directory, getattr(config.models, model.name, ""))
        if st.verified:
            _line(OK, model.name, f"{st.path}")
        elif st.present:
            good = False
            where = f"models.{model.name} = {st.path}:" if st.overridden else f"{st.path}"
            _line(PROBLEM, model.name, f"{where} {st.problem}")
        elif config.models.download:
            _line(NOTE, model.name, f"not downloaded yet: `livecam {model.used_by}` fetches it from {model.url} "
                                    f"(offline: put it at {st.path})")
        elif model.used_by != "run":  # not needed for the camera
            _line(NOTE, model.name, f"missing (needed by `livecam {model.used_by}`): put {model.url} at {st.path}")
        else:
            good = False
            _line(PROBLEM, model.name, f"missing and downloads are off: put {model.url} at {st.path}")
    return good


def _check_diffusion(config: Config, gpu: bool) -> None:
    """Whether the diffusion engine could run, and which engine `auto` will pick; never a failure (the
    studio engine always works)."""
    if importlib.util.find_spec("diffusers") is None or importlib.util.find_spec("torch") is None:
        _line(PROBLEM, "diffusion", f"torch or diffusers is missing (a partial install): {REINSTALL}; "
                                    "`auto` uses the studio engine until then")
        return
    m = config.models
    missing = []
    for key in ("base", "controlnet", "tiny_vae"):
        spec = getattr(m, key)
        model = HUB_MODELS.get(spec)
        if model is not None and hub_status(model) != "in cache":
            missing.append(f"models.{key} = {spec} ({model.repo_id})")
        elif model is None and spec and not Path(spec).expanduser().exists() and "/" not in spec:
            missing.append(f"models.{key} = {spec}")
    if missing:
        _line(NOTE, "diffusion", f"not downloaded: {'; '.join(missing)}; `livecam run --engine diffusion` "
                                 "fetches them (about 9 GB). Until then `auto` uses the studio engine")
    elif not gpu:
        _line(NOTE, "diffusion", "models here, but no CUDA GPU: `auto` uses the studio engine")
    else:
        _line(OK, "diffusion", f"ready: `auto` uses the diffusion engine ({m.base})")


def _package_versions() -> str:
    parts = []
    for name in ("numpy", "opencv-contrib-python", "mediapipe", "pyvirtualcam"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} MISSING")
    return ", ".join(parts)


def run_doctor(config: Config) -> int:
    """Check everything `livecam run` needs; 0 when all is well, 1 when something needs the user."""
    print(f"livecam doctor: Python {sys.version.split()[0]} on {platform.system()} {platform.machine()}")
    _line(OK, "packages", _package_versions())
    results = [_check_models(config), _check_camera(config), _check_virtual_camera(config)]
    _check_display()
    usable, gpu = gpu_report()
    _line(OK if usable else NOTE, "GPU", gpu)
    _check_diffusion(config, usable)
    if all(results):
        print("Everything `livecam run` needs is here.")
        return 0
    print("Fix the lines marked !! (or pick another --input / --output) and run `livecam doctor` again.")
    return 1


def list_models(config: Config) -> None:
    """Print the model registry with each file's local status, then the diffusion engine's Hub models."""
    directory = model_dir(config.models.dir)
    print(f"model directory: {directory}  (models.dir, else $LIVECAM_MODEL_DIR, else the user cache)")
    for model in REGISTRY.values():
        st = status(model, directory, getattr(config.models, model.name, ""))
        state = ("ok" if st.verified else "CHECKSUM MISMATCH" if st.present else "missing")
        if st.overridden:
            state = f"{'ok' if st.verified else 'NOT A VALID MODEL' if st.present else 'MISSING'} (models.{model.name})"
        print(f"\n{model.name}: {state}\n  file     {st.path}\n  what     {model.purpose}\n"
              f"  source   {model.source}\n  licence  {model.licence}\n  size     {model.size:,} bytes\n"
              f"  url      {model.url}\n  sha256   {model.sha256}")
    for unpinned in UNPINNED.values():
        override = getattr(config.models, unpinned.name, "")
        path = Path(override or unpinned.default_path).expanduser()
        state = "ok" if path.is_file() else "missing"
        licence = unpinned.licence if unpinned.commercial_use else f"NON-COMMERCIAL: {unpinned.licence}"
        print(f"\n{unpinned.name}: {state}{f' (models.{unpinned.name})' if override else ''}\n  file     {path}\n"
              f"  what     {unpinned.purpose}\n  source   {unpinned.source}\n  licence  {licence}\n"
              f"  get it   not downloaded by livecam: {unpinned.how_to_get}")

    # The cache lookup needs huggingface_hub (part of the install); the registry prints without it.
    installed = all(importlib.util.find_spec(name) is not None for name in ("diffusers", "huggingface_hub"))
    print("\ndiffusion models (Hugging Face Hub cache; set by models.base, models.controlnet, models.tiny_vae, "
          "models.vae, models.speed_lora)")
    if not installed:
        print(f"  diffusers is missing (a partial install: {REINSTALL}): cache status unknown")
    for hub in HUB_MODELS.values():
        state = hub_status(hub) if installed else "status unknown"
        licence = hub.licence if hub.commercial_use else f"NON-COMMERCIAL: {hub.licence}"
        repo = f"{hub.repo_id} / {hub.weight_name}" if hub.weight_name else hub.repo_id
        steps = f"\n  steps    {hub.default_steps}" if hub.default_steps else ""
        base = f"\n  for      {hub.base}" if hub.base else ""
        print(f"\n{hub.name} ({hub.kind}): {state}\n  repo     {repo} @ {hub.revision}\n  what     {hub.purpose}\n"
              f"  source   {hub.source}\n  licence  {licence}{steps}{base}")
