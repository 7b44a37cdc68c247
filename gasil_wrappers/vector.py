"""GASILVectorReward: GASIL's shaped reward for a Gymnasium 1.x vector env, one batched D forward per step.

For users of ``gym.make_vec``: the sub-envs carry only the task part of the stack (observation noise,
delayed reward); one vector wrapper on top records every sub-env's episodes into the good-trajectory
buffer and shapes all rewards with one batched numpy forward of D per vector step. Because it sees
every sub-env in the process that holds it, it works over ``SyncVectorEnv`` and ``AsyncVectorEnv`` alike
with an in-process :class:`~gasil_wrappers.GASILState` (no server process needed).

It reproduces the per-env stack under ``SyncVectorEnv`` step for step: sub-env ``j``'s finished
episode enters the buffer before its (s, a) is recorded, samples are recorded in sub-env order, a
training round that comes due after sub-env ``j``'s sample runs before sub-env ``j+1``'s is recorded,
and sub-envs after it in that vector step are scored by the new D (a second forward, only in steps
where a round runs). Gymnasium 1.x autoreset is handled: under the default next-step autoreset, the
step after an episode ends is a reset step (reward 0, action ignored); it is neither recorded as a
policy sample nor shaped.

The per-step work lives in :class:`BatchedGASIL`, which SB3's :class:`gasil_wrappers.sb3.GASILVecEnvWrapper`
runs too: each wrapper only translates its library's autoreset convention.

Needs gymnasium >= 1.0 (``gym.vector.VectorWrapper``); importing this module works on 0.29.1 too, and
then building the wrapper raises ``ImportError``.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np

from gasil_wrappers.config import INFO_KEY, GASILConfig
from gasil_wrappers.reward import EnvRewardScale
from gasil_wrappers.state import GASILState
from gasil_wrappers.topk import TopKEpisodeRecorder

__all__ = ["BatchedGASIL", "GASILVectorReward", "make_vec_stack"]

_VectorWrapper = getattr(gym.vector, "VectorWrapper", None)
_AVAILABLE = _VectorWrapper is not None and int(gym.__version__.split(".")[0]) >= 1
_NEXT_STEP, _SAME_STEP, _DISABLED = "NextStep", "SameStep", "Disabled"


class _Replay(gym.Env):
    """Plays one sub-env's transitions back to a TopKEpisodeRecorder (so its code records the episodes)."""

    metadata = {"render_modes": []}

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        self.observation_space, self.action_space = observation_space, action_space
        self.transition = (None, 0.0, False, False, {})

    def reset(self, *, seed=None, options=None):
        return self.transition[0], {}

    def step(self, action):
        return self.transition


