"""GASIL as a Gymnasium wrapper stack: wrap an env, and any policy-gradient learner is PPO+GASIL.

Generative Adversarial Self-Imitation Learning (Guo, Oh, Singh, Lee, NeurIPS 2018) keeps the agent's
best past episodes, trains a discriminator D(s, a) to tell current-policy state-actions from them, and
shapes the reward into ``r − α·log D(s, a)``. Here D trains out of band inside the wrapper stack, so
the learner never calls it.

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("gasil_wrappers:GASIL-DelayedHopper-v5", group="doc-init")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> sorted(info["gasil"])
    ['alpha', 'discriminator_reward', 'env_reward', 'shaped_reward']
"""

from gasil_wrappers.config import INFO_KEY, GASILConfig
from gasil_wrappers.delayed_reward import DelayedReward
from gasil_wrappers.discriminator import Discriminator
from gasil_wrappers.discriminator_reward import DiscriminatorRewardWrapper
from gasil_wrappers.observation_noise import ObservationNoise
from gasil_wrappers.persistence import (
    env_state_dict,
    load_env_state,
    load_env_state_dict,
    load_gasil_state,
    load_vector_env_state_dict,
    save_env_state,
    save_gasil_state,
    vector_env_state_dict,
)
from gasil_wrappers.ray_owner import GASILOwnerError, RayGASILOwner  # imports Ray only when used
from gasil_wrappers.registration import register_envs
from gasil_wrappers.stack import has_stack, make_env, make_eval_env, wrap_stack
from gasil_wrappers.state import GASILOwnershipError, GASILState, find_state
from gasil_wrappers.topk import Episode, GoodTrajectoryBuffer, TopKEpisodeRecorder, discounted_return
from gasil_wrappers.vector import GASILVectorReward, make_vec_stack  # gymnasium >= 1.0 to build

__all__ = [
    "INFO_KEY",
    "DelayedReward",
    "Discriminator",
    "DiscriminatorRewardWrapper",
    "Episode",
    "GASILConfig",
    "GASILOwnerError",
    "GASILOwnershipError",
    "GASILState",
    "GASILVectorReward",
    "GoodTrajectoryBuffer",
    "ObservationNoise",
    "RayGASILOwner",
    "TopKEpisodeRecorder",
    "discounted_return",
    "env_state_dict",
    "find_state",
    "has_stack",
    "load_env_state",
    "load_env_state_dict",
    "load_gasil_state",
    "load_vector_env_state_dict",
    "make_env",
    "make_eval_env",
    "make_vec_stack",
    "register_envs",
    "save_env_state",
    "save_gasil_state",
    "vector_env_state_dict",
    "wrap_stack",
]

register_envs()
