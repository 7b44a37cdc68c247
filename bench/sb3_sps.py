"""Steps per second of SB3's PPO with 2 subprocess envs: plain PPO, and PPO+GASIL via GASILVecEnvWrapper.

    OMP_NUM_THREADS=1 python bench/sb3_sps.py [--steps 16384] [--env-id Hopper-v5] [--repeat 1]

PPO: ``make_vec_env(env_id, 2, vec_env_cls=SubprocVecEnv)``, what an SB3 user runs today.
PPO+GASIL: ``make_sb3_vec_env(env_id, 2, GASILConfig(gasil=True, delay=20), vec_env_cls=SubprocVecEnv)``:
the task stack (delay) in each worker, recorder, D forward and shaping for both sub-envs in the learner
process, D training once per PPO batch (2 x 1024 steps, 20 updates of 128). Both: ``VecNormalize``
outside, SB3's default MLP policy, n_steps 1024, batch 64, 10 epochs, one torch thread. SPS counts the
env steps of ``model.learn`` over its wall time (rollouts and updates); env and model construction are
not timed. The last line printed is the ratio PPO+GASIL SPS / PPO SPS (with
``--repeat N``, the mean of the N per-pair ratios; goal: >= 0.95).
"""

import argparse
import time

import torch
from _alternate import alternate, parse_args  # bench/, beside this script
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

from gasil_wrappers import GASILConfig
from gasil_wrappers.sb3 import make_sb3_vec_env

N_ENVS, N_STEPS = 2, 1024


def run(gasil: bool, env_id: str, steps: int, seed: int) -> float:
    if gasil:
        config = GASILConfig(gasil=True, delay=20, seed=seed).for_batch(N_ENVS * N_STEPS)
        venv = make_sb3_vec_env(env_id, N_ENVS, config, vec_env_cls=SubprocVecEnv)
    else:
        venv = make_vec_env(env_id, N_ENVS, seed=seed, vec_env_cls=SubprocVecEnv)
    env = VecNormalize(venv)
    model = PPO("MlpPolicy", env, n_steps=N_STEPS, batch_size=64, n_epochs=10, seed=seed, device="cpu")
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    if gasil:
        diag = venv.state.diagnostics()
        print(f"  D rounds {diag['rounds']}, policy steps {diag['policy_steps']}, "
              f"buffer {diag['buffer_episodes']} episodes", flush=True)
    env.close()
    return model.num_timesteps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16384, help="env steps per run (default 16384)")
    parser.add_argument("--env-id", default="Hopper-v5")
    opts = parse_args(parser)
    torch.set_num_threads(1)
    # Warm-up, not reported: imports, worker start, first allocations, and torch's lazy imports at D's
    # first Adam step (about 1-2 s once per process, which a long run does not notice).
    run(False, opts.env_id, N_ENVS * N_STEPS, opts.seed)
    run(True, opts.env_id, 2 * N_ENVS * N_STEPS, opts.seed)
    ppo, gasil, ratio = alternate(lambda gasil, i: run(gasil, opts.env_id, opts.steps, opts.seed),
                                 opts.repeat)
    print(f"SB3 PPO {ppo:.0f} SPS, SB3 PPO+GASIL (GASILVecEnvWrapper) {gasil:.0f} SPS, "
          f"{N_ENVS} SubprocVecEnv workers, {opts.env_id}, {opts.steps} steps, median of {opts.repeat}")
    print(f"{ratio:.3f}")


if __name__ == "__main__":
    main()
