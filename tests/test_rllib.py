"""RLlib (new API stack) PPO on our env ids with one Ray-backed GASIL owner for all env runners.

RLlib is unmodified: the env is the string id ``gasil_wrappers:GASIL-DelayedHopper-v5``, GASIL settings
travel in ``env_config``, and :class:`gasil_wrappers.rllib.GASILCallback` binds every runner's stacks
to the owner actor and puts its diagnostics into the training results.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import shutil
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")

from gasil_wrappers.ray_owner import GASILOwnerError, RayGASILOwner, bind_owner  # noqa: E402
from gasil_wrappers.rllib import TRUE_RETURN_KEY, GASILCallback  # noqa: E402
from gasil_wrappers.state import find_state  # noqa: E402

ENV_ID = "gasil_wrappers:GASIL-DelayedHopper-v5"
_groups = itertools.count()


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """One local Ray instance (2 CPUs) for the module (tests/conftest.py)."""
    return ray_cluster


def test_bind_owner_switches_the_stacks_of_an_id_to_the_ray_owner(cluster):
    group = f"rllib-bind-{os.getpid()}-{next(_groups)}"
    envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", group=group, d_every=300)
    with pytest.raises(GASILOwnerError, match="RayGASILOwner.start"):
        bind_owner(envs)
    with RayGASILOwner.start(RayGASILOwner.for_env_id(ENV_ID, group=group, d_every=300)) as owner:
        assert bind_owner(envs) == 4  # a recorder and a reward wrapper per sub-env
        envs.reset(seed=0)
        for _ in range(400):
            envs.step(envs.action_space.sample())
        owner.flush(wait=True)
        assert owner.info()["policy_steps"] >= 700 and owner.info()["rounds"] >= 1
    envs.close()
    other = gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="sync", group=group, alpha=0.5)
    with RayGASILOwner.start(RayGASILOwner.for_env_id(ENV_ID, group=group)):
        with pytest.raises(ValueError, match="alpha: env 0.5, owner 0.1"):
            bind_owner(other)


@pytest.mark.slow
def test_rllib_ppo_with_two_env_runners_trains_one_d_and_survives_a_runner_crash(cluster):
    from ray.rllib.algorithms.ppo import PPOConfig

    group = f"rllib-ppo-{os.getpid()}-{next(_groups)}"
    env_config = {"group": group, "d_every": 500, "d_updates": 5, "buffer_steps": 10**6}
    owner = RayGASILOwner.start(RayGASILOwner.for_env_id(ENV_ID, **env_config))
    config = (
        PPOConfig()
        .environment(ENV_ID, env_config=env_config)
        .env_runners(num_env_runners=2, num_envs_per_env_runner=1, num_cpus_per_env_runner=0.5,
                     rollout_fragment_length=250)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=500, minibatch_size=125, num_epochs=1)
        .fault_tolerance(restart_failed_env_runners=True)
        .callbacks(GASILCallback)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        pids = algo.env_runner_group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False)
        results = [algo.train() for _ in range(3)]
        info = owner.info()
        # one D, trained from both runners' samples
        assert sorted({int(s.split(":")[1]) for s in info["shippers"]}) == sorted(pids)
        gasil = results[-1]["gasil"]
        assert gasil["rounds"] >= 2 and gasil["shippers"] == 2 and math.isfinite(gasil["d_loss"])
        assert gasil["policy_steps"] >= 1400 and gasil["buffer_episodes"] >= 1
        returns = [r["env_runners"]["episode_return_mean"] for r in results]
        assert all(np.isfinite(returns)), returns
        # an env runner killed mid-training: the owner keeps serving the other, its buffer keeps everything
        before = sorted(e.ret for e in owner.buffer.episodes)
        steps = owner.info()["policy_steps"]
        os.kill(pids[0], signal.SIGKILL)
        for _ in range(2):
            result = algo.train()
        after = sorted(e.ret for e in owner.buffer.episodes)
        assert all(r in after for r in before) and len(after) > len(before)
        assert owner.info()["policy_steps"] >= steps + 900
        assert result["gasil"]["rounds"] > gasil["rounds"]
        assert np.isfinite(result["env_runners"]["episode_return_mean"])
    finally:
        algo.stop()
        owner.close()


def _small_ppo(env_config: dict):
    """PPO on the local env runner, a 500-step batch per train(); no callbacks (GASILAlgorithm adds them)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment(ENV_ID, env_config=env_config)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=500)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=500, minibatch_size=250, num_epochs=1)
        .debugging(seed=0)
    )


