"""DiscriminatorRewardWrapper: GASIL's shaped reward r' = w·r − α(t)·log D(s, a) (paper, Eq. 11)."""

from __future__ import annotations

import gymnasium as gym

from gasil_wrappers._owner_wrapper import OwnerWrapper
from gasil_wrappers.config import INFO_KEY
from gasil_wrappers.reward import EnvRewardScale
from gasil_wrappers.state import GASILState

__all__ = ["DiscriminatorRewardWrapper"]


class DiscriminatorRewardWrapper(OwnerWrapper, gym.utils.RecordConstructorArgs):
    """Replace the reward by ``w·r + α(t)·softplus(−logit D(s, a))`` using a shared GASILState.

    With ``env_reward_scale="normalized"`` in the state's config, ``r`` is first divided by the running
    std of this env's discounted return (:class:`~gasil_wrappers.reward.EnvRewardScale`), so α weighs
    −log D against a reward of unit scale on every task.

    ``s`` is the observation the agent acted on and ``a`` its action. Each step also records (s, a) as
    a current-policy sample in the state, which trains D out of band on its cadence: the learner never
    calls D. ``w`` and α's schedule come from the state's config; ``w = 0`` is pure GASIL (Algorithm 1).
    Puts ``discriminator_reward``, ``alpha`` and ``shaped_reward`` under ``info["gasil"]``.

    Note:
        Until the buffer holds an episode and D has trained once, the reward is the env reward.

    Example:
        >>> import gymnasium as gym
        >>> from gasil_wrappers import GASILConfig, GASILState, TopKEpisodeRecorder
        >>> state = GASILState(GASILConfig(gasil=True, d_every=100, seed=0))
        >>> env = DiscriminatorRewardWrapper(TopKEpisodeRecorder(gym.make("Pendulum-v1"), state), state)
        >>> _ = env.reset(seed=123)
        >>> for _ in range(300):
        ...     _, reward, terminated, truncated, info = env.step([0.0])
        ...     if terminated or truncated:
        ...         _ = env.reset()
        >>> state.rounds  # D's first round starts when the first episode ends (step 200), takes effect at 250
        1
        >>> round(info["gasil"]["discriminator_reward"], 3)  # -log D(s, a) for the last step
        0.762
    """

    def __init__(self, env: gym.Env, state: GASILState):
        gym.utils.RecordConstructorArgs.__init__(self, state=state)
        OwnerWrapper.__init__(self, env, state)
        c = state.config
        self.reward_scale = EnvRewardScale(c.env_reward_scale_gamma) if c.env_reward_scale == "normalized" \
            else None

    def state_dict(self) -> dict:
        """OwnerWrapper's keys, and ``env_reward_scale``: the running scale of the env reward
        (:meth:`EnvRewardScale.state_dict`; None unless the config normalizes the env reward)."""
        scale = None if self.reward_scale is None else self.reward_scale.state_dict()
        return {**OwnerWrapper.state_dict(self), "env_reward_scale": scale}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        scale = state["env_reward_scale"]
        if (scale is None) != (self.reward_scale is None):
            raise ValueError("DiscriminatorRewardWrapper: saved with env_reward_scale "
                             f"{'raw' if scale is None else 'normalized'}, this wrapper uses the other")
        OwnerWrapper.load_state_dict(self, state)
        if scale is not None:
            self.reward_scale.load_state_dict(scale)

    def transition(self, obs, action, reward: float, terminated: bool, truncated: bool, info: dict) -> float:
        if self.reward_scale is not None:
            reward = self.reward_scale(reward, terminated)
        shaped, d_reward, alpha = self.state.shaped_reward(obs, action, reward)
        diag = info.setdefault(INFO_KEY, {})
        diag["discriminator_reward"] = d_reward
        diag["alpha"] = alpha
        diag["shaped_reward"] = shaped
        return shaped
