"""Tests of gasil_wrappers/sb3.py: GASILVecEnvWrapper against the per-env stack under SB3's DummyVecEnv.

The reference is what an SB3 user gets today: ``DummyVecEnv`` of per-env stacks sharing one in-process
GASILState. With the same seeds and pre-drawn actions, the wrapper (over ``DummyVecEnv`` or
``SubprocVecEnv`` of task stacks) records the same samples and episodes in the same order, so the
buffer, every D round and D's weights are bitwise the reference's; the shaped rewards agree to float64
rounding of the batched forward (then SB3's float32).
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize  # noqa: E402

from gasil_wrappers import GASILConfig, GASILState, find_state, wrap_stack  # noqa: E402
from gasil_wrappers.sb3 import GASILVecEnvWrapper, make_sb3_vec_env  # noqa: E402

N, STEPS = 4, 2500  # 4 sub-envs x 2500 vector steps = 10k env steps
CONFIG = GASILConfig(gasil=True, delay=5, obs_noise_std=0.01, d_every=500, d_updates=5, buffer_steps=300)
_groups = itertools.count()


def run(venv, steps: int = STEPS, seed: int = 7):
    """Step ``venv`` with pre-drawn actions: rewards, D rewards (from infos), true returns of the episodes."""
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, venv.num_envs, 3)).astype(np.float32)
    venv.seed(seed)
    venv.reset()
    rewards, d_rewards, returns = np.zeros((steps, venv.num_envs)), np.zeros((steps, venv.num_envs)), []
    for t in range(steps):
        _, rewards[t], dones, infos = venv.step(actions[t])
        for j, info in enumerate(infos):
            d_rewards[t, j] = info["gasil"].get("discriminator_reward", 0.0)
            if dones[j]:
                assert "terminal_observation" in info
                returns.append(info["gasil"]["episode_return"])
    return rewards, d_rewards, returns


def _per_env_stack(config):
    return wrap_stack(gym.make("Hopper-v5"), config)


@functools.cache
def reference(scale: str = "raw"):
    config = CONFIG.replace(group=f"sb3-ref-{next(_groups)}", env_reward_scale=scale)
    venv = DummyVecEnv([functools.partial(_per_env_stack, config)] * N)
    rewards, d_rewards, returns = run(venv)
    state = find_state(venv.envs[0])
    venv.close()
    return rewards, d_rewards, returns, state


def same_d(a: GASILState, b: GASILState) -> bool:
    sa, sb = a.state_dict()["discriminator"], b.state_dict()["discriminator"]  # waits for a pending round
    return all(torch.equal(sa["net"][k], sb["net"][k]) for k in sa["net"]) and all(
        torch.equal(sa["normalizer"][k], sb["normalizer"][k]) for k in ("mean", "var"))


@pytest.mark.parametrize("vec_env_cls,scale", [(DummyVecEnv, "raw"), (SubprocVecEnv, "raw"),
                                               (DummyVecEnv, "normalized")])
def test_matches_the_per_env_stack_for_10k_steps(vec_env_cls, scale):
    ref_rewards, ref_d, ref_returns, ref_state = reference(scale)
    venv = make_sb3_vec_env("Hopper-v5", N, CONFIG.replace(env_reward_scale=scale), vec_env_cls=vec_env_cls,
                            monitor=False)
    rewards, d_rewards, returns = run(venv)
    state = venv.state
    venv.close()
    assert ref_state.rounds >= 15  # several D rounds happened during the 10k steps
    assert (state.rounds, state.policy_steps) == (ref_state.rounds, ref_state.policy_steps) == \
        (ref_state.rounds, N * STEPS)  # SB3 resets on the same step: every vector step is a policy step
    assert same_d(state, ref_state)  # same samples, same episodes, same order: bitwise the same D
    assert [e.ret for e in state.buffer.episodes] == [e.ret for e in ref_state.buffer.episodes]
    assert all(np.array_equal(a.obs, b.obs) and np.array_equal(a.actions, b.actions)
               for a, b in zip(state.buffer.episodes, ref_state.buffer.episodes))
    assert returns == ref_returns  # the true returns, reported by the sub-envs' DelayedReward
    np.testing.assert_allclose(d_rewards, ref_d, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6, atol=1e-6)  # both are SB3's float32
    untrained = ref_d.sum(axis=1) == 0
    assert untrained.any() and np.array_equal(rewards[untrained], ref_rewards[untrained])


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_subprocess_workers_under_every_start_method_feed_the_one_owner(start_method):
    """The owner lives in the learner process, so the workers' start method cannot split it (issue 12)."""
    steps = 1500
    dummy = make_sb3_vec_env("Hopper-v5", N, CONFIG, vec_env_cls=DummyVecEnv, monitor=False)
    expected, _, _ = run(dummy, steps)
    subproc = make_sb3_vec_env("Hopper-v5", N, CONFIG, vec_env_cls=SubprocVecEnv, monitor=False,
                               vec_env_kwargs={"start_method": start_method})
    rewards, _, _ = run(subproc, steps)
    subproc.close()
    assert subproc.state.policy_steps == dummy.state.policy_steps == N * steps  # one owner saw every step
    assert subproc.state.rounds == dummy.state.rounds >= 2 and same_d(subproc.state, dummy.state)
    np.testing.assert_array_equal(rewards, expected)


