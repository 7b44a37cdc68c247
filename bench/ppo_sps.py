"""Steps per second of algos/ppo.py on Hopper-v5, plain PPO and PPO+GASIL, in one process.

    OMP_NUM_THREADS=1 python bench/ppo_sps.py [--steps 20480] [--env-id Hopper-v5]

Each run is a full training run of the bundled script (rollouts, updates, logging; for PPO+GASIL also
the discriminator's training rounds), with one sub-env and one torch thread. SPS counts env steps
from the first step to the end of the last update, as the script's own charts/SPS does. The last
line printed is the ratio PPO+GASIL SPS / PPO SPS (goal: >= 0.95). For reference, CleanRL's
unmodified ppo_continuous_action.py ran at 1,380 SPS on Hopper-v4 with one env on the 2-core machine
this project uses.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # experiments/ (the repository root is not installed; gasil_wrappers is)
from experiments.scripts import load_script  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20480, help="env steps per run (default 20480)")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="run each configuration this many times, "
                        "alternating, and report the median (default 1)")
    parser.add_argument("--warmup-steps", type=int, default=2048, help="an unreported PPO run first, so "
                        "one-time costs (imports, first allocations) hit neither measurement (default 2048)")
    opts = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: run with OMP_NUM_THREADS=1 for numbers comparable with the reference", file=sys.stderr)

    ppo = load_script("ppo")
    runs = {
        "PPO": [],
        "PPO+GASIL": ["--stack.gasil", "True", "--stack.delay", "20"],
    }
    sps: dict[str, list[float]] = {name: [] for name in runs}

    def run(name: str, extra: list[str], steps: int, tag: str) -> dict:
        argv = ["--env-id", opts.env_id, "--seed", str(opts.seed), "--total-timesteps", str(steps),
                "--run-name", f"bench-{tag}", "--progress-bar", "False", "--stack.group", tag, *extra]
        args = ppo.tyro.cli(ppo.Args, args=argv, config=(ppo.tyro.conf.FlagConversionOff,))
        return ppo.train(args)

    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # tensorboard files go to a scratch runs/
        try:
            if opts.warmup_steps:
                run("PPO", [], opts.warmup_steps, "warmup")
            for k in range(opts.repeat):
                for name, extra in runs.items():
                    start = time.perf_counter()
                    result = run(name, extra, opts.steps, f"{name}-{k}")
                    wall = time.perf_counter() - start
                    sps[name].append(result["sps"])
                    print(f"{name:10s} {result['global_step']} steps: {result['sps']:7.0f} SPS "
                          f"(wall {wall:.1f} s incl. set-up)", flush=True)
        finally:
            os.chdir(cwd)
    median = {name: statistics.median(values) for name, values in sps.items()}
    if opts.repeat > 1:
        print(" ".join(f"{name} median {value:.0f} SPS;" for name, value in median.items()))
    print(f"PPO+GASIL SPS / PPO SPS = {median['PPO+GASIL'] / median['PPO']:.3f}")


if __name__ == "__main__":
    main()
