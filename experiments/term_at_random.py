"""How big, and how variable, is GASIL's term next to the env reward, under a random policy?

Example (from the repository root)::

    python -m experiments.term_at_random --task HalfCheetah-v5 --setting \\
        delayed20+lr0.0003+buffer10000+dupdates1+dlr0.0003+alpha0.2+buffergamma0.99+envrewardnormalized

One env of the stack the scripts build for ``setting`` (``--stack.*`` flags, D's cadence tied to
``algos/ppo.py``'s default batch as there), uniformly random actions from ``--seed``, ``--steps`` steps.
Over the steps where D is in effect it prints the mean and the per-step std of the term α·(−log D) and
the std of the env part of the shaped reward (shaped − term: the delayed env reward as the stack scales
it), and the term's share of the shaped reward by absolute size. A term whose std is far below its mean
is nearly a constant per step: an alive bonus where episodes end by termination, and a value that
depends on the time left where they end at a time limit that the return stops at (docs/results.md,
"The cause on HalfCheetah"). A blind D (``dlr1e-12`` in the setting) gives the term of a D that never
learns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python experiments/term_at_random.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tyro  # noqa: E402

import gasil_wrappers  # noqa: E402
from experiments.grid import AGENTS, TASK_AGENT_FLAGS, parse_setting  # noqa: E402
from experiments.scripts import load_script  # noqa: E402
from gasil_wrappers.config import INFO_KEY  # noqa: E402

#: the single setting the screening chose (results/screen-500k/screen.json)
T7 = "delayed20+lr0.0003+buffer10000+dupdates1+dlr0.0003+alpha0.2+buffergamma0.99+envrewardnormalized"


@dataclass
class Args:
    task: str = "HalfCheetah-v5"
    """a Gymnasium id (the stack wraps it as the scripts do)"""
    setting: str = T7
    """a setting name of experiments.grid (only its ``--stack.*`` part matters here)"""
    steps: int = 28_000
    seed: int = 1


def stack_config(task: str, setting: str):
    """The GASILConfig ``algos/ppo.py`` builds for PPO+GASIL with ``setting`` (and its batch size)."""
    run_utils = load_script("run_utils")
    _, flags = parse_setting(setting)  # after the agent's and the task's flags, as the runner puts them
    flags = (*AGENTS["ppo_gasil"].flags, *TASK_AGENT_FLAGS.get((task, "ppo_gasil"), ()), *flags)
    args = tyro.cli(run_utils.Args, args=["--env-id", task, *flags],
                    config=(tyro.conf.FlagConversionOff,))
    return args.stack, args.num_envs * args.num_steps


def term_at_random(task: str, setting: str, steps: int, seed: int) -> dict:
    """Per-step statistics of α·(−log D) and of the env part of the shaped reward, random actions."""
    config, batch_size = stack_config(task, setting)
    env = gasil_wrappers.make_env(task, config.replace(group=f"term-at-random-{seed}"), batch_size=batch_size)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    terms, parts = [], []
    for _ in range(steps):
        _, shaped, terminated, truncated, info = env.step(env.action_space.sample())
        diag = info[INFO_KEY]
        if diag.get("alpha", 0.0) > 0.0:  # D in effect
            term = diag["alpha"] * diag["discriminator_reward"]
            terms.append(term)
            parts.append(shaped - term)
        if terminated or truncated:
            env.reset()
    env.close()
    terms, parts = np.array(terms), np.array(parts)
    if not len(terms):
        raise ValueError(f"D never took effect in {steps} steps: give more --steps")
    share = np.abs(terms).sum() / (np.abs(terms) + np.abs(parts)).sum()
    return {"steps_with_d": len(terms), "term_mean": terms.mean(), "term_std": terms.std(),
            "env_part_std": parts.std(), "term_share": share}


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    stats = term_at_random(args.task, args.setting, args.steps, args.seed)
    print(f"{args.task}, {args.setting}, random actions, seed {args.seed}: {stats['steps_with_d']} steps "
          f"with D in effect")
    print(f"alpha*(-log D): mean {stats['term_mean']:.4f}, per-step std {stats['term_std']:.4f}; env part of "
          f"the shaped reward: std {stats['env_part_std']:.4f}; term share {stats['term_share']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
