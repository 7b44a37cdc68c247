"""Draw the paper's learning-curve figures from a results directory: mean and 95% bootstrap band over seeds.

Examples (from the repository root)::

    python -m experiments.plot --results-dir results/1M-steps --figure fig6 --out results/fig6.png
    python -m experiments.plot --results-dir results/1M-steps --figure all     # every figure with data

Figures (one panel per task, or per setting where the paper varies one on a single task)::

    fig1  2D point mass (gasil_wrappers:PointMass-v0), PPO vs PPO+GASIL
    fig4  plain MuJoCo tasks, PPO / PPO+GASIL / PPO+SIL / PPO+BC
    fig5  Walker2d with observation noise sigma 0, 0.05, 0.1, 0.5: PPO vs PPO+GASIL, one panel per sigma
    fig6  delayed-reward (20 steps) MuJoCo tasks, four agents
    fig7  Walker2d PPO+GASIL: (a) buffer size 500/1000/2000/5000 steps, (b) D updates per batch 1/5/10/20
    compare  any --agents x --settings, one panel per task (--tasks): for one's own investigations, e.g.
          --figure compare --agents ppo ppo_gasil --settings delayed20 delayed20+buffergamma1
          (--also <dir> ... adds the runs of other results directories)

How a curve is made: each seed's episodes are smoothed by a trailing moving mean over `--window`
episodes, interpolated on a common grid of `--grid-points` steps (from the latest first episode to the
earliest last episode among the seeds, so every seed covers every grid point), averaged over seeds;
the band is the percentile bootstrap (`--n-boot` resamples of the seeds, with replacement) of that
mean. With one seed the band is the curve itself.

Next to ``<out>.png`` go ``<out>.csv`` (every drawn curve: figure, panel, curve, agent, task, setting,
step, mean, lo, hi, n_seeds) and ``<out>_final.csv`` (per curve: the mean over seeds of each seed's
mean true return over its last `--last-n` episodes, with its bootstrap interval): the numbers for
docs/results.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as `python experiments/plot.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tyro  # noqa: E402

from experiments.grid import AGENT_LABELS, DEFAULT_GASIL, TASKS  # noqa: E402
from experiments.results import load_results  # noqa: E402

__all__ = [
    "Args", "Curve", "Panel", "FIGURES", "smooth_episodes", "seed_curves", "bootstrap_band",
    "aggregate", "final_returns", "figure_panels", "draw", "draw_panels", "main",
]

FigureName = Literal["fig1", "fig4", "fig5", "fig6", "fig7"]
FIGURES: tuple[str, ...] = ("fig1", "fig4", "fig5", "fig6", "fig7")
AGENT_COLORS = {"ppo": "tab:blue", "ppo_gasil": "tab:red", "ppo_sil": "tab:green", "ppo_bc": "tab:orange"}
FOUR_AGENTS = ("ppo_gasil", "ppo", "ppo_sil", "ppo_bc")


@dataclass
class Args:
    """Draw one of the paper's figures (or all) from a results directory of the runner."""

    results_dir: str = "results/1M-steps"
    """the runner's results directory"""
    also: tuple[str, ...] = ()
    """more results directories whose runs join --results-dir's (e.g. an investigation's runs beside the
    screening's); a run found in two of them is an error"""
    figure: Literal["fig1", "fig4", "fig5", "fig6", "fig7", "compare", "all"] = "fig6"
    """which figure; `all` draws every paper figure that has data; `compare`: --agents x --settings"""
    out: str | None = None
    """the PNG (default: <results-dir>/<figure>.png); with --figure all, a directory"""
    tasks: tuple[str, ...] | None = None
    """the panels' tasks for fig4/fig6 (default: those in the results, paper order first); the task
    for fig1/fig5/fig7 (default: the point mass / Walker2d)"""
    agents: tuple[str, ...] = ("ppo", "ppo_gasil")
    """with --figure compare: the agents"""
    settings: tuple[str, ...] = ("delayed20",)
    """with --figure compare: the settings (canonical names, as in the results directory)"""
    window: int = 10
    """smoothing: trailing moving mean over this many episodes of each seed (1: none)"""
    grid_points: int = 100
    """points of the common step grid the seeds are interpolated on"""
    n_boot: int = 1000
    """bootstrap resamples of the seeds"""
    ci: float = 0.95
    """confidence level of the band"""
    last_n: int = 20
    """episodes at the end of each run whose mean true return is the 'final return' of <out>_final.csv"""
    include_partial: bool = False
    """also use the .partial CSVs of unfinished runs (a look at a campaign in progress)"""
    seed: int = 0
    """seed of the bootstrap"""


