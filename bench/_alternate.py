"""What the ratio benchmarks share: run PPO and PPO+GASIL alternately and take each one's median SPS."""

import statistics
from collections.abc import Callable

import numpy as np


def alternating_medians(run: Callable[[bool, int], float], repeat: int) -> tuple[float, float]:
    """``run(gasil, i)`` -> SPS, ``repeat`` times each, alternating which goes first; (PPO, PPO+GASIL).

    Also prints each pair's ratio and, from 3 pairs on, a 95% bootstrap interval of the ratio of the
    medians (runs resampled within each configuration): on a shared 2-core VM one run's SPS can move by
    ±15%, so a ratio near a goal means little without it.
    """
    sps: dict[str, list[float]] = {"PPO": [], "PPO+GASIL": []}
    for i in range(repeat):
        for name in (["PPO", "PPO+GASIL"] if i % 2 == 0 else ["PPO+GASIL", "PPO"]):
            value = run(name == "PPO+GASIL", i)
            sps[name].append(value)
            print(f"{name}: {value:.0f} SPS", flush=True)
    ppo, gasil = np.array(sps["PPO"]), np.array(sps["PPO+GASIL"])
    print("per pair PPO+GASIL / PPO: " + " ".join(f"{r:.3f}" for r in gasil / ppo))
    if repeat >= 3:
        rng = np.random.default_rng(0)
        draws = [np.median(rng.choice(gasil, repeat)) / np.median(rng.choice(ppo, repeat))
                 for _ in range(10_000)]
        low, high = np.percentile(draws, [2.5, 97.5])
        print(f"ratio of medians, 95% bootstrap interval: [{low:.3f}, {high:.3f}]")
    return statistics.median(sps["PPO"]), statistics.median(sps["PPO+GASIL"])
