"""Tests of the GASIL 2D point-mass task (:class:`gasil_wrappers.envs.point_mass.PointMassEnv`).

Expected rewards are computed by hand from the layout in the class docstring: with the defaults
(``max_speed=0.1``, ``action_cost=0.1``, ``collect_radius=0.1``) the action ``(0, 1)`` moves the agent
0.1 up and costs exactly 0.1.
"""

from __future__ import annotations

import doctest
import math
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from gasil_wrappers.envs import PointMassEnv
from gasil_wrappers.envs import point_mass as point_mass_module

UP = np.array([0.0, 1.0], dtype=np.float32)
DOWN = np.array([0.0, -1.0], dtype=np.float32)
STOP = np.zeros(2, dtype=np.float32)
NOMINAL = {"start": PointMassEnv.START}
B0, B1, G2, G3, O4, O5, O6, O7 = range(8)

# Waypoints of the documented routes from the nominal start (0, -0.8); visiting points lie within 0.1
# of the object they collect, detour points keep more than 0.1 away from every orange.
# B0 -> B1 -> G3 -> below the right and left shields -> G2
BEST_ROUTE = [
    (-0.261, -0.388),
    (0.285, -0.278),
    (0.546, 0.539),
    (0.384, 0.417),
    (-0.39, 0.416),
    (-0.532, 0.551),
]
# B0 -> B1 -> G3 -> above the shields -> G2
TOP_ROUTE = [
    (-0.261, -0.388),
    (0.283, -0.28),
    (0.503, 0.614),
    (0.419, 0.826),
    (-0.393, 0.823),
    (-0.531, 0.688),
]
TWO_GREENS_ROUTE = [(-0.544, 0.541), (-0.385, 0.417), (0.389, 0.417), (0.536, 0.548)]
BLUE_GREEN_ROUTE = [(-0.261, -0.31), (-0.567, 0.529)]


def follow(env: PointMassEnv, waypoints, *, seed=None, options=None):
    """Scripted policy: full speed along the waypoints, then zero actions until the episode ends.

    A waypoint is an ``(x, y)`` point or an object index; an object waypoint is dropped as soon as the
    object is collected. Returns the undiscounted return and the last info.
    """
    env.reset(seed=seed, options=options)
    total, todo, truncated = 0.0, list(waypoints), False
    while not truncated:
        action = STOP
        while todo:
            w = todo[0]
            if isinstance(w, int) and not env.present[w]:
                todo.pop(0)
                continue
            target = env.OBJECT_POSITIONS[w] if isinstance(w, int) else np.asarray(w)
            delta = target - env.agent_position
            dist = float(np.hypot(*delta))
            if dist < 1e-12:
                todo.pop(0)
                continue
            action = delta / dist * min(1.0, dist / env.max_speed)
            break
        _, reward, terminated, truncated, info = env.step(action)
        assert not terminated
        total += reward
    return total, info


def path_length(start, waypoints) -> float:
    pts = [tuple(start), *waypoints]
    return sum(math.dist(pts[i], pts[i + 1]) for i in range(len(pts) - 1))


def nearest_green(start) -> int:
    return min((G2, G3), key=lambda i: math.dist(start, PointMassEnv.OBJECT_POSITIONS[i]))


@pytest.fixture
def env():
    e = PointMassEnv()
    yield e
    e.close()


# ---------------------------------------------------------------------------------------------------
# collection and reward accounting


def test_blue_gives_5_minus_cost_once(env):
    obs, _ = env.reset(options={"start": (-0.35, -0.5)})
    assert obs[5 + 3 * B0] == 1.0
    obs, reward, _, _, info = env.step(UP)  # to (-0.35, -0.4): 0.05 from B0
    assert reward == pytest.approx(5.0 - 0.1, abs=1e-12)
    assert info["object_reward"] == 5.0 and info["actuation_cost"] == pytest.approx(0.1, abs=1e-12)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (1, 0, 0)
    assert obs[5 + 3 * B0] == 0.0 and not env.present[B0]
    assert env.present.sum() == 7
    # passing over the spot again gives nothing but the cost
    for action in (DOWN, UP, DOWN):
        _, reward, *_ = env.step(action)
        assert reward == pytest.approx(-0.1, abs=1e-12)
    assert info["n_blue"] == 1


