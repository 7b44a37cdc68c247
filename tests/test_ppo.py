"""Tests of algos/ppo.py: CLI, determinism, bitwise resume, bad checkpoints, registered ids, evaluation.

Runs are tiny (a few hundred Hopper-v5 steps, rollouts of 128, 4 minibatches, 2 epochs) and run in
this process, except the --help checks. Every run gets its own --stack.group: gasil_wrappers shares one
GASIL owner between envs with equal settings in a process, and tests must not share.
"""

import csv
import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from experiments.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "algos" / "ppo.py"
TINY = ["--total-timesteps", "512", "--num-steps", "128", "--num-minibatches", "4", "--update-epochs", "2",
        "--progress-bar", "False"]
GASIL = ["--stack.gasil", "True", "--stack.delay", "5", "--stack.d-every", "128",
         "--stack.buffer-steps", "200"]
_groups = itertools.count()


@pytest.fixture(scope="module")
def ppo():
    return load_script("ppo")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ goes to a scratch folder
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def train(ppo, *flags: str, group: str | None = None) -> dict:
    group = group or f"test{next(_groups)}"
    args = ppo.tyro.cli(ppo.Args, args=[*TINY, "--stack.group", group, *flags],
                        config=(ppo.tyro.conf.FlagConversionOff,))
    return ppo.train(args)


def read_rows(path) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        return [(row["step"], row["true_return"], row["length"]) for row in csv.DictReader(f)]


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["agent"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=env,
                          timeout=120)


def test_help_lists_flags_with_docstrings():
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for flag in ("--env-id", "--num-envs", "--vector", "--csv-path", "--checkpoint-every", "--resume",
                 "--stack.gasil", "--stack.delay", "--stack.alpha", "--stack.d-every",
                 "--stack.seed", "--seed"):
        assert flag in out.stdout, flag
    assert "pay the summed env reward" in out.stdout  # the stack's own field docstring
    assert "steps per sub-env per rollout" in out.stdout  # ours
    out = run_cli("evaluate", "--help")
    assert out.returncode == 0, out.stderr
    assert "--model-path" in out.stdout and "--episodes" in out.stdout


def test_same_seed_same_run(ppo):
    a = train(ppo, *GASIL, "--run-name", "a", "--csv-path", "a.csv", "--save-model", "True")
    b = train(ppo, *GASIL, "--run-name", "b", "--csv-path", "b.csv", "--save-model", "True")
    assert a["finished"] and a["global_step"] == 512
    rows = read_rows("a.csv")
    assert len(rows) > 3 and rows == read_rows("b.csv")
    assert_same_weights(weights(a["model_path"]), weights(b["model_path"]))
    assert a["gasil"]["rounds"] >= 2  # the discriminator trained, so its reward shaped these runs
    with open("a.csv", newline="") as f:
        assert next(csv.reader(f)) == ["run", "step", "true_return", "length"]
    steps, lengths = (np.array([int(row[i]) for row in rows]) for i in (0, 2))
    assert (lengths == np.diff(steps, prepend=0)).all()  # one env: an episode's steps end at its row


def test_resume_is_bitwise_identical_with_gasil_on_hopper(ppo):
    """2K steps straight vs K steps, checkpoint, stop at 1.5K (as if killed), resume to 2K."""
    flags = [*GASIL, "--save-model", "True", "--stack.group", "resume"]
    full = train(ppo, *flags, "--run-name", "full", "--csv-path", "full.csv")
    part = train(ppo, *flags, "--run-name", "part", "--csv-path", "part.csv",
                 "--checkpoint-every", "256", "--stop-after-steps", "384")
    assert not part["finished"] and part["global_step"] == 384
    assert not os.path.exists("part.csv") and os.path.exists("part.csv.partial")
    assert max(int(step) for step, _, _ in read_rows("part.csv.partial")) > 256  # rows the resume must drop

    ckpt = torch.load("runs/part/checkpoint.pt", weights_only=False)
    assert ckpt["global_step"] == 256
    assert ckpt["envs"]["owners"][0]["rounds"] >= 1  # D, its optimizer and its RNG are part of the state
    chain = {layer["class"]: layer["state"] for layer in ckpt["envs"]["envs"][0]}
    assert chain["TimeLimit"]["elapsed_steps"] > 0  # checkpointed mid-episode
    assert chain["HopperEnv"]["simulator"]["qpos"].shape == (6,)  # MuJoCo's state, not its objects

    resumed = train(ppo, *flags, "--csv-path", "part.csv", "--checkpoint-every", "256",
                    "--resume", "runs/part/checkpoint.pt")
    assert resumed["finished"] and resumed["run_name"] == "part"  # the run name comes from the checkpoint
    assert_same_weights(weights(full["model_path"]), weights(resumed["model_path"]))
    assert read_rows("full.csv") == read_rows("part.csv")


