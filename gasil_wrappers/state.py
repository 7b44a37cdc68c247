"""GASILState: the one owner of GASIL's out-of-band state.

It owns the good-trajectory buffer, the recent policy samples, the discriminator (with its optimizer
and input normalizer), the step counters, the α schedule and the random generator, and it trains D on
its own cadence between env steps. The two GASIL wrappers hold a reference to it; a trainer never
calls it, but may read ``diagnostics()`` and checkpoint it with ``state_dict()``/``load_state_dict()``.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
import warnings
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait

import gymnasium as gym
import numpy as np
import torch

from gasil_wrappers.config import DEFAULT_D_EVERY, GASILConfig
from gasil_wrappers.discriminator import Discriminator
from gasil_wrappers.reward import shaped_reward, term_sizes
from gasil_wrappers.topk import GoodTrajectoryBuffer

__all__ = ["GASILOwnershipError", "GASILState", "OwnerRef", "find_state"]

_STATE_FORMAT = 1
# (config, env key, id of the vector env being built or None) -> the live state envs made there share
_shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_VECTOR_BASES = ("VectorEnv", "VecEnv")  # gymnasium's (also 0.29's experimental one) and SB3's base classes
_SUBPROCESS_VECTORS = ("AsyncVectorEnv", "SubprocVecEnv")
_FIXES = ("put GASIL on the vector env in the learner process instead: gasil_wrappers.make_vec_stack / "
          "GASILVectorReward (gymnasium), gasil_wrappers.sb3.GASILVecEnvWrapper (SB3), or the Ray-backed "
          "owner (docs/scale_out.md). If this process runs a whole independent training run of its own, "
          "opt out with GASILConfig(allow_subprocess_owner=True) (gym.make(..., "
          "allow_subprocess_owner=True), --stack.allow-subprocess-owner True)")


class GASILOwnershipError(RuntimeError):
    """An in-process GASIL owner used where it would silently split or leak: in a process other than
    the one that built it, or in a multiprocessing child (a subprocess vector-env worker)."""


def _vector_env_being_built():
    """The vector env whose constructor is on the call stack (it is making its sub-envs), or None.

    Recognizes gymnasium's vector envs (``SyncVectorEnv``, ``AsyncVectorEnv``, ``gym.make_vec``, 0.29's
    too) and SB3's ``VecEnv`` s (``DummyVecEnv``, ``SubprocVecEnv``) by their base classes' names.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            obj = frame.f_locals.get("self")
            if obj is not None and any(c.__name__ in _VECTOR_BASES for c in type(obj).__mro__):
                return obj
        frame = frame.f_back
    return None


def _is_subprocess_vector(vector) -> bool:
    return any(c.__name__ in _SUBPROCESS_VECTORS for c in type(vector).__mro__)


def _flat_dim(space: gym.Space, what: str) -> int:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise TypeError(f"GASILState: needs a 1-D Box {what} space (flatten it first), got {space}")
    return space.shape[0]


