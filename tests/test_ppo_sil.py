"""Tests of algos/ppo_sil.py: the SIL loss on hand-built batches, the prioritized replay (statistically,
with a fixed seed), episode bookkeeping, and a tiny Hopper run with bitwise resume and evaluation.

Runs are tiny (512 Hopper-v5 steps, rollouts of 128, 4 minibatches, 2 epochs) and run in this process,
except the --help check. Every run gets its own --stack.group (see tests/test_ppo.py).
"""

import csv
import doctest
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "algos" / "ppo_sil.py"
TINY = ["--total-timesteps", "512", "--num-steps", "128", "--num-minibatches", "4", "--update-epochs", "2",
        "--progress-bar", "False", "--stack.delay", "5", "--sil-batch-size", "64"]
_groups = itertools.count()


@pytest.fixture(scope="module")
def sil():
    return load_script("ppo_sil")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ goes to a scratch folder
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def train(sil, *flags: str, group: str | None = None) -> dict:
    group = group or f"sil{next(_groups)}"
    args = sil.tyro.cli(sil.Args, args=[*TINY, "--stack.group", group, *flags],
                        config=(sil.tyro.conf.FlagConversionOff,))
    return sil.train(args)


def read_rows(path) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        return [(row["step"], row["true_return"], row["length"]) for row in csv.DictReader(f)]


def test_help_lists_sil_and_shared_flags():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--env-id", "--seed", "--csv-path", "--checkpoint-every", "--resume", "--stack.delay",
                 "--stack.obs-noise-std", "--sil-updates", "--sil-batch-size", "--sil-buffer-size",
                 "--sil-loss-coef", "--sil-value-coef", "--sil-alpha", "--sil-beta", "--sil-min-samples"):
        assert flag in out.stdout, flag


def test_doctests(sil):
    assert doctest.testmod(sil).failed == 0


# --- the loss ------------------------------------------------------------------------------------------
def test_sil_loss_is_zero_when_no_return_beats_the_value(sil):
    logprob = torch.tensor([-1.0, -3.0, 0.5], requires_grad=True)
    value = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    returns = torch.tensor([2.0, -1.0, 0.3])  # every R <= V
    out = sil.sil_loss(logprob, value, returns, torch.ones(3), entropy=torch.ones(3), ent_coef=0.5)
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.num_valid.item() == 0
    assert torch.all(logprob.grad == 0) and torch.all(value.grad == 0)
    assert torch.all(out.advantages == 0)


def test_sil_loss_on_a_hand_built_batch(sil):
    logprob = torch.tensor([-1.0, -2.0, -0.5, -4.0], requires_grad=True)
    value = torch.tensor([0.0, 0.0, 1.0, 2.0], requires_grad=True)
    returns = torch.tensor([0.5, 3.0, 0.0, 2.0])  # R - V = 0.5, 3 (clipped to 1), -1, 0
    weights = torch.tensor([1.0, 0.5, 1.0, 1.0])
    out = sil.sil_loss(logprob, value, returns, weights, clip=1.0, value_coef=0.01, loss_coef=0.1,
                       min_batch=1)
    n = 2  # samples with R > V
    assert out.num_valid.item() == n
    assert out.advantages.tolist() == [0.5, 1.0, 0.0, 0.0]
    assert out.policy_loss.item() == pytest.approx((1.0 * 0.5 * 1.0 + 0.5 * 1.0 * 2.0) / n)
    huber = [0.5 * 0.5**2, 1.0 * (3.0 - 0.5)]  # quadratic up to the clip, linear beyond
    assert out.value_loss.item() == pytest.approx((1.0 * huber[0] + 0.5 * huber[1]) / n)
    total = 0.1 * (out.policy_loss.item() + 0.5 * 0.01 * out.value_loss.item())
    assert out.loss.item() == pytest.approx(total)
    out.loss.backward()
    # Gradients as in Oh et al.'s code: -w adv / n on log pi, w clip(V - R, -1, 0) / n on V (times weights).
    assert logprob.grad.tolist() == pytest.approx([-0.1 * 1.0 * 0.5 / n, -0.1 * 0.5 * 1.0 / n, 0.0, 0.0])
    assert value.grad.tolist() == pytest.approx([0.1 * 0.005 * 1.0 * -0.5 / n, 0.1 * 0.005 * 0.5 * -1.0 / n,
                                                 0.0, 0.0])
    # With few valid samples the sums are divided by min_batch instead.
    small = sil.sil_loss(logprob, value, returns, weights, min_batch=64)
    assert small.policy_loss.item() == pytest.approx(out.policy_loss.item() * n / 64)