def test_monitor_reports_the_true_return_and_seeds_reach_d():
    config = GASILConfig(gasil=True, delay=20, d_every=256, d_updates=2)
    venv = make_sb3_vec_env("Pendulum-v1", 2, config, vec_env_cls=DummyVecEnv)
    assert venv.seed(3) == [3, 4]
    venv.reset()
    assert venv.state._seed == 3  # sub-env 0's seed seeds D, as under the per-env stack
    episodes = []
    for _ in range(450):
        _, _, dones, infos = venv.step(np.zeros((2, 1), dtype=np.float32))
        episodes += [info for info, done in zip(infos, dones) if done]
    assert len(episodes) == 4 and venv.state.rounds >= 1
    for info in episodes:  # Monitor sits outside the task stack, inside GASIL: it sums the delayed reward
        assert info["episode"]["r"] == pytest.approx(info["gasil"]["episode_return"], abs=1e-4)
    venv.close()


def test_top_k_only_records_and_leaves_rewards_alone():
    venv = make_sb3_vec_env("Pendulum-v1", 2, GASILConfig(top_k=True, delay=5), vec_env_cls=DummyVecEnv)
    venv.reset()
    for _ in range(210):
        _, rewards, _, infos = venv.step(np.zeros((2, 1), dtype=np.float32))
        assert "shaped_reward" not in infos[0]["gasil"]
    assert len(venv.state.buffer) == 2 and venv.state.policy_steps == 0
    venv.close()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="already contains a per-env GASIL stack"):
        make_sb3_vec_env("gasil_wrappers:GASIL-PointMass-v0", 2, CONFIG)
    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    with pytest.raises(TypeError, match="in-process GASILState"):
        GASILVecEnvWrapper(venv, object())
    wrapped = GASILVecEnvWrapper(venv, config=GASILConfig(gasil=True))
    wrapped.reset()
    with pytest.raises(ValueError, match="NaN or inf"):
        wrapped.step(np.array([[np.nan]], dtype=np.float32))


