"""The models the stills benchmark (`benchmarks/stills_gpu.py`) runs on: random-weight SDXL components, the
face model files from ../shared/assets, and the identity encoder, timed, or its stand-in where OpenVINO is
not installed (the GPU machine: OpenVINO's 59 MB do not fit in what travels to it).

The stand-in (`StandInReidEncoder`) does what the re-id encoder does around its network, for real: the same
five-point alignment to the same 128x128 reference, BGR NCHW float input; the network is a random-weight
convolution stack of about the re-id network's size (0.61 GFLOP against face-reidentification-retail-0095's
0.59, a 256-d L2-normalised output) run by torch on the CPU, as OpenVINO runs the real one. Its embeddings
mean nothing (the benchmark keeps every candidate: `still.checks=""`), its cost is of the right order; the
JSON names which encoder ran, how often, and its time per call.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
import numpy.typing as npt

from tests.media import assets_dir

if TYPE_CHECKING:
    from engine.denoiser import DiffusionComponents
    from engine.types import FaceEncoder, Landmarks, RGBImage

ENCODERS = ("auto", "reid", "standin")
# The face models' registry names -> their files in ../shared/assets (the re-id pair only for the real encoder).
MODEL_FILES = {
    "FACE_LANDMARKER": "models/face_landmarker/face_landmarker.task",
    "SELFIE_SEGMENTER": "models/segmentation/selfie_segmentation.tflite",
    "FACE_DETECTOR": "models/face_detection/face_detection_yunet_2023mar.onnx",
}
REID_FILES = {
    "FACE_REID_XML": "models/face_recognition/face-reidentification-retail-0095/FP16/"
                     "face-reidentification-retail-0095.xml",
    "FACE_REID_BIN": "models/face_recognition/face-reidentification-retail-0095/FP16/"
                     "face-reidentification-retail-0095.bin",
}


def choose_encoder(wanted: str) -> tuple[str, str]:
    """(encoder, why) for `--face-encoder`: auto takes the real re-id network when OpenVINO can be imported."""
    has_openvino = importlib.util.find_spec("openvino") is not None
    if wanted == "reid":
        return "reid", "asked for (--face-encoder reid)"
    if wanted == "standin":
        return "standin", "asked for (--face-encoder standin)"
    if has_openvino:
        return "reid", "openvino is installed"
    return "standin", "openvino is not installed (it does not fit in what travels to the GPU machine)"


def face_model_dir(directory: Path, encoder: str) -> Path:
    """`directory` holding the face models of ../shared/assets under their registry file names (the re-id
    network's files only when `encoder` is the real one)."""
    from models import registry

    files = {**MODEL_FILES, **(REID_FILES if encoder == "reid" else {})}
    for name, relative in files.items():
        source = assets_dir() / relative
        if not source.is_file():
            raise SystemExit(f"stills_gpu: {source} is missing (the benchmark needs ../shared/assets, or "
                             "LIVECAM_ASSETS pointing at it)")
        (directory / getattr(registry, name).filename).symlink_to(source)
    return directory


def build_components(tiny: bool, device: Any, dtype: Any, seed: int) -> DiffusionComponents:
    """The diffusion components stills load (text encoders, UNet, ControlNet, full VAE), random weights."""
    from engine.denoiser import DiffusionComponents
    from tests.tiny_sdxl import full_size_components, full_size_text_encoders, tiny_components, tiny_tokenizer

    if tiny:
        models = tiny_components(seed)
        for key in ("unet", "controlnet", "vae", "tiny_vae", "text_encoder", "text_encoder_2"):
            models[key] = models[key].to(device, dtype).eval().requires_grad_(False)
    else:
        models = full_size_components(device, dtype, controlnet=True, seed=seed)
        models["text_encoder"], models["text_encoder_2"] = full_size_text_encoders(device, dtype, seed)
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


# --- the identity encoder ----------------------------------------------------------------------------------------

def standin_network(seed: int = 0) -> Any:
    """A random-weight convolution stack of about face-reidentification-retail-0095's cost: 1x3x128x128 in,
    1x256 out, 0.61 GFLOP (multiply-adds counted twice)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    widths = [(3, 32, 2), (32, 64, 1), (64, 64, 2), (64, 128, 1), (128, 128, 2), (128, 256, 1)]
    layers: list[nn.Module] = []
    for c_in, c_out, stride in widths:
        layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 256)]
    return nn.Sequential(*layers).eval().requires_grad_(False)


class StandInReidEncoder:
    """A `FaceEncoder` standing in for the re-id network where OpenVINO is missing (see the module docstring)."""

    name = "reid"
    size = 128

    def __init__(self) -> None:
        from models.face_encoder import REID_THRESHOLD

        self.threshold = REID_THRESHOLD
        self._network = standin_network()

    def embed(self, image: RGBImage, landmarks: Landmarks) -> npt.NDArray[np.float32]:
        import torch

        from engine.alignment import REID_128, align_face, five_points, l2_normalise

        crop = align_face(image, five_points(landmarks), REID_128, self.size)
        blob = np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
        with torch.inference_mode():
            out = self._network(torch.from_numpy(blob)).numpy()
        return l2_normalise(out)

    def close(self) -> None:
        pass


class TimedEncoder:
    """A `FaceEncoder` that counts and times the calls of the one it wraps."""

    def __init__(self, inner: FaceEncoder, record: list[float]) -> None:
        self.inner = inner
        self.name = inner.name
        self.threshold = inner.threshold
        self._record = record

    def embed(self, image: RGBImage, landmarks: Landmarks) -> npt.NDArray[np.float32]:
        t0 = time.perf_counter()
        try:
            return self.inner.embed(image, landmarks)
        finally:
            self._record.append(time.perf_counter() - t0)

    def close(self) -> None:
        self.inner.close()


@contextmanager
def timed_face_encoders(encoder: str) -> Iterator[list[float]]:
    """While inside, every identity encoder livecam loads (`livecam.assembly.face_encoder`, which the still
    workbench calls) is `encoder` ("reid": the real one; "standin") wrapped in `TimedEncoder`; yields the
    list of call times (seconds) they fill."""
    import livecam.assembly as assembly

    calls: list[float] = []
    real: Callable[..., FaceEncoder] = assembly.face_encoder

    def load(config: Any, backend: str | None = None) -> FaceEncoder:
        inner: FaceEncoder = real(config, backend) if encoder == "reid" else StandInReidEncoder()
        return TimedEncoder(inner, calls)

    with mock.patch.object(assembly, "face_encoder", load):
        yield calls


def encoder_figures(encoder: str, why: str, calls: list[float]) -> dict[str, Any]:
    """The JSON's account of the identity encoder: which ran, why, how often and how long each call took."""
    network = ("face-reidentification-retail-0095 on OpenVINO (CPU)" if encoder == "reid" else
               "stand-in: the real five-point alignment, then a random-weight CNN of the re-id network's size "
               "(0.61 GFLOP, 128x128 in, 256-d out) on torch (CPU); its embeddings mean nothing")
    return {"used": encoder, "why": why, "network": network, "calls": len(calls), "counted": "warm-up included",
            "call_ms_median": round(float(np.median(calls)) * 1000, 3) if calls else None,
            "call_ms_total": round(sum(calls) * 1000, 1)}
