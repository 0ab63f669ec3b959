"""Keep MediaPipe/TFLite start-up chatter off the user's terminal.

mediapipe logs through absl from C++ straight to file descriptor 2 ("W0000 ... Sets FaceBlendshapesGraph
acceleration", "INFO: Created TensorFlow Lite XNNPACK delegate"), which neither GLOG_minloglevel nor
Python logging controls. It happens while a task is created and on its first inference, so only those
calls are wrapped. Set LIVECAM_NATIVE_LOGS=1 to see it when debugging.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Fd2Redirect:
    """File descriptor 2 is one per process, so the redirect is too: the tracker and the segmenter
    start on different threads, and the first block in redirects, the last block out restores."""

    lock = threading.Lock()
    depth = 0
    saved = -1


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (Python exceptions still propagate)."""
    if os.environ.get("LIVECAM_NATIVE_LOGS"):
        yield
        return
    with _Fd2Redirect.lock:
        if _Fd2Redirect.depth == 0:
            sys.stderr.flush()
            _Fd2Redirect.saved = os.dup(2)
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
        _Fd2Redirect.depth += 1
    try:
        yield
    finally:
        with _Fd2Redirect.lock:
            _Fd2Redirect.depth -= 1
            if _Fd2Redirect.depth == 0:
                os.dup2(_Fd2Redirect.saved, 2)
                os.close(_Fd2Redirect.saved)
