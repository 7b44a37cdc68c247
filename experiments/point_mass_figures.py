"""The paper's Figures 2 and 3: what PPO+GASIL and PPO learn on the 2D point mass, from snapshots.

For each agent, one column per training snapshot (``algos/ppo.py --snapshot-every N`` keeps them under
``runs/<run>/snapshots/``) and three rows:

1. the top-K trajectories in the good-trajectory buffer at that point;
2. trajectories of the policy at that point (sampled actions, seeded starts);
3. the discriminator's reward field (GASIL only): at each grid position an arrow toward the action
   with the highest reward ``-log D(s, a)``, its opacity set by the size of that reward.

    python -m experiments.point_mass_figures --run runs/<gasil run> --out results/pointmass/fig2_gasil.png
    python -m experiments.point_mass_figures --run runs/<ppo run> --out results/pointmass/fig3_ppo.png

PPO runs need ``--stack.top-k True`` so that their buffer is recorded (it does not change PPO).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import gymnasium as gym  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402

from experiments.scripts import load_script  # noqa: E402
from gasil_wrappers import GASILConfig, GASILState  # noqa: E402
from gasil_wrappers.envs.point_mass import PointMassEnv  # noqa: E402


@dataclass
class Snapshot:
    """What a figure column needs from one checkpoint."""

    step: int
    env_id: str
    policy: torch.nn.Module
    obs_mean: np.ndarray
    obs_std: np.ndarray
    owner: GASILState | None


def load_snapshot(path: Path, ppo) -> Snapshot:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    chain = dict(ckpt["envs"][0])  # sub-env 0: {layer class name: its saved attributes}
    rms = chain["NormalizeObservation"]["obs_rms"]
    obs_dim = len(rms.mean)
    agent = ppo.Agent(obs_dim, 2)
    agent.load_state_dict(ckpt["agent"])
    owner = None
    if ckpt.get("gasil_owner") is not None:
        stack = dict(ckpt["args"]["stack"])
        owner = GASILState(GASILConfig(**stack))
        owner.load_state_dict(ckpt["gasil_owner"])
    return Snapshot(
        ckpt["global_step"], ckpt["args"]["env_id"], agent, np.asarray(rms.mean),
        np.sqrt(np.asarray(rms.var) + 1e-8), owner,
    )


def point_mass(env_id: str) -> PointMassEnv:
    """The bare point mass of ``env_id`` (with its speed and cost settings), without any wrapper."""
    return gym.make(env_id).unwrapped


def policy_trajectories(snap: Snapshot, episodes: int, seed: int) -> list[np.ndarray]:
    """Agent positions over sampled episodes of the snapshot's policy."""
    env = point_mass(snap.env_id)
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        path = [env.agent_position.copy()]
        for _ in range(env.max_steps):
            x = torch.as_tensor(np.clip((obs - snap.obs_mean) / snap.obs_std, -10, 10), dtype=torch.float32)
            with torch.inference_mode():
                mean = snap.policy.actor_mean(x)
                action = mean + snap.policy.actor_logstd.exp()[0] * torch.randn(
                    mean.shape, generator=generator
                )
            obs, _, terminated, truncated, _ = env.step(np.clip(action.numpy(), -1, 1))
            path.append(env.agent_position.copy())
            if terminated or truncated:
                break
        paths.append(np.array(path))
    return paths


def reward_field(snap: Snapshot, grid: int, directions: int):
    """Per grid position: the best of ``directions`` unit actions under -log D, and its reward.

    The state at each position is the point mass's observation there at the start of an episode (all
    objects present), so the field shows where D pulls an agent that has collected nothing yet.
    """
    env, owner = point_mass(snap.env_id), snap.owner
    xs = np.linspace(-0.95, 0.95, grid)
    angles = np.linspace(0, 2 * np.pi, directions, endpoint=False)
    actions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    best_dir = np.zeros((grid, grid, 2))
    best_reward = np.zeros((grid, grid))
    for i, y in enumerate(xs):
        for j, x in enumerate(xs):
            obs, _ = env.reset(seed=0, options={"start": (x, y)})
            rewards = owner.discriminator_reward(np.repeat(obs[None], directions, axis=0), actions)
            k = int(np.argmax(rewards))
            best_dir[i, j], best_reward[i, j] = actions[k], rewards[k]
    return xs, best_dir, best_reward


def draw_layout(ax) -> None:
    for obj in PointMassEnv.objects():
        ax.add_patch(
            plt.Circle((obj.x, obj.y), 0.06, color=np.array(PointMassEnv.KIND_COLORS[obj.kind]) / 255)
        )
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class Args:
    """Draw Figure 2 (PPO+GASIL) or Figure 3 (PPO) from a run's snapshots."""

    run: str
    """the run directory, runs/<run_name>, whose snapshots/ holds checkpoints"""
    out: str
    """the PNG to write"""
    columns: int = 4
    """how many snapshots to draw, evenly spaced over those present"""
    episodes: int = 8
    """policy episodes per snapshot"""
    top_k: int = 8
    """at most this many buffer episodes per snapshot"""
    grid: int = 15
    """reward-field grid size per axis"""
    directions: int = 16
    """candidate action directions per grid position"""
    seed: int = 0
    """seed of the policy episodes"""


def main(args: Args) -> None:
    ppo = load_script("ppo", "algos_ppo")
    paths = sorted(
        Path(args.run, "snapshots").glob("*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1])
    )
    if not paths:
        raise FileNotFoundError(
            f"no snapshots in {Path(args.run, 'snapshots')} (train with --snapshot-every)"
        )
    pick = np.unique(np.linspace(0, len(paths) - 1, min(args.columns, len(paths))).round().astype(int))
    snaps = [load_snapshot(paths[i], ppo) for i in pick]
    has_d = any(s.owner is not None and s.owner.ready for s in snaps)
    rows = 3 if has_d else 2
    fig, axes = plt.subplots(rows, len(snaps), figsize=(3 * len(snaps), 3 * rows), squeeze=False)
    for col, snap in enumerate(snaps):
        top, pol = axes[0, col], axes[1, col]
        for ax in axes[:, col]:
            draw_layout(ax)
        top.set_title(f"{snap.step / 1e6:.2f}M steps", fontsize=10)
        if snap.owner is not None:
            for ep in snap.owner.buffer.episodes[: args.top_k]:
                top.plot(ep.obs[:, 0], ep.obs[:, 1], lw=1, alpha=0.8)
        for path in policy_trajectories(snap, args.episodes, args.seed):
            pol.plot(path[:, 0], path[:, 1], lw=1, alpha=0.8)
        if has_d:
            field = axes[2, col]
            if snap.owner is not None and snap.owner.ready:
                xs, direction, reward = reward_field(snap, args.grid, args.directions)
                span = reward.max() - reward.min()
                opacity = (reward - reward.min()) / span if span > 0 else np.ones_like(reward)
                for i, y in enumerate(xs):
                    for j, x in enumerate(xs):
                        field.arrow(
                            x,
                            y,
                            0.05 * direction[i, j, 0],
                            0.05 * direction[i, j, 1],
                            width=0.012,
                            color="black",
                            alpha=float(0.1 + 0.9 * opacity[i, j]),
                            lw=0,
                        )
    axes[0, 0].set_ylabel("top-K trajectories")
    axes[1, 0].set_ylabel("policy trajectories")
    if has_d:
        axes[2, 0].set_ylabel("discriminator reward")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} from {len(snaps)} snapshots of {args.run}")


if __name__ == "__main__":
    main(tyro.cli(Args, config=(tyro.conf.FlagConversionOff,)))
