"""Agents, settings and presets, and the pure expansion of a grid into runs of the ``algos/`` scripts.

Nothing here starts a process: :func:`expand_grid` turns seeds x tasks x agents x settings into
:class:`Run` objects (name, command-line arguments, file paths), and :func:`run_state` says whether a
run is done, can resume from a checkpoint, or must start afresh. :mod:`experiments.runner` executes them.

Agents (Section 5.1 of the paper)::

    ppo        PPO                algos/ppo.py
    ppo_gasil  PPO+GASIL          algos/ppo.py --stack.gasil True
    ppo_sil    PPO+SIL            algos/ppo_sil.py
    ppo_bc     PPO+BC             algos/ppo_bc.py   (sets --stack.top-k True itself)

Settings are names made of components joined by ``+`` (``delayed20+noise0.1``); each component maps
to flags of the scripts::

    plain          the unmodified task (no flags)
    delayed<N>     --stack.delay N               (``delayed`` = delayed20, Section 5.4)
    noise<S>       --stack.obs-noise-std S       (Figure 5: 0.05, 0.1, 0.5; noise0 = plain)
    buffer<N>      --stack.buffer-steps N        (Figure 7a: 500, 1000, 2000, 5000)
    dupdates<N>    --stack.d-updates N           (Figure 7b: 1, 5, 10, 20)
    dlr<X>         --stack.d-lr X
    alpha<X>       --stack.alpha X
    lr<X>          --learning-rate X
    buffergamma<X> --stack.gamma X               (the buffer's ranking discount, not PPO's)
    envreward<M>   --stack.env-reward-scale M    (raw | normalized)
    dreward<F>     --stack.d-reward-form F       (neg_log_d | logit)

Names are canonicalized (``delayed`` -> ``delayed20``, ``noise0.10`` -> ``noise0.1``, components in
a fixed order), so one configuration always maps to one results directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from experiments.results import csv_path_for, run_name

__all__ = [
    "AGENTS", "AGENT_LABELS", "AgentName", "PRESETS", "Preset", "Run", "TASKS", "REPO_ROOT",
    "DEFAULT_GASIL", "expand_grid", "parse_setting", "run_state",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
AgentName = Literal["ppo", "ppo_gasil", "ppo_sil", "ppo_bc"]


@dataclass(frozen=True)
class AgentSpec:
    """How to run one agent: which script, with which flags on top of the run's own."""

    label: str
    script: str
    flags: tuple[str, ...] = ()


AGENTS: dict[str, AgentSpec] = {
    "ppo": AgentSpec("PPO", "ppo.py"),
    "ppo_gasil": AgentSpec("PPO+GASIL", "ppo.py", ("--stack.gasil", "True")),
    "ppo_sil": AgentSpec("PPO+SIL", "ppo_sil.py"),
    "ppo_bc": AgentSpec("PPO+BC", "ppo_bc.py"),
}
AGENT_LABELS = {name: spec.label for name, spec in AGENTS.items()}

#: The paper's delayed-reward tasks (Figure 6); also the default tasks of Figure 4 here.
TASKS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")

#: GASILConfig defaults that Figure 7 varies: ``buffer1000`` and ``dupdates20`` equal ``plain``.
DEFAULT_GASIL = {"buffer": 1000, "dupdates": 20}

# Per task and agent, flags the paper used (Appendix A: on Humanoid, PPO+GASIL runs as PPO for the first
# 2M steps and alpha rises to 0.02 until 3M). A setting's own flags come later and win.
TASK_AGENT_FLAGS: dict[tuple[str, str], tuple[str, ...]] = {
    (f"Humanoid-{v}", "ppo_gasil"): ("--stack.alpha", "0.02", "--stack.alpha-start", "2000000",
                                     "--stack.alpha-end", "3000000")
    for v in ("v4", "v5")
}


# --- settings ---------------------------------------------------------------------------------------------

# component kind -> (regex for its value, flag, value type); the order here is the canonical order.
_COMPONENTS: dict[str, tuple[str, str, type]] = {
    "delayed": (r"\d+", "--stack.delay", int),
    "noise": (r"[0-9.]+(?:e-?\d+)?", "--stack.obs-noise-std", float),
    "lr": (r"[0-9.]+(?:e-?\d+)?", "--learning-rate", float),
    "buffer": (r"\d+", "--stack.buffer-steps", int),
    "dupdates": (r"\d+", "--stack.d-updates", int),
    "dlr": (r"[0-9.]+(?:e-?\d+)?", "--stack.d-lr", float),
    "alpha": (r"[0-9.]+(?:e-?\d+)?", "--stack.alpha", float),
    # the discount of the return that ranks episodes in the good-trajectory buffer (not PPO's gamma)
    "buffergamma": (r"[0-9.]+(?:e-?\d+)?", "--stack.gamma", float),
    # what alpha weighs -log D against: the raw env reward, or the env reward scaled to unit return std
    "envreward": (r"raw|normalized", "--stack.env-reward-scale", str),
    # D's term: -log D (the paper's, >= 0: also a bonus for staying alive) or -logit D (0 at chance)
    "dreward": (r"neg_log_d|logit", "--stack.d-reward-form", str),
    # what the scripts' PPO does at a time limit: end the return there, or bootstrap V past it
    "truncation": (r"end|bootstrap", "--truncation", str),
}


