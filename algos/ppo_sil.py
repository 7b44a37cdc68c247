"""PPO+SIL: PPO plus self-imitation learning (Oh, Guo, Singh, Lee, ICML 2018).

One of the four agents the GASIL paper compares (PPO, PPO+BC, PPO+SIL, PPO+GASIL). This is algos/ppo.py
(same flags, env stack, logging, CSV of true returns, checkpoints, `evaluate` subcommand) plus Oh et al.'s
PPO variant of SIL, with their PPO+SIL MuJoCo settings as defaults:

- every finished episode is stored, transition by transition, as (s, a, R) with R_t = sum_k gamma^k
  r_{t+k} its discounted Monte-Carlo return (no bootstrap; with `--truncation bootstrap` the last reward
  of an episode a time limit cut carries gamma * V(s_T), as PPO's does, so R does too), in a prioritized FIFO
  replay of 50,000 transitions (`PrioritizedReplay`; priority exponent 0.6, importance exponent 0.1);
  as in their code, an episode without any positive reward (that bonus counts) is not stored;
- after each PPO update, 10 SIL minibatches of 512 (once the replay holds more than 100 transitions),
  each one Adam step (same optimizer, learning rate and gradient clipping as PPO) on `sil_loss`:

      adv    = clip(R - V(s), 0, 1)                        (no gradient; also the new priority)
      L_pi   = sum_i w_i * adv_i * (-log pi(a_i|s_i)) / n
      L_V    = sum_i w_i * huber_1((R_i - V(s_i))+) / n    (= 1/2 (R-V)^2 up to the clip, then linear)
      L_SIL  = 0.1 * (L_pi + 0.5 * 0.01 * L_V - ent_coef * sum_i w_i * H_i * [R_i > V_i] / n)

  with w the importance weights and n = max(#{R_i > V_i}, 64). The Huber form gives the value gradient
  of their code, w * clip(V - R, -1, 0); every number above is a flag (`--sil-*`).

Which reward SIL uses: the one PPO trains on, i.e. the env reward after the GASIL stack (delayed by
--stack.delay, shaped if --stack.gasil) and after NormalizeReward's scaling and clip; the observations
are the normalized ones the policy acted on and the actions are the sampled (unclipped) ones PPO also
uses. SIL compares R with the critic's V(s), which is trained on that normalized reward, so R must be on
the same scale (Oh et al.'s code does the same through VecNormalize); on a delayed task R is computed
from the delayed reward, the only reward the agent is given.

    python algos/ppo_sil.py --env-id gasil_wrappers:DelayedHopper-v5 --seed 1
    python algos/ppo_sil.py --env-id Hopper-v5 --stack.delay 20 --sil-updates 10 --sil-batch-size 512
    python algos/ppo_sil.py evaluate --model-path runs/<run>/ppo_sil.model --episodes 10

A checkpoint holds everything ppo.py's does plus the SIL replay (transitions, priorities, its random
generator) and each sub-env's episode in progress, so a resumed CPU run is bitwise identical.
"""

import dataclasses
import os
import sys
from typing import NamedTuple

import numpy as np
import torch
import tyro  # noqa: F401  (tests and benches parse flags with ppo_sil.tyro)
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run_utils.py beside this script
import run_utils  # noqa: E402
from run_utils import Agent, EvalArgs, evaluate  # noqa: E402, F401  (the script's API)

ALGO = "ppo_sil"


@dataclasses.dataclass
class Args(run_utils.Args):
    """PPO+SIL (continuous actions) with the GASIL wrapper stack set by --stack.* flags.

    `python algos/ppo_sil.py evaluate --help` shows the evaluation entry point.
    """

    exp_name: str = "ppo_sil"
    """name of this experiment (part of the run name and of the saved model's file name)"""

    # --- self-imitation learning (Oh et al. 2018; defaults: their PPO+SIL on MuJoCo) ----------------
    sil_updates: int = 10
    """SIL minibatch updates after each PPO update (0: plain PPO)"""
    sil_batch_size: int = 512
    """SIL minibatch size (fewer while the replay holds fewer transitions)"""
    sil_buffer_size: int = 50_000
    """capacity of the prioritized replay in transitions (the oldest are dropped first)"""
    sil_min_samples: int = 100
    """SIL updates start once the replay holds more than this many transitions"""
    sil_loss_coef: float = 0.1
    """weight of the whole SIL loss"""
    sil_value_coef: float = 0.01
    """beta^sil, weight of the SIL value loss (which also carries a factor 0.5)"""
    sil_clip: float = 1.0
    """the SIL advantage is clip(R - V, 0, sil_clip); the value loss turns linear beyond it"""
    sil_min_batch: int = 64
    """SIL losses are sums divided by max(number of samples with R > V, this)"""
    sil_alpha: float = 0.6
    """priority exponent of the replay (0: uniform sampling)"""
    sil_beta: float = 0.1
    """importance-sampling exponent of the replay (0: no correction)"""
    sil_positive_only: bool = True
    """store only episodes with at least one positive reward (as Oh et al.'s code)"""



