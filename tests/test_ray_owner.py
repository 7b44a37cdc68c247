"""Tests of gasil_wrappers/ray_owner.py: one GASIL owner in a named Ray actor, env workers anywhere.

One local Ray instance (2 CPUs) serves the module. What is identical to the in-process owner: with one
worker, the actor sees samples and episodes in the per-env stack's order, so D (every round) and the
buffer are bitwise the in-process ones; with several workers, a worker's −log D is bitwise the actor's
D of the version it used.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from gasil_wrappers import GASILConfig, GASILState, wrap_stack  # noqa: E402
from gasil_wrappers.discriminator import DiscriminatorForward  # noqa: E402
from gasil_wrappers.ray_owner import GASILOwnerError, RayGASILOwner, actor_name  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1])
CONFIG = GASILConfig(gasil=True, d_every=200, d_updates=3, buffer_steps=400)
_groups = itertools.count()


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """One local Ray instance (2 CPUs) for the module (tests/conftest.py)."""
    return ray_cluster


@pytest.fixture
def group():
    return f"ray-test-{os.getpid()}-{next(_groups)}"


def make_env(state, config=None):
    return wrap_stack(gym.make("Pendulum-v1"), config or state.config, state=state)


def drive(env, steps: int, seed: int, action_seed: int = 0, record=None):
    """Step with pre-drawn actions, resetting at episode ends; ``record(info)`` sees every step's info."""
    actions = np.random.default_rng(action_seed).uniform(-2, 2, (steps, 1))
    env.reset(seed=seed)
    rewards = []
    for t in range(steps):
        _, reward, terminated, truncated, info = env.step(actions[t])
        rewards.append(reward)
        if record is not None:
            record(info)
        if terminated or truncated:
            env.reset()
    return np.array(rewards)


@ray.remote(num_cpus=0)
class EnvWorker:
    """A Ray actor that steps one stack with the owner handle it was given."""

    def __init__(self, owner: RayGASILOwner, action_seed: int):
        self.owner, self.action_seed = owner, action_seed
        self.env = make_env(owner)
        self.obs = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, steps: int, seed: int | None = None):
        """Steps; returns (version, row, −log D) of some steps scored by a trained D, or the owner error."""
        samples = []
        env, owner = self.env, self.owner
        actions = np.random.default_rng(self.action_seed + steps).uniform(-2, 2, (steps, 1))
        try:
            if self.obs is None:
                self.obs, _ = env.reset(seed=seed)
            for t in range(steps):
                version = owner.version
                obs, _, terminated, truncated, info = env.step(actions[t])
                if version and version == owner.version and len(samples) < 50:
                    samples.append((version, np.concatenate([self.obs, actions[t]]),
                                    info["gasil"]["discriminator_reward"]))
                self.obs = obs
                if terminated or truncated:
                    self.obs, _ = env.reset()
            owner.flush(wait=True)
        except GASILOwnerError as e:
            return str(e)
        return samples


def d_weights(state_dict):
    d = state_dict["discriminator"]
    return [d["net"][k] for k in sorted(d["net"])] + [d["normalizer"]["mean"], d["normalizer"]["var"]]


@pytest.mark.parametrize("form", ["neg_log_d", "logit"])
def test_one_worker_is_bitwise_the_in_process_owner(cluster, group, form):
    config = CONFIG.replace(group=group, d_reward_form=form)
    state = GASILState(config.replace(group=group + "-ref"))
    ref_rewards = drive(make_env(state, config), 2000, seed=3)
    with RayGASILOwner.start(config) as owner:
        rewards = drive(make_env(owner), 2000, seed=3)
        owner.flush(wait=True)
        info, theirs = owner.info(), owner.state_dict()
        assert info["seed"] == 3 and info["rounds"] == state.rounds >= 5
        assert info["policy_steps"] == state.policy_steps == 2000
        mine = state.state_dict()
        assert all(torch.equal(a, b) for a, b in zip(d_weights(theirs), d_weights(mine)))
        assert [e.ret for e in owner.buffer.episodes] == [e.ret for e in state.buffer.episodes]
        # the same weights give the same rewards: the worker's forward is the actor's D
        rng = np.random.default_rng(1)
        obs, act = rng.normal(size=(64, 3)), rng.normal(size=(64, 1))
        assert np.array_equal(owner.discriminator_reward(obs, act), state.discriminator_reward(obs, act))
    untrained = np.arange(2000) < 300  # before the first round takes effect, both give the env reward
    assert np.array_equal(rewards[untrained], ref_rewards[untrained])
    assert np.isfinite(rewards).all()


