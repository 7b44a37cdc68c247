"""DelayedReward: the paper's delayed-reward MuJoCo tasks (Section 5.4).

Also the one place where the env's own reward is seen before anything changes it, so it reports
the env's reward and true episodic return under ``info["gasil"]`` (RecordEpisodeStatistics placed
outside the stack only sees the shaped return).
"""

from __future__ import annotations

import warnings

import gymnasium as gym

from gasil_wrappers._checks import check_reward, needs_reset
from gasil_wrappers.config import INFO_KEY

__all__ = ["DelayedReward"]

_cut_warned = False  # the warning about episodes cut by a reset is shown once per process


class DelayedReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Accumulate the reward and pay the sum every ``delay`` steps and at episode end.

    Step ``t`` (counting from 1 after each reset) pays the rewards accumulated since the last payout
    when ``t % delay == 0`` or when the episode terminates or is truncated; every other step pays 0.
    Nothing carries over across ``reset``, so the episode's sum of rewards is unchanged.
    With ``delay=1`` the reward passes through unchanged (the wrapper still reports diagnostics).

    Every step it sets ``info["gasil"]["env_reward"]`` (the env's own reward this step) and at episode
    end ``info["gasil"]["episode_return"]`` and ``["episode_length"]``: the true, undelayed return.

    A ``reset`` in the middle of an episode (a wrapper outside, or the trainer, cut it) is counted in
    ``cut_episodes``, warned about once per process, and reported in the reset's
    ``info["gasil"]``: ``cut_episode_return``, ``cut_episode_length`` and ``cut_unpaid_reward`` (the
    accumulated reward never paid). Give registered ids their time limit with
    ``gym.make(id, max_episode_steps=N)``: it truncates inside the stack, which then pays in full.

    Note:
        A non-finite env reward raises ``ValueError`` instead of being accumulated.

    Example:
        >>> import gymnasium as gym
        >>> env = DelayedReward(gym.make("Pendulum-v1"), delay=3)
        >>> _ = env.reset(seed=123)
        >>> [round(env.step([0.0])[1], 3) for _ in range(4)]
        [0.0, 0.0, -4.051, 0.0]
    """

    def __init__(self, env: gym.Env, delay: int = 20):
        if int(delay) != delay or delay < 1:
            raise ValueError(f"DelayedReward: delay must be a positive integer, got {delay!r}")
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        gym.Wrapper.__init__(self, env)
        self.delay = int(delay)
        self._running = False
        self._pending = 0.0
        self._return = 0.0
        self._t = 0
        self.cut_episodes = 0  # episodes reset before they ended

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self._running and self._t:
            self._cut(info)
        self._pending, self._return, self._t = 0.0, 0.0, 0
        self._running = True
        return obs, info

    def _cut(self, info: dict) -> None:
        """A reset in the middle of an episode (by the user, or by a wrapper outside such as a TimeLimit):
        report the episode in the reset's info, count it, warn once per process."""
        global _cut_warned
        self.cut_episodes += 1
        diag = info.setdefault(INFO_KEY, {})
        diag["cut_episode_return"] = self._return
        diag["cut_episode_length"] = self._t
        diag["cut_unpaid_reward"] = self._pending
        if not _cut_warned:
            _cut_warned = True
            warnings.warn(
                f"DelayedReward: reset() after {self._t} steps of an episode that had not ended; the agent "
                f"was never paid its last {self._pending:.4g} of delayed reward. Usually a wrapper outside "
                "the stack ended it (put the TimeLimit inside: gym.make(<id>, max_episode_steps=N) does), "
                "or the trainer reset early (SB3 does at the start of learn() and of each evaluation). Such "
                "episodes are reported in the reset's info['gasil'] (cut_episode_return, cut_episode_length, "
                "cut_unpaid_reward), counted in .cut_episodes and in the owner's "
                "diagnostics()['cut_episodes'], and enter the good-episode buffer as truncated. This warning "
                "is shown once per process",
                RuntimeWarning, stacklevel=2)

    @property
    def unpaid_reward(self) -> float:
        """The reward of the episode in progress accumulated and not paid yet (0 outside an episode)."""
        return float(self._pending) if self._running else 0.0

    def state_dict(self) -> dict:
        """The episode in progress: ``running`` (inside an episode), ``step`` (steps since the reset),
        ``pending_reward`` (accumulated, not paid yet) and ``episode_return`` (the true return so far);
        and ``cut_episodes``."""
        return {"running": bool(self._running), "step": int(self._t), "pending_reward": float(self._pending),
                "episode_return": float(self._return), "cut_episodes": int(self.cut_episodes)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self._running = bool(state["running"])
        self._t = int(state["step"])
        self._pending = float(state["pending_reward"])
        self._return = float(state["episode_return"])
        self.cut_episodes = int(state["cut_episodes"])

    def step(self, action):
        if not self._running:
            raise needs_reset("DelayedReward")
        obs, reward, terminated, truncated, info = self.env.step(action)
        r = check_reward(reward, "DelayedReward")
        self._t += 1
        self._return += r
        self._pending += r
        diag = info.setdefault(INFO_KEY, {})
        diag["env_reward"] = r
        if terminated or truncated or self._t % self.delay == 0:
            paid, self._pending = self._pending, 0.0
        else:
            paid = 0.0
        if terminated or truncated:
            self._running = False
            diag["episode_return"] = self._return
            diag["episode_length"] = self._t
        return obs, paid, terminated, truncated, info
