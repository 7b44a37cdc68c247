"""Tests of gasil_wrappers.persistence: saving and restoring whole envs (wrapper chain, simulator, owner).

- a full stack (GASIL id on Hopper-v5, the algos/ scripts' wrappers) saved mid-episode continues bitwise
  as the uninterrupted env does, also in a fresh env (and, with hypothesis, from any step on PointMass);
- tests/fixtures/hopper_stack_state.pt, written by this code, still loads and continues after private
  attributes of DelayedReward and OwnerWrapper are renamed (simulated by rewriting their source);
- a chain of other classes or order, keys this code does not save, values of another kind, a corrupt
  or non-plain file, an unknown stateful wrapper: each a ValueError naming the layer or file;
- regression: checkpoints of the scripts hold documented keys and plain data, not pickled ``__dict__``s.

Regenerate the fixture (only when the env kind's format changes on purpose, bumping ENV_STATE_VERSION):
``python -m tests.test_persistence --write-fixture``.
"""

from __future__ import annotations

import inspect
import itertools
import re
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gasil_wrappers
from experiments.scripts import load_script
from gasil_wrappers import (
    DelayedReward,
    DiscriminatorRewardWrapper,
    GASILConfig,
    GASILState,
    ObservationNoise,
    TopKEpisodeRecorder,
    _owner_wrapper,
    delayed_reward,
    env_state_dict,
    find_state,
    load_env_state,
    load_env_state_dict,
    load_vector_env_state_dict,
    save_env_state,
)
from gasil_wrappers.persistence import ENV_STATE_VERSION, register_stateless, torch_load_plain

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "hopper_stack_state.pt"
CONTINUATION = ROOT / "tests" / "fixtures" / "hopper_stack_continuation.npz"
_groups = itertools.count()


@pytest.fixture(scope="module")
def run_utils():
    return load_script("run_utils")


def group() -> str:
    return f"persist-{next(_groups)}"


def scripts_env(run_utils, env_id: str, make_stack) -> gym.Env:
    """One sub-env as the algos/ scripts build it: `make_stack()` innermost, then their wrappers."""
    return run_utils.make_env(env_id, GASILConfig(), 0.99, make_stack=lambda *_, **__: make_stack())()


def hopper_id_env(run_utils) -> gym.Env:
    """GASIL-DelayedHopper-v5 (delay 20, GASIL) with noise, a normalized env reward and a quick D."""
    return scripts_env(run_utils, "gasil_wrappers:GASIL-DelayedHopper-v5", lambda: gym.make(
        "gasil_wrappers:GASIL-DelayedHopper-v5", group=group(), obs_noise_std=0.05, d_every=64,
        d_apply_lag=32, buffer_steps=300, env_reward_scale="normalized", seed=0))


def drive(env: gym.Env, actions: np.ndarray) -> list[tuple]:
    """Step through `actions` (resetting after an episode ends); what each step returned."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs.copy(), float(reward), terminated, truncated))
        if terminated or truncated:
            env.reset()
    return out


def assert_same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert np.array_equal(x[0], y[0]) and x[1:] == y[1:], f"step {t}: {x[1:]} != {y[1:]}"


# --- round trips -------------------------------------------------------------------------------------------
def test_hopper_id_stack_resumes_bitwise_mid_episode(run_utils):
    actions = np.random.default_rng(0).uniform(-1, 1, (600, 3))
    env = hopper_id_env(run_utils)
    env.reset(seed=0)
    drive(env, actions[:200])
    owner = find_state(env)
    assert owner.rounds >= 1 and len(owner.buffer) > 0  # D trained and the buffer holds episodes
    saved = env_state_dict(env)
    layers = {layer["class"]: layer["state"] for layer in saved["layers"]}
    assert layers["TimeLimit"]["elapsed_steps"] > 0 and layers["DelayedReward"]["step"] > 0  # mid-episode
    expected = drive(env, actions[200:])

    load_env_state_dict(env, saved)  # the same env, back in time
    assert_same(drive(env, actions[200:]), expected)

    fresh = hopper_id_env(run_utils)  # a new env (and owner) in the state of the first
    fresh.reset(seed=123)
    load_env_state_dict(fresh, saved)
    assert find_state(fresh) is not owner
    assert_same(drive(fresh, actions[200:]), expected)


V5_TASKS = [task for task in gasil_wrappers.registration.MUJOCO_TASKS if f"{task}-v5" in gym.registry]


@pytest.mark.parametrize("task", V5_TASKS)
def test_every_mujoco_task_of_the_delayed_ids_resumes_bitwise(run_utils, task):
    """Ant and Humanoid read body frames left by the last mj_step (torso xpos, the mass centre from
    xipos) before the next one: those are saved as they were, not recomputed from the restored qpos
    (which moved Ant's first reward after a resume by ~2e-5)."""
    env = gym.make(f"gasil_wrappers:Delayed{task}-v5", max_episode_steps=150)
    actions = np.random.default_rng(4).uniform(-0.4, 0.4, (300,) + env.action_space.shape)
    env.reset(seed=0)
    drive(env, actions[:37])
    env.reset()  # a reset mid-episode: counted in DelayedReward.cut_episodes, which is saved
    drive(env, actions[:61])
    saved = env_state_dict(env)
    expected = drive(env, actions[61:])
    fresh = gym.make(f"gasil_wrappers:Delayed{task}-v5", max_episode_steps=150)
    fresh.reset(seed=9)
    load_env_state_dict(fresh, saved)
    delayed = next(layer for layer in run_utils.wrapper_chain(fresh) if isinstance(layer, DelayedReward))
    assert delayed.cut_episodes == 1
    assert_same(drive(fresh, actions[61:]), expected)


def point_mass_env(run_utils) -> gym.Env:
    return scripts_env(run_utils, "PointMass-v0", lambda: gasil_wrappers.make_env("PointMass-v0", GASILConfig(
        gasil=True, delay=7, obs_noise_std=0.1, d_every=50, d_apply_lag=10, buffer_steps=200, group=group())))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), stop=st.integers(0, 260))
