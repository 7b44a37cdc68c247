"""PPO+BC: PPO plus behaviour cloning of the agent's own top-K episodes.

One of the four agents the GASIL paper compares (PPO, PPO+BC, PPO+SIL, PPO+GASIL; Section 5.1: "PPO with
additional behavior cloning to top-K trajectories"). This is algos/ppo.py (same flags, env stack,
logging, CSV of true returns, checkpoints, `evaluate` subcommand) with one term added to every PPO
minibatch loss:

    loss = PPO loss + bc_coef * mean_j(-log pi(a_j | s_j)),   (s_j, a_j) ~ uniform over the good buffer

The good-trajectory buffer is GASIL's own (gasil_wrappers.GoodTrajectoryBuffer: the top episodes by
discounted return, `--stack.buffer-steps` steps in all, ranked with `--stack.gamma` on the reward the
agent is given, delayed if delayed), recorded by the stack with `--stack.top-k True`, which this script
turns on by default and refuses to run without. Nothing is cloned until the buffer holds an episode.

The buffer holds the raw observations the stack saw (noisy, before NormalizeObservation), so each
iteration they are normalized and clipped with the current statistics of sub-env 0's observation
normalizer (each sub-env keeps its own; sub-env 0's is also the one --save-model saves). Its actions are
the ones executed, i.e. clipped to the action space by ClipAction (PPO's own loss uses the sampled,
unclipped actions). The paper gives no BC weight or batch size: bc_coef 0.1 and 64 samples per minibatch
(PPO's minibatch size) are this script's choice; see docs/baselines.md.

    python algos/ppo_bc.py --env-id gasil_wrappers:DelayedHopper-v5 --seed 1
    python algos/ppo_bc.py --env-id Hopper-v5 --stack.delay 20 --stack.buffer-steps 10000 --bc-coef 0.5
    python algos/ppo_bc.py evaluate --model-path runs/<run>/ppo_bc.model --episodes 10

BC reads the buffer in this process, so it needs `--vector sync` and the in-process owner. The buffer is
part of the GASIL owner's state, so a checkpoint holds it and a resumed CPU run is bitwise identical.
"""

import dataclasses
import importlib
import os
import sys

import gymnasium as gym
import numpy as np
import torch
import tyro  # noqa: F401  (tests and benches parse flags with ppo_bc.tyro)
from torch import nn

import gasil_wrappers
from gasil_wrappers import GASILConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run_utils.py beside this script
import run_utils  # noqa: E402
from run_utils import OBS_CLIP, Agent, EvalArgs, evaluate  # noqa: E402, F401  (the script's API)

ALGO = "ppo_bc"


@dataclasses.dataclass
class Args(run_utils.Args):
    """PPO+BC (continuous actions): PPO plus behaviour cloning of the top-K buffer the stack records.

    `python algos/ppo_bc.py evaluate --help` shows the evaluation entry point.
    """

    exp_name: str = "ppo_bc"
    """name of this experiment (part of the run name and of the saved model's file name)"""
    stack: GASILConfig = dataclasses.field(default_factory=lambda: GASILConfig(top_k=True))
    """the GASIL wrapper stack around every sub-env (delay, noise, buffer, discriminator); PPO+BC needs
    its good-trajectory buffer (top_k True)"""

    # --- behaviour cloning of the good-trajectory buffer ----------------------------------------------
    bc_coef: float = 0.1
    """weight of the behaviour-cloning loss -log pi(a|s) in every PPO minibatch loss (0: plain PPO)"""
    bc_batch_size: int = 64
    """buffer transitions (drawn uniformly, with replacement) per PPO minibatch"""



def has_own_stack(env_id: str) -> bool:
    """Whether `env_id` is one of gasil_wrappers' registered ids, which build their stack themselves."""
    module, _, name = env_id.rpartition(":")
    if module:
        importlib.import_module(module)  # as gym.make does: importing registers the id
    return gym.spec(name).entry_point is gasil_wrappers.registration.make_stack_env


