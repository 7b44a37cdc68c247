"""ObservationNoise: the paper's stochastic Walker2d (Section 5.3, Figure 5)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

__all__ = ["ObservationNoise"]

_BLOCK = 1024  # noise rows drawn at once; one draw per step costs more than the MLP forward


class ObservationNoise(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Add independent Gaussian noise N(0, std²) to every observation, at reset and at every step.

    The noise comes from the wrapper's own generator, seeded by ``reset(seed=...)`` (a reset without
    a seed continues the stream), so the same seed gives the same noisy observations and the base
    env's own randomness is left untouched. The observation space is widened to an unbounded Box of
    the same shape, since Gaussian noise can leave any bound.

    Example:
        >>> import gymnasium as gym
        >>> env = ObservationNoise(gym.make("Pendulum-v1"), std=0.1)
        >>> a, _ = env.reset(seed=123)
        >>> b, _ = env.reset(seed=123)
        >>> bool((a == b).all())
        True
    """

    def __init__(self, env: gym.Env, std: float):
        if not (np.isfinite(std) and std >= 0):
            raise ValueError(f"ObservationNoise: std must be a finite number >= 0, got {std!r}")
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or not np.issubdtype(space.dtype, np.floating):
            raise TypeError(f"ObservationNoise: needs a floating-point Box observation space, got {space}")
        gym.utils.RecordConstructorArgs.__init__(self, std=std)
        gym.ObservationWrapper.__init__(self, env)
        self.std = float(std)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, space.shape, space.dtype)
        self._rng, _ = seeding.np_random(None)
        self._noise = np.empty((0,) + space.shape, space.dtype)
        self._next = 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng, _ = seeding.np_random(seed)
            self._next = len(self._noise)  # drop noise drawn from the previous seed
        return super().reset(seed=seed, options=options)

    def state_dict(self) -> dict:
        """``rng``: the state of the noise generator; ``noise``: the rows it already drew that the next
        observations get (noise is drawn in blocks)."""
        return {"rng": self._rng.bit_generator.state, "noise": self._noise[self._next:].copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        noise = np.array(state["noise"], dtype=self.observation_space.dtype)
        if noise.shape[1:] != self.observation_space.shape:
            raise ValueError(f"ObservationNoise: saved noise rows of shape {noise.shape[1:]}, observations "
                             f"here have {self.observation_space.shape}")
        self._rng.bit_generator.state = state["rng"]
        self._noise, self._next = noise, 0

    def observation(self, observation):
        if self._next == len(self._noise):
            shape = (_BLOCK,) + self.observation_space.shape
            self._noise = (self._rng.standard_normal(shape) * self.std).astype(self.observation_space.dtype)
            self._next = 0
        noisy = observation + self._noise[self._next]
        self._next += 1
        return noisy
