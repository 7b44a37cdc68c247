"""Table 1's random hyperparameter search, as a Ray Tune sweep over the runner's runs.

Examples (from the repository root)::

    python -m experiments.sweep --agent ppo_gasil --task Walker2d-v5 --setting delayed20 \\
        --num-samples 20 --seeds 1 --results-dir results/sweep-1M-steps
    python -m experiments.sweep ... --ray-address auto       # on a running Ray cluster

Each trial samples one value of each searched hyperparameter from the paper's ranges (Appendix A,
Table 1), uniformly at random::

    learning_rate  {3e-4, 1e-4, 5e-5, 3e-5}       --learning-rate
    d_updates      {1, 5, 10, 20}                 --stack.d-updates
    d_lr           {3e-4, 1e-4, 2e-5, 1e-5}       --stack.d-lr
    buffer_steps   {1000, 10000}                  --stack.buffer-steps
    alpha          {0.02, 0.1, 0.2, 1}            --stack.alpha
    env_reward_scale {raw, normalized}            --stack.env-reward-scale   (beyond Table 1; opt-in)
    buffer_gamma   {0.99, 1.0}                    --stack.gamma              (beyond Table 1; opt-in)
    d_reward_form  {neg_log_d, logit}             --stack.d-reward-form      (beyond Table 1; opt-in)

A trial is the runner's setting ``<setting>+lr..+buffer..+dupdates..+dlr..+alpha..`` run for every seed
(in parallel, one CPU each), stored in the runner's layout under --results-dir: a trial whose CSVs
exist is not run again (so a sweep can be resumed or extended, and `experiments.plot` can read it).
Objective: the mean over seeds of each run's mean true return over its last `--last-n` episodes
(higher is better). The table of trials goes to ``<results-dir>/sweep.csv``, best first.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as `python experiments/sweep.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import tyro  # noqa: E402

from experiments.grid import REPO_ROOT, AgentName, Run, expand_grid, parse_setting, run_state  # noqa: E402
from experiments.results import last_n_mean  # noqa: E402
from experiments.runner import execute, init_ray  # noqa: E402

__all__ = ["Args", "SEARCH_SPACE", "DEFAULT_PARAMS", "trial_setting", "trial_runs", "run_trial", "sweep",
           "main"]

ParamName = Literal["learning_rate", "d_updates", "d_lr", "buffer_steps", "alpha", "env_reward_scale",
                    "buffer_gamma", "d_reward_form"]

#: The paper's ranges (Table 1): name -> (values, setting component of experiments.grid).
SEARCH_SPACE: dict[str, tuple[tuple[float | int, ...], str]] = {
    "learning_rate": ((3e-4, 1e-4, 5e-5, 3e-5), "lr"),
    "d_updates": ((1, 5, 10, 20), "dupdates"),
    "d_lr": ((3e-4, 1e-4, 2e-5, 1e-5), "dlr"),
    "buffer_steps": ((1000, 10000), "buffer"),
    "alpha": ((0.02, 0.1, 0.2, 1.0), "alpha"),
    # beyond Table 1 (issue 11): what alpha weighs against, and the discount that ranks the buffer
    "env_reward_scale": (("raw", "normalized"), "envreward"),
    "buffer_gamma": ((0.99, 1.0), "buffergamma"),
    # D's term: -log D (the paper's; also an alive bonus) or -logit D (imitation only)
    "d_reward_form": (("neg_log_d", "logit"), "dreward"),
}
#: What each agent's sweep searches by default (the discriminator's settings only matter to GASIL).
DEFAULT_PARAMS: dict[str, tuple[str, ...]] = {
    "ppo": ("learning_rate",),
    "ppo_gasil": ("learning_rate", "d_updates", "d_lr", "buffer_steps", "alpha"),
    "ppo_sil": ("learning_rate",),
    "ppo_bc": ("learning_rate", "buffer_steps"),
}


@dataclass
class Args:
    """Random search over the paper's hyperparameter ranges (Table 1) with Ray Tune."""

    agent: AgentName = "ppo_gasil"
    """the agent to tune"""
    task: str = "Walker2d-v5"
    """the Gymnasium id"""
    setting: str = "plain"
    """the runner's setting the hyperparameters are added to (plain, delayed20, noise0.1, ...)"""
    params: tuple[ParamName, ...] | None = None
    """the hyperparameters to search (default: all five for ppo_gasil, learning_rate for ppo/ppo_sil,
    learning_rate and buffer_steps for ppo_bc); the others keep the scripts' defaults"""
    num_samples: int = 20
    """number of trials (random configurations)"""
    seeds: tuple[int, ...] = (1,)
    """seeds per trial (each trial uses one CPU per seed)"""
    total_timesteps: int = 1_000_000
    """env steps per run"""
    last_n: int = 20
    """the objective is the mean true return of each run's last this many episodes, averaged over seeds"""
    results_dir: str = "results/sweep-1M-steps"
    """where the trials' runs, sweep.csv and Tune's own files (tune/) go"""
    search_seed: int = 0
    """seed of the random search"""
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """CPUs of the local Ray instance (without --ray-address); trials run while CPUs are free"""
    ray_address: str | None = None
    """join this Ray cluster ('auto', ray://host:port) instead of starting one here"""
    checkpoint_every: int = 100_000
    """runs write checkpoints this often and resume from them when the sweep is run again (0: off)"""
    script_args: str = ""
    """extra flags for every script, one string"""
    algos_dir: str = str(REPO_ROOT / "algos")
    """directory of the algos/ scripts"""