def own_stack_settings(env_id: str, stack: GASILConfig) -> dict | None:
    """For an id that builds its own stack, the gym.make keywords that carry `stack`; else None.

    Those ids (gasil_wrappers:DelayedHopper-v5) fix delay, noise and GASIL themselves and take every
    other stack setting as a keyword: here top_k, the buffer's size and discount, group and seed.
    """
    if not has_own_stack(env_id):
        return None
    if stack.delay != 1 or stack.obs_noise_std > 0 or stack.gasil:
        raise ValueError(f"{env_id!r} already contains the GASIL stack with its delay, noise and GASIL "
                         "settings; don't set --stack.delay, --stack.obs-noise-std or --stack.gasil too")
    fixed_by_id = ("delay", "obs_noise_std", "gasil")
    return {k: v for k, v in dataclasses.asdict(stack).items() if k not in fixed_by_id}


def make_stack_env(env_id: str, stack: GASILConfig, batch_size: int | None = None) -> gym.Env:
    """gasil_wrappers.make_env(env_id, stack), also for ids that bring their own stack (top_k included)."""
    settings = own_stack_settings(env_id, stack)
    if settings is None:
        return gasil_wrappers.make_env(env_id, stack, batch_size=batch_size)
    return gym.make(env_id, **settings)


# --- behaviour cloning -------------------------------------------------------------------------------
def normalize_obs(obs: np.ndarray, normalizer: gym.wrappers.NormalizeObservation) -> np.ndarray:
    """Raw observations as the policy would see them now: NormalizeObservation's formula with its
    current statistics (not updated), then the clip to +-OBS_CLIP that make_env adds after it."""
    rms = normalizer.obs_rms
    normalized = np.float32((obs - rms.mean) / np.sqrt(rms.var + normalizer.epsilon))
    return np.clip(normalized, -OBS_CLIP, OBS_CLIP)


def buffer_dataset(buffer: gasil_wrappers.GoodTrajectoryBuffer,
                   normalizer: gym.wrappers.NormalizeObservation) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Every (s, a) of the good-trajectory buffer, s normalized for the policy (None while it is empty)."""
    if not len(buffer):
        return None
    obs = np.concatenate([episode.obs for episode in buffer.episodes])
    actions = np.concatenate([episode.actions for episode in buffer.episodes])
    obs = normalize_obs(obs.reshape(len(obs), -1), normalizer)  # FlattenObservation sits outside the stack
    return torch.from_numpy(obs), torch.from_numpy(actions.reshape(len(actions), -1).astype(np.float32))


def bc_loss(agent: "Agent", obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning: the mean negative log-likelihood -log pi(a|s) of the policy on (obs, actions).

    Example:
        >>> agent = Agent(obs_dim=2, act_dim=1)
        >>> loss = bc_loss(agent, torch.zeros(4, 2), torch.zeros(4, 1))  # mean 0, std 1: -log N(0; 0, 1)
        >>> round(loss.item(), 4)
        0.9189
    """
    logprob, _, _ = agent.evaluate(obs, actions)
    return -logprob.mean()


