"""Style presets: the attire, lighting and background a re-render (live or still) asks the model for.

A preset is plain data; config.toml may change a built-in preset or add one under `[styles.NAME]`. The
prompt is built the same way for every preset, so presets differ only in what they describe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")

PROMPT_TEMPLATE = (
    "professional headshot photo of {subject}, {attire}, {lighting}, {background}, "
    "head and shoulders, looking at the camera, sharp focus, natural skin texture, 85mm lens"
)


@dataclass(frozen=True)
class StylePreset:
    """A look, on three separate axes (attire, lighting, background), plus an optional brand backdrop."""

    attire: str
    lighting: str
    background: str
    color: str = ""
    """Brand colour (#rrggbb) for the backdrop behind the person; empty: none."""
    background_image: str = ""
    """Brand background picture (a file) behind the person; empty: none. Wins over `color`."""
    label: str = ""
    """Who the style is for, shown by `livecam styles`."""
    backdrop: str = ""
    """The studio engine's stand-in for `background` (it cannot paint one): the colour of its lit backdrop,
    #rrggbb; empty: neutral grey."""

    def __post_init__(self) -> None:
        for name in ("attire", "lighting", "background"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} = {value!r}: must be a non-empty description")
        for name in ("color", "backdrop"):
            value = getattr(self, name)
            if value and not _HEX_COLOR.fullmatch(value):
                raise ValueError(f"{name} = {value!r}: must be a hex colour like '#1f4e79', or empty")

    @property
    def brand_backdrop(self) -> bool:
        """True when the style puts a brand colour or picture behind the person."""
        return bool(self.color or self.background_image)

    def with_axes(self, attire: str | None = None, lighting: str | None = None,
                  background: str | None = None) -> StylePreset:
        """This style with some axes replaced (descriptions already resolved)."""
        return replace(self, attire=attire or self.attire, lighting=lighting or self.lighting,
                       background=background or self.background)

    def prompt(self, subject: str = "a person") -> str:
        """The text prompt for this style; `subject` is who is pictured (an identity LoRA's trigger words
        go here, e.g. "ohwx person")."""
        return PROMPT_TEMPLATE.format(subject=subject, attire=self.attire, lighting=self.lighting,
                                      background=self.background)


DEFAULT_STYLES: dict[str, StylePreset] = {
    "corporate": StylePreset(
        label="corporate and finance",
        attire="tailored navy suit jacket over a crisp white shirt",
        lighting="soft even studio key light with a subtle rim light",
        background="plain mid-grey studio backdrop",
    ),
    "creative": StylePreset(
        label="creative and media",
        attire="dark unstructured blazer over a plain crew-neck top",
        lighting="warm directional light with gentle shadows",
        background="muted teal seamless paper backdrop",
        backdrop="#4f8a86",
    ),
    "healthcare": StylePreset(
        label="healthcare",
        attire="clean white coat over a light blue collared shirt",
        lighting="bright soft diffused light",
        background="plain light grey-blue backdrop",
        backdrop="#b9c9da",
    ),
    "real_estate": StylePreset(
        label="real estate",
        attire="navy blazer over an open-collar light shirt",
        lighting="bright natural window light",
        background="softly blurred modern bright interior",
        backdrop="#d8d2c6",
    ),
    "technology": StylePreset(
        label="technology",
        attire="fitted dark crew-neck sweater",
        lighting="cool soft key light with a gentle edge light",
        background="dark charcoal studio backdrop",
        backdrop="#3a3d42",
    ),
    "legal": StylePreset(
        label="legal",
        attire="charcoal suit, white shirt and a dark silk tie",
        lighting="classic Rembrandt portrait lighting",
        background="softly blurred wood-panelled office",
        backdrop="#6b4f3a",
    ),
    "education": StylePreset(
        label="education",
        attire="knit cardigan over a collared shirt",
        lighting="warm soft daylight",
        background="softly blurred bookshelf",
        backdrop="#8a7358",
    ),
}