# --- aggregation --------------------------------------------------------------------------------------

def smooth_episodes(returns: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving mean over `window` episodes (the first ones average what there is)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return pd.Series(np.asarray(returns, dtype=float)).rolling(window, min_periods=1).mean().to_numpy()


def seed_curves(frame: pd.DataFrame, *, window: int = 10, grid_points: int = 100
                ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Smoothed per-seed curves interpolated on one step grid: (grid, curves[n_seeds, len(grid)], seeds).

    `frame` has columns seed, step, true_return (episodes in order within each seed). The grid runs
    from the latest first episode to the earliest last episode among the seeds: no seed is extrapolated.
    """
    per_seed = []
    for seed, group in frame.groupby("seed", sort=True):
        y = smooth_episodes(group["true_return"].to_numpy(), window)
        # Several episodes can end at the same step (vector envs): one point per step, their mean.
        by_step = pd.Series(y).groupby(group["step"].to_numpy()).mean()
        per_seed.append((int(seed), by_step.index.to_numpy(dtype=float), by_step.to_numpy()))
    if not per_seed:
        raise ValueError("no episodes")
    lo = max(x[0] for _, x, _ in per_seed)
    hi = min(x[-1] for _, x, _ in per_seed)
    if hi < lo:
        raise ValueError(f"the seeds' step ranges do not overlap (latest start {lo:.0f}, "
                         f"earliest end {hi:.0f})")
    grid = np.linspace(lo, hi, grid_points) if hi > lo else np.array([hi])
    curves = np.stack([np.interp(grid, x, y) for _, x, y in per_seed])
    return grid, curves, [s for s, _, _ in per_seed]


def bootstrap_band(values: np.ndarray, *, n_boot: int = 1000, ci: float = 0.95,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and the percentile bootstrap interval of that mean.

    `values` is (n_seeds, ...) ; each resample draws n_seeds seeds with replacement.
    """
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0) if rng is None else rng
    mean = values.mean(axis=0)
    n = values.shape[0]
    if n == 1:
        return mean, mean.copy(), mean.copy()
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = values[idx].mean(axis=1)
    tail = 100 * (1 - ci) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail], axis=0)
    return mean, lo, hi


