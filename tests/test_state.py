import copy
import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from gasil_wrappers import GASILConfig, GASILState, find_state, wrap_stack
from tests.conftest import ScriptedEnv, mujoco_id


def test_sync_vector_env_of_four_separate_makes_shares_one_state(group):
    env_id = "gasil_wrappers:GASIL-Delayed" + mujoco_id("Hopper")
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, group=group, d_every=64) for _ in range(4)])
    states = {id(find_state(e)) for e in envs.envs}
    assert len(states) == 1
    state = find_state(envs.envs[0])
    envs.reset(seed=0)
    autoresets = 0
    for step in range(100):
        _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
        if step < 99:
            autoresets += int((terminated | truncated).sum())
    # every sub-env's steps count towards the one cadence (gymnasium 1.x spends a step on each autoreset)
    expected = 400 - autoresets if gym.__version__ >= "1" else 400
    assert state.policy_steps == expected
    assert len(state.buffer) > 0 and state.rounds > 0
    other = gym.make(env_id, group=group + "-other")
    assert find_state(other) is not state
    envs.close()


def test_same_settings_share_other_settings_do_not(group):
    make = lambda **kw: wrap_stack(ScriptedEnv(), GASILConfig(gasil=True, group=group, **kw))  # noqa: E731
    a, b, c = make(), make(), make(alpha=0.5)
    assert find_state(a) is find_state(b) is not find_state(c)


def test_deepcopy_is_the_same_object():
    state = GASILState(GASILConfig(gasil=True))
    assert copy.deepcopy(state) is state
    assert copy.deepcopy({"s": state})["s"] is state


def test_mismatched_spaces_cannot_share(group):
    config = GASILConfig(gasil=True, group=group)
    state = GASILState(config)
    wrap_stack(ScriptedEnv(), config, state=state)
    with pytest.raises(ValueError, match="cannot share"):
        wrap_stack(gym.make("Pendulum-v1"), config, state=state)


def drive(env, steps, seed=0, action_seed=0):
    """Step with seeded random actions; returns the shaped rewards."""
    rng = np.random.default_rng(action_seed)
    env.reset(seed=seed)
    rewards = []
    for _ in range(steps):
        _, r, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        rewards.append(r)
        if terminated or truncated:
            env.reset()
    return rewards


def test_state_dict_roundtrip_gives_identical_rewards(group):
    config = GASILConfig(gasil=True, d_every=32, buffer_steps=60, seed=3)
    rewards = [float(i % 7) for i in range(20)]
    state = GASILState(config)
    env = wrap_stack(ScriptedEnv(rewards=rewards), config, state=state)
    drive(env, 400)
    assert state.rounds > 5
    saved = io.BytesIO()
    torch.save(state.state_dict(), saved)

    restored = GASILState(config)
    env2 = wrap_stack(ScriptedEnv(rewards=rewards), config, state=restored)
    restored.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=False))
    obs = np.random.default_rng(1).normal(size=(50, 2))
    act = np.random.default_rng(2).uniform(-1, 1, (50, 2))
    np.testing.assert_array_equal(state.discriminator_reward(obs, act),
                                  restored.discriminator_reward(obs, act))
    # ... and both continue bitwise identically (same training rounds, same buffer updates).
    r1, r2 = drive(env, 300, seed=9, action_seed=4), drive(env2, 300, seed=9, action_seed=4)
    assert r1 == r2
    assert state.diagnostics() == restored.diagnostics()


def test_load_rejects_corrupt_and_mismatched_states():
    config = GASILConfig(gasil=True, d_every=16)
    state = GASILState(config)
    env = wrap_stack(ScriptedEnv(rewards=[1.0] * 10), config, state=state)
    drive(env, 40)
    good = state.state_dict()
    for bad, match in [
        ({}, "corrupt"),
        ({**good, "format": 99}, "format"),
        ({**good, "config": {**good["config"], "d_hidden": (32,)}}, "d_hidden"),
        ({**good, "dims": (5, 2)}, "dims"),
        ({**good, "discriminator": {"net": {}}}, "corrupt"),
    ]:
        with pytest.raises(ValueError, match=match):
            GASILState(config).load_state_dict(bad) if match != "dims" else state.load_state_dict(bad)


def test_diagnostics_report_d_and_buffer():
    config = GASILConfig(gasil=True, d_every=16, gamma=1.0)
    state = GASILState(config)
    env = wrap_stack(ScriptedEnv(rewards=[2.0] * 10), config, state=state)
    drive(env, 40)
    diag = state.diagnostics()
    assert diag["buffer_episodes"] == 4 and diag["buffer_steps"] == 40
    assert diag["buffer_mean_return"] == diag["buffer_min_return"] == 20.0
    assert diag["rounds"] == state.rounds > 0 and 0 <= diag["d_acc_policy"] <= 1
    assert np.isfinite(diag["d_loss"]) and diag["policy_steps"] == 40
