"""Is GASIL doing anything in these runs? A table of each run's late diagnostics, from its tensorboard logs.

Example (from the repository root)::

    python -m experiments.diagnostics --results-dir results/screen-500k     # writes diagnostics.csv there
    python -m experiments.diagnostics --results-dir results/screen-500k --window 100000   # windows.csv

Per finished run: its final return (mean true return of the last ``--last-n`` episodes) and the mean over
the last ``--fraction`` of its steps of the GASIL term's share of the shaped reward, D's loss and
accuracies, the buffer's mean return, and the policy's entropy, approximate KL and the value function's
explained variance (:data:`experiments.results.DIAGNOSTIC_TAGS`). A share near 1 with D's loss near
2·ln 2 (≈ 1.386) means the shaped reward is mostly a discriminator that tells nothing apart.

With ``--window N``, the same over time instead (:func:`experiments.results.run_windows`): per run and
``N`` steps, how many episodes ended, their median length and true return, and each tag's mean. Episode
lengths tell a Hopper that stands until the time limit (an alive bonus, or a constant term, earning its
return) from one that hops.

The tensorboard logs are git-ignored and do not outlive the machine that ran them, so commit the CSV as
runs finish: rewriting it keeps, for a run whose logs are gone, the values the CSV already holds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python experiments/diagnostics.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import tyro  # noqa: E402

from experiments.results import DIAGNOSTIC_TAGS, run_diagnostics, run_windows  # noqa: E402

KEYS = ["agent", "task", "setting", "seed"]


def keep_earlier(table: pd.DataFrame, earlier: pd.DataFrame, keys: list[str] = KEYS) -> pd.DataFrame:
    """``table``, where a row (a run, or a run's window) has no log values (all tag columns NaN) but
    ``earlier`` has one with some, takes ``earlier``'s values; rows only ``earlier`` has are kept too.
    Sorted by `keys`. Tag columns ``earlier`` lacks stay NaN."""
    tags = [t.rsplit("/", 1)[-1] for t in DIAGNOSTIC_TAGS]
    earlier = earlier.reindex(columns=table.columns)
    logged = earlier[earlier[tags].notna().any(axis=1)].set_index(keys)
    now = table.set_index(keys)
    lost = now.index[now[tags].isna().all(axis=1)].intersection(logged.index)
    now.loc[lost, tags] = logged.loc[lost, tags]
    merged = pd.concat([now, logged.loc[logged.index.difference(now.index)]])
    return merged.reset_index().sort_values(keys, ignore_index=True, key=_window_start)


def _window_start(column: pd.Series) -> pd.Series:
    """Sort windows ("0-100k", "100-200k", …, "1000-1100k") by their start, not as text."""
    return column.str.split("-").str[0].astype(float) if column.name == "window" else column


@dataclass
class Args:
    """Each finished run's late diagnostics (tensorboard) beside its final return, as one CSV."""

    results_dir: str = "results/screen-500k"
    """the runner's results directory (its runs/ holds the tensorboard logs)"""
    out: str | None = None
    """the CSV (default: <results-dir>/diagnostics.csv, or windows.csv with --window)"""
    window: int = 0
    """if > 0: one row per run and this many steps (windows.csv) instead of one per run"""
    fraction: float = 0.25
    """the late part of each run whose values are averaged"""
    last_n: int = 20
    """episodes at the end of each run whose mean true return is its final return"""


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.window > 0:
        table = run_windows(args.results_dir, window=args.window)
        keys, name = [*KEYS, "window"], "windows.csv"
    else:
        table = run_diagnostics(args.results_dir, fraction=args.fraction, last_n=args.last_n)
        keys, name = KEYS, "diagnostics.csv"
    if table.empty:
        print(f"no finished runs under {args.results_dir}", file=sys.stderr)
        return 1
    out = Path(args.out or Path(args.results_dir) / name)
    if out.exists():
        table = keep_earlier(table, pd.read_csv(out), keys)
    table.to_csv(out, index=False, float_format="%.6g")
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
        print(table.drop(columns=["agent"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
