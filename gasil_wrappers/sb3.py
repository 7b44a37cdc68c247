"""GASIL for Stable-Baselines3: one ``VecEnvWrapper`` shapes the whole batch in the learner process.

SB3's ``SubprocVecEnv`` puts each sub-env in its own process. Here the sub-envs carry only the task
part of the stack (observation noise, delayed reward: ``config.replace(gasil=False, top_k=False)``), and
:class:`GASILVecEnvWrapper`, in the learner process, records every sub-env's episodes into the
good-trajectory buffer and shapes all rewards with one batched numpy forward of D per vector step. The
owner is an in-process :class:`~gasil_wrappers.GASILState`: no server, no shared memory, and the same
code as gymnasium's :class:`~gasil_wrappers.GASILVectorReward` (:class:`~gasil_wrappers.vector.BatchedGASIL`),
so with the same seeds and actions the buffer, every D round and D's weights are bitwise those of the
per-env stack under ``DummyVecEnv``, and the rewards agree to float64 rounding.

SB3's conventions: sub-envs autoreset on the step that ends an episode (the returned observation is the
reset one, the last one is ``infos[i]["terminal_observation"]``; ``infos[i]["TimeLimit.truncated"]``
tells truncation from termination); ``VecEnv.seed(s)`` seeds the next reset with ``s + i`` (the first
one seeds D when ``config.seed`` is None). Put ``VecNormalize`` (and ``VecMonitor``, to log the shaped
return) **outside** this wrapper; :func:`make_sb3_vec_env` puts SB3's ``Monitor`` around each sub-env's
task stack, so ``info["episode"]["r"]`` is the true (undelayed, unshaped) return.

SB3 is an optional dependency: ``import gasil_wrappers`` does not import this module.

Example:
    >>> from stable_baselines3.common.vec_env import DummyVecEnv
    >>> from gasil_wrappers import GASILConfig
    >>> venv = make_sb3_vec_env("Pendulum-v1", 2, GASILConfig(gasil=True, delay=5, d_every=256, seed=0),
    ...                         vec_env_cls=DummyVecEnv)
    >>> venv.seed(0)
    [0, 1]
    >>> _ = venv.reset()
    >>> for _ in range(300):
    ...     _, rewards, dones, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
    >>> venv.state.rounds, sorted(infos[0]["gasil"])[:3]
    (1, ['alpha', 'discriminator_reward', 'env_reward'])
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv, VecEnvWrapper

from gasil_wrappers.config import INFO_KEY, GASILConfig
from gasil_wrappers.persistence import save_gasil_state
from gasil_wrappers.state import GASILState
from gasil_wrappers.vector import BatchedGASIL, _any  # _any: a.any() without numpy's Python layer

__all__ = ["GASILCheckpointCallback", "GASILVecEnvWrapper", "make_sb3_vec_env"]


def _innermost(venv: VecEnv) -> VecEnv:
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return venv


class GASILVecEnvWrapper(VecEnvWrapper):
    """GASIL's shaped reward for an SB3 ``VecEnv`` whose sub-envs carry only the task part of the stack.

    ``state``: an in-process :class:`~gasil_wrappers.GASILState` (default: a new one for ``config``).
    With ``config.gasil`` rewards become ``w·r + α(t)·(−log D(s, a))`` (through :meth:`GASILState.shape`,
    after the per-env :class:`~gasil_wrappers.reward.EnvRewardScale` when
    ``env_reward_scale="normalized"``) and ``infos[i]["gasil"]`` gains ``discriminator_reward``,
    ``alpha`` and ``shaped_reward``; with ``top_k`` only, episodes are recorded and rewards left alone.
    The observations and actions recorded are those this wrapper sees (inside ``VecNormalize``).
    """

    def __init__(self, venv: VecEnv, state: GASILState | None = None, *, config: GASILConfig | None = None):
        if state is None:
            if config is None:
                raise ValueError("GASILVecEnvWrapper: give a GASILState or a GASILConfig")
            state = GASILState(config)
        self.core = BatchedGASIL(state, venv.num_envs, venv.observation_space, venv.action_space,
                                 who="GASILVecEnvWrapper")
        super().__init__(venv)
        self.state = state
        self.config = state.config

    def reset(self):
        seeds = list(_innermost(self.venv)._seeds)  # what the coming reset uses (then SB3 clears them)
        obs = self.venv.reset()
        obs_rows = np.array(obs, dtype=np.float64).reshape(self.num_envs, -1)
        infos = getattr(self.venv, "reset_infos", None) or [{}] * self.num_envs
        for j in range(self.num_envs):  # in sub-env order, like DummyVecEnv (the first seed seeds D)
            unpaid = infos[j].get(INFO_KEY, {}).get("cut_unpaid_reward")  # a reset that cut an episode
            self.core.begin_episode(j, obs_rows[j], seeds[j], unpaid)
        return obs

    def state_dict(self) -> dict:
        """This wrapper's part of the state between two steps (the owner, ``self.state``, is saved on its
        own): ``core`` (:meth:`~gasil_wrappers.vector.BatchedGASIL.state_dict`). The sub-envs, in
        worker processes, are not included. Save and restore it with the owner through
        :func:`gasil_wrappers.persistence.save_gasil_state` / ``load_gasil_state``, or let
        :class:`GASILCheckpointCallback` do it next to SB3's model checkpoints."""
        return {"core": self.core.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (``ValueError``, and nothing changed, on one that does not fit)."""
        if not isinstance(state, dict) or "core" not in state:
            raise ValueError("GASILVecEnvWrapper: not a state of this wrapper (no 'core')")
        self.core.load_state_dict(state["core"])

    def step_async(self, actions: np.ndarray) -> None:
        self.core.act(actions)  # checked before the sub-envs see them
        self.venv.step_async(actions)
        self.core.score_ahead()  # D's forward runs while the sub-envs step

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        n = self.num_envs
        obs_rows = np.asarray(obs, dtype=np.float64).reshape(n, -1)
        dones = np.asarray(dones, dtype=bool)
        if rewards.dtype != np.float64:  # DummyVecEnv rounds rewards to float32; _TaskReward
            # (make_sb3_vec_env) keeps the float64 one. SubprocVecEnv stacks the workers' floats as they are.
            rewards = np.array([info.get(INFO_KEY, {}).get("task_reward", r)
                                for info, r in zip(infos, rewards)], dtype=np.float64)
        any_done = bool(_any(dones))
        if any_done:
            truncated = [info.get("TimeLimit.truncated", False) for info in infos]
            truncations = np.array(truncated, dtype=bool) & dones
            terminations = dones & ~truncations
        else:
            terminations = truncations = dones
        rewards_out, diag = self.core.step(obs_rows, None, rewards, terminations, truncations)
        if diag is not None:
            names = tuple(diag)
            for info, values in zip(infos, zip(*(value.tolist() for value in diag.values()))):
                info.setdefault(INFO_KEY, {}).update(zip(names, values))
        for j in np.flatnonzero(dones) if any_done else ():  # SB3 resets on the same step: the
            self.core.begin_episode(j, obs_rows[j])  # returned obs is already the reset one
        return obs, rewards_out.astype(np.float32), dones, infos


class _TaskReward(gym.Wrapper):
    """Puts the task stack's reward under ``info["gasil"]["task_reward"]``, in float64 (``DummyVecEnv``
    rounds rewards to float32): the buffer then ranks by the same reward as the per-env stack's."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info.setdefault(INFO_KEY, {})["task_reward"] = float(reward)
        return obs, reward, terminated, truncated, info


