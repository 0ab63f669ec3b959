"""The virtual camera sink: frames go to a system webcam device through pyvirtualcam."""

from __future__ import annotations

import platform

import pyvirtualcam
from pyvirtualcam.camera import BACKENDS

from livecam.errors import LivecamError
from livecam.live.frame import Frame
from livecam.live.outputs.base import SinkBase

ALTERNATIVES = "or use --output preview to watch it, or --output out.mp4 to record it"


def install_hint(system: str) -> str:
    """What to install on `system` (a `platform.system()` value) to get a virtual camera device."""
    if system == "Linux":
        return (
            "install and load v4l2loopback: sudo apt install v4l2loopback-dkms && "
            'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="livecam"'
        )
    if system == "Darwin":
        return "install OBS Studio 30 or newer and start its Virtual Camera once"
    if system == "Windows":
        return "install OBS Studio and start its Virtual Camera once"
    return f"pyvirtualcam has no virtual camera backend for {system}"


class VirtualCamSink(SinkBase):
    """Publishes RGB frames to a virtual camera; pacing comes from the source, so it never sleeps.

    `device` and `backend` are pyvirtualcam's (e.g. "/dev/video10", "v4l2loopback"); empty means any.
    """

    def __init__(self, size: tuple[int, int], fps: float, *, device: str = "", backend: str = "") -> None:
        super().__init__(size)
        # Checked here because pyvirtualcam raises a bare KeyError for an unknown backend name.
        if backend and backend not in BACKENDS:
            known = ", ".join(sorted(BACKENDS)) or "none on this system"
            raise LivecamError(f"unknown virtual camera backend {backend!r}: use one of {known}")
        width, height = size
        try:
            self._camera = pyvirtualcam.Camera(
                width,
                height,
                fps,
                fmt=pyvirtualcam.PixelFormat.RGB,
                device=device or None,
                backend=backend or None,
            )
        except RuntimeError as e:
            # pyvirtualcam joins one line per backend tried; the CLI prints a single line.
            reason = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
            target = f"virtual camera {device!r}" if device else "a virtual camera device"
            raise LivecamError(
                f"cannot open {target} ({reason}): {install_hint(platform.system())}, {ALTERNATIVES}"
            ) from e
        self.device: str = self._camera.device

    def send(self, frame: Frame) -> None:
        """Send one frame (RGB uint8 of `size`) to the device."""
        self._camera.send(self._check(frame))

    def _release(self, ok: bool) -> None:
        self._camera.close()
