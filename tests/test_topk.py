import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasil_wrappers import (
    DelayedReward,
    GASILConfig,
    GASILState,
    GoodTrajectoryBuffer,
    ObservationNoise,
    TopKEpisodeRecorder,
    discounted_return,
)
from gasil_wrappers.topk import EpisodeTape
from tests.conftest import ScriptedEnv


def episode(length, ret):
    """An episode of ``length`` steps whose undiscounted return (gamma=1) is ``ret``."""
    rewards = np.zeros(length)
    rewards[-1] = ret
    return np.full((length, 2), ret), np.zeros((length, 1)), rewards


def expected_contents(episodes, capacity):
    ranked = sorted(episodes, key=lambda e: -e[1])
    kept, used = [], 0
    for length, ret in ranked:
        if kept and used + length > capacity:
            break
        kept.append(ret)
        used += length
    return kept


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(-1000, 1000)), min_size=1, max_size=25,
             unique_by=lambda e: e[1]),
    st.integers(1, 120),
    st.randoms(use_true_random=False),
)
def test_holds_exactly_the_best_episodes_that_fit_for_any_order(episodes, capacity, rnd):
    order = list(episodes)
    rnd.shuffle(order)
    buf = GoodTrajectoryBuffer(capacity, gamma=1.0)
    for length, ret in order:
        buf.add(*episode(length, float(ret)))
    assert list(buf.returns()) == expected_contents(episodes, capacity)
    offered_after = {ret: len(order) - 1 - i for i, (_, ret) in enumerate(order)}
    assert buf.ages().tolist() == [offered_after[int(r)] for r in buf.returns()]
    assert buf.num_steps == sum(len(e) for e in buf.episodes)
    assert buf.num_steps <= capacity or len(buf) == 1


def test_ranks_by_discounted_return():
    buf = GoodTrajectoryBuffer(capacity_steps=2, gamma=0.5)
    # Undiscounted both sum to 4, discounted: 4 + 0 = 4 versus 0 + 0.5*4 = 2.
    buf.add(np.zeros((2, 1)), np.zeros((2, 1)), [0.0, 4.0])
    buf.add(np.zeros((2, 1)), np.zeros((2, 1)), [4.0, 0.0])
    assert list(buf.returns()) == [4.0]
    assert discounted_return([1.0, 1.0, 1.0], 0.5) == 1.75


def test_arrays_are_copied_on_insert():
    obs, actions, rewards = episode(3, 1.0)
    buf = GoodTrajectoryBuffer(10)
    buf.add(obs, actions, rewards)
    obs[:] = -7.0
    actions[:] = -7.0
    rewards[:] = -7.0
    stored = buf.episodes[0]
    assert (stored.obs == 1.0).all() and (stored.actions == 0).all() and stored.rewards[-1] == 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite_returns_counts_and_warns_once(bad):
    buf = GoodTrajectoryBuffer(10, gamma=1.0)
    buf.add(*episode(2, 1.0))
    with pytest.warns(RuntimeWarning, match="non-finite return"):
        assert not buf.add(*episode(2, bad))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not buf.add(*episode(2, bad))
    assert buf.rejected == 2 and list(buf.returns()) == [1.0]
    assert buf.add(*episode(2, 5.0))  # still accepts good episodes afterwards
    assert list(buf.returns()) == [5.0, 1.0]


def test_overflowing_return_is_rejected():
    buf = GoodTrajectoryBuffer(10, gamma=1.0)
    with pytest.warns(RuntimeWarning):
        assert not buf.add(np.zeros((2, 1)), np.zeros((2, 1)), [1e308, 1e308])
    assert len(buf) == 0


def test_state_dict_roundtrip_keeps_contents_and_order():
    buf = GoodTrajectoryBuffer(10, gamma=1.0)
    for ret in (3.0, 1.0, 2.0):
        buf.add(*episode(3, ret))
    other = GoodTrajectoryBuffer(10, gamma=1.0)
    other.load_state_dict(buf.state_dict())
    assert list(other.returns()) == [3.0, 2.0, 1.0] and other.ages().tolist() == [2, 0, 1]
    buf.add(*episode(2, 2.0))
    other.add(*episode(2, 2.0))
    assert list(other.returns()) == list(buf.returns())


# --- the recorder -------------------------------------------------------------------------------------


def recorder(rewards, config=None, wrap=None, **env_kwargs):
    state = GASILState(config or GASILConfig(top_k=True, buffer_steps=1000, gamma=1.0))
    env = ScriptedEnv(rewards=rewards, **env_kwargs)
    if wrap is not None:
        env = wrap(env)
    return TopKEpisodeRecorder(env, state), state


def run_episode(env, seed=0, action=(0.5, -0.5)):
    env.reset(seed=seed)
    while True:
        _, _, terminated, truncated, _ = env.step(np.array(action, np.float32))
        if terminated or truncated:
            return