def test_green_gives_10_minus_cost_once(env):
    env.reset(options={"start": (-0.6, 0.45)})
    _, reward, _, _, info = env.step(UP)  # to (-0.6, 0.55): 0.07 from G2, 0.25 from O5
    assert reward == pytest.approx(10.0 - 0.1, abs=1e-12)
    assert info["n_green"] == 1 and info["n_orange"] == 0
    _, reward, *_ = env.step(DOWN)
    _, reward2, *_ = env.step(UP)
    assert reward == reward2 == pytest.approx(-0.1, abs=1e-12)


def test_orange_gives_minus_5_minus_cost_at_the_radius(env):
    env.reset(options={"start": (-0.35, 0.3)})
    _, reward, *_ = env.step(UP)  # to (-0.35, 0.4): 0.12 from O5, outside the radius
    assert reward == pytest.approx(-0.1, abs=1e-12)
    _, reward, _, _, info = env.step(UP)  # to (-0.35, 0.5): 0.02 from O5, 0.22 from O4
    assert reward == pytest.approx(-5.0 - 0.1, abs=1e-12)
    assert info["n_orange"] == 1 and not env.present[O5] and env.present[O4]
    _, reward, _, _, info = env.step(UP)  # to (-0.35, 0.6): 0.12 from O4
    assert reward == pytest.approx(-0.1, abs=1e-12)
    _, reward, _, _, info = env.step(UP)  # to (-0.35, 0.7): 0.02 from O4
    assert reward == pytest.approx(-5.1, abs=1e-12)
    assert info["n_orange"] == 2


def test_swept_segment_collects_what_a_fast_step_jumps_over():
    env = PointMassEnv(max_speed=0.5)
    env.reset(options={"start": (-0.35, -0.65)})
    # (-0.35, -0.65) -> (-0.35, -0.15): both ends 0.3 and 0.2 from B0, the segment crosses it
    _, reward, *_ = env.step(UP)
    assert reward == pytest.approx(5.0 - 0.1, abs=1e-12)
    env.reset(options={"start": (-0.35, 0.3)})
    # (-0.35, 0.3) -> (-0.35, 0.8): through both oranges of the left shield in one step
    _, reward, _, _, info = env.step(UP)
    assert reward == pytest.approx(-10.0 - 0.1, abs=1e-12)
    assert info["n_orange"] == 2


def test_actuation_cost_and_move_touching_nothing(env):
    obs0, _ = env.reset(options=NOMINAL)
    np.testing.assert_array_equal(obs0[:3], np.float32([0.0, -0.8, 0.0]))
    obs, reward, _, _, info = env.step(np.array([0.3, -0.4], dtype=np.float32))  # ||a|| = 0.5
    assert reward == pytest.approx(-0.05, abs=1e-7)
    assert info["object_reward"] == 0.0
    np.testing.assert_allclose(env.agent_position, [0.03, -0.84], atol=1e-7)
    np.testing.assert_allclose(obs[:3], [0.03, -0.84, 0.01], atol=1e-6)
    # relative positions follow the agent; all objects still there
    np.testing.assert_allclose(obs[3::3], PointMassEnv.OBJECT_POSITIONS[:, 0] - 0.03, atol=1e-6)
    np.testing.assert_allclose(obs[4::3], PointMassEnv.OBJECT_POSITIONS[:, 1] + 0.84, atol=1e-6)
    np.testing.assert_array_equal(obs[5::3], np.ones(8, dtype=np.float32))
    _, reward, *_ = env.step(STOP)
    assert reward == 0.0


@pytest.mark.parametrize("action_cost", [0.0, 0.1, 0.37])
def test_actuation_cost_coefficient_is_used(action_cost):
    env = PointMassEnv(action_cost=action_cost)
    env.reset(options=NOMINAL)
    _, reward, *_ = env.step(np.array([1.0, 1.0]))
    assert reward == pytest.approx(-action_cost * math.sqrt(2.0), abs=1e-12)


