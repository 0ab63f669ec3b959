"""A real Janus (Debian's `janus` package) for the tests and the benchmark: a minimal configuration written to
a folder (only the HTTP transport, on a loopback port, and the VideoRoom plugin; no ICE servers, no event
handlers, nice_debug off), started, killed and started again on the same port; and a process of VideoRoom
subscribers (aiortc) that counts the frames each one gets.

    python -m tests._janus subscribe ENDPOINT ROOM N [--pin PIN] [--secret S]
        "ready" once all N have a frame; then "mark" on stdin -> the frame counts as JSON; "quit" -> exit.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests._child import LineChild

JANUS = shutil.which("janus") or "/usr/bin/janus"
JANUS_JS = Path("/usr/share/javascript/janus-gateway/janus.js")


def janus_missing() -> str | None:
    """Why a real Janus cannot run here, or None."""
    if not Path(JANUS).exists():
        return "Debian's janus is not installed (.ci/run installs it: apt-get install janus libjs-janus-gateway)"
    if not _library("plugins", "libjanus_videoroom.so") or not _library("transports", "libjanus_http.so"):
        return "janus's VideoRoom plugin or HTTP transport is missing"
    return None


def _library(kind: str, name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/*/janus/{kind}/{name}") + glob.glob(f"/usr/lib/janus/{kind}/{name}"))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JanusServer:
    """Janus on 127.0.0.1:`port` (HTTP API at /janus) with VideoRoom rooms {id: PIN or ""}, configured in
    `folder`. `start()`, `kill()` (SIGKILL, as a crash), `start()` again, `stop()`."""

    def __init__(self, folder: Path, rooms: dict[int, str], api_secret: str = "", port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.rooms = rooms
        self.api_secret = api_secret
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "janus.log"
        self._configure()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    def url(self, room: int) -> str:
        return f"janus://127.0.0.1:{self.port}/{room}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _configure(self) -> None:
        conf, plugins, transports, empty = (self.folder / n for n in ("conf", "plugins", "transports", "empty"))
        for d in (conf, plugins, transports, empty):
            d.mkdir(parents=True, exist_ok=True)
        for d, kind, name in ((plugins, "plugins", "libjanus_videoroom.so"),
                              (transports, "transports", "libjanus_http.so")):
            link = d / name
            if not link.exists():
                link.symlink_to(_library(kind, name) or name)
        secret = f'\n\tapi_secret = "{self.api_secret}"' if self.api_secret else ""
        (conf / "janus.jcfg").write_text(
            f'general: {{\n\tconfigs_folder = "{conf}"\n\tplugins_folder = "{plugins}"\n'
            f'\ttransports_folder = "{transports}"\n\tevents_folder = "{empty}"\n\tloggers_folder = "{empty}"\n'
            f'\tdebug_level = 4{secret}\n}}\n'
            "nat: {\n\tnice_debug = false\n}\nmedia: {\n}\nplugins: {\n}\ntransports: {\n}\n")
        (conf / "janus.transport.http.jcfg").write_text(
            f'general: {{\n\tjson = "compact"\n\tbase_path = "/janus"\n\thttp = true\n\tport = {self.port}\n'
            '\tip = "127.0.0.1"\n\thttps = false\n}\nadmin: {\n\tadmin_http = false\n}\n')
        rooms = "".join(
            f'room-{room}: {{\n\tdescription = "livecam test {room}"\n\tpublishers = 1\n\tbitrate = 2000000\n'
            f'\tfir_freq = 10\n' + (f'\tpin = "{pin}"\n' if pin else "") + "}\n"
            for room, pin in self.rooms.items())
        (conf / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n" + rooms)

    def start(self, timeout: float = 15.0) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [JANUS, "-F", str(self.folder / "conf"), "-C", str(self.folder / "conf" / "janus.jcfg"), "-o"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"janus exited ({self.process.returncode}); see {self.log}")
            if self.answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"janus did not answer on port {self.port} in {timeout} s; see {self.log}")

    def answers(self) -> bool:
        request = urllib.request.Request(self.endpoint, data=json.dumps({"janus": "info", "transaction": "t"}).encode(),
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(json.loads(response.read()).get("janus") == "server_info")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to anyone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def cpu_seconds(self) -> float:
        """Janus's user+system CPU time so far, from /proc/PID/stat (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the subscriber process ------------------------------------------------------------------------------------

async def subscribe(endpoint: str, room: int, n: int, pin: str = "", secret: str = "") -> None:
    import aiohttp

    from livecam.serve.janus import Credentials, JanusSubscriber

    counts = [0] * n
    sizes: list[list[int]] = [[0, 0] for _ in range(n)]
    first = [asyncio.Event() for _ in range(n)]

    async def read(i: int, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended (aiortc raises MediaStreamError)
                return
            counts[i] += 1
            sizes[i] = [frame.width, frame.height]
            first[i].set()

    async with aiohttp.ClientSession() as http:
        subs = [JanusSubscriber(http, endpoint, room, pin=pin, credentials=Credentials(secret)) for _ in range(n)]
        tasks = [asyncio.create_task(read(i, await sub.open(30))) for i, sub in enumerate(subs)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), 60)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "mark":
                print(json.dumps({"counts": counts, "sizes": sizes}), flush=True)
            elif line in ("quit", ""):
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(sub.close() for sub in subs), return_exceptions=True)


class SubscriberProcess(LineChild):
    """`n` Janus subscribers in their own process (their decoding is not the publisher's CPU)."""

    def __init__(self, endpoint: str, room: int, n: int, pin: str = "", nice: int = 0) -> None:
        command = [sys.executable, "-m", "tests._janus", "subscribe", endpoint, str(room), str(n), "--pin", pin]
        if nice:
            command = ["nice", "-n", str(nice), *command]
        super().__init__(command, "subscriber", cwd=Path(__file__).resolve().parents[1])

    def mark(self) -> dict[str, Any]:
        return dict(self._mark())

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("subscribe")
    s.add_argument("endpoint")
    s.add_argument("room", type=int)
    s.add_argument("n", type=int)
    s.add_argument("--pin", default="")
    s.add_argument("--secret", default="")
    args = parser.parse_args(argv)
    asyncio.run(subscribe(args.endpoint, args.room, args.n, args.pin, args.secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