def _owner_view(state: dict) -> dict:
    """What a checkpoint must bring back: counters, the buffer's episodes and D's weights, as plain values."""
    return {
        "policy_steps": state["policy_steps"], "rounds": state["rounds"],
        "episodes": [[t.numpy().tolist() for t in ep] for ep in state["buffer"]["episodes"]],
        "d": {k: v.numpy().tolist() for k, v in state["discriminator"]["net"].items()},
    }


def _policy_weights(algo) -> dict:
    return algo.learner_group.get_weights()["default_policy"]


def _same_weights(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    return all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_save_and_restore_checkpoint_bring_back_the_owner_with_the_algo(cluster, tmp_path):
    from gasil_wrappers.rllib import OWNERS_FILE, restore_checkpoint, save_checkpoint

    group = f"rllib-ckpt-{os.getpid()}-{next(_groups)}"
    env_config = {"group": group, "d_every": 250, "d_updates": 2, "buffer_steps": 10**6}
    owner = RayGASILOwner.start(RayGASILOwner.for_env_id(ENV_ID, **env_config))
    algo = _small_ppo(env_config).callbacks(GASILCallback).build_algo()
    try:
        algo.train()
        owner.flush(wait=True)
        path = save_checkpoint(algo, str(tmp_path / "ckpt"), owner)
        saved = _owner_view(owner.state_dict())
        weights = _policy_weights(algo)
        assert saved["rounds"] >= 1 and saved["episodes"]

        algo.train()
        owner.flush(wait=True)
        moved = _owner_view(owner.state_dict())
        assert not _same_weights(_policy_weights(algo), weights)
        assert moved["policy_steps"] >= saved["policy_steps"] + 400 and moved["d"] != saved["d"]

        # a corrupt owners file: refused, naming it; the owner as it was
        broken = tmp_path / "broken"
        shutil.copytree(path, broken)
        (broken / OWNERS_FILE).write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="cannot read GASIL owners .*gasil_owners.pt"):
            restore_checkpoint(algo, str(broken), owner)
        # a checkpoint of other groups: refused before anything is loaded
        other = tmp_path / "other"
        shutil.copytree(path, other)
        torch.save({**torch.load(other / OWNERS_FILE, weights_only=False), "owners": {"elsewhere": {}}},
                   other / OWNERS_FILE)
        with pytest.raises(ValueError, match=rf"saved groups \['elsewhere'\], owners given for \['{group}"):
            restore_checkpoint(algo, str(other), owner)
        assert _owner_view(owner.state_dict()) == moved
        # the algo's part fails (its state files corrupt, the owners file intact): the owner is rolled back
        algo_broken = tmp_path / "algo-broken"
        shutil.copytree(path, algo_broken)
        state_files = sorted(algo_broken.rglob("*.pkl"))
        assert state_files
        for f in state_files:
            f.write_bytes(b"not a pickle")
        with pytest.raises(pickle.UnpicklingError):
            restore_checkpoint(algo, str(algo_broken), owner)
        assert _owner_view(owner.state_dict()) == moved

        restore_checkpoint(algo, path, owner)
        assert _owner_view(owner.state_dict()) == saved
        assert _same_weights(_policy_weights(algo), weights)
        algo.train()  # and training goes on from there
        assert owner.info()["policy_steps"] >= saved["policy_steps"] + 400
    finally:
        algo.stop()
        owner.close()


