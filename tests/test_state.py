import copy
import io
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gasil_wrappers import GASILConfig, GASILState, find_state, wrap_stack
from tests.conftest import ScriptedEnv, error_in_fork, mujoco_id


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


def test_deepcopy_is_an_independent_copy(group):
    env = wrap_stack(ScriptedEnv(rewards=(1.0,) * 20), GASILConfig(gasil=True, d_every=16, group=group))
    state = find_state(env)
    drive(env, 40)
    copied = copy.deepcopy(env)
    twin = find_state(copied)
    assert twin is not state and twin is find_state(copied.env)  # one copy, shared by the copied wrappers
    counters = lambda s: (s.policy_steps, len(s.buffer), s.rounds, s.buffer.version > 0)  # noqa: E731
    assert counters(twin) == counters(state)
    drive(copied, 10)
    assert state.policy_steps == 40  # the copy never feeds the original
    assert copy.deepcopy({"s": state})["s"] is not state


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
    assert diag["buffer_mean_age"] == 1.5  # equal returns: the 4 episodes, ranked earliest first, ages 3..0
    assert diag["rounds"] == state.rounds > 0 and 0 <= diag["d_acc_policy"] <= 1
    assert np.isfinite(diag["d_loss"]) and diag["policy_steps"] == 40


def fed_state(lag: int, seed: int = 0) -> GASILState:
    """A state (d_every 32) whose buffer already holds two episodes; rows are fed by `feed`."""
    state = GASILState(GASILConfig(gasil=True, d_every=32, d_apply_lag=lag, seed=seed, gamma=1.0))
    state.attach(gym.spaces.Box(-np.inf, np.inf, (3,)), gym.spaces.Box(-1, 1, (2,)))
    rng = np.random.default_rng(seed)
    for ret in (1.0, 2.0):
        state.add_episode(rng.normal(1, 0.5, (20, 3)), rng.normal(0.5, 0.2, (20, 2)), np.full(20, ret / 20))
    return state


def feed(state: GASILState, steps: int, seed: int) -> tuple[list[float], list[int]]:
    """Shaped rewards and the rounds in effect after each step, for seeded (s, a) rows."""
    rng = np.random.default_rng(seed)
    rewards, rounds = [], []
    for _ in range(steps):
        rewards.append(state.shaped_reward(rng.normal(size=3), rng.uniform(-1, 1, 2), 1.0)[0])
        rounds.append(state.rounds)
    return rewards, rounds


def test_background_round_takes_effect_exactly_apply_lag_steps_after_it_starts():
    inline, background = fed_state(lag=0), fed_state(lag=10)
    assert background.config.apply_lag == 10
    r0, rounds0 = feed(inline, 200, seed=1)
    r1, rounds1 = feed(background, 200, seed=1)
    # rounds start at policy steps 32, 64, ...: inline they count from that step, in the background 10 later
    assert [rounds0[t - 1] for t in (31, 32, 63, 64)] == [0, 1, 1, 2]
    assert [rounds1[t - 1] for t in (41, 42, 73, 74)] == [0, 1, 1, 2]
    # the same D is trained (same minibatches): once both have applied a round they score bitwise alike
    for t in range(200):
        step = t + 1  # the reward of step t+1 uses the rounds in effect after step t
        if step <= 32 or any(32 * k < step <= 32 * k + 10 for k in range(1, 7)):
            continue
        assert r0[t] == r1[t], step
    for k in range(1, 7):  # ... and in the lag window the background state still scores with the old D
        assert r0[32 * k + 1] != r1[32 * k + 1]
    trained = background.state_dict()["discriminator"]["net"]  # waits for the round still training
    for name, p in inline.discriminator.net.state_dict().items():
        assert torch.equal(p, trained[name]), name


def test_checkpoint_while_a_round_trains_resumes_bitwise():
    straight = fed_state(lag=10)
    feed(straight, 70, seed=1)  # a round started at step 64 and takes effect at 74
    assert straight._pending is not None and straight.rounds == 1
    saved = io.BytesIO()
    torch.save(straight.state_dict(), saved)
    resumed = fed_state(lag=10, seed=99)  # other buffer and weights: all of it must come from the state
    resumed.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=False))
    a, rounds_a = feed(straight, 150, seed=2)
    b, rounds_b = feed(resumed, 150, seed=2)
    assert a == b and rounds_a == rounds_b and rounds_a[3] == 2  # applied after step 74 in both
    assert straight.diagnostics() == resumed.diagnostics()


def test_error_in_a_background_round_surfaces_at_its_apply_step(monkeypatch):
    state = fed_state(lag=10)
    feed(state, 31, seed=1)

    def diverge(batches):
        raise FloatingPointError("Discriminator: non-finite training loss nan")

    monkeypatch.setattr(state._ensure_discriminator(), "fit", diverge)
    feed(state, 10, seed=2)  # the round starts at step 32; its error waits for step 42
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        feed(state, 1, seed=3)
    assert state.rounds == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_mid_round_refuses_to_apply_it():
    state = fed_state(lag=10)
    feed(state, 35, seed=1)  # the first round started at step 32 and is pending
    assert state._pending is not None
    # the child: applying the parent's round must fail with a clear error
    message = error_in_fork(lambda: feed(state, 10, seed=2))
    assert message.startswith("RuntimeError") and "forked while a discriminator round trained" in message
    feed(state, 10, seed=2)  # the parent applies it as usual
    assert state.rounds == 1


@settings(max_examples=25, deadline=None)
@given(lag=st.sampled_from([0, 5, 40]),
       chunks=st.lists(st.integers(1, 70), min_size=1, max_size=12))
def test_record_samples_in_any_chunks_equals_one_row_at_a_time(lag, chunks):
    """record_samples writes the rows before the next round event at once; the ring, counters, rounds
    and D must be those of recording the same rows one by one, however the rows are chunked."""
    rows = np.random.default_rng(3).normal(size=(sum(chunks), 5))
    one, chunked = fed_state(lag), fed_state(lag)
    for row in rows:
        one.record_samples(row[None])
    at = 0
    for size in chunks:
        chunked.record_samples(rows[at: at + size])
        at += size
    for state in (one, chunked):
        state.state_dict()  # waits for a round still training
    def counters(s):
        return s.policy_steps, s.rounds, s._cursor, s._n_recent, s._since_round

    assert counters(chunked) == counters(one)
    np.testing.assert_array_equal(chunked._recent[: one._n_recent], one._recent[: one._n_recent])
    if one.rounds:
        a, b = one.state_dict()["discriminator"]["net"], chunked.state_dict()["discriminator"]["net"]
        assert all(torch.equal(a[k], b[k]) for k in a)
