"""What every PPO script of algos/ needs around its algorithm (as CleanRL's cleanrl_utils/ does for its).

- `Args`: the flags every script has (experiment, environment, PPO); a script subclasses it to add its
  own and to change `exp_name`.
- `Agent`, `make_env`, `make_vector_env`: the policy and value networks, and the per-env wrappers.
- `Run`: set-up (checkpoint, run name, seeds, vector env), logging of episodes (tensorboard, the CSV of
  true returns), the end of an iteration (SPS, GASIL diagnostics, checkpoints, --stop-after-steps) and
  the end of the run (model file, CSV renamed from .partial, summary).
- `evaluate`, `main`: the `evaluate` subcommand and the command line.

Checkpoints hold plain data only (tensors, numpy arrays, numbers, strings, containers): the envs through
`gasil_wrappers.vector_env_state_dict`, which saves each wrapper's documented state, not its attributes.
They are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import re
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch import nn
from tqdm import tqdm

import gasil_wrappers
from gasil_wrappers import INFO_KEY, GASILConfig, GASILState, find_state
from gasil_wrappers.persistence import (
    load_vector_env_state_dict,
    register_stateless,
    save_atomically,
    torch_load_plain,
    vector_env_state_dict,
)

CHECKPOINT_FORMAT = 2  # 2: envs saved by gasil_wrappers.persistence (1: pickled wrapper attributes)
MODEL_FORMAT = 1
OBS_CLIP = 10.0
REWARD_CLIP = 10.0
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Args:
    """PPO (continuous actions) with the GASIL wrapper stack set by --stack.* flags.

    `python algos/<script>.py evaluate --help` shows the evaluation entry point.
    """

    # --- experiment ------------------------------------------------------------------------------
    exp_name: str = "ppo"
    """name of this experiment (part of the run name and of the saved model's file name)"""
    run_name: str | None = None
    """name of the run directory runs/{run_name} and the `run` column of the CSV (default:
    {env_id}__{exp_name}__{seed}__{unix time}; taken from the checkpoint on --resume)"""
    seed: int = 1
    """seed of python, numpy, torch and the envs (and of the stack, unless --stack.seed is given)"""
    torch_deterministic: bool = True
    """torch.use_deterministic_algorithms(True): same seed, same curves"""
    torch_threads: int = 1
    """torch intra-op threads (more threads slow down runs that share a machine)"""
    track: bool = False
    """also log to Weights and Biases"""
    wandb_project_name: str = "gasil"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team)"""
    progress_bar: bool = True
    """show a progress bar with SPS and the mean true return of the last 20 episodes"""
    csv_path: str | None = None
    """write each episode's true return and length (columns run,step,true_return,length) to this CSV; it
    is PATH.partial until the run finishes"""
    save_model: bool = False
    """save the policy and observation statistics to runs/{run_name}/{exp_name}.model at the end"""
    checkpoint_every: int = 0
    """write a checkpoint every this many env steps, at the end of an iteration (0: never)"""
    checkpoint_path: str | None = None
    """where checkpoints go (default: runs/{run_name}/checkpoint.pt); written atomically"""
    resume: str | None = None
    """continue from this checkpoint (the other flags must match those of the checkpointed run)"""
    snapshot_every: int = 0
    """also keep a checkpoint every this many env steps as runs/{run_name}/snapshots/step_{N}.pt, for
    figures of the learning progress (0: never)"""
    stop_after_steps: int = 0
    """stop once this many env steps are done, as if interrupted: the CSV stays .partial and the last
    checkpoint is where --resume continues (0: never; for tests and time-limited jobs)"""

    # --- environment -----------------------------------------------------------------------------
    env_id: str = "Hopper-v5"
    """the Gymnasium id, or one of ours such as gasil_wrappers:GASIL-DelayedHopper-v5"""
    stack: GASILConfig = field(default_factory=GASILConfig)
    """the GASIL wrapper stack around every sub-env (delay, noise, buffer, discriminator)"""
    num_envs: int = 1
    """number of parallel sub-envs"""
    vector: Literal["sync", "async"] = "sync"
    """sub-envs in this process (sync) or one subprocess each (async; no checkpoints)"""

    # --- algorithm -------------------------------------------------------------------------------
    total_timesteps: int = 1_000_000
    """total env steps, summed over sub-envs"""
    learning_rate: float = 3e-4
    """Adam learning rate (Table 1)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over the run"""
    num_steps: int = 2048
    """steps per sub-env per rollout (Table 1 horizon)"""
    gamma: float = 0.99
    """discount factor (Table 1)"""
    gae_lambda: float = 0.95
    """GAE lambda (Table 1)"""
    truncation: Literal["end", "bootstrap"] = "end"
    """what a time-limit truncation does to the return. end: it ends there, as at a termination
    (CleanRL's PPO, and the paper's OpenAI baselines). bootstrap: gamma * V(final observation) is added
    to the truncated step's reward, so the return goes on past the limit (SB3's timeout handling; Pardo
    et al. 2018). Matters when the reward has a large mean per step, as GASIL's -log D term has"""
    num_minibatches: int = 32
    """minibatches per epoch (2048 samples / 32 = Table 1's minibatch of 64)"""
    update_epochs: int = 10
    """epochs over each rollout (Table 1)"""
    norm_adv: bool = True
    """normalize advantages per minibatch"""
    clip_coef: float = 0.2
    """surrogate clipping coefficient"""
    clip_vloss: bool = True
    """clip the value loss like the surrogate"""
    ent_coef: float = 0.0
    """entropy coefficient (Table 1)"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """gradient clipping norm"""
    target_kl: float | None = None
    """stop an update's epochs early once the approximate KL exceeds this (None: never)"""


