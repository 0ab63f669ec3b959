"""A helper process spoken to in lines (test and benchmark peers that must not share the measured process's
CPU): it prints "ready" once it is set up, answers each "mark" with one JSON line, and ends at "quit"."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from pathlib import Path
from typing import Any


class LineChild:
    """`command` started with pipes to its stdin and stdout; `what` names it in errors."""

    def __init__(self, command: list[str], what: str, cwd: Path | None = None) -> None:
        self.what = what
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd)

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.what} process ended (exit code {self.process.wait()})")
        return line.strip()

    def wait_ready(self) -> None:
        if self._line() != "ready":
            raise RuntimeError(f"the {self.what} process did not get ready")

    def _mark(self) -> Any:
        """Ask for a mark; its JSON answer."""
        assert self.process.stdin is not None
        self.process.stdin.write("mark\n")
        self.process.stdin.flush()
        return json.loads(self._line())

    def close(self, timeout: float = 20.0) -> None:
        """Ask it to quit (continuing it first, were it stopped); kill it if it does not within `timeout` s."""
        with contextlib.suppress(OSError):
            self.process.send_signal(signal.SIGCONT)
        try:
            if self.process.stdin is not None:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
