"""Tests of gasil_wrappers/vector.py: GASILVectorReward against the per-env stack under SyncVectorEnv.

What "identical" means here (see docs/scale_out.md): same seeds and the same pre-drawn actions give
the same trajectories; the vector wrapper then records the same policy samples and episodes in the
same order, so the buffer, every training round and D's weights are bitwise those of the per-env
stack. Per-step rewards agree to float64 rounding: the batched forward (one BLAS matrix-matrix
product) and the per-env forward (matrix-vector products) may round the last bit differently.
"""

from __future__ import annotations

import functools
import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

from gasil_wrappers import GASILConfig, GASILState, GASILVectorReward, find_state, make_vec_stack, wrap_stack

pytestmark = pytest.mark.skipif(int(gym.__version__.split(".")[0]) < 1, reason="needs gymnasium >= 1.0")

N, STEPS = 4, 2500  # 4 sub-envs x 2500 vector steps = 10k env steps
CONFIG = GASILConfig(gasil=True, delay=5, obs_noise_std=0.01, d_every=500, d_updates=5, buffer_steps=300)
_groups = itertools.count()


def run(envs, steps: int = STEPS, seed: int = 7):
    """Step ``envs`` with pre-drawn actions; returns the rewards and the D-reward diagnostics per step."""
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, envs.num_envs, 3))
    envs.reset(seed=seed)
    rewards, d_rewards = np.zeros((steps, envs.num_envs)), np.zeros((steps, envs.num_envs))
    for t in range(steps):
        _, rewards[t], _, _, infos = envs.step(actions[t])
        diag = infos.get("gasil", {})
        if "discriminator_reward" in diag:
            d_rewards[t] = np.where(diag["_discriminator_reward"], diag["discriminator_reward"], 0.0)
        final = infos.get("final_info", {}).get("gasil", {})  # per-env stack, same-step autoreset
        if "discriminator_reward" in final:
            d_rewards[t] += np.where(final["_discriminator_reward"], final["discriminator_reward"], 0.0)
    return rewards, d_rewards


@functools.cache
def reference(mode: str):
    """The per-env stack under SyncVectorEnv: rewards, D rewards, and its GASILState."""
    config = CONFIG.replace(group=f"vector-ref-{next(_groups)}")
    envs = gym.vector.SyncVectorEnv([lambda: wrap_stack(gym.make("Hopper-v5"), config)] * N,
                                    autoreset_mode=mode)
    rewards, d_rewards = run(envs)
    state = find_state(envs.envs[0])
    envs.close()
    return rewards, d_rewards, state


def same_d(a: GASILState, b: GASILState) -> bool:
    sa, sb = a.state_dict()["discriminator"], b.state_dict()["discriminator"]  # waits for a pending round
    return all(torch.equal(sa["net"][k], sb["net"][k]) for k in sa["net"]) and all(
        torch.equal(sa["normalizer"][k], sb["normalizer"][k]) for k in ("mean", "var"))


@pytest.mark.parametrize("mode,vectorization",
                         [("NextStep", "sync"), ("NextStep", "async"), ("SameStep", "sync")])
def test_matches_the_per_env_stack_for_10k_steps(mode, vectorization):
    ref_rewards, ref_d, ref_state = reference(mode)
    envs = make_vec_stack("Hopper-v5", N, CONFIG, vectorization_mode=vectorization,
                          vector_kwargs={"autoreset_mode": mode})
    rewards, d_rewards = run(envs)
    state = envs.state
    envs.close()
    assert ref_state.rounds >= 15  # several D rounds happened during the 10k steps
    assert (state.rounds, state.policy_steps) == (ref_state.rounds, ref_state.policy_steps)
    assert same_d(state, ref_state)  # same samples, same episodes, same order: bitwise the same D
    assert [e.ret for e in state.buffer.episodes] == [e.ret for e in ref_state.buffer.episodes]
    # Shaped rewards: equal to float64 rounding of the batched forward, and exactly equal before D trains.
    np.testing.assert_allclose(rewards, ref_rewards, rtol=0, atol=1e-12)
    np.testing.assert_allclose(d_rewards, ref_d, rtol=0, atol=1e-12)
    untrained = ref_d.sum(axis=1) == 0
    assert untrained.any() and np.array_equal(rewards[untrained], ref_rewards[untrained])


class ShortEnv(gym.Env):
    """Observation [t, j]; episodes of ``length`` steps; reward t+1; 2-D actions."""

    def __init__(self, j: int, length: int):
        self.j, self.length, self.t = j, length, 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, self.j]), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, self.j], dtype=np.float64), float(self.t), self.t >= self.length, False, {}


