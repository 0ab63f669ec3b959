"""Style presets: the attire, lighting and background a re-render (live or still) asks the model for.

A preset is plain data; config.toml may change a built-in preset or add one under `[styles.NAME]`. The
prompt is built the same way for every preset, so presets differ only in what they describe.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT_TEMPLATE = (
    "professional headshot photo of {subject}, {attire}, {lighting}, {background}, "
    "head and shoulders, looking at the camera, sharp focus, natural skin texture, 85mm lens"
)


@dataclass(frozen=True)
class StylePreset:
    attire: str
    lighting: str
    background: str

    def __post_init__(self) -> None:
        for name in ("attire", "lighting", "background"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} = {value!r}: must be a non-empty description")

    def prompt(self, subject: str = "a person") -> str:
        """The text prompt for this style; `subject` is who is pictured (an identity LoRA's trigger words
        go here, e.g. "ohwx person")."""
        return PROMPT_TEMPLATE.format(subject=subject, attire=self.attire, lighting=self.lighting,
                                      background=self.background)


DEFAULT_STYLES: dict[str, StylePreset] = {
    "corporate": StylePreset(
        attire="tailored navy suit jacket over a crisp white shirt",
        lighting="soft even studio key light with a subtle rim light",
        background="plain mid-grey studio backdrop",
    ),
    "creative": StylePreset(
        attire="dark unstructured blazer over a plain crew-neck top",
        lighting="warm directional light with gentle shadows",
        background="muted teal seamless paper backdrop",
    ),
    "healthcare": StylePreset(
        attire="clean white coat over a light blue collared shirt",
        lighting="bright soft diffused light",
        background="plain light grey-blue backdrop",
    ),
    "real_estate": StylePreset(
        attire="navy blazer over an open-collar light shirt",
        lighting="bright natural window light",
        background="softly blurred modern bright interior",
    ),
    "technology": StylePreset(
        attire="fitted dark crew-neck sweater",
        lighting="cool soft key light with a gentle edge light",
        background="dark charcoal studio backdrop",
    ),
    "legal": StylePreset(
        attire="charcoal suit, white shirt and a dark silk tie",
        lighting="classic Rembrandt portrait lighting",
        background="softly blurred wood-panelled office",
    ),
    "education": StylePreset(
        attire="knit cardigan over a collared shirt",
        lighting="warm soft daylight",
        background="softly blurred bookshelf",
    ),
}
