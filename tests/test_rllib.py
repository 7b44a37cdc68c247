"""RLlib (new API stack) PPO on our env ids with one Ray-backed GASIL owner for all env runners.

RLlib is unmodified: the env is the string id ``gasil_wrappers:GASIL-DelayedHopper-v5``, GASIL settings
travel in ``env_config``, and :class:`gasil_wrappers.rllib.GASILCallback` binds every runner's stacks
to the owner actor and puts its diagnostics into the training results.
"""

from __future__ import annotations

import itertools
import math
import os
import signal

import gymnasium as gym
import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")

from gasil_wrappers.ray_owner import GASILOwnerError, RayGASILOwner, bind_owner  # noqa: E402
from gasil_wrappers.rllib import GASILCallback  # noqa: E402

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
