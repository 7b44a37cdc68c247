"""Run seeds x tasks x agents x settings of the ``algos/`` scripts, locally or on a Ray cluster.

Examples (from the repository root)::

    python -m experiments.runner --preset fig6 --seeds 1 2 3 --dry-run      # list the runs and commands
    python -m experiments.runner --preset fig6 --seeds 1 2 3 --results-dir results/paper
    python -m experiments.runner --agents ppo ppo_gasil --tasks Walker2d-v5 --settings plain noise0.1 \\
        --seeds 1 2 --total-timesteps 200000 --results-dir results/try --jobs 2
    python -m experiments.runner --preset fig6 --ray-address auto          # on a running Ray cluster

Each run is one subprocess (OMP/MKL threads 1, ``--torch-threads 1``), at most ``--jobs`` at once,
started in the results directory with its output in ``logs/<run>.log``. A run whose CSV exists is
skipped; one with a checkpoint (``--checkpoint-every``) continues from it with ``--resume``; so the same
command can be run again after an interruption, or in chunks (``--seeds 1`` today, ``--seeds 2 3``
tomorrow). A failing run doesn't stop the others; failures are listed at the end and the exit status
is 1. Each run's open log is its lock, so a second runner started on the same plan (to add a worker to a
campaign without stopping it) leaves the runs the first one holds to it: they are reported as running
elsewhere, not as failed, and it takes the next ones. See :mod:`experiments.results` for the layout of
the results directory.
"""

from __future__ import annotations

