import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from gasil_wrappers import DiscriminatorRewardWrapper, GASILConfig, GASILState, TopKEpisodeRecorder
from tests.conftest import ScriptedEnv

ZERO = np.zeros(2, np.float32)


def stack(rewards=(1.0,) * 5, **config):
    """A scripted stack whose D rounds take effect at once (d_apply_lag=0) unless asked otherwise."""
    config = GASILConfig(**{"gasil": True, "seed": 0, "gamma": 1.0, "d_apply_lag": 0, **config})
    state = GASILState(config)
    env = DiscriminatorRewardWrapper(TopKEpisodeRecorder(ScriptedEnv(rewards=rewards, obs_offset=0.0), state),
                                     state)
    return env, state


def set_known_weights(state):
    """D(s, a) logit = 0.5*tanh(s0 - a0) - 0.25, inputs normalized with mean 0 and var 1."""
    d = state.discriminator
    with torch.no_grad():
        for p in d.net.parameters():
            p.zero_()
        d.net[0].weight[0, 0] = 1.0  # s0
        d.net[0].weight[0, 2] = -1.0  # a0
        d.net[2].weight[0, 0] = 1.0
        d.net[4].weight[0, 0] = 0.5
        d.net[4].bias[0] = -0.25
    d.normalizer.mean[:] = 0.0
    d.normalizer.var[:] = 1.0
    d.refresh_snapshot()


def expected_logit(s0, a0):
    return 0.5 * math.tanh(math.tanh(s0 - a0)) - 0.25


def test_env_reward_until_buffer_has_an_episode_and_d_trained():
    env, state = stack(rewards=[2.0, -3.0, 4.0], d_every=2, env_reward_weight=0.0, alpha=1.0)
    env.reset(seed=0)
    rewards = [env.step(ZERO)[1] for _ in range(3)]
    assert rewards == [2.0, -3.0, 4.0]  # even with w = 0: no signal from an untrained D
    assert state.rounds == 1  # the first episode ended on step 3: D trained after that step's reward


@pytest.mark.parametrize("w, alpha", [(1.0, 0.1), (0.5, 1.0), (0.0, 0.2), (2.0, 0.0)])
def test_shaped_reward_equals_w_r_plus_alpha_softplus_minus_logit(w, alpha):
    env, state = stack(rewards=[1.5] * 4, d_every=4, env_reward_weight=w, alpha=alpha)
    env.reset(seed=0)
    for _ in range(4):
        env.step(ZERO)
    assert state.ready
    set_known_weights(state)
    obs, _ = env.reset(seed=1)
    for t, a0 in enumerate([0.3, -0.7, 1.0]):
        _, reward, _, _, info = env.step(np.array([a0, 0.2], np.float32))
        s0 = float(t)  # ScriptedEnv's observation is [t, 0]
        d_reward = math.log1p(math.exp(-expected_logit(s0, np.float32(a0))))
        assert abs(info["gasil"]["discriminator_reward"] - d_reward) < 1e-6
        assert abs(reward - (w * 1.5 + alpha * d_reward)) < 1e-6
        assert info["gasil"]["alpha"] == alpha and info["gasil"]["shaped_reward"] == reward


def test_alpha_schedule_follows_policy_steps():
    env, state = stack(rewards=[0.0] * 10, d_every=2, alpha=1.0, alpha_start=4, alpha_end=8)
    env.reset(seed=0)
    alphas = []
    for _ in range(10):
        alphas.append(env.step(ZERO)[4]["gasil"]["alpha"])
    assert alphas == [0.0] * 10  # no episode in the buffer yet: plain env reward, alpha reported 0
    env.reset(seed=0)
    alphas = [env.step(ZERO)[4]["gasil"]["alpha"] for _ in range(10)]
    # policy steps before each step: 10..19, all past alpha_end
    assert alphas == [1.0] * 10
    assert [state.alpha_at(t) for t in range(0, 10)] == [0, 0, 0, 0, 0, 0.25, 0.5, 0.75, 1.0, 1.0]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 120), st.integers(1, 70))
def test_alphas_are_alpha_at_of_each_step(start, ramp, step, m):
    """The batched wrappers' α(t) for m steps at once is the schedule's value at each of them."""
    state = GASILState(GASILConfig(gasil=True, alpha=0.7, alpha_start=start, alpha_end=start + ramp))
    assert state.alphas(step, m).tolist() == [state.alpha_at(t) for t in range(step, step + m)]


def test_constant_alpha_without_schedule():
    state = GASILState(GASILConfig(gasil=True, alpha=0.3))
    assert {state.alpha_at(t) for t in (0, 1, 10**7)} == {0.3}


@pytest.mark.parametrize(
    "action, message",
    [([np.nan, 0.0], "NaN or inf"), ([0.0, -np.inf], "NaN or inf"), ([0.0], "shape")],
)
def test_bad_actions_raise_naming_the_wrapper(action, message):
    env, state = stack()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=f"DiscriminatorRewardWrapper.*{message}"):
        env.step(np.array(action, np.float32))
    assert state.policy_steps == 0


def test_non_finite_reward_raises_and_buffer_untouched():
    env, state = stack(rewards=[1.0, math.nan])
    env.reset(seed=0)
    env.step(ZERO)
    with pytest.raises(ValueError, match="non-finite reward"):
        env.step(ZERO)
    assert len(state.buffer) == 0


def test_step_before_reset_raises():
    env, _ = stack()
    with pytest.raises(RuntimeError, match="DiscriminatorRewardWrapper.*reset"):
        env.step(ZERO)


def test_check_env_on_the_wrapper_alone():
    state = GASILState(GASILConfig(gasil=True, d_every=16))
    env = DiscriminatorRewardWrapper(TopKEpisodeRecorder(gym.make("Pendulum-v1"), state), state)
    check_env(env, skip_render_check=True)
    alone = DiscriminatorRewardWrapper(gym.make("Pendulum-v1"), GASILState(GASILConfig(gasil=True)))
    check_env(alone, skip_render_check=True)
    with pytest.warns(RuntimeWarning, match="fresh owner"):
        remade = env.spec.make()
    # check_env stepped the state: the rebuilt env gets a fresh owner of its config (tests/test_ownership)
    assert remade.state is not state and remade.state.config == state.config
    assert remade.state is remade.env.state
