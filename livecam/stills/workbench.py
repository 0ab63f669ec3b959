"""The still workbench: the models a still export runs on, loaded once (by `livecam.assembly.open_workbench`)
and reused across runs (a team batch, a serve session's exports)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.types import FaceEncoder
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.identity.store import Identity

if TYPE_CHECKING:
    from engine.still import StillGenerator
    from models.face_detector import YuNetDetector
    from models.face_landmarker import ImageFaceLandmarker
    from models.segmenter import MediaPipeSegmenter

STUDIO_MODEL = "MediaPipe face landmarker + selfie segmentation (livecam studio engine)"
STUDIO_LICENCE = "Apache-2.0"


@dataclass
class Workbench:
    """Everything loaded for stills, reused across runs (a batch loads it once)."""

    config: Config
    engine: str
    landmarker: ImageFaceLandmarker
    detector: YuNetDetector
    segmenter: MediaPipeSegmenter
    encoders: dict[str, FaceEncoder]
    encoder_factory: Callable[[str], FaceEncoder]
    """Loads a face encoder by backend name, for the encoders not loaded yet."""
    generator: StillGenerator | None = None
    model: str = STUDIO_MODEL
    licence: str = STUDIO_LICENCE
    model_names: dict[str, str] = field(default_factory=dict)
    _identity: str | None = None

    def encoder(self, backend: str) -> FaceEncoder:
        if backend not in self.encoders:
            self.encoders[backend] = self.encoder_factory(backend)
        return self.encoders[backend]

    @property
    def identity(self) -> str | None:
        """The name of the identity whose LoRA the generator's weights hold ("" none; None not known yet)."""
        return self._identity

    def assume_identity(self, name: str) -> None:
        """The generator's weights already hold `name`'s LoRA ("" none): a live renderer sharing them fused it."""
        if name != self._identity and self.generator is not None:
            self.generator.weights_changed()
        self._identity = name

    def use_identity(self, identity: Identity | None) -> None:
        """Fuse `identity`'s LoRA into the generator (diffusion only; nothing when it is already in)."""
        name = identity.name if identity is not None else ""
        if self.generator is None or name == self._identity:
            return
        lora = None
        if identity is not None:
            from models.lora_file import load_lora
            from models.store import ModelUnavailable

            try:
                lora = load_lora(identity.lora_path)
            except ModelUnavailable as e:
                raise LivecamError(f"identity {identity.name!r}: {e}") from None
        try:
            self.generator.set_identity(lora)
        except (ValueError, KeyError, RuntimeError) as e:
            raise LivecamError(f"identity {name!r} does not fit the base model {self.config.models.base}: {e}") \
                from None
        self._identity = name

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
        for encoder in self.encoders.values():
            encoder.close()
        self.segmenter.close()
        self.landmarker.close()
