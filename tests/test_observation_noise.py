import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from gasil_wrappers import ObservationNoise
from tests.conftest import ScriptedEnv


def observations(env, seed, steps=30):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        out.append(env.step(np.zeros(2, np.float32))[0])
    return np.array(out)


def test_same_seed_same_noise_other_seed_other_noise():
    base = ScriptedEnv(obs_offset=0.0)
    env = ObservationNoise(base, std=0.5)
    a, b, c = observations(env, 7), observations(env, 7), observations(env, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_noise_statistics_and_independence():
    env = ObservationNoise(ScriptedEnv(rewards=[0.0] * 5000, obs_offset=0.0), std=0.3)
    obs = observations(env, 0, steps=4000)
    noise = obs - np.stack([np.arange(len(obs)), np.zeros(len(obs))], axis=1)
    assert abs(noise.mean()) < 0.02
    assert abs(noise.std() - 0.3) < 0.01
    assert abs(np.corrcoef(noise[:-1, 0], noise[1:, 0])[0, 1]) < 0.05  # independent across steps
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.05  # and across dimensions


def test_noise_at_reset_and_unseeded_reset_continues_stream():
    env = ObservationNoise(ScriptedEnv(obs_offset=0.0), std=1.0)
    first, _ = env.reset(seed=1)
    second, _ = env.reset()
    assert not np.allclose(first, [0, 0]) and not np.allclose(first, second)


def test_zero_std_is_identity():
    env = ObservationNoise(ScriptedEnv(obs_offset=0.25), std=0.0)
    np.testing.assert_array_equal(observations(env, 3, 5)[:, 1], 0.25)


def test_space_widened_and_check_env_passes():
    base = gym.make("Pendulum-v1")
    env = ObservationNoise(base, std=0.5)
    assert np.all(np.isinf(env.observation_space.low)) and env.observation_space.shape == (3,)
    check_env(env, skip_render_check=True)
    assert env.spec.make().std == 0.5


@pytest.mark.parametrize("std", [-0.1, float("nan"), float("inf")])
def test_bad_std(std):
    with pytest.raises(ValueError, match="ObservationNoise"):
        ObservationNoise(ScriptedEnv(), std=std)


def test_rejects_non_box_space():
    with pytest.raises(TypeError, match="ObservationNoise"):
        ObservationNoise(gym.make("Taxi-v3"), 0.1)
