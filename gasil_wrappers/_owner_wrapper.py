"""The base of the two wrappers that feed a GASIL owner with what the agent saw and did."""

from __future__ import annotations

import gymnasium as gym

from gasil_wrappers._checks import check_action, check_reward, needs_reset


class OwnerWrapper(gym.Wrapper):
    """Tracks the observation the agent acted on and hands each checked transition to ``transition``.

    Subclasses see ``(s, a, r, terminated, truncated, info)`` with ``s`` the observation the action was
    chosen on, a finite action of the right shape, and a finite reward; they return the reward to pass
    on. Stepping outside an episode, a bad action or a non-finite reward raise an error naming the
    subclass, and a non-finite reward ends the episode for the wrapper (nothing of it is handed on).
    An OwnerWrapper directly inside another one is handed the already checked action (the stack checks
    it once).
    """

    def __init__(self, env: gym.Env, state):
        gym.Wrapper.__init__(self, env)
        self.state = state
        state.attach(env.observation_space, env.action_space)
        self._name = type(self).__name__
        self._act_shape = env.action_space.shape
        self._running = False
        self._last_obs = None
        inner_owner = isinstance(env, OwnerWrapper)  # then actions and rewards are checked once, inside
        self._inner_step = env._step_checked if inner_owner else env.step
        self._check_reward = not inner_owner

    def begin_episode(self) -> None:
        """Called after every reset."""

    def transition(self, obs, action, reward: float, terminated: bool, truncated: bool, info: dict) -> float:
        raise NotImplementedError

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.state.seed_if_unset(seed)
        self._last_obs = obs
        self._running = True
        self.begin_episode()
        return obs, info

    def step(self, action):
        return self._step_checked(check_action(action, self._act_shape, self._name))

    def _step_checked(self, action):
        """step() for an action that already passed check_action (here or in an OwnerWrapper outside)."""
        if not self._running:
            raise needs_reset(self._name)
        obs, reward, terminated, truncated, info = self._inner_step(action)
        done = terminated or truncated
        if self._check_reward:
            try:
                reward = check_reward(reward, self._name)
            except ValueError:
                self._running = False  # the episode is spoiled: nothing more of it is handed on
                raise
        reward = self.transition(self._last_obs, action, reward, terminated, truncated, info)
        self._last_obs = obs
        if done:
            self._running = False
        return obs, reward, terminated, truncated, info