def test_resume_is_bitwise_identical_on_point_mass(ppo):
    """The same on the pure-python PointMass env, whose state is its attributes (no simulator)."""
    flags = ["--env-id", "gasil_wrappers:PointMass-v0", *GASIL, "--save-model", "True", "--stack.group", "pm"]
    full = train(ppo, *flags, "--run-name", "full", "--csv-path", "full.csv")
    train(ppo, *flags, "--run-name", "part", "--csv-path", "part.csv", "--checkpoint-every", "256",
          "--stop-after-steps", "384")
    resumed = train(ppo, *flags, "--csv-path", "part.csv", "--resume", "runs/part/checkpoint.pt")
    assert_same_weights(weights(full["model_path"]), weights(resumed["model_path"]))
    assert read_rows("full.csv") == read_rows("part.csv")


def test_corrupt_checkpoint_is_a_clear_error(ppo, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(RuntimeError, match="bad.pt"):
        train(ppo, "--resume", str(bad))


def test_checkpoint_of_another_env_is_a_clear_error(ppo):
    train(ppo, "--run-name", "hop", "--checkpoint-every", "256", "--total-timesteps", "256", group="hop")
    with pytest.raises(ValueError, match=r"checkpoint\.pt.*env_id: checkpoint 'Hopper-v5', this run 'Pend"):
        train(ppo, "--env-id", "Pendulum-v1", "--total-timesteps", "256",
              "--resume", "runs/hop/checkpoint.pt", group="hop")


def test_registered_gasil_id_runs(ppo):
    result = train(ppo, "--env-id", "gasil_wrappers:GASIL-DelayedHopper-v5", "--total-timesteps", "256",
                   "--csv-path", "reg.csv")
    assert result["finished"] and len(read_rows("reg.csv")) > 0
    assert result["gasil"] is not None and result["gasil"]["policy_steps"] == 256


def test_two_sync_envs_and_async_guard(ppo):
    result = train(ppo, "--num-envs", "2", "--num-steps", "64", "--total-timesteps", "256", *GASIL)
    assert result["finished"] and result["global_step"] == 256
    assert result["gasil"]["policy_steps"] == 256  # both sub-envs feed one owner
    with pytest.raises(ValueError, match="subprocess sub-envs cannot share"):
        train(ppo, "--vector", "async", "--num-envs", "2", *GASIL)
    with pytest.raises(ValueError, match="subprocess sub-envs cannot share"):  # an id that has its own stack
        train(ppo, "--vector", "async", "--num-envs", "2", "--env-id", "gasil_wrappers:GASIL-PointMass-v0")


def test_async_vector_env_runs(ppo):
    result = train(ppo, "--vector", "async", "--num-envs", "2", "--env-id", "Pendulum-v1",
                   "--csv-path", "async.csv", "--save-model", "True")
    assert result["finished"] and result["global_step"] == 512 and result["gasil"] is None
    assert len(read_rows("async.csv")) == 2  # Pendulum's episodes last 200 steps: one in each sub-env


def test_checkpoint_from_other_wrapper_code_is_a_clear_error(ppo):
    train(ppo, "--run-name", "old", "--checkpoint-every", "256", "--total-timesteps", "256", group="old")
    ckpt = torch.load("runs/old/checkpoint.pt", weights_only=False)
    layers = {layer["class"]: layer["state"] for layer in ckpt["envs"]["envs"][0]}
    layers["RecordEpisodeStatistics"]["a_key_this_code_does_not_save"] = 0
    torch.save(ckpt, "edited.pt")
    with pytest.raises(ValueError, match="edited.pt.*RecordEpisodeStatistics.*other code"):
        train(ppo, "--total-timesteps", "256", "--resume", "edited.pt", group="old")


def test_evaluate_returns_finite_true_returns(ppo):
    trained = train(ppo, "--total-timesteps", "256", "--save-model", "True", "--stack.delay", "5")
    eval_args = ppo.EvalArgs(model_path=trained["model_path"], episodes=3)
    returns = ppo.evaluate(eval_args)
    assert len(returns) == 3 and all(np.isfinite(returns))
    assert returns == ppo.evaluate(eval_args)  # mean actions, seeded resets


def test_evaluate_video_records_or_is_skipped_with_a_warning(ppo, tmp_path):
    trained = train(ppo, "--total-timesteps", "128", "--num-steps", "128", "--save-model", "True")
    eval_args = ppo.EvalArgs(model_path=trained["model_path"], episodes=1, video=True, max_episode_steps=10,
                             video_folder=str(tmp_path / "videos"))  # software rendering: ~0.1 s a frame
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returns = ppo.evaluate(eval_args)
    assert len(returns) == 1 and np.isfinite(returns[0])
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert videos or any("cannot render" in str(w.message) for w in caught)


def test_evaluate_rejects_a_non_model_file(ppo, tmp_path):
    bad = tmp_path / "x.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="x.model"):
        ppo.evaluate(ppo.EvalArgs(model_path=str(bad)))


class NaNAfter20(gym.Env):
    """A 1-D env whose observations turn NaN after 20 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1), {}

    def step(self, action):
        self.t += 1
        obs = np.full(1, np.nan if self.t > 20 else float(self.t))
        return obs, 0.0, False, self.t >= 100, {}


def test_nan_observation_stops_with_a_clear_error(ppo):
    gym.register("TestNaNAfter20-v0", entry_point=NaNAfter20, disable_env_checker=True)
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(ppo, "--env-id", "TestNaNAfter20-v0")


def test_timeout_bootstrap_adds_gamma_v_of_the_observation_a_time_limit_cut_at(ppo):
    class SumOfObs:  # V(s) = sum of s
        def value(self, obs):
            return obs.sum(-1)

    final = np.empty(3, dtype=object)
    final[:] = [np.array([1.0, 2.0]), np.array([10.0, 0.0]), None]
    infos = {"final_obs": final, "_final_obs": np.array([True, True, False])}
    # sub-env 0: truncated; 1: truncated and terminated on the same step (the end is real); 2: running
    cut, bonus = ppo.run_utils.timeout_bootstrap(SumOfObs(), infos, np.array([False, True, False]),
                                       np.array([True, True, False]), gamma=0.9)
    assert cut.tolist() == [0] and bonus.tolist() == [pytest.approx(2.7)]


@pytest.mark.parametrize("script", ["ppo_sil", "ppo_bc"])
def test_the_other_scripts_bootstrap_at_time_limits_too(script):
    """PPO+SIL and PPO+BC share the flag (run_utils.Args) and its helper: it changes what they learn."""
    module = load_script(script)
    flags = [*TINY, "--env-id", "Pendulum-v1", "--stack.delay", "5", "--stack.buffer-steps", "400",
             "--save-model", "True"]
    trained = []
    for truncation in ("end", "bootstrap"):
        argv = [*flags, "--run-name", truncation, "--truncation", truncation]
        args = module.tyro.cli(module.Args, args=argv, config=(module.tyro.conf.FlagConversionOff,))
        trained.append(weights(module.train(args)["model_path"]))
    assert any(not torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_truncation_flag_changes_training_and_old_checkpoints_still_resume(ppo, tmp_path):
    """--truncation bootstrap changes what PPO learns on a task that only ever truncates (Pendulum); a
    checkpoint written before the flag existed resumes as --truncation end, its behaviour then."""
    flags = ["--env-id", "Pendulum-v1", "--save-model", "True"]
    end = train(ppo, *flags, "--run-name", "end", group="trunc")
    boot = train(ppo, *flags, "--run-name", "boot", "--truncation", "bootstrap", group="trunc")
    a, b = weights(end["model_path"]), weights(boot["model_path"])
    assert any(not torch.equal(a[k], b[k]) for k in a)
    train(ppo, *flags, "--run-name", "old", "--checkpoint-every", "256", "--stop-after-steps", "256",
          group="trunc")
    ckpt = torch.load("runs/old/checkpoint.pt", weights_only=False)
    del ckpt["args"]["truncation"]  # as older code wrote it
    torch.save(ckpt, "runs/old/checkpoint.pt")
    with pytest.raises(ValueError, match="truncation: checkpoint 'end', this run 'bootstrap'"):
        train(ppo, *flags, "--truncation", "bootstrap", "--resume", "runs/old/checkpoint.pt", group="trunc")
    resumed = train(ppo, *flags, "--resume", "runs/old/checkpoint.pt", group="trunc")
    assert_same_weights(weights(end["model_path"]), weights(resumed["model_path"]))
