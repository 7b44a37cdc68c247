"""The good-trajectory buffer (top-K episodes by discounted return) and the wrapper that feeds it.

- :class:`Episode`: one finished episode (observations the agent saw, its actions, its rewards).
- :class:`GoodTrajectoryBuffer`: the paper's buffer B, capacity counted in steps.
- :class:`EpisodeTape`: the episodes in progress of one env or of a batch of them.
- :class:`TopKEpisodeRecorder`: records every episode of an env and offers it to the buffer.
"""

from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from gasil_wrappers._owner_wrapper import OwnerWrapper
from gasil_wrappers.config import INFO_KEY

__all__ = ["Episode", "EpisodeTape", "GoodTrajectoryBuffer", "TopKEpisodeRecorder", "discounted_return"]


def discounted_return(rewards: np.ndarray, gamma: float) -> float:
    """R = Σ_t γ^t r_t (the paper's ranking of episodes, Section 4.1)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return float(np.dot(gamma ** np.arange(len(rewards)), rewards))


@dataclass
class Episode:
    """A finished episode: ``obs[t]`` is what the agent saw when it chose ``actions[t]``."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    ret: float = field(default=math.nan)

    def __len__(self) -> int:
        return len(self.rewards)


class GoodTrajectoryBuffer:
    """The best past episodes by discounted return, within a capacity counted in steps.

    Contents are defined by ranking alone, so they do not depend on insertion order: rank every
    episode ever offered by return (ties: earlier first), then keep the longest prefix of that ranking
    whose total length fits in ``capacity_steps``. The best episode is always kept, even when it alone
    is longer than the capacity (otherwise a 500-step buffer on 1000-step episodes, the paper's
    Figure 7a, would stay empty). To keep that definition incrementally, the buffer remembers the best
    episode it ever evicted and turns away anything ranked below it: a short, worse episode must not
    slip into the room a better, longer one left.

    Arrays are copied on insert. A non-finite return is never stored: it is rejected, counted in
    ``rejected`` and warned about once.

    Example:
        >>> buf = GoodTrajectoryBuffer(capacity_steps=3, gamma=1.0)
        >>> for r in (1.0, 5.0, 3.0):
        ...     _ = buf.add(np.zeros((1, 2)), np.zeros((1, 1)), np.array([r]))
        >>> [ep.ret for ep in buf.episodes]
        [5.0, 3.0, 1.0]
        >>> _ = buf.add(np.zeros((2, 2)), np.zeros((2, 1)), np.array([2.0, 2.0]))
        >>> [ep.ret for ep in buf.episodes]
        [5.0, 4.0]
    """

    def __init__(self, capacity_steps: int, gamma: float = 0.99):
        if capacity_steps < 1:
            raise ValueError(f"GoodTrajectoryBuffer: capacity_steps must be >= 1, got {capacity_steps}")
        self.capacity_steps = int(capacity_steps)
        self.gamma = float(gamma)
        self.episodes: list[Episode] = []  # best first
        self._keys: list[tuple[float, int]] = []  # (-return, arrival) in the same order
        self._arrivals = 0
        self._cutoff: tuple[float, int] | None = None  # key of the best episode ever evicted
        self.num_steps = 0
        self.rejected = 0
        self.version = 0  # bumped on every change, so readers can cache flattened views

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, obs, actions, rewards) -> bool:
        """Offer an episode; returns whether it is in the buffer afterwards."""
        obs, actions = np.array(obs, copy=True), np.array(actions, copy=True)
        rewards = np.array(rewards, dtype=np.float64, copy=True)
        if not len(obs) == len(actions) == len(rewards) > 0:
            raise ValueError(
                f"GoodTrajectoryBuffer: obs, actions and rewards need the same non-zero length, got "
                f"{len(obs)}, {len(actions)}, {len(rewards)}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            ret = discounted_return(rewards, self.gamma)
        if not math.isfinite(ret):
            if self.rejected == 0:
                warnings.warn(
                    f"GoodTrajectoryBuffer: rejected an episode with non-finite return {ret}; "
                    "further rejections are only counted (see .rejected)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.rejected += 1
            return False
        key = (-ret, self._arrivals)
        self._arrivals += 1
        if self._cutoff is not None and key > self._cutoff:
            return False
        i = bisect.bisect(self._keys, key)
        episode = Episode(obs, actions, rewards, ret)
        self._keys.insert(i, key)
        self.episodes.insert(i, episode)
        self.num_steps += len(episode)
        while self.num_steps > self.capacity_steps and len(self.episodes) > 1:
            evicted = self._keys.pop()
            self._cutoff = evicted if self._cutoff is None else min(self._cutoff, evicted)
            self.num_steps -= len(self.episodes.pop())
        self.version += 1
        return any(e is episode for e in self.episodes)

    def returns(self) -> np.ndarray:
        """Returns of the stored episodes, best first."""
        return np.array([e.ret for e in self.episodes])

    def ages(self) -> np.ndarray:
        """For each stored episode, best first, how many episodes were offered after it (0: the latest).

        All young means the best episodes are the agent's latest ones, so the current policy is about
        as good as the buffer and a discriminator has little to tell apart; old ones mean the policy
        has fallen below its own best past episodes, which is what GASIL pulls it back to.

        >>> buf = GoodTrajectoryBuffer(capacity_steps=2, gamma=1.0)
        >>> for r in (5.0, 1.0, 3.0, 2.0):
        ...     _ = buf.add(np.zeros((1, 2)), np.zeros((1, 1)), np.array([r]))
        >>> buf.returns().tolist(), buf.ages().tolist()
        ([5.0, 3.0], [3, 1])
        """
        return np.array([self._arrivals - 1 - arrival for _, arrival in self._keys], dtype=np.int64)

    def state_dict(self) -> dict:
        return {
            "episodes": [(e.obs, e.actions, e.rewards) for e in self.episodes],
            "keys": list(self._keys),
            "cutoff": self._cutoff,
            "arrivals": self._arrivals,
            "rejected": self.rejected,
        }

    def load_state_dict(self, state: dict) -> None:
        episodes = [Episode(np.array(o), np.array(a), np.array(r, dtype=np.float64), -key[0])
                    for (o, a, r), key in zip(state["episodes"], state["keys"], strict=True)]
        self.episodes = episodes
        self._keys = [tuple(k) for k in state["keys"]]
        self._cutoff = None if state["cutoff"] is None else tuple(state["cutoff"])
        self._arrivals = int(state["arrivals"])
        self.rejected = int(state["rejected"])
        self.num_steps = sum(len(e) for e in episodes)
        self.version += 1


class EpisodeTape:
    """The episodes in progress of ``num_envs`` envs, kept as a log of their steps.

    Row ``i`` of the log holds, for every env, the observation its agent acted on and the action
    (``concat(s, a)``), and the reward it was paid, at step ``i``: one vector step is written with one
    call (:meth:`append`), whatever the number of envs. An env's episode is the stretch of its column
    from its :meth:`begin` on; :meth:`episode` gives views of it (the buffer copies what it keeps). Rows
    no episode in progress needs are dropped when the log fills, and it doubles when they all are.
    :class:`TopKEpisodeRecorder` keeps a tape of one env; the batched vector wrappers
    (:class:`~gasil_wrappers.vector.BatchedGASIL`) one of all sub-envs.

    Example:
        >>> tape = EpisodeTape(2, 1, 1)
        >>> tape.begin(0); tape.begin(1)
        >>> tape.append(np.array([[0.0, 0.5], [10.0, 0.5]]), np.array([1.0, 2.0]))
        >>> tape.append_one(1, np.array([11.0]), np.zeros(1), 3.0)
        >>> obs, actions, rewards = tape.episode(1)
        >>> obs[:, 0].tolist(), rewards.tolist()
        ([10.0, 11.0], [2.0, 3.0])
    """

    def __init__(self, num_envs: int, obs_dim: int, act_dim: int, capacity: int = 1024):
        self.obs_dim = int(obs_dim)
        self.rows = np.empty((capacity, num_envs, self.obs_dim + int(act_dim)), np.float64)
        self.rew = np.empty((capacity, num_envs), np.float64)
        self.size = 0  # rows in use
        self.start: list[int | None] = [None] * num_envs  # where each env's episode begins (None: none)

    def _make_room(self) -> None:
        """Drop the rows before the oldest episode in progress, or double the log when there are none."""
        keep = min((s for s in self.start if s is not None), default=self.size)
        if keep == 0:
            self._grow()
            return
        n = self.size - keep
        self.rows[:n], self.rew[:n] = self.rows[keep: self.size], self.rew[keep: self.size]
        self.size = n
        self.start = [None if s is None else s - keep for s in self.start]

    def _grow(self) -> None:
        self.rows, self.rew = (np.concatenate([a, np.empty_like(a)]) for a in (self.rows, self.rew))

    def begin(self, j: int) -> None:
        """Env ``j`` starts a new episode (with the next step written)."""
        self.start[j] = self.size

    def end(self, j: int) -> None:
        """Env ``j``'s episode is over: its rows may be dropped."""
        self.start[j] = None

    def append(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """One step of every env: ``rows[j] = concat(s, a)`` of env ``j``, ``rewards[j]`` its reward (the
        rows of envs that did not step are written too, and never read)."""
        if self.size == len(self.rew):
            self._make_room()
        self.rows[self.size] = rows
        self.rew[self.size] = rewards
        self.size += 1

    def append_one(self, j: int, obs, action, reward: float) -> None:
        """A step of env ``j`` alone (a tape of one env)."""
        if self.size == len(self.rew):
            self._make_room()
        row = self.rows[self.size, j]
        row[: self.obs_dim] = obs
        row[self.obs_dim:] = action
        self.rew[self.size, j] = reward
        self.size += 1

    def offer_cut(self, j: int, state, unpaid: float) -> None:
        """Env ``j``'s episode, reset before it ended, enters ``state``'s buffer as if truncated at its last
        step, with ``unpaid`` (the delayed reward never paid, DelayedReward's ``cut_unpaid_reward``)
        added there; an in-process owner counts it (``diagnostics()["cut_episodes"]``). Nothing for an
        episode without steps."""
        obs, act, rew = self.episode(j)
        if not len(rew):
            return
        rew[-1] += unpaid
        count = getattr(state, "count_cut_episode", None)
        if count is not None:
            count()
        state.add_episode(obs, act, rew)

    def steps(self, j: int) -> int:
        """Steps of env ``j``'s episode so far."""
        start = self.start[j]
        return 0 if start is None else self.size - start

    def episode(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of env ``j``'s episode so far: observations, actions, rewards (valid until the next
        :meth:`append`)."""
        start = self.start[j]
        if start is None:
            start = self.size
        rows = self.rows[start: self.size, j]
        return rows[:, : self.obs_dim], rows[:, self.obs_dim:], self.rew[start: self.size, j]

    def load(self, episodes: list) -> None:
        """Make ``episodes[j]`` env ``j``'s episode so far (a restored checkpoint): an ``(obs, actions,
        rewards)`` triple of arrays with one entry per step, or None for an env outside an episode.
        Whatever the tape held is dropped."""
        if len(episodes) != len(self.start):
            raise ValueError(f"EpisodeTape: {len(episodes)} episodes for a tape of {len(self.start)} envs")
        size = max((len(ep[2]) for ep in episodes if ep is not None), default=0)
        while size > len(self.rew):
            self._grow()
        for j, episode in enumerate(episodes):
            if episode is None:
                self.start[j] = None
                continue
            obs, actions, rewards = episode
            t, first = len(rewards), size - len(rewards)  # every episode ends at the last row
            row = self.rows[first:size, j]
            row[:, : self.obs_dim] = np.reshape(obs, (t, self.obs_dim))
            row[:, self.obs_dim:] = np.reshape(actions, (t, row.shape[1] - self.obs_dim))
            self.rew[first:size, j] = rewards
            self.start[j] = first
        self.size = size


class TopKEpisodeRecorder(OwnerWrapper, gym.utils.RecordConstructorArgs):
    """Record every finished episode and offer it to the good-trajectory buffer of a GASILState.

    The recorder sees what the agent sees before GASIL's shaping: the observations the policy acted on
    (noisy, under ObservationNoise) and the reward it is given (delayed, under DelayedReward), so the
    buffer ranks episodes by that reward. Episodes are written into preallocated arrays that grow by
    doubling, and copied into the buffer when they end.

    Note:
        A NaN/inf or wrongly shaped action, or a non-finite reward, raises ``ValueError``; the episode
        in progress is then never written to the buffer.

    Note:
        An episode cut short by a ``reset`` (a wrapper outside the stack, or the trainer, ended it) enters
        the buffer as if truncated at its last step, with the delayed reward it was never paid added
        there, and is counted in the owner's ``diagnostics()["cut_episodes"]``.

    Example:
        >>> import gymnasium as gym
        >>> from gasil_wrappers import GASILConfig, GASILState
        >>> state = GASILState(GASILConfig(top_k=True, buffer_steps=400))
        >>> env = TopKEpisodeRecorder(gym.make("Pendulum-v1"), state)
        >>> _ = env.reset(seed=123)
        >>> while not env.step([0.0])[3]:
        ...     pass
        >>> len(state.buffer), state.buffer.num_steps
        (1, 200)
    """

    def __init__(self, env: gym.Env, state):
        gym.utils.RecordConstructorArgs.__init__(self, state=state)
        OwnerWrapper.__init__(self, env, state)
        if hasattr(self.state, "count_cut_episode"):  # an in-process GASILState: count the envs feeding it
            self.state.num_envs += 1
        self._tape = EpisodeTape(1, int(np.prod(env.observation_space.shape)), int(np.prod(self._act_shape)))

    def state_dict(self) -> dict:
        """OwnerWrapper's keys, and ``episode``: the ``observations``, ``actions`` and ``rewards`` of the
        episode in progress recorded so far."""
        obs, act, rew = (a.copy() for a in self._tape.episode(0))
        episode = {"observations": obs.reshape((len(rew),) + self.observation_space.shape),
                   "actions": act.reshape((len(rew),) + self._act_shape), "rewards": rew}
        return {**OwnerWrapper.state_dict(self), "episode": episode}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        episode = state["episode"]
        obs, act, rew = (np.asarray(episode[k], np.float64) for k in ("observations", "actions", "rewards"))
        t = len(rew)
        if obs.shape != (t,) + self.observation_space.shape or act.shape != (t,) + self._act_shape:
            raise ValueError(f"TopKEpisodeRecorder: a saved episode of observations {obs.shape}, actions "
                             f"{act.shape} and rewards {rew.shape} does not fit this env")
        OwnerWrapper.load_state_dict(self, state)
        self._tape.load([(obs, act, rew)])

    def begin_episode(self) -> None:
        self._tape.begin(0)

    def end_cut_episode(self, info: dict) -> None:
        """An episode reset before it ended enters the buffer as if truncated at its last step.

        The reward the DelayedReward inside had not paid yet (it reports it in the reset's info) is added
        to the last step's, as a truncation there would have paid it. The owner counts the episode
        (``diagnostics()["cut_episodes"]``).
        """
        self._tape.offer_cut(0, self.state, info.get(INFO_KEY, {}).get("cut_unpaid_reward", 0.0))

    def transition(self, obs, action, reward: float, terminated: bool, truncated: bool, info: dict) -> float:
        self._tape.append_one(0, obs, action, reward)
        if terminated or truncated:
            self.state.add_episode(*self._tape.episode(0))
            self._tape.end(0)
        return reward
