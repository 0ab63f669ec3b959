"""Config: the shipped config.toml, overrides, and every kind of bad value named by its key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from livecam.config import Config, load_config
from livecam.errors import LivecamError

SHIPPED = Path(__file__).resolve().parents[1] / "config.toml"


def test_shipped_config_loads_and_states_every_default() -> None:
    assert load_config(SHIPPED) == Config()


def test_shipped_config_lists_every_setting() -> None:
    tables = tomllib.loads(SHIPPED.read_text())
    for section in dataclasses.fields(Config):
        keys = {f.name for f in dataclasses.fields(section.type if isinstance(section.type, type)
                                                   else type(getattr(Config(), section.name)))}
        assert set(tables[section.name]) == keys, section.name


def test_overrides_parse_values_and_bare_text() -> None:
    config = load_config(None, ["input.source=0", "framing.enabled=false", "output.target=out/x.mp4",
                                "relight.key_strength=0.5", "output.width=1920", "output.height=1080",
                                'background.color="#102030"'])
    assert config.input.source == "0"
    assert config.framing.enabled is False
    assert config.output.target == "out/x.mp4"
    assert config.relight.key_strength == 0.5
    assert (config.output.width, config.output.height) == (1920, 1080)
    assert config.background.color == "#102030"


def test_override_beats_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[output]\nwidth = 640\nheight = 360\n")
    config = load_config(path, ["output.width=800"])
    assert (config.output.width, config.output.height) == (800, 360)


@pytest.mark.parametrize(("override", "names"), [
    ("nosuch.key=1", ["unknown section [nosuch]", "input"]),
    ("output.colour=1", ["unknown key output.colour", "width"]),
    ("output.width=wide", ["output.width", "whole number"]),
    ("output.width=12.5", ["output.width", "whole number"]),
    ("framing.enabled=1", ["framing.enabled", "true or false"]),
    ("relight.key_strength=true", ["relight.key_strength", "number"]),
    ("framing.face_height=2.0", ["framing.face_height", "2.0", "between"]),
    ("output.width=1281", ["width x height", "even"]),
    ("engine.kind=gpu", ["engine.kind", "'gpu'", "studio"]),
    ("relight.key_light=top", ["relight.key_light", "left"]),
    ("background.mode=space", ["background.mode", "studio"]),
    ("background.color=red", ["background.color", "#"]),
    ("tracking.beta=-1", ["tracking.beta", "between"]),
    ("output.width", ["section.key=value"]),
])
def test_bad_values_name_the_key(override: str, names: list[str]) -> None:
    with pytest.raises(LivecamError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_bad_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[output\nwidth = 3\n")
    with pytest.raises(LivecamError, match=r"bad.toml is not valid TOML"):
        load_config(bad)
    with pytest.raises(LivecamError, match=r"missing.toml does not exist"):
        load_config(tmp_path / "missing.toml")
    typed = tmp_path / "typed.toml"
    typed.write_text('[input]\nsource = 0\n')
    with pytest.raises(LivecamError, match=r"typed.toml: input.source = 0: must be a string"):
        load_config(typed)
