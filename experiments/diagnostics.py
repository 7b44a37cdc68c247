"""Is GASIL doing anything in these runs? A table of each run's late diagnostics, from its tensorboard logs.

Example (from the repository root)::

    python -m experiments.diagnostics --results-dir results/screen-500k     # writes diagnostics.csv there

Per finished run: its final return (mean true return of the last ``--last-n`` episodes) and the mean over
the last ``--fraction`` of its steps of the GASIL term's share of the shaped reward, D's loss and
accuracies, the buffer's mean return, and the policy's entropy, approximate KL and the value function's
explained variance (:data:`experiments.results.DIAGNOSTIC_TAGS`). A share near 1 with D's loss near
2·ln 2 (≈ 1.386) means the shaped reward is mostly a discriminator that tells nothing apart.

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

from experiments.results import DIAGNOSTIC_TAGS, run_diagnostics  # noqa: E402

KEYS = ["agent", "task", "setting", "seed"]


def keep_earlier(table: pd.DataFrame, earlier: pd.DataFrame) -> pd.DataFrame:
    """``table``, where a run has no log values (all tag columns NaN) but ``earlier`` has a row for it
    with some, takes ``earlier``'s values; runs only ``earlier`` has are kept too. Sorted by run."""
    tags = [t.rsplit("/", 1)[-1] for t in DIAGNOSTIC_TAGS]
    earlier = earlier.reindex(columns=table.columns)
    logged = earlier[earlier[tags].notna().any(axis=1)].set_index(KEYS)
    now = table.set_index(KEYS)
    lost = now.index[now[tags].isna().all(axis=1)].intersection(logged.index)
    now.loc[lost, tags] = logged.loc[lost, tags]
    merged = pd.concat([now, logged.loc[logged.index.difference(now.index)]])
    return merged.reset_index().sort_values(KEYS, ignore_index=True)


@dataclass
class Args:
    """Each finished run's late diagnostics (tensorboard) beside its final return, as one CSV."""

    results_dir: str = "results/screen-500k"
    """the runner's results directory (its runs/ holds the tensorboard logs)"""
    out: str | None = None
    """the CSV (default: <results-dir>/diagnostics.csv)"""
    fraction: float = 0.25
    """the late part of each run whose values are averaged"""
    last_n: int = 20
    """episodes at the end of each run whose mean true return is its final return"""


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    table = run_diagnostics(args.results_dir, fraction=args.fraction, last_n=args.last_n)
    if table.empty:
        print(f"no finished runs under {args.results_dir}", file=sys.stderr)
        return 1
    out = Path(args.out or Path(args.results_dir) / "diagnostics.csv")
    if out.exists():
        table = keep_earlier(table, pd.read_csv(out))
    table.to_csv(out, index=False, float_format="%.6g")
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
        print(table.drop(columns=["agent"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
