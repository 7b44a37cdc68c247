"""Tests of algos/ppo_bc.py: the BC loss on hand-built batches and on a fixed buffer, the observation
normalization of buffer rows, the guards, and tiny Hopper runs (bitwise resume, a registered id).

Runs are tiny (512 Hopper-v5 steps, rollouts of 128, 4 minibatches, 2 epochs) and run in this process,
except the --help check. Every run gets its own --stack.group (see tests/test_ppo.py).
"""

import csv
import doctest
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from experiments.scripts import load_script
from gasil_wrappers import GoodTrajectoryBuffer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "algos" / "ppo_bc.py"
TINY = ["--total-timesteps", "512", "--num-steps", "128", "--num-minibatches", "4", "--update-epochs", "2",
        "--progress-bar", "False"]
SMALL_BUFFER = ["--stack.delay", "5", "--stack.buffer-steps", "200"]
_groups = itertools.count()


@pytest.fixture(scope="module")
def bc():
    return load_script("ppo_bc")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ goes to a scratch folder
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def train(bc, *flags: str, group: str | None = None) -> dict:
    group = group or f"bc{next(_groups)}"
    args = bc.tyro.cli(bc.Args, args=[*TINY, "--stack.group", group, *flags],
                       config=(bc.tyro.conf.FlagConversionOff,))
    return bc.train(args)


def read_rows(path) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        return [(row["step"], row["true_return"], row["length"]) for row in csv.DictReader(f)]


def test_help_lists_bc_and_shared_flags():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--env-id", "--seed", "--csv-path", "--checkpoint-every", "--resume", "--stack.delay",
                 "--stack.obs-noise-std", "--stack.top-k", "--stack.buffer-steps", "--bc-coef",
                 "--bc-batch-size"):
        assert flag in out.stdout, flag


def test_doctests(bc):
    assert doctest.testmod(bc).failed == 0


def test_bc_loss_is_the_gaussian_negative_log_likelihood(bc):
    torch.manual_seed(0)
    agent = bc.Agent(obs_dim=3, act_dim=2)
    with torch.no_grad():
        agent.actor_logstd.copy_(torch.tensor([[-0.5, 0.3]]))
    obs, actions = torch.randn(5, 3), torch.randn(5, 2)
    with torch.no_grad():
        policy = torch.distributions.Normal(agent.actor_mean(obs), agent.actor_logstd.exp())
        expected = -policy.log_prob(actions).sum(-1).mean()
    assert bc.bc_loss(agent, obs, actions).item() == pytest.approx(expected.item(), rel=1e-5)


def fitted_normalizer(data: np.ndarray) -> gym.wrappers.NormalizeObservation:
    """A NormalizeObservation over a 1-D env whose statistics have seen `data`."""
    env = gym.make("Pendulum-v1")
    normalizer = gym.wrappers.NormalizeObservation(env)
    normalizer.obs_rms.update(data)
    return normalizer


def test_buffer_rows_are_normalized_as_the_policy_sees_them(bc):
    rng = np.random.default_rng(0)
    normalizer = fitted_normalizer(rng.normal(5.0, 3.0, (100, 3)))
    normalizer.update_running_mean = False
    raw = np.concatenate([rng.normal(5.0, 3.0, (20, 3)), [[500.0, -500.0, 5.0]]])  # the last gets clipped
    mine = bc.normalize_obs(raw, normalizer)
    theirs = np.clip([normalizer.observation(row) for row in raw], -bc.OBS_CLIP, bc.OBS_CLIP)
    assert mine.dtype == np.float32 and np.array_equal(mine, theirs)
    assert mine[-1].tolist()[:2] == [10.0, -10.0]