@pytest.mark.slow
def test_gasil_callback_refuses_evaluation_envs_with_gasil(cluster):
    group = f"rllib-eval-{os.getpid()}-{next(_groups)}"
    env_config = {"group": group}
    config = _small_ppo(env_config).callbacks(GASILCallback).evaluation(
        evaluation_interval=1, evaluation_num_env_runners=0)
    with RayGASILOwner.start(RayGASILOwner.for_env_id(ENV_ID, **env_config)) as owner:
        with pytest.raises(ValueError, match="evaluation env runner's envs have GASIL"):
            config.build_algo()
        assert owner.info()["policy_steps"] == 0
        # evaluating on the task without GASIL is fine
        no_gasil = {**env_config, "gasil": False, "top_k": False}
        algo = config.evaluation(evaluation_config={"env_config": no_gasil}).build_algo()
        algo.stop()


def _episode(reward: float, info: dict):
    """A one-step RLlib episode whose last info is ``info``."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    episode = SingleAgentEpisode()
    episode.add_env_reset(observation=np.zeros(2), infos={})
    episode.add_env_step(observation=np.ones(2), action=0, reward=reward, infos=info, terminated=True)
    return episode


def test_gasil_callback_logs_the_true_return_over_rllibs_window():
    from types import SimpleNamespace

    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    # RLlib averages a runner's last ceil(4 / 2) = 2 episodes when 2 runners smooth over 4
    runner = SimpleNamespace(config=PPOConfig().env_runners(num_env_runners=2).reporting(
        metrics_num_episodes_for_smoothing=4))
    logger, callback = MetricsLogger(), GASILCallback()
    for true_return in (10.0, 20.0, 30.0, 50.0):
        episode = _episode(-1.0, {"gasil": {"episode_return": true_return, "shaped_reward": -1.0}})
        callback.on_episode_end(episode=episode, env_runner=runner, metrics_logger=logger, env_index=0)
    callback.on_episode_end(episode=_episode(7.0, {}), env_runner=runner, metrics_logger=logger, env_index=0)
    assert logger.peek(TRUE_RETURN_KEY) == pytest.approx(40.0)  # the env without our stack: not counted


def _running(group: str) -> bool:
    try:
        RayGASILOwner.connect(group)
    except GASILOwnerError:
        return False
    return True


@pytest.mark.slow
def test_gasil_ppo_starts_its_owner_and_every_checkpoint_holds_it(cluster, tmp_path):
    from ray.rllib.callbacks.callbacks import RLlibCallback

    from gasil_wrappers.rllib import GASILPPO, OWNERS_FILE

    class SeesGASIL(RLlibCallback):
        """A user's callback: GASILAlgorithm puts GASILCallback first, so this sees result["gasil"]."""

        seen: list = []

        def on_train_result(self, *, algorithm, result, **kwargs):
            SeesGASIL.seen.append(result.get("gasil", {}).get("rounds"))

    group = f"rllib-own-{os.getpid()}-{next(_groups)}"
    env_config = {"group": group, "d_every": 250, "d_updates": 2, "buffer_steps": 10**6}
    config = _small_ppo(env_config).callbacks(SeesGASIL).evaluation(
        evaluation_interval=1, evaluation_duration=1, evaluation_duration_unit="episodes",
        evaluation_num_env_runners=0)
    algo = GASILPPO(config=config)
    try:
        assert algo.gasil_group == group and _running(group)
        # evaluation runs on the task without GASIL: nothing it does reaches the owner
        (eval_env,) = algo.eval_env_runner.env.unwrapped.envs
        assert find_state(eval_env) is None and eval_env.get_wrapper_attr("delay") == 20
        result = algo.train()
        assert result["gasil"]["rounds"] >= 1 and result["gasil"]["policy_steps"] >= 400  # only its own owner
        assert SeesGASIL.seen == [result["gasil"]["rounds"]]
        assert result["evaluation"]["env_runners"]["num_episodes"] >= 1
        # training reports the true return beside RLlib's shaped one; on the evaluation's task (no GASIL,
        # the delay pays in full at episode end) the two are the same
        assert math.isfinite(result["env_runners"][TRUE_RETURN_KEY])
        evaluation = result["evaluation"]["env_runners"]
        assert evaluation[TRUE_RETURN_KEY] == pytest.approx(evaluation["episode_return_mean"], rel=1e-5)
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        assert os.path.exists(os.path.join(path, OWNERS_FILE))
        saved, weights = _owner_view(algo.gasil_owner.state_dict()), _policy_weights(algo)
        algo.train()
        moved = _owner_view(algo.gasil_owner.state_dict())
        assert moved["d"] != saved["d"] and not _same_weights(_policy_weights(algo), weights)
        # a checkpoint without the owners file: refused before anything changes
        bare = tmp_path / "bare"
        shutil.copytree(path, bare)
        os.remove(bare / OWNERS_FILE)
        with pytest.raises(ValueError, match="cannot read GASIL owners"):
            algo.restore_from_path(str(bare))
        assert _owner_view(algo.gasil_owner.state_dict()) == moved
        algo.load_checkpoint(path)  # Tune's restore of a trial
        assert _owner_view(algo.gasil_owner.state_dict()) == saved
        assert _same_weights(_policy_weights(algo), weights)
    finally:
        algo.stop()
    assert not _running(group)  # stop() ended the owner it started
    # a new algorithm from the checkpoint alone: a fresh owner, loaded with the saved state
    restored = GASILPPO.from_checkpoint(path)
    try:
        assert restored.gasil_group == group
        assert _owner_view(restored.gasil_owner.state_dict()) == saved
        assert _same_weights(_policy_weights(restored), weights)
        restored.train()
        assert restored.gasil_owner.info()["policy_steps"] >= saved["policy_steps"] + 400
    finally:
        restored.stop()