def test_any_step_of_a_point_mass_stack_resumes_bitwise(run_utils, seed, stop):
    actions = np.random.default_rng(seed).uniform(-1.2, 1.2, (stop + 120, 2))
    env = point_mass_env(run_utils)
    env.reset(seed=seed)
    drive(env, actions[:stop])
    saved = env_state_dict(env)
    expected = drive(env, actions[stop:])
    fresh = point_mass_env(run_utils)
    fresh.reset(seed=seed + 1)
    load_env_state_dict(fresh, saved)
    assert_same(drive(fresh, actions[stop:]), expected)


def point_mass_vector(run_utils, actions: np.ndarray):
    """The scripts' SyncVectorEnv of two PointMass GASIL stacks, stepped through ``actions``."""
    args = run_utils.Args(env_id="PointMass-v0", num_envs=2, num_steps=32, stack=GASILConfig(
        gasil=True, delay=5, d_every=64, d_apply_lag=0, buffer_steps=200, group=group(), seed=0))
    envs = run_utils.make_vector_env(args)
    envs.reset(seed=0)
    for action in actions:
        envs.step(action)
    return args, envs


def test_sync_vector_env_saves_a_shared_owner_once(run_utils, tmp_path):
    actions = np.random.default_rng(1).uniform(-1, 1, (300, 2, 2))
    args, envs = point_mass_vector(run_utils, actions[:150])
    save_env_state(envs, str(tmp_path / "vector.pt"))
    saved = torch_load_plain(str(tmp_path / "vector.pt"))
    assert saved["kind"] == "sync_vector_env" and len(saved["envs"]) == 2 and len(saved["owners"]) == 1
    expected = [envs.step(action)[:2] for action in actions[150:]]

    args = run_utils.Args(**{**vars(args), "stack": args.stack.replace(group=group())})
    other = run_utils.make_vector_env(args)
    other.reset(seed=5)
    load_env_state(other, str(tmp_path / "vector.pt"))
    for (obs, reward), action in zip(expected, actions[150:]):
        obs2, reward2 = other.step(action)[:2]
        assert np.array_equal(obs, obs2) and np.array_equal(reward, reward2)

    args = run_utils.Args(**{**vars(args), "num_envs": 3, "stack": args.stack.replace(group=group())})
    three = run_utils.make_vector_env(args)
    three.reset(seed=0)
    with pytest.raises(ValueError, match="2 sub-envs, this vector env 3"):
        load_vector_env_state_dict(three, saved)


