"""The screening stage of the tuning protocol (issue 11): Table 1's random search, then a second seed.

Examples (from the repository root)::

    python -m experiments.screen --dry-run                    # the plan: trials, runs, their state
    python -m experiments.screen --jobs 2                     # run (or resume) everything, then report
    python -m experiments.screen --report-only                # the tables from what has finished
    python -m experiments.screen --heldout --jobs 2           # step 4, once screen.json is frozen

Protocol (all at ``--total-timesteps``, 500k by default, on the delayed tasks):

1. ``--num-trials`` PPO+GASIL settings drawn at random from ``--params`` (Table 1's ranges plus the
   env-reward scale and the buffer's ranking discount, :data:`experiments.sweep.SEARCH_SPACE`), the same
   settings on every task, seed 1. PPO with each of Table 1's learning rates, seeds 1 and 2.
2. Candidates: each task's best ``--top`` settings by seed 1, and the best ``--top`` by the geometric
   mean over tasks of seed 1. Every candidate runs seed 2 on every task.
3. Choice (``screen.json``): per task the candidate with the best mean of seeds 1–2; one single setting
   with the best geometric mean over tasks of those means; PPO's learning rate per task by the mean of
   seeds 1–2. These are frozen before any held-out seed runs. (``--report-only`` mid-screening writes a
   provisional ``screen.json`` from what has finished; ``--heldout`` refuses it while any candidate lacks
   a seed on a task.)

4. Held-out evaluation (``--heldout``), from ``screen.json`` only, at ``--heldout-timesteps`` (1M) in
   ``--heldout-dir``: PPO (its learning rate per task) and PPO+GASIL (the single setting, and each
   task's own where it differs) on seeds 101–110; PPO+SIL and PPO+BC (delayed, defaults) and, on the
   undelayed tasks, PPO (defaults) and PPO+GASIL (the single setting without the delay) on 101–105.
   A control arm on 101–110 beside the main comparison (``--blind-d-control``, on by default): the single
   setting with D frozen at its random initialization (:func:`blind_d`). −log D ≥ 0 pays a bonus for
   every step alive whatever D knows, so GASIL ÷ PPO alone cannot tell imitation from that bonus;
   GASIL ÷ blind-D can (docs/results.md, "Is it imitation").
   ``heldout.csv`` then has per agent and task the mean, 95% bootstrap interval and per-seed values,
   and GASIL ÷ PPO (and ÷ blind-D) per task with the geometric mean; ``heldout.md`` the same as
   markdown tables with the verdict on issue 11's bar (:func:`heldout_verdict`: none until the main
   comparison is complete).

Objective of a run: the mean true return of its last ``--last-n`` episodes. Everything lives in the
runner's layout under ``--results-dir``; the command resumes after an interruption (finished runs are
skipped, runs with a checkpoint continue from it).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python experiments/screen.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tyro  # noqa: E402

from experiments.grid import REPO_ROOT, Run, expand_grid, parse_setting, run_state  # noqa: E402
from experiments.results import last_n_mean  # noqa: E402
from experiments.runner import code_version, repo_relative, run_all, write_manifest  # noqa: E402
from experiments.sweep import SEARCH_SPACE, ParamName, trial_setting  # noqa: E402

__all__ = ["Args", "sample_trials", "plan_stage1", "plan_stage2", "choose", "plan_heldout", "heldout_parts",
           "heldout_verdict", "heldout_markdown", "run_commits", "heldout_table",
           "heldout_ratios", "heldout_panels", "ratio_interval", "blind_d", "unscreened", "with_component",
           "BLIND_D_LR", "main"]

BLIND_D_LR = 1e-12
"""D's learning rate in the blind-D control: Adam's steps of about 1e-12 leave D at its random
initialization while the run does all of GASIL's work (same code path, same cost)."""


def blind_d(setting: str) -> str:
    """`setting` with a blind D (``dlr1e-12`` in place of its own D learning rate), canonical.

    >>> blind_d("delayed20+dupdates1+dlr0.0003+alpha0.2")
    'delayed20+dupdates1+dlr1e-12+alpha0.2'
    >>> blind_d("delayed20")
    'delayed20+dlr1e-12'
    """
    parts = [p for p in parse_setting(setting)[0].split("+") if not p.startswith("dlr")]  # canonical parts
    return parse_setting("+".join(parts + [f"dlr{BLIND_D_LR:g}"]))[0]