def short_envs(mode: str, lengths=(3, 5)):
    return gym.vector.SyncVectorEnv([functools.partial(ShortEnv, j, n) for j, n in enumerate(lengths)],
                                    autoreset_mode=mode)


def test_next_step_autoreset_step_is_neither_recorded_nor_shaped():
    state = GASILState(GASILConfig(gasil=True, d_every=10_000, buffer_steps=100, gamma=1.0, seed=0))
    envs = GASILVectorReward(short_envs("NextStep"), state)
    envs.reset(seed=0)
    stepped_by_env = [0, 0]
    for t in range(12):
        actions = np.full((2, 2), 0.01 * t, dtype=np.float32)
        _, rewards, _, _, infos = envs.step(actions)
        mask = infos["gasil"]["_shaped_reward"]
        for j in range(2):
            if mask[j]:
                stepped_by_env[j] += 1
            else:  # the reset step: reward 0, nothing recorded
                assert rewards[j] == 0.0
    # env 0: 3 steps + 1 reset step per episode -> 12 vector steps = 3 episodes, 9 policy steps
    # env 1: 5 steps + 1 reset step per episode -> 12 vector steps = 2 episodes, 10 policy steps
    assert stepped_by_env == [9, 10] and state.policy_steps == 19
    assert sorted(len(e) for e in state.buffer.episodes) == [3, 3, 3, 5, 5]
    episode = next(e for e in state.buffer.episodes if len(e) == 5)
    assert episode.obs[:, 0].tolist() == [0, 1, 2, 3, 4]  # the observations acted on, reset obs first
    assert episode.obs[:, 1].tolist() == [1] * 5 and episode.rewards.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(state._recent[:2, :2], [[0, 0], [0, 1]])  # first vector step, env order


def test_same_step_autoreset_records_every_step():
    state = GASILState(GASILConfig(gasil=True, d_every=10_000, buffer_steps=100, gamma=1.0, seed=0))
    envs = GASILVectorReward(short_envs("SameStep"), state)
    envs.reset(seed=0)
    for _ in range(12):
        _, _, _, _, infos = envs.step(np.zeros((2, 2), dtype=np.float32))
        assert infos["gasil"]["_shaped_reward"].all()
    assert state.policy_steps == 24
    assert sorted(len(e) for e in state.buffer.episodes) == [3, 3, 3, 3, 5, 5]
    assert all(e.obs[0, 0] == 0 for e in state.buffer.episodes)  # each starts from the reset obs


def test_one_batched_forward_per_vector_step(monkeypatch):
    state = GASILState(GASILConfig(gasil=True, d_every=16, d_updates=2, buffer_steps=50, seed=0))
    envs = GASILVectorReward(short_envs("SameStep", lengths=(4, 4, 4)), state)
    envs.reset(seed=0)
    for _ in range(10):  # D trains
        envs.step(np.zeros((3, 2), dtype=np.float32))
    assert state.ready
    calls = []
    forward = state.discriminator.reward
    monkeypatch.setattr(state.discriminator, "reward", lambda x: calls.append(x.shape) or forward(x))
    rounds = []
    for _ in range(20):
        before = state.rounds
        envs.step(np.zeros((3, 2), dtype=np.float32))
        rounds.append(state.rounds - before)
        forwards, calls[:] = list(calls), []
        # one forward of all sub-envs; a round after sub-env j adds one for the sub-envs after j
        assert forwards[0] == (3, 4) and len(forwards) <= 1 + rounds[-1]
    assert sum(rounds) >= 3


def test_top_k_only_records_and_leaves_rewards_alone():
    state = GASILState(GASILConfig(top_k=True, buffer_steps=100, seed=0))
    envs = GASILVectorReward(short_envs("NextStep"), state)
    envs.reset(seed=0)
    for _ in range(8):
        _, rewards, _, _, infos = envs.step(np.zeros((2, 2), dtype=np.float32))
        assert "shaped_reward" not in infos.get("gasil", {})
    assert len(state.buffer) == 3 and state.policy_steps == 0


def test_bad_inputs_are_rejected():
    with pytest.raises(TypeError, match="in-process GASILState"):
        GASILVectorReward(short_envs("NextStep"), object())
    with pytest.raises(ValueError, match="already contains a per-env GASIL stack"):
        make_vec_stack("gasil_wrappers:GASIL-PointMass-v0", 2, CONFIG)
    state = GASILState(GASILConfig(gasil=True, seed=0))
    envs = GASILVectorReward(short_envs("NextStep"), state)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        envs.step(np.array([[0.0, np.nan], [0.0, 0.0]], dtype=np.float32))