# --- self-imitation learning --------------------------------------------------------------------------
class PrioritizedReplay:
    """SIL's replay: transitions (s, a, R) in a FIFO ring, sampled in proportion to priority ** alpha.

    Proportional prioritization (Schaul et al. 2016) as Oh et al. use it: a new transition gets the
    largest priority seen so far; after a SIL step each sampled transition gets its clipped advantage
    (R - V)+ back as priority (at least 1e-6); the importance weight of a sample is (N P(i)) ** -beta
    divided by the largest possible one, (N min_j P(j)) ** -beta. Sampling is `rng.choice(n, p=...)` on
    the replay's own generator: O(n) per minibatch, well under a millisecond at 50k (no sum tree needed).

    Example:
        >>> replay = PrioritizedReplay(4, obs_dim=1, act_dim=1, alpha=1.0, seed=0)
        >>> replay.add(np.zeros((3, 1)), np.zeros((3, 1)), np.array([1.0, 2.0, 3.0]))
        >>> replay.update_priorities(np.array([0, 2]), np.array([1.0, 3.0]))
        >>> replay.probabilities().round(3).tolist()  # the unsampled one keeps the initial max priority 1
        [0.2, 0.2, 0.6]
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, *, alpha: float = 0.6,
                 seed: int | None = None):
        if capacity < 1 or not alpha >= 0:
            raise ValueError(f"PrioritizedReplay: need capacity >= 1 and alpha >= 0, got {capacity}, {alpha}")
        self.capacity, self.alpha = int(capacity), float(alpha)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.returns = np.zeros(capacity, np.float32)
        self.priorities = np.zeros(capacity, np.float64)  # already raised to alpha
        self.size = 0
        self.next = 0  # the slot the next transition goes to
        self.max_priority = 1.0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, actions: np.ndarray, returns: np.ndarray) -> None:
        """Store transitions (copied), overwriting the oldest once full; they get the largest priority."""
        n = len(returns)
        if n > self.capacity:  # only the newest fit
            obs, actions, returns = obs[-self.capacity:], actions[-self.capacity:], returns[-self.capacity:]
            n = self.capacity
        slots = (self.next + np.arange(n)) % self.capacity
        self.obs[slots] = obs
        self.actions[slots] = actions
        self.returns[slots] = returns
        self.priorities[slots] = self.max_priority ** self.alpha
        self.next = (self.next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def probabilities(self) -> np.ndarray:
        """P(i) = p_i ** alpha / sum_j p_j ** alpha over the stored transitions."""
        p = self.priorities[: self.size]
        return p / p.sum()

    def sample(self, batch_size: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices drawn with replacement by priority, and their importance weights (max 1)."""
        if not self.size:
            raise ValueError("PrioritizedReplay: cannot sample from an empty replay")
        probs = self.probabilities()
        idx = self.rng.choice(self.size, size=batch_size, p=probs)
        if beta > 0:
            weights = (probs[idx] / probs.min()) ** -beta  # (N P(i))^-beta / (N min P)^-beta
        else:
            weights = np.ones(batch_size)
        return idx, weights.astype(np.float32)

    def update_priorities(self, idx: np.ndarray, priorities: np.ndarray) -> None:
        priorities = np.maximum(np.asarray(priorities, np.float64), 1e-6)
        self.priorities[idx] = priorities ** self.alpha
        self.max_priority = max(self.max_priority, float(priorities.max(initial=0.0)))

    def state_dict(self) -> dict:
        n = self.size
        return {"capacity": self.capacity, "alpha": self.alpha, "obs": self.obs[:n].copy(),
                "actions": self.actions[:n].copy(), "returns": self.returns[:n].copy(),
                "priorities": self.priorities[:n].copy(), "next": self.next,
                "max_priority": self.max_priority, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if (state["capacity"], state["alpha"]) != (self.capacity, self.alpha):
            raise ValueError(f"a replay of capacity {state['capacity']} and alpha {state['alpha']} does not "
                             f"fit one of {self.capacity} and {self.alpha}")
        n = len(state["returns"])
        theirs = (state["obs"].shape[1:], state["actions"].shape[1:])
        mine = (self.obs.shape[1:], self.actions.shape[1:])
        if theirs != mine:
            raise ValueError(f"a replay of observation and action shapes {theirs} does not fit {mine}")
        self.obs[:n], self.actions[:n], self.returns[:n] = state["obs"], state["actions"], state["returns"]
        self.priorities[:n] = state["priorities"]
        self.size, self.next, self.max_priority = n, int(state["next"]), float(state["max_priority"])
        self.rng.bit_generator.state = state["rng"]


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """R_t = r_t + gamma R_{t+1} over one finished episode, R after the last step = 0 (float64 sums).

    Example:
        >>> discounted_returns(np.array([1.0, 0.0, 2.0]), 0.5).tolist()
        [1.5, 1.0, 2.0]
    """
    returns = np.empty(len(rewards), np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


def split_episodes(pending: list[list[tuple[np.ndarray, ...]]], obs: np.ndarray, actions: np.ndarray,
                   rewards: np.ndarray, ended: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Hand a rollout to the episodes in progress; return the episodes it finishes, in sub-env order.

    `obs`, `actions`, `rewards` and `ended` are (steps, sub-envs, ...) arrays of one rollout;
    `ended[t, i]` says that step t of sub-env i ended an episode. `pending[i]` holds copies of the
    pieces of sub-env i's episode in progress, and is updated in place. Each finished episode is
    (obs, actions, rewards) of all its steps.
    """
    finished = []
    num_steps = len(rewards)
    for i, parts in enumerate(pending):
        start = 0
        for end in np.flatnonzero(ended[:, i]) + 1:
            parts.append((obs[start:end, i].copy(), actions[start:end, i].copy(),
                          rewards[start:end, i].copy()))
            finished.append(tuple(np.concatenate(column) for column in zip(*parts)))
            parts.clear()
            start = end
        if start < num_steps:
            parts.append((obs[start:, i].copy(), actions[start:, i].copy(), rewards[start:, i].copy()))
    return finished


class SILLoss(NamedTuple):
    loss: torch.Tensor
    """the weighted total that is minimized"""
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    advantages: torch.Tensor
    """clip(R - V, 0, clip) per sample, without gradient: the samples' new priorities"""
    num_valid: torch.Tensor
    """number of samples with R > V"""


def sil_loss(logprob: torch.Tensor, value: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor, *,
             entropy: torch.Tensor | None = None, clip: float = 1.0, value_coef: float = 0.01,
             ent_coef: float = 0.0, loss_coef: float = 0.1, min_batch: int = 64) -> SILLoss:
    """Oh et al.'s SIL loss on a minibatch of log pi(a|s), V(s), returns R and importance weights.

    Only samples with R > V count: the policy term is the advantage-weighted negative log-likelihood
    sum w adv (-log pi) with adv = clip(R - V, 0, clip), the value term a Huber loss on (R - V)+
    (1/2 d^2 up to `clip`, linear beyond, so its gradient is w clip(V - R, -clip, 0) as in their code);
    both are sums divided by n = max(#{R > V}, min_batch). Total:
    loss_coef * (policy + 0.5 value_coef value - ent_coef entropy). All zero when every R <= V.

    Example:
        >>> out = sil_loss(torch.tensor([-1.0, -2.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.5, -1.0]),
        ...                torch.ones(2), min_batch=1)
        >>> round(out.policy_loss.item(), 4), round(out.value_loss.item(), 4), out.num_valid.item()
        (0.5, 0.125, 1.0)
    """
    with torch.no_grad():
        valid = (returns > value).to(value.dtype)
        advantages = (returns - value).clamp(0.0, clip)
        n = valid.sum().clamp(min=min_batch)
    policy_loss = (weights * advantages * -logprob).sum() / n
    gap = (returns - value).clamp(min=0.0)
    huber = torch.where(gap <= clip, 0.5 * gap.square(), clip * (gap - 0.5 * clip))
    value_loss = (weights * huber).sum() / n
    entropy_term = (weights * entropy * valid).sum() / n if entropy is not None else value.new_zeros(())
    loss = loss_coef * (policy_loss + 0.5 * value_coef * value_loss - ent_coef * entropy_term)
    return SILLoss(loss, policy_loss, value_loss, entropy_term, advantages, valid.sum())


def train(args: Args) -> dict:
    """Run PPO+SIL; returns a summary (run name, steps, SPS, the true returns logged, paths written)."""
    if min(args.sil_updates, args.sil_min_samples) < 0 or min(args.sil_batch_size, args.sil_buffer_size,
                                                               args.sil_min_batch) < 1:
        raise ValueError("need sil_updates >= 0, sil_min_samples >= 0 and sil_batch_size, sil_buffer_size, "
                         "sil_min_batch >= 1")
    if not (args.sil_alpha >= 0 and args.sil_beta >= 0 and args.sil_clip > 0):
        raise ValueError(f"need sil_alpha >= 0, sil_beta >= 0, sil_clip > 0; got {args.sil_alpha}, "
                         f"{args.sil_beta}, {args.sil_clip}")
    run = run_utils.Run(args, ALGO, d_every_from_batch=False)
    args, envs = run.args, run.envs
    batch_size, minibatch_size, num_iterations = run.batch_size, run.minibatch_size, run.num_iterations
    obs_dim, act_dim = run.obs_dim, run.act_dim
    agent = Agent(obs_dim, act_dim)
    # fused Adam: same algorithm, one kernel per step instead of one per tensor (a third of the update time)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    # SIL: the replay, each sub-env's episode in progress, and counters (all part of the checkpoint).
    replay = PrioritizedReplay(args.sil_buffer_size, obs_dim, act_dim, alpha=args.sil_alpha, seed=args.seed)
    sil_pending: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(args.num_envs)]
    sil_counts = {"episodes_stored": 0, "episodes_skipped": 0, "updates": 0}

    def sil_state() -> dict:  # SIL's part of a checkpoint
        return {"sil": {"replay": replay.state_dict(), "pending": sil_pending, "counts": dict(sil_counts)}}

    def load_sil(ckpt: dict) -> None:
        replay.load_state_dict(ckpt["sil"]["replay"])
        sil_pending[:] = [list(parts) for parts in ckpt["sil"]["pending"]]
        sil_counts.update(ckpt["sil"]["counts"])

    next_obs, next_done, global_step, start_iteration = run.start(agent, optimizer, load_sil)
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

        # SIL: every episode this rollout finished goes to the replay with its discounted returns.
        ended = np.concatenate([dones_buf[1:], next_done[None]])  # step t of sub-env i ended an episode
        for ep_obs, ep_actions, ep_rewards in split_episodes(sil_pending, obs_buf, actions_buf, rewards_buf,
                                                             ended):
            if args.sil_positive_only and not (ep_rewards > 0).any():
                sil_counts["episodes_skipped"] += 1
                continue
            replay.add(ep_obs, ep_actions, discounted_returns(ep_rewards, args.gamma))
            sil_counts["episodes_stored"] += 1

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

        # SIL: minibatches from the prioritized replay, each an Adam step on the SIL loss alone.
        sil_stats = []
        if len(replay) > args.sil_min_samples:
            for _ in range(args.sil_updates):
                idx, is_weights = replay.sample(min(args.sil_batch_size, len(replay)), args.sil_beta)
                new_logprob, entropy, new_value = agent.evaluate(torch.from_numpy(replay.obs[idx]),
                                                                 torch.from_numpy(replay.actions[idx]))
                sil = sil_loss(new_logprob, new_value, torch.from_numpy(replay.returns[idx]),
                               torch.from_numpy(is_weights), entropy=entropy, clip=args.sil_clip,
                               value_coef=args.sil_value_coef, ent_coef=args.ent_coef,
                               loss_coef=args.sil_loss_coef, min_batch=args.sil_min_batch)
                if not torch.isfinite(sil.loss):
                    raise FloatingPointError(
                        f"non-finite SIL loss at step {global_step} (iteration {iteration}): policy loss "
                        f"{sil.policy_loss.item()}, value loss {sil.value_loss.item()}")
                optimizer.zero_grad()
                sil.loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
                replay.update_priorities(idx, sil.advantages.numpy())
                sil_counts["updates"] += 1
                sil_stats.append([sil.loss.item(), sil.policy_loss.item(), sil.value_loss.item(),
                                  sil.advantages.mean().item(), sil.num_valid.item() / len(idx)])

        var_returns = np.var(returns)
        explained_var = np.nan if var_returns == 0 else 1 - np.var(returns - values_buf) / var_returns
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)

        if sil_stats:
            for key, value in zip(("loss", "policy_loss", "value_loss", "mean_advantage", "valid_fraction"),
                                  np.mean(sil_stats, axis=0)):
                writer.add_scalar(f"sil/{key}", value, global_step)
        writer.add_scalar("sil/replay_size", len(replay), global_step)
        writer.add_scalar("sil/episodes_stored", sil_counts["episodes_stored"], global_step)

        if run.end_iteration(global_step, iteration, next_obs, next_done, sil_state):
            finished = False
            break

    return {**run.finish(global_step, finished), "sil": {**sil_counts, "replay_size": len(replay)}}


def main(argv: list[str] | None = None) -> None:
    run_utils.main(Args, train, "ppo_sil.py", argv)


if __name__ == "__main__":
    main()
