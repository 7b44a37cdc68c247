"""Where a run's files live under a results directory, and the loader of all of them as one DataFrame.

The layout encodes each run's metadata in its path, so a results directory can be copied, merged with
another (``cp -r``) or partly deleted without a database to keep in step::

    <results_dir>/
      <task>/<setting>/<agent>/seed<seed>.csv    true returns of one run: run,step,true_return
      <task>/<setting>/<agent>/seed<seed>.csv.partial    the same while the run is going (or was cut)
      manifest.csv            one row per run the runner launched: metadata and the exact command
      logs/<run>.log          stdout and stderr of each run (appended to when a run is resumed)
      checkpoints/<run>.pt    the last checkpoint of an unfinished run (deleted once it finishes)
      runs/<run>/             the scripts' tensorboard logs (the runner starts them in <results_dir>)

``<task>`` and ``<setting>`` are URL-quoted (``Hopper-v5`` stays as it is, a namespaced id such as
``gasil_wrappers:PointMass-v0`` becomes ``gasil_wrappers%3APointMass-v0``), so the path maps back to
the exact id.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS", "run_name", "csv_path_for", "last_step", "load_results", "read_returns_csv",
    "last_n_mean", "MANIFEST", "DIAGNOSTIC_TAGS", "read_scalars", "run_diagnostics",
]

#: Columns of the tidy frame returned by :func:`load_results`.
COLUMNS = ["agent", "task", "setting", "seed", "step", "true_return"]
#: File name of the runner's manifest inside a results directory.
MANIFEST = "manifest.csv"
#: The tensorboard scalars :func:`run_diagnostics` summarises: is GASIL doing anything (the GASIL term's
#: share of the shaped reward, whether D tells the policy from the buffer, how good the buffer is), and
#: is the policy still exploring and moving (entropy, KL, explained variance of the value function).
DIAGNOSTIC_TAGS = ("gasil/term_share", "gasil/d_loss", "gasil/d_acc_policy", "gasil/d_acc_buffer",
                   "gasil/buffer_mean_return", "losses/entropy", "losses/approx_kl",
                   "losses/explained_variance")

_SEED_FILE = re.compile(r"^seed(-?\d+)\.csv$")


def _quote(part: str) -> str:
    return quote(part, safe="+=,@-_.")


def run_name(task: str, setting: str, agent: str, seed: int) -> str:
    """The run's name: its log and checkpoint file names and the `run` column of its CSV."""
    return f"{_quote(task)}__{setting}__{agent}__s{seed}"


def csv_path_for(results_dir: str | os.PathLike, task: str, setting: str, agent: str, seed: int) -> Path:
    """Where the finished CSV of one run lives (the script writes ``<this>.partial`` until it ends)."""
    return Path(results_dir) / _quote(task) / _quote(setting) / agent / f"seed{seed}.csv"


