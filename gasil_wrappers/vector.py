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
import math

import gymnasium as gym
import numpy as np

from gasil_wrappers._checks import needs_reset
from gasil_wrappers.config import INFO_KEY, GASILConfig
from gasil_wrappers.reward import EnvRewardScale
from gasil_wrappers.state import GASILState
from gasil_wrappers.topk import EpisodeTape

__all__ = ["BatchedGASIL", "GASILVectorReward", "make_vec_stack"]

_VectorWrapper = getattr(gym.vector, "VectorWrapper", None)
_AVAILABLE = _VectorWrapper is not None and int(gym.__version__.split(".")[0]) >= 1
_NEXT_STEP, _SAME_STEP, _DISABLED = "NextStep", "SameStep", "Disabled"
# The ufuncs' reductions, called directly: ``a.sum()``/``a.any()``/``a.all()`` add a Python layer
# (numpy's ``_methods``) that shows in a profile of the per-step path.
_sum, _any, _all = np.add.reduce, np.logical_or.reduce, np.logical_and.reduce


class BatchedGASIL:
    """The per-step core of the batched GASIL wrappers: record every sub-env, shape all rewards at once.

    Shared by :class:`GASILVectorReward` (gymnasium vector envs) and
    :class:`gasil_wrappers.sb3.GASILVecEnvWrapper` (SB3 ``VecEnv``): each of them only translates its
    library's autoreset convention into calls of :meth:`begin_episode` (a sub-env starts an episode
    from this observation) and :meth:`step` (these sub-envs took a policy step).

    One vector step costs a handful of numpy calls whatever the number of sub-envs: the transitions of
    every sub-env that stepped go onto one :class:`~gasil_wrappers.topk.EpisodeTape` at once, one batched
    forward of D scores them all, and their (s, a) rows enter the owner with
    :meth:`GASILState.record_samples`. The result is that of the per-env stack under a sync vector env,
    which handles sub-env ``j`` in index order (its finished episode enters the buffer, then its
    (s, a) is recorded, and a round that comes due then starts before sub-env ``j+1``'s sample): the
    rows are split where a round may start or take effect (:meth:`GASILState.quiet_samples`, at most
    twice per ``d_every`` samples), episodes of the sub-envs up to the split enter the buffer first, and
    when new weights took effect after sub-env ``j``, a second forward scores the sub-envs after it.
    Rewards go through the optional per-env :class:`~gasil_wrappers.reward.EnvRewardScale` and
    :meth:`GASILState.shape`, like the per-env stack.
    """

    def __init__(self, state: GASILState, num_envs: int, observation_space: gym.Space,
                 action_space: gym.Space, *, who: str = "GASILVectorReward"):
        if not isinstance(state, GASILState):
            raise TypeError(f"{who}: needs an in-process GASILState (it sees every sub-env in this process, "
                            f"so no server is needed), got {type(state).__name__}")
        state.check_process(who, whole_vector=True)  # a subprocess may hold it: it sees every sub-env
        state.attach(observation_space, action_space)
        self.state, self.who = state, who
        self.config = c = state.config
        self.num_envs = n = int(num_envs)
        state.num_envs += n
        self._act_shape = tuple(action_space.shape)
        self._tape = EpisodeTape(n, state.obs_dim, state.act_dim)
        self._every = np.arange(n)
        self._ahead = None  # (rounds, policy steps, scores) of score_ahead()
        self._running = np.zeros(n, dtype=bool)  # inside an episode (begun, not ended or spoiled)
        self._owed = np.zeros(n)  # unpaid delayed reward of the episodes in progress, known only from a state
        self._od = state.obs_dim
        self._x = np.zeros((n, state.obs_dim + state.act_dim))  # row j: the obs sub-env j acts on, its action
        self._scale = EnvRewardScale(c.env_reward_scale_gamma, num_envs=n) \
            if c.gasil and c.env_reward_scale == "normalized" else None

    def begin_episode(self, j: int, obs_row: np.ndarray, seed: int | None = None,
                      unpaid: float | None = None) -> None:
        """Sub-env ``j`` starts an episode from ``obs_row`` (a reset; its seed may seed D).

        An episode of ``j`` still running is cut: it enters the buffer as if truncated at its last step,
        with ``unpaid`` (the delayed reward its ``DelayedReward`` never paid, ``cut_unpaid_reward`` in
        the reset's info) added there, and is counted in ``diagnostics()["cut_episodes"]``, as the
        per-env recorder does. ``None``: the reset reported no cut (sub-envs that are new since a GASIL
        state was loaded): what that state recorded as unpaid (``unpaid_reward``) is added instead."""
        state = self.state
        state.on_env_reset(self.who)
        if self._running[j]:
            self._tape.offer_cut(j, state, self._owed[j] if unpaid is None else unpaid)
        self._owed[j] = 0.0
        state.seed_if_unset(seed)
        self._tape.begin(j)
        self._running[j] = True
        self._x[j, : self._od] = obs_row

    def state_dict(self) -> dict:
        """The sub-envs' part of what this core holds between two vector steps (the owner, shared, is
        saved on its own): ``running`` (per sub-env: inside an episode), ``observations`` (the rows the
        sub-envs act on next, float64, flat), ``episodes`` (per sub-env: the ``observations``,
        ``actions`` and ``rewards`` of its episode in progress recorded so far, flat rows; empty outside
        an episode), ``env_reward_scale`` (the per-env :class:`~gasil_wrappers.reward.EnvRewardScale`'s
        state, or None without one) and ``unpaid_reward`` (per sub-env: the delayed reward of its episode
        in progress that a reset reporting no cut adds; zeros here, filled in by
        :func:`~gasil_wrappers.persistence.gasil_state_dict`, whose sub-envs are not saved)."""
        od, episodes = self._od, []
        for j in range(self.num_envs):
            obs, act, rew = self._tape.episode(j)
            episodes.append({"observations": obs.copy(), "actions": act.copy(), "rewards": rew.copy()})
        scale = None if self._scale is None else self._scale.state_dict()
        return {"running": self._running.tolist(), "observations": self._x[:, :od].copy(),
                "episodes": episodes, "env_reward_scale": scale, "unpaid_reward": self._owed.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` into a core of as many sub-envs of the same spaces and config;
        ``ValueError`` (and nothing changed) on one that does not fit."""
        n, od, ad = self.num_envs, self._od, self.state.act_dim
        try:
            running = np.array(state["running"], dtype=bool)
            rows = np.array(state["observations"], dtype=np.float64)
            keys = ("observations", "actions", "rewards")
            episodes = [tuple(np.array(ep[k], dtype=np.float64) for k in keys) for ep in state["episodes"]]
            scale = state["env_reward_scale"]
            owed = np.array(state.get("unpaid_reward", np.zeros(n)), dtype=np.float64)  # older: none
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{self.who}: malformed state ({type(e).__name__}: {e})") from e
        if running.shape != (n,) or rows.shape != (n, od) or len(episodes) != n or owed.shape != (n,):
            saved = running.shape[0] if running.ndim else "?"
            raise ValueError(f"{self.who}: a state of {saved} sub-envs with observations {rows.shape}, this "
                             f"wrapper has {n} sub-envs of {od} dims")
        for j, (obs, act, rew) in enumerate(episodes):
            t = len(rew)
            if obs.shape != (t, od) or act.shape != (t, ad) or rew.shape != (t,) or (t and not running[j]):
                raise ValueError(f"{self.who}: sub-env {j}'s saved episode (observations {obs.shape}, "
                                 f"actions {act.shape}, rewards {rew.shape}, running {bool(running[j])}) "
                                 "does not fit")
        if not np.isfinite(owed).all() or (owed[~running] != 0).any():
            raise ValueError(f"{self.who}: unpaid_reward {owed.tolist()} must be finite, and 0 outside an "
                             "episode")
        if (scale is None) != (self._scale is None):
            raise ValueError(f"{self.who}: the state was saved with env_reward_scale "
                             f"{'raw' if scale is None else 'normalized'}, this config has the other")
        if self._scale is not None:
            self._scale.load_state_dict(scale)  # checks its own shape first
        self._tape.load([ep if running[j] else None for j, ep in enumerate(episodes)])
        self._running, self._owed = running, owed
        self._x[:, :od] = rows
        self._ahead = None

    def act(self, actions, stepped: np.ndarray | None = None) -> None:
        """The policy chose ``actions`` (one row per sub-env) on the current observations: check the rows
        of the sub-envs in ``stepped`` (None: all) and keep them for :meth:`step`. Raises before anything
        is recorded: call it before the sub-envs step, so a bad action never reaches them."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) + self._act_shape:
            raise ValueError(f"{self.who}: actions have shape {actions.shape}, expected "
                             f"{(self.num_envs,) + self._act_shape}")
        acts = actions if stepped is None else actions[stepped]
        if not math.isfinite(_sum(acts, axis=None)):  # one cheap sum, finite whenever every entry is
            idx = self._every if stepped is None else np.flatnonzero(stepped)
            bad = idx[~np.isfinite(acts).all(axis=tuple(range(1, acts.ndim)))]
            if len(bad):
                raise ValueError(f"{self.who}: the action of sub-env {bad[0]} contains NaN or inf: "
                                 f"{actions[bad[0]]!r}")
        self._x[:, self._od:] = actions.reshape(self.num_envs, -1)
        self._ahead = None

    def score_ahead(self) -> None:
        """Score every sub-env's (s, a) with the D in effect now, for the coming :meth:`step`: call it
        after :meth:`act`, while the sub-envs step (SB3's ``step_async``), so the forward runs beside
        them rather than after. The scores are only used if no round took effect in between."""
        state = self.state
        if self.config.gasil and state.ready:
            self._ahead = (state.rounds, state.policy_steps, state.discriminator.reward(self._x))

    def _check_step(self, rewards: np.ndarray, idx: np.ndarray, every: bool) -> None:
        """Refuse a step of sub-envs ``idx`` (``every``: all of them) before anything of it is recorded."""
        if not _all(self._running if every else self._running[idx]):
            raise needs_reset(f"{self.who} (sub-env {idx[~self._running[idx]][0]})")
        rews = rewards if every else rewards[idx]
        if not math.isfinite(_sum(rews)):
            bad = idx[~np.isfinite(rews)]
            if len(bad):
                for j in bad:  # their episodes are spoiled: nothing more of them is recorded
                    self._running[j] = False
                    self._tape.end(j)
                raise ValueError(f"{self.who}: sub-env {bad[0]} returned a non-finite reward "
                                 f"({rewards[bad[0]]}); its episode is dropped, reset it")

    def step(self, obs_rows: np.ndarray, actions, rewards, terminations, truncations,
             stepped: np.ndarray | None = None) -> tuple[np.ndarray, dict | None]:
        """Record and shape one vector step of the sub-envs in ``stepped`` (a bool mask; None: all).

        ``actions``: what the sub-envs were given, or None for those :meth:`act` took. ``obs_rows``
        are the returned observations as float64 rows. Returns the rewards (shaped where ``stepped``
        and ``config.gasil``) and, with ``config.gasil``, the arrays ``discriminator_reward``,
        ``alpha``, ``shaped_reward`` (else None). Afterwards every sub-env is taken to act next on its
        row of ``obs_rows``: call :meth:`begin_episode` for those that reset instead.
        """
        n, state, x, od = self.num_envs, self.state, self._x, self._od
        if actions is not None:
            self.act(actions, stepped)
        ahead, self._ahead = self._ahead, None
        every = stepped is None or bool(_all(stepped))
        given = rewards
        rewards = np.asarray(rewards, dtype=np.float64) if every else np.array(rewards, dtype=np.float64)
        idx = self._every if every else np.flatnonzero(stepped)
        self._check_step(rewards, idx, every)
        self._tape.append(x, rewards)  # every sub-env's row; those that did not step are never read
        ends = np.logical_or(terminations, truncations)
        ended = np.flatnonzero(ends if every else ends[idx]) if _any(ends) else ()  # positions in idx
        if not self.config.gasil:  # top_k only: episodes are recorded, samples (which only train D) are not
            self._add_episodes(idx, ended)
            rewards_out, diag = rewards, None
        elif every:  # (s, a) of every sub-env, in sub-env order
            fresh = ahead is not None and ahead[:2] == (state.rounds, state.policy_steps)  # no round since
            scores = ahead[2] if fresh else None
            rewards_out, diag = self._record_and_shape(idx, x, ended, rewards, terminations, scores)
        else:
            shaped, diag = self._record_and_shape(idx, x[idx], ended, rewards[idx],
                                                  np.asarray(terminations)[idx], None)
            rewards_out = rewards  # a copy of the input
            rewards_out[idx] = shaped
            for name, value in diag.items():
                diag[name] = np.zeros(n)
                diag[name][idx] = value
        if rewards_out is given:  # the rewards returned are never the input array
            rewards_out = rewards_out.copy()
        for k in ended:
            self._running[idx[k]] = False
            self._tape.end(idx[k])
        x[:, :od] = obs_rows
        return rewards_out, diag

    def _add_episodes(self, idx, positions) -> None:
        for k in positions:
            self.state.add_episode(*self._tape.episode(idx[k]))

    def _record_and_shape(self, idx, rows, ended, rews, terminations, scores) -> tuple[np.ndarray, dict]:
        """Episodes into the buffer, samples into the owner, rewards shaped: per row of ``rows``
        (``scores``: −log D of ``rows`` if already computed with the D in effect)."""
        state, m, p0 = self.state, len(idx), self.state.policy_steps
        env_rewards = rews if self._scale is None else self._scale.rows(rews, terminations, idx)
        if scores is None and state.ready:
            scores = state.discriminator.reward(rows)
        if not len(ended) and state.quiet_samples() >= m - 1:
            # The common step: no episode ended and a round may only start (or take effect) after the
            # last row, so every row is scored by the D in effect now.
            state.record_samples(rows)
            ready = scores is not None
            d_reward = scores if ready else np.zeros(m)
            alpha = state.alphas(p0, m) if ready else np.zeros(m)
        else:
            ended = np.asarray(ended, dtype=np.int64)
            d_reward, alpha, ready = np.zeros(m), np.zeros(m), np.zeros(m, dtype=bool)
            first, pos = 0, 0
            while pos < m:
                # the rows up to `end` start or apply a round at most at their last one: the episodes
                # that ended in them enter the buffer first, as sub-env by sub-env they would have by then
                end = min(pos + state.quiet_samples() + 1, m)
                self._add_episodes(idx, ended[(ended >= pos) & (ended < end)])
                if scores is not None:
                    d_reward[pos:end], ready[pos:end] = scores[pos - first: end - first], True
                    alpha[pos:end] = state.alphas(state.policy_steps, end - pos)
                took_effect = state.record_samples(rows[pos:end])
                pos = end
                if took_effect and pos < m:  # new weights after sub-env idx[pos - 1]: score the rest
                    first, scores = pos, state.discriminator.reward(rows[pos:])
        shaped = state.shape(env_rewards, d_reward, alpha, ready)
        return shaped, {"discriminator_reward": d_reward, "alpha": alpha, "shaped_reward": shaped.copy()}


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

    def state_dict(self) -> dict:
        """This wrapper's part of the state between two vector steps (the owner, ``self.state``, is saved
        on its own): ``core`` (:meth:`BatchedGASIL.state_dict`) and ``autoreset`` (per sub-env: its next
        step is a next-step autoreset, not a policy step). Save and restore the whole vector env with
        :func:`gasil_wrappers.save_env_state` / :func:`~gasil_wrappers.load_env_state` (sync sub-envs),
        or the GASIL part alone with :func:`gasil_wrappers.persistence.save_gasil_state`."""
        return {"core": self.core.state_dict(), "autoreset": self._autoreset.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (``ValueError``, and nothing changed, on one that does not fit)."""
        autoreset = np.array(state.get("autoreset") if isinstance(state, dict) else None, dtype=object)
        if autoreset.shape != (self.num_envs,) or not all(isinstance(a, (bool, np.bool_)) for a in autoreset):
            raise ValueError(f"GASILVectorReward: 'autoreset' must be {self.num_envs} bools")
        if "core" not in state:
            raise ValueError("GASILVectorReward: not a state of this wrapper (no 'core')")
        self.core.load_state_dict(state["core"])
        self._autoreset = autoreset.astype(bool)

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
        unpaid = _cut_unpaid(infos, n)
        for j in which:  # in sub-env order, like SyncVectorEnv (the first seed seeds D)
            self.core.begin_episode(j, obs_rows[j], seeds[j], unpaid[j])
            self._autoreset[j] = False
        return obs, infos

    def step(self, actions):
        n = self.num_envs
        stepped = ~self._autoreset if self._mode == _NEXT_STEP else np.ones(n, dtype=bool)
        every = bool(stepped.all())
        self.core.act(actions, None if every else stepped)  # a bad action raises before the sub-envs see it
        if isinstance(self.env, gym.vector.AsyncVectorEnv):  # D's forward runs while the workers step
            self.env.step_async(actions)
            if every:
                self.core.score_ahead()
            obs, rewards, terminations, truncations, infos = self.env.step_wait()
        else:
            obs, rewards, terminations, truncations, infos = self.env.step(actions)
        obs_rows = np.asarray(obs, dtype=np.float64).reshape(n, -1)
        rewards_out, diag = self.core.step(obs_rows, None, rewards, terminations, truncations,
                                           None if every else stepped)
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


def _cut_unpaid(infos: dict, n: int) -> list[float | None]:
    """Per sub-env, the delayed reward a reset cut off (``DelayedReward``'s ``cut_unpaid_reward`` in the
    vector reset's infos), None where the reset reported no cut."""
    diag = infos.get(INFO_KEY, {}) if isinstance(infos, dict) else {}
    if "cut_unpaid_reward" not in diag:
        return [None] * n
    return [float(v) if cut else None
            for v, cut in zip(diag["cut_unpaid_reward"], diag["_cut_unpaid_reward"])]


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
