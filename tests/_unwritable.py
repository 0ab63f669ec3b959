"""A real folder that nothing can be written into, for the tests of an unwritable --out."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def unwritable_folder(folder: Path) -> Iterator[Path]:
    """`folder` created read-only: permissions 0555, and where they do not stop the writer (root) the
    immutable attribute as well. Skips the test where neither makes it unwritable."""
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    immutable = False
    try:
        if _writable(folder) and shutil.which("chattr") and os.name == "posix":
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if _writable(folder):
            pytest.skip("cannot make a folder unwritable here (root without chattr +i)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)
