"""The discriminator D(s, a): an MLP on normalized (s, a), its out-of-band trainer, and a numpy copy.

D(s, a) is the probability that (s, a) came from the *current* policy rather than from the
good-trajectory buffer (paper, Eq. 8/10). The policy's reward is ``-log D = softplus(-logit)``,
finite for every finite logit (``-log(1 - sigmoid(x))`` in float32 is inf from x≈17), or, with
``reward_form="logit"``, ``log(1 - D) - log D = -logit`` (zero where D is at chance).

The learner never calls this class: GASILState trains it between env steps. Per-step rewards use a
float64 numpy snapshot of the weights, refreshed after every training round, so the env's hot path
makes no torch call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:  # gymnasium >= 1.0
    from gymnasium.wrappers.utils import RunningMeanStd
except ImportError:  # gymnasium 0.29
    from gymnasium.wrappers.normalize import RunningMeanStd

from gasil_wrappers.config import D_REWARD_FORMS

__all__ = ["Discriminator", "DiscriminatorForward", "softplus"]


def softplus(x):
    """log(1 + e^x), finite for every finite x (numpy)."""
    return np.logaddexp(0.0, x)


def _softplus_scalar(x: float) -> float:
    """softplus for one Python float: the same value as :func:`softplus`, without numpy's call overhead."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


