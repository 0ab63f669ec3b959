"""The live-loop benchmark still runs end to end and writes its JSON (a smoke run: 10 frames, 1 round)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.live_loop import main
from benchmarks.studio_stages import main as stages_main


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


def test_live_loop_benchmark_runs_a_reference_checkout_beside(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`--reference DIR` runs that checkout's own loop in the same rounds (here: this checkout itself)."""
    out = tmp_path / "bench.json"
    root = Path(__file__).resolve().parents[1]
    assert main(["--frames", "5", "--rounds", "1", "--reference", str(root), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for name in ("reference_no_pace", "reference_paced"):
        assert result["runs"][name]["frames_out"] == 5 and "render" in result["runs"][name]["sections"]
    assert result["reference"]["checkout"] == str(root) and result["reference"]["cpu_ratio_paced"] > 0
    with pytest.raises(SystemExit):
        main(["--frames", "5", "--reference", str(tmp_path), "--out", str(out)])
    assert f"--reference {tmp_path}: not a livecam checkout" in capsys.readouterr().err


def test_stage_benchmark_times_every_stage_beside_a_reference(tmp_path: Path) -> None:
    out = tmp_path / "stages.json"
    root = Path(__file__).resolve().parents[1]
    assert stages_main(["--frames", "3", "--rounds", "1", "--input-size", "640x360", "--reference", str(root),
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for run in result["runs"].values():
        stages = run["cpu_ms_p50"]
        assert {"decode", "segment", "track", "render", "relight", "matte", "background"} <= set(stages)
        assert run["frame_cpu_ms"] >= stages["render"] > stages["relight"] > 0
    assert result["reference"]["frame_cpu_ratio"] > 0 and result["input"]["size"] == [640, 360]