# Flags that may differ between a checkpointed run and its resumption; all others must match.
RUN_CONTROL = {
    "run_name", "torch_threads", "track", "wandb_project_name", "wandb_entity", "progress_bar",
    "csv_path", "save_model", "checkpoint_every", "checkpoint_path", "resume", "stop_after_steps",
    "snapshot_every",
}


# --- envs ----------------------------------------------------------------------------------------------
StackBuilder = Callable[..., gym.Env]  # (env_id, stack, batch_size=...) -> env with the GASIL stack


def make_env(env_id: str, stack: GASILConfig, gamma: float, batch_size: int | None = None,
             make_stack: StackBuilder | None = None) -> Callable[[], gym.Env]:
    """Thunk for one sub-env: the GASIL stack innermost, then the per-env wrappers of PPO.

    ClipAction sits outside the stack, so the stack (and its discriminator) sees the action the env
    executes. RecordEpisodeStatistics sees the reward the agent is given (shaped, delayed); the true
    return travels in info["gasil"]. Each sub-env normalizes its own observations and rewards.
    (Gymnasium's vector-level normalizers do not support SAME_STEP autoreset.) With `batch_size`, D
    trains once per PPO batch (steps summed over sub-envs) unless --stack.d-every says otherwise.
    `make_stack` builds the stack (default: gasil_wrappers.make_env).
    """
    make_stack = make_stack or gasil_wrappers.make_env

    def thunk() -> gym.Env:
        env = make_stack(env_id, stack, batch_size=batch_size)
        env = gym.wrappers.FlattenObservation(env)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.TransformObservation(env, _clip_obs, env.observation_space)
        env = gym.wrappers.NormalizeReward(env, gamma=gamma)
        env = gym.wrappers.TransformReward(env, _clip_reward)
        env = EpisodeEndInfo(env)
        return env

    return thunk


class EpisodeEndInfo(gym.Wrapper):
    """Hand on from `info` only what the training loop reads: the returns, at the end of an episode.

    A vector env turns every `info` key of every sub-env into arrays on every step; the per-step
    diagnostics of MuJoCo and of the GASIL stack made that a third of a GASIL env step (measured:
    70 us of 213 us on Hopper-v5). The loop reads `info["gasil"]["episode_return"]` and
    `info["episode"]` at episode end, and nothing else.
    """

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            true_return = info[INFO_KEY]["episode_return"]
            info = {"episode": info["episode"], INFO_KEY: {"episode_return": true_return}}
        else:
            info = {}
        return obs, reward, terminated, truncated, info


register_stateless(EpisodeEndInfo)  # checkpoints: nothing to save


def _clip_obs(obs: np.ndarray) -> np.ndarray:
    return np.clip(obs, -OBS_CLIP, OBS_CLIP)


def _clip_reward(reward: float) -> float:
    return min(max(reward, -REWARD_CLIP), REWARD_CLIP)


