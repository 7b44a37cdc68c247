"""Who feeds a GASIL owner: vector envs share one, nothing made later or elsewhere joins a running one,
subprocess workers never build their own, and every episode is accounted for (issue 12, items 1-3).

The regression tests of the issue's three cases use only what the library had before (gym.make, find_state,
SB3, gymnasium's vector envs), so they fail on the old code for the reason the issue gives.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest

from gasil_wrappers import GASILConfig, find_state, wrap_stack
from tests.conftest import ScriptedEnv, error_in_fork, mujoco_id

HOPPER = "gasil_wrappers:GASIL-Delayed" + mujoco_id("Hopper")
POINT = "gasil_wrappers:GASIL-PointMass-v0"  # no MuJoCo: quick to import in a spawned worker
START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


def run(env, steps, seed=0):
    """Step ``env`` with seeded random actions, resetting at episode ends."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()


def ours(record) -> list[str]:
    return [str(w.message) for w in record if "GASIL" in str(w.message)]


# --- case 1: an env made later never feeds a running owner -------------------------------------------

def test_regression_eval_env_made_later_does_not_join_the_training_owner():
    train = gym.make(HOPPER)
    run(train, 30)
    owner = find_state(train)
    steps = owner.policy_steps
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ev = gym.make(HOPPER)
    run(ev, 50, seed=1)
    assert owner.policy_steps == steps  # the eval env moved neither the counter nor the buffer
    assert find_state(ev) is not owner
    assert any("fresh owner" in message for message in ours(record))  # and the user is told