class DiscriminatorForward:
    """D's forward pass in float64 numpy on a snapshot of its weights and normalizer: the env's hot path.

    The snapshot is stored so that one row costs seven numpy calls: the input is clipped in raw units
    (to ``mean ± input_clip·std``, the same clip as ``|(x − mean)/std| ≤ input_clip``), the normalization
    ``(x − mean)/std`` is folded into the first layer's weight and bias (float64 keeps that exact to
    ~1e-12 for any mean/std ratio an observation has), and every layer's bias is the last row of its
    weight, multiplied by a constant 1 kept at the end of each preallocated work vector.

    ``arrays()`` lists the snapshot's arrays in a fixed order; :meth:`dump` and :meth:`load` move them
    through one flat float64 array (the process-backed owner publishes D that way).

    ``reward_form`` chooses :meth:`reward`: ``"neg_log_d"`` (−log D, the paper's) or ``"logit"``
    (log(1 − D) − log D = −logit, which is 0 where D is at chance).

    Example:
        >>> import numpy as np
        >>> f = DiscriminatorForward(2, (3,), input_clip=5.0)
        >>> f.set(np.zeros(2), np.ones(2), [np.ones((3, 2)), np.ones((1, 3))], [np.zeros(3), np.zeros(1)])
        >>> round(f.logits(np.array([0.5, -0.5])), 6), round(f.reward(np.zeros(2)), 6)
        (0.0, 0.693147)
        >>> g = DiscriminatorForward(2, (3,), input_clip=5.0, reward_form="logit")
        >>> g.set(np.zeros(2), np.ones(2), [np.ones((3, 2)), np.ones((1, 3))], [np.zeros(3), np.zeros(1)])
        >>> g.reward(np.zeros(2)) == 0.0  # D at chance: no reward at all
        True
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], input_clip: float, reward_form: str = "neg_log_d"):
        if reward_form not in D_REWARD_FORMS:
            raise ValueError(f"DiscriminatorForward: reward_form must be one of {D_REWARD_FORMS}, "
                             f"got {reward_form!r}")
        self.reward_form = reward_form
        self.in_dim = int(in_dim)
        self.input_clip = float(input_clip)
        sizes = [self.in_dim, *hidden]
        self.low = np.full(self.in_dim, -np.inf)  # inputs are clipped to [low, high]
        self.high = np.full(self.in_dim, np.inf)
        self.layers = [np.zeros((i + 1, o)) for i, o in zip(sizes[:-1], sizes[1:])]  # hidden layers
        self.last = np.zeros(sizes[-1] + 1)  # output layer (one unit)
        self._sizes = sizes
        self._make_work()

    def _make_work(self) -> None:
        """Work arrays and views of the snapshot (rebuilt after unpickling, which would copy views)."""
        self._rows = [np.ones(n + 1) for n in self._sizes]  # one-row work vectors, trailing 1 for the bias
        self._views = [r[:-1] for r in self._rows]
        self._batches: dict[int, tuple[list, list]] = {}  # the same for batches of rows, by batch size
        # Batches are computed feature-major (one column per row): the bounds as columns and each layer
        # transposed, as views that follow every in-place update of the snapshot.
        self._high_col, self._low_col = self.high[:, None], self.low[:, None]
        self._layers_t = [w.T for w in self.layers]

    def __getstate__(self) -> dict:
        keep = ("in_dim", "input_clip", "low", "high", "layers", "last", "_sizes", "reward_form")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"reward_form": "neg_log_d", **state})  # pickled before reward forms existed
        self._make_work()

    @staticmethod
    def size(in_dim: int, hidden: Sequence[int]) -> int:
        """Number of float64 values in the flat form of a forward with these sizes."""
        sizes = [int(in_dim), *hidden, 1]
        return 2 * sizes[0] + sum((i + 1) * o for i, o in zip(sizes[:-1], sizes[1:]))

    def arrays(self):
        yield self.low
        yield self.high
        yield from self.layers
        yield self.last

    def set(self, mean: np.ndarray, var: np.ndarray, weights, biases) -> None:
        """Take normalizer statistics and per-layer (out, in) weights and biases (torch's layout)."""
        mean = np.asarray(mean, dtype=np.float64)
        std = np.sqrt(np.asarray(var, dtype=np.float64) + 1e-8)
        self.low[:] = mean - self.input_clip * std
        self.high[:] = mean + self.input_clip * std
        for i, (w, b) in enumerate(zip(weights, biases)):
            w = np.asarray(w, dtype=np.float64).T
            b = np.asarray(b, dtype=np.float64)
            if i == 0:  # ((x - mean) / std) @ w + b  ==  x @ (w / std) + (b - (mean / std) @ w)
                w = w / std[:, None]
                b = b - mean @ w
            target = self.layers[i] if i < len(self.layers) else self.last.reshape(-1, 1)
            target[:-1] = w
            target[-1] = b

    def dump(self, out: np.ndarray) -> None:
        """Write the snapshot into the flat float64 array ``out`` (of :meth:`size` values)."""
        at = 0
        for a in self.arrays():
            out[at: at + a.size] = a.ravel()
            at += a.size
        if at != len(out):
            raise ValueError(f"DiscriminatorForward.dump: {at} values, the block holds {len(out)}")

    def load(self, flat: np.ndarray) -> None:
        """Copy a flat snapshot written by :meth:`dump` into this forward's arrays."""
        at = 0
        for a in self.arrays():
            np.copyto(a, flat[at: at + a.size].reshape(a.shape))
            at += a.size

    def logits(self, x: np.ndarray):
        """Logit of D for one row ``concat(s, a)`` (returns a float) or for rows (returns an array)."""
        if x.ndim == 1:
            v = self._views[0]
            np.minimum(x, self.high, out=v)
            np.maximum(v, self.low, out=v)
            for src, w, out in zip(self._rows, self.layers, self._views[1:]):
                np.dot(src, w, out=out)
                np.tanh(out, out=out)
            return float(self._rows[-1].dot(self.last))
        work = self._batches.get(len(x))
        if work is None:  # each layer's input, one column per row, with a last row of 1s for the bias
            full = [np.ones((n + 1, len(x))) for n in self._sizes]
            work = (full, [f[:-1] for f in full])  # C-contiguous: np.dot writes into them directly
            if len(x) <= 64:  # the batched wrappers' vector steps: kept for the next call
                self._batches[len(x)] = work
        full, views = work
        np.minimum(x.T, self._high_col, out=views[0])
        np.maximum(views[0], self._low_col, out=views[0])
        for src, w, out in zip(full, self._layers_t, views[1:]):
            np.dot(w, src, out=out)
            np.tanh(out, out=out)
        return self.last @ full[-1]

    def reward(self, x: np.ndarray):
        """D's reward term for one row (a float) or rows (an array): high where D believes (s, a) came
        from the good buffer. ``-log D = softplus(-logit)`` (``neg_log_d``), or ``-logit`` (``logit``)."""
        logits = self.logits(x)
        if self.reward_form == "logit":
            return -logits
        return _softplus_scalar(-logits) if isinstance(logits, float) else softplus(-logits)


class Discriminator:
    """D(s, a) with running input normalization, Adam, and a numpy forward for the hot path.

    Inputs are rows ``x = concat(s, a)``; they are normalized by a running mean/std (updated on every
    training round with all of its minibatches, as OpenAI's GAIL accumulates them) and clipped to
    ``±input_clip``. Weights are initialized from ``rng`` (PyTorch's default uniform(±1/sqrt(fan_in))
    scheme), so two discriminators built from equal seeds are equal and the global torch RNG is never
    touched. ``logits`` and ``reward`` run on :attr:`forward`, a float64 numpy copy refreshed after
    every round.

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
        reward_form: str = "neg_log_d",
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
        self.forward = DiscriminatorForward(self.in_dim, hidden, self.input_clip, reward_form)
        self.refresh_snapshot()

    # --- forward ---------------------------------------------------------------------------------
    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Running-mean/std normalization, clipped to ±input_clip (numpy rows: the training inputs)."""
        std = np.sqrt(np.asarray(self.normalizer.var, dtype=np.float64) + 1e-8)
        return np.clip((x - self.normalizer.mean) / std, -self.input_clip, self.input_clip)

    def refresh_snapshot(self) -> None:
        """Copy weights and normalizer statistics into :attr:`forward`, the numpy copy the hot path uses."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        self.forward.set(
            self.normalizer.mean, self.normalizer.var,
            [m.weight.detach().double().numpy() for m in linears],
            [m.bias.detach().double().numpy() for m in linears],
        )

    def logits(self, x: np.ndarray):
        """Logit of D for one row (returns a float) or for rows (returns an array), in numpy."""
        return self.forward.logits(x)

    def reward(self, x: np.ndarray):
        """D's reward term (:meth:`DiscriminatorForward.reward`, in the form given at construction)."""
        return self.forward.reward(x)

    # --- training --------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy (label 1: policy sample, 0: good sample) minus an entropy bonus.

        With as many rows of each class, ``2·mean BCE`` is GAIL's sum of the two class means. The
        Bernoulli entropy of D is the cross-entropy of its logits against their own sigmoid.
        """
        bce = 2.0 * F.binary_cross_entropy_with_logits(logits, labels)
        entropy = F.binary_cross_entropy_with_logits(logits, torch.sigmoid(logits))
        return bce - self.entropy_coef * entropy

    def train(
        self, policy_x: np.ndarray, good_x: np.ndarray, *, updates: int, batch_size: int,
        rng: np.random.Generator,
    ) -> dict[str, float]:
        """``updates`` Adam steps on minibatches of ``batch_size`` rows from each class; returns mean stats.

        All minibatches of the round are drawn first; the normalizer is updated once with all of them
        (the same statistics OpenAI's GAIL accumulates minibatch by minibatch) and frozen for the round.
        """
        stats = self.fit(self.draw(policy_x, good_x, updates=updates, batch_size=batch_size, rng=rng))
        self.refresh_snapshot()
        return stats

    @staticmethod
    def draw(policy_x: np.ndarray, good_x: np.ndarray, *, updates: int, batch_size: int,
             rng: np.random.Generator) -> np.ndarray:
        """A round's minibatches, ``(updates, 2·batch_size, dim)``: policy rows first, then good rows."""
        p = policy_x[rng.integers(len(policy_x), size=updates * batch_size)]
        g = good_x[rng.integers(len(good_x), size=updates * batch_size)]
        dim = p.shape[1]
        return np.concatenate([p.reshape(updates, batch_size, dim), g.reshape(updates, batch_size, dim)], 1)

    def fit(self, batches: np.ndarray) -> dict[str, float]:
        """Train on a round's minibatches from :meth:`draw`; :attr:`forward` is left as it was.

        Touches only the torch model, its optimizer and the normalizer, so it may run in another thread
        while :attr:`forward` serves rewards; :meth:`refresh_snapshot` then puts the new weights into effect.
        """
        updates, rows, dim = batches.shape
        half = rows // 2
        self.normalizer.update(batches.reshape(-1, dim))
        x = torch.as_tensor(self.normalize(batches), dtype=torch.float32)
        labels = torch.cat([torch.ones(half), torch.zeros(half)])
        losses, all_logits = [], []
        for i in range(updates):
            logits = self.net(x[i]).squeeze(-1)
            loss = self.loss(logits, labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach())
            all_logits.append(logits.detach())
        with torch.no_grad():
            logits = torch.stack(all_logits)
            stats = torch.stack([torch.stack(losses).mean(), (logits[:, :half] > 0).float().mean(),
                                 (logits[:, half:] < 0).float().mean()])
        loss, acc_policy, acc_good = stats.tolist()
        if not np.isfinite(loss):
            raise FloatingPointError(f"Discriminator: non-finite training loss {loss}")
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
        """Weights, Adam's moments and the normalizer come back; the learning rate stays this D's own (a
        resume, or a PBT exploit, may change ``d_lr``; torch's ``load_state_dict`` brings the saved one)."""
        self.net.load_state_dict(state["net"])
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        norm = state["normalizer"]
        self.normalizer.mean = norm["mean"].numpy().astype(np.float64)
        self.normalizer.var = norm["var"].numpy().astype(np.float64)
        self.normalizer.count = float(norm["count"])
        self.refresh_snapshot()
