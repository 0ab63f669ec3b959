"""Identity encoders (`engine.types.FaceEncoder`): face-embedding networks for enrolment checks and likeness.

Two backends:

- `reid` (default): Intel Open Model Zoo face-reidentification-retail-0095, OpenVINO IR, Apache-2.0, a
  pinned download like every other registry file. Commercially usable; small (2.2 MB) and fast on a CPU.
- `arcface`: insightface's ArcFace ResNet-50 (buffalo_l `w600k_r50.onnx`) through onnxruntime, CUDA when
  it is usable, else the CPU. More accurate, but its weights are for non-commercial research only, so
  livecam never downloads them: it uses a file the user configured or that insightface already fetched.

The runtimes (openvino, onnxruntime) are imported when an encoder is built, so importing this module is
cheap and a missing package is reported with what to install.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.alignment import ARCFACE_112, REID_128, align_face, five_points, l2_normalise
from engine.types import FaceEncoder, Landmarks, RGBImage
from models.native_log import native_stderr_silenced
from models.registry import ARCFACE_W600K, FACE_REID_BIN, FACE_REID_XML
from models.store import ModelUnavailable, resolve

log = logging.getLogger(__name__)

BACKENDS = ("reid", "arcface")

REID_THRESHOLD = 0.37
"""Same-person cosine for `reid`, measured by benchmarks/face_encoder_calibration.py on the 16 shared test
photos (benchmarks/results/face_encoder_calibration.json): the 27 same-person pairs score 0.581-0.885
(median 0.766), the 92 different-person pairs -0.177-0.167 (median 0.001); 0.37 is the gap's midpoint."""

ARCFACE_THRESHOLD = 0.45
"""Same-person cosine for `arcface`, NOT measured here (the weights cannot be shipped with the tests): the
value deepface uses for insightface's buffalo_l (cosine distance 0.55, serengil/deepface
deepface/config/threshold.py). Best-accuracy thresholds reported for ArcFace ResNets on LFW are lower
(about 0.28), so 0.45 errs towards calling a face someone else."""