@dataclass
class Args:
    """Screening of PPO+GASIL and PPO settings on the delayed tasks (issue 11's protocol)."""

    tasks: tuple[str, ...] = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")
    """Gymnasium ids"""
    base_setting: str = "delayed20"
    """the runner's setting every trial is added to"""
    params: tuple[ParamName, ...] = ("learning_rate", "d_updates", "d_lr", "buffer_steps", "alpha",
                                     "env_reward_scale", "buffer_gamma")
    """the hyperparameters searched"""
    num_trials: int = 16
    """random settings, each run on every task"""
    search_seed: int = 0
    """seed of the random draw of settings"""
    top: int = 3
    """candidates per task (and by geometric mean) that run the second seed"""
    total_timesteps: int = 500_000
    """env steps per run"""
    last_n: int = 20
    """the objective: mean true return of each run's last this many episodes"""
    results_dir: str = "results/screen-500k"
    """where the runs go (runner layout), with screen.csv and screen.json"""
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """runs at once"""
    checkpoint_every: int = 100_000
    """checkpoint period of every run (resume after an interruption)"""
    dry_run: bool = False
    """print the plan and the state of its runs, run nothing"""
    report_only: bool = False
    """run nothing; write screen.csv / screen.json from the finished runs (with --heldout: heldout.csv)"""
    heldout: bool = False
    """step 4: the held-out evaluation of the settings frozen in <results-dir>/screen.json"""
    heldout_dir: str = "results/heldout-1M"
    """where the held-out runs and heldout.csv go"""
    heldout_timesteps: int = 1_000_000
    """env steps per held-out run"""
    heldout_seeds: tuple[int, ...] = tuple(range(101, 111))
    """seeds of the main comparison (PPO vs PPO+GASIL); the other agents use the first half"""
    blind_d_control: bool = True
    """held-out: also run the single setting with a blind D (`blind_d`) on every seed of the main
    comparison; PPO+GASIL ÷ blind-D measures what imitation adds beyond −log D's bonus for staying alive"""
    add_setting: str = ""
    """held-out: a variant of the evaluation, in its own --heldout-dir: this setting component (such as
    truncationbootstrap) is added to every run of the frozen choice, PPO's, PPO+SIL's, PPO+BC's and the
    undelayed check's included"""


def sample_trials(params: Sequence[str], num_trials: int, seed: int) -> list[dict]:
    """``num_trials`` settings, each value drawn uniformly from its range; distinct, in draw order.

    >>> sample_trials(["alpha"], 2, seed=0) == sample_trials(["alpha"], 2, seed=0)
    True
    """
    rng = np.random.default_rng(seed)
    trials, seen = [], set()
    while len(trials) < num_trials:
        trial = {p: SEARCH_SPACE[p][0][int(rng.integers(len(SEARCH_SPACE[p][0])))] for p in params}
        key = tuple(trial.items())
        if key not in seen:
            seen.add(key)
            trials.append(trial)
        elif len(seen) >= math.prod(len(SEARCH_SPACE[p][0]) for p in params):
            break
    return trials


def _runs(args: Args, agent: str, settings: Sequence[str], seeds: Sequence[int]) -> list[Run]:
    return expand_grid(agents=[agent], tasks=args.tasks, settings=settings, seeds=seeds,
                       total_timesteps=args.total_timesteps, results_dir=args.results_dir,
                       checkpoint_every=args.checkpoint_every)


def _settings(args: Args) -> list[str]:
    return [trial_setting(args.base_setting, t) for t in sample_trials(args.params, args.num_trials,
                                                                         args.search_seed)]


def _ppo_settings(args: Args) -> list[str]:
    rates = SEARCH_SPACE["learning_rate"][0]
    return [trial_setting(args.base_setting, {"learning_rate": lr}) for lr in rates]


def plan_stage1(args: Args) -> list[Run]:
    """PPO+GASIL trials on seed 1 (trial by trial, every task), then PPO's learning rates on seeds 1, 2."""
    gasil = [run for setting in _settings(args) for run in _runs(args, "ppo_gasil", [setting], [1])]
    return gasil + _runs(args, "ppo", _ppo_settings(args), [1, 2])


