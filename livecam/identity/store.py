"""Enrolled identities on disk: one folder per person under the user's data directory.

    <data dir>/identities/<name>/
        identity.json                   name, trigger, base model, training settings, photo hashes,
                                        the embedding centroid and its threshold, created time
        pytorch_lora_weights.safetensors the identity LoRA (diffusers format)
        photos/                         the accepted selfies, as given
        dataset/                        the aligned training crops and their captions
        checkpoints/                    training checkpoints (for --resume), removed when training ends

An enrolment builds everything in a hidden staging folder next to it and renames it into place at the
end, so a failed or interrupted enrolment never leaves a half-written identity.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from livecam.errors import LivecamError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
LORA_FILE = "pytorch_lora_weights.safetensors"
METADATA_FILE = "identity.json"


def data_dir() -> Path:
    """$LIVECAM_DATA_DIR, else the platform's user data directory for livecam."""
    env = os.environ.get("LIVECAM_DATA_DIR", "")
    return Path(env).expanduser() if env else Path(user_data_dir("livecam"))


def identities_dir() -> Path:
    return data_dir() / "identities"


def check_name(name: str) -> str:
    """`name` if it is a valid identity name; LivecamError otherwise."""
    if not NAME_PATTERN.fullmatch(name):
        raise LivecamError(f"identity name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', starting "
                           "with a letter or digit")
    return name


def identity_dir(name: str) -> Path:
    return identities_dir() / check_name(name)


def staging_dir(name: str) -> Path:
    """Where an enrolment of `name` is built before it is renamed into place."""
    return identities_dir() / f".{check_name(name)}.partial"


@dataclass(frozen=True)
class Identity:
    """An enrolled identity, as its identity.json describes it."""

    name: str
    folder: Path
    metadata: dict[str, Any]

    @property
    def lora_path(self) -> Path:
        return self.folder / LORA_FILE

    @property
    def trigger(self) -> str:
        return str(self.metadata.get("trigger", ""))

    @property
    def subject(self) -> str:
        """The words the prompt uses for this person (trigger token and class word)."""
        return f"{self.trigger} {self.metadata.get('class_word', 'person')}".strip()


def load_identity(name: str) -> Identity:
    """The enrolled identity `name`; LivecamError naming it and what exists when it is not there."""
    folder = identity_dir(name)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        known = ", ".join(i.name for i in list_identities()) or "none yet"
        raise LivecamError(f"identity {name!r} is not enrolled in {identities_dir()} (enrolled: {known}); "
                           f"create it with `livecam enroll PHOTOS... --name {name}`")
    again = f"delete it with `livecam identities --delete {name}` and enrol again"
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LivecamError(f"{meta_path} cannot be read ({e}); {again}") from None
    problem = _metadata_problem(metadata)
    if problem:
        raise LivecamError(f"{meta_path}: {problem}; {again}")
    if not (folder / LORA_FILE).is_file():
        raise LivecamError(f"identity {name!r} has no {LORA_FILE} in {folder}; {again}")
    return Identity(name, folder, metadata)


# The fields livecam reads from identity.json, with their types (each may be missing: older identities).
_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    **{key: (str, "text") for key in ("name", "trigger", "class_word", "base_model", "encoder", "created", "lora")},
    "photos": (list, "a list"), "centroid": (list, "a list"), "steps": (int, "a whole number"),
    "rank": (int, "a whole number"), "threshold": ((int, float), "a number"),
}


def _metadata_problem(metadata: Any) -> str | None:
    """What makes `metadata` unusable (None: nothing): not an object, or a field of the wrong type."""
    if not isinstance(metadata, dict):
        return f"not a JSON object (a {type(metadata).__name__})"
    for key, (kind, words) in _FIELDS.items():
        value = metadata.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"{key!r} is {value!r}, not {words}"
    centroid = metadata.get("centroid") or []
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in centroid):
        return "'centroid' holds something other than numbers"
    return None


def list_identities() -> list[Identity]:
    """Every complete identity, by name (damaged ones are left out: `find_identities` says why)."""
    return find_identities()[0]


def find_identities() -> tuple[list[Identity], list[str]]:
    """Every complete identity, by name, and for each damaged one (an identity.json that cannot be read or is
    malformed, a missing LoRA) the reason it was left out, naming its file."""
    root = identities_dir()
    if not root.is_dir():
        return [], []
    found, damaged = [], []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not (folder / METADATA_FILE).is_file():
            continue
        try:
            found.append(load_identity(folder.name))
        except LivecamError as e:  # a damaged one: the good ones are still listed
            damaged.append(str(e) if NAME_PATTERN.fullmatch(folder.name) else f"{folder}: {e}")
    return found, damaged


def delete_identity(name: str) -> Path:
    """Remove identity `name` with all its files (selfies, crops, weights); returns the folder removed."""
    folder, staging = identity_dir(name), staging_dir(name)
    if not folder.exists() and not staging.exists():
        raise LivecamError(f"identity {name!r} does not exist in {identities_dir()}")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted enrolment's files too
    if folder.exists() or staging.exists():
        raise LivecamError(f"could not remove everything of identity {name!r} in {identities_dir()}")
    return folder


def resolve_identity_lora(spec: str) -> tuple[Path, Identity | None]:
    """`models.identity`: an enrolled identity's name, or a LoRA file path. Returns the LoRA path and the
    identity (None for a bare file)."""
    path = Path(spec).expanduser()
    if path.suffix == ".safetensors" or os.sep in spec or "/" in spec:
        if not path.is_file():
            raise LivecamError(f"models.identity = {spec!r}: no such file")
        return path, None
    identity = load_identity(spec)
    return identity.lora_path, identity
