"""A small learning check in CI: PPO+GASIL beats a random policy on the 2D point mass.

Budget: 40,960 steps (20 rollouts of 2048, seed 1), about 20 s on one core. Measured when written
(2-core sandbox): mean true return of the last 20 episodes 1.09, random policy -5.82 (100 episodes).
The margin asked for (3) leaves room for other CPUs' floating-point differences.
"""

from pathlib import Path

import numpy as np
import pytest

from gasil_wrappers.envs.point_mass import PointMassEnv
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ppo():
    return load_script("ppo", "ppo_learning")


def random_policy_return(episodes: int = 100) -> float:
    """Mean return of uniform random actions (the untrained Gaussian policy does about as badly)."""
    env = PointMassEnv()
    rng = np.random.default_rng(0)
    total = 0.0
    for k in range(episodes):
        env.reset(seed=k)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2))
            total += reward
            done = terminated or truncated
    return total / episodes


def test_ppo_gasil_beats_random_on_point_mass(ppo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ppo.tyro.cli(
        ppo.Args,
        args=["--env-id", "gasil_wrappers:GASIL-PointMass-v0", "--seed", "1", "--total-timesteps", "40960",
              "--progress-bar", "False"],
        config=(ppo.tyro.conf.FlagConversionOff,),
    )
    result = ppo.train(args)
    assert result["gasil"]["rounds"] >= 10  # D trained on its cadence all along
    learned = np.mean([ret for _, ret in result["returns"][-20:]])
    random = random_policy_return()
    assert random < -3.0  # wandering costs more than the objects it bumps into
    assert learned > random + 3.0, (learned, random)