def test_a_bad_action_is_refused_before_the_sub_envs_step():
    envs = GASILVectorReward(short_envs("NextStep"), GASILState(GASILConfig(gasil=True, seed=0)))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="sub-env 1 contains NaN or inf"):
        envs.step(np.array([[0.0, 0.0], [np.inf, 0.0]], dtype=np.float32))
    assert [env.t for env in envs.env.envs] == [0, 0] and envs.state.policy_steps == 0
    envs.step(np.zeros((2, 2), dtype=np.float32))  # the vector env is still usable
    assert [env.t for env in envs.env.envs] == [1, 1] and envs.state.policy_steps == 2


# --- checkpoints --------------------------------------------------------------------------------------------
def pendulum_vec(mode: str, scale: str = "raw", vectorization: str = "sync", n: int = 3, **config):
    """make_vec_stack on 40-step Pendulum episodes, delay 7, a D that trains within the first 100 steps."""
    config = GASILConfig(gasil=True, delay=7, d_every=64, d_apply_lag=0, buffer_steps=200, seed=0,
                         env_reward_scale=scale, group=f"vector-ckpt-{next(_groups)}", **config)
    return make_vec_stack("Pendulum-v1", n, config, vectorization_mode=vectorization,
                          vector_kwargs={"autoreset_mode": mode}, max_episode_steps=40)


def steps_of(envs, actions) -> list[tuple]:
    return [tuple(np.copy(x) for x in envs.step(a)[:4]) for a in actions]


@pytest.mark.parametrize("mode,scale,stop", [("NextStep", "raw", 163), ("NextStep", "normalized", 150),
                                             ("SameStep", "normalized", 163)])
def test_make_vec_stack_resumes_bitwise_from_a_checkpoint(tmp_path, mode, scale, stop):
    """save_env_state on make_vec_stack(..., "sync"): sub-envs, autoreset flags, the GASIL wrapper's
    episodes in progress and env-reward scale, and the owner; a fresh vector env continues bitwise."""
    from gasil_wrappers import load_env_state, save_env_state

    actions = np.random.default_rng(3).uniform(-2, 2, (300, 3, 1))
    envs = pendulum_vec(mode, scale)
    envs.reset(seed=0)
    steps_of(envs, actions[:stop])
    assert envs.state.rounds > 0 and all(envs.core._tape.steps(j) > 0 or envs._autoreset[j] for j in range(3))
    if stop == 163 and mode == "NextStep":
        assert envs._autoreset.all()  # every sub-env's episode ended at 163: the next step resets them
    save_env_state(envs, str(tmp_path / "vec.pt"))
    expected = steps_of(envs, actions[stop:])

    other = pendulum_vec(mode, scale)
    other.reset(seed=11)  # another start: everything must come from the file
    steps_of(other, actions[:5])
    load_env_state(other, str(tmp_path / "vec.pt"))
    got = steps_of(other, actions[stop:])
    for t, (a, b) in enumerate(zip(expected, got)):
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), f"step {stop + t}"
    assert (other.state.rounds, other.state.policy_steps) == (envs.state.rounds, envs.state.policy_steps)
    assert same_d(other.state, envs.state)
    assert [e.ret for e in other.state.buffer.episodes] == [e.ret for e in envs.state.buffer.episodes]


def test_a_vector_checkpoint_that_does_not_fit_is_refused_and_changes_nothing(tmp_path):
    from gasil_wrappers import load_env_state, save_env_state
    from gasil_wrappers.persistence import torch_load_plain

    envs = pendulum_vec("NextStep", "normalized")
    envs.reset(seed=0)
    steps_of(envs, np.zeros((90, 3, 1)))
    save_env_state(envs, str(tmp_path / "vec.pt"))
    for other, match in ((pendulum_vec("NextStep", "normalized", n=2), "2 sub-envs|3 sub-envs"),
                         (pendulum_vec("NextStep", "raw"), "env_reward_scale")):
        other.reset(seed=0)
        steps_of(other, np.zeros((10, other.num_envs, 1)))
        before = other.core.state_dict()
        with pytest.raises(ValueError, match=match):
            load_env_state(other, str(tmp_path / "vec.pt"))
        assert other.state.policy_steps == 10 * other.num_envs
        if other.num_envs == 3:  # the sub-envs loaded before the wrapper refused; the wrapper is as it was
            assert np.array_equal(other.core.state_dict()["observations"], before["observations"])
    saved = torch_load_plain(str(tmp_path / "vec.pt"))
    core = saved["wrappers"][0]["state"]["core"]
    core["episodes"][1]["rewards"] = np.zeros(3)  # 3 rewards for 12 observations
    with pytest.raises(ValueError, match="sub-env 1's saved episode"):
        envs.load_state_dict(saved["wrappers"][0]["state"])
    saved = torch_load_plain(str(tmp_path / "vec.pt"))
    core = saved["wrappers"][0]["state"]["core"]
    for bad in ([float("nan"), 0.0, 0.0], [0.0, 0.0], [[0.0]] * 3):
        core["unpaid_reward"] = bad
        with pytest.raises(ValueError, match="unpaid_reward|sub-envs"):
            envs.load_state_dict(saved["wrappers"][0]["state"])
    del core["unpaid_reward"]  # a state written before it was kept: nothing owed
    envs.load_state_dict(saved["wrappers"][0]["state"])
    assert envs.core.state_dict()["unpaid_reward"] == [0.0] * 3