@pytest.mark.slow
def test_gasil_ppo_under_tune_gives_each_trial_its_owner_and_checkpoints_it(cluster, tmp_path):
    from ray import tune
    from ray.rllib.callbacks.callbacks import RLlibCallback

    from gasil_wrappers.rllib import GASILPPO, OWNERS_FILE

    markers = str(tmp_path / "failed")
    os.makedirs(markers)

    class FailOnceAtTheSecondIteration(RLlibCallback):
        """Each trial fails once after its second iteration (its first one is checkpointed by then)."""

        def on_train_result(self, *, algorithm, result, **kwargs):
            marker = os.path.join(markers, algorithm._gasil_trial_id)
            if result["training_iteration"] == 2 and not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("injected failure")

    group = f"rllib-tune-{os.getpid()}-{next(_groups)}"
    config = _small_ppo({"group": group, "d_every": 250, "d_updates": 2}).training(
        lr=tune.grid_search([1e-4, 3e-4])).callbacks(FailOnceAtTheSecondIteration)
    tuner = tune.Tuner(GASILPPO, param_space=config, run_config=tune.RunConfig(
        name="gasil", storage_path=str(tmp_path), stop={"training_iteration": 2}, verbose=0,
        failure_config=tune.FailureConfig(max_failures=1),
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, checkpoint_at_end=True)))
    results = tuner.fit()
    assert results.num_errors == 0 and len(results) == 2
    assert len(os.listdir(markers)) == 2  # each trial failed once and was restored from its checkpoint
    saved = {}
    for result in results:
        # the restored trial's owner went on from its checkpoint (a fresh owner would hold one iteration)
        assert result.metrics["training_iteration"] == 2 and result.metrics["gasil"]["policy_steps"] >= 900
        state = torch.load(os.path.join(result.checkpoint.path, OWNERS_FILE), weights_only=False)
        (trial_group,) = state["owners"]
        assert trial_group == f"{group}-{result.metrics['trial_id']}"
        saved[trial_group] = (result.checkpoint.path, _owner_view(state["owners"][trial_group]))
    assert len(saved) == 2  # one owner per trial
    assert not any(_running(g) for g in saved)  # ended with their trials
    # a trial's checkpoint, restored outside Tune: an owner of the trial's group, with the trial's state
    trial_group, (path, view) = next(iter(saved.items()))
    algo = GASILPPO.from_checkpoint(path)
    try:
        assert algo.gasil_group == trial_group and _owner_view(algo.gasil_owner.state_dict()) == view
    finally:
        algo.stop()