def test_out_of_box_actions_are_clipped(env):
    env.reset(options=NOMINAL)
    _, reward, *_ = env.step(np.array([3.0, -4.0]))  # clipped to (1, -1)
    assert reward == pytest.approx(-0.1 * math.sqrt(2.0), abs=1e-12)
    np.testing.assert_allclose(env.agent_position, [0.1, -0.9], atol=1e-12)
    _, reward, *_ = env.step([-100.0, 0.5])  # lists are fine; clipped to (-1, 0.5)
    assert reward == pytest.approx(-0.1 * math.hypot(1.0, 0.5), abs=1e-12)
    np.testing.assert_allclose(env.agent_position, [0.0, -0.85], atol=1e-12)


def test_agent_stays_in_the_arena_and_still_pays(env):
    env.reset(options={"start": (0.95, -0.95)})
    obs, reward, *_ = env.step(np.array([1.0, -1.0]))
    np.testing.assert_array_equal(env.agent_position, [1.0, -1.0])
    assert reward == pytest.approx(-0.1 * math.sqrt(2.0), abs=1e-12)
    obs, reward, *_ = env.step(np.array([1.0, -1.0]))  # pushing against the corner
    np.testing.assert_array_equal(env.agent_position, [1.0, -1.0])
    assert reward == pytest.approx(-0.1 * math.sqrt(2.0), abs=1e-12)
    assert env.observation_space.contains(obs)


# ---------------------------------------------------------------------------------------------------
# episode length, seeding


@pytest.mark.parametrize("max_steps", [1, 5, 100])
def test_truncates_exactly_at_max_steps(max_steps):
    env = PointMassEnv(max_steps=max_steps)
    env.reset(seed=3)
    for t in range(1, max_steps + 1):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert terminated is False
        assert truncated is (t == max_steps)
        assert obs[2] == pytest.approx(t / max_steps)
    with pytest.raises(RuntimeError, match="PointMassEnv"):
        env.step(STOP)
    env.reset()
    _, _, _, truncated, _ = env.step(STOP)
    assert truncated is (max_steps == 1)


def test_default_episode_is_100_steps(env):
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, _, truncated, _ = env.step(UP)
        steps += 1
    assert steps == 100


def test_same_seed_same_start_and_observations():
    a, b = PointMassEnv(), PointMassEnv()
    obs_a, _ = a.reset(seed=42)
    obs_b, _ = b.reset(seed=42)
    np.testing.assert_array_equal(obs_a, obs_b)
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = rng.uniform(-1.2, 1.2, size=2)
        out_a, out_b = a.step(action), b.step(action)
        np.testing.assert_array_equal(out_a[0], out_b[0])
        assert out_a[1:4] == out_b[1:4]
    # re-seeding the same env gives the same start again
    np.testing.assert_array_equal(a.reset(seed=42)[0], obs_a)


def test_different_seeds_differ_and_stay_in_the_start_box(env):
    starts = np.array([env.reset(seed=s)[0][:2] for s in range(20)])
    assert len({tuple(s) for s in starts}) == 20
    lo = np.float32(PointMassEnv.START) - np.float32(PointMassEnv.START_NOISE)
    hi = np.float32(PointMassEnv.START) + np.float32(PointMassEnv.START_NOISE)
    assert np.all(starts >= lo) and np.all(starts <= hi)
    # both sides occur, so which green is nearest depends on the seed
    assert (starts[:, 0] < 0).any() and (starts[:, 0] > 0).any()


def test_reset_restores_all_objects(env):
    env.reset(options={"start": (-0.35, -0.5)})
    env.step(UP)
    assert not env.present[B0]
    obs, info = env.reset(seed=1)
    assert env.present.all() and np.all(obs[5::3] == 1.0)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (0, 0, 0)


# ---------------------------------------------------------------------------------------------------
# gymnasium API, rendering


def _check_without_warnings(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=False)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_check_env_passes(render_mode):
    env = PointMassEnv(render_mode=render_mode)
    # a spec lets check_env also build the env in every declared render mode (no registration needed)
    env.spec = EnvSpec("PointMassTest-v0", entry_point=PointMassEnv)
    assert _check_without_warnings(env) == []


def test_check_env_passes_on_bare_instance():
    messages = _check_without_warnings(PointMassEnv())
    assert all("spec" in m for m in messages), messages


