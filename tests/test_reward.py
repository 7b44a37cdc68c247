"""Tests of gasil_wrappers/reward.py: the one shaped-reward function, the env-reward scale, the GASIL
term's share, and D's cadence tied to the learner's batch."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasil_wrappers import GASILConfig, GASILState, make_env, wrap_stack
from gasil_wrappers.reward import EnvRewardScale, shaped_reward
from tests.conftest import mujoco_id

NEEDS_VECTOR = pytest.mark.skipif(int(gym.__version__.split(".")[0]) < 1, reason="needs gymnasium >= 1.0")

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(r=finite, d=st.floats(0, 1e4), alpha=st.floats(0, 10), w=st.floats(0, 2))
def test_shaped_reward_formula_scalar_and_array_agree(r, d, alpha, w):
    assert shaped_reward(r, d, alpha, True, w) == w * r + alpha * d
    assert shaped_reward(r, d, alpha, False, w) == r  # the env reward itself until D has trained
    out = shaped_reward(np.array([r, r]), np.array([d, d]), alpha, np.array([True, False]), w)
    assert out.tolist() == [w * r + alpha * d, r]


@settings(max_examples=30, deadline=None)
@given(rewards=st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=40),
       ends=st.lists(st.booleans(), min_size=40, max_size=40))
def test_env_reward_scale_is_normalize_rewards_statistic(rewards, ends):
    """The same numbers as gymnasium's NormalizeReward on the same rewards and terminations."""

    class Replay(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (1,))
        action_space = gym.spaces.Box(-1, 1, (1,))

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return np.zeros(1, np.float32), {}

        def step(self, action):
            r, term = rewards[self.t], ends[self.t]
            self.t += 1
            return np.zeros(1, np.float32), r, term, False, {}

    reference = gym.wrappers.NormalizeReward(Replay(), gamma=0.9)
    reference.reset()
    scale = EnvRewardScale(gamma=0.9)
    for t, r in enumerate(rewards):
        expected = reference.step(np.zeros(1))[1]
        assert scale(r, ends[t]) == pytest.approx(float(expected), rel=1e-12, abs=1e-12)


def test_env_reward_scale_state_round_trip():
    a = EnvRewardScale(0.99)
    for r in (1.0, -2.0, 3.5):
        a(r, False)
    b = EnvRewardScale(0.99)
    b.load_state_dict(a.state_dict())
    assert [a(r, False) for r in (0.5, 7.0)] == [b(r, False) for r in (0.5, 7.0)]


def run_stack(scripted, config: GASILConfig, steps: int):
    """The per-env stack on a scripted env (reward t+1 at step t, 10-step episodes), fixed actions."""
    state = GASILState(config)
    env = wrap_stack(scripted(rewards=[float(t + 1) for t in range(10)]), config, state=state)
    env.reset(seed=0)
    infos, rewards = [], []
    for t in range(steps):
        _, reward, terminated, truncated, info = env.step(np.array([0.5, -0.5 + (t % 3) * 0.4]))
        rewards.append(reward)
        infos.append(dict(info["gasil"]))
        if terminated or truncated:
            env.reset()
    return state, rewards, infos


def test_normalized_scale_divides_the_env_reward_before_alpha(scripted):
    config = GASILConfig(gasil=True, env_reward_scale="normalized", env_reward_scale_gamma=0.99, alpha=0.5,
                         d_every=20, d_apply_lag=0, seed=0)
    state, rewards, infos = run_stack(scripted, config, 60)
    scale = EnvRewardScale(0.99)
    for t, (reward, info) in enumerate(zip(rewards, infos)):
        env_reward = float(t % 10 + 1)
        scaled = scale(env_reward, t % 10 == 9)
        assert info["env_reward"] == env_reward  # the true reward stays in info
        expected = scaled + info["alpha"] * info["discriminator_reward"] if info["alpha"] else scaled
        assert reward == pytest.approx(expected, rel=1e-12)
    assert state.ready
    assert state.buffer.episodes[0].ret == pytest.approx(sum(0.99 ** t * (t + 1) for t in range(10)))


def test_term_share_is_the_gasil_part_of_the_last_window(scripted):
    config = GASILConfig(gasil=True, alpha=0.5, env_reward_weight=0.5, d_every=20, d_apply_lag=0, seed=0)
    state, rewards, infos = run_stack(scripted, config, 60)
    assert state.rounds == 3  # rounds start at steps 20, 40, 60 (the first episode ended at step 10)
    window = infos[40:60]  # shaped by the D of round 1 and 2; the round at step 60 closes the window
    term = sum(i["alpha"] * i["discriminator_reward"] for i in window)
    env_part = sum(abs(0.5 * i["env_reward"]) for i in window)
    assert state.diagnostics()["term_share"] == pytest.approx(term / (env_part + term), rel=1e-12)


