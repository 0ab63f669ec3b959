"""Resolve a registry model to a local file: config path, then the model directory, then a download."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir
from tqdm import tqdm

from models.registry import REGISTRY, ModelFile

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0


class ModelUnavailable(Exception):
    """A model file cannot be found or fetched; the message names the file, the URL and where to put it."""


def model_dir(configured: str = "") -> Path:
    """Where model files live: `configured` (config `models.dir`), else $LIVECAM_MODEL_DIR, else the
    user cache directory."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("LIVECAM_MODEL_DIR", "")
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("livecam")) / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelStatus:
    """Where a model stands locally, for `livecam models` and `livecam doctor`."""

    model: ModelFile
    path: Path
    present: bool
    verified: bool
    overridden: bool
    problem: str = ""
    """Why a present file is not usable (a checksum mismatch, not the model at all); empty otherwise."""


def status(model: ModelFile, directory: Path, override: str = "") -> ModelStatus:
    """Local status of `model` without downloading anything."""
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            return ModelStatus(model, path, False, False, True)
        problem = format_problem(model, path) or ""
        return ModelStatus(model, path, True, not problem, True, problem)
    path = directory / model.filename
    present = path.is_file()
    if present and sha256_of(path) != model.sha256:
        return ModelStatus(model, path, True, False, False, "does not match its pinned sha256: delete it to "
                                                            "download it again")
    return ModelStatus(model, path, present, present, False)


_TFLITE_IDENTIFIER = b"TFL3"
"""The FlatBuffers file identifier of a TFLite model, at bytes 4-8 of the file."""


def _looks_like(head: bytes) -> str:
    """A guess at what a wrong file is, for the message ("" when there is none worth saying)."""
    if not head:
        return "it is empty; "
    if head.startswith(b"\xff\xd8\xff"):
        return "it is a JPEG image; "
    if head.startswith(b"\x89PNG"):
        return "it is a PNG image; "
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "it is a text file; "
    return ""


def format_problem(model: ModelFile, path: Path) -> str | None:
    """Why the file at `path` cannot be `model` by its content, or None when it may be (or its format is not
    checked). MediaPipe itself reports a wrong file only as a bare RuntimeError ("Unable to open zip
    archive") or ValueError, so this runs before it is given the file."""
    if not model.file_format:
        return None
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if model.file_format == "task":
        members = " and ".join(model.bundle_members)
        expected = f"expected a .task bundle like {model.filename} (a zip archive holding {members})"
        try:
            with zipfile.ZipFile(path) as bundle:
                names = set(bundle.namelist())
        except (zipfile.BadZipFile, OSError):
            return f"not a valid MediaPipe model: {_looks_like(head)}{expected}"
        missing = [name for name in model.bundle_members if name not in names]
        if missing:
            return f"not a valid MediaPipe model: a zip archive without {missing[0]} (another model?); {expected}"
        return None
    if model.file_format == "tflite":
        if head[4:8] != _TFLITE_IDENTIFIER:
            return f"not a valid MediaPipe model: {_looks_like(head)}expected a TFLite model file like {model.filename}"
        return None
    raise ValueError(f"model {model.name}: unknown file_format {model.file_format!r}")


def _how_to_get(model: ModelFile, directory: Path) -> str:
    return (
        f"download {model.url} on a machine with internet access and put it at "
        f"{directory / model.filename} (or set models.{model.name} = \"PATH\" in config.toml)"
    )


def resolve(model: ModelFile, directory: Path, override: str = "", download: bool = True) -> Path:
    """The local path of `model`, downloading it into `directory` if needed and allowed.

    An `override` path (from config) is used as is: it must exist and, for a MediaPipe model, look like one
    (`format_problem`). A file in `directory` must match the
    pinned sha256. Raises ModelUnavailable with a message that says how to get the file.
    """
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"models.{model.name} = {override!r}: no such file")
        problem = format_problem(model, path)
        if problem is not None:
            raise ModelUnavailable(f"models.{model.name} = {override!r}: {problem}")
        return path
    path = directory / model.filename
    if path.is_file():
        actual = sha256_of(path)
        if actual != model.sha256:
            raise ModelUnavailable(
                f"{path} has sha256 {actual[:12]}…, expected {model.sha256[:12]}… ({model.source}); "
                f"delete it to download it again, or {_how_to_get(model, directory)}"
            )
        return path
    if not download:
        raise ModelUnavailable(f"{model.filename} is missing and downloads are off (models.download): "
                               + _how_to_get(model, directory))
    try:
        _download(model, path)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise ModelUnavailable(
            f"{model.filename} is not in {directory} and could not be downloaded ({reason}): "
            + _how_to_get(model, directory)
        ) from e
    return path


def resolve_by_name(name: str, directory: Path, override: str = "", download: bool = True) -> Path:
    return resolve(REGISTRY[name], directory, override, download)


def _download(model: ModelFile, path: Path) -> None:
    """Fetch `model.url` to `path` through a temporary file, checking the sha256 before it lands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", model.filename, model.url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(model.url, headers={"User-Agent": "livecam"})
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
            tqdm(total=model.size, unit="B", unit_scale=True, desc=model.filename, leave=False) as bar,
        ):
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        if digest.hexdigest() != model.sha256:
            raise ModelUnavailable(
                f"{model.url} gave a file with sha256 {digest.hexdigest()[:12]}…, expected "
                f"{model.sha256[:12]}…; nothing was saved. " + _how_to_get(model, path.parent)
            )
        shutil.move(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