class BatchedGASIL:
    """The per-step core of the batched GASIL wrappers: record every sub-env, shape all rewards at once.

    Shared by :class:`GASILVectorReward` (gymnasium vector envs) and
    :class:`gasil_wrappers.sb3.GASILVecEnvWrapper` (SB3 ``VecEnv``): each of them only translates its
    library's autoreset convention into calls of :meth:`begin_episode` (a sub-env starts an episode
    from this observation) and :meth:`step` (these sub-envs took a policy step).

    :meth:`step` replays the per-env stack's order under a sync vector env: for sub-env ``j`` in index
    order, ``j``'s :class:`~gasil_wrappers.TopKEpisodeRecorder` (fed from the vector step) adds a
    finished episode, then ``j``'s (s, a) is recorded with :meth:`GASILState.record_samples`; one
    batched forward of D scores every sub-env that stepped, and a second one the sub-envs after ``j``
    when a round took effect after ``j``'s sample. Rewards go through the optional per-env
    :class:`~gasil_wrappers.reward.EnvRewardScale` and :meth:`GASILState.shape`, like the per-env stack.
    """

    def __init__(self, state: GASILState, num_envs: int, observation_space: gym.Space,
                 action_space: gym.Space, *, who: str = "GASILVectorReward"):
        if not isinstance(state, GASILState):
            raise TypeError(f"{who}: needs an in-process GASILState (it sees every sub-env in this process, "
                            f"so no server is needed), got {type(state).__name__}")
        self.state = state
        self.config = c = state.config
        self.num_envs = n = int(num_envs)
        self._replays = [_Replay(observation_space, action_space) for _ in range(n)]
        self._recorders = [TopKEpisodeRecorder(r, state) for r in self._replays]  # attach()es the state
        self._od = state.obs_dim
        self._x = np.zeros((n, state.obs_dim + state.act_dim))  # row j: the obs sub-env j acts on, its action
        self._scales = [EnvRewardScale(c.env_reward_scale_gamma) for _ in range(n)] \
            if c.gasil and c.env_reward_scale == "normalized" else None

    def begin_episode(self, j: int, obs_row: np.ndarray, seed: int | None = None) -> None:
        """Sub-env ``j`` starts an episode from ``obs_row`` (a reset; its seed may seed D)."""
        self._replays[j].transition = (obs_row, 0.0, False, False, {})
        self._recorders[j].reset(seed=seed)
        self._x[j, : self._od] = obs_row

    def step(self, obs_rows: np.ndarray, actions, rewards, terminations, truncations,
             stepped: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """Record and shape one vector step of the sub-envs in ``stepped`` (a bool mask).

        ``obs_rows`` are the returned observations as float64 rows (a fresh array: recorders keep
        views). Returns the rewards (shaped where ``stepped`` and ``config.gasil``) and, with
        ``config.gasil``, the arrays ``discriminator_reward``, ``alpha``, ``shaped_reward`` (else None).
        Afterwards every sub-env is taken to act next on its row of ``obs_rows``: call
        :meth:`begin_episode` for those that reset instead.
        """
        n, state, x = self.num_envs, self.state, self._x
        x[:, self._od:] = np.asarray(actions).reshape(n, -1)
        rewards_out = np.array(rewards, dtype=np.float64)
        shape = self.config.gasil
        idx = np.flatnonzero(stepped)
        if shape:
            d_reward, alpha, ready = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
            # One forward for every sub-env that stepped, with D as it is now ...
            first, scores = 0, state.discriminator.reward(x[idx]) if state.ready else None
        for k, j in enumerate(idx):
            replay, recorder = self._replays[j], self._recorders[j]
            replay.transition = (obs_rows[j], rewards[j], bool(terminations[j]), bool(truncations[j]), {})
            recorder.step(actions[j])  # checks the action and reward; a finished episode enters the buffer
            if not shape:
                continue
            if self._scales is not None:  # per sub-env, in sub-env order, as the per-env stack does
                rewards_out[j] = self._scales[j](rewards_out[j], bool(terminations[j]))
            if scores is not None:
                d_reward[j], alpha[j], ready[j] = scores[k - first], state.alpha_at(state.policy_steps), True
            if state.record_samples(x[j: j + 1]) and k + 1 < len(idx):
                # ... and, when a round ran after sub-env j's sample, one more for the sub-envs after it.
                first, scores = k + 1, state.discriminator.reward(x[idx[k + 1:]])
        x[:, : self._od] = obs_rows
        if not shape:
            return rewards_out, None
        rewards_out = state.shape(rewards_out, d_reward, alpha, ready)
        return rewards_out, {"discriminator_reward": d_reward, "alpha": alpha,
                             "shaped_reward": rewards_out.copy()}


class GASILVectorReward(_VectorWrapper if _AVAILABLE else object):
    """Shape every sub-env's reward into ``w·r + α(t)·(−log D(s, a))`` with one batched D forward per step.

    ``state`` is an in-process :class:`~gasil_wrappers.GASILState` (its ``config`` gives ``w``, α and D's
    cadence). Each sub-env's episodes are recorded by its own :class:`~gasil_wrappers.TopKEpisodeRecorder`
    (fed from the vector step), so the buffer ranks them by the reward the sub-env returns (delayed, if
    the sub-envs delay it). With ``config.gasil == False`` (``top_k`` only) rewards are left alone and
    only episodes are recorded. Diagnostics go under ``infos["gasil"]`` as arrays
    (``discriminator_reward``, ``alpha``, ``shaped_reward``, with ``_``-prefixed masks of the sub-envs
    that really stepped). The per-step work is :class:`BatchedGASIL`'s.

    Example:
        >>> from gasil_wrappers import GASILConfig
        >>> config = GASILConfig(gasil=True, delay=5, d_every=256, seed=0)
        >>> envs = make_vec_stack("Pendulum-v1", 4, config)
        >>> _ = envs.reset(seed=0)
        >>> for _ in range(300):
        ...     _, rewards, _, _, infos = envs.step(envs.action_space.sample())
        >>> envs.state.rounds, infos["gasil"]["alpha"].tolist()
        (2, [0.1, 0.1, 0.1, 0.1])
    """

    def __init__(self, env, state: GASILState):
        if not _AVAILABLE:
            raise ImportError(f"GASILVectorReward needs gymnasium >= 1.0 (this is {gym.__version__}); "
                              "use the per-env stack (wrap_stack) under gymnasium 0.29")
        if not isinstance(state, GASILState):
            raise TypeError("GASILVectorReward: needs an in-process GASILState (it sees every sub-env in "
                            f"this process, so no server is needed), got {type(state).__name__}")
        super().__init__(env)
        self.state = state
        self.config = state.config
        self.core = BatchedGASIL(state, self.num_envs, env.single_observation_space, env.single_action_space)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._mode = self._autoreset_mode(env)

    @staticmethod
    def _autoreset_mode(env) -> str:
        mode = env.metadata.get("autoreset_mode", _NEXT_STEP)  # gymnasium 1.0: next-step only
        return getattr(mode, "value", mode)

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        n = self.num_envs
        seeds = [seed + j for j in range(n)] if isinstance(seed, int) else (seed or [None] * n)
        mask = (options or {}).get("reset_mask")
        which = range(n) if mask is None else np.flatnonzero(mask)
        obs_rows = np.array(obs, dtype=np.float64).reshape(n, -1)
        for j in which:  # in sub-env order, like SyncVectorEnv (the first seed seeds D)
            self.core.begin_episode(j, obs_rows[j], seeds[j])
            self._autoreset[j] = False
        return obs, infos

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        n = self.num_envs
        obs_rows = np.array(obs, dtype=np.float64).reshape(n, -1)  # new each step: recorders keep views
        actions = np.asarray(actions)
        stepped = ~self._autoreset if self._mode == _NEXT_STEP else np.ones(n, dtype=bool)
        rewards_out, diag = self.core.step(obs_rows, actions, rewards, terminations, truncations, stepped)
        if diag is not None:
            out = infos.setdefault(INFO_KEY, {})
            for name, value in diag.items():
                out[name], out["_" + name] = value, stepped.copy()
        done = np.logical_or(terminations, truncations)
        if self._mode == _NEXT_STEP:
            for j in np.flatnonzero(~stepped):  # this step reset them: their next step is a policy step
                self.core.begin_episode(j, obs_rows[j])
            self._autoreset = done & stepped
        elif self._mode == _SAME_STEP:
            for j in np.flatnonzero(done):  # the returned obs is already the reset one
                self.core.begin_episode(j, obs_rows[j])
        return obs, rewards_out, terminations, truncations, infos


def _task_stack(env: gym.Env, config: GASILConfig) -> gym.Env:
    from gasil_wrappers.stack import wrap_stack

    return wrap_stack(env, config)


def make_vec_stack(env_id: str, num_envs: int, config: GASILConfig, *, vectorization_mode: str = "sync",
                   vector_kwargs: dict | None = None, state: GASILState | None = None, **make_kwargs):
    """``gym.make_vec`` with the task part of the stack per sub-env and GASIL as one vector wrapper.

    Each sub-env is ``gym.make(env_id, **make_kwargs)`` wrapped in observation noise and the delayed
    reward of ``config``; when ``config.gasil or config.top_k``, :class:`GASILVectorReward` goes on top
    with ``state`` (default: a new ``GASILState(config)``). ``config.backend`` does not matter here: the
    vector wrapper sees every sub-env in this process. ``env_id`` must be a plain id, not one of the
    ``gasil_wrappers:`` ids that already contain a per-env stack.
    """
    from gasil_wrappers.stack import is_stack_id

    if is_stack_id(env_id):
        raise ValueError(f"make_vec_stack: {env_id!r} already contains a per-env GASIL stack; "
                         "pass its base id")
    task = config.replace(gasil=False, top_k=False)
    envs = gym.make_vec(env_id, num_envs, vectorization_mode=vectorization_mode, vector_kwargs=vector_kwargs,
                        wrappers=[functools.partial(_task_stack, config=task)], **make_kwargs)
    if not config.records_buffer:
        return envs
    return GASILVectorReward(envs, state if state is not None else GASILState(config))
