"""The preview sink: an OpenCV window on the local display, closed with q, Esc or the window's close box."""

from __future__ import annotations

import os
import platform

import cv2

from livecam.errors import LivecamError
from livecam.live.frame import Frame
from livecam.live.outputs.base import SinkBase

NO_DISPLAY_HINT = "use --output out.mp4 to record to a file or --output virtualcam instead"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 = Esc


class PreviewSink(SinkBase):
    """Shows each frame in a window titled `title`; `closed_by_user` turns True when the user quits it."""

    def __init__(self, size: tuple[int, int], title: str = "livecam") -> None:
        super().__init__(size)
        self.title = title
        self.closed_by_user = False
        # With no X display, OpenCV's Qt backend aborts the whole process instead of raising, so
        # look before touching the GUI.
        if platform.system() == "Linux" and not os.environ.get("DISPLAY"):
            raise LivecamError(
                f"cannot open the preview window: no display (DISPLAY is not set); {NO_DISPLAY_HINT}"
            )
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error as e:
            raise LivecamError(
                f"cannot open the preview window: no display ({_one_line(e)}); {NO_DISPLAY_HINT}"
            ) from e

    @property
    def wants_stop(self) -> bool:
        """True once the user pressed q/Esc or closed the window."""
        return self.closed_by_user

    def send(self, frame: Frame) -> None:
        """Show one frame (RGB uint8 of `size`) and poll the keyboard; does nothing once the user quit."""
        image = self._check(frame)
        if self.closed_by_user:
            return
        try:
            cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(1) & 0xFF
            # Below 1 once the user closed the window with its close box (-1 if it no longer exists).
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error as e:
            raise LivecamError(
                f"cannot show the preview window: no display ({_one_line(e)}); {NO_DISPLAY_HINT}"
            ) from e
        if key in QUIT_KEYS or visible < 1:
            self.closed_by_user = True

    def _release(self, ok: bool) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # lets the GUI event loop actually remove the window
        except cv2.error:
            pass  # the user already closed it; nothing left to release


def _one_line(error: cv2.error) -> str:
    """OpenCV's error text may span lines; the CLI prints one line."""
    return " ".join(str(error).split()) or type(error).__name__
