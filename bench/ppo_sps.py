"""Steps per second of algos/ppo.py on Hopper-v5, plain PPO and PPO+GASIL, in one process.

    OMP_NUM_THREADS=1 python bench/ppo_sps.py [--steps 20480] [--env-id Hopper-v5] [--repeat 1]

Each run is a full training run of the bundled script (rollouts, updates, logging; for PPO+GASIL also
the discriminator's training rounds), with one sub-env and one torch thread. SPS counts env steps
from the first step to the end of the last update, as the script's own charts/SPS does. After an
unreported warm-up run, PPO and PPO+GASIL run in ``--repeat`` pairs, alternating which goes first, as
in the other ratio benchmarks (``_alternate.py``). The last line printed is the ratio PPO+GASIL SPS /
PPO SPS, the mean of the per-pair ratios (goal: >= 0.95; before session 11 this script printed the ratio
of the two medians and always ran PPO first). For reference, CleanRL's
unmodified ppo_continuous_action.py ran at 1,380 SPS on Hopper-v4 with one env on the 2-core machine
this project uses.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _alternate import alternate, parse_args  # bench/, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # experiments/ (the repository root is not installed; gasil_wrappers is)
from experiments.scripts import load_script  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20480, help="env steps per run (default 20480)")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--warmup-steps", type=int, default=2048, help="an unreported PPO run first, so "
                        "one-time costs (imports, first allocations) hit neither measurement (default 2048)")
    opts = parse_args(parser)
    ppo = load_script("ppo")

    def train(steps: int, tag: str, gasil: bool) -> dict:
        extra = ["--stack.gasil", "True", "--stack.delay", "20"] if gasil else []
        argv = ["--env-id", opts.env_id, "--seed", str(opts.seed), "--total-timesteps", str(steps),
                "--run-name", f"bench-{tag}", "--progress-bar", "False", "--stack.group", tag, *extra]
        args = ppo.tyro.cli(ppo.Args, args=argv, config=(ppo.tyro.conf.FlagConversionOff,))
        return ppo.train(args)

    def run(gasil: bool, i: int) -> float:
        start = time.perf_counter()
        result = train(opts.steps, f"{'gasil' if gasil else 'ppo'}-{i}", gasil)
        print(f"  {result['global_step']} steps in {time.perf_counter() - start:.1f} s wall incl. set-up")
        return result["sps"]

    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # tensorboard files go to a scratch runs/
        try:
            if opts.warmup_steps:
                train(opts.warmup_steps, "warmup", gasil=False)
            _, _, ratio = alternate(run, opts.repeat)
        finally:
            os.chdir(cwd)
    print(f"PPO+GASIL SPS / PPO SPS = {ratio:.3f}")


if __name__ == "__main__":
    main()
