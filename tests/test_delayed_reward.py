import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given
from hypothesis import strategies as st

from gasil_wrappers import DelayedReward
from tests.conftest import ScriptedEnv


def rollout(env, steps, action=(0.0, 0.0)):
    env.reset(seed=0)
    out = []
    for _ in range(steps):
        _, r, terminated, truncated, info = env.step(np.array(action, np.float32))
        out.append((r, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


def test_pays_every_delay_steps_exactly():
    env = DelayedReward(ScriptedEnv(rewards=[float(t) for t in range(1, 101)]), delay=20)
    rewards = [r for r, *_ in rollout(env, 100)]
    for t, r in enumerate(rewards, start=1):  # step t pays sum of rewards t-19..t on multiples of 20
        assert r == (sum(range(t - 19, t + 1)) if t % 20 == 0 else 0.0), t


@pytest.mark.parametrize("truncate", [False, True])
def test_flushes_on_episode_end(truncate):
    env = DelayedReward(ScriptedEnv(rewards=[1.0] * 45, truncate=truncate), delay=20)
    out = rollout(env, 100)
    assert len(out) == 45
    paid = {t: r for t, (r, *_) in enumerate(out, start=1) if r}
    assert paid == {20: 20.0, 40: 20.0, 45: 5.0}
    info = out[-1][3]["gasil"]
    assert info["episode_return"] == 45.0 and info["episode_length"] == 45


def test_nothing_carries_over_reset():
    env = DelayedReward(ScriptedEnv(rewards=[1.0] * 50), delay=20)
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.zeros(2, np.float32))
    rewards = [r for r, *_ in rollout(env, 20)]  # rollout resets: 10 pending rewards are dropped
    assert rewards[-1] == 20.0 and sum(rewards) == 20.0


def test_reports_env_reward_every_step():
    env = DelayedReward(ScriptedEnv(rewards=[3.0, -1.0, 2.0]), delay=20)
    assert [info["gasil"]["env_reward"] for *_, info in rollout(env, 3)] == [3.0, -1.0, 2.0]


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60), st.integers(1, 25))
def test_episode_sum_unchanged(rewards, delay):
    env = DelayedReward(ScriptedEnv(rewards=rewards), delay=delay)
    out = rollout(env, len(rewards))
    assert math.isclose(sum(r for r, *_ in out), math.fsum(rewards), rel_tol=1e-9, abs_tol=1e-6)
    assert sum(1 for r, *_ in out if r != 0) <= math.ceil(len(rewards) / delay)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_reward_raises(bad):
    env = DelayedReward(ScriptedEnv(rewards=[1.0, bad, 1.0]), delay=2)
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="DelayedReward.*non-finite reward"):
        env.step(np.zeros(2, np.float32))


def test_step_before_reset_raises():
    env = DelayedReward(ScriptedEnv(), delay=2)
    with pytest.raises(RuntimeError, match="DelayedReward.*reset"):
        env.step(np.zeros(2, np.float32))


@pytest.mark.parametrize("delay", [0, -3, 2.5])
def test_bad_delay(delay):
    with pytest.raises(ValueError, match="DelayedReward"):
        DelayedReward(ScriptedEnv(), delay=delay)


def test_check_env_and_spec_roundtrip():
    env = DelayedReward(gym.make("Pendulum-v1"), delay=20)
    check_env(env, skip_render_check=True)
    remade = env.spec.make()
    assert isinstance(remade, DelayedReward) and remade.delay == 20
