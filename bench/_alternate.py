"""What the ratio benchmarks share: run PPO and PPO+GASIL alternately and take each one's median SPS."""

import statistics
from collections.abc import Callable


def alternating_medians(run: Callable[[bool, int], float], repeat: int) -> tuple[float, float]:
    """``run(gasil, i)`` -> SPS, ``repeat`` times each, alternating which goes first; (PPO, PPO+GASIL)."""
    sps: dict[str, list[float]] = {"PPO": [], "PPO+GASIL": []}
    for i in range(repeat):
        for name in (["PPO", "PPO+GASIL"] if i % 2 == 0 else ["PPO+GASIL", "PPO"]):
            value = run(name == "PPO+GASIL", i)
            sps[name].append(value)
            print(f"{name}: {value:.0f} SPS", flush=True)
    return statistics.median(sps["PPO"]), statistics.median(sps["PPO+GASIL"])
