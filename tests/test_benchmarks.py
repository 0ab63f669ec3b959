"""The live-loop benchmark still runs end to end and writes its JSON (a smoke run: 10 frames, 1 round)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.live_loop import main


def test_live_loop_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["--frames", "10", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"livecam_no_pace", "baseline_no_pace", "livecam_paced",
                                   "livecam_paced_no_predict"}
    for run in result["runs"].values():
        assert run["frames_out"] == 10 and run["fps"] > 0
        assert "render" in run["sections"]
    assert result["machine"]["cores"] and result["versions"]["mediapipe"]