# --- the replay ----------------------------------------------------------------------------------------
def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_prioritized_sampling_follows_its_priorities(sil):
    replay = sil.PrioritizedReplay(8, obs_dim=1, act_dim=1, alpha=0.6, seed=0)
    replay.add(np.arange(4.0)[:, None], np.zeros((4, 1)), np.zeros(4))
    priorities = np.array([0.1, 1.0, 2.0, 4.0])
    replay.update_priorities(np.arange(4), priorities)
    probs = priorities**0.6 / (priorities**0.6).sum()
    assert replay.probabilities() == pytest.approx(probs)
    draws = np.concatenate([replay.sample(512, beta=0.1)[0] for _ in range(200)])
    counts = np.bincount(draws, minlength=4)
    assert chi_square(counts, probs) < 16.27  # chi-square, 3 degrees of freedom, p = 0.001
    assert counts / counts.sum() == pytest.approx(probs, abs=0.01)
    # alpha 0 is uniform whatever the priorities
    uniform = sil.PrioritizedReplay(8, obs_dim=1, act_dim=1, alpha=0.0, seed=1)
    uniform.add(np.zeros((4, 1)), np.zeros((4, 1)), np.zeros(4))
    uniform.update_priorities(np.arange(4), priorities)
    counts = np.bincount(uniform.sample(100_000, beta=0.1)[0], minlength=4)
    assert chi_square(counts, np.full(4, 0.25)) < 16.27


def test_importance_weights_new_priorities_and_fifo(sil):
    replay = sil.PrioritizedReplay(4, obs_dim=1, act_dim=1, alpha=1.0, seed=0)
    replay.add(np.zeros((3, 1)), np.zeros((3, 1)), np.array([1.0, 2.0, 3.0]))
    replay.update_priorities(np.array([0, 1, 2]), np.array([1.0, 2.0, 4.0]))
    idx, weights = replay.sample(1000, beta=0.5)
    probs = np.array([1.0, 2.0, 4.0]) / 7.0
    assert weights == pytest.approx((probs[idx] / probs.min()) ** -0.5)  # (N P)^-beta / max weight
    assert weights.max() == pytest.approx(1.0) and weights.min() == pytest.approx(0.5)
    # A new transition gets the largest priority seen; when full, the oldest are overwritten.
    replay.add(np.ones((2, 1)), np.ones((2, 1)), np.array([7.0, 8.0]))
    assert len(replay) == 4 and replay.returns.tolist() == [8.0, 2.0, 3.0, 7.0]
    assert replay.priorities.tolist() == [4.0, 2.0, 4.0, 4.0]
    replay.update_priorities(np.array([1]), np.array([0.0]))
    assert replay.priorities[1] == 1e-6  # never exactly 0
    # the state round-trips, random generator included
    other = sil.PrioritizedReplay(4, obs_dim=1, act_dim=1, alpha=1.0, seed=123)
    other.load_state_dict(replay.state_dict())
    assert np.array_equal(other.sample(50, 0.1)[0], replay.sample(50, 0.1)[0])


