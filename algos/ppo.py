"""PPO for continuous actions (Schulman et al. 2017) in one file; GASIL comes only from the env stack.

The algorithm knows nothing about GASIL. `--stack.*` flags describe the GASIL wrapper stack
(gasil_wrappers.make_env) that every sub-env is built in, so this one script is PPO, PPO on a delayed
task, and PPO+GASIL:

    python algos/ppo.py --env-id Hopper-v5 --seed 1
    python algos/ppo.py --stack.gasil True --stack.delay 20 --stack.alpha 0.1
    python algos/ppo.py --env-id gasil_wrappers:GASIL-DelayedHopper-v5
    python algos/ppo.py evaluate --model-path runs/<run>/ppo.model --episodes 10

Defaults follow Table 1 of the GASIL paper (FC(64)-FC(64) tanh, horizon 2048, 10 epochs, minibatch 64,
gamma 0.99, GAE lambda 0.95, entropy 0, lr 3e-4); the rest follows common PPO practice (clip 0.2,
max grad norm 0.5, observation and reward normalization, lr annealing). A checkpoint holds everything
(model, optimizer, RNGs, normalizers, each sub-env's wrapper chain and simulator state, the GASIL owner),
so a resumed CPU run is bitwise identical to an uninterrupted one.
"""

import csv
import dataclasses
import math
import os
import pickle
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
from gasil_wrappers import INFO_KEY, GASILConfig, GASILState, ProcessGASILState, find_state