def read_returns_csv(path: str | os.PathLike) -> pd.DataFrame:
    """One run's CSV as a frame with columns step (int) and true_return (float), in file order."""
    frame = pd.read_csv(path)
    missing = {"step", "true_return"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (expected run,step,true_return)")
    return pd.DataFrame({"step": frame["step"].astype(np.int64),
                         "true_return": frame["true_return"].astype(float)})


def last_step(path: str | os.PathLike) -> int:
    """The `step` of the last row of a (possibly partial, still growing) returns CSV; 0 if none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    # The last line may be half-written: take the last one that parses.
    for line in reversed(lines):
        fields = line.split(",")
        if len(fields) >= 3:
            try:
                return int(fields[1])
            except ValueError:
                continue
    return 0


def last_n_mean(path: str | os.PathLike, n: int) -> tuple[float, int]:
    """Mean true return of the last `n` episodes of one run's CSV, and how many episodes that was."""
    returns = read_returns_csv(path)["true_return"].to_numpy()[-n:]
    return (float(np.mean(returns)) if len(returns) else float("nan")), len(returns)


def _manifest_ids(results_dir: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(quoted task, quoted setting) -> (task, setting) from the manifest, for old or odd names."""
    path = results_dir / MANIFEST
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {(_quote(r["task"]), _quote(r["setting"])): (r["task"], r["setting"]) for r in rows}


def load_results(results_dir: str | os.PathLike, *, include_partial: bool = False) -> pd.DataFrame:
    """All runs under `results_dir` as one tidy frame: agent, task, setting, seed, step, true_return.

    Reads every ``<task>/<setting>/<agent>/seed<N>.csv``; with `include_partial`, also the
    ``.partial`` CSV of a run that has no finished one (to look at a campaign in progress). Rows keep
    each file's order. An empty frame with those columns when there is nothing.
    """
    root = Path(results_dir)
    ids = _manifest_ids(root)
    frames = []
    for path in sorted(root.glob("*/*/*/seed*.csv*")):
        name = path.name
        if name.endswith(".partial"):
            if not include_partial or path.with_suffix("").exists():
                continue
            name = name[: -len(".partial")]
        match = _SEED_FILE.match(name)
        if match is None:
            continue
        agent_dir = path.parent
        task_q, setting_q = agent_dir.parent.parent.name, agent_dir.parent.name
        task, setting = ids.get((task_q, setting_q), (unquote(task_q), unquote(setting_q)))
        try:
            frame = read_returns_csv(path)
        except (ValueError, pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            raise ValueError(f"cannot read results file {path}: {e}") from e
        frame.insert(0, "seed", int(match.group(1)))
        frame.insert(0, "setting", setting)
        frame.insert(0, "task", task)
        frame.insert(0, "agent", agent_dir.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(COLUMNS, [str, str, str, np.int64, np.int64, float])})
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def read_scalars(log_dir: str | os.PathLike) -> pd.DataFrame:
    """The tensorboard scalars of one run's log directory: tag, step, value, sorted by tag and step.

    A resumed run (the scripts reopen their writer with ``purge_step`` at the checkpoint's step) keeps
    only what its last process wrote after that step: tensorboard's own purge of orphaned events.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    rows = [(tag, e.step, e.value) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    return (pd.DataFrame(rows, columns=["tag", "step", "value"])
            .sort_values(["tag", "step"], kind="stable").reset_index(drop=True))


def run_diagnostics(results_dir: str | os.PathLike, *, tags: tuple[str, ...] = DIAGNOSTIC_TAGS,
                    fraction: float = 0.25, last_n: int = 20) -> pd.DataFrame:
    """One row per finished run under `results_dir`: agent, task, setting, seed, ``final_return`` (mean
    true return of its last `last_n` episodes) and, per tag, the mean of its values over the last
    `fraction` of the run's steps (NaN when the run has no such log, e.g. a PPO run has no ``gasil/*``).

    The logs are the scripts' tensorboard files under ``<results_dir>/runs/<run>`` (git-ignored: a results
    directory copied without them gives NaN columns). The tag columns are named after the tag's last part.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    root, rows = Path(results_dir), []
    keys = ["agent", "task", "setting", "seed"]
    for agent, task, setting, seed in load_results(root)[keys].drop_duplicates().sort_values(keys).itertuples(
            index=False):
        row = {"agent": agent, "task": task, "setting": setting, "seed": seed,
               "final_return": last_n_mean(csv_path_for(root, task, setting, agent, seed), last_n)[0]}
        log_dir = root / "runs" / run_name(task, setting, agent, seed)
        no_log = pd.DataFrame(columns=["tag", "step", "value"])
        scalars = read_scalars(log_dir) if log_dir.is_dir() else no_log
        for tag in tags:
            values = scalars[scalars["tag"] == tag]
            late = values[values["step"] >= values["step"].max() * (1 - fraction)] if len(values) else values
            row[tag.rsplit("/", 1)[-1]] = float(late["value"].mean()) if len(late) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["agent", "task", "setting", "seed", "final_return",
                                       *(t.rsplit("/", 1)[-1] for t in tags)])