def train(args: Args) -> dict:
    """Run PPO+BC; returns a summary (run name, steps, SPS, the true returns logged, paths written)."""
    if not args.stack.records_buffer:
        raise ValueError("PPO+BC clones the stack's good-trajectory buffer: it needs --stack.top-k True")
    if args.vector == "async" or args.stack.backend != "inprocess":
        raise ValueError("PPO+BC reads the good-trajectory buffer and sub-env 0's observation normalizer in "
                         "this process: it needs --vector sync and --stack.backend inprocess")
    own_stack_settings(args.env_id, args.stack)  # a registered id with a second delay or noise: say so now
    if args.bc_batch_size < 1 or not args.bc_coef >= 0:
        raise ValueError(f"need bc_batch_size >= 1 and bc_coef >= 0, got {args.bc_batch_size}, "
                         f"{args.bc_coef}")
    run = run_utils.Run(args, ALGO, d_every_from_batch=False, make_stack=make_stack_env)
    args, envs = run.args, run.envs
    batch_size, minibatch_size, num_iterations = run.batch_size, run.minibatch_size, run.num_iterations
    obs_dim, act_dim = run.obs_dim, run.act_dim
    agent = Agent(obs_dim, act_dim)
    # fused Adam: same algorithm, one kernel per step instead of one per tensor (a third of the update time)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    good_buffer = gasil_wrappers.find_state(envs.envs[0]).buffer
    normalizer = next(layer for layer in run_utils.wrapper_chain(envs.envs[0])
                      if isinstance(layer, gym.wrappers.NormalizeObservation))
    bc_minibatches = 0  # PPO minibatches that had a BC term

    def bc_state() -> dict:  # BC's part of a checkpoint
        return {"bc_minibatches": bc_minibatches}

    def load_bc(ckpt: dict) -> None:
        nonlocal bc_minibatches
        bc_minibatches = ckpt["bc_minibatches"]

    next_obs, next_done, global_step, start_iteration = run.start(agent, optimizer, load_bc)
    writer = run.writer

    # Rollout storage: numpy, written in place every step; torch views of it are taken for the update.
    obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((args.num_steps, args.num_envs, act_dim), dtype=np.float32)
    logprobs_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    rewards_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    values_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

    finished = True
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)

        for step in range(args.num_steps):
            global_step += args.num_envs
            obs_buf[step] = next_obs
            dones_buf[step] = next_done
            action, logprob, value = run_utils.act(agent, next_obs, global_step)
            actions_buf[step], logprobs_buf[step], values_buf[step] = action, logprob, value

            next_obs, reward, terminations, truncations, infos = envs.step(action)
            next_obs = np.asarray(next_obs, dtype=np.float32)
            rewards_buf[step] = reward
            if args.truncation == "bootstrap" and truncations.any():  # the return goes on past the limit
                cut, bonus = run_utils.timeout_bootstrap(agent, infos, terminations, truncations, args.gamma)
                rewards_buf[step, cut] += bonus
            next_done = np.logical_or(terminations, truncations).astype(np.float32)
            run.log_episodes(infos, global_step)

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

        # BC data: the buffer as it is now, normalized with sub-env 0's current statistics.
        bc_data = buffer_dataset(good_buffer, normalizer) if args.bc_coef > 0 else None
        bc_losses = []
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
                if bc_data is not None:
                    picked = torch.from_numpy(np.random.randint(len(bc_data[0]), size=args.bc_batch_size))
                    b_loss = bc_loss(agent, bc_data[0][picked], bc_data[1][picked])
                    bc_losses.append(b_loss.detach())
                    loss = loss + args.bc_coef * b_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite PPO loss at step {global_step} (iteration {iteration}, epoch {epoch}): "
                        f"policy loss {pg_loss.item()}, value loss {v_loss.item()}"
                        + (f", BC loss {bc_losses[-1].item()}" if bc_data is not None else ""))

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        var_returns = np.var(returns)
        explained_var = np.nan if var_returns == 0 else 1 - np.var(returns - values_buf) / var_returns
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        if bc_losses:
            writer.add_scalar("bc/loss", torch.stack(bc_losses).mean().item(), global_step)
            bc_minibatches += len(bc_losses)
        writer.add_scalar("bc/buffer_steps", good_buffer.num_steps, global_step)

        if run.end_iteration(global_step, iteration, next_obs, next_done, bc_state):
            finished = False
            break

    return {**run.finish(global_step, finished),
            "bc": {"minibatches": bc_minibatches, "buffer_episodes": len(good_buffer),
                   "buffer_steps": good_buffer.num_steps}}


def main(argv: list[str] | None = None) -> None:
    run_utils.main(Args, train, "ppo_bc.py", argv)


if __name__ == "__main__":
    main()
