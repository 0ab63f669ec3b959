"""`livecam identities`: a damaged identity.json is skipped with a warning naming it, the good identities are
still listed, and the damaged one can still be deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livecam.cli import main
from livecam.errors import LivecamError
from livecam.identity.store import LORA_FILE, METADATA_FILE, identities_dir, list_identities, load_identity


def _identity(root: Path, name: str, metadata: str) -> Path:
    folder = root / "identities" / name
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_text(metadata)
    (folder / LORA_FILE).write_bytes(b"x")
    return folder / METADATA_FILE


GOOD = json.dumps({"name": "ann", "trigger": "ohwx", "photos": [{"file": "a.jpg"}], "base_model": "sdxl-turbo",
                   "steps": 500, "created": "2026-01-01T00:00:00+0000", "centroid": [0.5, 0.5]})
DAMAGED = {
    "cut": '{"name": "cut", "trigger": ',     # an unfinished write
    "listed": "[1, 2, 3]",                     # JSON, but not an object
    "numbers": '{"photos": 5, "trigger": 7}',  # fields of the wrong type
    "centroid": '{"centroid": ["a", "b"]}',
}


def test_damaged_identities_are_skipped_with_a_warning_and_can_be_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("LIVECAM_DATA_DIR", str(tmp_path))
    _identity(tmp_path, "ann", GOOD)
    files = {name: _identity(tmp_path, name, text) for name, text in DAMAGED.items()}
    assert main(["identities"]) == 0
    captured = capsys.readouterr()
    assert "  ann: 1 photos, trigger 'ohwx'" in captured.out
    assert all(f"  {name}:" not in captured.out for name in DAMAGED)
    assert "Traceback" not in captured.err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(DAMAGED), warnings
    for name, file in files.items():
        (line,) = [w for w in warnings if str(file) in w]
        assert "\n" not in line and f"livecam identities --delete {name}" in line, line
    assert [i.name for i in list_identities()] == ["ann"]

    with pytest.raises(LivecamError, match="not a JSON object"):
        load_identity("listed")
    with pytest.raises(LivecamError, match="'trigger' is 7, not text"):
        load_identity("numbers")

    assert main(["identities", "--delete", "cut"]) == 0
    assert "deleted identity 'cut'" in capsys.readouterr().out
    assert not (identities_dir() / "cut").exists()
    caplog.clear()
    assert main(["identities"]) == 0
    assert not any(str(files["cut"]) in r.getMessage() for r in caplog.records)
