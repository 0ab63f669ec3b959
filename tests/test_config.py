"""Config: the shipped config.toml, overrides, and every kind of bad value named by its key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from engine.crops import DEFAULT_PLATFORMS, PlatformSpec
from engine.styles import DEFAULT_STYLES, StylePreset
from livecam.config import Config, load_config
from livecam.errors import LivecamError

SHIPPED = Path(__file__).resolve().parents[1] / "config.toml"


def test_shipped_config_loads_and_states_every_default() -> None:
    assert load_config(SHIPPED) == Config()


def test_shipped_config_lists_every_setting() -> None:
    tables = tomllib.loads(SHIPPED.read_text())
    for section in dataclasses.fields(Config):
        if section.name == "styles":
            assert set(tables["styles"]) == set(DEFAULT_STYLES)
            keys = {"label", "attire", "lighting", "background", "backdrop"}
            assert all(set(t) == keys for t in tables["styles"].values())
            continue
        if section.name == "platforms":
            assert set(tables["platforms"]) == set(DEFAULT_PLATFORMS)
            keys = {f.name for f in dataclasses.fields(PlatformSpec)}
            assert all(set(t) == keys for t in tables["platforms"].values())
            continue
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


def test_styles_change_a_preset_add_one_and_pick_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[styles.corporate]\nattire = "grey suit"\n'
                    '[styles.startup]\nattire = "hoodie"\nlighting = "soft"\nbackground = "loft"\n')
    config = load_config(path, ["engine.style=startup"])
    assert config.styles["corporate"].attire == "grey suit"
    assert config.styles["corporate"].lighting == DEFAULT_STYLES["corporate"].lighting  # the rest is kept
    assert config.styles["startup"] == StylePreset("hoodie", "soft", "loft")
    assert config.engine.style == "startup"
    assert "hoodie" in config.styles["startup"].prompt()


@pytest.mark.parametrize(("text", "names"), [
    ('[styles.startup]\nattire = "hoodie"\n', ["styles.startup", "lighting"]),
    ('[styles.corporate]\nattire = ""\n', ["styles.corporate.attire", "non-empty"]),
    ('[styles.corporate]\ncolour = "red"\n', ["unknown key styles.corporate.colour"]),
    ('[styles]\ncorporate = 3\n', ["styles.corporate", "table"]),
    ('[engine]\nstyle = "space"\n', ["engine.style", "'space'", "corporate"]),
])
def test_bad_styles_are_named(tmp_path: Path, text: str, names: list[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(LivecamError) as e:
        load_config(path)
    assert all(n in str(e.value) for n in names), str(e.value)
    assert str(path) in str(e.value)


def test_engine_settings_embed_the_diffusion_settings() -> None:
    config = load_config(None, ["engine.size=64", "engine.steps=2", "models.device=cpu"])
    assert config.engine.diffusion.size == 64 and config.engine.diffusion.steps == 2
    assert type(config.engine.diffusion).__name__ == "DiffusionSettings"
    with pytest.raises(LivecamError, match=r"engine\.size"):
        load_config(None, ["engine.size=100"])
    with pytest.raises(LivecamError, match=r"models\.dtype"):
        load_config(None, ["models.dtype=fp8"])


@pytest.mark.parametrize(("override", "expected"), [
    ("relight.key_light=up", "--set relight.key_light=up: relight.key_light = 'up'"),
    ("output.width=wide", "--set output.width=wide: output.width"),
    ("output.width=1281", "--set output.width=1281: output.width x height"),
    ("framing.face_height=2.0", "--set framing.face_height=2.0: framing.face_height = 2.0"),
    ("engine.style=space", "--set engine.style=space: engine.style = 'space'"),
    ("output.colour=1", "--set output.colour=1: unknown key output.colour"),
    ("nosuch.key=1", "--set nosuch.key=1: unknown section [nosuch]"),
    ("styles.corporate.nokey=1", "--set styles.corporate.nokey=1: unknown key styles.corporate.nokey"),
    ('styles.brandnew.attire="x"', '--set styles.brandnew.attire="x": styles.brandnew is new and needs'),
    ("styles.corporate=3", "--set styles.corporate=3: styles.corporate must be a table"),
    ("platforms.linkedin.width=0", "--set platforms.linkedin.width=0: platforms.linkedin.width = 0"),
])
def test_a_bad_set_is_named_as_the_set_not_as_defaults(tmp_path: Path, override: str, expected: str) -> None:
    """The value came from --set: the message starts with that --set, with or without a config file."""
    with pytest.raises(LivecamError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(expected), str(info.value)
    assert "defaults" not in str(info.value)
    path = tmp_path / "config.toml"
    path.write_text("[output]\nwidth = 640\nheight = 360\n")
    with pytest.raises(LivecamError) as info:
        load_config(path, [override])
    assert str(info.value).startswith(expected), str(info.value)


def test_a_set_reaches_one_key_of_a_named_style_or_platform(tmp_path: Path) -> None:
    """--set styles.NAME.KEY=VALUE changes that key of that entry and keeps its others (file or built-in)."""
    path = tmp_path / "config.toml"
    path.write_text('[styles.corporate]\nlighting = "window light"\n')
    config = load_config(path, ['styles.corporate.attire="a navy suit"', "platforms.linkedin.width=800"])
    corporate = config.styles["corporate"]
    assert (corporate.attire, corporate.lighting) == ("a navy suit", "window light")
    assert corporate.background == load_config().styles["corporate"].background
    assert config.platforms["linkedin"].width == 800


def test_a_bad_file_value_is_still_named_by_the_file(tmp_path: Path) -> None:
    """A --set of another key does not take the blame for the file's mistake."""
    path = tmp_path / "config.toml"
    path.write_text('[relight]\nkey_light = "up"\n')
    with pytest.raises(LivecamError) as info:
        load_config(path, ["output.width=800", "relight.key_strength=0.5"])
    assert str(info.value).startswith(f"{path}: relight.key_light = 'up'"), str(info.value)


def test_an_empty_engine_style_is_named() -> None:
    """engine.style is the app's setting (the engine takes a prompt): checked and named where config is read."""
    with pytest.raises(LivecamError, match=r"engine\.style = '': must name a style preset"):
        load_config(None, ["engine.style= "])
