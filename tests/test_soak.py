"""The soak benchmark still runs end to end with every fault injected, and nothing crashes (a 15 s smoke run
with the fault cycle squeezed into it; the real run is 10 minutes, see benchmarks/soak.py)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.soak import FAULTS, main


def test_soak_smoke_run_survives_every_fault(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    assert main(["--minutes", "0.25", "--cycle-s", "15", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["crashes"] == 0, result["crash_list"]
    for key in ("minutes", "frames_in", "frames_out", "drops", "no_face_frames", "size_changes", "render_errors",
                "fps", "latency_ms_p95", "gaps", "rss_mb", "open_files", "threads", "faults", "face_return_ms",
                "machine", "versions", "targets"):
        assert key in result, key
    assert result["minutes"] == 0.25 and result["frames_out"] > 0
    assert result["machine"]["device"] and result["versions"]["mediapipe"]
    assert {"outside_stalls", "outside_stalls_max_ms", "during_stalls", "threshold_ms"} <= set(result["gaps"])
    for figures in (result["rss_mb"], result["open_files"], result["threads"]["os"]):
        assert figures["warm"] and figures["end"]
    faults = result["faults"]
    assert [f["fault"] for f in faults["schedule"]] == [f.name for f in FAULTS]
    assert faults["injected"] == {f.name: 1 for f in FAULTS}
    # Each fault reached the pipeline, and the pipeline coped: the camera was reopened twice, the new size
    # and the renderer's burst were counted, the face came back, and nothing stopped the loop.
    assert {"no_face", "greyscale", "bgra", "render_exceptions"} <= set(faults["frames"])
    assert faults["camera_reopens"] == 2 and len(faults["sink_stalls_s"]) == 1
    assert result["size_changes"] == 1
    assert result["render_errors"] == faults["frames"]["render_exceptions"] > 0
    assert len(result["face_return_ms"]) == 1 and result["face_return_ms"][0] is not None
    assert result["log_lines"].get("WARNING livecam.live.loop") == 1  # one line for the whole burst
