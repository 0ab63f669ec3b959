"""The One-Euro filter (Casiez et al. 2012): low-latency smoothing of noisy signals, such as face landmarks
from frame to frame. Pure: the state is passed in and returned."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroState:
    value: np.ndarray
    derivative: np.ndarray
    t_s: float


def _alpha(cutoff: float | np.ndarray, dt: float) -> float | np.ndarray:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro(state: OneEuroState | None, x: np.ndarray, t_s: float, min_cutoff: float, beta: float,
             d_cutoff: float = 1.0, speed_unit: float = 1.0) -> tuple[OneEuroState, np.ndarray]:
    """One step of the One-Euro filter (Casiez et al. 2012) over an array of signals at once.

    Slow movement is smoothed hard (cutoff near `min_cutoff` Hz); fast movement raises the cutoff by
    `beta * speed / speed_unit`, so the filter follows without lag. Returns the new state and the
    filtered value.
    """
    if state is None or t_s <= state.t_s:
        return OneEuroState(x, np.zeros_like(x), t_s), x
    dt = t_s - state.t_s
    dx = (x - state.value) / dt
    derivative = state.derivative + _alpha(d_cutoff, dt) * (dx - state.derivative)
    cutoff = min_cutoff + beta * np.abs(derivative) / speed_unit
    value = state.value + _alpha(cutoff, dt) * (x - state.value)
    return OneEuroState(value, derivative, t_s), value