def test_bc_loss_goes_down_when_trained_alone_on_a_fixed_buffer(bc):
    rng = np.random.default_rng(0)
    buffer = GoodTrajectoryBuffer(capacity_steps=300, gamma=0.99)
    for _ in range(3):  # episodes of an "expert" whose action is a fixed function of the raw observation
        obs = rng.normal(2.0, 4.0, (100, 3))
        actions = np.clip(np.tanh(obs[:, :2] / 4.0 - 0.5), -1, 1)
        buffer.add(obs, actions, rng.uniform(size=100))
    normalizer = fitted_normalizer(rng.normal(2.0, 4.0, (1000, 3)))
    obs, actions = bc.buffer_dataset(buffer, normalizer)
    assert obs.shape == (300, 3) and actions.shape == (300, 2) and obs.abs().max() < 5
    torch.manual_seed(0)
    agent = bc.Agent(obs_dim=3, act_dim=2)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = bc.bc_loss(agent, obs, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.5 and losses[-1] < losses[0] - 2.0  # from about N(0, 1) to a sharp fit
    assert np.mean(losses[-50:]) < np.mean(losses[100:150]) < np.mean(losses[:50])
    with torch.no_grad():
        assert (agent.actor_mean(obs) - actions).abs().mean() < 0.1
    assert bc.buffer_dataset(GoodTrajectoryBuffer(10), normalizer) is None  # nothing to clone yet


def test_guards(bc):
    with pytest.raises(ValueError, match="needs --stack.top-k True"):
        train(bc, "--stack.top-k", "False")
    with pytest.raises(ValueError, match="needs --vector sync"):
        train(bc, "--vector", "async", "--num-envs", "2")
    with pytest.raises(ValueError, match="already contains the GASIL stack"):
        train(bc, "--env-id", "gasil_wrappers:DelayedHopper-v5", "--stack.delay", "5")


def test_tiny_run_clones_the_buffer_and_resumes_bitwise(bc):
    """512 steps straight vs checkpoint at 256, stop at 384 (as if killed), resume to 512."""
    flags = [*SMALL_BUFFER, "--save-model", "True"]
    full = train(bc, *flags, "--run-name", "full", "--csv-path", "full.csv", group="resume")
    assert full["finished"] and full["bc"]["minibatches"] > 0 and full["bc"]["buffer_episodes"] > 0
    assert full["bc"]["buffer_steps"] <= 200 or full["bc"]["buffer_episodes"] == 1
    part = train(bc, *flags, "--run-name", "part", "--csv-path", "part.csv", "--checkpoint-every", "256",
                 "--stop-after-steps", "384", group="resume")
    assert not part["finished"]
    ckpt = torch.load("runs/part/checkpoint.pt", weights_only=False)
    assert ckpt["algo"] == "ppo_bc" and ckpt["bc_minibatches"] > 0
    assert len(ckpt["envs"]["owners"][0]["buffer"]["episodes"]) > 0  # the buffer travels with the owner
    resumed = train(bc, *flags, "--csv-path", "part.csv", "--resume", "runs/part/checkpoint.pt",
                    group="resume")
    assert resumed["finished"] and resumed["bc"] == full["bc"]
    a, b = (torch.load(r["model_path"], weights_only=True)["agent"] for r in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_rows("full.csv") == read_rows("part.csv")
    returns = bc.evaluate(bc.EvalArgs(model_path=full["model_path"], episodes=2))
    assert len(returns) == 2 and all(math.isfinite(r) for r in returns)


def test_bc_coef_zero_is_ppo_and_registered_ids_get_a_buffer(bc):
    off = train(bc, *SMALL_BUFFER, "--bc-coef", "0", "--total-timesteps", "256")
    assert off["finished"] and off["bc"]["minibatches"] == 0 and off["bc"]["buffer_episodes"] > 0
    result = train(bc, "--env-id", "gasil_wrappers:DelayedHopper-v5", "--total-timesteps", "256",
                   "--stack.buffer-steps", "300", "--csv-path", "reg.csv")
    assert result["finished"] and result["bc"]["minibatches"] > 0 and len(read_rows("reg.csv")) > 0
    assert result["gasil"]["rounds"] == 0  # a buffer, but no discriminator