def trial_setting(base: str, config: dict) -> str:
    """The runner's setting name of one trial: the base setting plus its hyperparameters.

    >>> trial_setting("delayed20", {"learning_rate": 1e-4, "alpha": 0.2})
    'delayed20+lr0.0001+alpha0.2'
    >>> trial_setting("delayed20", {"d_reward_form": "logit", "env_reward_scale": "normalized"})
    'delayed20+envrewardnormalized+drewardlogit'
    """
    parts = [base] + [f"{SEARCH_SPACE[k][1]}{v}" for k, v in config.items() if k in SEARCH_SPACE]
    return parse_setting("+".join(parts))[0]


def trial_runs(base: dict, config: dict) -> list[Run]:
    """The runs (one per seed) of the trial with hyperparameters `config`; `base` holds the sweep's args."""
    return expand_grid(
        agents=[base["agent"]], tasks=[base["task"]], settings=[trial_setting(base["setting"], config)],
        seeds=base["seeds"], total_timesteps=base["total_timesteps"], results_dir=base["results_dir"],
        algos_dir=base["algos_dir"], checkpoint_every=base["checkpoint_every"],
        script_args=shlex.split(base["script_args"]),
    )


def run_trial(base: dict, config: dict) -> dict:
    """Run (or reuse) the trial's runs and compute its objective; raises if a run fails."""
    runs = trial_runs(base, config)
    pending = [(run, run_state(run)) for run in runs]
    pending = [(run, state == "resume") for run, state in pending if state != "done"]
    if pending:
        with ThreadPoolExecutor(max_workers=len(pending)) as pool:
            results = list(pool.map(lambda p: execute(p[0], resume=p[1]), pending))
        failed = [f"{r.name}: {r.error} (log: {run.log_path})"
                  for r, (run, _) in zip(results, pending) if not r.ok]
        if failed:
            raise RuntimeError("trial runs failed: " + "; ".join(failed))
    means, episodes = zip(*(last_n_mean(run.csv_path, base["last_n"]) for run in runs))
    return {"objective": float(sum(means) / len(means)), "episodes": min(episodes),
            "setting": runs[0].setting, "per_seed": " ".join(f"{m:.1f}" for m in means)}


def _trainable(config: dict, base: dict) -> None:
    from ray import tune

    tune.report(run_trial(base, config))


def sweep(args: Args, *, verbose: int = 1) -> pd.DataFrame:
    """Run the sweep; return (and write to <results-dir>/sweep.csv) one row per trial, best first."""
    params = args.params or DEFAULT_PARAMS[args.agent]
    results_dir = Path(args.results_dir).resolve()
    base = {"agent": args.agent, "task": args.task, "setting": parse_setting(args.setting)[0],
            "seeds": tuple(args.seeds), "total_timesteps": args.total_timesteps,
            "results_dir": str(results_dir),
            "algos_dir": str(Path(args.algos_dir).resolve()), "checkpoint_every": args.checkpoint_every,
            "script_args": args.script_args, "last_n": args.last_n}
    trial_setting(base["setting"], {})  # validate early

    init_ray(args.ray_address, num_cpus=args.jobs)
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from experiments.sweep import _trainable as trainable_fn  # by reference, also when run as __main__

    space = {name: tune.choice(list(SEARCH_SPACE[name][0])) for name in params}
    trainable = tune.with_resources(tune.with_parameters(trainable_fn, base=base), {"cpu": len(args.seeds)})
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            num_samples=args.num_samples, metric="objective", mode="max",
            search_alg=BasicVariantGenerator(random_state=args.search_seed),
        ),
        run_config=tune.RunConfig(name=f"{args.task}__{base['setting']}__{args.agent}",
                                  storage_path=str(results_dir / "tune"), verbose=verbose),
    )
    grid = tuner.fit()
    rows = []
    for result in grid:
        row = {"trial": Path(result.path).name if result.path else "", **result.config}
        if result.error is not None:
            row.update(objective=float("nan"), error=str(result.error).strip().splitlines()[-1][:300])
        else:
            row.update({k: result.metrics.get(k) for k in ("objective", "episodes", "setting", "per_seed")})
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("objective", ascending=False, na_position="last")
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / "sweep.csv", index=False)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    table = sweep(args)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 80):
        print(table.drop(columns=["trial"], errors="ignore").to_string(index=False))
    print(f"wrote {Path(args.results_dir) / 'sweep.csv'}")
    if "error" in table and table["error"].notna().any():
        print(f"{int(table['error'].notna().sum())} trials failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