def test_logit_form_shapes_with_minus_logit_and_only_the_term_changes(scripted):
    """Same seed and actions with each form: D trains on the same rows (the form only changes the reward),
    so step by step −log D = softplus(−logit) = softplus(logit-form reward), and the shaped reward is
    w·r + α·(−logit). The term share counts the term's size, whatever its sign."""
    base = GASILConfig(gasil=True, alpha=0.5, env_reward_weight=0.5, d_every=20, d_apply_lag=0, seed=0)
    runs = {f: run_stack(scripted, base.replace(d_reward_form=f), 60) for f in ("neg_log_d", "logit")}
    (state_n, _, infos_n), (state_l, rewards_l, infos_l) = runs["neg_log_d"], runs["logit"]
    assert state_l.rounds == state_n.rounds == 3
    shaped = [i for i in infos_l if i["alpha"]]
    assert len(shaped) == 40 and any(i["discriminator_reward"] < 0 for i in shaped)
    for t, (n, lo) in enumerate(zip(infos_n, infos_l)):
        assert n["alpha"] == lo["alpha"]
        if lo["alpha"]:
            assert n["discriminator_reward"] == pytest.approx(np.logaddexp(0.0, lo["discriminator_reward"]),
                                                              rel=1e-12)
        r = lo["env_reward"]
        expected = 0.5 * r + 0.5 * lo["discriminator_reward"] if lo["alpha"] else r
        assert rewards_l[t] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    window = infos_l[40:60]
    term = sum(abs(i["alpha"] * i["discriminator_reward"]) for i in window)
    env_part = sum(abs(0.5 * i["env_reward"]) for i in window)
    assert state_l.diagnostics()["term_share"] == pytest.approx(term / (env_part + term), rel=1e-12)


def test_term_share_is_nan_before_gasil_shapes_anything(scripted):
    state, _, _ = run_stack(scripted, GASILConfig(gasil=True, d_every=1000, seed=0), 30)
    assert math.isnan(state.diagnostics()["term_share"])


@NEEDS_VECTOR
@pytest.mark.parametrize("form", ["neg_log_d", "logit"])
def test_vector_wrapper_scales_like_the_per_env_stack(form):
    from gasil_wrappers import make_vec_stack

    config = GASILConfig(gasil=True, delay=5, env_reward_scale="normalized", d_every=300, d_updates=3,
                         buffer_steps=200, seed=3, d_reward_form=form)
    actions = np.random.default_rng(0).uniform(-1, 1, (400, 2, 3))
    state = GASILState(config)  # shared by the two per-env stacks
    per_env = gym.vector.SyncVectorEnv([lambda: wrap_stack(gym.make("Hopper-v5"), config, state=state)] * 2,
                                       autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    batched = make_vec_stack("Hopper-v5", 2, config)
    out = []
    for envs in (per_env, batched):
        envs.reset(seed=5)
        out.append(np.array([envs.step(a)[1] for a in actions]))
    assert state.rounds == batched.state.rounds > 0
    np.testing.assert_allclose(out[0], out[1], rtol=1e-12, atol=1e-12)


def test_d_every_follows_the_learner_batch_unless_set():
    assert GASILConfig().round_every == 2048  # no learner batch given
    assert GASILConfig().for_batch(8192).round_every == 8192
    assert GASILConfig(d_every=1000).for_batch(8192).round_every == 1000  # the user's setting wins
    env = make_env("Pendulum-v1", GASILConfig(gasil=True, group="batch-plain"), batch_size=4096)
    from gasil_wrappers import find_state

    assert find_state(env).config.round_every == 4096
    hopper = f"gasil_wrappers:GASIL-Delayed{mujoco_id('Hopper')}"
    env = make_env(hopper, batch_size=8192, group="batch-id")
    assert find_state(env).config.round_every == 8192
    env = make_env(hopper, batch_size=8192, group="batch-id2", d_every=500)
    assert find_state(env).config.round_every == 500


def test_bad_scale_settings_are_refused():
    with pytest.raises(ValueError, match="env_reward_scale"):
        GASILConfig(env_reward_scale="std")
    with pytest.raises(ValueError, match="env_reward_scale_gamma"):
        GASILConfig(env_reward_scale_gamma=0.0)
    with pytest.raises(ValueError, match="d_every"):
        GASILConfig(d_every=0)
    with pytest.raises(ValueError, match="d_reward_form"):
        GASILConfig(d_reward_form="log_d")


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.tuples(st.lists(st.booleans(), min_size=3, max_size=3),
                                st.lists(st.floats(-50, 50, allow_nan=False), min_size=3, max_size=3),
                                st.lists(st.booleans(), min_size=3, max_size=3)), min_size=1, max_size=30))
def test_env_reward_scale_rows_equal_one_scale_per_env_bitwise(steps):
    """The batched wrappers' scale of 3 envs (any of them stepping) is bitwise three one-env scales."""
    batched, single = EnvRewardScale(0.99, num_envs=3), [EnvRewardScale(0.99) for _ in range(3)]
    for stepped, rewards, terminated in steps:
        which = np.flatnonzero(stepped)
        if not len(which):
            continue
        got = batched.rows(np.array(rewards)[which], np.array(terminated)[which], which)
        expected = [single[j](rewards[j], terminated[j]) for j in which]
        assert got.tolist() == expected
