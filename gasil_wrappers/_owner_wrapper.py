"""The base of the two wrappers that feed a GASIL owner with what the agent saw and did."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

from gasil_wrappers._checks import check_action, check_reward, needs_reset


class OwnerWrapper(gym.Wrapper):
    """Tracks the observation the agent acted on and hands each checked transition to ``transition``.

    Subclasses see ``(s, a, r, terminated, truncated, info)`` with ``s`` the observation the action was
    chosen on, a finite action of the right shape, and a finite reward; they return the reward to pass
    on. Stepping outside an episode, a bad action or a non-finite reward raise an error naming the
    subclass, and a non-finite reward ends the episode for the wrapper (nothing of it is handed on).
    An OwnerWrapper directly inside another one is handed the already checked action (the stack checks
    it once).

    Ownership: ``state`` may be an :class:`~gasil_wrappers.state.OwnerRef` (what ``env.spec`` records),
    resolved here (see :meth:`GASILState.shared`). An in-process state is checked against this process
    when the wrapper is built and at every reset (:meth:`GASILState.check_process`). A reset in the
    middle of an episode (``reset()`` called by the user or by a wrapper outside, e.g. a ``TimeLimit``)
    ends it as if truncated: :meth:`end_cut_episode` is called first.
    """

    def __init__(self, env: gym.Env, state):
        from gasil_wrappers import state as _state  # here: state.py imports topk.py, which imports us

        gym.Wrapper.__init__(self, env)
        if isinstance(state, _state.OwnerRef):
            state = state.resolve(env)
        self.state = state
        if isinstance(state, _state.GASILState):
            # the spec refers to the state without copying it; rebuilding resolves it (OwnerRef.resolve)
            saved = vars(self).get("_saved_kwargs")
            if saved is not None and "state" in saved:
                self._saved_kwargs = {**saved, "state": _state.OwnerRef(state)}
            state.check_process(type(self).__name__)
        state.attach(env.observation_space, env.action_space)
        self._name = type(self).__name__
        self._act_shape = env.action_space.shape
        self._running = False
        self._last_obs = None
        inner_owner = isinstance(env, OwnerWrapper)  # then actions and rewards are checked once, inside
        self._inner_step = env._step_checked if inner_owner else env.step
        self._check_reward = not inner_owner

    def close(self):
        """Hand the owner what this env still holds (a remote owner ships its last samples), then close."""
        flush = getattr(self.state, "flush", None)  # RayGASILOwner; an in-process GASILState holds nothing
        if flush is not None:
            try:  # a multiprocessing worker exits without atexit handlers: ship before it ends
                flush(wait=True)
            except RuntimeError as e:  # the owner is gone (its error says so): closing must still close
                warnings.warn(f"{self._name}.close(): could not hand the owner this env's last samples: {e}",
                              RuntimeWarning, stacklevel=2)
        super().close()

    def begin_episode(self) -> None:
        """Called after every reset."""

    def end_cut_episode(self, info: dict) -> None:
        """Called at a reset that cuts an episode short (``info``: the reset's), before begin_episode."""

    def transition(self, obs, action, reward: float, terminated: bool, truncated: bool, info: dict) -> float:
        raise NotImplementedError

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        on_reset = getattr(self.state, "on_env_reset", None)  # looked up: bind_owner may switch owners
        if on_reset is not None:
            on_reset(self._name)
        if self._running:
            self.end_cut_episode(info)
        self.state.seed_if_unset(seed)
        self._last_obs = obs
        self._running = True
        self.begin_episode()
        return obs, info

    def state_dict(self) -> dict:
        """This wrapper's part of the episode in progress (the shared owner is saved on its own).

        ``running``: inside an episode; ``last_observation``: the observation the next action will be
        chosen on (None before the first reset). Subclasses add their own keys.
        """
        obs = self._last_obs
        return {"running": bool(self._running), "last_observation": None if obs is None else np.array(obs)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the wrapper must be built as the saved one was)."""
        obs = None if state["last_observation"] is None else np.array(state["last_observation"])
        if obs is not None and (obs.shape != self.observation_space.shape or obs.dtype.kind not in "biuf"):
            raise ValueError(f"{self._name}: a saved observation of shape {obs.shape} and dtype {obs.dtype} "
                             f"does not fit {self.observation_space}")
        self._running = bool(state["running"])
        self._last_obs = obs

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
