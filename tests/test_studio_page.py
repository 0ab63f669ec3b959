"""The studio page in a real browser: headless Chromium (Debian's) driven by Playwright against `livecam serve`
running the studio engine on a real face video. The video plays (not blank), changing the style changes the
stream, and "Export headshot" downloads a file carrying the AI disclosure. A screenshot is kept as an
artifact in test-artifacts/."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import playwright.sync_api as playwright_sync
import pytest

from livecam.stills.provenance import read_disclosure
from tests.conftest import asset

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`livecam serve` as a user starts it, in its own process, on a free loopback port. The camera is a folder
    holding one real portrait, played in a loop (the shared face video has a second face at its edge, which the
    export's one-face check rightly refuses)."""
    port = _free_port()
    camera = tmp_path_factory.mktemp("camera")
    (camera / "portrait.jpg").symlink_to(asset("images/faces/obama_official_2012.jpg"))
    data = tmp_path_factory.mktemp("data")
    env = {**os.environ, "LIVECAM_MODEL_DIR": str(model_dir), "LIVECAM_DATA_DIR": str(data)}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "livecam.cli", "serve", "--input", str(camera), "--engine", "studio",
             "--port", str(port), "--set", "input.loop=true", "--set", "output.width=640",
             "--set", "output.height=360", "--set", "serve.export_variants=1", "--set", "still.platforms=linkedin"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"livecam serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"livecam serve did not listen within 60 s:\n{log.read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# Mean RGB of a 24x24 corner of the video (the backdrop) and the spread of the whole picture, drawn to a canvas.
PIXELS_JS = """() => {
  const v = document.getElementById('video');
  if (!v || v.readyState < 2 || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const all = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < all.length; i += 16) {
    const y = (all[i] + all[i + 1] + all[i + 2]) / 3; sum += y; sq += y * y; n++;
  }
  const mean = sum / n;
  const corner = g.getImageData(4, 4, 24, 24).data;
  const rgb = [0, 0, 0];
  for (let i = 0; i < corner.length; i += 4) { rgb[0] += corner[i]; rgb[1] += corner[i + 1]; rgb[2] += corner[i + 2]; }
  const m = corner.length / 4;
  return {w: c.width, h: c.height, mean: mean, std: Math.sqrt(sq / n - mean * mean), corner: rgb.map(x => x / m)};
}"""


def test_the_studio_page_plays_switches_style_and_exports(server: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            accept_downloads=True, viewport={"width": 1280, "height": 800})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(server + "/")
            page.wait_for_function(PIXELS_JS, timeout=60_000)
            page.wait_for_function("() => document.getElementById('video').currentTime > 0.5", timeout=30_000)
            first = page.evaluate(PIXELS_JS)
            assert (first["w"], first["h"]) == (640, 360)
            assert first["std"] > 10 and 10 < first["mean"] < 245, first  # a picture, not a blank frame

            # A style with a light blue-grey studio backdrop instead of corporate's neutral grey.
            assert page.input_value("#style") == "corporate"
            page.select_option("#style", "healthcare")
            page.wait_for_function(
                f"() => {{ const p = ({PIXELS_JS})(); const a = {first['corner']}; return p &&"
                " Math.abs(p.corner[0] - a[0]) + Math.abs(p.corner[1] - a[1]) + Math.abs(p.corner[2] - a[2]) > 40; }",
                timeout=30_000)
            after = page.evaluate(PIXELS_JS)
            assert after["corner"][2] > after["corner"][0]  # bluish now
            page.wait_for_function("() => document.getElementById('stat-fps').textContent !== '–'", timeout=15_000)

            page.click("#export")
            page.wait_for_selector("#exports a.download", timeout=120_000)
            status = page.text_content("#export-status") or ""
            assert re.search(r"kept [1-9]", status), status
            caption = page.text_content("#exports small") or ""
            assert "likeness" in caption and "compositeWithTrainedAlgorithmicMedia" in caption
            with page.expect_download() as download_info:
                page.click("#exports a.download")
            download = download_info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            meta = read_disclosure(saved)
            assert meta["DigitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia")
            assert meta["livecam:style"] == "healthcare"
            page.screenshot(path=str(ARTIFACTS / "studio_page.png"), full_page=True)

            viewer = context.new_page()
            viewer.goto(server + "/view")
            viewer.wait_for_function(PIXELS_JS, timeout=60_000)
            assert viewer.evaluate(PIXELS_JS)["std"] > 10
        finally:
            context.close()