def aggregate(frame: pd.DataFrame, *, window: int = 10, grid_points: int = 100, n_boot: int = 1000,
              ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One curve from the episodes of several seeds: step, mean, lo, hi, n_seeds."""
    grid, curves, seeds = seed_curves(frame, window=window, grid_points=grid_points)
    mean, lo, hi = bootstrap_band(curves, n_boot=n_boot, ci=ci, rng=np.random.default_rng(seed))
    return pd.DataFrame({"step": grid, "mean": mean, "lo": lo, "hi": hi, "n_seeds": len(seeds)})


def final_returns(frame: pd.DataFrame, *, last_n: int = 20, n_boot: int = 1000, ci: float = 0.95,
                  seed: int = 0) -> dict:
    """Each seed's mean true return over its last `last_n` episodes; their mean and bootstrap interval."""
    per_seed = frame.groupby("seed", sort=True)["true_return"].apply(lambda r: r.to_numpy()[-last_n:].mean())
    mean, lo, hi = bootstrap_band(per_seed.to_numpy()[:, None], n_boot=n_boot, ci=ci,
                                  rng=np.random.default_rng(seed))
    return {"n_seeds": len(per_seed), "last_n": last_n, "final_mean": float(mean[0]),
            "final_lo": float(lo[0]), "final_hi": float(hi[0]),
            "per_seed": " ".join(f"{s}:{v:.1f}" for s, v in per_seed.items())}


# --- figures -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Curve:
    """One line of a panel: an agent under the first of `settings` that has results."""

    label: str
    agent: str
    settings: tuple[str, ...]
    color: str | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    task: str
    curves: tuple[Curve, ...]


def _order_tasks(tasks: Sequence[str]) -> list[str]:
    paper = {t.split("-")[0]: i for i, t in enumerate(TASKS)}
    return sorted(set(tasks), key=lambda t: (paper.get(t.split("-")[0], len(paper)), t))


def _pick_task(df: pd.DataFrame, tasks: Sequence[str] | None, want: str) -> str:
    if tasks:
        return tasks[0]
    present = [t for t in _order_tasks(df["task"].unique()) if want in t]
    return present[0] if present else want


def _agent_curves(agents: Sequence[str], settings: tuple[str, ...]) -> tuple[Curve, ...]:
    return tuple(Curve(AGENT_LABELS[a], a, settings, AGENT_COLORS[a]) for a in agents)


def figure_panels(figure: str, df: pd.DataFrame, tasks: Sequence[str] | None = None,
                  agents: Sequence[str] = ("ppo", "ppo_gasil"), settings: Sequence[str] = ("delayed20",)
                  ) -> tuple[str, list[Panel]]:
    """The title and panels of one figure, for the results in `df` (`agents`, `settings`: compare only)."""
    if figure == "compare":
        if tasks is None:
            chosen = df["setting"].isin(settings) & df["agent"].isin(agents)
            tasks = _order_tasks(df.loc[chosen, "task"].unique())
        cmap = plt.get_cmap("tab10")
        curves = tuple(Curve(f"{AGENT_LABELS[a]}, {s}", a, (s,), cmap(i % 10))
                       for i, (a, s) in enumerate((a, s) for a in agents for s in settings))
        return f"{', '.join(settings)}", [Panel(t, t, curves) for t in tasks]
    if figure in ("fig4", "fig6"):
        setting = "plain" if figure == "fig4" else "delayed20"
        if tasks is None:
            tasks = _order_tasks(t for t in df.loc[df["setting"] == setting, "task"].unique()
                                 if "PointMass" not in t) or list(TASKS)
        title = ("Figure 4: MuJoCo tasks" if figure == "fig4"
                 else "Figure 6: delayed-reward MuJoCo tasks (reward every 20 steps)")
        return title, [Panel(t, t, _agent_curves(FOUR_AGENTS, (setting,))) for t in tasks]
    if figure == "fig1":
        task = _pick_task(df, tasks, "PointMass")
        return "Figure 1: 2D point mass", [Panel(task, task, _agent_curves(("ppo_gasil", "ppo"), ("plain",)))]
    if figure == "fig5":
        task = _pick_task(df, tasks, "Walker2d")
        panels = [Panel(f"{task}, noise σ = {sigma}", task,
                        _agent_curves(("ppo_gasil", "ppo"), (f"noise{sigma}" if sigma != "0" else "plain",)))
                  for sigma in ("0", "0.05", "0.1", "0.5")]
        return "Figure 5: Walker2d with Gaussian observation noise", panels
    if figure == "fig7":
        task = _pick_task(df, tasks, "Walker2d")
        cmap = plt.get_cmap("viridis")

        def sweep(kind: str, values: Sequence[int]) -> tuple[Curve, ...]:
            return tuple(
                Curve(str(v), "ppo_gasil",
                      (f"{kind}{v}", "plain") if v == DEFAULT_GASIL[kind] else (f"{kind}{v}",),
                      cmap(i / max(1, len(values) - 1) * 0.9))
                for i, v in enumerate(values))

        return f"Figure 7: effect of GASIL hyperparameters ({task}, PPO+GASIL)", [
            Panel("(a) good-trajectory buffer size (steps)", task, sweep("buffer", (500, 1000, 2000, 5000))),
            Panel("(b) discriminator updates per batch", task, sweep("dupdates", (1, 5, 10, 20))),
        ]
    raise ValueError(f"unknown figure {figure!r} (known: {', '.join(FIGURES)})")


def _select(df: pd.DataFrame, panel: Panel, curve: Curve) -> tuple[str, pd.DataFrame] | None:
    rows = df[(df["task"] == panel.task) & (df["agent"] == curve.agent)]
    for setting in curve.settings:
        chosen = rows[rows["setting"] == setting]
        if len(chosen):
            return setting, chosen
    return None


def draw(df: pd.DataFrame, figure: str, out: str | Path, *, tasks: Sequence[str] | None = None,
         agents: Sequence[str] = ("ppo", "ppo_gasil"), settings: Sequence[str] = ("delayed20",),
         window: int = 10, grid_points: int = 100, n_boot: int = 1000, ci: float = 0.95, last_n: int = 20,
         seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw `figure` to `out` (PNG) and write the curves and final returns next to it.

    Returns (curves, finals), the frames written to ``<out>.csv`` and ``<out>_final.csv``. Curves with
    no results are left out (and said so on stderr); raises ValueError when the figure has no data.
    """
    title, panels = figure_panels(figure, df, tasks, agents, settings)
    return draw_panels(df, figure, title, panels, out, window=window, grid_points=grid_points, n_boot=n_boot,
                       ci=ci, last_n=last_n, seed=seed)


def draw_panels(df: pd.DataFrame, figure: str, title: str, panels: Sequence[Panel], out: str | Path, *,
                window: int = 10, grid_points: int = 100, n_boot: int = 1000, ci: float = 0.95,
                last_n: int = 20, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw `panels` (any figure, e.g. the held-out one of experiments.screen) as :func:`draw` does."""
    out = Path(out)
    curves, finals, missing = [], [], []
    for panel in panels:
        for curve in panel.curves:
            picked = _select(df, panel, curve)
            if picked is None:
                missing.append(f"{panel.title}: {curve.label}")
                continue
            setting, rows = picked
            meta = {"figure": figure, "panel": panel.title, "curve": curve.label, "agent": curve.agent,
                    "task": panel.task, "setting": setting}
            agg = aggregate(rows, window=window, grid_points=grid_points, n_boot=n_boot, ci=ci, seed=seed)
            curves.append(agg.assign(**meta)[[*meta, *agg.columns]])
            finals.append({**meta, **final_returns(rows, last_n=last_n, n_boot=n_boot, ci=ci, seed=seed)})
    if not curves:
        raise ValueError(f"{figure}: no results for any of its curves")
    if missing:
        print(f"{figure}: no results for " + "; ".join(missing), file=sys.stderr)
    curves_df, finals_df = pd.concat(curves, ignore_index=True), pd.DataFrame(finals)

    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.4 * ncols, 7.0), 3.4 * nrows + 0.6), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        part = curves_df[curves_df["panel"] == panel.title]
        for curve in panel.curves:
            c = part[part["curve"] == curve.label]
            if c.empty:
                continue
            label = f"{curve.label} (n={int(c['n_seeds'].iloc[0])})"
            ax.plot(c["step"] / 1e6, c["mean"], color=curve.color, label=label, linewidth=1.5)
            ax.fill_between(c["step"] / 1e6, c["lo"], c["hi"], color=curve.color, alpha=0.2, linewidth=0)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("environment steps (millions)")
        ax.grid(alpha=0.3)
        if part.empty:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes, color="gray")
        else:
            ax.legend(fontsize=8, loc="best")
    for ax in axes[:, 0]:
        ax.set_ylabel("true episodic return")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}\nmean over seeds, {ci:.0%} bootstrap band; moving mean over {window} episodes",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    curves_df.to_csv(out.with_suffix(".csv"), index=False)
    finals_df.to_csv(out.with_name(out.stem + "_final.csv"), index=False)
    return curves_df, finals_df


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    frames = [load_results(d, include_partial=args.include_partial) for d in (args.results_dir, *args.also)]
    df = pd.concat(frames, ignore_index=True)
    keys = ["agent", "task", "setting", "seed"]
    runs = pd.concat([f[keys].drop_duplicates() for f in frames])
    twice = runs.duplicated()
    if twice.any():
        run = runs[twice].iloc[0].to_dict()
        print(f"the same run is in two of the results directories: {run}", file=sys.stderr)
        return 1
    if df.empty:
        print(f"no results under {args.results_dir}", file=sys.stderr)
        return 1
    figures = FIGURES if args.figure == "all" else (args.figure,)
    drawn = 0
    for figure in figures:
        if args.figure == "all":
            out = Path(args.out or args.results_dir) / f"{figure}.png"
        else:
            out = Path(args.out or Path(args.results_dir) / f"{figure}.png")
        try:
            _, finals = draw(df, figure, out, tasks=args.tasks, agents=args.agents, settings=args.settings,
                             window=args.window,
                             grid_points=args.grid_points, n_boot=args.n_boot, ci=args.ci,
                             last_n=args.last_n, seed=args.seed)
        except ValueError as e:
            if args.figure == "all":
                continue
            print(e, file=sys.stderr)
            return 1
        drawn += 1
        print(f"wrote {out}, {out.with_suffix('.csv')}, {out.with_name(out.stem + '_final.csv')}")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(finals[["panel", "curve", "setting", "n_seeds", "final_mean", "final_lo", "final_hi"]]
                  .to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