def test_render_shape_trail_and_disappearing_objects():
    env = PointMassEnv(render_mode="rgb_array", render_size=128)
    env.reset(options={"start": (-0.35, -0.6)})
    frame0 = env.render()
    assert frame0.shape == (128, 128, 3) and frame0.dtype == np.uint8
    blue = np.all(frame0 == PointMassEnv.KIND_COLORS["blue"], axis=-1).sum()
    trail_color = np.array([110, 110, 110], dtype=np.uint8)
    assert not np.all(frame0 == trail_color, axis=-1).any()
    env.step(np.array([1.0, 0.0]))
    frame1 = env.render()
    assert not np.array_equal(frame0, frame1)
    assert np.all(frame1 == trail_color, axis=-1).sum() > 0
    env.reset(options={"start": (-0.35, -0.6)})
    env.step(UP)
    env.step(UP)  # collects B0
    frame2 = env.render()
    blue_left = np.all(frame2 == PointMassEnv.KIND_COLORS["blue"], axis=-1).sum()
    assert blue_left == pytest.approx(blue / 2, rel=0.1)
    # a reset clears the trail
    env.reset(options={"start": (-0.35, -0.6)})
    np.testing.assert_array_equal(env.render(), frame0)


def test_render_without_mode_returns_none(env):
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


def test_pickles_with_constructor_args():
    env = PointMassEnv(max_steps=7, action_cost=0.2, render_mode="rgb_array")
    clone = pickle.loads(pickle.dumps(env))
    assert (clone.max_steps, clone.action_cost, clone.render_mode) == (7, 0.2, "rgb_array")


def test_objects_helper_matches_layout_and_observation(env):
    objs = PointMassEnv.objects()
    assert [o.kind for o in objs] == list(PointMassEnv.OBJECT_KINDS)
    assert [o.kind for o in objs].count("orange") == 4
    assert [o.reward for o in objs] == [5.0, 5.0, 10.0, 10.0, -5.0, -5.0, -5.0, -5.0]
    np.testing.assert_array_equal([(o.x, o.y) for o in objs], PointMassEnv.OBJECT_POSITIONS)
    low, high = PointMassEnv.ARENA
    assert all(low < o.x < high and low < o.y < high for o in objs)
    obs, _ = env.reset(seed=5)
    np.testing.assert_allclose(obs[3::3] + obs[0], [o.x for o in objs], atol=1e-6)
    np.testing.assert_allclose(obs[4::3] + obs[1], [o.y for o in objs], atol=1e-6)
    assert not PointMassEnv.OBJECT_POSITIONS.flags.writeable


def test_docstring_example_runs():
    result = doctest.testmod(point_mass_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "action",
    [
        np.array([np.nan, 0.0]),
        np.array([0.0, np.inf]),
        np.array([-np.inf, 0.0], dtype=np.float32),
        np.zeros(3),
        np.zeros((1, 2)),
        0.5,
        "up",
        [1.0, None],
    ],
)
def test_bad_actions_raise_value_error(env, action):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="PointMassEnv"):
        env.step(action)


def test_step_before_reset_raises(env):
    with pytest.raises(RuntimeError, match=r"PointMassEnv.*before reset"):
        env.step(STOP)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_steps": 0},
        {"max_steps": 2.5},
        {"action_cost": -0.1},
        {"action_cost": float("nan")},
        {"max_speed": 0.0},
        {"collect_radius": float("inf")},
        {"render_mode": "human"},
    ],
)
def test_bad_constructor_args_raise(kwargs):
    with pytest.raises(ValueError, match="PointMassEnv"):
        PointMassEnv(**kwargs)


@pytest.mark.parametrize("start", [(2.0, 0.0), (0.0, -1.5), (1.0, 2.0, 3.0), "centre"])
def test_bad_start_option_raises(env, start):
    with pytest.raises(ValueError, match="PointMassEnv"):
        env.reset(options={"start": start})


# ---------------------------------------------------------------------------------------------------
# scripted policies: the documented reference returns


def test_best_route_matches_documented_return(env):
    ret, info = follow(env, BEST_ROUTE, options=NOMINAL)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (2, 2, 0)
    length = path_length(PointMassEnv.START, BEST_ROUTE)
    assert length == pytest.approx(3.075, abs=5e-4)
    assert ret == pytest.approx(30.0 - length, abs=1e-9)  # one unit of distance costs 1.0
    assert round(ret, 2) == 26.92