def test_importing_the_library_does_not_import_sb3_or_ray():
    code = ("import sys, gasil_wrappers\n"
            "print(sorted(m for m in ('stable_baselines3', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_sb3_ppo_learns_with_subprocess_envs_and_vecnormalize_outside():
    from stable_baselines3 import PPO

    config = GASILConfig(gasil=True, delay=20, d_every=1024, seed=0)
    venv = make_sb3_vec_env("Hopper-v5", 2, config, vec_env_cls=SubprocVecEnv)
    state = venv.state
    env = VecNormalize(venv, gamma=0.99)
    model = PPO("MlpPolicy", env, n_steps=512, batch_size=128, n_epochs=2, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=4096)
    env.close()
    returns = [info["r"] for info in model.ep_info_buffer]
    assert len(returns) >= 10 and np.all(np.isfinite(returns))
    diag = state.diagnostics()
    assert diag["rounds"] >= 2 and diag["policy_steps"] >= 4096 and np.isfinite(diag["d_loss"])
    assert diag["buffer_episodes"] >= 1


def test_scores_computed_ahead_are_dropped_when_a_round_took_effect_since():
    """step_async scores (s, a) while the sub-envs step; if new weights took effect before step_wait
    (here: a round trained by hand in between), step_wait must score with the new D."""
    venv = make_sb3_vec_env("Pendulum-v1", 2, GASILConfig(gasil=True, delay=5, d_every=256, d_apply_lag=0,
                                                         seed=0), vec_env_cls=DummyVecEnv)
    venv.seed(0)
    venv.reset()
    actions = np.full((2, 1), 0.3, dtype=np.float32)
    while not venv.state.ready:
        venv.step(actions)
    state, core = venv.state, venv.core
    venv.step_async(actions)
    x = core._x.copy()
    old = state.discriminator.reward(x)
    state.train_round()
    new = state.discriminator.reward(x)
    assert not np.allclose(old, new)
    _, _, _, infos = venv.step_wait()
    assert [info["gasil"]["discriminator_reward"] for info in infos] == new.tolist()
    venv.close()


def test_checkpoint_callback_saves_the_gasil_state_and_a_resumed_run_continues_from_it(tmp_path):
    """GASILCheckpointCallback writes the GASIL state beside SB3's model and VecNormalize files; loaded
    into a new vec env (through VecNormalize) it restores the owner and the episodes in progress, which
    enter the buffer as cut when the resumed learn() resets the sub-envs."""
    from stable_baselines3 import PPO

    from gasil_wrappers.persistence import load_gasil_state, torch_load_plain
    from gasil_wrappers.sb3 import GASILCheckpointCallback

    config = GASILConfig(gasil=True, delay=5, d_every=64, d_apply_lag=0, buffer_steps=300, seed=0,
                         env_reward_scale="normalized")

    def venv_of(n=2):
        return make_sb3_vec_env("Pendulum-v1", n, config.replace(group=f"sb3-ckpt-{next(_groups)}"),
                                vec_env_cls=DummyVecEnv, env_kwargs={"max_episode_steps": 50})

    venv = venv_of()
    model = PPO("MlpPolicy", VecNormalize(venv), n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(384, callback=GASILCheckpointCallback(save_freq=130, save_path=str(tmp_path),
                                                      save_vecnormalize=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rl_model_260_steps.zip", "rl_model_gasil_260_steps.pt", "rl_model_vecnormalize_260_steps.pkl"]
    saved = torch_load_plain(str(tmp_path / "rl_model_gasil_260_steps.pt"))
    assert saved["kind"] == "gasil" and saved["wrapper"]["class"] == "GASILVecEnvWrapper"
    owner = saved["owners"][0]
    assert owner["rounds"] > 0 and owner["policy_steps"] == 260  # D trained before the checkpoint
    in_progress = [len(ep["rewards"]) for ep in saved["wrapper"]["state"]["core"]["episodes"]]
    assert in_progress == [30, 30]  # 260 steps of 2 envs = 2 x 130 = 2 x (2 episodes of 50 + 30 steps)

    wrong = venv_of(n=3)
    with pytest.raises(ValueError, match="2 sub-envs|3 sub-envs"):
        load_gasil_state(wrong, str(tmp_path / "rl_model_gasil_260_steps.pt"))
    assert wrong.state.rounds == 0 and len(wrong.state.buffer) == 0

    resumed = venv_of()
    load_gasil_state(VecNormalize(resumed), str(tmp_path / "rl_model_gasil_260_steps.pt"))  # found inside
    assert (resumed.state.rounds, resumed.state.policy_steps) == (owner["rounds"], 260)
    assert resumed.core._scale.state_dict() == saved["wrapper"]["state"]["core"]["env_reward_scale"]
    arrivals = resumed.state.buffer._arrivals
    venv_norm = VecNormalize.load(str(tmp_path / "rl_model_vecnormalize_260_steps.pkl"), resumed)
    model = PPO.load(str(tmp_path / "rl_model_260_steps.zip"), env=venv_norm, device="cpu")
    model.learn(128, reset_num_timesteps=False)
    assert resumed.state.cut_episodes == 2 and resumed.state.buffer._arrivals >= arrivals + 2
    assert resumed.state.policy_steps == model.num_timesteps > 260  # counted on from the checkpoint


def test_a_reset_that_cuts_episodes_records_them_as_the_per_env_stack_does():
    """SB3 resets every sub-env at the start of learn() and of an evaluation: the episodes it cuts enter
    the buffer with the delayed reward never paid added at their last step, as under the per-env stack."""
    config = GASILConfig(gasil=True, delay=7, d_every=10_000, buffer_steps=1000, gamma=1.0, seed=0)
    actions = np.random.default_rng(5).uniform(-2, 2, (25, 3, 1)).astype(np.float32)
    ref = DummyVecEnv([functools.partial(lambda c: wrap_stack(gym.make("Pendulum-v1"), c),
                                         config.replace(group="sb3-cut-ref"))] * 3)
    venv = make_sb3_vec_env("Pendulum-v1", 3, config.replace(group="sb3-cut"), vec_env_cls=DummyVecEnv)
    for v in (ref, venv):
        v.seed(0)
        v.reset()
        for a in actions:  # 25 steps: 4 of them unpaid under a delay of 7
            v.step(a)
        v.reset()
    ref_state = find_state(ref.envs[0])
    assert ref_state.cut_episodes == venv.state.cut_episodes == 3
    assert [e.ret for e in venv.state.buffer.episodes] == [e.ret for e in ref_state.buffer.episodes]
    assert all(e.rewards[-1] != 0 for e in venv.state.buffer.episodes)  # the unpaid reward is there


def test_episodes_cut_by_resuming_in_new_workers_keep_their_unpaid_reward(tmp_path):
    """save_gasil_state asks the subprocess workers what their DelayedReward has not paid yet; after a
    load into new workers (which know nothing of the old episodes) the reset enters the cut episodes with
    it, exactly as the per-env stack enters them when it is reset mid-episode."""
    from gasil_wrappers.persistence import load_gasil_state, save_gasil_state

    config = GASILConfig(gasil=True, delay=7, d_every=10_000, buffer_steps=1000, gamma=1.0, seed=0)
    actions = np.random.default_rng(5).uniform(-2, 2, (25, 2, 1)).astype(np.float32)
    ref = DummyVecEnv([functools.partial(lambda c: wrap_stack(gym.make("Pendulum-v1"), c),
                                         config.replace(group="sb3-resume-cut-ref"))] * 2)
    venv = make_sb3_vec_env("Pendulum-v1", 2, config.replace(group="sb3-resume-cut"),
                            vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"})
    for v in (ref, venv):
        v.seed(0)
        v.reset()
        for a in actions:  # 25 steps: 4 of them unpaid under a delay of 7
            v.step(a)
    save_gasil_state(venv, str(tmp_path / "gasil.pt"))
    venv.close()
    resumed = make_sb3_vec_env("Pendulum-v1", 2, config.replace(group="sb3-resume-cut-2"),
                               vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"})
    load_gasil_state(resumed, str(tmp_path / "gasil.pt"))
    resumed.reset()
    ref.reset()
    ref_state = find_state(ref.envs[0])
    assert resumed.state.cut_episodes == ref_state.cut_episodes == 2
    assert [e.ret for e in resumed.state.buffer.episodes] == [e.ret for e in ref_state.buffer.episodes]
    resumed.close()
