"""The studio engine's variants of a style: each a lighting setup and a backdrop tone, so that the kept images
of one style differ where a person looks (the light on the face, the colour behind it), and each is named in
plain words for the contact sheet ("short light, warm grey backdrop").

The lighting setups are what `engine/relight.py` offers: a key light from one side at a strength, or none.
"Short" and "broad" name the side against the way the face is turned (short: the side turned away from the
camera, which narrows the face; broad: the side turned toward it); a face looking straight at the camera has
no short or broad side, and the setup is named by the side the light comes from. When the relighting engine
offers more named setups (butterfly, rim), `_SETUPS` and `Look.light` are where they go.
"""

from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass

import numpy as np

from engine import framing as fr
from engine.styles import StylePreset
from engine.types import Landmarks
from livecam.config import Config

NEUTRAL = "#878a8e"
"""The brightest point of the studio backdrop without a tint (`engine.background.studio_backdrop`)."""

_SETUPS = {"short": 2.5, "broad": 1.2, "even": 0.0, "soft short": 1.2, "strong broad": 2.5}
"""Setup -> key strength, as a factor on `relight.key_strength` (capped at full strength); 0: no key light."""
_VARIANTS = (("short", "style"), ("broad", "light"), ("even", "dark"), ("soft short", "warm"),
             ("strong broad", "cool"), ("even", "style"))
"""Variant n (from 1) takes entry (n - 1) mod 6: its lighting setup and its backdrop tone."""
_FRONTAL = 0.12
"""Nose offset from the face's middle, as a fraction of its half width, under which a face looks straight on."""
# MediaPipe face-mesh points: nose tip, and the face's outermost points on the viewer's left and right.
_NOSE, _LEFT, _RIGHT = fr.NOSE_TIP, 234, 454


@dataclass(frozen=True)
class Look:
    """One variant's lighting and backdrop."""

    setup: str
    """"short", "broad", "even", ... (keys of `_SETUPS`)."""
    key_light: str
    """The side the key light comes from as the viewer sees it: "left", "right" or "none"."""
    strength: float
    """Key strength factor on `relight.key_strength`."""
    backdrop: str
    """The backdrop tint "#rrggbb"; empty: the style's own backdrop, unchanged (a brand colour or picture)."""
    backdrop_name: str
    """Its colour in words ("warm grey"); empty when `backdrop` is."""
    light_name: str
    """The lighting in words ("short light", "light from the left")."""

    @property
    def light(self) -> tuple[str, float]:
        """(side, strength factor): what `livecam.stills.render.studio_square` lights the photo with."""
        return self.key_light, self.strength

    def words(self) -> str:
        """The variant in plain words: "short light, warm grey backdrop"."""
        return f"{self.light_name}, {self.backdrop_name} backdrop" if self.backdrop_name else self.light_name

    def to_report(self) -> dict[str, str | float]:
        return {"setup": self.setup, "key_light": self.key_light, "key_strength_factor": self.strength,
                "backdrop": self.backdrop, "backdrop_name": self.backdrop_name, "words": self.words()}

    def style(self, style: StylePreset) -> StylePreset:
        """`style` with this look's backdrop tint (the studio engine's stand-in for its background)."""
        return dataclasses.replace(style, backdrop=self.backdrop) if self.backdrop else style


def facing(landmarks: Landmarks) -> str:
    """The side the face is turned to as the viewer sees it ("left", "right"), or "front"."""
    xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
    left, right, nose = xy[_LEFT, 0], xy[_RIGHT, 0], xy[_NOSE, 0]
    half = abs(right - left) / 2
    if half <= 0:
        return "front"
    turn = (nose - (left + right) / 2) / half
    if abs(turn) < _FRONTAL:
        return "front"
    return "left" if turn < 0 else "right"


def look(config: Config, style: StylePreset, landmarks: Landmarks, variant: int) -> Look:
    """Variant `variant`'s (from 1) look for a photo whose face has `landmarks`."""
    setup, tone = _VARIANTS[(variant - 1) % len(_VARIANTS)]
    turned = facing(landmarks)
    strength = _SETUPS[setup]
    if strength == 0.0:
        side, light_name = "none", "even light"
    elif turned == "front":  # short and broad are the same light on a face that looks straight on
        side = "left" if setup.endswith("short") else "right"
        light_name = f"{setup.split()[0] + ' ' if ' ' in setup else ''}light from the {side}"
    else:
        other = "right" if turned == "left" else "left"
        side = turned if setup.endswith("short") else other
        light_name = f"{setup} light"
    base = tone_base(config, style)
    if base is None:
        return Look(setup, side, strength, "", "", light_name)
    hex_colour = toned(base, tone)
    return Look(setup, side, strength, hex_colour, colour_name(base, tone), light_name)


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