import csv
import ctypes
import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as `python experiments/runner.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tyro  # noqa: E402
from tqdm import tqdm  # noqa: E402

from experiments.grid import (  # noqa: E402
    AGENTS,
    PRESETS,
    REPO_ROOT,
    TASKS,
    AgentName,
    Run,
    expand_grid,
    parse_setting,
    run_state,
)
from experiments.results import MANIFEST, last_step  # noqa: E402

__all__ = ["Args", "RunResult", "execute", "run_all", "init_ray", "write_manifest", "main", "THREAD_ENV"]

#: Environment of every run: one thread per BLAS/OpenMP pool, so `jobs` runs share the cores fairly.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "PYTHONUNBUFFERED": "1"}


@dataclass
class Args:
    """Run a campaign of GASIL experiments: seeds x tasks x agents x settings of the algos/ scripts."""

    preset: Literal["fig1", "fig4", "fig5", "fig6", "fig7", "paper"] | None = None
    """the runs of one of the paper's figures (paper = fig4-7); --agents and --settings select among its
    own, --tasks replaces its tasks"""
    agents: tuple[AgentName, ...] | None = None
    """agents (default: the preset's, or all four)"""
    tasks: tuple[str, ...] | None = None
    """Gymnasium ids (default: the preset's, or Hopper-v5 Walker2d-v5 HalfCheetah-v5)"""
    settings: tuple[str, ...] | None = None
    """settings such as plain, delayed20, noise0.1, buffer500, dupdates5, delayed20+alpha0.2 (default:
    the preset's, or plain); see experiments/grid.py"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds (the paper averages 10)"""
    total_timesteps: int = 1_000_000
    """env steps per run"""
    results_dir: str | None = None
    """where results go (default: results/<budget>-steps, e.g. results/1M-steps, shared by all presets
    so that runs common to two figures run once); a run whose CSV is there is skipped"""
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """runs at once on this machine (default: one per core); with --ray-address, the CPUs of a local
    Ray instance started here (ray-address local)"""
    checkpoint_every: int = 100_000
    """each run writes a checkpoint every this many steps; an interrupted run resumes from it (0: off)"""
    keep_checkpoints: bool = False
    """keep a run's checkpoint after it finishes (default: delete it)"""
    dry_run: bool = False
    """print the runs, their state (done/resume/new) and commands, and run nothing"""
    ray_address: str | None = None
    """send the runs to Ray: 'local' starts a Ray instance on this machine with --jobs CPUs; 'auto' or
    ray://host:port joins a running cluster (its nodes need the code and the venv at the same paths, or
    --ray-ship-code; results come back to --results-dir)"""
    ray_ship_code: bool = False
    """ship this repository to the Ray workers (runtime_env working_dir) instead of relying on a shared
    filesystem; the workers' python must have the requirements installed"""
    script_args: str = ""
    """extra flags for every script, one string: --script-args '--num-envs 1 --stack.d-every 4096'"""
    algos_dir: str = str(REPO_ROOT / "algos")
    """directory of ppo.py, ppo_sil.py, ppo_bc.py"""
    poll_seconds: float = 2.0
    """how often the progress bar reads the runs' CSVs"""


@dataclass
class RunResult:
    """What became of one run."""

    name: str
    returncode: int
    seconds: float
    resumed: bool
    error: str = ""
    csv_text: str | None = None
    """the finished CSV (from Ray workers, so results land here without a shared filesystem)"""
    elsewhere: bool = False
    """another runner holds the run (its log is locked): left to it, neither done here nor failed"""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.error and not self.elsewhere

    @property
    def failed(self) -> bool:
        return not self.ok and not self.elsewhere


# --- executing one run --------------------------------------------------------------------------------

_live: dict[int, subprocess.Popen] = {}
_live_lock = threading.Lock()


@functools.cache
def code_version(code_dir: str) -> str:
    """The commit of the code that runs (short hash, ``+dirty`` if tracked files differ from it), or
    ``unknown`` outside a git checkout: written into each run's log, so results name their code."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", code_dir, *argv], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def execute(run: Run, *, resume: bool, code_dir: str | os.PathLike = REPO_ROOT,
            python: str = sys.executable, keep_checkpoint: bool = False) -> RunResult:
    """Run one script to its end (blocking) and say how it went; never raises for a failing run.

    The script starts in ``run.workdir`` with OMP/MKL threads 1 and the code directory on PYTHONPATH,
    its stdout and stderr appended to ``run.log_path``. Success means exit status 0 and the CSV in place;
    then the checkpoint is deleted unless `keep_checkpoint`.
    """
    start = time.time()
    script = Path(code_dir) / run.script
    for path in (run.log_path, run.csv_path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    if not script.exists():
        return RunResult(run.name, 2, 0.0, resume, f"{script} does not exist")
    cmd = [python, str(script), *run.argv(resume=resume)[1:]]
    env = {**os.environ, **THREAD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), os.environ.get("PYTHONPATH")) if p)
    with open(run.log_path, "a") as log:
        # The open log is the run's lock: a second runner on the same results directory leaves it alone.
        if not _lock(log):
            return RunResult(run.name, 0, 0.0, resume, elsewhere=True)
        if os.path.exists(run.csv_path):  # finished by another runner since this one looked
            return RunResult(run.name, 0, 0.0, resume)
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'}: "
                  f"{display_command(cmd[1:], Path(code_dir))}  # code {code_version(str(code_dir))}\n")
        log.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=run.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        except OSError as e:
            return RunResult(run.name, 2, time.time() - start, resume, f"cannot start: {e}")
        with _live_lock:
            _live[proc.pid] = proc
        try:
            returncode = proc.wait()
        finally:
            with _live_lock:
                _live.pop(proc.pid, None)
        log.write(f"# exit status {returncode} after {time.time() - start:.0f} s\n")
    error = ""
    if returncode != 0:
        error = f"exit status {returncode}"
        if resume:
            error += f" while resuming (if the checkpoint is at fault, delete {run.checkpoint_path})"
    elif not os.path.exists(run.csv_path):
        if run.checkpoint_path and os.path.exists(run.checkpoint_path):
            error = "stopped before the end (run again to resume from its checkpoint)"
        else:
            error = f"exited 0 but did not write {run.csv_path}"
    elif run.checkpoint_path and not keep_checkpoint and os.path.exists(run.checkpoint_path):
        os.remove(run.checkpoint_path)
    return RunResult(run.name, returncode, time.time() - start, resume, error)


def _lock(f) -> bool:
    """Take an exclusive lock on an open file without waiting (True if no locks on this platform)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the thread that started it ends (a killed
    runner or Ray worker leaves no orphan training runs behind). Only a foreign call: safe after fork."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _terminate_live() -> None:
    """Stop the scripts this process started (each by its own pid)."""
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- running many ---------------------------------------------------------------------------------------

class _Progress:
    """A tqdm bar over env steps of all pending runs, read from their (partial) CSVs."""

    def __init__(self, runs: Sequence[Run], enabled: bool = True):
        self.runs = list(runs)
        self.finished: set[str] = set()
        self.failed: list[str] = []
        self.elsewhere: list[str] = []  # held by another runner
        self.steps: dict[str, int] = {}  # the most steps seen per run (a resumed run rewrites its CSV)
        total = sum(r.total_timesteps for r in self.runs)
        self.enabled = enabled
        # In a log file (no terminal), a line a minute rather than a redraw every poll.
        self.bar = tqdm(total=total, unit="step", unit_scale=True, dynamic_ncols=True, disable=not enabled,
                        desc=f"{len(self.runs)} runs", mininterval=1.0 if sys.stderr.isatty() else 60.0)
        self.refresh()

    def refresh(self, running: int | None = None) -> None:
        for r in self.runs:
            if r.name in self.finished and r.name not in self.elsewhere:
                self.steps[r.name] = r.total_timesteps
            else:
                now = min(last_step(r.partial_path), r.total_timesteps)
                self.steps[r.name] = max(now, self.steps.get(r.name, 0))
        postfix = {"done": len(self.finished) - len(self.failed) - len(self.elsewhere),
                   "failed": len(self.failed)}
        if self.elsewhere:
            postfix["elsewhere"] = len(self.elsewhere)
        if running is not None:
            postfix["running"] = running
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(max(0, sum(self.steps.values()) - self.bar.n))

    def finish(self, run: Run, result: RunResult) -> None:
        self.finished.add(run.name)
        if result.failed:
            self.failed.append(run.name)
        if result.elsewhere:
            self.elsewhere.append(run.name)  # its steps go on being read from its partial CSV
        status = "ok" if result.ok else "running elsewhere (its log is locked)" if result.elsewhere \
            else f"FAILED ({result.error})"
        if self.enabled:
            self.bar.write(f"{run.name}: {status} in {result.seconds / 60:.1f} min")

    def close(self) -> None:
        self.bar.close()


def _run_local(pending: Sequence[tuple[Run, bool]], jobs: int, keep_checkpoints: bool, poll: float,
               progress: _Progress) -> list[RunResult]:
    results = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(execute, run, resume=resume, keep_checkpoint=keep_checkpoints): run
                   for run, resume in pending}
        todo = set(futures)
        try:
            while todo:
                done, todo = wait(todo, timeout=poll, return_when=FIRST_COMPLETED)
                for fut in done:
                    result = fut.result()
                    results.append(result)
                    progress.finish(futures[fut], result)
                progress.refresh(running=min(len(todo), jobs))
        except BaseException:
            for fut in todo:
                fut.cancel()
            _terminate_live()
            raise
    return results


def init_ray(address: str | None, num_cpus: int | None = None, ship_code: bool = False):
    """Connect to Ray (or start it here for ``local``/None) so that workers can import this package.

    Does nothing if Ray is already initialized in this process (tests start their own).
    """
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU-only runs: silence Ray's tip
    env_vars = dict(THREAD_ENV)
    runtime_env: dict = {"env_vars": env_vars}
    if ship_code:
        runtime_env["working_dir"] = str(REPO_ROOT)
        runtime_env["excludes"] = [".git", ".venv*", "results", "runs", "checkpoints", "**/__pycache__"]
    else:
        paths = (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
        env_vars["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    if address in (None, "", "local"):
        # "local": a new instance even if another one runs on this machine (ray.init() would join it).
        ray.init(address="local", num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=False,
                 log_to_driver=False)
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    return ray


def _ray_task(run: Run, resume: bool, keep_checkpoint: bool) -> RunResult:
    """Runs on a Ray worker: execute with the worker's copy of the code, return the CSV's text."""
    import experiments.grid

    code_dir = experiments.grid.REPO_ROOT  # where this module was imported from on the worker
    result = execute(run, resume=resume, code_dir=code_dir, keep_checkpoint=keep_checkpoint)
    if result.ok:
        with open(run.csv_path) as f:
            result.csv_text = f.read()
    return result


def _run_ray(pending: Sequence[tuple[Run, bool]], address: str | None, jobs: int, ship_code: bool,
             keep_checkpoints: bool, poll: float, progress: _Progress) -> list[RunResult]:
    ray = init_ray(address, num_cpus=jobs, ship_code=ship_code)
    # By reference to the importable module, also when this file runs as __main__ (not by value).
    from experiments.runner import _ray_task as ray_task

    task = ray.remote(num_cpus=1, max_retries=0)(ray_task)
    refs = {task.remote(run, resume, keep_checkpoints): run for run, resume in pending}
    todo = list(refs)
    results = []
    try:
        while todo:
            done, todo = ray.wait(todo, num_returns=1, timeout=poll)
            for ref in done:
                run = refs[ref]
                try:
                    result = ray.get(ref)
                except Exception as e:  # the worker died, or the task could not start
                    result = RunResult(run.name, 1, 0.0, False, f"Ray task failed: {type(e).__name__}: {e}")
                if result.ok and result.csv_text is not None and not os.path.exists(run.csv_path):
                    os.makedirs(os.path.dirname(run.csv_path), exist_ok=True)
                    with open(run.csv_path, "w") as f:  # no shared filesystem: bring the CSV here
                        f.write(result.csv_text)
                results.append(result)
                progress.finish(run, result)
            progress.refresh(running=len(todo))
    except BaseException:
        for ref in todo:
            ray.cancel(ref, force=True)
        raise
    return results


def run_all(runs: Sequence[Run], *, jobs: int = os.cpu_count() or 1, ray_address: str | None = None,
            use_ray: bool = False, ray_ship_code: bool = False, keep_checkpoints: bool = False,
            poll_seconds: float = 2.0, progress: bool = True,
            on_plan: Callable[[list[tuple[Run, str]]], None] | None = None) -> list[RunResult]:
    """Execute the runs that are not done yet (resuming those with a checkpoint); return their results.

    Locally: a pool of `jobs` subprocesses. With `use_ray` (or a `ray_address`): one Ray task per run.
    """
    states = [(run, run_state(run)) for run in runs]
    if on_plan is not None:
        on_plan(states)
    pending = [(run, state == "resume") for run, state in states if state != "done"]
    if not pending:
        return []
    bar = _Progress([run for run, _ in pending], enabled=progress)
    try:
        if use_ray or ray_address is not None:
            return _run_ray(pending, ray_address, jobs, ray_ship_code, keep_checkpoints, poll_seconds, bar)
        return _run_local(pending, jobs, keep_checkpoints, poll_seconds, bar)
    finally:
        bar.close()


# --- manifest ------------------------------------------------------------------------------------------

_MANIFEST_FIELDS = ["run", "agent", "task", "setting", "seed", "total_timesteps", "csv", "command"]


@functools.lru_cache(maxsize=256)
def _checkout_of(directory: Path) -> Path | None:
    """The git checkout (repository or worktree: a ``.git`` directory or file) that holds ``directory``."""
    for parent in (directory, *directory.parents):
        if (parent / ".git").exists():
            return parent
    return None


def repo_relative(word: str, root: Path = REPO_ROOT) -> str:
    """A path inside ``root`` as a path relative to it, and one inside another git checkout relative to
    that checkout (a campaign run from a frozen worktree writes into the main checkout's results): results
    files name no machine's paths."""
    path = Path(word)
    if not path.is_absolute():
        return word
    if path.is_relative_to(root):
        return str(path.relative_to(root))
    checkout = _checkout_of(path.parent)
    return str(path.relative_to(checkout)) if checkout is not None else word


def display_command(argv: Sequence[str], root: Path = REPO_ROOT) -> str:
    """The command as it is recorded in logs and manifests: ``python``, then repository-relative paths."""
    return shlex.join(["python", *(repo_relative(str(w), Path(root)) for w in argv)])


def _command(run: Run) -> str:
    return display_command(run.argv())


# Flags that don't change what a run computes (paths, threads, logging): ignored when comparing commands.
_RUN_CONTROL_FLAGS = {"--run-name", "--csv-path", "--checkpoint-every", "--checkpoint-path",
                      "--torch-threads", "--track", "--progress-bar"}


def _comparable(command: str) -> list[str]:
    words, out = shlex.split(command), []
    skip = False
    for word in words[2:]:  # drop "python script"
        if skip:
            skip = False
        elif word in _RUN_CONTROL_FLAGS:
            skip = True
        else:
            out.append(word)
    return [Path(words[1]).name, *out] if len(words) > 1 else out


def write_manifest(results_dir: str | os.PathLike, runs: Sequence[Run]) -> list[str]:
    """Add the runs to ``<results_dir>/manifest.csv`` (one row per run name, newest command wins).

    Returns warnings for runs that are done but were recorded with another command (e.g. another
    budget): their results are kept and the run is skipped.
    """
    path = Path(results_dir) / MANIFEST
    rows: dict[str, dict] = {}
    if path.exists():
        with open(path, newline="") as f:
            rows = {r["run"]: r for r in csv.DictReader(f)}
    warnings = []
    for run in runs:
        old = rows.get(run.name)
        if old is not None and _comparable(old["command"]) != _comparable(_command(run)) \
                and run_state(run) == "done":
            warnings.append(f"{run.name}: its results were made by another command, kept as they are:\n"
                            f"  was: {old['command']}\n  now: {_command(run)}")
            continue
        rows[run.name] = {
            "run": run.name, "agent": run.agent, "task": run.task, "setting": run.setting, "seed": run.seed,
            "total_timesteps": run.total_timesteps,
            "csv": os.path.relpath(run.csv_path, results_dir), "command": _command(run),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(sorted(rows.values(), key=lambda r: r["run"]))
    os.replace(tmp, path)
    return warnings


# --- CLI ------------------------------------------------------------------------------------------------

def _steps_label(steps: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if steps >= size and steps % size == 0:
            return f"{steps // size}{unit}"
    return str(steps)


def default_results_dir(total_timesteps: int) -> str:
    """One directory per budget, shared by all figures: results/1M-steps for 1,000,000 steps."""
    return f"results/{_steps_label(total_timesteps)}-steps"


def build_runs(args: Args) -> tuple[list[Run], str]:
    """The CLI's runs and results directory.

    Without a preset: --agents x --tasks x --settings (defaults: all agents, TASKS, plain). A preset is
    a union of blocks (one per figure); --agents and --settings select among each block's (so
    ``--preset paper --agents ppo`` runs no PPO under fig7's GASIL settings), --tasks replaces the
    blocks' tasks (``--preset fig4 --tasks Ant-v5``).
    """
    results_dir = args.results_dir or default_results_dir(args.total_timesteps)
    if args.preset is None:
        blocks = [(args.agents or tuple(AGENTS), args.tasks or TASKS, args.settings or ("plain",))]
    else:
        wanted = None if args.settings is None else {parse_setting(s)[0] for s in args.settings}
        blocks = [
            ([a for a in b.agents if args.agents is None or a in args.agents],
             args.tasks if args.tasks is not None else b.tasks,
             [s for s in b.settings if wanted is None or parse_setting(s)[0] in wanted])
            for b in PRESETS[args.preset]
        ]
    runs: dict[str, Run] = {}
    for agents, tasks, settings in blocks:
        if not (agents and tasks and settings):
            continue
        for run in expand_grid(
            agents=agents, tasks=tasks, settings=settings,
            seeds=args.seeds, total_timesteps=args.total_timesteps, results_dir=results_dir,
            algos_dir=args.algos_dir, checkpoint_every=args.checkpoint_every,
            script_args=shlex.split(args.script_args),
        ):
            runs.setdefault(run.name, run)
    # Seed outermost across blocks too, so a campaign cut short has whole seeds.
    return sorted(runs.values(), key=lambda r: r.seed), results_dir


def _print_plan(states: list[tuple[Run, str]], show_commands: bool) -> None:
    counts = {s: sum(1 for _, st in states if st == s) for s in ("done", "resume", "new")}
    print(f"{len(states)} runs: {counts['done']} done (skipped), {counts['resume']} to resume, "
          f"{counts['new']} new")
    if show_commands:
        for run, state in states:
            print(f"[{state:6}] {run.name}")
            if state != "done":
                print("         " + shlex.join(["python", *run.argv(resume=state == "resume")]))


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    runs, results_dir = build_runs(args)
    if not runs:
        print("no runs")
        return 0
    print(f"results directory: {results_dir}")
    if args.dry_run:
        _print_plan([(r, run_state(r)) for r in runs], show_commands=True)
        return 0
    missing = sorted({r.script for r in runs if not (REPO_ROOT / r.script).exists()})
    if missing:
        print(f"warning: {', '.join(missing)} missing: those runs will fail", file=sys.stderr)
    for warning in write_manifest(results_dir, runs):
        print("warning: " + warning, file=sys.stderr)
    start = time.time()
    try:
        results = run_all(
            runs, jobs=args.jobs, ray_address=args.ray_address, ray_ship_code=args.ray_ship_code,
            keep_checkpoints=args.keep_checkpoints, poll_seconds=args.poll_seconds,
            on_plan=lambda states: _print_plan(states, show_commands=False),
        )
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue (finished runs are skipped, "
              "the others resume from their last checkpoint)", file=sys.stderr)
        return 130
    failed = [r for r in results if r.failed]
    elsewhere = sum(r.elsewhere for r in results)
    print(f"{len(results) - len(failed) - elsewhere} runs finished, {len(failed)} failed, "
          + (f"{elsewhere} left to the runner that holds them, " if elsewhere else "")
          + f"in {(time.time() - start) / 60:.1f} min")
    by_name = {r.name: r for r in runs}
    for result in failed:
        run = by_name[result.name]
        print(f"FAILED {result.name}: {result.error}; log: {run.log_path}", file=sys.stderr)
        try:
            with open(run.log_path) as f:
                tail = f.readlines()[-5:]
            print("".join("    " + line for line in tail), end="", file=sys.stderr)
        except OSError:
            pass
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
