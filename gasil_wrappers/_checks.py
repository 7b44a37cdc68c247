"""Input checks shared by the wrappers: each error names the wrapper that caught the bad input."""

from __future__ import annotations

import math

import numpy as np


def check_action(action, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Return ``action`` as an array after checking its shape and that every entry is finite."""
    a = np.asarray(action)
    if a.shape != shape:
        raise ValueError(f"{where}: action has shape {a.shape}, expected {shape}")
    # a·a is one cheap call and finite whenever every entry is; only when it is not (NaN, inf, or an
    # overflow of huge finite entries) do we pay for the exact elementwise test.
    if not math.isfinite(a.dot(a)) and not np.isfinite(a).all():
        raise ValueError(f"{where}: action contains NaN or inf: {a!r}")
    return a


def check_reward(reward, where: str) -> float:
    """Return ``reward`` as a float after checking that it is finite."""
    r = float(reward)
    if not math.isfinite(r):
        raise ValueError(f"{where}: the environment returned a non-finite reward ({r})")
    return r


def needs_reset(where: str) -> RuntimeError:
    """The error for step() before reset() or after the episode ended."""
    return RuntimeError(
        f"{where}: step() called before reset() or after the episode ended; call reset() first"
    )
