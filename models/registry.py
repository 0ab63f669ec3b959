"""Every model file the project uses: what it is, where it comes from, its licence and checksum."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFile:
    """One downloadable model file, pinned by sha256."""

    name: str
    """Registry key, also the config key under [models] that overrides its path."""
    filename: str
    """File name in the model directory."""
    url: str
    sha256: str
    size: int
    licence: str
    source: str
    purpose: str
    used_by: str = "run"
    """The command that needs it (and fetches it when missing): "run" or "enroll"."""
    file_format: str = ""
    """How a file given in its place (models.NAME) is checked before it is opened: "task" (a MediaPipe Tasks
    bundle: a zip archive holding `bundle_members`), "tflite" (a TFLite flatbuffer), "" (not checked)."""
    bundle_members: tuple[str, ...] = ()
    """For a "task" bundle: the models it must hold (telling it from another model's bundle)."""


FACE_LANDMARKER = ModelFile(
    name="face_landmarker",
    filename="face_landmarker.task",
    url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size=3_758_596,
    licence="Apache-2.0",
    source="Google MediaPipe Face Landmarker, float16 v1",
    purpose="478 face landmarks per frame (tracking, framing, relighting)",
    file_format="task",
    bundle_members=("face_detector.tflite", "face_landmarks_detector.tflite"),
)

SELFIE_SEGMENTER = ModelFile(
    name="segmenter",
    filename="selfie_segmentation.tflite",
    # The general (256x256) selfie model: livecam runs it on a square around the head and shoulders
    # (engine.matte.segment_person), where it sees the face about twice as large as the landscape (144x256)
    # model sees it in a whole 16:9 frame; on the shared matting kit that halves the raw confidence's error on
    # the videos. These are the bytes shipped in the mediapipe 0.10.21 wheel and tagged in its repository.
    url="https://raw.githubusercontent.com/google/mediapipe/v0.10.21/mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    size=249_505,
    licence="Apache-2.0",
    source="Google MediaPipe selfie segmentation (general, 256x256), v0.10.21",
    purpose="person mask for background replacement",
    file_format="tflite",
)

_OMZ_REID = ("https://storage.openvinotoolkit.org/repositories/open_model_zoo/2023.0/models_bin/1/"
             "face-reidentification-retail-0095/FP16/face-reidentification-retail-0095")

FACE_REID_XML = ModelFile(
    name="face_reid_xml",
    filename="face-reidentification-retail-0095.xml",
    url=f"{_OMZ_REID}.xml",
    sha256="ce53d2c9c08c0bd1c1660fb8a5b6d0e3e4ec19eb92f1036d2d83a85e83082dce",
    size=350_427,
    licence="Apache-2.0",
    source="Intel Open Model Zoo face-reidentification-retail-0095, FP16 OpenVINO IR (2023.0), network",
    purpose="face embedding (identity encoder `reid`): enrolment checks and the likeness score",
    used_by="enroll",
)

FACE_REID_BIN = ModelFile(
    name="face_reid_bin",
    filename="face-reidentification-retail-0095.bin",
    url=f"{_OMZ_REID}.bin",
    sha256="241229ca3d206321868d46ce74a3c0b06c49cea58db7dc70b2e842ff287545d1",
    size=2_213_628,
    licence="Apache-2.0",
    source="Intel Open Model Zoo face-reidentification-retail-0095, FP16 OpenVINO IR (2023.0), weights",
    purpose="weights of face_reid_xml",
    used_by="enroll",
)

FACE_DETECTOR = ModelFile(
    name="face_detector",
    filename="face_detection_yunet_2023mar.onnx",
    url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    size=232_589,
    licence="MIT",
    source="OpenCV Zoo YuNet face detector (2023mar), runs in cv2.FaceDetectorYN",
    purpose="counts the faces in enrolment photos (5 key points per face)",
    used_by="enroll",
)

REGISTRY: dict[str, ModelFile] = {m.name: m for m in (
    FACE_LANDMARKER, SELFIE_SEGMENTER, FACE_REID_XML, FACE_REID_BIN, FACE_DETECTOR)}


@dataclass(frozen=True)
class UnpinnedModel:
    """A model file that livecam can use but neither ships nor downloads: another tool fetches it, so no
    URL or sha256 is pinned here, and its licence may forbid what livecam's own files allow."""

    name: str
    """Config key under [models] that gives its path."""
    filename: str
    default_path: str
    """Where the tool that fetches it puts it (`~` expanded)."""
    licence: str
    commercial_use: bool
    source: str
    purpose: str
    how_to_get: str


ARCFACE_W600K = UnpinnedModel(
    name="arcface",
    filename="w600k_r50.onnx",
    default_path="~/.insightface/models/buffalo_l/w600k_r50.onnx",
    licence="insightface model pack licence: non-commercial research use only",
    commercial_use=False,
    source="insightface buffalo_l pack, ArcFace ResNet-50 trained on WebFace600K",
    purpose="face embedding (identity encoder `arcface`), an alternative to `reid`",
    # insightface goes in another environment: it requires the CPU `onnxruntime` distribution, which
    # would overwrite livecam's onnxruntime-gpu (both install the same `onnxruntime` module).
    how_to_get=("download https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip "
                "and unzip it into ~/.insightface/models/buffalo_l/, or run insightface once in another "
                "Python environment (`insightface.app.FaceAnalysis(name='buffalo_l').prepare(ctx_id=-1)`), "
                "which downloads it there"),
)

UNPINNED: dict[str, UnpinnedModel] = {m.name: m for m in (ARCFACE_W600K,)}


HUB_KINDS = ("base", "controlnet", "tiny_vae", "vae", "speed_lora")


@dataclass(frozen=True)
class HubModel:
    """A Hugging Face Hub model for the diffusion engine: a diffusers-format repo, or one LoRA file in a repo."""

    name: str
    """Registry key: what `models.base`, `models.controlnet`, ... may name instead of a repo id or a path."""
    repo_id: str
    kind: str
    """base | controlnet | tiny_vae | vae | speed_lora"""
    licence: str
    commercial_use: bool
    """False: the licence does not allow commercial use (or allowing it is not established)."""
    source: str
    purpose: str
    revision: str = "main"
    weight_name: str | None = None
    """The LoRA file inside the repo (speed LoRAs)."""
    default_steps: int | None = None
    """Denoising steps the model was distilled for, where it was."""
    base: str | None = None
    """For a speed LoRA: the repo id of the base model it was trained on."""

    def __post_init__(self) -> None:
        if self.kind not in HUB_KINDS:
            raise ValueError(f"HubModel {self.name}: kind = {self.kind!r}, expected one of {', '.join(HUB_KINDS)}")
        if self.kind == "speed_lora" and not (self.weight_name and self.base):
            raise ValueError(f"HubModel {self.name}: a speed LoRA needs weight_name and base")


_STABILITY_NC = "Stability AI Non-Commercial Research Community License"
_OPENRAIL_XL = "CreativeML Open RAIL++-M"
_SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"

# Every revision is the branch "main" for now: pinning each to the commit hash it was tested with (looked up
# on the hub, which this project could not reach when the registry was written) is the next step, so that a
# later upload to a repo cannot change what livecam loads.
HUB_MODELS: dict[str, HubModel] = {m.name: m for m in (
    HubModel("sdxl-turbo", "stabilityai/sdxl-turbo", "base", _STABILITY_NC, False,
             "Stability AI SDXL-Turbo (SDXL 1.0 distilled by adversarial diffusion distillation)",
             "1-step SDXL base for live frames (512 px)", default_steps=1),
    HubModel("sd-turbo", "stabilityai/sd-turbo", "base", _STABILITY_NC, False,
             "Stability AI SD-Turbo (SD 2.1 distilled by adversarial diffusion distillation)",
             "1-step SD 2.1 base: the lightest model, for smaller GPUs", default_steps=1),
    HubModel("sdxl-base", _SDXL_BASE, "base", _OPENRAIL_XL, True, "Stability AI Stable Diffusion XL 1.0 base",
             "commercially usable SDXL base; live use needs a speed LoRA (sdxl-lightning-2step, ...)"),
    HubModel("openpose-sdxl", "xinsir/controlnet-openpose-sdxl-1.0", "controlnet", "Apache-2.0", True,
             "xinsir ControlNet OpenPose for SDXL 1.0", "keeps the pose and face layout of the camera frame"),
    HubModel("taesdxl", "madebyollin/taesdxl", "tiny_vae", "MIT", True, "madebyollin TAESD-XL (tiny SDXL autoencoder)",
             "fast encode/decode of live frames for SDXL-family bases"),
    HubModel("taesd", "madebyollin/taesd", "tiny_vae", "MIT", True, "madebyollin TAESD (tiny SD autoencoder)",
             "fast encode/decode of live frames for SD 2.x bases (sd-turbo)"),
    HubModel("sdxl-vae-fp16-fix", "madebyollin/sdxl-vae-fp16-fix", "vae", "MIT", True,
             "madebyollin SDXL VAE, fine-tuned to run in float16 without overflowing",
             "full-quality decode of stills for SDXL-family bases"),
    HubModel("sdxl-lightning-2step", "ByteDance/SDXL-Lightning", "speed_lora", _OPENRAIL_XL, True,
             "ByteDance SDXL-Lightning 2-step LoRA", "makes sdxl-base render in 2 steps",
             weight_name="sdxl_lightning_2step_lora.safetensors", default_steps=2, base=_SDXL_BASE),
    # Not confirmed here: the repo has its own LICENSE.md; read it before commercial use.
    HubModel("hyper-sdxl-1step", "ByteDance/Hyper-SD", "speed_lora",
             "see LICENSE.md in ByteDance/Hyper-SD (not verified for commercial use)", False,
             "ByteDance Hyper-SDXL 1-step LoRA", "makes sdxl-base render in 1 step",
             weight_name="Hyper-SDXL-1step-lora.safetensors", default_steps=1, base=_SDXL_BASE),
    HubModel("lcm-lora-sdxl", "latent-consistency/lcm-lora-sdxl", "speed_lora", _OPENRAIL_XL, True,
             "Latent Consistency Models LCM-LoRA for SDXL 1.0", "makes sdxl-base render in 4 steps",
             weight_name="pytorch_lora_weights.safetensors", default_steps=4, base=_SDXL_BASE),
)}