def _sub_env(env_id: str, config: GASILConfig, monitor: bool, env_kwargs: dict, task_reward: bool) -> gym.Env:
    from gasil_wrappers.stack import wrap_stack

    env = wrap_stack(gym.make(env_id, **env_kwargs), config)
    if task_reward:
        env = _TaskReward(env)
    return Monitor(env) if monitor else env


def make_sb3_vec_env(env_id: str, n_envs: int, config: GASILConfig, *, vec_env_cls=SubprocVecEnv,
                     vec_env_kwargs: dict | None = None, env_kwargs: dict | None = None, monitor: bool = True,
                     state: GASILState | None = None) -> VecEnv:
    """An SB3 vec env of ``n_envs`` task stacks (noise, delay) with :class:`GASILVecEnvWrapper` on top.

    Each sub-env is ``Monitor(wrap_stack(gym.make(env_id, **env_kwargs), task_config))`` (unless
    ``vec_env_cls`` is a ``SubprocVecEnv``, the task stack's float64 reward also goes under
    ``info["gasil"]["task_reward"]``, since ``DummyVecEnv`` rounds rewards to float32) with
    ``task_config = config.replace(gasil=False, top_k=False)``, built inside its worker by
    ``vec_env_cls`` (``SubprocVecEnv`` by default, or ``DummyVecEnv``). When ``config.gasil or
    config.top_k``, the GASIL wrapper goes on top, with ``state`` (default: a new ``GASILState(config)``,
    then also ``venv.state``). ``env_id`` must be a plain id (not one of the ``gasil_wrappers:`` ids,
    which carry a per-env stack). Wrap the result in ``VecNormalize`` if you normalize.
    """
    from gasil_wrappers.stack import is_stack_id

    if is_stack_id(env_id):
        raise ValueError(f"make_sb3_vec_env: {env_id!r} already contains a per-env GASIL stack; "
                         "pass its base id")
    task = config.replace(gasil=False, top_k=False)
    # SubprocVecEnv returns the workers' float64 rewards as they are: no need to copy them into infos
    task_reward = config.records_buffer and not (isinstance(vec_env_cls, type)
                                                 and issubclass(vec_env_cls, SubprocVecEnv))
    thunk = functools.partial(_sub_env, env_id, task, monitor, dict(env_kwargs or {}), task_reward)
    venv = vec_env_cls([thunk] * n_envs, **(vec_env_kwargs or {}))
    if not config.records_buffer:
        return venv
    return GASILVecEnvWrapper(venv, state if state is not None else GASILState(config))




class GASILCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback``, saving the GASIL state next to each model checkpoint.

    Every ``save_freq`` calls it writes what ``CheckpointCallback`` writes (the model, and with
    ``save_vecnormalize=True`` the ``VecNormalize`` statistics) and
    ``{save_path}/{name_prefix}_gasil_{steps}_steps.pt``: the GASIL wrapper's episodes in progress and
    env-reward scale, and its owner's buffer, D and trainer
    (:func:`gasil_wrappers.persistence.save_gasil_state`). Resume with the same config::

        venv = make_sb3_vec_env(env_id, n_envs, config)
        load_gasil_state(venv, "ckpt/rl_model_gasil_100000_steps.pt")
        venv = VecNormalize.load("ckpt/rl_model_vecnormalize_100000_steps.pkl", venv)
        model = PPO.load("ckpt/rl_model_100000_steps.zip", env=venv)
        model.learn(remaining_steps, reset_num_timesteps=False, callback=...)

    ``learn()`` resets the sub-envs (new processes cannot continue the old episodes): the episodes in
    progress at the checkpoint then enter the buffer as cut, and ``diagnostics()["cut_episodes"]``
    counts them.
    """

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            path = self._checkpoint_path("gasil_", extension="pt")
            save_gasil_state(self.model.get_env(), path)  # finds the GASIL wrapper inside VecNormalize etc.
            if self.verbose >= 2:
                print(f"Saving GASIL state to {path}")
        return super()._on_step()