def test_regression_spec_make_and_deepcopy_do_not_join_a_running_owner():
    train = gym.make(HOPPER, group="spec-copy")
    run(train, 30)
    owner = find_state(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        remade = train.spec.make()
    copied = copy.deepcopy(train)
    run(remade, 40, seed=1)
    run(copied, 40, seed=2)
    assert find_state(remade) is not owner and find_state(copied) is not owner
    assert owner.policy_steps == 30


def test_regression_rerun_notebook_cell_starts_a_fresh_owner():
    def cell():
        envs = gym.vector.SyncVectorEnv([lambda: gym.make(HOPPER) for _ in range(2)])
        envs.reset(seed=0)
        # zero actions: Hopper stands for 10 steps (random ones can fell it, and the step after is then
        # an autoreset, not a policy step: CI saw 19)
        for _ in range(10):
            envs.step(np.zeros(envs.action_space.shape))
        return envs

    first = cell()
    second = cell()
    assert find_state(second.envs[0]) is not find_state(first.envs[0])
    assert find_state(second.envs[0]).policy_steps == 20  # nothing inherited from the first run


def test_cleanrl_style_vector_env_shares_one_owner_silently():
    """The unmodified CleanRL script: separate gym.make calls in thunks, called by SyncVectorEnv."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        envs = gym.vector.SyncVectorEnv([lambda: gym.make(HOPPER) for _ in range(4)])
        made = gym.make_vec(HOPPER, 3, vectorization_mode="sync") if hasattr(gym, "make_vec") else None
    assert not ours(record)
    assert len({id(find_state(e)) for e in envs.envs}) == 1
    owner = find_state(envs.envs[0])
    assert owner.num_envs == 4 and owner.diagnostics()["envs"] == 4
    if made is not None:
        assert len({id(find_state(e)) for e in made.envs}) == 1 and find_state(made.envs[0]) is not owner


def test_separately_made_envs_share_by_group_and_warn_without_one(group):
    a, b = gym.make(HOPPER, group=group), gym.make(HOPPER, group=group)
    assert find_state(a) is find_state(b)  # a named group: on purpose, no warning
    first = gym.make(HOPPER, alpha=0.123)  # the default group (settings no other test uses)
    with pytest.warns(RuntimeWarning, match="shares the GASIL owner"):
        second = gym.make(HOPPER, alpha=0.123)
    assert find_state(first) is find_state(second)


def test_passing_state_joins_a_running_owner_on_purpose(group):
    config = GASILConfig(gasil=True, group=group)
    train = wrap_stack(ScriptedEnv(), config)
    run(train, 10)
    extra = wrap_stack(ScriptedEnv(), config, state=find_state(train))
    run(extra, 5)
    assert find_state(extra) is find_state(train) and find_state(train).policy_steps == 15


def test_make_eval_env_builds_the_task_without_gasil():
    from gasil_wrappers import make_eval_env

    for env in (make_eval_env(HOPPER), make_eval_env(gym.make(HOPPER, delay=7, max_episode_steps=30)),
                make_eval_env("Pendulum-v1", GASILConfig(gasil=True, delay=5, obs_noise_std=0.1))):
        assert find_state(env) is None
        env.reset(seed=0)
        total, info, done = 0.0, {}, False
        while not done:
            _, r, terminated, truncated, info = env.step(env.action_space.sample())
            total, done = total + r, terminated or truncated
        assert total == pytest.approx(info["gasil"]["episode_return"])  # the delayed rewards sum to it
    assert make_eval_env(gym.make(HOPPER, delay=7, max_episode_steps=30)).get_wrapper_attr("delay") == 7
    assert make_eval_env(gym.make(HOPPER, delay=7, max_episode_steps=30)).spec.max_episode_steps == 30


def test_sb3_dummy_vec_env_shares_and_eval_callback_leaves_training_untouched():
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env

    from gasil_wrappers import make_eval_env

    train = make_vec_env(POINT, n_envs=2, seed=0)
    owner = find_state(train.envs[0])
    assert find_state(train.envs[1]) is owner
    eval_env = make_vec_env(lambda: make_eval_env(POINT), n_envs=1, seed=1)
    assert find_state(eval_env.envs[0]) is None
    model = sb3.PPO("MlpPolicy", train, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    callback = EvalCallback(eval_env, eval_freq=32, n_eval_episodes=1, verbose=0)
    model.learn(256, callback=callback)
    assert np.isfinite(callback.last_mean_reward)  # it evaluated ...
    assert owner.policy_steps == model.num_timesteps  # ... and only the training steps fed the owner


# --- case 2: every episode is accounted for -----------------------------------------------------------

def test_regression_max_episode_steps_truncates_inside_the_stack():
    env = gym.make(HOPPER, max_episode_steps=5, group="limit-5")
    env.reset(seed=0)
    rewards = []
    for _ in range(5):
        _, r, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        rewards.append(r)
    assert truncated and not terminated
    assert rewards[:4] == [0.0] * 4 and rewards[4] == pytest.approx(info["gasil"]["episode_return"])
    assert info["gasil"]["episode_length"] == 5
    assert len(find_state(env).buffer) == 1  # the truncated episode is in the buffer


def test_max_episode_steps_longer_than_the_base_limit_is_honoured():
    env = gym.make("gasil_wrappers:Delayed" + mujoco_id("Hopper"), max_episode_steps=3)
    assert env.spec.max_episode_steps == 3
    assert gym.make(HOPPER).spec.max_episode_steps == gym.spec(mujoco_id("Hopper")).max_episode_steps


def test_a_reset_mid_episode_is_recorded_counted_and_reported(monkeypatch, group):
    import gasil_wrappers.delayed_reward as delayed_reward

    monkeypatch.setattr(delayed_reward, "_cut_warned", False)
    env = wrap_stack(ScriptedEnv(rewards=(1.0,) * 50), GASILConfig(gasil=True, delay=20, group=group))
    env.reset(seed=0)
    for _ in range(25):
        env.step(np.zeros(2, np.float32))
    with pytest.warns(RuntimeWarning, match="had not ended"):
        _, info = env.reset()
    assert info["gasil"]["cut_episode_length"] == 25 and info["gasil"]["cut_episode_return"] == 25.0
    assert info["gasil"]["cut_unpaid_reward"] == 5.0
    state = find_state(env)
    assert state.diagnostics()["cut_episodes"] == 1
    assert state.buffer.episodes[0].rewards.sum() == 25.0  # recorded as truncated, its unpaid reward included
    for _ in range(3):
        env.step(np.zeros(2, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        env.reset()
    assert state.cut_episodes == 2 and env.get_wrapper_attr("cut_episodes") == 2


def test_a_time_limit_outside_the_stack_is_counted():
    env = gym.wrappers.TimeLimit(gym.make(HOPPER, group="outer-limit"), 4)
    run(env, 8)
    assert find_state(env).cut_episodes >= 1
    assert len(find_state(env).buffer) == find_state(env).cut_episodes


# --- case 3: a subprocess worker never silently trains its own D --------------------------------------

@pytest.mark.parametrize("method", START_METHODS)
def test_regression_gymnasium_async_vector_env_refuses_an_in_process_owner(method):
    thunks = [lambda: gym.make(POINT) for _ in range(2)]
    with pytest.raises(RuntimeError, match="worker"):
        envs = gym.vector.AsyncVectorEnv(thunks, context=method)
        envs.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_regression_sb3_subproc_vec_env_refuses_an_in_process_owner(method, capfd):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    with pytest.raises((EOFError, ConnectionError, BrokenPipeError)):  # the workers die at construction
        envs = make_vec_env(POINT, n_envs=2, vec_env_cls=SubprocVecEnv,
                            vec_env_kwargs={"start_method": method})
        envs.close()
    err = capfd.readouterr().err
    assert "GASILOwnershipError" in err and "GASILVecEnvWrapper" in err  # the fix, in the worker's traceback


def _build_in_child(env_id, kwargs, queue):
    try:
        env = gym.make(env_id, **kwargs)
        run(env, 3)
        queue.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        queue.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("method", START_METHODS)
def test_an_in_process_owner_in_a_multiprocessing_child_raises_unless_allowed(method):
    ctx = multiprocessing.get_context(method)
    results = []
    for kwargs in ({}, {"allow_subprocess_owner": True}):
        queue = ctx.Queue()
        child = ctx.Process(target=_build_in_child, args=(POINT, kwargs, queue))
        child.start()
        results.append(queue.get(timeout=120))
        child.join(30)
    assert results[0].startswith("GASILOwnershipError") and "make_vec_stack" in results[0]
    assert results[1] == "ok"  # the opt-out: a whole independent run in a child


def _wrap_in_child(state, queue):
    from gasil_wrappers import TopKEpisodeRecorder

    try:
        TopKEpisodeRecorder(gym.make("Pendulum-v1"), state)
        queue.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        queue.put(f"{type(e).__name__}: {e}")


def test_a_state_pickled_into_another_process_raises():
    from gasil_wrappers import GASILState

    state = GASILState(GASILConfig(top_k=True))
    wrap_stack(ScriptedEnv(), GASILConfig(top_k=True), state=state)  # attached, as a thunk would capture it
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_wrap_in_child, args=(state, queue))
    child.start()
    message = queue.get(timeout=120)
    child.join(30)
    assert message.startswith("GASILOwnershipError") and "was built in process" in message


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_state_used_in_a_forked_process_raises_at_reset():
    env = gym.make(POINT, group="forked")
    run(env, 3)
    message = error_in_fork(env.reset)
    assert message.startswith("GASILOwnershipError") and "was built in process" in message
