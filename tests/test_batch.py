"""`livecam still --batch`: a team CSV with a bad row, resuming, and the same job on a local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.gate import DEFAULT_CHECKS
from livecam.cli import main
from livecam.config import load_config
from livecam.errors import LivecamError
from livecam.stills.batch import BATCH_FILE, read_people, run_batch
from livecam.stills.export import StillRequest
from livecam.stills.files import REPORT_FILE
from tests.conftest import asset

NO_BACKGROUND = "still.checks=" + ",".join(c for c in DEFAULT_CHECKS if c != "background")
"""Today's matte leaves bits of the official portrait's flags around the hair, which the stills' background check
rejects; these tests are about the batch, so that check is left out."""


def _team_csv(folder: Path) -> Path:
    """Three people, one of whom gave a photo of a car."""
    csv = folder / "people.csv"
    csv.write_text("name,identity,photo,styles\n"
                   f"ann,,{asset('images/faces/obama_official_2012.jpg')},corporate\n"
                   f"bob,,{asset('images/no_face/lp-bmw.jpg')},\n"
                   f"cy,,{asset('images/faces/biden_official_portrait.jpg')},corporate;technology\n")
    return csv


def test_a_batch_reports_the_bad_row_completes_the_others_and_resumes(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    csv, out = _team_csv(tmp_path), tmp_path / "team"
    args = ["still", "--batch", str(csv), "--out", str(out), "--engine", "studio", "--variants", "1",
            "--platforms", "linkedin", "--brand", "corporate", "--set", NO_BACKGROUND]
    assert main(args) == 1  # one row failed
    printed = capsys.readouterr().out
    assert "2 done, 0 already done earlier, 1 failed" in printed
    assert "line 3 (bob)" in printed and "no face found" in printed
    assert sorted(p.name for p in out.iterdir()) == ["ann", "batch.json", "cy"]
    cy = json.loads((out / "cy" / REPORT_FILE).read_text())
    assert cy["summary"]["per_style"] == {"corporate": {"tried": 1, "kept": 1}, "technology": {"tried": 1, "kept": 1}}
    state = json.loads((out / BATCH_FILE).read_text())
    assert state["done"] == ["ann", "cy"] and state["failed"][0]["line"] == 3
    stamp = (out / "ann" / REPORT_FILE).stat().st_mtime_ns

    # Run again: the finished people are not redone; the bad row is tried again and reported again.
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "0 done, 2 already done earlier, 1 failed" in printed
    assert (out / "ann" / REPORT_FILE).stat().st_mtime_ns == stamp


def test_bad_batch_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(LivecamError, match="no such file"):
        read_people(tmp_path / "none.csv", (), "")
    bad = tmp_path / "bad.csv"
    bad.write_text("who,picture\nann,a.jpg\n")
    with pytest.raises(LivecamError, match="header with the columns"):
        read_people(bad, (), "")
    rows = tmp_path / "rows.csv"
    rows.write_text("name,photo\nann,a.jpg\nann,b.jpg\nx y,c.jpg\ndee,\n\n")
    people, failed = read_people(rows, (), "")
    assert [p.name for p in people] == ["ann"] and people[0].photo == tmp_path / "a.jpg"
    assert [(line, why.split(":")[0]) for line, _, why in failed] == [
        (3, "name 'ann' appears twice"), (4, "name 'x y'"), (5, "no photo")]
    with pytest.raises(LivecamError, match="--brand 'acme'"):
        run_batch(rows, StillRequest(None, out=tmp_path / "o"), load_config(None), brand="acme")


def test_the_same_batch_on_a_local_ray_instance(tmp_path: Path) -> None:
    import ray  # noqa: F401  (part of the dev install: missing is a failure, not a skip)
    csv, out = _team_csv(tmp_path), tmp_path / "team"
    config = load_config(None, ["engine.kind=studio", NO_BACKGROUND])
    request = StillRequest(None, (), variants=1, platforms=("x",), out=out)
    summary = run_batch(csv, request, config, ray_address="local", progress=False)
    assert sorted(summary.done) == ["ann", "cy"] and [f[:2] for f in summary.failed] == [(3, "bob")]
    for name in ("ann", "cy"):
        report = json.loads((out / name / REPORT_FILE).read_text())
        assert report["summary"]["kept"] >= 1
        assert {p.name for p in (out / name).iterdir()} == {REPORT_FILE, *report["files"]}
    assert not list(out.glob(".*.partial"))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("livecam: error: ") and "Traceback" not in err, err
    return lines[0]


def test_an_unwritable_output_folder_stops_the_batch_before_any_work(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tests._unwritable import unwritable_folder

    csv = _team_csv(tmp_path)
    with unwritable_folder(tmp_path / "locked") as locked:
        assert main(["still", "--batch", str(csv), "--out", str(locked), "--engine", "studio", "--variants",
                     "1", "--platforms", "x"]) == 2
        captured = capsys.readouterr()
        line = _one_error_line(captured.err)  # no row was tried: no per-row warning
        assert "cannot write to the output directory" in line and str(locked) in line
        assert captured.out == "" and list(locked.iterdir()) == []


def test_a_ray_address_with_no_cluster_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    import ray  # noqa: F401  (part of the dev install: missing is a failure, not a skip)

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    csv, out = _team_csv(tmp_path), tmp_path / "team"
    assert main(["still", "--batch", str(csv), "--out", str(out), "--engine", "studio", "--ray",
                 f"127.0.0.1:{port}"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"no Ray cluster at 127.0.0.1:{port}" in line
    assert not out.exists()
    for address, message in (("nowhere", "HOST:PORT"), ("127.0.0.1:http", "HOST:PORT"),
                             (f"ray://127.0.0.1:{port}", f"no Ray cluster at 127.0.0.1:{port}")):
        with pytest.raises(LivecamError, match=message):
            run_batch(csv, StillRequest(None, out=out), load_config(None), ray_address=address)
