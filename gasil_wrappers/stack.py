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
from gasil_wrappers.state import GASILState
from gasil_wrappers.topk import TopKEpisodeRecorder

__all__ = ["wrap_stack", "make_env", "has_stack", "is_stack_id"]


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
    when ``config.gasil``. Both use ``state`` or, by default, the live state shared by every env with
    the same base env id and config in this process (see :meth:`GASILState.shared`); with
    ``config.backend == "process"`` the owner is a server process shared with subprocess workers
    (see :meth:`gasil_wrappers.ProcessGASILState.shared`).

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
            env_key = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
            if config.backend == "process":
                from gasil_wrappers.process_state import ProcessGASILState

                state = ProcessGASILState.shared(config, env_key)
            else:
                state = GASILState.shared(config, env_key)
        env = TopKEpisodeRecorder(env, state)
        if config.gasil:
            env = DiscriminatorRewardWrapper(env, state)
    return env


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
