"""Tests of gasil_wrappers/process_state.py: the process-backed GASIL owner.

Equivalence, stated precisely (docs/scale_out.md explains why it cannot be more):

- same weights => same rewards: a worker's −log D(s, a) for every step is bitwise what the server's
  real D gives (s, a) with the weights of the version the worker used (checked for 10k steps of four
  async workers, across every D round);
- with one async worker, the server sees the samples and episodes in the sync order, so every D
  version is bitwise the sync run's: every step scored by the same version as in the sync run gets
  bitwise the same shaped reward (only the steps right after a round, before the worker picks the
  new weights up, differ);
- before D's first round, shaped rewards are the env rewards in every setting.

No psutil: orphans are looked for with ``multiprocessing.active_children()`` and ``os.kill(pid, 0)``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from gasil_wrappers import (
    Discriminator,
    GASILConfig,
    GASILOwnerError,
    GASILState,
    ProcessGASILState,
    find_state,
    wrap_stack,
)
from gasil_wrappers.process_state import DiscriminatorSnapshot, _env_name
from tests.conftest import mujoco_id

ROOT = Path(__file__).resolve().parents[1]
HOPPER = mujoco_id("Hopper")  # v5 on gymnasium 1.x, v4 on 0.29
CONFIG = GASILConfig(gasil=True, delay=5, obs_noise_std=0.01, d_every=500, d_updates=5, buffer_steps=300,
                     backend="process")
_groups = itertools.count()


def fresh(config: GASILConfig = CONFIG, **changes) -> GASILConfig:
    return config.replace(group=f"process-test-{os.getpid()}-{next(_groups)}", **changes)


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture(autouse=True)
def no_orphans():
    """Every test leaves no child process behind (and a failed test's leftovers don't fail the next)."""
    yield
    left = not wait_until(lambda: not multiprocessing.active_children(), 10)
    leftovers = multiprocessing.active_children()
    for child in leftovers:
        child.kill()
        child.join()
    assert not left, leftovers


class Probe(gym.Wrapper):
    """Outermost: puts the D version (training rounds) that scored this step into info["probe_version"]."""

    def __init__(self, env):
        super().__init__(env)
        self.owner = find_state(env)

    def step(self, action):
        before = self.owner.rounds if isinstance(self.owner, GASILState) else None
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["probe_version"] = before if before is not None else self.owner.version
        return obs, reward, terminated, truncated, info


def run(envs, steps: int, seed: int = 7):
    """Pre-drawn actions; returns acted-on obs, actions, rewards, versions, D rewards, env rewards."""
    n = envs.num_envs
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, n, 3))
    obs, _ = envs.reset(seed=seed)
    out = {k: np.zeros((steps, n)) for k in ("reward", "d", "env_reward")}
    out["version"] = np.full((steps, n), -1)
    out["obs"] = np.zeros((steps, n, obs.shape[1]))
    for t in range(steps):
        out["obs"][t] = obs
        obs, out["reward"][t], _, _, infos = envs.step(actions[t])
        if "probe_version" in infos:  # absent in a step where every sub-env was reset (next-step autoreset)
            out["version"][t] = np.where(infos["_probe_version"], infos["probe_version"], -1)
        diag = infos.get("gasil", {})
        for key, name in (("d", "discriminator_reward"), ("env_reward", "env_reward")):
            if isinstance(diag, dict) and name in diag:
                out[key][t] = np.where(diag["_" + name], diag[name], out[key][t])
            elif not isinstance(diag, dict):  # gymnasium 0.29: an object array of per-env dicts
                for j in np.flatnonzero(infos["_gasil"]):
                    out[key][t, j] = diag[j].get(name, 0.0)
        final = infos.get("final_info")
        if final is not None and not isinstance(final, dict):  # gymnasium 0.29: finished envs' infos
            for j in np.flatnonzero(infos["_final_info"]):
                out["version"][t, j] = final[j]["probe_version"]
                out["d"][t, j] = final[j]["gasil"].get("discriminator_reward", 0.0)
                out["env_reward"][t, j] = final[j]["gasil"]["env_reward"]
    out["actions"] = actions
    return out


def hopper(config, state=None):
    return lambda: Probe(wrap_stack(gym.make(HOPPER), config, state=state))


def test_one_async_worker_matches_sync_whenever_the_weight_version_matches():
    steps = 10_000
    sync = gym.vector.SyncVectorEnv([hopper(fresh(backend="inprocess"))])
    ref = run(sync, steps)
    sync.close()

    config = fresh()  # backend="process", found lazily: AsyncVectorEnv's dummy env starts the server
    envs = gym.vector.AsyncVectorEnv([hopper(config)])
    owner = ProcessGASILState.shared(config, HOPPER)
    got = run(envs, steps)
    envs.close()  # the worker says bye: the server stops by itself
    assert wait_until(lambda: not owner._process.is_alive())
    assert "every worker process closed its envs" in owner.error
    owner.close()

    np.testing.assert_array_equal(got["obs"], ref["obs"])  # same trajectories (rewards don't steer them)
    stepped = ref["version"] >= 0
    np.testing.assert_array_equal(got["version"] >= 0, stepped)
    same = stepped & (got["version"] == ref["version"])
    assert ref["version"].max() >= 15
    # Bitwise equal rewards wherever the worker used the weight version the sync run used ...
    np.testing.assert_array_equal(got["reward"][same], ref["reward"][same])
    # ... which is most steps: each version the worker used was (nearly always) used by the sync run
    # for some of the same steps; the worker only picks new weights up a little later.
    versions = np.unique(got["version"][stepped])
    overlapping = [v for v in versions if (same & (ref["version"] == v)).any()]
    assert len(overlapping) >= len(versions) / 2 and same.sum() > stepped.sum() / 2
    lag = stepped & ~same
    assert (got["version"][lag] < ref["version"][lag]).all()  # a worker can only lag behind
    print(f"\n1 async worker: {same.sum()} of {stepped.sum()} steps scored by the sync run's version, "
          f"{lag.sum()} lagging")


def test_four_async_workers_score_every_step_with_the_published_weights():
    """10k steps (4 x 2500), ~20 rounds: each reward is bitwise the server's D of that version on (s, a)."""
    config = fresh(delay=1)
    sync = gym.vector.SyncVectorEnv([hopper(fresh(delay=1, backend="inprocess"))] * 4)
    ref = run(sync, 2500)
    sync.close()
    with ProcessGASILState.start(config, HOPPER, keep_history=True) as owner:
        envs = gym.vector.AsyncVectorEnv([hopper(config, owner)] * 4)
        got = run(envs, 2500)
        history = owner.published_discriminators()
        info = owner.server_info()
        envs.close()
    assert len(info["worker_processes"]) == 4

    np.testing.assert_array_equal(got["obs"], ref["obs"])
    stepped = got["version"] >= 0
    untrained, trained = stepped & (got["version"] == 0), got["version"] > 0
    assert got["version"].max() >= 10 and untrained.any()
    np.testing.assert_array_equal(got["reward"][untrained], got["env_reward"][untrained])  # w·r, α=0 before D
    np.testing.assert_array_equal(got["reward"][untrained & (ref["version"] == 0)],
                                  ref["reward"][untrained & (ref["version"] == 0)])
    checked = 0
    for v in np.unique(got["version"][trained]):
        d = Discriminator(14, config.d_hidden, lr=config.d_lr, entropy_coef=config.d_entropy_coef,
                          input_clip=config.d_input_clip, rng=np.random.default_rng(0))
        d.load_state_dict(history[v])
        for t, j in zip(*np.nonzero(got["version"] == v)):
            row = np.concatenate([got["obs"][t, j], got["actions"][t, j]])
            expected = float(d.reward(row))
            assert got["d"][t, j] == expected
            assert got["reward"][t, j] == 1.0 * got["env_reward"][t, j] + config.alpha * expected
            checked += 1
    assert checked >= 5000


