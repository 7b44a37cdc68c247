"""GASILState: the one owner of GASIL's out-of-band state.

It owns the good-trajectory buffer, the recent policy samples, the discriminator (with its optimizer
and input normalizer), the step counters, the α schedule and the random generator, and it trains D on
its own cadence between env steps. The two GASIL wrappers hold a reference to it; a trainer never
calls it, but may read ``diagnostics()`` and checkpoint it with ``state_dict()``/``load_state_dict()``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait

import gymnasium as gym
import numpy as np
import torch

from gasil_wrappers.config import DEFAULT_D_EVERY, GASILConfig
from gasil_wrappers.discriminator import Discriminator
from gasil_wrappers.reward import shaped_reward
from gasil_wrappers.topk import GoodTrajectoryBuffer

__all__ = ["GASILState", "find_state"]

_STATE_FORMAT = 1
_shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


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

    Note:
        ``copy.deepcopy`` returns the same object: the state is a shared service, and a silent copy
        would fork D and the buffer (wrappers are deep-copied by ``env.spec``).

    Example:
        >>> state = GASILState(GASILConfig(gasil=True, alpha=0.5, alpha_start=100, alpha_end=300))
        >>> [state.alpha_at(t) for t in (0, 100, 200, 300, 1000)]
        [0.0, 0.0, 0.25, 0.5, 0.5]
    """

    is_gasil_owner = True  # what find_state looks for (ProcessGASILState has it too)

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

    # --- sharing ---------------------------------------------------------------------------------
    @classmethod
    def shared(cls, config: GASILConfig, env_key: str) -> GASILState:
        """The live state for (config, env_key) in this process, created on first use.

        Sub-envs made by separate ``gym.make`` calls with the same base env and the same config
        (``group`` included) get one state, as long as any of them is alive.
        """
        key = (config, env_key)
        state = _shared.get(key)
        if state is None:
            state = cls(config)
            _shared[key] = state
        return state

    def __deepcopy__(self, memo):
        return self

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
        GASIL term's share (``diagnostics()["term_share"]``). Scalars or arrays (one entry per sub-env)."""
        w = self.config.env_reward_weight
        terms = self._terms
        if isinstance(ready, np.ndarray):
            terms[0] += float(np.abs(w * env_reward[ready]).sum())
            terms[1] += float((alpha * d_reward)[ready].sum())
        elif ready:
            terms[0] += abs(w * env_reward)
            terms[1] += alpha * d_reward
        return shaped_reward(env_reward, d_reward, alpha, ready, w)

    def record_samples(self, rows: np.ndarray) -> int:
        """Record rows ``concat(s, a)`` as current-policy samples, in order, without computing rewards.

        The same bookkeeping and training cadence as :meth:`shaped_reward`, row by row (a round that
        comes due after a row starts, and one whose lag ends takes effect, before the next row is
        recorded). For owners that compute −log D elsewhere: the process-backed server and the batched
        vector wrapper. Returns the number of rounds that took effect.
        """
        rounds = self.rounds
        for row in rows:
            self._recent[self._cursor] = row
            self._count_sample()
        return self.rounds - rounds

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
                input_clip=c.d_input_clip, rng=self.rng,
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
                               "use backend='process')")
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
        """
        returns = self.buffer.returns()
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
            "rejected_episodes": self.buffer.rejected,
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


def find_state(env: gym.Env):
    """The GASIL owner (a GASILState, or a process-backed ProcessGASILState) in ``env``'s wrapper chain,
    or None."""
    while env is not None:
        state = vars(env).get("state")  # not getattr: gymnasium 0.29 forwards unknown attributes
        if getattr(state, "is_gasil_owner", False):
            return state
        env = getattr(env, "env", None)
    return None
