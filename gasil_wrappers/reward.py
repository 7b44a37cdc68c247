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
    from gymnasium.wrappers.utils import RunningMeanStd, update_mean_var_count_from_moments
except ImportError:  # gymnasium 0.29
    from gymnasium.wrappers.normalize import RunningMeanStd, update_mean_var_count_from_moments

__all__ = ["EnvRewardScale", "shaped_reward", "term_sizes"]


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


def term_sizes(env_reward, d_reward, alpha, weight: float) -> tuple[float, float]:
    """The sizes ``(Σ|weight·env_reward|, Σ|alpha·d_reward|)`` of the two parts of shaped rewards, for
    the GASIL term's share (``diagnostics()["term_share"]``). Scalars, or arrays of one shape (``alpha``
    a scalar or an array of that shape). Absolute values, since ``d_reward`` has either sign in the
    ``logit`` form.

    >>> term_sizes(-2.0, 0.5, 0.1, weight=1.0)
    (2.0, 0.05)
    >>> term_sizes(np.array([1.0, -1.0]), np.array([-3.0, 1.0]), 0.5, weight=2.0)
    (4.0, 2.0)
    """
    if isinstance(env_reward, np.ndarray) or isinstance(d_reward, np.ndarray):
        return (abs(weight) * float(np.add.reduce(np.abs(env_reward), axis=None)),
                float(np.add.reduce(np.abs(alpha * d_reward), axis=None)))
    return abs(weight * env_reward), abs(alpha * d_reward)


class EnvRewardScale:
    """Scale env rewards by ``1 / sqrt(Var[discounted return] + ε)``, as ``NormalizeReward`` does.

    The same statistic and update order as gymnasium's ``NormalizeReward(gamma)``: the discounted return
    ``G ← γ·(1 − terminated)·G + r`` is fed to a running mean/variance (gymnasium's own update,
    ``update_mean_var_count_from_moments``, from ``RunningMeanStd``'s initial values), then ``r`` is
    divided by the running std. Kept per env, like ``NormalizeReward``: one env (``num_envs=None``,
    called with a float) or ``num_envs`` of them at once (:meth:`rows`, the batched vector wrappers),
    each entry updated exactly as the one-env form would be.

    Example:
        >>> scale = EnvRewardScale(gamma=0.0)
        >>> [round(scale(r, False), 2) for r in (1.0, 3.0)]  # the first std is tiny, as in NormalizeReward
        [70.71, 3.0]
        >>> both = EnvRewardScale(gamma=0.0, num_envs=2)
        >>> both.rows(np.array([1.0]), np.array([False]), np.array([1])).round(2).tolist()  # env 1 only
        [70.71]
    """

    def __init__(self, gamma: float = 0.99, epsilon: float = 1e-8, num_envs: int | None = None):
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.num_envs = num_envs
        rms = RunningMeanStd(shape=())
        init = (float(rms.mean), float(rms.var), float(rms.count), 0.0)
        if num_envs is None:
            self.mean, self.var, self.count, self.discounted = init
        else:
            self.mean, self.var, self.count, self.discounted = (np.full(int(num_envs), v) for v in init)

    def _update(self, discounted, mean, var, count, reward, terminated):
        discounted = discounted * self.gamma * (1.0 - terminated) + reward
        return (discounted, *update_mean_var_count_from_moments(mean, var, count, discounted, 0.0, 1))

    def __call__(self, reward: float, terminated: bool) -> float:
        """One env: update the statistic with this step's reward and return the reward scaled."""
        self.discounted, self.mean, self.var, self.count = self._update(
            self.discounted, self.mean, self.var, self.count, reward, terminated)
        return reward / math.sqrt(self.var + self.epsilon)

    def rows(self, rewards: np.ndarray, terminated: np.ndarray, which: np.ndarray) -> np.ndarray:
        """``num_envs`` envs: envs ``which`` (indices) took a step with these rewards; returns them scaled."""
        updated = self._update(self.discounted[which], self.mean[which], self.var[which], self.count[which],
                               rewards, np.asarray(terminated, dtype=np.float64))
        for array, value in zip((self.discounted, self.mean, self.var, self.count), updated):
            array[which] = value
        return rewards / np.sqrt(updated[2] + self.epsilon)

    def state_dict(self) -> dict:
        """``mean``, ``var``, ``count`` and ``discounted``: floats (one env) or lists (``num_envs``)."""
        convert = float if self.num_envs is None else (lambda a: a.tolist())
        return {"mean": convert(self.mean), "var": convert(self.var), "count": convert(self.count),
                "discounted": convert(self.discounted)}

    def load_state_dict(self, state: dict) -> None:
        keys = ("mean", "var", "count", "discounted")
        if self.num_envs is None:
            self.mean, self.var, self.count, self.discounted = (float(state[k]) for k in keys)
            return
        values = [np.array(state[k], dtype=np.float64) for k in keys]
        if any(v.shape != (self.num_envs,) for v in values):
            raise ValueError(f"EnvRewardScale: a saved scale of {values[0].shape} envs, this one has "
                             f"{self.num_envs}")
        self.mean, self.var, self.count, self.discounted = values