# --- a committed checkpoint, loaded by code whose private attributes changed -------------------------------
def fixture_env(run_utils) -> gym.Env:
    """The fixture's env, built by hand (not through stack.py), so the chain only changes on purpose."""
    state = GASILState(GASILConfig(gasil=True, delay=5, obs_noise_std=0.05, d_every=64, d_apply_lag=16,
                                   buffer_steps=100, d_hidden=(16, 16), group=group(), seed=0,
                                   env_reward_scale="normalized"))

    def stack() -> gym.Env:
        env = DelayedReward(ObservationNoise(gym.make("Hopper-v5"), std=0.05), delay=5)
        return DiscriminatorRewardWrapper(TopKEpisodeRecorder(env, state), state)

    return scripts_env(run_utils, "Hopper-v5", stack)


def write_fixture() -> None:
    run_utils = load_script("run_utils")
    rng = np.random.default_rng(0)
    env = fixture_env(run_utils)
    env.reset(seed=0)
    layers = run_utils.wrapper_chain(env)
    noise = next(layer for layer in layers if isinstance(layer, ObservationNoise))
    delayed = next(layer for layer in layers if isinstance(layer, DelayedReward))
    # Stop mid-episode and mid-delay, near the end of a block of noise (the unused rows are saved).
    while noise._next < 990 or delayed._t % 5 == 0 or not delayed._running:
        drive(env, rng.uniform(-1, 1, (1, 3)))
    assert find_state(env).rounds >= 1
    FIXTURE.parent.mkdir(exist_ok=True)
    save_env_state(env, str(FIXTURE))
    actions = rng.uniform(-1, 1, (100, 3))
    steps = drive(env, actions)
    np.savez_compressed(CONTINUATION, actions=actions, obs=np.array([s[0] for s in steps]),
                        rewards=np.array([s[1] for s in steps]),
                        ended=np.array([s[2] or s[3] for s in steps]))


def renamed(cls: type, renames: dict[str, str]) -> dict:
    """The functions of `cls` as its source would define them with attributes renamed (old -> new)."""
    source = inspect.getsource(cls)
    for old, new in renames.items():
        source = re.sub(rf"\bself\.{old}\b", f"self.{new}", source)
    namespace = dict(vars(sys.modules[cls.__module__]))
    exec(compile(source, inspect.getsourcefile(cls), "exec"), namespace)
    return {name: value for name, value in vars(namespace[cls.__name__]).items() if inspect.isfunction(value)}


@pytest.fixture
def private_attributes_renamed(monkeypatch):
    """DelayedReward and OwnerWrapper as if a refactor had renamed every private attribute they save."""
    delayed = {"_pending": "_undelivered", "_return": "_true_return", "_t": "_steps",
               "_running": "_in_episode"}
    owner = {"_last_obs": "_obs_acted_on", "_running": "_live"}
    for cls, renames in ((delayed_reward.DelayedReward, delayed), (_owner_wrapper.OwnerWrapper, owner)):
        for name, function in renamed(cls, renames).items():
            monkeypatch.setattr(cls, name, function)


