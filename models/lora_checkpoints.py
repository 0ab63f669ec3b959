"""Checkpoints and resuming of identity training: every `checkpoint_every` steps the adapters' weights, the
optimizer's (and loss scaler's) state and the step's figures go to `out_dir/checkpoints/step-NNNNNN/`, written
whole or not at all, only the newest kept. A checkpoint names what it was trained on (the photos' and captions'
fingerprint) and with which settings, so a resume that would not repeat the uninterrupted run is refused.
No RNG state is saved: every random draw of training depends only on (seed, step) (see `models.lora_training`).

torch and safetensors are imported inside the functions, as everywhere in `models/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.types import RGBImage
from models.lora_adapters import adapter_weights
from models.training_settings import TrainingSettings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_FORMAT = 1
"""Version of the checkpoint layout (state.json's "format")."""
# Settings a resumed run may change: they do not change what the steps compute.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "gradient_checkpointing")


def latest_checkpoint(out_dir: str | Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint under `out_dir/checkpoints`, or None."""
    found = []
    for path in (Path(out_dir) / CHECKPOINTS).glob("step-*"):
        suffix = path.name.removeprefix("step-")
        if path.is_dir() and suffix.isdigit() and (path / "state.json").is_file():
            found.append((int(suffix), path))
    return max(found) if found else None


def checkpoint_to_resume(out: Path, resume: bool, settings: TrainingSettings,
                         fingerprint: str) -> tuple[Path, dict[str, Any]] | None:
    """With `resume`, the newest checkpoint under `out` (its folder and state.json), checked to continue this
    run exactly (ValueError when it cannot: made with other photos or settings, or past `settings.steps`).
    Otherwise, or when there is none, None, and any older checkpoints are removed: a fresh run's checkpoints
    must not mix with an older run's."""
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        folder = checkpoint[1]
        state: dict[str, Any] = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        _check_resumable(state, settings, fingerprint, folder)
        return folder, state
    if (out / CHECKPOINTS).exists():
        if resume:
            log.info("no checkpoint in %s: training from the start", out / CHECKPOINTS)
        shutil.rmtree(out / CHECKPOINTS)
    return None


def discard_checkpoints(out: Path) -> None:
    """Remove every checkpoint under `out`: once the LoRA is saved, nothing is left to resume."""
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)


def examples_fingerprint(examples: Sequence[tuple[RGBImage, str]], resolution: int) -> str:
    """What a checkpoint was trained on: the photos' pixels and the captions."""
    digest = hashlib.sha256(str(resolution).encode())
    for image, caption in examples:
        digest.update(np.ascontiguousarray(image).tobytes())
        digest.update(caption.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _check_resumable(state: dict[str, Any], settings: TrainingSettings, fingerprint: str, folder: Path) -> None:
    if state.get("format") != _FORMAT:
        raise ValueError(f"resume: {folder} is a checkpoint of another format ({state.get('format')!r}); train "
                         "again without resume")
    if int(state.get("step", 0)) > settings.steps:
        raise ValueError(f"steps = {settings.steps}: the checkpoint in {folder} is already at step {state['step']}; "
                         "ask for at least as many steps, or train again without resume")
    if state.get("fingerprint") != fingerprint:
        raise ValueError(f"resume: the checkpoint in {folder} was trained on other photos or captions; train "
                         "again without resume, or use another output folder")
    saved = state.get("settings", {})
    changed = [f"{name} ({saved.get(name)!r} -> {value!r})" for name, value in _training_fields(settings).items()
               if name not in RESUMABLE_CHANGES and saved.get(name) != value]
    if changed:
        raise ValueError(f"resume: the checkpoint in {folder} was trained with other settings: {', '.join(changed)}; "
                         f"only {', '.join(RESUMABLE_CHANGES)} may change when resuming")


def _training_fields(settings: TrainingSettings) -> dict[str, Any]:
    """TrainingSettings' own fields: a subclass (the config's [enroll]) may add fields training ignores."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(TrainingSettings)}


def save_checkpoint(out: Path, step: int, modules: dict[str, Any], optimizer: Any, scaler: Any, *,
                    settings: TrainingSettings, fingerprint: str, train_loss: float,
                    eval_losses: list[tuple[int, float]]) -> None:
    """out/checkpoints/step-NNNNNN/: adapter weights, optimizer (and loss scaler) state, state.json (the step,
    the settings, the examples' fingerprint, the smoothed training loss, the evaluation losses). Written to a
    temporary folder and renamed, so a crash never leaves half a checkpoint; the previous one is removed
    after."""
    import torch
    from safetensors.torch import save_file

    state = {"format": _FORMAT, "step": step, "settings": _training_fields(settings), "fingerprint": fingerprint,
             "train_loss": train_loss, "eval_losses": eval_losses}
    folder = out / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:06d}.", dir=folder))
    try:
        save_file({k: v.cpu() for k, v in adapter_weights(modules).items()}, str(tmp / "adapter.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.iterdir():
        if old != final:  # older checkpoints, and temporary folders a crash left behind
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, state: dict[str, Any], modules: dict[str, Any], optimizer: Any, scaler: Any,
                    device: torch.device) -> tuple[int, float, list[tuple[int, float]]]:
    """Put a checkpoint's weights and optimizer state in place; returns (step, smoothed loss, eval losses)."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(folder / "adapter.safetensors"))
    current = adapter_weights(modules)
    if set(saved) != set(current):
        raise ValueError(f"resume: the checkpoint in {folder} has other adapter weights than this model takes; "
                         "train again without resume")
    with torch.no_grad():
        for name, module in modules.items():
            for param_name, param in module.named_parameters():
                if ".lora_" in param_name:
                    param.copy_(saved[f"{name}:{param_name}"])
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    if scaler is not None and (folder / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    eval_losses = [(int(s), float(v)) for s, v in state.get("eval_losses", [])]
    return int(state["step"]), float(state.get("train_loss", math.nan)), eval_losses
