"""The shaped reward of GASIL, in one place, and the env-reward scale it may be weighed against.

- :func:`shaped_reward`: ``w·r + α·(−log D(s, a))`` once D is in effect, the env reward before. Every
  owner and wrapper that shapes rewards (the per-env wrapper through :class:`~gasil_wrappers.GASILState`,
  the batched vector wrappers) calls it, for one reward or an array of them.
- :class:`EnvRewardScale`: divides one env's reward by the running std of its discounted return,
  the statistic gymnasium's ``NormalizeReward`` keeps (``GASILConfig(env_reward_scale="normalized")``).
"""

from __future__ import annotations

import math

import numpy as np

try:  # gymnasium >= 1.0
    from gymnasium.wrappers.utils import RunningMeanStd
except ImportError:  # gymnasium 0.29
    from gymnasium.wrappers.normalize import RunningMeanStd

__all__ = ["EnvRewardScale", "shaped_reward"]


def shaped_reward(env_reward, d_reward, alpha, ready, weight: float):
    """GASIL's reward: ``weight·env_reward + alpha·d_reward`` where ``ready``, else ``env_reward``.

    ``d_reward`` is −log D(s, a) and ``ready`` says whether a trained D is in effect: until then the
    reward is the env reward itself (unweighted, also for ``weight=0``), since an untrained D carries no
    information. Scalars, or arrays of one shape (one entry per sub-env).

    >>> shaped_reward(2.0, 0.5, 0.1, True, weight=1.0)
    2.05
    >>> shaped_reward(np.array([2.0, 2.0]), np.array([0.5, 0.0]), 0.1, np.array([True, False]), weight=0.0)
    array([0.05, 2.  ])
    """
    if isinstance(ready, np.ndarray):
        return np.where(ready, weight * env_reward + alpha * d_reward, env_reward)
    return weight * env_reward + alpha * d_reward if ready else env_reward


class EnvRewardScale:
    """Scale one env's rewards by ``1 / sqrt(Var[discounted return] + ε)``, as ``NormalizeReward`` does.

    The same statistic and update order as gymnasium's ``NormalizeReward(gamma)``: the discounted return
    ``G ← γ·(1 − terminated)·G + r`` is fed to a ``RunningMeanStd`` (gymnasium's own), then ``r`` is
    divided by the running std. Kept per env (one per sub-env), like ``NormalizeReward``.

    Example:
        >>> scale = EnvRewardScale(gamma=0.0)
        >>> [round(scale(r, False), 2) for r in (1.0, 3.0)]  # the first std is tiny, as in NormalizeReward
        [70.71, 3.0]
    """

    def __init__(self, gamma: float = 0.99, epsilon: float = 1e-8):
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.rms = RunningMeanStd(shape=())
        self.discounted = 0.0

    def __call__(self, reward: float, terminated: bool) -> float:
        """Update the statistic with this step's reward and return the reward scaled."""
        self.discounted = self.discounted * self.gamma * (1.0 - terminated) + reward
        self.rms.update_from_moments(self.discounted, 0.0, 1)
        return reward / math.sqrt(self.rms.var + self.epsilon)

    def state_dict(self) -> dict:
        return {"mean": float(self.rms.mean), "var": float(self.rms.var), "count": float(self.rms.count),
                "discounted": float(self.discounted)}

    def load_state_dict(self, state: dict) -> None:
        self.rms.mean, self.rms.var = np.float64(state["mean"]), np.float64(state["var"])
        self.rms.count = float(state["count"])
        self.discounted = float(state["discounted"])
