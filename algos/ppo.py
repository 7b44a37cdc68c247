"""PPO for continuous actions (Schulman et al. 2017), read top to bottom; GASIL comes only from the env stack.

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

This file is the algorithm; what every script of algos/ shares (flags, the per-env wrappers, the
networks, checkpoints, logging, the CSV of true returns, `evaluate`) is in run_utils.py beside it.
"""

import dataclasses
import os
import sys

import numpy as np
import torch
import tyro  # noqa: F401  (tests and benches parse flags with ppo.tyro)
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run_utils.py beside this script
import run_utils  # noqa: E402
from run_utils import Agent, EvalArgs, evaluate, make_vector_env  # noqa: E402, F401  (the script's API)

ALGO = "ppo"


@dataclasses.dataclass
class Args(run_utils.Args):
    """PPO (continuous actions) with the GASIL wrapper stack set by --stack.* flags.

    `python algos/ppo.py evaluate --help` shows the evaluation entry point. The PPO settings are those
    of run_utils.Args, which every script of algos/ shares.
    """


def train(args: Args) -> dict:
    """Run PPO; returns a summary (run name, steps, SPS, the true returns logged, paths written)."""
    run = run_utils.Run(args, ALGO)
    args, envs = run.args, run.envs
    batch_size, minibatch_size, num_iterations = run.batch_size, run.minibatch_size, run.num_iterations
    obs_dim, act_dim = run.obs_dim, run.act_dim
    agent = Agent(obs_dim, act_dim)
    # fused Adam: same algorithm, one kernel per step instead of one per tensor (a third of the update time)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    next_obs, next_done, global_step, start_iteration = run.start(agent, optimizer)
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
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)

        if run.end_iteration(global_step, iteration, next_obs, next_done):
            finished = False
            break

    return run.finish(global_step, finished)


def main(argv: list[str] | None = None) -> None:
    run_utils.main(Args, train, "ppo.py", argv)


if __name__ == "__main__":
    main()