def _format(value: float | int | str) -> str:
    return str(value) if isinstance(value, (int, str)) else f"{value:g}"


def parse_setting(name: str) -> tuple[str, tuple[str, ...]]:
    """A setting name -> (canonical name, flags for the scripts).

    >>> parse_setting("delayed")
    ('delayed20', ('--stack.delay', '20'))
    >>> parse_setting("noise0.10+delayed20")
    ('delayed20+noise0.1', ('--stack.delay', '20', '--stack.obs-noise-std', '0.1'))
    >>> parse_setting("noise0")
    ('plain', ())
    >>> parse_setting("delayed20+buffergamma1")
    ('delayed20+buffergamma1', ('--stack.delay', '20', '--stack.gamma', '1'))
    >>> parse_setting("envrewardnormalized+delayed20")[0]
    'delayed20+envrewardnormalized'
    """
    values: dict[str, float | int] = {}
    for part in name.strip().split("+"):
        if part in ("plain", ""):
            continue
        if part == "delayed":
            part = "delayed20"
        for kind, (pattern, _, kind_type) in _COMPONENTS.items():  # noqa: B007 (used after the loop)
            match = re.fullmatch(rf"{kind}({pattern})", part)
            if match:
                break
        else:
            kinds = ", ".join(f"{k}<value>" for k in _COMPONENTS)
            raise ValueError(f"unknown setting component {part!r} in {name!r} "
                             f"(known: plain, delayed, {kinds})")
        try:
            value = kind_type(match.group(1))
        except ValueError:
            raise ValueError(f"bad value in setting component {part!r}") from None
        if kind in values and values[kind] != value:
            raise ValueError(f"setting {name!r} gives {kind} twice")
        values[kind] = value
    # Components that equal the unmodified task add nothing.
    if values.get("delayed") == 1:
        del values["delayed"]
    if values.get("noise") == 0:
        del values["noise"]
    if values.get("envreward") == "raw":
        del values["envreward"]
    if values.get("truncation") == "end":
        del values["truncation"]
    parts, flags = [], []
    for kind, (_, flag, _) in _COMPONENTS.items():
        if kind in values:
            parts.append(f"{kind}{_format(values[kind])}")
            flags += [flag, _format(values[kind])]
    return ("+".join(parts) or "plain"), tuple(flags)


# --- presets ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    """One block of a campaign: agents x tasks x settings (seeds and budget come from the CLI)."""

    agents: tuple[str, ...]
    tasks: tuple[str, ...]
    settings: tuple[str, ...]
    doc: str = ""


_ALL_AGENTS = tuple(AGENTS)
PRESETS: dict[str, tuple[Preset, ...]] = {
    "fig1": (Preset(("ppo", "ppo_gasil"), ("gasil_wrappers:PointMass-v0",), ("plain",),
                    "2D point mass, PPO vs PPO+GASIL (paper: 2M steps)"),),
    "fig4": (Preset(_ALL_AGENTS, TASKS, ("plain",), "plain MuJoCo tasks, four agents"),),
    "fig5": (Preset(("ppo", "ppo_gasil"), ("Walker2d-v5",), ("plain", "noise0.05", "noise0.1", "noise0.5"),
                    "Walker2d with observation noise sigma 0, 0.05, 0.1, 0.5"),),
    "fig6": (Preset(_ALL_AGENTS, TASKS, ("delayed20",), "delayed (20 steps) MuJoCo tasks, four agents"),),
    # buffer1000 and dupdates20 are the defaults, i.e. `plain`: run once, drawn in both panels.
    "fig7": (Preset(("ppo_gasil",), ("Walker2d-v5",),
                    ("plain", "buffer500", "buffer2000", "buffer5000",
                     "dupdates1", "dupdates5", "dupdates10"),
                    "Walker2d PPO+GASIL: buffer 500/1000/2000/5000 steps, D updates 1/5/10/20"),),
}
PRESETS["paper"] = PRESETS["fig4"] + PRESETS["fig5"] + PRESETS["fig6"] + PRESETS["fig7"]


