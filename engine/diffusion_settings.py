"""The diffusion engine's settings, apart from the engine itself so that reading config needs no torch."""

from __future__ import annotations

from dataclasses import dataclass

from engine.validation import check_range


@dataclass(frozen=True)
class DiffusionSettings:
    size: int = 512
    """Side of the square the model renders, pixels (multiple of 32)."""
    steps: int = 1
    """Denoising steps per frame (1-4)."""
    strength: float = 0.5
    """img2img strength: how far from the camera image the model may go (0.05-1)."""
    seed: int = 0
    """Seed of the noise."""
    fixed_noise: bool = True
    """The same noise on every frame (temporal stability); False: fresh noise per frame."""
    controlnet_scale: float = 0.8
    identity_scale: float = 1.0
    """Strength the identity LoRA is fused with (0 = not at all)."""
    similar_threshold: float = 0.004
    """Skip the render and repeat the last output when the crop changed less than this (mean absolute
    difference of a 64x64 grey thumbnail, 0-1); 0 = render every frame."""
    max_skip: int = 15
    """Render at least every this many frames even when nothing changed."""
    latent_blend: float = 0.0
    """Weight of the previous frame's latent in this frame's (0 = none; up to 0.9)."""
    stream_batch: bool = True
    """With 2+ steps, batch frame n's first step with frame n-1's later steps (one frame more delay)."""
    pipeline: str = "auto"
    """Overlap frame n+1's CPU work (studio canvas, crop, pose, upload) with frame n's GPU work, at one frame
    more delay: "on", "off", or "auto" (on with CUDA, where the GPU runs asynchronously)."""
    square_on_device: str = "auto"
    """Where the square is resized into the model's input and the output blended back (feathered) into it:
    "on" (torch on the engine's device, where the model's tensors are), "off" (OpenCV on the CPU), or "auto"
    (on with CUDA)."""
    controlnet_reuse: float = 0.004
    """Reuse the ControlNet's residuals of the latest frame that ran it while the pose has moved less than this
    since (mean pose keypoint displacement, fraction of the square's side); 0 = run it on every frame. Not with
    the stream batch (2+ steps), whose ControlNet call serves frames at different steps."""
    controlnet_reuse_max: int = 8
    """Run the ControlNet at least every this many frames even when the pose stands still."""
    feather: float = 0.08
    """Soft edge of the pasted square, as a fraction of its side."""
    keep_face: bool = True
    """Keep the person's own face (from the studio canvas) inside a landmark face mask: the model supplies
    attire, light and background; expressions, gaze, lips and likeness stay the camera's on every frame."""
    badge: bool = True
    """A small "AI-enhanced" badge on generated frames."""
    channels_last: bool = True
    """channels_last memory format on CUDA (faster convolutions on tensor cores)."""
    compile: str = "auto"
    """torch.compile the UNet and ControlNet with fixed shapes: "on", "off", or "auto" (on with CUDA). The
    compile and capture run at start-up on a worker thread while the studio canvas is published (seconds to a
    minute or two); then the frames are faster. True/False are taken as "on"/"off"."""
    cuda_graphs: bool = True
    """With compile: capture CUDA graphs ("reduce-overhead"), removing per-kernel launch cost."""
    likeness_every: int = 30
    """With an enrolled identity, score every this many generated frames against it (shown in the run's
    summary); 0 = never."""
    max_failures: int = 5
    """Failed frames in a row after which the studio engine takes over."""
    retry_s: float = 60.0
    """Then try the diffusion engine again after this many seconds (one failure switches back); 0 = never."""

    def __post_init__(self) -> None:
        check_range("size", self.size, 32, 2048)
        if self.size % 32:
            raise ValueError(f"size = {self.size}: must be a multiple of 32")
        check_range("steps", self.steps, 1, 4)
        check_range("strength", self.strength, 0.05, 1.0)
        check_range("controlnet_scale", self.controlnet_scale, 0.0, 2.0)
        check_range("identity_scale", self.identity_scale, 0.0, 2.0)
        check_range("similar_threshold", self.similar_threshold, 0.0, 1.0)
        check_range("max_skip", self.max_skip, 0, 1000)
        check_range("latent_blend", self.latent_blend, 0.0, 0.9)
        check_range("feather", self.feather, 0.0, 0.4)
        check_range("likeness_every", self.likeness_every, 0, 100_000)
        check_range("max_failures", self.max_failures, 1, 1000)
        check_range("retry_s", self.retry_s, 0.0, 86_400.0)
        check_range("controlnet_reuse", self.controlnet_reuse, 0.0, 1.0)
        check_range("controlnet_reuse_max", self.controlnet_reuse_max, 0, 1000)
        if isinstance(self.compile, bool):  # the former switch
            object.__setattr__(self, "compile", "on" if self.compile else "off")
        for name in ("pipeline", "square_on_device", "compile"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValueError(f"{name} = {getattr(self, name)!r}: must be one of 'auto', 'on', 'off'")
