"""Steps per second of RLlib's PPO with 2 env runners: plain PPO, and PPO+GASIL with the Ray-backed owner.

    OMP_NUM_THREADS=1 python bench/rllib_sps.py [--iterations 4] [--batch 2048] [--repeat 1]

PPO: ``PPOConfig().environment("Hopper-v5")``. PPO+GASIL: the same on
``gasil_wrappers:GASIL-DelayedHopper-v5`` (delay 20, GASIL) with ``GASILCallback`` and one
``RayGASILOwner`` actor for both runners (D trains once per PPO batch, 20 updates of 128). Both: new API
stack, 2 env runners with one env each, one local learner, train batch ``--batch`` (minibatch 256, 5
epochs), in one local Ray instance (2 CPUs). After one unreported iteration, SPS is the env steps sampled
over the wall time of ``--iterations`` ``algo.train()`` calls (sampling and updates). The last line
printed is the ratio PPO+GASIL SPS / PPO SPS (with ``--repeat N``, the mean of the N per-pair ratios;
goal: >= 0.90).
"""

import argparse
import time
from pathlib import Path

import ray
from _alternate import alternate, parse_args  # bench/, beside this script
from ray.rllib.algorithms.ppo import PPOConfig

from gasil_wrappers.ray_owner import RayGASILOwner
from gasil_wrappers.rllib import GASILCallback

ROOT = str(Path(__file__).resolve().parents[1])


def run(gasil: bool, iterations: int, batch: int, seed: int, tag: str) -> float:
    if gasil:
        env_id = "gasil_wrappers:GASIL-DelayedHopper-v5"
        env_config = {"group": f"bench-{tag}", "d_every": batch}
        owner = RayGASILOwner.start(RayGASILOwner.for_env_id(env_id, **env_config))
    else:
        env_id, env_config, owner = "Hopper-v5", {}, None
    config = (
        PPOConfig()
        .environment(env_id, env_config=env_config)
        .env_runners(num_env_runners=2, num_envs_per_env_runner=1, num_cpus_per_env_runner=0.5)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=batch, minibatch_size=256, num_epochs=5)
        .debugging(seed=seed)
    )
    if gasil:
        config = config.callbacks(GASILCallback)
    algo = config.build_algo()
    try:
        steps = lambda r: r["env_runners"]["num_env_steps_sampled_lifetime"]  # noqa: E731
        first = steps(algo.train())  # warm-up, not timed
        start = time.perf_counter()
        for _ in range(iterations):
            result = algo.train()
        elapsed = time.perf_counter() - start
        sampled = steps(result) - first
        if gasil:
            diag = result["gasil"]
            print(f"  D rounds {diag['rounds']}, policy steps {diag['policy_steps']}, "
                  f"shippers {diag['shippers']}", flush=True)
        return sampled / elapsed
    finally:
        algo.stop()
        if owner is not None:
            owner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4, help="timed train() calls per run (default 4)")
    parser.add_argument("--batch", type=int, default=2048, help="train batch in env steps (default 2048)")
    opts = parse_args(parser)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}})
    ppo, gasil, ratio = alternate(
        lambda gasil, i: run(gasil, opts.iterations, opts.batch, opts.seed, f"{i}"), opts.repeat)
    ray.shutdown()
    print(f"RLlib PPO {ppo:.0f} SPS, RLlib PPO+GASIL (Ray owner) {gasil:.0f} SPS, 2 env runners, Hopper-v5, "
          f"{opts.iterations} iterations of {opts.batch} steps, median of {opts.repeat}")
    print(f"{ratio:.3f}")


if __name__ == "__main__":
    main()
