"""Checks every settings dataclass uses in `__post_init__`: messages start with the field name, so the
config loader only has to add the section (`framing.face_height = 2.0: must be between 0.05 and 0.9`)."""

from __future__ import annotations


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ValueError naming `name` when `value` is outside [low, high] (or not a finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ValueError(f"{name} = {value!r}: must be between {low} and {high}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming `name` when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} = {value!r}: must be one of {', '.join(repr(c) for c in choices)}")
