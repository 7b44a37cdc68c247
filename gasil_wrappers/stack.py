"""Build the whole GASIL wrapper stack from one GASILConfig.

Data flows one way: base env → ObservationNoise → DelayedReward → TopKEpisodeRecorder →
DiscriminatorRewardWrapper → agent. The recorder sees what the agent sees before shaping (noisy
observations, delayed rewards), so the buffer ranks episodes by the reward the agent is given.
"""

from __future__ import annotations

import importlib

import gymnasium as gym

from gasil_wrappers.config import GASILConfig
from gasil_wrappers.delayed_reward import DelayedReward
from gasil_wrappers.discriminator_reward import DiscriminatorRewardWrapper
from gasil_wrappers.observation_noise import ObservationNoise
from gasil_wrappers.state import GASILState, _vector_env_being_built, find_state
from gasil_wrappers.topk import TopKEpisodeRecorder

__all__ = ["wrap_stack", "make_env", "make_eval_env", "has_stack", "is_stack_id"]


def has_stack(env: gym.Env) -> bool:
    """Whether ``env`` already contains a DelayedReward (every stack has one)."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, DelayedReward):
            return True
        env = env.env
    return False


def wrap_stack(env: gym.Env, config: GASILConfig, *, state: GASILState | None = None) -> gym.Env:
    """Wrap ``env`` in the stack that ``config`` describes.

    DelayedReward is always applied (with ``delay=1`` it only reports the true episodic return under
    ``info["gasil"]``). The recorder is added when ``config.gasil or config.top_k``, the reward wrapper
    when ``config.gasil``. Both use ``state`` (pass one to share it on purpose, also with a running
    owner) or, by default, the owner this env shares (:meth:`GASILState.shared`): the sub-envs one
    vector env builds in its constructor (``SyncVectorEnv``, ``gym.make_vec``, SB3's ``DummyVecEnv``;
    each its own ``gym.make`` call, as in CleanRL) share one owner. Envs made separately share one only
    until its first reset, with a warning unless they name the same ``group``; an env made later (an
    evaluation env, ``env.spec.make()``, a re-run notebook cell) gets a fresh owner and a warning, so it
    never feeds a running one. Under a subprocess vector env (``AsyncVectorEnv``, ``SubprocVecEnv``) an
    in-process owner raises :class:`~gasil_wrappers.state.GASILOwnershipError`, naming the fixes.
    With ``config.backend == "ray"`` the owner is the running Ray actor of ``config.group``
    (:meth:`gasil_wrappers.ray_owner.RayGASILOwner.connect`; start it on the driver with
    ``RayGASILOwner.start(config)``): then env workers in any process of the cluster (``AsyncVectorEnv``,
    ``SubprocVecEnv``, RLlib env runners) share it.

    Example:
        >>> import gymnasium as gym
        >>> from gasil_wrappers import GASILConfig, find_state
        >>> env = wrap_stack(gym.make("Pendulum-v1"), GASILConfig(gasil=True, delay=20, group="doc"))
        >>> find_state(env).config.delay
        20
    """
    if config.obs_noise_std > 0:
        env = ObservationNoise(env, config.obs_noise_std)
    env = DelayedReward(env, config.delay)
    if config.records_buffer:
        if state is None:
            env_key = _env_key(env)
            if config.backend == "ray":
                from gasil_wrappers.ray_owner import connect_for

                state = connect_for(config)
            else:
                state = GASILState.shared(config, env_key, vector=_vector_env_being_built())
        env = TopKEpisodeRecorder(env, state)
        if config.gasil:
            env = DiscriminatorRewardWrapper(env, state)
    return env


def _env_key(env: gym.Env) -> str:
    """The base env's id (for our registered ids too, whose spec names the id), else its class name."""
    spec = env.spec
    if spec is None:
        return type(env.unwrapped).__name__
    if getattr(spec.entry_point, "__module__", None) == "gasil_wrappers.registration":
        return spec.kwargs.get("base_id", spec.id)
    return spec.id


def is_stack_id(env_id: str) -> bool:
    """Whether ``env_id`` is one of our registered ids, whose envs already contain a stack."""
    module, _, plain_id = env_id.rpartition(":")
    if module:
        importlib.import_module(module)  # what gym.make does with "module:id"
    entry_point = gym.spec(plain_id).entry_point
    return getattr(entry_point, "__module__", "") == "gasil_wrappers.registration" or \
        str(entry_point).startswith("gasil_wrappers.registration")


