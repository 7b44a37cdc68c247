"""Soak test: 1M steps of the full GASIL stack on Hopper-v5, D training on its cadence (goal: < 50 MiB).

Prints the resident-set growth between the end of a warm-up (buffers, torch and the optimizer are
allocated by then) and the end of the run. The last line printed is the growth in MiB.

    python bench/soak.py [--steps 1000000] [--warmup 50000]
"""

from __future__ import annotations

import argparse
import gc

import gymnasium as gym
import numpy as np
import torch
from tqdm import trange

import gasil_wrappers


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=50_000)
    parser.add_argument("--env-id", default="gasil_wrappers:GASIL-DelayedHopper-v5")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = gym.make(args.env_id, group="soak", buffer_steps=10_000)
    state = gasil_wrappers.find_state(env)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (4096,) + env.action_space.shape).astype(np.float32)
    env.reset(seed=0)
    start = None
    for t in trange(args.steps, mininterval=5, desc="soak"):
        if t == args.warmup:
            gc.collect()
            start = rss_mib()
        _, _, terminated, truncated, _ = env.step(actions[t % len(actions)])
        if terminated or truncated:
            env.reset()
    gc.collect()
    end = rss_mib()
    print(f"{args.steps:,} steps, {state.rounds} D rounds, buffer {len(state.buffer)} episodes / "
          f"{state.buffer.num_steps} steps; RSS {start:.1f} MiB after warm-up, {end:.1f} MiB at the end")
    print(f"{end - start:.1f}")


if __name__ == "__main__":
    main()
