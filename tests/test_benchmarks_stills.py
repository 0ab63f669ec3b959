"""The stills benchmark runs a whole export (`export_stills`) and the plain pipeline on tiny models and writes
its JSON; speed is the benchmark's business, not this test's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import stills_gpu, stills_models


def test_stills_benchmark_tiny_runs_livecam_and_the_baseline_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    threads = torch.get_num_threads()
    argv = ["--tiny", "--device", "cpu", "--steps", "1", "--out", str(out)]
    assert stills_gpu.main(argv) == 0
    result = json.loads(out.read_text())
    assert {"benchmark", "device", "models", "approximations", "machine", "versions", "dtype", "settings",
            "livecam", "baseline", "gate_and_files_overhead_s", "target"} <= set(result)
    assert result["device"].startswith("CPU") and result["dtype"] == "fp32"
    versions = result["versions"]
    assert versions["torch"] and versions["diffusers"] and versions["transformers"] and versions["mediapipe"]
    s = result["settings"]
    assert s["torch_threads"] == 1 and torch.get_num_threads() == threads  # one thread while it ran, then back
    assert s["tiny"] is True and s["size"] == 128 and s["steps"] == 1 and s["checks"] == "" and s["max_retries"] == 0
    expected = len(s["styles"]) * s["variants"]
    assert expected == 4
    live, base = result["livecam"], result["baseline"]
    assert live["candidates"] == live["kept"] == base["candidates"] == expected
    assert live["seconds"] > 0 and base["seconds"] > 0
    assert live["per_candidate_s"] > 0 and base["per_candidate_s"] > 0
    assert live["generate_s"]["median"] > 0 and live["gate_s"]["median"] > 0 and base["call_s"]["median"] > 0
    # Both run the same real steps, and the gate worked on a real face (the framed photo).
    assert live["unet_calls_per_candidate"] == base["unet_calls_per_candidate"] == 1
    assert live["outputs_finite"] is True and base["outputs_finite"] is True
    assert live["faces_found_by_gate"] == expected and live["files"] == expected + 1  # + the contact sheet
    assert set(live["phases_s"]) == {"prompt", "subject", "framing", "generate", "gate", "files", "other"}
    assert live["phases_s"]["generate"] > 0 and live["phases_s"]["gate"] > 0
    target = result["target"]
    assert target["limit_s"] == 60 and target["measured_s"] == live["seconds"] and target["met"] is None
    encoder = result["face_encoder"]
    assert encoder["used"] in ("reid", "standin") and encoder["calls"] >= expected and encoder["call_ms_median"] > 0


def test_without_openvino_a_stand_in_of_the_reid_cost_embeds_the_aligned_face(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import livecam.assembly
    from livecam.config import load_config
    from tests._landmarks import photo_landmarks, read_rgb

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else
                        real_find_spec(name, *a))
    encoder_kind, why = stills_models.choose_encoder("auto")
    assert encoder_kind == "standin" and "openvino is not installed" in why
    image, landmarks = read_rgb(stills_gpu.PHOTO), photo_landmarks(stills_gpu.PHOTO)
    with stills_models.timed_face_encoders("standin") as calls:
        encoder = livecam.assembly.face_encoder(load_config(None))  # what the still workbench loads
        first, second = encoder.embed(image, landmarks), encoder.embed(image, landmarks)
    assert encoder.name == "reid" and len(calls) == 2
    assert first.shape == (256,) and abs(float(np.linalg.norm(first)) - 1) < 1e-5 and np.array_equal(first, second)
    figures = stills_models.encoder_figures(encoder_kind, why, calls)
    assert figures["used"] == "standin" and figures["calls"] == 2 and figures["call_ms_median"] > 0
