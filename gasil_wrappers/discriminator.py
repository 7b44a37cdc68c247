"""The discriminator D(s, a): an MLP on normalized (s, a), its out-of-band trainer, and a numpy copy.

D(s, a) is the probability that (s, a) came from the *current* policy rather than from the
good-trajectory buffer (paper, Eq. 8/10). The policy's reward is ``-log D = softplus(-logit)``,
finite for every finite logit (``-log(1 - sigmoid(x))`` in float32 is inf from x≈17).

The learner never calls this class: GASILState trains it between env steps. Per-step rewards use a
float64 numpy snapshot of the weights, refreshed after every training round, so the env's hot path
makes no torch call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:  # gymnasium >= 1.0
    from gymnasium.wrappers.utils import RunningMeanStd
except ImportError:  # gymnasium 0.29
    from gymnasium.wrappers.normalize import RunningMeanStd

__all__ = ["Discriminator", "softplus"]


def softplus(x):
    """log(1 + e^x), finite for every finite x (numpy)."""
    return np.logaddexp(0.0, x)


class Discriminator:
    """D(s, a) with running input normalization, Adam, and a numpy forward for the hot path.

    Inputs are rows ``x = concat(s, a)``; they are normalized by a running mean/std (updated on every
    training minibatch, as in OpenAI's GAIL) and clipped to ``±input_clip``. Weights are initialized
    from ``rng`` (PyTorch's default uniform(±1/sqrt(fan_in)) scheme), so two discriminators built from
    equal seeds are equal and the global torch RNG is never touched.

    Example:
        >>> import numpy as np
        >>> d = Discriminator(3, (8,), lr=1e-2, rng=np.random.default_rng(0))
        >>> policy, good = np.zeros((64, 3)), np.ones((64, 3))
        >>> stats = d.train(policy, good, updates=200, batch_size=32, rng=np.random.default_rng(1))
        >>> bool(d.reward(good[0]) > d.reward(policy[0]))
        True
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (64, 64),
        *,
        lr: float = 1e-4,
        entropy_coef: float = 1e-3,
        input_clip: float = 5.0,
        rng: np.random.Generator,
    ):
        self.in_dim = int(in_dim)
        self.entropy_coef = float(entropy_coef)
        self.input_clip = float(input_clip)
        sizes = [self.in_dim, *hidden, 1]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            linear = nn.Linear(fan_in, fan_out)
            bound = 1.0 / np.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, (fan_out, fan_in))))
                linear.bias.copy_(torch.from_numpy(rng.uniform(-bound, bound, fan_out)))
            layers.append(linear)
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, fused=True)  # fewer kernel launches
        self.normalizer = RunningMeanStd(shape=(self.in_dim,))
        self.refresh_snapshot()

    # --- forward ---------------------------------------------------------------------------------
    def normalize(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Running-mean/std normalization, clipped to ±input_clip (numpy; rows or a single row)."""
        h = np.multiply(x, self._inv_std, out=out)
        np.subtract(h, self._mean_scaled, out=h)
        np.minimum(h, self.input_clip, out=h)
        return np.maximum(h, -self.input_clip, out=h)

    def _refresh_normalization(self) -> None:
        self._inv_std = 1.0 / np.sqrt(np.asarray(self.normalizer.var, dtype=np.float64) + 1e-8)
        self._mean_scaled = np.asarray(self.normalizer.mean, dtype=np.float64) * self._inv_std

    def refresh_snapshot(self) -> None:
        """Copy weights and normalizer statistics into the float64 numpy arrays the hot path uses."""
        self._refresh_normalization()
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        self._layers = [
            (m.weight.detach().double().numpy().T.copy(), m.bias.detach().double().numpy().copy())
            for m in linears
        ]
        w_last, b_last = self._layers[-1]
        self._layers[-1] = (w_last[:, 0].copy(), float(b_last[0]))
        # Work arrays for the one-row forward of the env's hot path: no allocation per step.
        self._row_out = [np.empty(self.in_dim)] + [np.empty(len(b)) for _, b in self._layers[:-1]]
        self._batch_out = [None] * len(self._row_out)

    def logits(self, x: np.ndarray):
        """Logit of D for one row (returns a float) or for rows (returns an array), in numpy."""
        out = self._row_out if x.ndim == 1 else self._batch_out
        h = self.normalize(x, out[0])
        for (w, b), o in zip(self._layers[:-1], out[1:]):
            h = np.dot(h, w, out=o)
            np.add(h, b, out=h)
            np.tanh(h, out=h)
        w, b = self._layers[-1]
        return h.dot(w) + b

    def reward(self, x: np.ndarray):
        """-log D(s, a) = softplus(-logit): high where D believes (s, a) came from the good buffer."""
        return softplus(-self.logits(x))

    # --- training --------------------------------------------------------------------------------
    def loss(self, logits_policy: torch.Tensor, logits_good: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with policy samples labelled 1 and good samples 0, minus an entropy bonus."""
        bce = F.softplus(-logits_policy).mean() + F.softplus(logits_good).mean()
        logits = torch.cat([logits_policy, logits_good])
        entropy = ((1.0 - torch.sigmoid(logits)) * logits - F.logsigmoid(logits)).mean()
        return bce - self.entropy_coef * entropy

    def train(
        self, policy_x: np.ndarray, good_x: np.ndarray, *, updates: int, batch_size: int,
        rng: np.random.Generator,
    ) -> dict[str, float]:
        """``updates`` Adam steps on minibatches of ``batch_size`` rows from each class; returns mean stats.

        All minibatches of the round are drawn first; the normalizer is updated once with all of them
        (the same statistics OpenAI's GAIL accumulates minibatch by minibatch) and frozen for the round.
        """
        p = policy_x[rng.integers(len(policy_x), size=updates * batch_size)]
        g = good_x[rng.integers(len(good_x), size=updates * batch_size)]
        self.normalizer.update(np.concatenate([p, g]))
        self._refresh_normalization()
        xp = torch.as_tensor(self.normalize(p), dtype=torch.float32).view(updates, batch_size, -1)
        xg = torch.as_tensor(self.normalize(g), dtype=torch.float32).view(updates, batch_size, -1)
        stats = torch.zeros(3)
        for i in range(updates):
            logits = self.net(torch.cat([xp[i], xg[i]])).squeeze(-1)
            loss = self.loss(logits[:batch_size], logits[batch_size:])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                stats += torch.stack([loss, (logits[:batch_size] > 0).float().mean(),
                                      (logits[batch_size:] < 0).float().mean()])
        loss, acc_policy, acc_good = (stats / updates).tolist()
        if not np.isfinite(loss):
            raise FloatingPointError(f"Discriminator: non-finite training loss {loss}")
        self.refresh_snapshot()
        return {"d_loss": loss, "d_acc_policy": acc_policy, "d_acc_buffer": acc_good}

    # --- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "normalizer": {
                "mean": torch.as_tensor(self.normalizer.mean),
                "var": torch.as_tensor(self.normalizer.var),
                "count": float(self.normalizer.count),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        norm = state["normalizer"]
        self.normalizer.mean = norm["mean"].numpy().astype(np.float64)
        self.normalizer.var = norm["var"].numpy().astype(np.float64)
        self.normalizer.count = float(norm["count"])
        self.refresh_snapshot()
