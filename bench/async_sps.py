"""PPO+GASIL steps per second with 1, 2 and 4 async sub-envs (process-backed owner) against sync ones.

    OMP_NUM_THREADS=1 python bench/async_sps.py [--steps 16384] [--env-id Hopper-v5] [--mode ppo|env]

``--mode ppo`` (default) runs the bundled ``algos/ppo.py`` for real (rollouts, updates, D rounds):

- ``sync-N``:  ``--num-envs N --vector sync``  with the in-process owner (the default backend);
- ``async-N``: ``--num-envs N --vector async --stack.backend process`` (one worker process per sub-env,
  one owner server process).

All with ``--stack.gasil True --stack.delay 20`` and the horizon split over the sub-envs
(``--num-steps 2048/N``), so every configuration does the same PPO iterations, updates and D rounds
(D trains every 2048 policy steps summed over sub-envs). SPS is the script's own: env steps from the
first step to the end of the last update.

``--mode env`` steps only the env side (the same vector envs of the stack, random actions, no learner),
to separate env-stepping scaling from the learner's fixed cost.

The machine's core count bounds what async can gain: with C cores, N workers, the owner server and the
learner share them. The last line printed is the ratio async-4 SPS / sync-4 SPS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from ppo_sps import load_ppo  # bench/ is on sys.path when a bench script runs


def flags(n: int, vector: str, env_id: str, seed: int, steps: int, tag: str) -> list[str]:
    return ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(steps), "--run-name", tag,
            "--progress-bar", "False", "--num-envs", str(n), "--vector", vector,
            "--num-steps", str(2048 // n), "--stack.gasil", "True", "--stack.delay", "20",
            "--stack.group", tag, "--stack.backend", "process" if vector == "async" else "inprocess"]


def env_sps(ppo, argv: list[str], steps: int) -> float:
    """Random-action steps per second of the vector env that ``ppo.train`` would build."""
    args = ppo.tyro.cli(ppo.Args, args=argv, config=(ppo.tyro.conf.FlagConversionOff,))
    envs = ppo.make_vector_env(args)
    try:
        envs.reset(seed=args.seed)
        shape = (steps // args.num_envs,) + envs.action_space.shape
        actions = np.random.default_rng(args.seed).uniform(-1, 1, shape)
        for a in actions[:50]:  # warm-up
            envs.step(a)
        start = time.perf_counter()
        for a in actions:
            envs.step(a)
        return len(actions) * args.num_envs / (time.perf_counter() - start)
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16384, help="env steps per run (default 16384)")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=("ppo", "env"), default="ppo")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration, alternating; median")
    opts = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: run with OMP_NUM_THREADS=1 (each process would start a thread per core)",
              file=sys.stderr)
    if 4 not in opts.num_envs:
        parser.error("--num-envs must include 4 (the last line is async-4 / sync-4)")

    ppo = load_ppo()
    sps: dict[str, list[float]] = {}
    print(f"{os.cpu_count()} CPU cores; {opts.env_id}; {opts.steps} env steps per run; mode {opts.mode}")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # tensorboard files go to a scratch runs/
        try:
            if opts.mode == "ppo":  # warm-up: imports, first allocations, torch's lazy init
                warmup = flags(1, "sync", opts.env_id, opts.seed, 2048, "warmup")
                ppo.train(ppo.tyro.cli(ppo.Args, args=warmup, config=(ppo.tyro.conf.FlagConversionOff,)))
            for k in range(opts.repeat):
                for n in opts.num_envs:
                    for vector in ("sync", "async"):
                        name, tag = f"{vector}-{n}", f"bench-{vector}-{n}-{k}"
                        argv = flags(n, vector, opts.env_id, opts.seed, opts.steps, tag)
                        start = time.perf_counter()
                        if opts.mode == "ppo":
                            args = ppo.tyro.cli(ppo.Args, args=argv,
                                                config=(ppo.tyro.conf.FlagConversionOff,))
                            value = ppo.train(args)["sps"]
                        else:
                            value = env_sps(ppo, argv, opts.steps)
                        sps.setdefault(name, []).append(value)
                        wall = time.perf_counter() - start
                        print(f"{name:8s} {value:8.0f} SPS (wall {wall:.1f} s incl. set-up)", flush=True)
        finally:
            os.chdir(cwd)
    median = {name: statistics.median(values) for name, values in sps.items()}
    print(" | ".join(f"{name} {value:.0f}" for name, value in median.items()))
    for n in opts.num_envs:
        print(f"async-{n} / sync-{n} = {median[f'async-{n}'] / median[f'sync-{n}']:.3f}")
    print(f"{median['async-4'] / median['sync-4']:.3f}")


if __name__ == "__main__":
    main()
