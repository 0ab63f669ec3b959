"""The studio engine segments the photo once per run: every variant (and the whole-photo edit its crops are
cut from) renders the same photo, whose person mask is the same each time. (Each still made is segmented too:
the quality gate's background check looks for the old room around the person in it.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livecam.assembly import open_workbench
from livecam.config import load_config
from livecam.stills.export import StillRequest, export_stills
from tests.conftest import asset

OBAMA = "images/faces/obama_official_2012.jpg"


def test_a_studio_run_segments_its_photo_once(tmp_path: Path) -> None:
    config = load_config(None, ["engine.kind=studio", "still.max_leftovers=100"])  # the flags around the hair
    bench = open_workbench(config)
    segmented: list[tuple[int, ...]] = []
    segment = bench.segmenter.segment

    def counted(image: Any, timestamp_ms: int) -> Any:
        segmented.append(image.shape)
        return segment(image, timestamp_ms)

    bench.segmenter.segment = counted  # type: ignore[method-assign]
    try:
        run = export_stills(StillRequest(asset(OBAMA), ("corporate", "creative"), variants=3, platforms=("linkedin",),
                                         out=tmp_path), config, bench=bench, progress=False)
    finally:
        bench.close()
    assert run.kept == 6  # 6 squares and 6 whole-photo edits, all over the one photo's mask
    photo = segmented[0]
    assert segmented.count(photo) == 1 and len(segmented) == 1 + 6  # the photo once, then each still for the gate