def test_the_gasil_part_of_an_async_vector_env_saves_and_loads(tmp_path):
    """AsyncVectorEnv: the sub-envs live in workers, so save_env_state refuses and points to
    save_gasil_state; that one restores the wrapper and the owner, and a reset enters the episodes that
    were in progress into the buffer as cut."""
    from gasil_wrappers import save_env_state
    from gasil_wrappers.persistence import load_gasil_state, save_gasil_state, torch_load_plain

    envs = pendulum_vec("NextStep", "normalized", vectorization="async")
    envs.reset(seed=0)
    steps_of(envs, np.zeros((100, 3, 1)))
    with pytest.raises(TypeError, match="save_gasil_state"):
        save_env_state(envs, str(tmp_path / "vec.pt"))
    save_gasil_state(envs, str(tmp_path / "gasil.pt"))
    in_progress = [envs.core._tape.steps(j) for j in range(3)]
    other = pendulum_vec("NextStep", "normalized", vectorization="async")
    load_gasil_state(other, str(tmp_path / "gasil.pt"))
    assert same_d(other.state, envs.state) and other.state.rounds == envs.state.rounds
    assert [other.core._tape.steps(j) for j in range(3)] == in_progress and min(in_progress) > 0
    assert other.core._scale.state_dict() == envs.core._scale.state_dict()
    arrivals = other.state.buffer._arrivals
    unpaid = envs.unwrapped.get_attr("unpaid_reward")
    assert all(u != 0 for u in unpaid)  # 100 steps, delay 7: each sub-env holds unpaid reward
    other.reset(seed=1)
    assert other.state.cut_episodes == 3 and other.state.buffer._arrivals == arrivals + 3
    # the new workers report no cut: the state's unpaid reward completes the cut episodes, which enter the
    # buffer exactly as the saved envs' own reset (whose DelayedReward reports it) enters them
    envs.reset(seed=1)
    assert [e.ret for e in other.state.buffer.episodes] == [e.ret for e in envs.state.buffer.episodes]
    save_gasil_state(other, str(tmp_path / "after.pt"))  # owed once, then paid: nothing is added twice
    after = torch_load_plain(str(tmp_path / "after.pt"))
    assert after["wrapper"]["state"]["core"]["unpaid_reward"] == [0.0] * 3
    envs.close(), other.close()
    with pytest.raises(ValueError, match="cannot read GASIL state"):
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        load_gasil_state(other, str(tmp_path / "bad.pt"))


def test_a_reset_that_cuts_episodes_records_them_as_the_per_env_stack_does():
    """A reset mid-episode: the batched wrapper enters each cut episode with the delayed reward it was
    never paid added at its last step (DelayedReward's cut_unpaid_reward), as the per-env recorder does."""
    config = GASILConfig(gasil=True, delay=7, d_every=10_000, buffer_steps=1000, gamma=1.0, seed=0)
    actions = np.random.default_rng(5).uniform(-2, 2, (50, 3, 1))
    ref = gym.vector.SyncVectorEnv([lambda: wrap_stack(gym.make("Pendulum-v1"), config.replace(
        group="vector-cut-ref"))] * 3)
    envs = make_vec_stack("Pendulum-v1", 3, config.replace(group="vector-cut"))
    for venv in (ref, envs):
        venv.reset(seed=0)
        for a in actions[:25]:  # 25 steps: 4 of them unpaid under a delay of 7
            venv.step(a)
        venv.reset(seed=1)
    ref_state = find_state(ref.envs[0])
    assert ref_state.cut_episodes == envs.state.cut_episodes == 3
    assert [e.ret for e in envs.state.buffer.episodes] == [e.ret for e in ref_state.buffer.episodes]
    assert all(e.rewards[-1] != 0 for e in envs.state.buffer.episodes)  # the unpaid reward is there
