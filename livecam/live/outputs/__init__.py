"""Where finished frames go: `open_sink` picks the sink for an output name or video file (the protocol, the
shared base and the checks are in `base`)."""

from __future__ import annotations

from pathlib import Path

from livecam.live.outputs.base import VIDEO_EXTENSIONS, FrameSink, check_size, unknown_output


def open_sink(
    spec: str, size: tuple[int, int], fps: float, *, device: str = "", backend: str = ""
) -> FrameSink:
    """Open the sink named by `spec`: "virtualcam", "preview" or a .mp4/.avi/.mkv file path.

    `size` is (width, height); `device` and `backend` are passed to the virtual camera only.
    """
    check_size(size, fps)
    # Concrete sinks are imported here, not at the top: they import SinkBase from this module, and
    # `import livecam.live.outputs` stays free of pyvirtualcam and the GUI until a sink is really opened.
    if spec == "virtualcam":
        from livecam.live.outputs.virtualcam import VirtualCamSink

        return VirtualCamSink(size, fps, device=device, backend=backend)
    if spec == "preview":
        from livecam.live.outputs.preview import PreviewSink

        return PreviewSink(size)
    if Path(spec).suffix.lower() in VIDEO_EXTENSIONS:
        from livecam.live.outputs.video_file import VideoFileSink

        return VideoFileSink(spec, size, fps)
    raise unknown_output(spec)