def test_two_workers_share_one_d_and_score_with_the_published_weights(cluster, group):
    with RayGASILOwner.start(CONFIG.replace(group=group), keep_history=True) as owner:
        workers = [EnvWorker.remote(owner, j) for j in range(2)]
        results = ray.get([w.run.remote(1500, seed=10 + j) for j, w in enumerate(workers)])
        pids = ray.get([w.pid.remote() for w in workers])
        diag, info = owner.diagnostics(), owner.info()
        history = owner.published_discriminators()
        assert diag["rounds"] >= 10 and diag["policy_steps"] == 3000 and diag["shippers"] == 2
        assert sorted(int(s.split(":")[1]) for s in info["shippers"]) == sorted(pids)
        assert info["seed"] in (10, 11)  # the smallest reset seed offered before the first round (timing)
        assert np.isfinite(diag["d_loss"]) and diag["buffer_episodes"] >= 1
        checked = 0
        for samples in results:
            assert samples, "the worker never scored with a trained D"
            for version, row, d_reward in samples:
                forward = DiscriminatorForward(4, CONFIG.d_hidden, CONFIG.d_input_clip)
                forward.load(history[version]["forward"])
                assert forward.reward(row) == d_reward  # bitwise
                checked += 1
        assert checked >= 50
        for w in workers:
            ray.kill(w)


def test_state_dict_and_load_state_dict_from_the_driver(cluster, group):
    config = CONFIG.replace(group=group)
    with RayGASILOwner.start(config) as owner:
        drive(make_env(owner), 700, seed=0)
        saved = owner.state_dict()
        diag = owner.diagnostics()
    with RayGASILOwner.start(config) as restored:  # the same name, after the first was closed
        restored.load_state_dict(saved)
        assert restored.diagnostics()["rounds"] == diag["rounds"] >= 2
        assert all(torch.equal(a, b) for a, b in zip(d_weights(restored.state_dict()), d_weights(saved)))
        env = make_env(restored)
        restored.flush(wait=True)
        assert restored.version >= 1  # a worker attaching after the load scores with the loaded D
        assert np.isfinite(drive(env, 10, seed=0)).all()
    with RayGASILOwner.start(config.replace(buffer_steps=999)) as other:
        with pytest.raises(ValueError, match="buffer_steps"):
            other.load_state_dict(saved)


def test_connect_finds_the_owner_by_name_and_errors_are_clear(cluster, group):
    config = CONFIG.replace(group=group)
    with pytest.raises(GASILOwnerError, match=f"no GASIL owner actor '{actor_name(group)}'"):
        RayGASILOwner.connect(group)
    with RayGASILOwner.start(config) as owner:
        with pytest.raises(GASILOwnerError, match="already runs"):
            RayGASILOwner.start(config)
        client = RayGASILOwner.connect(config)
        assert client.config == config and repr(client).startswith("RayGASILOwner(client")
        make_env(client, config)  # Pendulum: (3, 1)
        with pytest.raises(ValueError, match="observation dim"):
            wrap_stack(gym.make("Hopper-v5"), config, state=client)
        assert owner.info()["name"] == actor_name(group)


def _mp_worker(owner, queue) -> None:
    try:
        env = make_env(owner)
        drive(env, 300, seed=5)
        owner.flush(wait=True)
        queue.put(("ok", os.getpid(), owner.version))
    except Exception as e:  # reported to the test
        queue.put(("error", type(e).__name__, str(e)))


def _fork_launcher(owner, queue) -> None:
    """Runs in a process not connected to Ray (spawned), and forks a worker from there."""
    child = mp.get_context("fork").Process(target=_mp_worker, args=(owner, queue))
    child.start()
    child.join(120)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork-from-unconnected"])
def test_multiprocessing_workers_find_the_owner(cluster, group, method):
    config = CONFIG.replace(group=group, d_every=128)
    with RayGASILOwner.start(config) as owner:
        ctx = mp.get_context("spawn" if method == "fork-from-unconnected" else method)
        queue = ctx.Queue()
        target = _fork_launcher if method == "fork-from-unconnected" else _mp_worker
        process = ctx.Process(target=target, args=(owner, queue))
        process.start()
        result = queue.get(timeout=180)
        process.join(60)
        assert result[0] == "ok", result
        assert result[2] >= 1  # it scored with a D the actor trained
        assert owner.info()["policy_steps"] == 300


FORK_SCRIPT = """
import multiprocessing as mp
import ray
from gasil_wrappers import GASILConfig
from gasil_wrappers.ray_owner import RayGASILOwner
from tests.test_ray_owner import _mp_worker

if __name__ == "__main__":
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    owner = RayGASILOwner.start(GASILConfig(gasil=True, d_every=128, group="fork"))
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_mp_worker, args=(owner, queue))
    child.start()
    print("RESULT", queue.get(timeout=120))
    child.join(60)
    owner.close()
    ray.shutdown()
"""


@pytest.mark.slow
def test_a_worker_forked_from_a_ray_connected_process_is_refused_clearly(tmp_path):
    # In its own process: a fork of a Ray-connected process may break the parent's Ray connection.
    script = tmp_path / "fork_worker.py"
    script.write_text(textwrap.dedent(FORK_SCRIPT))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})
    result = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    assert "'error', 'GASILOwnerError'" in result
    assert "forked from a process connected to Ray" in result and "'spawn' or 'forkserver'" in result