def test_episodes_across_rollouts_get_discounted_returns(sil):
    # two sub-envs, rollouts of 3 steps; sub-env 0 ends an episode at step 1 and then at step 1 of the
    # next rollout (an episode of 3 steps across the boundary); sub-env 1 never ends.
    pending = [[], []]
    obs = np.arange(6.0).reshape(3, 2, 1)
    rewards = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    ended = np.array([[0, 0], [1, 0], [0, 0]], bool)
    (first,) = sil.split_episodes(pending, obs, obs.copy(), rewards, ended)
    assert first[0].ravel().tolist() == [0.0, 2.0] and first[2].tolist() == [1.0, 2.0]
    obs[:] = -1  # the rollout buffers are overwritten: pending pieces must be copies
    (second,) = sil.split_episodes(pending, obs + 10, obs, rewards + 10, ended)
    assert second[0].ravel().tolist() == [4.0, 9.0, 9.0] and second[2].tolist() == [3.0, 11.0, 12.0]
    assert [len(p) for p in pending] == [1, 2]  # sub-env 1: two pieces of 3 steps waiting
    assert sil.discounted_returns(second[2], 0.9).tolist() == pytest.approx(
        [3 + 0.9 * 11 + 0.81 * 12, 11 + 0.9 * 12, 12])


# --- runs ----------------------------------------------------------------------------------------------
def test_tiny_run_resumes_bitwise_and_evaluates(sil):
    """512 steps straight vs checkpoint at 256, stop at 384 (as if killed), resume to 512."""
    full = train(sil, "--run-name", "full", "--csv-path", "full.csv", "--save-model", "True",
                 group="resume")
    assert full["finished"] and full["sil"]["updates"] > 0 and full["sil"]["replay_size"] > 100
    part = train(sil, "--run-name", "part", "--csv-path", "part.csv", "--save-model", "True",
                 "--checkpoint-every", "256", "--stop-after-steps", "384", group="resume")
    assert not part["finished"]
    ckpt = torch.load("runs/part/checkpoint.pt", weights_only=False)
    assert ckpt["algo"] == "ppo_sil" and ckpt["global_step"] == 256
    assert len(ckpt["sil"]["replay"]["returns"]) > 0 and any(ckpt["sil"]["pending"])  # mid-episode
    resumed = train(sil, "--csv-path", "part.csv", "--save-model", "True",
                    "--resume", "runs/part/checkpoint.pt", group="resume")
    assert resumed["finished"] and resumed["sil"] == full["sil"]
    a, b = (torch.load(r["model_path"], weights_only=True)["agent"] for r in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_rows("full.csv") == read_rows("part.csv")

    returns = sil.evaluate(sil.EvalArgs(model_path=full["model_path"], episodes=2))
    assert len(returns) == 2 and all(np.isfinite(returns))

    ckpt["algo"] = "ppo"  # a checkpoint of another script is refused by name
    torch.save(ckpt, "ppo.pt")
    with pytest.raises(ValueError, match="ppo.pt.*checkpoint of ppo, not of ppo_sil"):
        train(sil, "--resume", "ppo.pt", group="resume")


def test_replay_returns_of_a_time_limited_episode_go_on_past_the_limit_with_the_bootstrap(sil):
    """--truncation bootstrap adds gamma * V(s_T) to the last reward of an episode a time limit cut, so
    SIL's Monte-Carlo returns carry it too: the first rollout (one 200-step Pendulum episode, the same
    under both flags) is stored with returns that differ by gamma^(T-t) * (that bonus), nowhere zero."""
    stored = {}
    for truncation in ("end", "bootstrap"):
        train(sil, "--env-id", "Pendulum-v1", "--num-envs", "1", "--num-steps", "256", "--total-timesteps",
              "512", "--checkpoint-every", "256", "--stop-after-steps", "256", "--sil-positive-only", "False",
              "--run-name", truncation, "--truncation", truncation, group=f"sil-trunc-{truncation}")
        ckpt = torch.load(f"runs/{truncation}/checkpoint.pt", weights_only=False)
        stored[truncation] = np.asarray(ckpt["sil"]["replay"]["returns"], dtype=np.float64)
    end, boot = stored["end"], stored["bootstrap"]
    assert len(end) == len(boot) == 200  # the one finished episode
    gap = boot - end
    assert gap[-1] != 0
    assert gap[:-1] == pytest.approx(0.99 ** np.arange(199, 0, -1) * gap[-1], rel=1e-3, abs=1e-4)
