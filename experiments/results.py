"""Where a run's files live under a results directory, and the loader of all of them as one DataFrame.

The layout encodes each run's metadata in its path, so a results directory can be copied, merged with
another (``cp -r``) or partly deleted without a database to keep in step::

    <results_dir>/
      <task>/<setting>/<agent>/seed<seed>.csv    one row per episode of a run: run,step,true_return,length
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
    "last_n_mean", "MANIFEST", "DIAGNOSTIC_TAGS", "read_scalars", "run_diagnostics", "run_windows",
]

#: Columns of the tidy frame returned by :func:`load_results`.
COLUMNS = ["agent", "task", "setting", "seed", "step", "true_return", "length"]
#: File name of the runner's manifest inside a results directory.
MANIFEST = "manifest.csv"
#: The tensorboard scalars :func:`run_diagnostics` summarises: is GASIL doing anything (the GASIL term's
#: share of the shaped reward, whether D tells the policy from the buffer, how good and how old the
#: buffer is), and is the policy still exploring and moving (entropy, KL, explained variance of the value
#: function).
DIAGNOSTIC_TAGS = ("gasil/term_share", "gasil/d_loss", "gasil/d_acc_policy", "gasil/d_acc_buffer",
                   "gasil/buffer_mean_return", "gasil/buffer_mean_age", "losses/entropy", "losses/approx_kl",
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
    """One run's CSV as a frame with columns step (int), true_return and length (float), in file order.

    ``length`` is the episode's length in steps; NaN where the CSV predates that column (the scripts
    wrote run,step,true_return until 2026-12).
    """
    frame = pd.read_csv(path)
    missing = {"step", "true_return"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (expected run,step,true_return,length)")
    length = frame["length"] if "length" in frame.columns else pd.Series(np.nan, index=frame.index)
    return pd.DataFrame({"step": frame["step"].astype(np.int64),
                         "true_return": frame["true_return"].astype(float),
                         "length": pd.to_numeric(length, errors="coerce").astype(float)})


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


_NUM_ENVS = re.compile(r"--num-envs[ =](\d+)")


def _manifest_rows(results_dir: Path) -> list[dict]:
    path = results_dir / MANIFEST
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _manifest_ids(rows: list[dict]) -> dict[tuple[str, str], tuple[str, str]]:
    """(quoted task, quoted setting) -> (task, setting) from the manifest, for old or odd names."""
    return {(_quote(r["task"]), _quote(r["setting"])): (r["task"], r["setting"]) for r in rows}


def _one_env_runs(rows: list[dict]) -> set[str]:
    """The manifest's runs whose command steps one env (the scripts' default ``--num-envs 1``)."""
    one = set()
    for r in rows:
        match = _NUM_ENVS.search(r.get("command") or "")
        if match is None or int(match[1]) == 1:
            one.add(r["run"])
    return one


def load_results(results_dir: str | os.PathLike, *, include_partial: bool = False) -> pd.DataFrame:
    """All runs under `results_dir` as one tidy frame: agent, task, setting, seed, step, true_return,
    length.

    Reads every ``<task>/<setting>/<agent>/seed<N>.csv``; with `include_partial`, also the
    ``.partial`` CSV of a run that has no finished one (to look at a campaign in progress). Rows keep
    each file's order. An empty frame with those columns when there is nothing.

    A CSV from before the ``length`` column gets its lengths from the steps between its rows when the
    manifest says the run stepped one env: exact, since a resumed run continues its episode
    (checkpoints hold the env's state). Otherwise they stay NaN.
    """
    root = Path(results_dir)
    manifest = _manifest_rows(root)
    ids, one_env = _manifest_ids(manifest), _one_env_runs(manifest)
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
        seed = int(match.group(1))
        if frame["length"].isna().all() and run_name(task, setting, agent_dir.name, seed) in one_env:
            frame["length"] = np.diff(frame["step"].to_numpy(), prepend=0).astype(float)
        frame.insert(0, "seed", seed)
        frame.insert(0, "setting", setting)
        frame.insert(0, "task", task)
        frame.insert(0, "agent", agent_dir.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(COLUMNS, [str, str, str, np.int64, np.int64, float, float])})
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


def _runs_with_logs(root: Path):
    """Each finished run under `root` in order: (agent, task, setting, seed), its episodes (step,
    true_return, length, in file order) and its tensorboard scalars (empty when ``runs/<run>`` is not on
    this machine)."""
    for run, episodes in load_results(root).groupby(["agent", "task", "setting", "seed"], sort=True):
        log_dir = root / "runs" / run_name(run[1], run[2], run[0], run[3])
        no_log = pd.DataFrame(columns=["tag", "step", "value"])
        yield run, episodes, (read_scalars(log_dir) if log_dir.is_dir() else no_log)


def _column(tag: str) -> str:
    return tag.rsplit("/", 1)[-1]


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _median(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.median()) if len(values) else float("nan")


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
    rows = []
    for (agent, task, setting, seed), episodes, scalars in _runs_with_logs(Path(results_dir)):
        row = {"agent": agent, "task": task, "setting": setting, "seed": seed,
               "final_return": float(episodes["true_return"].to_numpy()[-last_n:].mean())}
        for tag in tags:
            values = scalars[scalars["tag"] == tag]
            row[_column(tag)] = _mean(values["value"][values["step"] >= values["step"].max() * (1 - fraction)]
                                      if len(values) else values["value"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["agent", "task", "setting", "seed", "final_return",
                                       *map(_column, tags)])


def run_windows(results_dir: str | os.PathLike, *, window: int = 100_000,
                tags: tuple[str, ...] = DIAGNOSTIC_TAGS) -> pd.DataFrame:
    """How each finished run under `results_dir` changed: one row per run and `window` steps, (lo, hi]
    from the first step to the run's last episode, labelled ``"<lo>-<hi>k"`` (thousands of steps).

    Columns: agent, task, setting, seed, window, ``episodes`` (that ended in it), ``median_length`` and
    ``median_return`` (true) of those episodes, and per tag the mean of its values logged in it (NaN
    without the run's tensorboard log). Lengths come from the CSV (see :func:`load_results`): whether a
    Hopper stands until the time limit or falls shows here, where the final return alone cannot say.
    """
    if window <= 0:
        raise ValueError(f"window must be a positive number of steps, got {window}")
    rows = []
    for (agent, task, setting, seed), episodes, scalars in _runs_with_logs(Path(results_dir)):
        step, by_tag = episodes["step"], {tag: scalars[scalars["tag"] == tag] for tag in tags}
        for lo in range(0, int(step.max()), window):
            hi = lo + window
            inside = (step > lo) & (step <= hi)
            row = {"agent": agent, "task": task, "setting": setting, "seed": seed,
                   "window": f"{lo / 1000:g}-{hi / 1000:g}k", "episodes": int(inside.sum()),
                   "median_length": _median(episodes["length"][inside]),
                   "median_return": _median(episodes["true_return"][inside])}
            for tag, values in by_tag.items():
                row[_column(tag)] = _mean(values["value"][(values["step"] > lo) & (values["step"] <= hi)])
            rows.append(row)
    return pd.DataFrame(rows, columns=["agent", "task", "setting", "seed", "window", "episodes",
                                       "median_length", "median_return", *map(_column, tags)])