def make_vector_env(args: Args, *, d_every_from_batch: bool = True,
                    make_stack: StackBuilder | None = None) -> gym.vector.VectorEnv:
    """`num_envs` sub-envs in one process (sync) or one subprocess each (async)."""
    batch_size = args.num_envs * args.num_steps if d_every_from_batch else None
    thunks = [make_env(args.env_id, args.stack, args.gamma, batch_size, make_stack)
              for _ in range(args.num_envs)]
    vector_cls = gym.vector.SyncVectorEnv if args.vector == "sync" else gym.vector.AsyncVectorEnv
    # SAME_STEP: a finished episode's next observation is already the reset one (gymnasium 0.29 style).
    envs = vector_cls(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    if not isinstance(envs.single_action_space, gym.spaces.Box):
        raise ValueError(f"{args.env_id}: this PPO needs a continuous (Box) action space")
    return envs


def wrapper_chain(env: gym.Env) -> list[gym.Env]:
    """The wrapper layers of `env` from the outside in, then the base env."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


# --- the policy ----------------------------------------------------------------------------------------
def mlp(in_dim: int, out_dim: int, out_std: float, hidden: int = 64) -> nn.Sequential:
    """FC(64)-FC(64) tanh, orthogonal init (gain sqrt 2; `out_std` for the output layer), zero biases."""
    linears = [nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out_dim)]
    for layer, gain in zip(linears, (math.sqrt(2), math.sqrt(2), out_std)):
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(linears[0], nn.Tanh(), linears[1], nn.Tanh(), linears[2])


class Agent(nn.Module):
    """Gaussian policy with a state-independent log-std, and a separate value network."""

    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        self.actor_mean = mlp(obs_dim, act_dim, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an action; returns (action, its log-probability, V(obs))."""
        mean = self.actor_mean(obs)
        noise = torch.randn_like(mean)
        action = mean + self.actor_logstd.exp() * noise
        logprob = (-0.5 * noise.square() - self.actor_logstd - LOG_SQRT_2PI).sum(-1)
        return action, logprob, self.value(obs)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Log-probability of `action`, the policy's entropy and V(obs), with gradients."""
        mean = self.actor_mean(obs)
        logstd = self.actor_logstd.expand_as(mean)
        logprob = (-0.5 * ((action - mean) / logstd.exp()).square() - logstd - LOG_SQRT_2PI).sum(-1)
        entropy = (0.5 + LOG_SQRT_2PI + logstd).sum(-1)
        return logprob, entropy, self.value(obs)


def timeout_bootstrap(agent: Agent, infos: dict, terminations, truncations,
                      gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """The sub-envs a time limit cut this step (truncated, not terminated) and gamma * V of the observation
    it cut at (``infos["final_obs"]``: the envs autoreset on the same step), for ``--truncation
    bootstrap``."""
    cut = np.flatnonzero(np.logical_and(truncations, np.logical_not(terminations)))
    if not cut.size:
        return cut, np.zeros(0, dtype=np.float32)
    final = np.stack([np.asarray(infos["final_obs"][i], dtype=np.float32) for i in cut])
    with torch.inference_mode():
        return cut, gamma * agent.value(torch.from_numpy(final)).numpy()


def act(agent: Agent, next_obs: np.ndarray, global_step: int) -> tuple[np.ndarray, ...]:
    """A sampled action per sub-env, its log-probability and V(obs), as numpy (inference only)."""
    # inference_mode around acting only: the GASIL stack trains D with autograd inside envs.step
    with torch.inference_mode():
        action, logprob, value = agent.act(torch.from_numpy(next_obs))
    action = action.numpy()
    if not np.isfinite(action).all():
        raise FloatingPointError(f"the policy produced a non-finite action at step {global_step}: {action} "
                                 "(non-finite observations or weights)")
    return action, logprob.numpy(), value.numpy()


# --- checkpoints -----------------------------------------------------------------------------------------
def flat_args(args: dict) -> dict:
    """{"stack": {"delay": 20}} -> {"stack.delay": 20}, so that a difference names the flag."""
    flat = {}
    for key, value in args.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": sub_value for sub, sub_value in value.items()})
        else:
            flat[key] = value
    return flat


def load_checkpoint(path: str, args: Args, algo: str) -> dict:
    """Read a checkpoint of script `algo` and check that it belongs to a run with the same settings."""
    try:
        ckpt = torch_load_plain(path)  # plain data only: a file holding pickled objects is refused
    except Exception as e:
        raise RuntimeError(f"cannot read checkpoint {path!r} (corrupt, not a checkpoint, or of format 1 "
                           f"written by older code): {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path!r} is not a PPO checkpoint of format {CHECKPOINT_FORMAT}")
    if ckpt.get("algo") != algo:
        raise ValueError(f"{path!r} is a checkpoint of {ckpt.get('algo')}, not of {algo}")
    mine = {k: v for k, v in flat_args(dataclasses.asdict(args)).items() if k not in RUN_CONTROL}
    theirs = {k: v for k, v in flat_args(ckpt["args"]).items() if k not in RUN_CONTROL}
    # A flag added since the checkpoint was written stands for its default (which keeps the old behaviour).
    defaults = flat_args(dataclasses.asdict(type(args)()))
    theirs.update({k: v for k, v in defaults.items() if k in mine and k not in theirs})
    diff = [f"{k}: checkpoint {theirs.get(k)!r}, this run {mine.get(k)!r}"
            for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if diff:
        raise ValueError(f"checkpoint {path!r} was written by a run with other settings: " + "; ".join(diff))
    return ckpt


def open_returns_csv(path: str, resume_step: int | None):
    """Open PATH.partial for appending rows; on resume keep only rows up to the checkpoint's step (a CSV
    written before the ``length`` column existed keeps its rows, their length left empty)."""
    partial = path + ".partial"
    os.makedirs(os.path.dirname(os.path.abspath(partial)), exist_ok=True)
    rows = []
    if resume_step is not None:
        if os.path.exists(partial):
            with open(partial, newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        else:
            warnings.warn(f"{partial} is missing: the resumed CSV starts at step {resume_step}", stacklevel=2)
    f = open(partial, "w", newline="")
    writer = csv.writer(f)
    writer.writerow(["run", "step", "true_return", "length"])
    writer.writerows([row["run"], row["step"], row["true_return"], row.get("length") or ""] for row in rows)
    return f, writer


# --- one run ---------------------------------------------------------------------------------------------
class Run:
    """The set-up, logging, checkpoints and end of one training run of a PPO script.

    Construction checks the flags, reads the checkpoint of --resume, names the run, seeds python,
    numpy and torch and builds the vector env. :meth:`start` resets the envs (or restores them, the
    agent, the optimizer and the RNGs from the checkpoint) and opens the logs; the loop then calls
    :meth:`log_episodes` after every vector step and :meth:`end_iteration` after every update, and
    :meth:`finish` at the end. Each script adds its own state to checkpoints and summaries.
    """

    def __init__(self, args: Args, algo: str, *, d_every_from_batch: bool = True,
                 make_stack: StackBuilder | None = None):
        self.batch_size = args.num_envs * args.num_steps
        if self.batch_size % args.num_minibatches:
            raise ValueError(f"num_envs*num_steps={self.batch_size} is not divisible by "
                             f"num_minibatches={args.num_minibatches}")
        self.minibatch_size = self.batch_size // args.num_minibatches
        self.num_iterations = args.total_timesteps // self.batch_size
        if self.num_iterations < 1:
            raise ValueError(f"total_timesteps={args.total_timesteps} is less than one rollout "
                             f"({self.batch_size} steps)")
        if args.vector == "async" and (args.checkpoint_every or args.snapshot_every or args.resume):
            raise ValueError("checkpoints need --vector sync (subprocess envs cannot hand over their state)")
        if args.stack.seed is None:
            args = dataclasses.replace(args, stack=args.stack.replace(seed=args.seed))
        self.args, self.algo = args, algo

        self.ckpt = load_checkpoint(args.resume, args, algo) if args.resume else None
        run_name = args.run_name or (self.ckpt["run_name"] if self.ckpt else None)
        if run_name is None:
            run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
            run_name = re.sub(r"[^\w.-]", "_", run_name)
        self.run_name = run_name
        self.run_dir = os.path.join("runs", run_name)
        self.checkpoint_path = args.checkpoint_path or os.path.join(self.run_dir, "checkpoint.pt")

        if args.track:
            import wandb

            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                       config=dataclasses.asdict(args), name=run_name, save_code=True)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        torch.use_deterministic_algorithms(args.torch_deterministic)
        torch.set_num_threads(args.torch_threads)

        self.parent_env, self.owner = None, None
        if args.vector == "async":
            # Our ids carry their own settings: build one env here to see whether the stack keeps a buffer.
            build = make_stack or gasil_wrappers.make_env
            probe = build(args.env_id, args.stack.replace(backend="inprocess"))
            keeps_buffer = find_state(probe) is not None
            probe.close()
            if keeps_buffer:
                raise ValueError(
                    "--vector async with a GASIL buffer: subprocess sub-envs cannot share this run's owner "
                    "(one D, one buffer). Use --vector sync; for subprocess envs in your own training "
                    "code see docs/scale_out.md (gasil_wrappers.make_vec_stack, gasil_wrappers.sb3, "
                    "RayGASILOwner)")
        self.envs = make_vector_env(args, d_every_from_batch=d_every_from_batch, make_stack=make_stack)
        self.obs_shape = self.envs.single_observation_space.shape
        self.obs_dim = int(np.prod(self.obs_shape))
        self.act_dim = int(np.prod(self.envs.single_action_space.shape))
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.logged_returns: list[tuple[int, float]] = []

    def start(self, agent: Agent, optimizer: torch.optim.Optimizer,
              load_extra: Callable[[dict], None] | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Reset the envs, or restore everything from the checkpoint (`load_extra` reads the script's own
        part of it); open the logs. Returns (next_obs, next_done, global_step, first iteration)."""
        args, ckpt = self.args, self.ckpt
        self.agent, self.optimizer = agent, optimizer
        next_obs, _ = self.envs.reset(seed=args.seed)
        next_obs = np.asarray(next_obs, dtype=np.float32)
        next_done = np.zeros(args.num_envs, dtype=np.float32)
        if args.vector == "sync":
            self.owner = find_state(self.envs.envs[0])  # the GASIL owner (D, buffer) all sub-envs share
        owner = self.owner
        # stepped, or recorded (top-k; an in-process buffer also counts the episodes it turned away)
        if owner is not None and (owner.policy_steps or len(owner.buffer)
                                  or (isinstance(owner, GASILState) and owner.buffer.version)):
            raise RuntimeError("the GASIL owner found for this run was already used by another run in this "
                               "process (gasil_wrappers shares owners by config); give this run its own "
                               "--stack.group")
        global_step, start_iteration = 0, 1
        if ckpt is not None:
            try:
                agent.load_state_dict(ckpt["agent"])
                optimizer.load_state_dict(ckpt["optimizer"])
                load_vector_env_state_dict(self.envs, ckpt["envs"])
                if ckpt["next_obs"].shape != next_obs.shape:
                    raise ValueError(f"observations of shape {ckpt['next_obs'].shape[1:]}, "
                                     f"this env has {self.obs_shape}")
                if load_extra is not None:
                    load_extra(ckpt)
            except (RuntimeError, ValueError, KeyError) as e:
                raise ValueError(f"checkpoint {args.resume!r} does not fit this run: {e}") from e
            next_obs, next_done = ckpt["next_obs"], ckpt["next_done"]
            global_step, start_iteration = ckpt["global_step"], ckpt["iteration"] + 1
            self.recent_returns.extend(ckpt["recent_returns"])
            random.setstate(ckpt["rng"]["python"])
            np.random.set_state(ckpt["rng"]["numpy"])
            torch.set_rng_state(ckpt["rng"]["torch"])

        # after set-up, so that a bad env id or checkpoint leaves no open event file behind
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.run_dir, purge_step=global_step if ckpt else None)
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()))
        self.csv_file, self.csv_writer = (open_returns_csv(args.csv_path, global_step if ckpt else None)
                                          if args.csv_path else (None, None))
        self.start_time, self.start_step = time.time(), global_step
        self.bar = tqdm(total=self.num_iterations * self.batch_size, initial=global_step,
                        disable=not args.progress_bar, unit="step", dynamic_ncols=True)
        return next_obs, next_done, global_step, start_iteration

    def log_episodes(self, infos: dict, global_step: int) -> None:
        """Log the true (and the shaped) return and the length of every episode a vector step finished."""
        if "final_info" not in infos:  # no sub-env finished an episode this step
            return
        final = infos["final_info"]
        true = final[INFO_KEY]
        for i in np.flatnonzero(true["_episode_return"]):
            ret = float(true["episode_return"][i])
            self.recent_returns.append(ret)
            self.logged_returns.append((global_step, ret))
            self.writer.add_scalar("charts/episodic_return", ret, global_step)
            self.writer.add_scalar("charts/shaped_episodic_return", final["episode"]["r"][i], global_step)
            length = int(final["episode"]["l"][i])
            self.writer.add_scalar("charts/episodic_length", length, global_step)
            if self.csv_writer is not None:
                self.csv_writer.writerow([self.run_name, global_step, repr(ret), length])

    def end_iteration(self, global_step: int, iteration: int, next_obs: np.ndarray, next_done: np.ndarray,
                      extra_state: Callable[[], dict] | None = None) -> bool:
        """Log SPS and the GASIL owner's diagnostics, write the checkpoints due (with the script's
        `extra_state()`); returns whether to stop here (--stop-after-steps)."""
        args, writer = self.args, self.writer
        sps = int((global_step - self.start_step) / max(time.time() - self.start_time, 1e-9))
        writer.add_scalar("charts/learning_rate", self.optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        if self.owner is not None:
            for key, value in self.owner.diagnostics().items():
                if math.isfinite(value):  # D's stats are NaN until its first round
                    writer.add_scalar(f"gasil/{key}", value, global_step)
        if self.csv_file is not None:
            self.csv_file.flush()
        self.bar.update(global_step - self.bar.n)
        mean_return = f"{np.mean(self.recent_returns):.1f}" if self.recent_returns else "-"
        self.bar.set_postfix(refresh=False, sps=sps, ret20=mean_return)

        paths = []
        snapshot_path = os.path.join(self.run_dir, "snapshots", f"step_{global_step}.pt")
        for every, path in ((args.checkpoint_every, self.checkpoint_path),
                            (args.snapshot_every, snapshot_path)):
            if every and global_step // every > (global_step - self.batch_size) // every:  # crossed one
                paths.append(path)
        if paths:
            checkpoint = {
                "format": CHECKPOINT_FORMAT,
                "algo": self.algo,
                "args": dataclasses.asdict(args),
                "run_name": self.run_name,
                "global_step": global_step,
                "iteration": iteration,
                "agent": self.agent.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "envs": vector_env_state_dict(self.envs),  # every wrapper, simulator and GASIL owner
                "next_obs": next_obs,
                "next_done": next_done,
                "recent_returns": list(self.recent_returns),
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state()},
                **(extra_state() if extra_state is not None else {}),
            }
            for path in paths:
                save_atomically(checkpoint, path)
        return bool(args.stop_after_steps and global_step >= args.stop_after_steps
                    and iteration < self.num_iterations)

    def finish(self, global_step: int, finished: bool) -> dict:
        """Save the model (--save-model), close the logs and envs; returns the run's summary (run name,
        steps, SPS, the true returns logged, the model path, the GASIL owner's diagnostics)."""
        args = self.args
        self.bar.close()
        model_path = None
        if args.save_model and finished:
            model_path = os.path.join(self.run_dir, f"{args.exp_name}.model")
            obs_rms = self.envs.get_attr("obs_rms")[0]  # sub-env 0's statistics (each sub-env keeps its own)
            save_atomically({
                "format": MODEL_FORMAT,
                "env_id": args.env_id,
                "stack": dataclasses.asdict(args.stack),
                "obs_dim": self.obs_dim,
                "act_dim": self.act_dim,
                "agent": self.agent.state_dict(),
                "obs_rms": {"mean": torch.as_tensor(obs_rms.mean), "var": torch.as_tensor(obs_rms.var),
                            "count": float(obs_rms.count)},
                "obs_epsilon": 1e-8,
            }, model_path)
        if self.csv_file is not None:
            self.csv_file.close()
            if finished:
                os.replace(args.csv_path + ".partial", args.csv_path)
        sps = (global_step - self.start_step) / max(time.time() - self.start_time, 1e-9)
        diagnostics = None if self.owner is None else self.owner.diagnostics()
        self.envs.close()
        if self.parent_env is not None:
            self.parent_env.close()
        self.writer.close()
        return {"run_name": self.run_name, "global_step": global_step, "finished": finished, "sps": sps,
                "returns": self.logged_returns, "model_path": model_path, "gasil": diagnostics}


# --- evaluation ------------------------------------------------------------------------------------------
@dataclass
class EvalArgs:
    """Run a saved policy for N deterministic (mean-action) episodes and report true returns."""

    model_path: str
    """a file written by --save-model"""
    env_id: str | None = None
    """the env to evaluate on (default: the one the model was trained on, with its delay and noise)"""
    episodes: int = 10
    """number of episodes"""
    seed: int = 0
    """episode k starts from reset(seed=seed + k)"""
    max_episode_steps: int | None = None
    """cut episodes at this many steps (default: the env's own time limit)"""
    video: bool = False
    """record every episode with RecordVideo (needs an offscreen renderer such as MUJOCO_GL=egl)"""
    video_folder: str | None = None
    """where videos go (default: videos/ next to the model file)"""
    torch_threads: int = 1
    """torch intra-op threads"""


def evaluate(eval_args: EvalArgs) -> list[float]:
    """The true (undelayed, unshaped) return of each episode, acting with the policy mean."""
    try:
        saved = torch.load(eval_args.model_path, map_location="cpu", weights_only=True)
        if saved.get("format") != MODEL_FORMAT:
            raise ValueError(f"unknown model format {saved.get('format')!r}")
    except Exception as e:
        raise RuntimeError(f"cannot read model {eval_args.model_path!r}: {e}") from e
    torch.set_num_threads(eval_args.torch_threads)
    env_id = eval_args.env_id or saved["env_id"]
    # The task's delay and noise stay; the discriminator does not matter for the true return.
    stack = GASILConfig(**saved["stack"]).replace(gasil=False, top_k=False)
    make_kwargs = {}
    if eval_args.max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = eval_args.max_episode_steps
    if eval_args.video:
        if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
            os.environ["MUJOCO_GL"] = "egl"  # offscreen; must be set before MuJoCo creates a context
        make_kwargs["render_mode"] = "rgb_array"
    # As in training, minus the normalizers: observations are normalized below with the saved statistics.
    env = gym.wrappers.ClipAction(gym.wrappers.FlattenObservation(
        gasil_wrappers.make_env(env_id, stack, **make_kwargs)))
    if eval_args.video:
        try:
            env.reset(seed=eval_args.seed)
            frame = env.render()
            if frame is None:
                raise RuntimeError("render() returned None")
        except Exception as e:  # no offscreen GL in this sandbox, say so and evaluate without video
            warnings.warn(f"cannot render {env_id} here ({type(e).__name__}: {e}); evaluating without video",
                          stacklevel=2)
        else:
            folder = eval_args.video_folder or os.path.join(os.path.dirname(eval_args.model_path), "videos")
            env = gym.wrappers.RecordVideo(env, folder, episode_trigger=lambda _: True, disable_logger=True)
    if env.observation_space.shape != (saved["obs_dim"],):
        raise ValueError(f"model {eval_args.model_path!r} expects observations of size {saved['obs_dim']}, "
                         f"{env_id} has shape {env.observation_space.shape}")

    agent = Agent(saved["obs_dim"], saved["act_dim"])
    agent.load_state_dict(saved["agent"])
    mean = saved["obs_rms"]["mean"].numpy()
    std = np.sqrt(saved["obs_rms"]["var"].numpy() + saved["obs_epsilon"])

    returns = []
    for k in range(eval_args.episodes):
        obs, _ = env.reset(seed=eval_args.seed + k)
        while True:
            x = np.clip((obs - mean) / std, -OBS_CLIP, OBS_CLIP).astype(np.float32)  # as NormalizeObservation
            with torch.inference_mode():
                action = agent.actor_mean(torch.from_numpy(x)).numpy()
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                returns.append(float(info[INFO_KEY]["episode_return"]))
                break
    env.close()
    return returns


def main(args_cls: type, train: Callable[[Args], dict], prog: str, argv: list[str] | None = None) -> None:
    """`prog [flags]` trains with `train(args_cls from the flags)`; `prog evaluate [flags]` evaluates."""
    argv = sys.argv[1:] if argv is None else argv
    flags = (tyro.conf.FlagConversionOff,)  # booleans as `--stack.gasil True`, like every other flag
    if argv[:1] == ["evaluate"]:
        eval_args = tyro.cli(EvalArgs, args=argv[1:], prog=f"{prog} evaluate", config=flags)
        returns = evaluate(eval_args)
        print("true returns:", " ".join(f"{r:.1f}" for r in returns))
        print(f"mean {np.mean(returns):.1f} +- {np.std(returns):.1f} over {len(returns)} episodes")
    else:
        result = train(tyro.cli(args_cls, args=argv, prog=prog, config=flags))
        print(f"{result['run_name']}: {result['global_step']} steps at {result['sps']:.0f} SPS"
              + ("" if result["finished"] else " (stopped early; resume from the last checkpoint)"))
