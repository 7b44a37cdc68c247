"""What the ratio benchmarks share: their common flags, and running PPO and PPO+GASIL in alternating
pairs to compare them."""

import argparse
import os
import statistics
import sys
from collections.abc import Callable

import numpy as np


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the flags every ratio benchmark has (``--seed``, ``--repeat``) to ``parser`` and parse them.

    Warns on stderr when ``OMP_NUM_THREADS`` is not 1 (the benchmarks' figures are for one thread).
    Makes stdout line-buffered, so each run's line shows up as it ends when the output goes to a file.
    """
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (PPO, PPO+GASIL), alternating "
                        "which goes first; the figure is the mean of the per-pair ratios (default 1)")
    opts = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: run with OMP_NUM_THREADS=1 for numbers comparable with the reference", file=sys.stderr)
    return opts


def alternate(run: Callable[[bool, int], float], repeat: int) -> tuple[float, float, float]:
    """``run(gasil, i)`` -> SPS, ``repeat`` pairs, alternating which goes first.

    Returns (PPO median SPS, PPO+GASIL median SPS, mean of the per-pair ratios PPO+GASIL / PPO). The
    mean of the per-pair ratios is the benchmarks' figure: the two runs of a pair ran back to back, so
    their ratio cancels the VM's slower drifts, which the ratio of the two medians does not (session 5,
    three measurements of 12 pairs of the same code: ratios of medians 0.994, 0.942, 0.913; means of
    the per-pair ratios 0.966, 0.968, 0.955). Also prints each pair's ratio and, from 3 pairs on, 95%
    bootstrap intervals of both: on a shared 2-core VM one run's SPS can move by ±15%, so a ratio near
    a goal means little without them.
    """
    sps: dict[str, list[float]] = {"PPO": [], "PPO+GASIL": []}
    for i in range(repeat):
        for name in (["PPO", "PPO+GASIL"] if i % 2 == 0 else ["PPO+GASIL", "PPO"]):
            value = run(name == "PPO+GASIL", i)
            sps[name].append(value)
            print(f"{name}: {value:.0f} SPS", flush=True)
    ppo, gasil = np.array(sps["PPO"]), np.array(sps["PPO+GASIL"])
    ratios = gasil / ppo
    print("per pair PPO+GASIL / PPO: " + " ".join(f"{r:.3f}" for r in ratios))
    if repeat >= 3:
        rng = np.random.default_rng(0)
        draws = [np.median(rng.choice(gasil, repeat)) / np.median(rng.choice(ppo, repeat))
                 for _ in range(10_000)]
        low, high = np.percentile(draws, [2.5, 97.5])
        print(f"ratio of medians {np.median(gasil) / np.median(ppo):.3f}, "
              f"95% bootstrap interval (runs resampled): [{low:.3f}, {high:.3f}]")
        means = [rng.choice(ratios, repeat).mean() for _ in range(10_000)]
        low, high = np.percentile(means, [2.5, 97.5])
        print(f"mean of the per-pair ratios {ratios.mean():.3f}, "
              f"95% bootstrap interval (pairs resampled): [{low:.3f}, {high:.3f}]")
    return statistics.median(sps["PPO"]), statistics.median(sps["PPO+GASIL"]), float(ratios.mean())