# --- runs -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One run of one script: what to execute and where its files go (all paths absolute)."""

    name: str
    agent: str
    task: str
    setting: str
    seed: int
    total_timesteps: int
    script: str
    """the script, relative to the code directory (the repository root) unless absolute"""
    args: tuple[str, ...]
    """the script's flags, without --resume"""
    csv_path: str
    log_path: str
    checkpoint_path: str | None
    workdir: str
    """the script's working directory (its runs/ tensorboard logs land there)"""

    def argv(self, *, resume: bool = False) -> list[str]:
        """Script and flags; with `resume`, continue from the run's checkpoint."""
        if resume and self.checkpoint_path is None:
            raise ValueError(f"{self.name}: cannot resume a run without checkpoints")
        return [self.script, *self.args, *(["--resume", self.checkpoint_path] if resume else [])]

    @property
    def partial_path(self) -> str:
        return self.csv_path + ".partial"


def run_state(run: Run) -> Literal["done", "resume", "new"]:
    """``done`` if the run's CSV exists, ``resume`` if it has a checkpoint to continue from, else ``new``."""
    if os.path.exists(run.csv_path):
        return "done"
    if run.checkpoint_path is not None and os.path.exists(run.checkpoint_path):
        return "resume"
    return "new"


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def expand_grid(
    *,
    agents: Sequence[str],
    tasks: Sequence[str],
    settings: Sequence[str],
    seeds: Sequence[int],
    total_timesteps: int,
    results_dir: str | os.PathLike,
    algos_dir: str | os.PathLike = REPO_ROOT / "algos",
    checkpoint_every: int = 100_000,
    script_args: Sequence[str] = (),
) -> list[Run]:
    """Seeds x tasks x agents x settings -> runs, in that nesting order (seed outermost).

    Seed outermost means a campaign cut short has whole seeds of every configuration rather than all
    seeds of a few. Duplicates (also after canonicalizing setting names) are dropped. `script_args`
    go to every script after the run's own flags (so they win over them); don't pass the flags the
    runner sets itself (--env-id, --seed, --csv-path, ...).
    """
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agents {unknown} (known: {', '.join(AGENTS)})")
    if total_timesteps < 1 or checkpoint_every < 0:
        raise ValueError("need total_timesteps >= 1 and checkpoint_every >= 0")
    results_dir = Path(results_dir).resolve()
    algos_dir = Path(algos_dir).resolve()
    parsed = {}
    for s in settings:
        canonical, flags = parse_setting(s)
        parsed.setdefault(canonical, flags)
    runs = []
    for seed in _dedupe(str(s) for s in seeds):
        seed = int(seed)
        for task in _dedupe(tasks):
            for agent in _dedupe(agents):
                for setting, setting_flags in parsed.items():
                    runs.append(_make_run(agent, task, setting, setting_flags, seed, total_timesteps,
                                          results_dir, algos_dir, checkpoint_every, tuple(script_args)))
    return runs


def _make_run(agent: str, task: str, setting: str, setting_flags: tuple[str, ...], seed: int,
              total_timesteps: int, results_dir: Path, algos_dir: Path, checkpoint_every: int,
              script_args: tuple[str, ...]) -> Run:
    spec = AGENTS[agent]
    name = run_name(task, setting, agent, seed)
    csv_path = csv_path_for(results_dir, task, setting, agent, seed)
    checkpoint_path = results_dir / "checkpoints" / f"{name}.pt" if checkpoint_every else None
    script = algos_dir / spec.script
    # Relative to the repository when inside it, so a Ray cluster can run its own copy of the code.
    script_str = str(script.relative_to(REPO_ROOT)) if script.is_relative_to(REPO_ROOT) else str(script)
    args = [
        "--env-id", task, "--seed", str(seed), "--total-timesteps", str(total_timesteps),
        "--run-name", name, "--csv-path", str(csv_path),
        "--torch-threads", "1", "--track", "False", "--progress-bar", "False",
    ]
    if checkpoint_path is not None:
        args += ["--checkpoint-every", str(checkpoint_every), "--checkpoint-path", str(checkpoint_path)]
    args += [*spec.flags, *TASK_AGENT_FLAGS.get((task, agent), ()), *setting_flags, *script_args]
    return Run(
        name=name, agent=agent, task=task, setting=setting, seed=seed, total_timesteps=total_timesteps,
        script=script_str, args=tuple(args), csv_path=str(csv_path),
        log_path=str(results_dir / "logs" / f"{name}.log"),
        checkpoint_path=None if checkpoint_path is None else str(checkpoint_path),
        workdir=str(results_dir),
    )