CHECKPOINT_FORMAT = 1
MODEL_FORMAT = 1
OBS_CLIP = 10.0
REWARD_CLIP = 10.0
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Args:
    """PPO (continuous actions) with the GASIL wrapper stack set by --stack.* flags.

    `python algos/ppo.py evaluate --help` shows the evaluation entry point.
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
    """write true episodic returns (columns run,step,true_return) to this CSV; it is PATH.partial
    until the run finishes"""
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


def make_env(env_id: str, stack: GASILConfig, gamma: float, batch_size: int) -> Callable[[], gym.Env]:
    """Thunk for one sub-env: the GASIL stack innermost, then the per-env wrappers of PPO.

    ClipAction sits outside the stack, so the stack (and its discriminator) sees the action the env
    executes. RecordEpisodeStatistics sees the reward the agent is given (shaped, delayed); the true
    return travels in info["gasil"]. Each sub-env normalizes its own observations and rewards.
    (Gymnasium's vector-level normalizers do not support SAME_STEP autoreset.) D trains once per PPO
    batch (`batch_size` steps summed over sub-envs) unless --stack.d-every says otherwise.
    """

    def thunk() -> gym.Env:
        env = gasil_wrappers.make_env(env_id, stack, batch_size=batch_size)
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


def _clip_obs(obs: np.ndarray) -> np.ndarray:
    return np.clip(obs, -OBS_CLIP, OBS_CLIP)


def _clip_reward(reward: float) -> float:
    return min(max(reward, -REWARD_CLIP), REWARD_CLIP)


def make_vector_env(args: Args) -> gym.vector.VectorEnv:
    """`num_envs` sub-envs in one process (sync) or one subprocess each (async)."""
    batch_size = args.num_envs * args.num_steps
    thunks = [make_env(args.env_id, args.stack, args.gamma, batch_size) for _ in range(args.num_envs)]
    vector_cls = gym.vector.SyncVectorEnv if args.vector == "sync" else gym.vector.AsyncVectorEnv
    # SAME_STEP: a finished episode's next observation is already the reset one (gymnasium 0.29 style).
    envs = vector_cls(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    if not isinstance(envs.single_action_space, gym.spaces.Box):
        raise ValueError(f"{args.env_id}: this PPO needs a continuous (Box) action space")
    return envs


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


# --- checkpoints -------------------------------------------------------------------------------------
# A sub-env's state is the attributes of every layer of its wrapper chain, except links, spaces and
# caches that construction rebuilds, callables, and the shared GASIL owner (saved via its state_dict).
# MuJoCo's model, data and renderer are not pickled: the simulator state is saved with mj_getState.
_NOT_STATE = {"env", "_saved_kwargs", "spec", "_cached_spec", "metadata", "_metadata", "render_mode",
              "mujoco_renderer"}
_MUJOCO_KEY = "__mujoco_integration_state__"
_UNPICKLABLE = "<not saved: cannot be pickled>"


def _unsaved(value) -> bool:
    return isinstance(value, str) and value == _UNPICKLABLE


def _is_mujoco(value) -> bool:
    return type(value).__module__.split(".")[0] == "mujoco"


def wrapper_chain(env: gym.Env) -> list[gym.Env]:
    """The wrapper layers of `env` from the outside in, then the base env."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def layer_state(layer: gym.Env) -> dict:
    """The attributes of one layer that are state (values that cannot be pickled are marked)."""
    state = {}
    for name, value in vars(layer).items():
        if (name in _NOT_STATE or callable(value) or _is_mujoco(value)
                or isinstance(value, (gym.Space, GASILState, ProcessGASILState))):
            continue
        try:
            pickle.dumps(value)
        except Exception:
            value = _UNPICKLABLE
        state[name] = value
    return state


def envs_state(envs: gym.vector.SyncVectorEnv) -> list[list[tuple[str, dict]]]:
    """For every sub-env, (class name, state attributes) of each layer of its wrapper chain."""
    states = []
    for env in envs.envs:
        chain = []
        for layer in wrapper_chain(env):
            state = layer_state(layer)
            if _is_mujoco(vars(layer).get("data")):
                import mujoco  # here, so that non-MuJoCo runs do not need it

                spec = mujoco.mjtState.mjSTATE_INTEGRATION  # time, qpos, qvel, act, warm start, controls...
                state[_MUJOCO_KEY] = np.empty(mujoco.mj_stateSize(layer.model, spec))
                mujoco.mj_getState(layer.model, layer.data, state[_MUJOCO_KEY], spec)
            chain.append((type(layer).__name__, state))
        states.append(chain)
    skipped = {f"{cls}.{name}" for chain in states for cls, state in chain
               for name, value in state.items() if _unsaved(value)}
    if skipped:
        warnings.warn(f"checkpoint: these attributes cannot be pickled and are left out: {sorted(skipped)}",
                      stacklevel=2)
    return states


def load_envs_state(envs: gym.vector.SyncVectorEnv, states: list[list[tuple[str, dict]]]) -> None:
    """Restore envs_state(); every layer must have the same class and attribute names as when saved
    (a wrapper whose code changed since would otherwise resume from a half-restored state)."""
    mine = [[type(layer).__name__ for layer in wrapper_chain(env)] for env in envs.envs]
    theirs = [[name for name, _ in chain] for chain in states]
    if mine != theirs:
        raise ValueError(f"the checkpoint's sub-envs are {theirs}, this run's are {mine}")
    for env, chain in zip(envs.envs, states):
        for layer, (cls, state) in zip(wrapper_chain(env), chain):
            state = dict(state)
            mj_state = state.pop(_MUJOCO_KEY, None)
            if set(state) != set(layer_state(layer)):
                raise ValueError(f"{cls} has attributes {sorted(layer_state(layer))}, the checkpoint has "
                                 f"{sorted(state)} (was it written by other code?)")
            vars(layer).update({name: value for name, value in state.items() if not _unsaved(value)})
            if mj_state is not None:
                import mujoco

                spec = mujoco.mjtState.mjSTATE_INTEGRATION
                if mj_state.shape != (mujoco.mj_stateSize(layer.model, spec),):
                    raise ValueError(f"a MuJoCo state of size {mj_state.size} does not fit {cls}")
                mujoco.mj_setState(layer.model, layer.data, mj_state, spec)


def save_atomically(obj, path: str) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def flat_args(args: dict) -> dict:
    """{"stack": {"delay": 20}} -> {"stack.delay": 20}, so that a difference names the flag."""
    flat = {}
    for key, value in args.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": sub_value for sub, sub_value in value.items()})
        else:
            flat[key] = value
    return flat


def load_checkpoint(path: str, args: Args) -> dict:
    """Read a checkpoint and check that it belongs to a run with the same settings."""
    try:
        # weights_only=False: the file holds numpy arrays and RNG states; only load files you trust.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RuntimeError(f"cannot read checkpoint {path!r} (corrupt or not a checkpoint): {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path!r} is not a PPO checkpoint of format {CHECKPOINT_FORMAT}")
    mine = {k: v for k, v in flat_args(dataclasses.asdict(args)).items() if k not in RUN_CONTROL}
    theirs = {k: v for k, v in flat_args(ckpt["args"]).items() if k not in RUN_CONTROL}
    diff = [f"{k}: checkpoint {theirs.get(k)!r}, this run {mine.get(k)!r}"
            for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if diff:
        raise ValueError(f"checkpoint {path!r} was written by a run with other settings: " + "; ".join(diff))
    return ckpt


# --- CSV of true returns -------------------------------------------------------------------------------
def open_returns_csv(path: str, resume_step: int | None):
    """Open PATH.partial for appending rows; on resume keep only rows up to the checkpoint's step."""
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
    writer.writerow(["run", "step", "true_return"])
    writer.writerows([row["run"], row["step"], row["true_return"]] for row in rows)
    return f, writer


# --- training ----------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    """Run PPO; returns a summary (run name, steps, SPS, the true returns logged, paths written)."""
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        raise ValueError(f"num_envs*num_steps={batch_size} is not divisible by "
                         f"num_minibatches={args.num_minibatches}")
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    if num_iterations < 1:
        raise ValueError(f"total_timesteps={args.total_timesteps} is less than one rollout "
                         f"({batch_size} steps)")
    if args.vector == "async" and (args.checkpoint_every or args.snapshot_every or args.resume):
        raise ValueError("checkpoints need --vector sync (subprocess envs cannot hand over their state)")
    if args.stack.seed is None:
        args = dataclasses.replace(args, stack=args.stack.replace(seed=args.seed))

    ckpt = load_checkpoint(args.resume, args) if args.resume else None
    run_name = args.run_name or (ckpt["run_name"] if ckpt else None)
    if run_name is None:
        run_name = re.sub(r"[^\w.-]", "_", f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    run_dir = os.path.join("runs", run_name)
    checkpoint_path = args.checkpoint_path or os.path.join(run_dir, "checkpoint.pt")

    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=dataclasses.asdict(args), name=run_name, save_code=True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(args.torch_threads)

    if args.vector == "async":
        # Subprocess workers cannot be looked into: a stack env built here finds the owner they share
        # (with backend "process", building it also starts the owner's server before the workers fork).
        parent_env = gasil_wrappers.make_env(args.env_id, args.stack, batch_size=batch_size)
        owner = find_state(parent_env)
        if isinstance(owner, GASILState):
            raise ValueError("--vector async with a GASIL buffer needs --stack.backend process: with an "
                             "in-process owner every worker would train its own discriminator")
    envs = make_vector_env(args)
    obs_shape, act_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    obs_dim, act_dim = int(np.prod(obs_shape)), int(np.prod(act_shape))
    agent = Agent(obs_dim, act_dim)
    # fused Adam: same algorithm, one kernel per step instead of one per tensor (a third of the update time)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)

    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = np.asarray(next_obs, dtype=np.float32)
    next_done = np.zeros(args.num_envs, dtype=np.float32)
    if args.vector == "sync":
        owner = find_state(envs.envs[0])  # the GASIL owner (D, buffer) all sub-envs share, or None
    if owner is not None and (owner.policy_steps or len(owner.buffer)):  # stepped, or recorded (top-k)
        raise RuntimeError("the GASIL owner found for this run was already used by another run in this "
                           "process (gasil_wrappers shares owners by config); give this run its own "
                           "--stack.group")
    global_step, start_iteration = 0, 1
    recent_returns: deque[float] = deque(maxlen=20)
    if ckpt is not None:
        try:
            agent.load_state_dict(ckpt["agent"])
            optimizer.load_state_dict(ckpt["optimizer"])
            load_envs_state(envs, ckpt["envs"])
            if (ckpt["gasil_owner"] is None) != (owner is None):
                raise ValueError("one of the checkpoint and this run has a GASIL owner, the other not")
            if owner is not None:
                owner.load_state_dict(ckpt["gasil_owner"])
            if ckpt["next_obs"].shape != next_obs.shape:
                raise ValueError(f"observations of shape {ckpt['next_obs'].shape[1:]}, "
                                 f"this env has {obs_shape}")
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"checkpoint {args.resume!r} does not fit this run: {e}") from e
        next_obs, next_done = ckpt["next_obs"], ckpt["next_done"]
        global_step, start_iteration = ckpt["global_step"], ckpt["iteration"] + 1
        recent_returns.extend(ckpt["recent_returns"])
        random.setstate(ckpt["rng"]["python"])
        np.random.set_state(ckpt["rng"]["numpy"])
        torch.set_rng_state(ckpt["rng"]["torch"])

    # after set-up, so that a bad env id or checkpoint leaves no open event file behind
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir, purge_step=ckpt["global_step"] if ckpt else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
        f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()))

    csv_file, csv_writer = (open_returns_csv(args.csv_path, global_step if ckpt else None)
                            if args.csv_path else (None, None))
    logged_returns: list[tuple[int, float]] = []

    # Rollout storage: numpy, written in place every step; torch views of it are taken for the update.
    obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((args.num_steps, args.num_envs, act_dim), dtype=np.float32)
    logprobs_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    rewards_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    values_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

    start_time, start_step = time.time(), global_step
    bar = tqdm(total=num_iterations * batch_size, initial=global_step, disable=not args.progress_bar,
               unit="step", dynamic_ncols=True)
    finished = True
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)

        for step in range(args.num_steps):
            global_step += args.num_envs
            obs_buf[step] = next_obs
            dones_buf[step] = next_done
            # inference_mode around acting only: the GASIL stack trains D with autograd inside envs.step
            with torch.inference_mode():
                action, logprob, value = agent.act(torch.from_numpy(next_obs))
            action = action.numpy()
            if not np.isfinite(action).all():
                raise FloatingPointError(
                    f"the policy produced a non-finite action at step {global_step}: {action} "
                    "(non-finite observations or weights)")
            actions_buf[step] = action
            logprobs_buf[step] = logprob.numpy()
            values_buf[step] = value.numpy()

            next_obs, reward, terminations, truncations, infos = envs.step(action)
            next_obs = np.asarray(next_obs, dtype=np.float32)
            rewards_buf[step] = reward
            next_done = np.logical_or(terminations, truncations).astype(np.float32)

            if "final_info" in infos:  # some sub-env finished an episode this step
                final = infos["final_info"]
                true = final[INFO_KEY]
                for i in np.flatnonzero(true["_episode_return"]):
                    ret = float(true["episode_return"][i])
                    recent_returns.append(ret)
                    logged_returns.append((global_step, ret))
                    writer.add_scalar("charts/episodic_return", ret, global_step)
                    writer.add_scalar("charts/shaped_episodic_return", final["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", final["episode"]["l"][i], global_step)
                    if csv_writer is not None:
                        csv_writer.writerow([run_name, global_step, repr(ret)])

        # Generalized advantage estimation (Schulman et al. 2016), bootstrapping from V(next_obs).
        with torch.inference_mode():
            next_value = agent.value(torch.from_numpy(next_obs)).numpy()
        advantages = np.zeros_like(rewards_buf)
        last_gae = np.zeros(args.num_envs, dtype=np.float32)
        for t in reversed(range(args.num_steps)):
            if t == args.num_steps - 1:
                not_done, following_value = 1.0 - next_done, next_value
            else:
                not_done, following_value = 1.0 - dones_buf[t + 1], values_buf[t + 1]
            delta = rewards_buf[t] + args.gamma * following_value * not_done - values_buf[t]
            last_gae = delta + args.gamma * args.gae_lambda * not_done * last_gae
            advantages[t] = last_gae
        returns = advantages + values_buf

        b_obs = torch.from_numpy(obs_buf).view(batch_size, obs_dim)
        b_actions = torch.from_numpy(actions_buf).view(batch_size, act_dim)
        b_logprobs = torch.from_numpy(logprobs_buf).view(-1)
        b_advantages = torch.from_numpy(advantages).view(-1)
        b_returns = torch.from_numpy(returns).view(-1)
        b_values = torch.from_numpy(values_buf).view(-1)

        clipfracs = []
        for epoch in range(args.update_epochs):
            order = torch.from_numpy(np.random.permutation(batch_size))
            for start in range(0, batch_size, minibatch_size):
                mb = order[start:start + minibatch_size]
                new_logprob, entropy, new_value = agent.evaluate(b_obs[mb], b_actions[mb])
                log_ratio = new_logprob - b_logprobs[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-log_ratio).mean()
                    approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's low-variance KL estimator
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())

                mb_adv = b_advantages[mb]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                if args.clip_vloss:
                    v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-args.clip_coef,
                                                                                args.clip_coef)
                    v_loss = 0.5 * torch.max((new_value - b_returns[mb]).square(),
                                             (v_clipped - b_returns[mb]).square()).mean()
                else:
                    v_loss = 0.5 * (new_value - b_returns[mb]).square().mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite PPO loss at step {global_step} (iteration {iteration}, epoch {epoch}): "
                        f"policy loss {pg_loss.item()}, value loss {v_loss.item()}")

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        var_returns = np.var(returns)
        explained_var = np.nan if var_returns == 0 else 1 - np.var(returns - values_buf) / var_returns
        sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        if owner is not None:
            for key, value in owner.diagnostics().items():
                if math.isfinite(value):  # D's stats are NaN until its first round
                    writer.add_scalar(f"gasil/{key}", value, global_step)
        if csv_file is not None:
            csv_file.flush()
        bar.update(global_step - bar.n)
        mean_return = f"{np.mean(recent_returns):.1f}" if recent_returns else "-"
        bar.set_postfix(refresh=False, sps=sps, ret20=mean_return)

        paths = []
        snapshot_path = os.path.join(run_dir, "snapshots", f"step_{global_step}.pt")
        for every, path in ((args.checkpoint_every, checkpoint_path), (args.snapshot_every, snapshot_path)):
            if every and global_step // every > (global_step - batch_size) // every:  # crossed a multiple
                paths.append(path)
        if paths:
            checkpoint = {
                "format": CHECKPOINT_FORMAT,
                "args": dataclasses.asdict(args),
                "run_name": run_name,
                "global_step": global_step,
                "iteration": iteration,
                "agent": agent.state_dict(),
                "optimizer": optimizer.state_dict(),
                "envs": envs_state(envs),
                "gasil_owner": None if owner is None else owner.state_dict(),
                "next_obs": next_obs,
                "next_done": next_done,
                "recent_returns": list(recent_returns),
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state()},
            }
            for path in paths:
                save_atomically(checkpoint, path)
        if args.stop_after_steps and global_step >= args.stop_after_steps and iteration < num_iterations:
            finished = False
            break

    bar.close()
    model_path = None
    if args.save_model and finished:
        model_path = os.path.join(run_dir, f"{args.exp_name}.model")
        obs_rms = envs.get_attr("obs_rms")[0]  # sub-env 0's statistics (each sub-env keeps its own)
        save_atomically({
            "format": MODEL_FORMAT,
            "env_id": args.env_id,
            "stack": dataclasses.asdict(args.stack),
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "agent": agent.state_dict(),
            "obs_rms": {"mean": torch.as_tensor(obs_rms.mean), "var": torch.as_tensor(obs_rms.var),
                        "count": float(obs_rms.count)},
            "obs_epsilon": 1e-8,
        }, model_path)
    if csv_file is not None:
        csv_file.close()
        if finished:
            os.replace(args.csv_path + ".partial", args.csv_path)
    sps = (global_step - start_step) / max(time.time() - start_time, 1e-9)
    diagnostics = None if owner is None else owner.diagnostics()
    envs.close()
    if args.vector == "async":
        parent_env.close()
    writer.close()
    return {"run_name": run_name, "global_step": global_step, "finished": finished, "sps": sps,
            "returns": logged_returns, "model_path": model_path, "gasil": diagnostics}


# --- evaluation --------------------------------------------------------------------------------------
@dataclass
class EvalArgs:
    """Run a saved PPO policy for N deterministic (mean-action) episodes and report true returns."""

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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    flags = (tyro.conf.FlagConversionOff,)  # booleans as `--stack.gasil True`, like every other flag
    if argv[:1] == ["evaluate"]:
        eval_args = tyro.cli(EvalArgs, args=argv[1:], prog="ppo.py evaluate", config=flags)
        returns = evaluate(eval_args)
        print("true returns:", " ".join(f"{r:.1f}" for r in returns))
        print(f"mean {np.mean(returns):.1f} +- {np.std(returns):.1f} over {len(returns)} episodes")
    else:
        result = train(tyro.cli(Args, args=argv, config=flags))
        print(f"{result['run_name']}: {result['global_step']} steps at {result['sps']:.0f} SPS"
              + ("" if result["finished"] else " (stopped early; resume from the last checkpoint)"))


if __name__ == "__main__":
    main()