def test_other_documented_routes(env):
    ret, info = follow(env, TOP_ROUTE, options=NOMINAL)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (2, 2, 0)
    assert round(ret, 2) == 26.80
    ret, info = follow(env, TWO_GREENS_ROUTE, options=NOMINAL)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (0, 2, 0)
    assert round(ret, 2) == 17.38
    ret, info = follow(env, BLUE_GREEN_ROUTE, options=NOMINAL)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (1, 1, 0)
    assert round(ret, 2) == 13.55


def test_nearest_green_then_stop_matches_documented_return(env):
    # start (0, -0.8) to G2 (-0.6, 0.62): 1.5416 away; the k-th full step ends 1.5416 - 0.1 k from the
    # centre, inside the radius first for k = 15, so the return is 10 - 15 * 0.1 = 8.5.
    ret, info = follow(env, [G2], options=NOMINAL)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (0, 1, 0)
    assert ret == pytest.approx(8.5, abs=1e-9)


def test_greedy_continuation_through_oranges_is_worse_than_stopping(env):
    ret, info = follow(env, [G2, G3], options=NOMINAL)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (0, 2, 2)
    assert round(ret, 2) == 7.40
    assert ret < 8.5


@pytest.mark.parametrize("seed", range(8))
def test_two_greens_beat_one_green_from_seeded_starts(env, seed):
    env.reset(seed=seed)
    start = tuple(float(v) for v in env.agent_position)
    green = nearest_green(start)
    d = math.dist(start, PointMassEnv.OBJECT_POSITIONS[green])
    one, info = follow(env, [green], seed=seed)
    assert info["n_green"] == 1 and info["n_orange"] == 0
    # from starts offset towards the green's side the straight line also grazes that side's blue (+5)
    assert one == pytest.approx(10.0 + 5.0 * info["n_blue"] - 0.1 * math.ceil((d - 0.1) / 0.1), abs=1e-9)
    assert 8.3 <= one - 5.0 * info["n_blue"] <= 8.8
    best, info = follow(env, BEST_ROUTE, seed=seed)
    assert (info["n_blue"], info["n_green"], info["n_orange"]) == (2, 2, 0)
    assert best == pytest.approx(30.0 - path_length(start, BEST_ROUTE), abs=1e-9)
    assert best >= 26.75
    assert best - one > 13.0


# ---------------------------------------------------------------------------------------------------
# invariants under random action sequences


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    actions=st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=1, max_size=60),
)
def test_invariants_under_random_actions(seed, actions):
    env = PointMassEnv(max_steps=60)
    obs, _ = env.reset(seed=seed)
    present = env.present
    object_total = 0.0
    for action in actions:
        obs, reward, terminated, _, info = env.step(np.array(action))
        assert env.observation_space.contains(obs)
        assert not terminated
        clipped = np.clip(action, -1.0, 1.0)
        assert info["actuation_cost"] == pytest.approx(0.1 * math.hypot(*clipped), abs=1e-12)
        assert reward == pytest.approx(info["object_reward"] - info["actuation_cost"], abs=1e-12)
        now = env.present
        assert not np.any(now & ~present)  # objects never come back
        gone = present & ~now
        assert info["object_reward"] == pytest.approx(
            sum(o.reward for o, g in zip(env.objects(), gone, strict=True) if g)
        )
        present = now
        object_total += info["object_reward"]
        np.testing.assert_array_equal(obs[5::3], now.astype(np.float32))
    assert object_total == pytest.approx(5 * info["n_blue"] + 10 * info["n_green"] - 5 * info["n_orange"])


def test_works_in_a_vector_env():
    envs = gym.vector.SyncVectorEnv([lambda: PointMassEnv(max_steps=3) for _ in range(2)])
    obs, _ = envs.reset(seed=[0, 1])
    assert obs.shape == (2, 27) and obs.dtype == np.float32
    for _ in range(3):
        obs, _, terminated, truncated, _ = envs.step(np.zeros((2, 2), dtype=np.float32))
    assert truncated.all() and not terminated.any()
    envs.close()
