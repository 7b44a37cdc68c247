"""GASILConfig: every setting of the wrapper stack in one frozen dataclass.

The same dataclass is exposed by ``algos/*.py`` as nested tyro flags (``--stack.delay 20``), accepted
as keyword arguments by the registered env ids (``gym.make("gasil_wrappers:GASIL-DelayedHopper-v5",
alpha=0.2)``), and turned into a wrapper stack by :func:`gasil_wrappers.wrap_stack`.
Defaults follow the paper's Table 1 where it gives a value and the review thread's secondhand
settings (buffer 1000 steps, 20 D updates, α 0.1) where Table 1 gives a search range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_D_EVERY", "D_REWARD_FORMS", "GASILConfig", "INFO_KEY"]

#: The one ``info`` key under which every wrapper of the stack puts its per-step diagnostics.
INFO_KEY = "gasil"
#: D's cadence when no learner batch is given (``d_every=None`` outside the algos/ scripts).
DEFAULT_D_EVERY = 2048
#: The forms of D's reward term (``GASILConfig.d_reward_form``): −log D, or −logit D = log(1 − D) − log D.
D_REWARD_FORMS = ("neg_log_d", "logit")


@dataclass(frozen=True)
class GASILConfig:
    """Settings of the GASIL wrapper stack: delay, noise, good-trajectory buffer and discriminator."""

    # --- task modifiers -------------------------------------------------------------------------
    delay: int = 1
    """pay the summed env reward every `delay` steps and at episode end (1: no delay; paper: 20)"""
    obs_noise_std: float = 0.0
    """std of the Gaussian noise added to every observation (paper's stochastic Walker2d: 0.05, 0.1, 0.5)"""

    # --- GASIL on/off ---------------------------------------------------------------------------
    gasil: bool = False
    """shape the reward with the discriminator: r' = w*r - alpha*log D(s,a) (see `d_reward_form`)"""
    top_k: bool = False
    """record the good-trajectory buffer even without GASIL (PPO+BC reads it); implied by `gasil`"""

    # --- shaped reward --------------------------------------------------------------------------
    alpha: float = 0.1
    """scale of the discriminator reward (Table 1 range: 0.02, 0.1, 0.2, 1)"""
    alpha_start: int = 0
    """alpha is 0 until this many policy steps (summed over sub-envs); paper's Humanoid: 2M"""
    alpha_end: int = 0
    """alpha ramps linearly from 0 at `alpha_start` to `alpha` at this step; paper's Humanoid: 3M"""
    env_reward_weight: float = 1.0
    """w, the weight of the env reward in the shaped reward; 0 gives pure GASIL (Algorithm 1)"""
    env_reward_scale: Literal["raw", "normalized"] = "raw"
    """what alpha is weighed against. raw: the env reward as the env pays it (r' = w*r + alpha*(-log D)).
    normalized: the env reward divided by a running std of its discounted return (the statistic of
    gymnasium's NormalizeReward, kept per env) before alpha*(-log D) is added, so alpha means the same
    on every task, as under OpenAI baselines' VecNormalize. The buffer's ranking, the true return in
    info and the learner are unaffected"""
    env_reward_scale_gamma: float = 0.99
    """discount of the return whose running std scales the env reward (env_reward_scale=normalized)"""
    d_reward_form: Literal["neg_log_d", "logit"] = "neg_log_d"
    """the discriminator's term. neg_log_d: -log D(s,a) (the paper's), >= 0 everywhere, so on a task whose
    episodes end early it also pays for staying alive (log 2 per step where D is at chance). logit:
    log(1 - D) - log D = -logit D (AIRL's form), 0 where D is at chance, positive where (s,a) looks like
    the buffer and negative where it looks like the current policy: no bonus for merely surviving, but
    under a D that wins, a cost for every step, which on such a task rewards ending the episode"""

    # --- good-trajectory buffer -----------------------------------------------------------------
    buffer_steps: int = 1000
    """capacity of the good-trajectory buffer in steps (Table 1: 1000 or 10000)"""
    gamma: float = 0.99
    """discount of the return R = sum_t gamma^t r_t that ranks episodes in the buffer"""

    # --- discriminator --------------------------------------------------------------------------
    d_hidden: tuple[int, ...] = (64, 64)
    """hidden layer sizes of the discriminator MLP (tanh)"""
    d_lr: float = 1e-4
    """discriminator Adam learning rate (Table 1 range: 3e-4, 1e-4, 2e-5, 1e-5)"""
    d_updates: int = 20
    """discriminator minibatch updates per training round (Table 1 range: 1, 5, 10, 20)"""
    d_batch_size: int = 128
    """discriminator minibatch size, per class (Table 1: 128)"""
    d_every: int | None = None
    """policy steps, summed over all sub-envs, between discriminator training rounds: once per learner
    batch (Table 1 counts D updates per batch). None: the learner's batch where a script gives it
    (algos/ use num_envs * num_steps), else 2048 (PPO's horizon)"""
    d_entropy_coef: float = 1e-3
    """Bernoulli-entropy bonus on D's output (OpenAI GAIL, which the paper's code is based on)"""
    d_input_clip: float = 5.0
    """D's inputs are normalized by running mean/std, then clipped to +-this"""
    d_apply_lag: int = 256
    """a D round trains in a background thread and its weights take effect this many policy steps after
    it starts (capped at d_every // 2); the same step every run, so results do not depend on timing.
    0: train inline, the step that starts the round waits for it"""

    # --- sharing and seeding --------------------------------------------------------------------
    group: str = "default"
    """sub-envs of one vector env share one GASILState (one D, one buffer); envs made separately share
    one by naming the same group (same base env and settings), until its first reset"""
    seed: int | None = None
    """seed of the discriminator's init and sampling; None: taken from the first reset(seed=...)"""
    backend: Literal["inprocess", "ray"] = "inprocess"
    """where the out-of-band state lives: this process (shared by the sub-envs of one vector env), or the
    running Ray actor of `group` (RayGASILOwner.start(config) first), shared by env workers anywhere"""
    allow_subprocess_owner: bool = False
    """let an in-process GASILState live in a multiprocessing child (or a process other than the one that
    built it): for a child that runs a whole independent training run. Off, such an owner raises, since a
    SubprocVecEnv/AsyncVectorEnv worker would silently train its own D on its own episodes"""

    def __post_init__(self) -> None:
        errors = []
        if self.delay < 1:
            errors.append(f"delay must be >= 1, got {self.delay}")
        if not self.obs_noise_std >= 0:
            errors.append(f"obs_noise_std must be >= 0, got {self.obs_noise_std}")
        if not self.alpha >= 0:
            errors.append(f"alpha must be >= 0, got {self.alpha}")
        if not 0 <= self.alpha_start <= self.alpha_end:
            errors.append(f"need 0 <= alpha_start <= alpha_end, got {self.alpha_start} and {self.alpha_end}")
        if self.buffer_steps < 1:
            errors.append(f"buffer_steps must be >= 1, got {self.buffer_steps}")
        if not 0 < self.gamma <= 1:
            errors.append(f"gamma must be in (0, 1], got {self.gamma}")
        if not self.d_hidden or any(h < 1 for h in self.d_hidden):
            errors.append(f"d_hidden must be positive sizes, got {self.d_hidden}")
        if self.env_reward_scale not in ("raw", "normalized"):
            errors.append(f"env_reward_scale must be 'raw' or 'normalized', got {self.env_reward_scale!r}")
        if self.d_reward_form not in D_REWARD_FORMS:
            errors.append(f"d_reward_form must be one of {D_REWARD_FORMS}, got {self.d_reward_form!r}")
        if not 0 < self.env_reward_scale_gamma <= 1:
            errors.append(f"env_reward_scale_gamma must be in (0, 1], got {self.env_reward_scale_gamma}")
        if self.d_every is not None and not self.d_every > 0:
            errors.append(f"d_every must be > 0 or None, got {self.d_every}")
        for name in ("d_lr", "d_updates", "d_batch_size", "d_input_clip"):
            if not getattr(self, name) > 0:
                errors.append(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.d_apply_lag >= 0:
            errors.append(f"d_apply_lag must be >= 0, got {self.d_apply_lag}")
        if not self.d_entropy_coef >= 0:
            errors.append(f"d_entropy_coef must be >= 0, got {self.d_entropy_coef}")
        if self.backend not in ("inprocess", "ray"):
            errors.append(f"backend must be 'inprocess' or 'ray', got {self.backend!r}")
        if errors:
            raise ValueError("GASILConfig: " + "; ".join(errors))
        # tyro and gym.make(**kwargs) may hand over a list; keep the dataclass hashable.
        object.__setattr__(self, "d_hidden", tuple(int(h) for h in self.d_hidden))

    @property
    def round_every(self) -> int:
        """Policy steps between D rounds: ``d_every``, or 2048 when it is None (no learner batch given)."""
        return DEFAULT_D_EVERY if self.d_every is None else self.d_every

    @property
    def apply_lag(self) -> int:
        """Policy steps from the start of a D round to the step its weights take effect."""
        return min(self.d_apply_lag, self.round_every // 2)

    def for_batch(self, batch_size: int) -> GASILConfig:
        """This config with D's cadence tied to a learner's batch, unless ``d_every`` was set."""
        return self if self.d_every is not None else self.replace(d_every=int(batch_size))

    @property
    def records_buffer(self) -> bool:
        """Whether the stack keeps a good-trajectory buffer (GASIL or PPO+BC)."""
        return self.gasil or self.top_k

    def replace(self, **changes) -> GASILConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