def make_env(env_id: str, config: GASILConfig | None = None, *, batch_size: int | None = None,
             **make_kwargs) -> gym.Env:
    """``gym.make(env_id, **make_kwargs)`` wrapped in the stack of ``config``.

    ``env_id`` may be a plain Gymnasium id (``"Hopper-v5"``) or one of ours
    (``"gasil_wrappers:GASIL-DelayedHopper-v5"``), which already contains its stack; then ``config``
    must not ask for delay, noise or a buffer again (pass those settings as ``make_kwargs``).
    ``batch_size``: the learner's batch (steps summed over sub-envs per update); D then trains once per
    batch unless ``d_every`` is set (in ``config``, or for our ids in ``make_kwargs`` or the id itself).
    """
    config = config if config is not None else GASILConfig()
    if batch_size is not None:
        if is_stack_id(env_id):
            registered = gym.spec(env_id.rpartition(":")[2]).kwargs
            if make_kwargs.get("d_every", registered.get("d_every")) is None:
                make_kwargs = {**make_kwargs, "d_every": int(batch_size)}
        else:
            config = config.for_batch(batch_size)
    env = gym.make(env_id, **make_kwargs)
    if has_stack(env):
        if config.delay != 1 or config.obs_noise_std > 0 or config.records_buffer:
            raise ValueError(
                f"make_env: {env_id!r} already contains the GASIL stack; set its settings with "
                f"gym.make keyword arguments instead of a second stack ({config})"
            )
        return env
    return wrap_stack(env, config)


EVAL_SETTINGS = {"gasil": False, "top_k": False}
"""What turns a task's settings into the task without GASIL (no D, no buffer, no shaped reward): the
settings :func:`make_eval_env` adds; RLlib's evaluation env_config too (:mod:`gasil_wrappers.rllib`)."""


def make_eval_env(env_or_id: str | gym.Env, config: GASILConfig | None = None, **make_kwargs) -> gym.Env:
    """The same task as a training env, without GASIL: for evaluation that leaves training untouched.

    ``env_or_id``: one of our ids (``"gasil_wrappers:GASIL-DelayedHopper-v5"``), a plain id with the
    training ``config``, or a training env (one that :func:`wrap_stack` or our ids built). The result
    has the task's observation noise and reward delay (so it sums to the true return, which is also
    ``info["gasil"]["episode_return"]`` at episode end) and no owner: no discriminator, no buffer, no
    shaped reward; nothing it does reaches a training run. ``make_kwargs`` go to ``gym.make``
    (``max_episode_steps``, ``render_mode``, ...).

    Example (SB3's EvalCallback):
        ``EvalCallback(make_vec_env(lambda: make_eval_env("gasil_wrappers:GASIL-DelayedHopper-v5")))``

    Example:
        >>> from gasil_wrappers import find_state
        >>> env = make_eval_env("gasil_wrappers:GASIL-DelayedHopper-v5")
        >>> find_state(env) is None, env.get_wrapper_attr("delay")
        (True, 20)
    """
    if isinstance(env_or_id, str):
        if is_stack_id(env_or_id):
            if config is not None:
                raise ValueError(f"make_eval_env: {env_or_id!r} brings its own settings; pass changes as "
                                 "gym.make keyword arguments, not a config")
            return gym.make(env_or_id, **{**make_kwargs, **EVAL_SETTINGS})
        return make_env(env_or_id, (config or GASILConfig()).replace(**EVAL_SETTINGS), **make_kwargs)
    env = env_or_id
    spec = env.unwrapped.spec
    if spec is None:
        raise ValueError("make_eval_env: this env has no spec (it was not made by gym.make); pass its id")
    kwargs = dict(spec.kwargs)
    if env.spec is not None and env.spec.max_episode_steps is not None:
        kwargs.setdefault("max_episode_steps", env.spec.max_episode_steps)
    kwargs.update(make_kwargs)
    if spec.id in gym.registry and is_stack_id(spec.id):
        return gym.make(spec.id, **{**kwargs, **EVAL_SETTINGS})
    delay, noise, inner = 1, 0.0, env
    while isinstance(inner, gym.Wrapper):
        delay = inner.delay if isinstance(inner, DelayedReward) else delay
        noise = inner.std if isinstance(inner, ObservationNoise) else noise
        inner = inner.env
    owner = find_state(env)
    if owner is not None:
        task = owner.config.replace(**EVAL_SETTINGS)
    else:
        task = GASILConfig(delay=delay, obs_noise_std=noise)
    return make_env(spec.id, task, **kwargs)