def test_same_weights_give_bitwise_the_in_process_rewards():
    """Load an in-process state into the server: the process-backed stack scores exactly like it."""
    config = fresh(d_every=200, d_apply_lag=0)  # rounds take effect at once: stop right after one
    local = GASILState(config.replace(backend="inprocess"))
    env = wrap_stack(gym.make(HOPPER), config.replace(backend="inprocess"), state=local)
    env.reset(seed=3)
    while local.rounds < 3 or local._since_round:  # stop right after a round: 150 steps won't start one
        if any(env.step(env.action_space.sample())[2:4]):
            env.reset()
    with ProcessGASILState.start(config, HOPPER) as owner:
        penv = Probe(wrap_stack(gym.make(HOPPER), config, state=owner))
        owner.load_state_dict(local.state_dict())
        assert owner.buffer.returns().tolist() == local.buffer.returns().tolist()
        obs, _ = penv.reset(seed=11)
        for _ in range(150):  # fewer than d_every: no round, the loaded weights score every step
            action = penv.action_space.sample()
            row = np.concatenate([obs, action])
            obs, reward, terminated, truncated, info = penv.step(action)
            assert info["probe_version"] == local.rounds
            assert info["gasil"]["discriminator_reward"] == float(local.discriminator.reward(row))
            if terminated or truncated:
                obs, _ = penv.reset()
        rows = np.random.default_rng(1).normal(size=(5, 14))
        np.testing.assert_array_equal(owner.discriminator_reward(rows[:, :11], rows[:, 11:]),
                                      local.discriminator_reward(rows[:, :11], rows[:, 11:]))
        saved = owner.state_dict()
        assert saved["rounds"] == local.rounds and saved["policy_steps"] == local.policy_steps + 150
        assert set(owner.diagnostics()) == set(local.diagnostics())
        with pytest.raises(ValueError, match="cannot share a state"):
            wrap_stack(gym.make("Pendulum-v1"), config, state=owner)
        penv.close()


