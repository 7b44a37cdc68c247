"""Scripted environments whose rewards and observations can be written down by hand."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest


class ScriptedEnv(gym.Env):
    """Observation ``[t, offset]`` with ``t`` the step in the episode; reward ``rewards[t]``.

    The episode terminates after ``len(rewards)`` steps (or is truncated, with ``truncate=True``).
    ``offset`` is drawn from ``np_random`` at reset, so seeding is observable. Actions are 2-D in [-1, 1].
    """

    metadata = {"render_modes": []}

    def __init__(self, rewards=(1.0,) * 50, truncate: bool = False, obs_offset: float | None = None):
        self.rewards = list(rewards)
        self.truncate = truncate
        self.obs_offset = obs_offset
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.t = 0
        self.offset = 0.0

    def _obs(self):
        return np.array([self.t, self.offset], dtype=np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.offset = self.obs_offset if self.obs_offset is not None else float(self.np_random.uniform())
        return self._obs(), {}

    def step(self, action):
        reward = self.rewards[self.t]
        self.t += 1
        done = self.t >= len(self.rewards)
        return self._obs(), reward, done and not self.truncate, done and self.truncate, {}


@pytest.fixture
def scripted():
    return ScriptedEnv


_groups = itertools.count()


@pytest.fixture
def group():
    """A fresh GASILState group name, so tests never share state."""
    return f"test-{next(_groups)}"


def error_in_fork(action: Callable[[], object]) -> str:
    """Run ``action`` in a forked child; return ``"<ExceptionType>: <message>"`` of what it raised there,
    or ``"no error"``. The child always leaves by ``os._exit``, so it never runs the rest of the session."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = "no error"
        try:
            action()
        except BaseException as e:  # whatever it is, the parent asserts on it
            message = f"{type(e).__name__}: {e}"
        finally:
            os.write(write, message.encode()[:2000])
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        return pipe.read().decode()


def mujoco_id(task: str) -> str:
    """The newest MuJoCo version of ``task`` this Gymnasium has (v5 from 1.0, v4 on 0.29)."""
    return f"{task}-v5" if f"{task}-v5" in gym.registry else f"{task}-v4"


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance (2 CPUs) for a test module; its workers import this checkout."""
    import os

    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