def _import_runtime(module: str, package: str, backend: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelUnavailable(f"the `{backend}` identity encoder needs the {package} package: "
                               f"pip install {package}") from e


class _Closing:
    """Context-manager plumbing shared by the encoders; `close()` itself must be idempotent."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class OpenVinoReidEncoder(_Closing):
    """face-reidentification-retail-0095 on OpenVINO's CPU device: a 128x128 BGR 0-255 face aligned on
    Open Model Zoo's five reference points in, a 256-d embedding out. One instance per thread."""

    name = "reid"
    size = 128

    def __init__(self, xml: Path, weights: Path | None = None, threshold: float = REID_THRESHOLD) -> None:
        ov = _import_runtime("openvino", "openvino", self.name)
        core = ov.Core()
        model = core.read_model(model=str(xml), weights=str(weights) if weights else None)
        # f32 inference everywhere: on CPUs with bf16 units OpenVINO would otherwise pick bf16 by itself, and
        # the calibrated threshold would then depend on the machine.
        self._compiled: Any = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self._output = self._compiled.output(0)
        self.threshold = threshold
        self._closed = False

    def embed(self, image: RGBImage, landmarks: Landmarks) -> npt.NDArray[np.float32]:
        """(256,) float32, L2-normalised."""
        if self._closed:
            raise RuntimeError("OpenVinoReidEncoder is closed")
        crop = align_face(image, five_points(landmarks), REID_128, self.size)
        # The network was trained on BGR 0..255 (Open Model Zoo's model card); NCHW.
        blob = np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
        result = self._compiled(blob)[self._output]
        return l2_normalise(result)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._compiled = None


class ArcFaceOnnxEncoder(_Closing):
    """An insightface ArcFace recognition model (w600k_r50.onnx or one with its signature: a 1x3x112x112
    float input, a 1x512 output) on onnxruntime. One instance per thread."""

    name = "arcface"
    size = 112

    def __init__(self, path: Path, threshold: float = ARCFACE_THRESHOLD,
                 providers: Sequence[str] | None = None) -> None:
        ort = _import_runtime("onnxruntime", "onnxruntime-gpu", self.name)
        wanted = list(providers) if providers is not None else _auto_providers(ort)
        # A CUDA provider that cannot load (no CUDA libraries, no GPU) prints a multi-line error from C++
        # and onnxruntime falls back to the CPU by itself; the fallback is logged below in one line.
        with native_stderr_silenced():
            self._session: Any = ort.InferenceSession(str(path), providers=wanted)
        used = self._session.get_providers()
        if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in used:
            log.info("arcface encoder: CUDA is not usable here (see onnxruntime's CUDA requirements); "
                     "running on the CPU")
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or not _fits(inputs[0].shape, (3, self.size, self.size)):
            raise ModelUnavailable(f"{path} is not an ArcFace recognition model: expected one input of shape "
                                   f"Nx3x{self.size}x{self.size}, found {[(i.name, i.shape) for i in inputs]}")
        self._input = inputs[0].name
        self._output = outputs[0].name
        self.providers: list[str] = list(used)
        self.threshold = threshold
        self._closed = False

    def embed(self, image: RGBImage, landmarks: Landmarks) -> npt.NDArray[np.float32]:
        """(512,) float32 for w600k_r50, L2-normalised."""
        if self._closed:
            raise RuntimeError("ArcFaceOnnxEncoder is closed")
        crop = align_face(image, five_points(landmarks), ARCFACE_112, self.size)
        # insightface feeds RGB (its ArcFaceONNX calls blobFromImages(swapRB=True) on BGR frames), scaled
        # to [-1, 1] by mean 127.5 and std 127.5; NCHW.
        blob = (crop.transpose(2, 0, 1)[None].astype(np.float32) - 127.5) / 127.5
        (result,) = self._session.run([self._output], {self._input: blob})
        return l2_normalise(result)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._session = None


def _fits(shape: Sequence[int | str | None], chw: tuple[int, int, int]) -> bool:
    """An NCHW input shape that accepts `chw`; symbolic (named or None) dimensions accept anything."""
    return len(shape) == 4 and all(not isinstance(d, int) or d == want for d, want in zip(shape[1:], chw, strict=True))


def _auto_providers(ort: ModuleType) -> list[str]:
    available = ort.get_available_providers()
    # onnxruntime-gpu lists CUDA whenever it was built with it; whether it loads is known only at session
    # creation, which falls back to the CPU.
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def arcface_path(override: str = "") -> Path:
    """Where the ArcFace weights are: the configured path, else insightface's own cache. Raises
    ModelUnavailable saying how to get them (and that they are non-commercial) when they are not there."""
    model = ARCFACE_W600K
    path = Path(override or model.default_path).expanduser()
    if path.is_file():
        return path
    where = f"models.{model.name} = {override!r} names no file" if override else f"{path} is missing"
    raise ModelUnavailable(
        f"the `arcface` identity encoder needs {model.filename} ({model.source}) and {where}. Its weights are "
        f"for NON-COMMERCIAL research use only, so livecam does not download them: {model.how_to_get}; or set "
        f"models.{model.name} = \"PATH\" in config.toml. For commercial use choose the `reid` encoder "
        "(Apache-2.0)."
    )


def load_face_encoder(backend: str, model_dir: Path, overrides: dict[str, str], download: bool) -> FaceEncoder:
    """The identity encoder `backend` ("reid" or "arcface"), its files resolved per config.

    `overrides` maps registry names (face_reid_xml, face_reid_bin, arcface) to configured paths
    (empty or absent: the model directory, or insightface's cache for arcface). Raises ModelUnavailable
    with what to do when a file or a runtime package is missing.
    """
    if backend == "reid":
        xml = resolve(FACE_REID_XML, model_dir, overrides.get(FACE_REID_XML.name, ""), download)
        weights = resolve(FACE_REID_BIN, model_dir, overrides.get(FACE_REID_BIN.name, ""), download)
        return OpenVinoReidEncoder(xml, weights)
    if backend == "arcface":
        return ArcFaceOnnxEncoder(arcface_path(overrides.get(ARCFACE_W600K.name, "")))
    raise ValueError(f"identity encoder {backend!r}: expected one of {', '.join(BACKENDS)}")