def test_snapshot_forward_is_discriminators_own():
    d = Discriminator(5, (7, 3), rng=np.random.default_rng(0))
    d.normalizer.update(np.random.default_rng(1).normal(size=(50, 5)) * 3)
    d.refresh_snapshot()
    flat = np.empty(DiscriminatorSnapshot.size(5, (7, 3)))
    d.forward.dump(flat)
    snap = DiscriminatorSnapshot(5, (7, 3), d.input_clip)
    snap.load(flat)
    x = np.random.default_rng(2).normal(size=(9, 5)) * 4
    np.testing.assert_array_equal(snap.reward(x), d.reward(x))
    assert all(snap.reward(row) == d.reward(row) for row in x)


def test_handle_pickles_to_a_client_of_the_same_server():
    import pickle

    config = fresh()
    with ProcessGASILState.start(config, "k") as owner:
        client = pickle.loads(pickle.dumps(owner))
        assert client is not owner and repr(client).startswith("ProcessGASILState(client")
        assert client.server_info()["server_pid"] == owner.server_pid
        client.close()  # a client's close only disconnects it
        assert owner.server_info()["clients"] == 1 and owner._process.is_alive()  # just the owner now


class CrashAt(gym.Wrapper):
    """Kills its process (no cleanup, like a segfault) at step ``at``."""

    def __init__(self, env, at: int):
        super().__init__(env)
        self.at, self.t = at, 0

    def step(self, action):
        self.t += 1
        if self.t == self.at:
            os._exit(1)
        return self.env.step(action)


def test_worker_crash_stops_the_server_with_a_clear_error():
    config = fresh()
    owner = ProcessGASILState.start(config, HOPPER)
    thunks = [hopper(config, owner),
              lambda: CrashAt(wrap_stack(gym.make(HOPPER), config, state=owner), at=30)]
    envs = gym.vector.AsyncVectorEnv(thunks)
    envs.reset(seed=0)
    crashed_pid = envs.processes[1].pid
    with pytest.raises((EOFError, ConnectionError, OSError, GASILOwnerError)):
        for _ in range(100):
            envs.step(envs.action_space.sample())
    assert wait_until(lambda: not owner._process.is_alive())  # the server exits by itself
    assert f"pid {crashed_pid}" in owner.error and "exited without closing its env" in owner.error
    assert "Worker<AsyncVectorEnv>-1" in owner.error
    with pytest.raises(GASILOwnerError, match="crashed or was killed"):
        owner.check()
    with pytest.raises(GASILOwnerError, match="crashed or was killed"):
        owner.diagnostics()
    envs.close(terminate=True)
    owner.close()
    assert gone(owner.server_pid) and not os.path.exists(owner._shm_path)


def _crash_client(handle, config):
    env = wrap_stack(gym.make(HOPPER), config, state=handle)
    env.reset(seed=1)
    env.step(env.action_space.sample())
    os._exit(3)


def test_other_workers_raise_at_their_next_step_after_a_crash():
    config = fresh()
    with ProcessGASILState.start(config, HOPPER) as owner:
        env = wrap_stack(gym.make(HOPPER), config, state=owner)  # a client in this process
        env.reset(seed=0)
        env.step(env.action_space.sample())
        worker = multiprocessing.get_context("fork").Process(target=_crash_client, args=(owner, config))
        worker.start()
        worker.join()
        assert wait_until(lambda: not owner._process.is_alive())
        crash = rf"worker process .* \(pid {worker.pid}\) exited without closing"
        with pytest.raises(GASILOwnerError, match=crash):
            env.step(env.action_space.sample())


