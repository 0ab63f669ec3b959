"""The studio engine's variants of a style: each a lighting setup and a backdrop tone, so that the kept images
of one style differ where a person looks (the light on the face, the colour behind it), and each is named in
plain words for the contact sheet ("short light, warm grey backdrop").

The lighting setups are `engine.lighting.SETUPS` (broad, short, butterfly, rim); broad and short follow the
way the face is turned. The backdrop tones vary the style's studio backdrop colour; a brand colour or picture,
or a tint the user set, is left as it is.
"""

from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass

import numpy as np

from engine.lighting import SETUPS
from engine.styles import StylePreset
from livecam.config import Config

NEUTRAL = "#878a8e"
"""The brightest point of the studio backdrop without a tint (`engine.background.studio_backdrop`)."""

_VARIANTS = (("short", "style", 1.0), ("broad", "light", 1.0), ("butterfly", "dark", 1.0), ("rim", "warm", 1.0),
             ("short", "cool", 0.6), ("butterfly", "style", 0.6))
"""Variant n (from 1) takes entry (n - 1) mod 6: its lighting setup, backdrop tone and key strength (a factor on
`relight.key_strength`; under 1 the setup is named "soft")."""


@dataclass(frozen=True)
class Look:
    """One variant's lighting and backdrop."""

    setup: str
    """The lighting setup: a key of `engine.lighting.SETUPS` ("short", "broad", "butterfly", "rim")."""
    strength: float
    """Key strength factor on `relight.key_strength`."""
    backdrop: str
    """The backdrop tint "#rrggbb"; empty: the style's own backdrop, unchanged (a brand colour or picture)."""
    backdrop_name: str
    """Its colour in words ("warm grey"); empty when `backdrop` is."""

    @property
    def light(self) -> tuple[str, float]:
        """(setup, strength factor): what `livecam.stills.render.studio_square` lights the photo with."""
        return self.setup, self.strength

    @property
    def light_name(self) -> str:
        """The lighting in words: "short light", "soft butterfly light"."""
        return f"{'soft ' if self.strength < 1.0 else ''}{self.setup} light"

    def words(self) -> str:
        """The variant in plain words: "short light, warm grey backdrop"."""
        return f"{self.light_name}, {self.backdrop_name} backdrop" if self.backdrop_name else self.light_name

    def to_report(self) -> dict[str, str | float]:
        return {"setup": self.setup, "key_strength_factor": self.strength, "backdrop": self.backdrop,
                "backdrop_name": self.backdrop_name, "words": self.words()}

    def style(self, style: StylePreset) -> StylePreset:
        """`style` with this look's backdrop tint (the studio engine's stand-in for its background)."""
        return dataclasses.replace(style, backdrop=self.backdrop) if self.backdrop else style

    def prompted(self, style: StylePreset) -> StylePreset:
        """`style` with its lighting and (when this look has a tone) background axes naming this look, for the
        diffusion engine's prompt: "soft short lighting", "plain warm grey studio backdrop" (the photographers'
        names, short: CLIP reads 77 tokens). A brand colour or picture keeps the style's own background words."""
        lighting = f"{'soft ' if self.strength < 1.0 else ''}{self.setup} lighting"
        background = f"plain {self.backdrop_name} studio backdrop" if self.backdrop_name else None
        return style.with_axes(lighting=lighting, background=background)


def look(config: Config, style: StylePreset, variant: int) -> Look:
    """Variant `variant`'s (from 1) look (broad and short follow the face's turn when the photo is lit)."""
    setup, tone, strength = _VARIANTS[(variant - 1) % len(_VARIANTS)]
    assert setup in SETUPS, setup
    base = tone_base(config, style)
    if base is None:
        return Look(setup, strength, "", "")
    return Look(setup, strength, toned(base, tone), colour_name(base, tone))


def tone_base(config: Config, style: StylePreset) -> str | None:
    """The backdrop colour the tones vary, or None when the backdrop must stay as it is: a brand colour or
    picture, a tint the user set in [background], or a background that is not the studio backdrop."""
    bg = config.background
    if style.brand_backdrop or not bg.enabled or bg.mode != "studio" or bg.tint:
        return None
    return style.backdrop or NEUTRAL


def toned(base: str, tone: str) -> str:
    """`base` (#rrggbb) in `tone`: "style" (itself), "light", "dark", "warm" or "cool"."""
    rgb = np.array([int(base[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    if tone == "light":
        rgb = rgb + (255.0 - rgb) * 0.45
    elif tone == "dark":
        rgb = rgb * 0.5
    elif tone == "warm":
        rgb = rgb * (1.14, 1.0, 0.80)
    elif tone == "cool":
        rgb = rgb * (0.86, 0.98, 1.16)
    r, g, b = (int(v) for v in np.clip(np.round(rgb), 0, 255))
    return f"#{r:02x}{g:02x}{b:02x}"


_HUES = ((15, "red"), (40, "orange"), (65, "yellow"), (160, "green"), (195, "teal"), (255, "blue"),
         (290, "purple"), (335, "pink"), (360, "red"))
_TINTED = ((70, "beige"), (180, "grey-green"), (260, "grey-blue"), (360, "mauve"))


def hue_name(hex_colour: str) -> str:
    """The colour family of #rrggbb: "grey", "beige", "grey-blue", "teal", "brown", ..."""
    r, g, b = (int(hex_colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5))
    hue, light, sat = colorsys.rgb_to_hls(r, g, b)
    chroma, degrees = max(r, g, b) - min(r, g, b), hue * 360.0
    if chroma < 0.06:
        return "grey"
    if chroma < 0.16:  # a tinted grey
        return next(name for limit, name in _TINTED if degrees < limit)
    name = next(name for limit, name in _HUES if degrees < limit)
    if name in ("orange", "yellow") and light < 0.45:
        return "brown"
    return "beige" if name == "orange" and sat < 0.45 else name


def colour_name(base: str, tone: str = "style") -> str:
    """A plain name for backdrop `base` (#rrggbb) in `tone`: "grey", "light grey", "charcoal", "warm grey",
    "light grey-blue", "dark teal"."""
    name = hue_name(base)
    light = colorsys.rgb_to_hls(*(int(base[i:i + 2], 16) / 255.0 for i in (1, 3, 5)))[1]
    pale, deep = light > 0.7, light < 0.3
    if name == "grey" and deep:  # a charcoal backdrop: its light tone is a plain grey
        return {"style": "charcoal", "light": "grey", "dark": "deep charcoal"}.get(tone, f"{tone} charcoal")
    if tone == "style":
        tone = "light" if pale else "dark" if deep else ""
    elif tone == "light" and pale:
        tone = "pale"
    elif tone == "dark" and deep:
        tone = "deep"
    if name == "grey" and tone == "dark":
        return "charcoal"
    return f"{tone} {name}".strip()