def _objective(args: Args, runs: Sequence[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        if run_state(run) == "done":
            mean, episodes = last_n_mean(run.csv_path, args.last_n)
            rows.append({"agent": run.agent, "task": run.task, "setting": run.setting, "seed": run.seed,
                         "objective": mean, "episodes": episodes})
    return pd.DataFrame(rows, columns=["agent", "task", "setting", "seed", "objective", "episodes"])


def _geomean(table: pd.DataFrame, tasks: Sequence[str]) -> pd.Series:
    """Per setting, the geometric mean over tasks (NaN unless every task has a positive value)."""
    wide = table.reindex(columns=list(tasks))
    return np.exp(np.log(wide.where(wide > 0)).mean(axis=1, skipna=False))


def plan_stage2(args: Args, stage1: pd.DataFrame) -> list[str]:
    """The candidates (settings) for the second seed, from the seed-1 results of every trial."""
    gasil = stage1[(stage1.agent == "ppo_gasil") & (stage1.seed == 1)]
    table = gasil.pivot_table(index="setting", columns="task", values="objective")
    candidates = []
    for task in args.tasks:
        if task in table:
            candidates += list(table[task].nlargest(args.top).index)
    candidates += list(_geomean(table, args.tasks).nlargest(args.top).index)
    return list(dict.fromkeys(candidates))


def choose(args: Args, results: pd.DataFrame, candidates: Sequence[str]) -> dict:
    """The frozen choice: per-task best and single GASIL setting, and PPO's learning rate per task."""
    gasil = results[(results.agent == "ppo_gasil") & results.setting.isin(candidates)]
    both = gasil.groupby(["setting", "task"]).filter(lambda g: set(g.seed) >= {1, 2})
    table = both.pivot_table(index="setting", columns="task", values="objective", aggfunc="mean")
    ppo = results[results.agent == "ppo"].pivot_table(index="setting", columns="task", values="objective",
                                                      aggfunc="mean")
    geo = _geomean(table, args.tasks)
    return {
        "per_task": {t: table[t].idxmax() for t in args.tasks if t in table and table[t].notna().any()},
        "single": None if geo.isna().all() else geo.idxmax(),
        "single_geomean": None if geo.isna().all() else float(geo.max()),
        "ppo": {t: ppo[t].idxmax() for t in args.tasks if t in ppo and ppo[t].notna().any()},
        "gasil_table": table.round(1).to_dict(),
        "ppo_table": ppo.round(1).to_dict(),
    }


def unscreened(choice: dict, tasks: Sequence[str]) -> list[str]:
    """The (task, candidate) pairs of `choice` (a ``screen.json``) without a mean of seeds 1–2.

    ``--report-only`` writes ``screen.json`` from whatever has finished, so a file written mid-screening
    holds a choice among some candidates only; the held-out stage must not start from it.
    """
    table = choice.get("gasil_table", {})
    return [f"{task} {setting}" for setting in choice.get("candidates", []) for task in tasks
            if not isinstance(table.get(task, {}).get(setting), (int, float))
            or math.isnan(table[task][setting])]


def with_component(choice: dict, component: str) -> dict:
    """The frozen ``choice`` with the setting ``component`` added to every setting it names (canonical).

    >>> with_component({"single": "delayed20+alpha0.2", "per_task": {"Hopper-v5": "delayed20"},
    ...                 "ppo": {"Hopper-v5": "delayed20+lr0.0001"}}, "truncationbootstrap")["ppo"]
    {'Hopper-v5': 'delayed20+lr0.0001+truncationbootstrap'}
    """
    if not component:
        return choice

    def add(setting: str) -> str:
        return parse_setting(f"{setting}+{component}")[0]

    return {**choice, "single": add(choice["single"]),
            "per_task": {task: add(s) for task, s in choice.get("per_task", {}).items()},
            "ppo": {task: add(s) for task, s in choice["ppo"].items()}}


def _plain(args: Args, setting: str = "plain") -> str:
    """``setting`` (PPO's undelayed one by default) with the variant's component."""
    return parse_setting(f"{setting}+{args.add_setting}")[0]


def plan_heldout(args: Args, choice: dict) -> list[Run]:
    """The held-out runs of the frozen choice (nothing here reads a held-out result).

    Seed by seed: first the main comparison (PPO and PPO+GASIL on every delayed task, seeds 101–110, and
    the blind-D control of the single setting unless ``--no-blind-d-control``), then the other agents
    and the undelayed check (101–105). A campaign cut anywhere (it spans many
    sessions on a small machine) so has the same seeds for every agent and task of the comparison.
    """
    main, rest = heldout_parts(args, choice)
    return main + rest


def heldout_parts(args: Args, choice: dict) -> tuple[list[Run], list[Run]]:
    """:func:`plan_heldout`'s two parts: (the main comparison, the other agents and the undelayed check)."""
    seeds, half = list(args.heldout_seeds), _half_seeds(args)

    def run(agent, task, setting, seed):
        return expand_grid(agents=[agent], tasks=[task], settings=[setting], seeds=[seed],
                           total_timesteps=args.heldout_timesteps, results_dir=args.heldout_dir,
                           checkpoint_every=args.checkpoint_every)

    single, undelayed_single = choice["single"], _undelayed(args, choice["single"])
    main, rest = [], []
    for seed in seeds:
        for task in args.tasks:
            main += run("ppo", task, choice["ppo"][task], seed) + run("ppo_gasil", task, single, seed)
            if args.blind_d_control:
                main += run("ppo_gasil", task, blind_d(single), seed)
            if choice["per_task"].get(task, single) != single:
                main += run("ppo_gasil", task, choice["per_task"][task], seed)
    for seed in half:
        for task in args.tasks:
            rest += run("ppo_sil", task, _plain(args, args.base_setting), seed)
            rest += run("ppo_bc", task, _plain(args, args.base_setting), seed)
            rest += run("ppo", task, _plain(args), seed) + run("ppo_gasil", task, undelayed_single, seed)
    return main, rest


def _half_seeds(args: Args) -> list[int]:
    """The first half of the held-out seeds (at least one): PPO+SIL's, PPO+BC's and the undelayed check's."""
    return list(args.heldout_seeds[: max(1, len(args.heldout_seeds) // 2)])


def _undelayed(args: Args, setting: str) -> str:
    """`setting` without the delay of the base setting (``plain`` when nothing is left)."""
    return "+".join(p for p in setting.split("+") if p != args.base_setting) or "plain"


def heldout_table(args: Args, finals: pd.DataFrame) -> pd.DataFrame:
    """Per agent, task and setting: n, mean, 95% bootstrap interval, per-seed values of the finished runs."""
    from experiments.plot import bootstrap_band

    rows = []
    for (agent, task, setting), group in finals.groupby(["agent", "task", "setting"], sort=False):
        group = group.sort_values("seed")
        values = group["objective"].to_numpy()
        mean, lo, hi = bootstrap_band(values[:, None], n_boot=10_000)
        rows.append({"agent": agent, "task": task, "setting": setting, "n_seeds": len(values),
                     "mean": float(mean[0]), "lo": float(lo[0]), "hi": float(hi[0]),
                     "per_seed": " ".join(f"{s}:{v:.1f}" for s, v in zip(group.seed, values))})
    return pd.DataFrame(rows)


def ratio_interval(num: np.ndarray, den: np.ndarray, *, n_boot: int = 10_000, ci: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """mean(num) ÷ mean(den) and its percentile bootstrap interval (each group's seeds resampled apart).

    NaN when either group is empty or the mean of `den` is not positive (a ratio to a return that can be
    negative means nothing); resamples whose `den` mean is not positive are left out of the interval.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.size == 0 or den.size == 0 or den.mean() <= 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    boot_num = num[rng.integers(0, num.size, size=(n_boot, num.size))].mean(axis=1)
    boot_den = den[rng.integers(0, den.size, size=(n_boot, den.size))].mean(axis=1)
    boot = boot_num[boot_den > 0] / boot_den[boot_den > 0]
    tail = 100 * (1 - ci) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return float(num.mean() / den.mean()), float(lo), float(hi)


def heldout_ratios(args: Args, finals: pd.DataFrame, choice: dict) -> pd.DataFrame:
    """Per delayed task, from the per-run objectives (`finals`) of the held-out runs:

    - ``ratio``: PPO+GASIL with the single setting ÷ PPO with its learning rate, issue 11's bar;
    - ``ratio_task``: the same with the task's own setting;
    - ``repaired``: PPO+GASIL (single) on the delayed task ÷ PPO on the undelayed one, how much of the
      delay's cost GASIL repairs (the stretch goal is ≥ 0.9);
    - ``ratio_undelayed``: PPO+GASIL (single, without the delay) ÷ PPO on the undelayed task, the check
      before the setting may become a default ("not below PPO beyond seed noise": its interval);
    - ``over_blind``: PPO+GASIL (single) ÷ the same setting with a blind D, what imitation adds beyond
      −log D's bonus for staying alive (1.0: nothing).

    Each ratio has its 95% bootstrap interval in ``<ratio>_lo`` and ``<ratio>_hi``.

    The last row holds the geometric means over tasks of ``ratio``, ``ratio_task`` and ``over_blind``
    (NaN unless every task's ratio is positive).
    """
    def values(agent: str, task: str, setting: str) -> np.ndarray:
        chosen = (finals.agent == agent) & (finals.task == task) & (finals.setting == setting)
        return finals.loc[chosen].sort_values("seed")["objective"].to_numpy(dtype=float)

    def mean(v: np.ndarray) -> float:
        return float(v.mean()) if v.size else float("nan")

    rows = []
    for task in args.tasks:
        single = choice["single"]
        own = choice.get("per_task", {}).get(task, single)
        ppo, gasil = values("ppo", task, choice["ppo"][task]), values("ppo_gasil", task, single)
        gasil_own = values("ppo_gasil", task, own)
        ppo_plain = values("ppo", task, _plain(args))
        gasil_plain = values("ppo_gasil", task, _undelayed(args, single))
        blind = values("ppo_gasil", task, blind_d(single))
        def ratio(name: str, num: np.ndarray, den: np.ndarray) -> dict:
            return dict(zip((name, f"{name}_lo", f"{name}_hi"), ratio_interval(num, den)))

        rows.append({"task": task, "ppo": mean(ppo), "ppo_gasil": mean(gasil), **ratio("ratio", gasil, ppo),
                     "n_ppo": ppo.size, "n_gasil": gasil.size,
                     "ppo_gasil_task": mean(gasil_own), **ratio("ratio_task", gasil_own, ppo),
                     "ppo_undelayed": mean(ppo_plain), **ratio("repaired", gasil, ppo_plain),
                     "ppo_gasil_undelayed": mean(gasil_plain),
                     **ratio("ratio_undelayed", gasil_plain, ppo_plain),
                     "ppo_gasil_blind": mean(blind), **ratio("over_blind", gasil, blind),
                     "n_blind": blind.size})
    ratios = pd.DataFrame(rows)

    def geomean(column: str) -> float:
        r = ratios[column]
        return float(np.exp(np.log(r).mean())) if (r > 0).all() else float("nan")

    last = {"task": "geometric mean", **{c: geomean(c) for c in ("ratio", "ratio_task", "over_blind")}}
    return pd.concat([ratios, pd.DataFrame([last])], ignore_index=True)


#: issue 11's bar (PPO+GASIL ÷ PPO per delayed task, and their geometric mean) and its stretch goal (PPO+GASIL
#: on the delayed task ÷ PPO on the undelayed one), fixed before any held-out value was read
BAR_PER_TASK, BAR_GEOMEAN, STRETCH_REPAIRED = 1.0, 1.5, 0.9


def heldout_verdict(args: Args, ratios: pd.DataFrame, main: Sequence[Run], rest: Sequence[Run]) -> dict:
    """What the held-out ratios say against issue 11's bar, read only where the runs behind it are complete.

    ``bar``: "met" / "not met" once every run of the main comparison has finished, else "incomplete"
    (no verdict on part of a campaign). ``per_task``: task → ratio ≥ :data:`BAR_PER_TASK`; ``geomean``:
    the geometric mean ≥ :data:`BAR_GEOMEAN`. ``defaults_check`` ("passed" / "failed" / "incomplete"):
    on every task PPO+GASIL without the delay is not below PPO beyond seed noise, i.e. the upper end of
    the 95% interval of ``ratio_undelayed`` reaches 1.0. ``repaired``: task → ``repaired`` ≥
    :data:`STRETCH_REPAIRED` (the stretch goal; needs the undelayed PPO runs).
    """
    def done(runs: Sequence[Run]) -> int:
        return sum(run_state(r) == "done" for r in runs)

    per_task_rows = ratios[ratios.task != "geometric mean"].set_index("task")
    geomean = float(ratios.loc[ratios.task == "geometric mean", "ratio"].iloc[0])
    per_task = {t: bool(per_task_rows.loc[t, "ratio"] >= BAR_PER_TASK) for t in per_task_rows.index}
    main_done, rest_done = done(main), done(rest)
    bar = "incomplete"
    if main_done == len(main):
        bar = "met" if all(per_task.values()) and geomean >= BAR_GEOMEAN else "not met"
    defaults = "incomplete"
    if main_done == len(main) and rest_done == len(rest):
        defaults = "passed" if (per_task_rows["ratio_undelayed_hi"] >= 1.0).all() else "failed"
    return {"bar": bar, "per_task": per_task, "geomean": geomean, "geomean_met": geomean >= BAR_GEOMEAN,
            "defaults_check": defaults,
            "repaired": {t: bool(per_task_rows.loc[t, "repaired"] >= STRETCH_REPAIRED)
                         for t in per_task_rows.index},
            "main_done": main_done, "main_runs": len(main), "rest_done": rest_done, "rest_runs": len(rest)}


def run_commits(runs: Sequence[Run]) -> dict[str, int]:
    """Commit → how many of the finished ``runs`` ran it, from their logs (the runner writes ``# code
    <commit>`` on every start and resume; a run that names two commits counts for both, ``unknown`` when
    its log names none). More than one key: code changed inside the campaign."""
    counts: dict[str, int] = {}
    for run in runs:
        if run_state(run) != "done":
            continue
        log = Path(run.log_path)
        found = set(re.findall(r"# code (\S+)$", log.read_text(), flags=re.M)) if log.exists() else set()
        for commit in found or {"unknown"}:
            counts[commit] = counts.get(commit, 0) + 1
    return dict(sorted(counts.items()))


def heldout_markdown(args: Args, meta: dict, table: pd.DataFrame, ratios: pd.DataFrame, verdict: dict) -> str:
    """``heldout.md``: the held-out result as docs/results.md reports it (tables to paste, the verdict)."""
    def num(x: float) -> str:
        return "—" if pd.isna(x) else f"{x:,.0f}"

    def ratio(row, name: str) -> str:
        if pd.isna(row[name]):
            return "—"
        lo, hi = row.get(f"{name}_lo", np.nan), row.get(f"{name}_hi", np.nan)
        return f"{row[name]:.2f}" + ("" if pd.isna(lo) else f" [{lo:.2f}, {hi:.2f}]")

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    seeds, half = args.heldout_seeds, _half_seeds(args)
    variant = f", every run +`{meta['add_setting']}`" if meta.get("add_setting") else ""
    commits = ", ".join(f"`{c}` {n}" for c, n in meta.get("run_commits", {}).items()) or "none"
    if len(meta.get("run_commits", {})) > 1:
        commits += " (**more than one commit: the code changed inside this campaign**)"
    lines = [
        f"# Held-out evaluation: `{repo_relative(str(Path(args.heldout_dir).resolve()))}`", "",
        f"Campaign commit `{meta['commit']}`; choice `{meta['choice']}` "
        f"(screening `{meta['screening_commit']}`){variant}. "
        f"Finished runs by the code their logs name: {commits}. "
        f"{args.heldout_timesteps:,} steps; seeds {seeds[0]}–{seeds[-1]} (PPO+SIL, PPO+BC and the undelayed "
        f"check {half[0]}–{half[-1]}). A run's value: the mean true return of its last {args.last_n} "
        "episodes; intervals: 95% percentile bootstrap over seeds.", "",
        f"Runs finished: main comparison {verdict['main_done']} of {verdict['main_runs']}; other agents and "
        f"undelayed check {verdict['rest_done']} of {verdict['rest_runs']}.", "",
        f"**Bar** (PPO+GASIL ÷ PPO ≥ {BAR_PER_TASK} on every delayed task and ≥ {BAR_GEOMEAN} as the "
        f"geometric mean): **{verdict['bar']}**. **Defaults check** (undelayed, not below PPO beyond seed "
        "noise): "
        f"**{verdict['defaults_check']}**.", "",
        "| delayed task | PPO | PPO+GASIL (single) | ÷ PPO | ≥ 1.0 | task's setting | ÷ PPO | blind D | "
        "GASIL ÷ blind D |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, row in ratios.iterrows():
        if row.task == "geometric mean":
            lines.append(f"| geometric mean | | | {ratio(row, 'ratio')} | ≥ {BAR_GEOMEAN}: "
                         f"{yes(verdict['geomean_met'])} ({verdict['geomean']:.3f}) | | "
                         f"{ratio(row, 'ratio_task')} | | {ratio(row, 'over_blind')} |")
        else:
            lines.append(f"| {row.task} | {num(row.ppo)} | {num(row.ppo_gasil)} | {ratio(row, 'ratio')} | "
                         f"{yes(verdict['per_task'][row.task])} | {num(row.ppo_gasil_task)} | "
                         f"{ratio(row, 'ratio_task')} | {num(row.ppo_gasil_blind)} | "
                         f"{ratio(row, 'over_blind')} |")
    lines += ["", f"| task | PPO undelayed | PPO+GASIL delayed ÷ PPO undelayed (stretch ≥ "
              f"{STRETCH_REPAIRED}) | PPO+GASIL undelayed | ÷ PPO undelayed |",
              "| --- | --- | --- | --- | --- |"]
    for _, row in ratios[ratios.task != "geometric mean"].iterrows():
        lines.append(f"| {row.task} | {num(row.ppo_undelayed)} | {ratio(row, 'repaired')} | "
                     f"{num(row.ppo_gasil_undelayed)} | {ratio(row, 'ratio_undelayed')} |")
    lines += ["", "| agent | task | setting | seeds | mean [95% interval] | per seed |",
              "| --- | --- | --- | --- | --- | --- |"]
    for _, row in table.iterrows():
        lines.append(f"| {row.agent} | {row.task} | `{row.setting}` | {row.n_seeds} | "
                     f"{num(row['mean'])} [{num(row.lo)}, {num(row.hi)}] | {row.per_seed} |")
    return "\n".join(lines) + "\n"


def heldout_panels(args: Args, choice: dict) -> tuple[str, list]:
    """The held-out figure's title and panels: on each delayed task Figure 6's four agents (PPO+GASIL with
    the single setting, and with the task's own where it differs), the blind-D control (brown) and
    undelayed PPO in grey for reference; below, PPO vs PPO+GASIL on the undelayed tasks (the check
    before a default changes)."""
    from experiments.grid import AGENT_LABELS
    from experiments.plot import AGENT_COLORS, Curve, Panel

    def curve(agent: str, setting: str, label: str | None = None, color: str | None = None) -> Curve:
        return Curve(label or AGENT_LABELS[agent], agent, (setting,), color or AGENT_COLORS[agent])

    single, gasil = choice["single"], AGENT_LABELS["ppo_gasil"]
    delayed, undelayed = [], []
    for task in args.tasks:
        own = choice.get("per_task", {}).get(task, single)
        curves = [curve("ppo_gasil", single, f"{gasil} (single setting)")]
        if own != single:
            curves.append(curve("ppo_gasil", own, f"{gasil} (task's setting)", "tab:purple"))
        if args.blind_d_control:
            curves.append(curve("ppo_gasil", blind_d(single), f"{gasil}, blind D (control)", "tab:brown"))
        curves += [curve("ppo", choice["ppo"][task]), curve("ppo_sil", _plain(args, args.base_setting)),
                   curve("ppo_bc", _plain(args, args.base_setting)),
                   curve("ppo", _plain(args), "PPO, undelayed", "tab:gray")]
        delayed.append(Panel(f"{task}, {args.base_setting}", task, tuple(curves)))
        undelayed.append(Panel(f"{task}, undelayed", task, (
            curve("ppo_gasil", _undelayed(args, single), f"{gasil} (single setting)"),
            curve("ppo", _plain(args)))))
    seeds = f"held-out seeds {args.heldout_seeds[0]}–{args.heldout_seeds[-1]}"
    variant = f", every run +{args.add_setting}" if args.add_setting else ""
    return f"Figure 6 with the settings frozen by the screening ({seeds}{variant})", delayed + undelayed


def _heldout(args: Args) -> int:
    choice_path = Path(args.results_dir) / "screen.json"
    if not choice_path.exists():
        raise SystemExit(f"{choice_path} does not exist: finish the screening first")
    choice = json.loads(choice_path.read_text())
    if not choice.get("single") or set(choice.get("ppo", {})) < set(args.tasks):
        raise SystemExit(f"{choice_path} has no complete choice yet (single setting and PPO's rates)")
    missing = unscreened(choice, args.tasks)
    if missing:
        raise SystemExit(f"{choice_path} was written before the screening finished ({len(missing)} candidate "
                         f"runs without both seeds, e.g. {missing[0]}): finish it, then the choice is frozen")
    choice = with_component(choice, args.add_setting)
    main_runs, rest_runs = heldout_parts(args, choice)
    plan = main_runs + rest_runs  # plan_heldout's order
    if args.dry_run:
        for run in plan:
            print(f"{run_state(run):6s} {run.name}")
        return 0
    if not args.report_only:
        _execute(Path(args.heldout_dir), plan, args.jobs)
    out = Path(args.heldout_dir)
    finals = _objective(args, plan)
    table = heldout_table(args, finals)
    table.to_csv(out / "heldout.csv", index=False)
    print(table.to_string(index=False))
    ratios = heldout_ratios(args, finals, choice)
    ratios.to_csv(out / "heldout_ratios.csv", index=False)
    if len(finals):  # the figure, its curves and final returns (experiments.plot's formats): fig6*.png/csv
        from experiments.plot import draw_panels
        from experiments.results import load_results

        title, panels = heldout_panels(args, choice)
        draw_panels(load_results(out), "heldout", title, panels, out / "fig6.png", n_boot=10_000,
                    last_n=args.last_n)
    meta = {"commit": os.environ.get("GASIL_COMMIT") or code_version(str(REPO_ROOT)),
            "choice": repo_relative(str(choice_path.resolve())),
            "screening_commit": choice.get("commit", ""), "seeds": list(args.heldout_seeds),
            "add_setting": args.add_setting, "run_commits": run_commits(plan)}
    (out / "heldout.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(ratios.to_string(index=False))
    verdict = heldout_verdict(args, ratios, main_runs, rest_runs)
    (out / "heldout.md").write_text(heldout_markdown(args, meta, table, ratios, verdict))
    print(f"bar: {verdict['bar']}; defaults check: {verdict['defaults_check']} ({out / 'heldout.md'})")
    return 0


def _execute(out: Path, plan: Sequence[Run], jobs: int) -> bool:
    """Record the plan in the manifest and run what is not done; False (and the names said) if any failed."""
    write_manifest(out, plan)
    failed = [r for r in run_all(plan, jobs=jobs) if r.failed]
    if failed:
        print("failed: " + ", ".join(r.name for r in failed), file=sys.stderr)
    return not failed


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.heldout:
        return _heldout(args)
    out = Path(args.results_dir)
    stage1 = plan_stage1(args)
    if args.dry_run:
        for run in stage1:
            print(f"{run_state(run):6s} {run.name}")
        return 0
    if not args.report_only and not _execute(out, stage1, args.jobs):
        return 1
    results = _objective(args, stage1)
    candidates = plan_stage2(args, results)
    stage2 = _runs(args, "ppo_gasil", candidates, [2])
    if not args.report_only and not _execute(out, stage2, args.jobs):
        return 1
    results = _objective(args, stage1 + stage2)
    results.sort_values(["agent", "task", "setting", "seed"]).to_csv(out / "screen.csv", index=False)
    choice = {"candidates": candidates, **choose(args, results, candidates),
              "commit": os.environ.get("GASIL_COMMIT", ""), "args": {k: v for k, v in vars(args).items()}}
    (out / "screen.json").write_text(json.dumps(choice, indent=2, default=str) + "\n")
    print(json.dumps({k: choice[k] for k in ("per_task", "single", "single_geomean", "ppo")}, indent=2))
    print(f"wrote {out / 'screen.csv'} and {out / 'screen.json'} (code {REPO_ROOT.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
