"""Env ids, so a script that only takes an id string gets the paper's settings.

``gym.make("gasil_wrappers:<id>")`` imports this package, which registers:

- ``Delayed<Task>-v4/v5``: reward delayed by 20 steps (paper, Section 5.4), PPO's task.
- ``GASIL-Delayed<Task>-v4/v5``: the same with GASIL's shaped reward (Figure 6).
- ``GASIL-<Task>-v4/v5``: GASIL on the plain task (Figure 4).
- ``NoisyWalker2d-v4/v5`` and ``GASIL-NoisyWalker2d-v4/v5``: observation noise σ=0.1 (Figure 5).
- ``PointMass-v0`` and ``GASIL-PointMass-v0``: the 2D point-mass task (Section 5.2).
- ``PointMassExplore-v0``: the same layout with faster, cheaper moves (max speed 0.2, action cost
  0.02), where random episodes often collect several objects, as the paper's first top-K
  trajectories do (see docs/point_mass.md).

for every MuJoCo task this Gymnasium version has (v5 needs gymnasium >= 1.0). Every GASILConfig
field can be overridden: ``gym.make("gasil_wrappers:GASIL-DelayedHopper-v5", alpha=0.2)``; other
keywords go to the base env (``render_mode``, ``ctrl_cost_weight``, ...).

The time limit is inside the stack: an id is registered with its base env's ``max_episode_steps``,
its entry point (:func:`make_stack_env`) builds the base env without a TimeLimit, and the stack is the
id's registered additional wrapper (:func:`apply_stack`), which ``gym.make`` applies *after* its
``TimeLimit``. So ``gym.make(id, max_episode_steps=N)`` (gymnasium 0.29 and 1.x) truncates the base env
inside DelayedReward, the recorder and the reward wrapper: the delayed reward is paid, the true return
is in ``info["gasil"]``, and the episode enters the buffer.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
from gymnasium.envs.registration import WrapperSpec

from gasil_wrappers.config import GASILConfig
from gasil_wrappers.stack import wrap_stack

__all__ = ["apply_stack", "make_stack_env", "register_envs", "MUJOCO_TASKS"]

MUJOCO_TASKS = ("Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid", "Swimmer")
PAPER_DELAY = 20
PAPER_NOISE_STD = 0.1
_SETTINGS = frozenset(f.name for f in dataclasses.fields(GASILConfig))
_STACK = WrapperSpec("GASILStack", "gasil_wrappers.registration:apply_stack", {})


def make_stack_env(base_id: str, **kwargs) -> gym.Env:
    """Entry point of every registered id: the base env ``base_id``, without its TimeLimit.

    ``gym.make`` then adds the env checker, order enforcing and the TimeLimit (the registered
    ``max_episode_steps``, the base env's, or the one passed to ``gym.make``), and last the stack
    (:func:`apply_stack`). Keywords that are GASILConfig fields are the stack's; the rest go to the base
    env.
    """
    base = dataclasses.replace(gym.spec(base_id), max_episode_steps=None, order_enforce=False,
                               disable_env_checker=True, additional_wrappers=())
    return gym.make(base, **{k: v for k, v in kwargs.items() if k not in _SETTINGS})


def apply_stack(env: gym.Env) -> gym.Env:
    """The registered ids' additional wrapper: :func:`wrap_stack` with the GASILConfig fields among the id's
    keyword arguments (registered and passed to ``gym.make``, which records them in the env's spec)."""
    kwargs = env.unwrapped.spec.kwargs
    return wrap_stack(env, GASILConfig(**{k: v for k, v in kwargs.items() if k in _SETTINGS}))


def _register(env_id: str, base_id: str, **settings) -> None:
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=make_stack_env, kwargs={"base_id": base_id, **settings},
                     max_episode_steps=gym.spec(base_id).max_episode_steps, additional_wrappers=(_STACK,))


def register_envs() -> None:
    """Register all ids (idempotent)."""
    if "PointMass-v0" not in gym.registry:
        gym.register("PointMass-v0", entry_point="gasil_wrappers.envs.point_mass:PointMassEnv")
    _register("GASIL-PointMass-v0", "PointMass-v0", gasil=True)
    if "PointMassExplore-v0" not in gym.registry:
        gym.register("PointMassExplore-v0", entry_point="gasil_wrappers.envs.point_mass:PointMassEnv",
                     kwargs={"max_speed": 0.2, "action_cost": 0.02})
    for task in MUJOCO_TASKS:
        for version in ("v4", "v5"):
            base = f"{task}-{version}"
            if base not in gym.registry:
                continue
            _register(f"Delayed{task}-{version}", base, delay=PAPER_DELAY)
            _register(f"GASIL-Delayed{task}-{version}", base, delay=PAPER_DELAY, gasil=True)
            _register(f"GASIL-{task}-{version}", base, gasil=True)
            if task == "Walker2d":
                _register(f"Noisy{task}-{version}", base, obs_noise_std=PAPER_NOISE_STD)
                _register(f"GASIL-Noisy{task}-{version}", base, obs_noise_std=PAPER_NOISE_STD, gasil=True)
