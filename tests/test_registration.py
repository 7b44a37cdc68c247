import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import gasil_wrappers
from gasil_wrappers import (
    DelayedReward,
    DiscriminatorRewardWrapper,
    GASILConfig,
    ObservationNoise,
    TopKEpisodeRecorder,
    find_state,
    make_env,
    wrap_stack,
)
from gasil_wrappers.registration import make_stack_env
from tests.conftest import mujoco_id

OUR_IDS = sorted(
    env_id for env_id, spec in gym.registry.items()
    if spec.entry_point is make_stack_env or env_id in ("PointMass-v0", "PointMassExplore-v0")
)


def test_expected_ids_are_registered():
    hopper, walker = mujoco_id("Hopper"), mujoco_id("Walker2d")
    for env_id in [f"Delayed{hopper}", f"GASIL-Delayed{hopper}", f"GASIL-{hopper}", f"Noisy{walker}",
                   f"GASIL-Noisy{walker}", "PointMass-v0", "GASIL-PointMass-v0"]:
        assert env_id in OUR_IDS
    assert len(OUR_IDS) >= 20


@pytest.mark.parametrize("env_id", OUR_IDS)
def test_check_env_and_spec_roundtrip_on_every_id(env_id, group):
    kwargs = {} if env_id.startswith("PointMass") else {"group": group}
    env = gym.make(f"gasil_wrappers:{env_id}", **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    check_env(env, skip_render_check=True)
    remade = env.spec.make()
    obs_a, _ = env.reset(seed=5)
    obs_b, _ = remade.reset(seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    action = env.action_space.sample()
    assert env.step(action)[1:3] == remade.step(action)[1:3]


def test_paper_settings_and_overrides():
    hopper = mujoco_id("Hopper")
    env = gym.make(f"gasil_wrappers:GASIL-Delayed{hopper}", alpha=0.3, buffer_steps=5000, group="override")
    config = find_state(env).config
    assert (config.delay, config.gasil, config.alpha, config.buffer_steps) == (20, True, 0.3, 5000)
    noisy = gym.make(f"gasil_wrappers:Noisy{mujoco_id('Walker2d')}", obs_noise_std=0.5)
    layer = noisy
    while not isinstance(layer, ObservationNoise):
        layer = layer.env
    assert layer.std == 0.5
    with pytest.raises(ValueError, match="alpha"):
        gym.make(f"gasil_wrappers:GASIL-Delayed{hopper}", alpha=-1.0)


def test_make_with_only_the_id_string_in_a_fresh_interpreter():
    code = (
        "import gymnasium as gym\n"
        f"env = gym.make('gasil_wrappers:GASIL-Delayed{mujoco_id('Hopper')}')\n"
        "env.reset(seed=0)\n"
        "print(sorted(env.step(env.action_space.sample())[4]['gasil']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "discriminator_reward" in out.stdout


def layers(env):
    found = []
    while isinstance(env, gym.Wrapper):
        found.append(type(env))
        env = env.env
    return found


def test_wrap_stack_order_and_optional_layers(group):
    config = GASILConfig(gasil=True, delay=5, obs_noise_std=0.1, group=group)
    full = wrap_stack(gym.make("Pendulum-v1"), config)
    ours = [c for c in layers(full) if c.__module__.startswith("gasil_wrappers")]
    assert ours == [DiscriminatorRewardWrapper, TopKEpisodeRecorder, DelayedReward, ObservationNoise]
    bc = wrap_stack(gym.make("Pendulum-v1"), GASILConfig(top_k=True, group=group))
    assert [c for c in layers(bc) if c.__module__.startswith("gasil_wrappers")] == [
        TopKEpisodeRecorder, DelayedReward]
    plain = wrap_stack(gym.make("Pendulum-v1"), GASILConfig())
    assert find_state(plain) is None and DelayedReward in layers(plain)
    check_env(full, skip_render_check=True)


def test_make_env_refuses_a_second_stack():
    env_id = f"gasil_wrappers:GASIL-Delayed{mujoco_id('Hopper')}"
    assert find_state(make_env(env_id, GASILConfig(seed=1))) is not None
    with pytest.raises(ValueError, match="already contains the GASIL stack"):
        make_env(env_id, GASILConfig(gasil=True))


def test_full_stack_bad_input_names_the_wrapper(group):
    env = gym.make(f"gasil_wrappers:GASIL-Delayed{mujoco_id('Hopper')}", group=group)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="DiscriminatorRewardWrapper.*NaN or inf"):
        env.step(np.array([np.nan, 0, 0], np.float32))
    with pytest.raises(ValueError, match="DiscriminatorRewardWrapper.*shape"):
        env.step(np.zeros(2, np.float32))
    assert len(find_state(env).buffer) == 0


def test_config_validation_messages():
    with pytest.raises(ValueError, match="delay must be >= 1"):
        GASILConfig(delay=0)
    with pytest.raises(ValueError, match="alpha_start <= alpha_end"):
        GASILConfig(alpha_start=10, alpha_end=5)
    assert GASILConfig(d_hidden=[32, 32]).d_hidden == (32, 32)
    assert gasil_wrappers.INFO_KEY == "gasil"
