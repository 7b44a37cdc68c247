"""Full GASIL stack steps/s ÷ raw env steps/s on Hopper-v5 with random actions (goal: >= 0.90).

Both envs are stepped with the same pre-drawn actions, alternating in blocks so drift in machine
load hits both alike, after one warm-up block each. The full stack is what
``gym.make("gasil_wrappers:GASIL-DelayedHopper-v5")`` returns, D training on its cadence included
(20 updates of 128 every 2048 steps).

    python bench/stack_overhead.py [--steps 50000]

The last line printed is the ratio.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import gasil_wrappers  # noqa: F401  (registers the ids)


def run_block(env, actions) -> float:
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--block", type=int, default=5_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = gym.make("Hopper-v5")
    stack = gym.make("gasil_wrappers:GASIL-DelayedHopper-v5", group="bench")
    raw.reset(seed=0)
    stack.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (args.block, 3)).astype(np.float32)
    for env in (raw, stack):  # warm-up: first D round (torch's lazy init), caches, CPU frequency
        run_block(env, actions)
    times = {"raw": 0.0, "stack": 0.0}
    for _ in range(args.steps // args.block):
        times["raw"] += run_block(raw, actions)
        times["stack"] += run_block(stack, actions)
    n = args.steps // args.block * args.block
    raw_sps, stack_sps = n / times["raw"], n / times["stack"]
    state = gasil_wrappers.find_state(stack)
    print(f"raw Hopper-v5: {raw_sps:,.0f} steps/s; full stack: {stack_sps:,.0f} steps/s "
          f"({state.rounds} D rounds, {len(state.buffer)} episodes in the buffer)")
    print(f"stack/raw steps-per-second ratio: {stack_sps / raw_sps:.3f}")
    print(f"{stack_sps / raw_sps:.3f}")


if __name__ == "__main__":
    main()