def test_committed_fixture_loads_and_continues(run_utils):
    expected = np.load(CONTINUATION)
    env = fixture_env(run_utils)
    env.reset(seed=7)
    load_env_state(env, str(FIXTURE))
    steps = drive(env, expected["actions"])
    # rtol, not bitwise: the fixture may be read on another CPU than the one that wrote it
    np.testing.assert_allclose([s[1] for s in steps], expected["rewards"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.array([s[0] for s in steps]), expected["obs"], rtol=1e-6, atol=1e-9)
    assert [s[2] or s[3] for s in steps] == expected["ended"].tolist()


def test_committed_fixture_loads_after_private_attributes_are_renamed(run_utils, private_attributes_renamed):
    env = fixture_env(run_utils)
    delayed = next(layer for layer in run_utils.wrapper_chain(env) if isinstance(layer, DelayedReward))
    assert "_undelivered" in vars(delayed) and "_pending" not in vars(delayed)  # the rename took effect
    test_committed_fixture_loads_and_continues(run_utils)
    saved = torch_load_plain(str(FIXTURE))
    layers = {layer["class"]: layer["state"] for layer in saved["layers"]}
    assert layers["DelayedReward"]["pending_reward"] != 0.0  # saved mid-delay: the continuation needs it


def test_fixture_is_a_version_1_env_state_which_this_code_still_reads():
    """The fixture was written with version 1. Version 2 changed only the ``sync_vector_env`` kind (its
    autoreset flags and vector wrappers) and added the ``gasil`` kind: the ``env`` kind is unchanged, so
    the tests above, which load the fixture, show that version-1 env files still load. A version 3 must
    look at this again (and regenerate the fixture if the env kind changes)."""
    saved = torch_load_plain(str(FIXTURE))
    assert (saved["format"], saved["version"], saved["kind"]) == ("gasil_wrappers.env_state", 1, "env")
    assert ENV_STATE_VERSION == 2
    assert FIXTURE.stat().st_size < 200_000


def test_a_version_1_vector_state_still_loads(run_utils):
    """Version 1 of the sync_vector_env kind had no autoreset flags and no vector wrappers."""
    actions = np.random.default_rng(2).uniform(-1, 1, (200, 2, 2))
    args, envs = point_mass_vector(run_utils, actions[:100])
    saved = gasil_wrappers.vector_env_state_dict(envs)
    assert saved["version"] == 2 and saved["wrappers"] == [] and len(saved["autoreset"]) == 2
    old = {key: value for key, value in saved.items() if key not in ("autoreset", "wrappers")}
    old["version"] = 1
    expected = [envs.step(action)[:2] for action in actions[100:]]
    args = run_utils.Args(**{**vars(args), "stack": args.stack.replace(group=group())})
    other = run_utils.make_vector_env(args)
    other.reset(seed=3)
    load_vector_env_state_dict(other, old)
    for (obs, reward), action in zip(expected, actions[100:]):
        obs2, reward2 = other.step(action)[:2]
        assert np.array_equal(obs, obs2) and np.array_equal(reward, reward2)


# --- errors ------------------------------------------------------------------------------------------------
def test_a_chain_of_other_classes_or_order_is_a_clear_error(run_utils):
    env = point_mass_env(run_utils)
    env.reset(seed=0)
    saved = env_state_dict(env)
    bare = gasil_wrappers.make_env("PointMass-v0", GASILConfig(gasil=True, delay=7, group=group()))
    bare.reset(seed=0)
    with pytest.raises(ValueError, match=r"layer 0: the saved chain has EpisodeEndInfo there, this env has "
                                         r"DiscriminatorRewardWrapper"):
        load_env_state_dict(bare, saved)
    swapped = gym.wrappers.ClipAction(gym.wrappers.RecordEpisodeStatistics(gym.make("PointMass-v0")))
    swapped.reset(seed=0)
    with pytest.raises(ValueError, match="layer 0: .*ClipAction"):
        load_env_state_dict(swapped, env_state_dict(gym.wrappers.RecordEpisodeStatistics(
            gym.wrappers.ClipAction(gym.make("PointMass-v0")))))


def test_corrupt_or_foreign_files_are_clear_errors(run_utils, tmp_path):
    env = fixture_env(run_utils)
    env.reset(seed=0)
    bad = tmp_path / "random.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="random.pt.*corrupt"):
        load_env_state(env, str(bad))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(FIXTURE.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.pt"):
        load_env_state(env, str(cut))
    pickled = tmp_path / "pickled.pt"  # what the old checkpoints held: wrapper attributes as objects
    normalizer = next(layer for layer in run_utils.wrapper_chain(env)
                      if isinstance(layer, gym.wrappers.NormalizeObservation))
    torch.save({"NormalizeObservation": {"obs_rms": normalizer.obs_rms}}, str(pickled))
    with pytest.raises(ValueError, match="pickled.pt.*(not|Unsupported global)"):
        load_env_state(env, str(pickled))
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, str(other))
    with pytest.raises(ValueError, match="other.pt.*not a gasil_wrappers env state"):
        load_env_state(env, str(other))
    newer = tmp_path / "newer.pt"
    torch.save({**torch_load_plain(str(FIXTURE)), "version": ENV_STATE_VERSION + 1}, str(newer))
    with pytest.raises(ValueError, match="newer.pt.*version"):
        load_env_state(env, str(newer))


@st.composite
def corruptions(draw, layers: list[dict]):
    """(layer index, key, mutation) for a state: a key dropped or added, or a value of the wrong kind
    (text, or a dict of unknown keys)."""
    i = draw(st.sampled_from([k for k, layer in enumerate(layers) if layer["state"]]))
    key = draw(st.sampled_from(sorted(layers[i]["state"])))
    return i, key, draw(st.sampled_from(["drop", "add", "text", "dict"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_corrupted_layer_is_a_value_error_naming_it(run_utils, data):
    env = point_mass_env(run_utils)
    env.reset(seed=0)
    drive(env, np.random.default_rng(0).uniform(-1, 1, (30, 2)))
    saved = env_state_dict(env)
    i, key, mutation = data.draw(corruptions(saved["layers"]))
    state = saved["layers"][i]["state"]
    if mutation == "drop":
        del state[key]
    elif mutation == "add":
        state[key + "_extra"] = 0
    else:
        state[key] = "corrupt" if mutation == "text" else {"corrupt": 1}
    cls = saved["layers"][i]["class"]
    with pytest.raises(ValueError, match=rf"layer {i} \({cls}\)"):
        load_env_state_dict(env, saved)


class Counter(gym.Wrapper):
    """A wrapper with state (a step counter) and no state_dict: persistence must not skip it."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return self.env.step(action)


class Stateless(gym.Wrapper):
    """A wrapper without any state of its own."""


def test_unknown_stateful_wrappers_fail_loudly_and_stateless_ones_pass():
    with pytest.raises(ValueError, match=r"layer 0 \(Counter\).*register_state_handler"):
        env_state_dict(Counter(gym.make("Pendulum-v1")))
    env = Stateless(gym.make("Pendulum-v1"))
    env.reset(seed=0)
    assert env_state_dict(env)["layers"][0] == {"class": "Stateless", "state": {}}
    register_stateless(Counter)  # the user's word for it
    try:
        assert env_state_dict(Counter(gym.make("Pendulum-v1")))["layers"][0]["state"] == {}
    finally:
        gasil_wrappers.persistence._HANDLERS.pop(Counter)


# --- regression: checkpoints used to pickle every wrapper's __dict__ ----------------------------------------
PUBLIC_KEYS = {
    "DelayedReward": {"running", "step", "pending_reward", "episode_return", "cut_episodes"},
    "TimeLimit": {"elapsed_steps"},
    "NormalizeObservation": {"obs_rms", "update_running_mean"},
    "HopperEnv": {"simulator", "kinematics", "np_random", "np_random_seed"},
}


def test_script_checkpoints_hold_documented_keys_and_plain_data_not_wrapper_attributes(tmp_path, monkeypatch):
    """Fails on the old approach: its checkpoints held `vars(layer)` (attribute names such as `_pending`,
    and objects such as RunningMeanStd and deque, which a plain-data load refuses)."""
    monkeypatch.chdir(tmp_path)
    ppo = load_script("ppo")
    args = ppo.tyro.cli(ppo.Args, args=[
        "--total-timesteps", "256", "--num-steps", "128", "--num-minibatches", "4", "--update-epochs", "1",
        "--progress-bar", "False", "--checkpoint-every", "128", "--stack.delay", "5",
        "--stack.group", group()],
        config=(ppo.tyro.conf.FlagConversionOff,))
    ppo.train(args)
    path = next((tmp_path / "runs").glob("*/checkpoint.pt"))
    ckpt = torch_load_plain(str(path))  # raises on any pickled object other than tensors and arrays
    layers = {layer["class"]: layer["state"] for layer in ckpt["envs"]["envs"][0]}
    for cls, keys in PUBLIC_KEYS.items():
        assert set(layers[cls]) == keys, cls

    def private_keys(value, path=""):
        if isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(key, str) and key.startswith("_"):
                    yield f"{path}.{key}"
                yield from private_keys(inner, f"{path}.{key}")
        elif isinstance(value, (list, tuple)):
            for k, inner in enumerate(value):
                yield from private_keys(inner, f"{path}[{k}]")

    assert list(private_keys(ckpt["envs"]["envs"])) == []


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-fixture"]:
        write_fixture()
        print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes) and {CONTINUATION}")
    else:
        print(__doc__)


def test_a_returns_csv_from_before_the_length_column_resumes_with_its_rows(run_utils, tmp_path):
    """A campaign's partial CSV written by older code (run,step,true_return) keeps its rows up to the
    checkpoint on resume; the new header adds ``length``, empty for those rows."""
    path = str(tmp_path / "seed1.csv")
    (tmp_path / "seed1.csv.partial").write_text("run,step,true_return\nr,100,1.5\nr,250,2.5\nr,400,3.5\n")
    f, writer = run_utils.open_returns_csv(path, resume_step=300)
    writer.writerow(["r", 420, repr(4.5), 20])
    f.close()
    assert (tmp_path / "seed1.csv.partial").read_text().splitlines() == [
        "run,step,true_return,length", "r,100,1.5,", "r,250,2.5,", "r,420,4.5,20"]