class GASILState:
    """Buffer, recent policy samples, discriminator, counters and schedule of one GASIL run.

    Training cadence: every policy step (summed over all sub-envs sharing this state) is recorded in a
    ring of the last ``d_every`` samples. Once ``d_every`` steps have passed since the last round started
    and the buffer holds an episode, a round starts: its minibatches (``d_updates`` of ``d_batch_size``
    current-policy rows and as many good-buffer rows) are drawn at that step, D trains on them in a
    background thread, and the new weights take effect ``config.apply_lag`` policy steps later (256 by
    default; the step waits if the thread is not done). Which step uses which weights is therefore
    fixed, whatever the machine's speed: runs are reproducible and checkpoints resume bitwise.
    ``d_apply_lag=0`` trains inline instead. While a round trains, ``discriminator.net`` and its
    optimizer belong to the training thread: read D through :meth:`discriminator_reward` or
    :meth:`state_dict` (which waits for the round), not through the torch module.

    Shaped reward: ``w·r + α(t)·(−log D(s,a))`` with ``t`` the number of policy steps so far.

    Note:
        Until the buffer holds an episode *and* D has trained once, the shaped reward is the env
        reward ``r`` itself (unweighted, also for ``w = 0``): an untrained D carries no information.

    Sharing (who feeds one state): the sub-envs one vector env builds in its constructor
    (``SyncVectorEnv``, ``gym.make_vec``, SB3's ``DummyVecEnv``, each sub-env from its own ``gym.make``
    call, as in CleanRL) share one state. Envs made separately share one only while it has not been
    reset yet, with a warning unless they name the same ``group``; an env made after that (an evaluation
    env, ``env.spec.make()``, a re-run notebook cell) gets a fresh state of its own, with a warning.
    Passing ``state=`` (:func:`~gasil_wrappers.wrap_stack`) shares on purpose. ``copy.deepcopy`` gives an
    independent copy. Evaluate on :func:`~gasil_wrappers.make_eval_env`, which never touches a state.

    Processes: a state serves the process that built it. Used in another process (a fork or a pickled
    copy) or in a multiprocessing child (a ``SubprocVecEnv``/``AsyncVectorEnv`` worker, which would
    train its own D on its own episodes), the wrappers raise :class:`GASILOwnershipError`, unless
    ``config.allow_subprocess_owner`` says the child runs a whole independent training run.

    Example:
        >>> state = GASILState(GASILConfig(gasil=True, alpha=0.5, alpha_start=100, alpha_end=300))
        >>> [state.alpha_at(t) for t in (0, 100, 200, 300, 1000)]
        [0.0, 0.0, 0.25, 0.5, 0.5]
    """

    is_gasil_owner = True  # what find_state looks for (RayGASILOwner has it too)

    def __init__(self, config: GASILConfig | None = None):
        self.config = config if config is not None else GASILConfig(gasil=True)
        c = self.config
        self.buffer = GoodTrajectoryBuffer(c.buffer_steps, c.gamma)
        self.discriminator: Discriminator | None = None
        self.obs_dim: int | None = None
        self.act_dim: int | None = None
        self._seed = c.seed
        self._rng: np.random.Generator | None = None
        self.policy_steps = 0
        self.rounds = 0
        self._since_round = 0
        self._recent: np.ndarray | None = None
        self._cursor = 0
        self._n_recent = 0
        self._good_x: np.ndarray | None = None
        self._good_version = -1
        self._last_stats = {"d_loss": math.nan, "d_acc_policy": math.nan, "d_acc_buffer": math.nan}
        self._pending: Future | None = None  # the round training in the background
        self._apply_at = 0  # the policy step at which its weights take effect
        self._pending_pid = os.getpid()  # the process whose thread trains it
        # |w·r| and α·(−log D) summed over the shaped rewards since the last round started, and the share
        # of the GASIL term in the last completed window (one PPO batch when d_every is the batch)
        self._terms = [0.0, 0.0]
        self._term_share = math.nan
        self.cut_episodes = 0  # episodes reset before they ended (recorded as truncated)
        self.env_key: str | None = None  # the env id it is shared under (GASILState.shared)
        self.num_envs = 0  # recorders (one per env) feeding it
        self._pid = os.getpid()  # the process it serves
        self._started = False  # an env of it has been reset: it no longer takes new envs implicitly
        self._scope: weakref.ref | None = None  # the vector env whose sub-envs share it
        self._join_warned = False

    # --- sharing ---------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether an env using this state has been reset (or it has recorded anything)."""
        return self._started or self.policy_steps > 0 or len(self.buffer) > 0

    @classmethod
    def shared(cls, config: GASILConfig, env_key: str, *, vector=None) -> GASILState:
        """The state an env with base ``env_key`` and ``config`` built now shares, created if needed.

        Inside the constructor of a vector env (``vector``, found on the call stack by
        :func:`~gasil_wrappers.wrap_stack`), its sub-envs share one state. Envs made outside one share
        by (config, env_key), ``group`` included, while the state has not started (no env of it has been
        reset); joining one with the default group warns. An env made after its state started gets a
        fresh state, with a warning. A state is never shared across processes.
        """
        if vector is not None and _is_subprocess_vector(vector) and not config.allow_subprocess_owner:
            raise GASILOwnershipError(
                f"{type(vector).__name__} runs every sub-env in a worker process, where an in-process GASIL "
                f"owner would train one discriminator per worker on that worker's episodes alone; {_FIXES}")
        key = (config, env_key, None if vector is None else id(vector))
        state = _shared.get(key)
        if state is not None and vector is not None and state._scope() is not vector:
            state = None  # the id of a vector env that is gone
        if state is not None and state._pid != os.getpid():
            state = None  # inherited by fork: it serves the parent
        if state is not None and state.started:
            warnings.warn(
                f"GASIL: an env of {env_key!r} (group {config.group!r}) was made after the GASIL owner it "
                f"would share started ({state.policy_steps} policy steps, {len(state.buffer)} buffered "
                "episodes); it gets a fresh owner of its own, so it never feeds the running one. For "
                "evaluation use gasil_wrappers.make_eval_env; to add an env to a running owner on "
                "purpose pass it: wrap_stack(env, config, state=find_state(train_env))",
                RuntimeWarning, stacklevel=3)
            state = None
        if state is None:
            state = cls(config)
            state.env_key = env_key
            if vector is not None:
                state._scope = weakref.ref(vector)
            _shared[key] = state
        elif vector is None and config.group == "default" and not state._join_warned:
            state._join_warned = True
            warnings.warn(
                f"GASIL: this env of {env_key!r} shares the GASIL owner (D, good-episode buffer, step "
                "counter) of an env made before it with the same settings, outside any vector env. "
                "Sub-envs of one vector env share an owner by themselves; separately made envs share "
                "one only by name: pass the same group='...' to each to say so (and silence this), or "
                "build evaluation envs with gasil_wrappers.make_eval_env, which has no owner",
                RuntimeWarning, stacklevel=3)
        return state

    def __deepcopy__(self, memo):
        """An independent copy (buffer, D, counters as they are now), serving this process.

        Never the same object: a copied env must not feed the original's owner. ``env.spec`` does not
        copy states (it refers to them through an :class:`OwnerRef`).
        """
        copied = type(self)(self.config)
        copied.load_state_dict(self.state_dict())
        copied.env_key, copied._started = self.env_key, self._started
        copied.cut_episodes = self.cut_episodes
        return copied

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_scope"] = None  # a weak reference; the copy keeps _pid, so another process cannot use it
        return state

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(env={self.env_key!r}, group={self.config.group!r}, "
                f"envs={self.num_envs}, policy_steps={self.policy_steps}, rounds={self.rounds}, "
                f"pid={self._pid})")

    def check_process(self, who: str, *, whole_vector: bool = False) -> None:
        """Raise :class:`GASILOwnershipError` unless this process may use this state (cheap).

        Called by each wrapper that uses the state when it is built and at every reset. ``whole_vector``:
        the caller sees every sub-env of its vector env (the batched vector wrappers), so a
        multiprocessing child is fine for it.
        """
        if self._pid != os.getpid():
            if not self.config.allow_subprocess_owner:
                raise GASILOwnershipError(
                    f"{who}: this GASIL owner was built in process {self._pid} and is used in process "
                    f"{os.getpid()} (a fork or a pickled copy), where it would train a discriminator of its "
                    f"own that the owner never sees; {_FIXES}")
        elif not whole_vector and not self.config.allow_subprocess_owner and \
                multiprocessing.parent_process() is not None:
            raise GASILOwnershipError(
                f"{who}: an in-process GASIL owner in multiprocessing child "
                f"{multiprocessing.current_process().name!r} (pid {os.getpid()}): as a SubprocVecEnv or "
                "AsyncVectorEnv worker it would train its own discriminator on this worker's episodes "
                f"alone; {_FIXES}")

    def on_env_reset(self, who: str) -> None:
        """Called by each wrapper at every reset: checks the process, and closes the state to new envs."""
        if self._pid != os.getpid():
            self.check_process(who)
        self._started = True

    def count_cut_episode(self) -> None:
        """Count an episode that was reset before it ended (``diagnostics()["cut_episodes"]``)."""
        self.cut_episodes += 1

    def attach(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Called by each wrapper that uses this state; fixes (and checks) the input dimensions."""
        obs_dim, act_dim = _flat_dim(observation_space, "observation"), _flat_dim(action_space, "action")
        if self.obs_dim is None:
            self.obs_dim, self.act_dim = obs_dim, act_dim
            self._recent = np.empty((self.config.round_every, obs_dim + act_dim))
        elif (obs_dim, act_dim) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"GASILState: an env with observation dim {obs_dim} and action dim {act_dim} cannot share a "
                f"state built for ({self.obs_dim}, {self.act_dim}); give it another `group`"
            )

    def seed_if_unset(self, seed: int | None) -> None:
        """Take the first reset seed seen as the state's seed, unless the config fixed one."""
        if self._seed is None and seed is not None and self._rng is None:
            self._seed = int(seed)

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    # --- per-step API (called by the wrappers) ----------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether a trained D is in effect (which needs an episode in the buffer)."""
        return self.rounds > 0

    def alpha_at(self, step: int) -> float:
        """α(t): 0 until ``alpha_start``, linear up to ``alpha`` at ``alpha_end``, then constant."""
        c = self.config
        if step >= c.alpha_end:
            return c.alpha
        if step < c.alpha_start:
            return 0.0
        return c.alpha * (step - c.alpha_start) / (c.alpha_end - c.alpha_start)

    def alphas(self, step: int, m: int) -> np.ndarray:
        """α(t) of the ``m`` policy steps from ``step`` on, as an array (one call where α is constant)."""
        c = self.config
        if step >= c.alpha_end or (step + m <= c.alpha_start):
            return np.full(m, self.alpha_at(step))
        return np.array([self.alpha_at(t) for t in range(step, step + m)])

    def add_episode(self, obs, actions, rewards) -> bool:
        """Offer a finished episode to the good-trajectory buffer."""
        return self.buffer.add(obs, actions, rewards)

    def shaped_reward(self, obs, action, env_reward: float) -> tuple[float, float, float]:
        """Record (s, a) as a current-policy sample and return (shaped reward, −log D(s,a), α).

        The reward uses the D in effect now; weights that take effect at this step count from the next.
        """
        od = self.obs_dim
        row = self._recent[self._cursor]
        row[:od] = obs
        row[od:] = action
        if self.rounds:
            d_reward = self.discriminator.forward.reward(row)
            alpha = self.alpha_at(self.policy_steps)
            shaped = self.shape(env_reward, d_reward, alpha, True)
        else:
            d_reward, alpha, shaped = 0.0, 0.0, env_reward
        self._count_sample()
        return shaped, d_reward, alpha

    def shape(self, env_reward, d_reward, alpha, ready):
        """:func:`~gasil_wrappers.reward.shaped_reward` with this config's weight, counted towards the
        GASIL term's share (``diagnostics()["term_share"]``). Scalars or arrays (one entry per sub-env);
        ``ready`` a bool or a bool array."""
        w = self.config.env_reward_weight
        if isinstance(ready, np.ndarray):
            self._add_terms(*term_sizes(env_reward[ready], (alpha * d_reward)[ready], 1.0, w))
        elif ready:  # one env, or the batched wrappers' common step
            self._add_terms(*term_sizes(env_reward, d_reward, alpha, w))
        return shaped_reward(env_reward, d_reward, alpha, ready, w)

    def _add_terms(self, env_part: float, term: float) -> None:
        self._terms[0] += env_part
        self._terms[1] += term

    def record_samples(self, rows: np.ndarray) -> int:
        """Record rows ``concat(s, a)`` as current-policy samples, in order, without computing rewards.

        The same bookkeeping and training cadence as :meth:`shaped_reward` row by row (a round that comes
        due after a row starts, and one whose lag ends takes effect, before the next row is recorded),
        with the rows before the next such event (:meth:`quiet_samples`) written at once. For owners
        that compute −log D elsewhere: the batched vector wrappers and the Ray owner. Returns the number
        of rounds that took effect.
        """
        rounds, i, m = self.rounds, 0, len(rows)
        while i < m:
            quiet = min(self.quiet_samples(), m - i - 1)
            ring, cursor, k = len(self._recent), self._cursor, quiet + 1  # the quiet rows and the next
            if cursor + k <= ring:
                self._recent[cursor: cursor + k] = rows[i: i + k]
            else:
                self._recent[(cursor + np.arange(k)) % ring] = rows[i: i + k]
            if quiet:
                self._cursor = (cursor + quiet) % ring
                self._n_recent = min(self._n_recent + quiet, ring)
                self.policy_steps += quiet
                self._since_round += quiet
            self._count_sample()  # the next row, written at the cursor: a round may start or apply
            i += k
        return self.rounds - rounds

    def quiet_samples(self) -> int:
        """How many of the next samples are sure to neither start a round nor put one into effect (the
        one after them may: the round's cadence, or a background round's lag, ends there)."""
        quiet = max(self.config.round_every - self._since_round - 1, 0)
        if self._pending is not None:
            quiet = min(quiet, max(self._apply_at - self.policy_steps - 1, 0))
        return quiet

    def _count_sample(self) -> None:
        """Advance the ring and the counters past the row just written; train D if a round is due."""
        self._cursor = (self._cursor + 1) % len(self._recent)
        self._n_recent = min(self._n_recent + 1, len(self._recent))
        self.policy_steps += 1
        self._since_round += 1
        if self._pending is not None and self.policy_steps >= self._apply_at:
            self._apply_pending()
        if self._since_round >= self.config.round_every and len(self.buffer):
            self._start_round()

    def discriminator_reward(self, obs, action) -> np.ndarray:
        """−log D(s, a) for rows of observations and actions (no recording; for analysis and plots)."""
        if not self.ready:
            raise RuntimeError("GASILState: the discriminator has not trained yet")
        return self.discriminator.reward(np.concatenate([obs, action], axis=1))

    # --- training ----------------------------------------------------------------------------------
    def _ensure_discriminator(self) -> Discriminator:
        if self.discriminator is None:
            c = self.config
            self.discriminator = Discriminator(
                self.obs_dim + self.act_dim, c.d_hidden, lr=c.d_lr, entropy_coef=c.d_entropy_coef,
                input_clip=c.d_input_clip, reward_form=c.d_reward_form, rng=self.rng,
            )
        return self.discriminator

    def good_samples(self) -> np.ndarray:
        """All (s, a) rows of the good-trajectory buffer, concatenated (cached until the buffer changes)."""
        if self._good_version != self.buffer.version:
            self._good_x = np.concatenate(
                [np.concatenate([e.obs, e.actions], axis=1) for e in self.buffer.episodes]
            )
            self._good_version = self.buffer.version
        return self._good_x

    def _draw_round(self) -> np.ndarray:
        """The next round's minibatches (recent policy rows vs good-buffer rows); restarts the cadence."""
        if not len(self.buffer) or not self._n_recent:
            raise RuntimeError("GASILState: training needs an episode in the buffer and policy samples")
        c = self.config
        d = self._ensure_discriminator()
        self._since_round = 0
        env_part, term = self._terms
        if env_part + term > 0:
            self._term_share = term / (env_part + term)
        self._terms = [0.0, 0.0]
        return d.draw(self._recent[: self._n_recent], self.good_samples(),
                      updates=c.d_updates, batch_size=c.d_batch_size, rng=self.rng)

    def _start_round(self) -> None:
        """Start a round on the cadence: in a background thread, applied ``apply_lag`` steps from now."""
        lag = self.config.apply_lag
        if lag == 0:
            self.train_round()
            return
        batches = self._draw_round()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gasil-discriminator")
        self._pending = pool.submit(self.discriminator.fit, batches)
        pool.shutdown(wait=False)  # the thread ends with the round
        self._apply_at = self.policy_steps + lag
        self._pending_pid = os.getpid()

    def _apply_pending(self) -> None:
        """Wait for the background round (re-raising its error) and put its weights into effect."""
        if self._pending_pid != os.getpid():  # a fork copies D mid-update, without the thread updating it
            raise RuntimeError("GASILState: this process was forked while a discriminator round trained "
                               "in the parent; its D is unusable here (give the child its own state, or "
                               "share one with backend='ray')")
        pending, self._pending = self._pending, None
        self._apply(pending.result())

    def _apply(self, stats: dict[str, float]) -> None:
        self.discriminator.refresh_snapshot()
        self._last_stats = stats
        self.rounds += 1

    def train_round(self) -> dict[str, float]:
        """One round now, in this thread, applied at once (a round still training is applied first)."""
        if self._pending is not None:
            self._apply_pending()
        batches = self._draw_round()
        self._apply(self.discriminator.fit(batches))
        return self._last_stats

    # --- reading -----------------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, float]:
        """D loss and per-class accuracy of the last round, buffer statistics, counters and α.

        ``term_share`` is Σ α·(−log D) ÷ (Σ |w·r| + Σ α·(−log D)) over the shaped rewards between the
        last two rounds (one learner batch): how much of the reward GASIL contributes (NaN until then).
        ``buffer_mean_age`` is the mean, over the buffer's episodes, of the episodes offered to the buffer
        since each entered (:meth:`GoodTrajectoryBuffer.ages`): near 0, the buffer is the policy's latest
        behaviour.
        """
        returns, ages = self.buffer.returns(), self.buffer.ages()
        return {
            **self._last_stats,
            "rounds": self.rounds,
            "policy_steps": self.policy_steps,
            "alpha": self.alpha_at(self.policy_steps) if self.ready else 0.0,
            "term_share": self._term_share,
            "buffer_episodes": len(self.buffer),
            "buffer_steps": self.buffer.num_steps,
            "buffer_mean_return": float(returns.mean()) if len(returns) else math.nan,
            "buffer_min_return": float(returns.min()) if len(returns) else math.nan,
            "buffer_max_return": float(returns.max()) if len(returns) else math.nan,
            "buffer_mean_age": float(ages.mean()) if len(ages) else math.nan,
            "rejected_episodes": self.buffer.rejected,
            "cut_episodes": self.cut_episodes,
            "envs": self.num_envs,
        }

    # --- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bitwise identically: a dict of tensors and Python values.

        A round training in the background is waited for; D's trained weights are saved with the
        forward still in effect and the step at which the new weights take effect.
        """
        pending = None
        if self._pending is not None:
            flat = np.empty(self.discriminator.forward.size(self.discriminator.in_dim, self.config.d_hidden))
            self.discriminator.forward.dump(flat)
            pending = {"stats": self._pending.result(), "apply_at": self._apply_at,
                       "forward": torch.from_numpy(flat)}
        return {
            "format": _STATE_FORMAT,
            "config": dataclasses.asdict(self.config),
            "dims": (self.obs_dim, self.act_dim),
            "buffer": self._buffer_state(),
            "recent": None if self._recent is None else torch.from_numpy(self._recent.copy()),
            "cursor": self._cursor,
            "n_recent": self._n_recent,
            "since_round": self._since_round,
            "policy_steps": self.policy_steps,
            "rounds": self.rounds,
            "seed": self._seed,
            "rng": None if self._rng is None else self._rng.bit_generator.state,
            "discriminator": None if self.discriminator is None else self.discriminator.state_dict(),
            "last_stats": dict(self._last_stats),
            "pending": pending,
            "terms": list(self._terms),
            "term_share": self._term_share,
            "cut_episodes": self.cut_episodes,
        }

    def _buffer_state(self) -> dict:
        state = self.buffer.state_dict()
        state["episodes"] = [tuple(torch.from_numpy(a) for a in ep) for ep in state["episodes"]]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; a mismatched or malformed state raises ``ValueError``."""
        if self._pending is not None:
            wait([self._pending])  # a round of the state being replaced must not write into the new D
        try:
            if state.get("format") != _STATE_FORMAT:
                raise ValueError(f"unknown format {state.get('format')!r}")
            mine = dataclasses.asdict(self.config)
            theirs = dict(state["config"])
            mine["d_every"] = self.config.round_every  # states saved before d_every could be None
            theirs["d_every"] = theirs.get("d_every") or DEFAULT_D_EVERY
            for name in ("d_hidden", "buffer_steps", "gamma", "d_every"):
                if tuple(np.ravel(mine[name])) != tuple(np.ravel(theirs[name])):
                    raise ValueError(f"config field {name}: saved {theirs[name]!r}, here {mine[name]!r}")
            dims = tuple(state["dims"])
            if self.obs_dim is not None and dims != (self.obs_dim, self.act_dim):
                raise ValueError(f"saved for (obs, action) dims {dims}, this env has "
                                 f"{(self.obs_dim, self.act_dim)}")
            self.obs_dim, self.act_dim = dims
            buffer_state = dict(state["buffer"])
            buffer_state["episodes"] = [tuple(t.numpy() for t in ep) for ep in buffer_state["episodes"]]
            self.buffer.load_state_dict(buffer_state)
            self._recent = None if state["recent"] is None else state["recent"].numpy().copy()
            self._cursor, self._n_recent = int(state["cursor"]), int(state["n_recent"])
            self._since_round = int(state["since_round"])
            self.policy_steps, self.rounds = int(state["policy_steps"]), int(state["rounds"])
            self.discriminator = None
            if state["discriminator"] is not None:  # built before the RNG is restored: init draws from it
                self._ensure_discriminator().load_state_dict(state["discriminator"])
            self._seed = state["seed"]
            self._rng = None
            if state["rng"] is not None:
                self._rng = np.random.default_rng()
                self._rng.bit_generator.state = state["rng"]
            self._last_stats = dict(state["last_stats"])
            self._terms = [float(x) for x in state.get("terms", (0.0, 0.0))]  # absent before term shares
            self._term_share = float(state.get("term_share", math.nan))
            self.cut_episodes = int(state.get("cut_episodes", 0))  # absent before cut episodes were counted
            self._pending = None
            pending = state.get("pending")  # absent in states saved before rounds trained in the background
            if pending is not None:
                self.discriminator.forward.load(pending["forward"].numpy())
                self._pending = Future()
                self._pending.set_result(dict(pending["stats"]))
                self._pending_pid = os.getpid()
                self._apply_at = int(pending["apply_at"])
        except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as e:
            raise ValueError(f"GASILState.load_state_dict: incompatible or corrupt state ({e})") from e


class OwnerRef:
    """What ``env.spec`` records for a wrapper's GASILState: rebuilding the env resolves it.

    Resolved (by the rebuilt wrapper) to the state itself while that has not started, else to a fresh
    one found the way :meth:`GASILState.shared` finds it, with a warning: ``env.spec.make()`` never
    feeds a running owner. Copying the spec keeps the reference (no copy of D or the buffer); pickling
    keeps only the config.
    """

    def __init__(self, state: GASILState):
        self.config, self.env_key = state.config, state.env_key
        self._ref = weakref.ref(state)

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return _dead_ref, (self.config, self.env_key)

    def __repr__(self) -> str:
        return f"OwnerRef(env={self.env_key!r}, group={self.config.group!r})"

    def __eq__(self, other) -> bool:  # gym.make compares the wrapper specs of a rebuilt env
        return isinstance(other, OwnerRef) and (self.config, self.env_key) == (other.config, other.env_key)

    def __hash__(self) -> int:
        return hash((self.config, self.env_key))

    def resolve(self, env: gym.Env) -> GASILState:
        """The state for a wrapper rebuilt on ``env`` (the one an inner wrapper of the same env got)."""
        inner = find_state(env)
        if isinstance(inner, GASILState) and inner.config == self.config:
            return inner  # the second owner wrapper of one rebuilt stack
        state = self._ref()
        if state is not None and not state.started and state._pid == os.getpid():
            return state
        if state is not None and state._pid == os.getpid():
            warnings.warn(
                f"GASIL: an env rebuilt from the spec of an env whose GASIL owner started "
                f"({state.policy_steps} policy steps) gets a fresh owner of its own, so it never feeds the "
                "running one (for evaluation use gasil_wrappers.make_eval_env)", RuntimeWarning, stacklevel=4)
        if self.env_key is None:
            fresh = GASILState(self.config)
            return fresh
        vector = _vector_env_being_built()
        key = (self.config, self.env_key, None if vector is None else id(vector))
        if (shared := _shared.get(key)) is not None and shared is state:
            del _shared[key]  # the started one: GASILState.shared would warn again
        return GASILState.shared(self.config, self.env_key, vector=vector)


def _dead_ref(config: GASILConfig, env_key: str | None) -> OwnerRef:
    ref = OwnerRef.__new__(OwnerRef)
    ref.config, ref.env_key, ref._ref = config, env_key, lambda: None
    return ref


def find_state(env: gym.Env):
    """The GASIL owner (a GASILState, or a Ray-backed RayGASILOwner) in ``env``'s wrapper chain,
    or None."""
    while env is not None:
        state = vars(env).get("state")  # not getattr: gymnasium 0.29 forwards unknown attributes
        if getattr(state, "is_gasil_owner", False):
            return state
        env = getattr(env, "env", None)
    return None