def test_close_shuts_everything_down():
    config = fresh()
    owner = ProcessGASILState.start(config, HOPPER)
    envs = gym.vector.AsyncVectorEnv([hopper(config, owner)] * 2)
    envs.reset(seed=0)
    for _ in range(50):
        envs.step(envs.action_space.sample())
    workers = [p.pid for p in envs.processes]
    envs.close()
    owner.close()  # idempotent with the server's own stop once all workers closed
    owner.close()
    # This test's own processes, not active_children(): other tests may share this pytest worker.
    assert all(gone(pid) for pid in workers) and gone(owner.server_pid)
    assert not os.path.exists(owner._shm_path)
    assert _env_name(config, HOPPER) not in os.environ  # this owner's address is withdrawn
    with pytest.raises(GASILOwnerError, match="closed"):
        owner.diagnostics()


def test_lazy_owner_is_shared_by_workers_and_restarted_after_close():
    settings = dict(d_every=100, d_updates=5, buffer_steps=300, backend="process",
                    group=f"process-test-{os.getpid()}-{next(_groups)}")
    config = GASILConfig(gasil=True, **settings)
    envs = gym.vector.AsyncVectorEnv([lambda: gym.make(f"gasil_wrappers:GASIL-{HOPPER}", **settings)] * 3)
    try:
        envs.reset(seed=0)
        for _ in range(200):
            envs.step(envs.action_space.sample())
        handles = envs.get_attr("state")  # the handles pickle back: small, no torch module in them
        first = ProcessGASILState.shared(config, HOPPER)
        assert {h.server_pid for h in handles} == {first.server_pid}
        # one D for all three workers (the server may still be reading their last chunks)
        assert wait_until(lambda: first.diagnostics()["rounds"] >= 3)
    finally:
        envs.close()
    assert wait_until(lambda: not first._process.is_alive())
    again = ProcessGASILState.shared(config, HOPPER)
    assert again is not first and again._process.is_alive()
    again.close()
    first.close()


def test_spawned_workers_find_the_lazy_owner():
    config = fresh(d_every=64)
    envs = gym.vector.AsyncVectorEnv([lambda: wrap_stack(gym.make(HOPPER), config)], context="spawn")
    owner = ProcessGASILState.shared(config, HOPPER)  # started by the dummy env, found via the environment
    envs.reset(seed=0)
    for _ in range(200):
        envs.step(envs.action_space.sample())
    assert len(owner.server_info()["worker_processes"]) == 1
    assert wait_until(lambda: owner.rounds >= 1)
    envs.close()
    owner.close()


def test_a_worker_never_starts_its_own_server():
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            ProcessGASILState.shared(fresh(), "nowhere")
        except GASILOwnerError as e:
            queue.put(str(e))

    p = ctx.Process(target=child)
    p.start()
    p.join()
    assert "no GASIL owner server" in queue.get(timeout=5)


def test_server_exits_when_its_owner_process_is_killed(tmp_path):
    script = textwrap.dedent("""
        import os, signal, sys
        from gasil_wrappers import GASILConfig, ProcessGASILState
        owner = ProcessGASILState.start(GASILConfig(gasil=True, backend="process"))
        print(owner.server_pid, owner._shm_path, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    server_pid, shm_path = result.stdout.split()
    assert wait_until(lambda: gone(int(server_pid)), 10)  # the watchdog noticed its parent died
    assert not os.path.exists(shm_path)


def test_torch_stays_out_of_the_hot_path(monkeypatch):
    config = fresh()
    with ProcessGASILState.start(config, HOPPER) as owner:
        env = wrap_stack(gym.make(HOPPER), config, state=owner)
        env.reset(seed=0)
        for _ in range(1200):  # D trains in the server
            if any(env.step(env.action_space.sample())[2:4]):
                env.reset()
        assert wait_until(lambda: owner.ready)
        monkeypatch.setattr(torch, "as_tensor", None)
        monkeypatch.setattr(torch, "from_numpy", None)
        for _ in range(50):
            if any(env.step(env.action_space.sample())[2:4]):
                env.reset()
        assert find_state(env) is owner  # find_state finds process-backed owners too