@pytest.mark.slow
def test_a_killed_worker_leaves_the_owner_serving_the_others(cluster, group):
    config = CONFIG.replace(group=group, buffer_steps=10**6)  # nothing is ever evicted
    with RayGASILOwner.start(config) as owner:
        workers = [EnvWorker.remote(owner, j) for j in range(2)]
        ray.get([w.run.remote(1000, seed=j) for j, w in enumerate(workers)])
        before = sorted(e.ret for e in owner.buffer.episodes)
        rounds = owner.info()["rounds"]
        ray.kill(workers[0])  # mid-training: it had shipped its episodes, the rest of it is gone
        samples = ray.get(workers[1].run.remote(1000))
        assert isinstance(samples, list)
        after = sorted(e.ret for e in owner.buffer.episodes)
        assert len(after) == len(before) + 5 and all(r in after for r in before)  # nothing lost
        assert owner.info()["rounds"] > rounds and owner.info()["policy_steps"] == 3000
        ray.kill(workers[1])


@pytest.mark.slow
def test_a_killed_owner_gives_every_worker_an_error_naming_it(cluster, group):
    owner = RayGASILOwner.start(CONFIG.replace(group=group))
    workers = [EnvWorker.remote(owner, j) for j in range(2)]
    ray.get([w.run.remote(300, seed=j) for j, w in enumerate(workers)])
    ray.kill(ray.get_actor(actor_name(group), namespace="gasil"))
    messages = ray.get([w.run.remote(300) for w in workers])
    for message in messages:
        assert isinstance(message, str) and f"the GASIL owner actor '{actor_name(group)}'" in message
        assert "died or was killed" in message
    with pytest.raises(GASILOwnerError, match=actor_name(group)):
        owner.diagnostics()
    owner.close()
    for w in workers:
        ray.kill(w)


SHUTDOWN_SCRIPT = """
import os, sys
import gymnasium as gym, ray
from gasil_wrappers import GASILConfig, wrap_stack
from gasil_wrappers.ray_owner import RayGASILOwner

def descendants(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = open(f"/proc/{pid}/task/{task}/children").read().split()
        except OSError:
            continue
        for c in map(int, children):
            out += [c] + descendants(c)
    return out

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
config = GASILConfig(gasil=True, d_every=64, group="shutdown")
owner = RayGASILOwner.start(config)
env = wrap_stack(gym.make("Pendulum-v1"), config, state=owner)
env.reset(seed=0)
for _ in range(300):
    if any(env.step(env.action_space.sample())[2:4]):
        env.reset()
owner.flush(wait=True)
print("PIDS", *sorted(set(descendants(os.getpid())) | {owner.info()["pid"]}))
owner.close()
names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
print("ACTORS", *names)
ray.shutdown()
"""


@pytest.mark.slow
def test_shutdown_leaves_no_process_actor_or_shared_memory_file(tmp_path):
    shm = set(os.listdir("/dev/shm"))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(SHUTDOWN_SCRIPT)], capture_output=True,
                         text=True, timeout=240, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in out.stdout.splitlines())
    assert lines["ACTORS"].strip() == ""  # the owner actor is gone before shutdown
    pids = [int(p) for p in lines["PIDS"].split()]
    assert len(pids) >= 3  # gcs, raylet, the owner actor, ...
    import time

    deadline = time.time() + 20
    alive = pids
    while alive and time.time() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
                 "zombie" not in open(f"/proc/{p}/status").read().lower()]
        time.sleep(0.5)
    assert not alive, f"processes left behind: {alive}"
    new = {f for f in set(os.listdir("/dev/shm")) - shm if "ray" in f.lower() or "plasma" in f.lower()
           or "gasil-owner" in f}
    assert not new, f"shared-memory files left behind: {new}"


def _ray_backend_env(config: GASILConfig) -> gym.Env:
    """A per-env stack whose owner is found through the config alone (backend="ray")."""
    return wrap_stack(gym.make("Pendulum-v1"), config)


@pytest.mark.slow
def test_async_vector_env_of_per_env_stacks_shares_the_ray_owner(cluster, group, monkeypatch):
    """backend="ray": AsyncVectorEnv's subprocess workers feed the one actor (no handle passed)."""
    import functools

    # Workers join the cluster "auto" finds; under pytest-xdist each test process runs a cluster of its own.
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    config = CONFIG.replace(group=group, d_every=128, backend="ray")
    with RayGASILOwner.start(config) as owner:
        envs = gym.vector.AsyncVectorEnv([functools.partial(_ray_backend_env, config)] * 2, context="spawn")
        envs.reset(seed=0)
        for _ in range(300):
            envs.step(envs.action_space.sample())
        envs.close()  # the workers ship what they hold when their envs close
        import time

        deadline = time.time() + 30  # the workers' last shipments may reach the actor after this call
        while owner.info()["policy_steps"] < 598 and time.time() < deadline:
            time.sleep(0.2)
        info = owner.info()
        # Both workers' samples reached the one owner: 300 vector steps, minus each worker's autoreset step
        # after its 200-step Pendulum episode (gymnasium's next-step autoreset: no policy step there).
        assert info["policy_steps"] == 598
        assert info["rounds"] >= 1
    with pytest.raises(ValueError, match="differs from the owner"):  # a config that is not the actor's
        with RayGASILOwner.start(config.replace(group=group + "-b")):
            _ray_backend_env(config.replace(group=group + "-b", alpha=0.5))