@pytest.mark.parametrize("truncate", [False, True])
def test_records_what_the_agent_saw_and_did(truncate):
    env, state = recorder([1.0, 2.0, 3.0], truncate=truncate, obs_offset=0.5)
    run_episode(env)
    (ep,) = state.buffer.episodes
    np.testing.assert_array_equal(ep.obs, [[0, 0.5], [1, 0.5], [2, 0.5]])  # pre-action observations
    np.testing.assert_array_equal(ep.actions, [[0.5, -0.5]] * 3)
    np.testing.assert_array_equal(ep.rewards, [1.0, 2.0, 3.0])
    assert ep.ret == 6.0


def test_ranks_by_the_delayed_reward_and_stores_noisy_observations():
    env, state = recorder(
        [1.0] * 5, wrap=lambda e: DelayedReward(ObservationNoise(e, std=0.1), delay=2), obs_offset=0.0
    )
    run_episode(env, seed=3)
    (ep,) = state.buffer.episodes
    np.testing.assert_array_equal(ep.rewards, [0, 2, 0, 2, 1])
    assert not np.allclose(ep.obs[:, 1], 0.0)  # noisy, as the policy saw them


def test_keeps_best_episodes_across_many():
    config = GASILConfig(top_k=True, buffer_steps=6, gamma=1.0)
    state = GASILState(config)
    for offset, scale in enumerate([1.0, 5.0, 3.0, 4.0]):
        env = TopKEpisodeRecorder(ScriptedEnv(rewards=[scale] * 3), state)
        run_episode(env, seed=offset)
    assert list(state.buffer.returns()) == [15.0, 12.0]


def test_long_episodes_grow_the_recording_arrays():
    env, state = recorder([1.0] * 3000)
    run_episode(env)
    assert len(state.buffer.episodes[0]) == 3000
    np.testing.assert_array_equal(state.buffer.episodes[0].obs[:, 0], np.arange(3000))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_reward_raises_and_nothing_reaches_the_buffer(bad):
    env, state = recorder([1.0, bad, 1.0])
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="TopKEpisodeRecorder.*non-finite reward"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.float32))
    assert len(state.buffer) == 0


@pytest.mark.parametrize(
    "action, message",
    [([np.nan, 0.0], "NaN or inf"), ([np.inf, 0.0], "NaN or inf"), ([0.0, 0.0, 0.0], "shape"),
     ([[0.0, 0.0]], "shape")],
)
def test_bad_actions_raise_naming_the_wrapper(action, message):
    env, state = recorder([1.0] * 3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=f"TopKEpisodeRecorder.*{message}"):
        env.step(np.array(action, np.float32))
    assert len(state.buffer) == 0


def test_huge_but_finite_action_is_accepted():
    env, _ = recorder([1.0] * 3)
    env.reset(seed=0)
    env.step(np.array([3e38, -3e38], np.float32))  # a·a overflows float32; the exact check lets it pass


def test_worse_short_episode_cannot_take_room_left_by_a_better_one():
    buf = GoodTrajectoryBuffer(8, gamma=1.0)
    for length, ret in [(7, 2.0), (2, 1.0), (1, 0.0)]:
        buf.add(*episode(length, ret))
    assert list(buf.returns()) == [2.0]  # the 1-step episode ranks below the evicted 2-step one


def test_check_env_on_the_recorder_alone():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    state = GASILState(GASILConfig(top_k=True, buffer_steps=500))
    env = TopKEpisodeRecorder(gym.make("Pendulum-v1"), state)
    unused = TopKEpisodeRecorder(gym.make("Pendulum-v1"), GASILState(GASILConfig(top_k=True)))
    assert unused.spec.make().state is unused.state  # not started yet: the rebuilt env shares it
    check_env(env, skip_render_check=True)
    with pytest.warns(RuntimeWarning, match="fresh owner"):
        remade = env.spec.make()
    assert remade.state is not state and remade.state.config == state.config  # it never feeds a running one


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["step", "begin", "end"]), st.integers(0, 2)), max_size=300))
def test_episode_tape_keeps_each_envs_episode_through_compaction_and_growth(ops):
    """A tape of 3 envs (capacity 4, so it compacts and grows) against plain per-env lists."""
    tape, ref, step = EpisodeTape(3, 1, 1, capacity=4), [None, None, None], 0
    for op, j in ops:
        if op == "begin":
            tape.begin(j)
            ref[j] = []
        elif op == "end":
            tape.end(j)
            ref[j] = None
        else:
            step += 1
            tape.append(np.array([[step, 10 + k] for k in range(3)], dtype=float), np.full(3, -step, float))
            for k in range(3):
                if ref[k] is not None:
                    ref[k].append(step)
        for k in range(3):
            obs, actions, rewards = tape.episode(k)
            steps = ref[k] or []
            assert obs[:, 0].tolist() == steps and actions[:, 0].tolist() == [10 + k] * len(steps)
            assert rewards.tolist() == [-s for s in steps] and tape.steps(k) == len(steps)
