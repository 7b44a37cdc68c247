"""The 2D point-mass collection task of GASIL (Guo et al., NeurIPS 2018, Section 5.2) as a Gymnasium env.

The paper describes the task only in words: continuous actions set the agent's velocity in 2D, blue
objects give +5, green objects +10, orange distractors -5 and sit near the green objects, and there is an
actuation cost proportional to the L2 norm of the action. Its finding is that PPO settles early on a
policy collecting one nearby green object, while PPO+GASIL goes on to find a policy collecting two.

The exact layout is not published, so :class:`PointMassEnv` fixes one in which that phenomenon can occur:
each green object sits in a pocket that is open towards the start but shielded by two orange distractors
on the side facing the other green, so that going on from the first green to the second costs either a
distractor hit or a detour around the shield, and "one green, then stand still" is an easy local optimum.
See the class docstring for the layout, the reward accounting and reference returns.

Only numpy is used (also for ``render_mode="rgb_array"``), and the step path is kept lean because the env
is used for multi-million-step training runs.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

__all__ = ["PointMassEnv", "PointMassObject"]


class PointMassObject(NamedTuple):
    """One collectible object of the fixed layout (for figure code)."""

    x: float
    y: float
    kind: str
    """``"blue"``, ``"green"`` or ``"orange"``"""
    reward: float


class PointMassEnv(gym.Env, EzPickle):
    """2D point mass collecting blue (+5) and green (+10) objects while avoiding orange ones (-5).

    Layout (arena ``[-1, 1]^2``; ``A`` the agent's start, ``B`` blue, ``G`` green, ``O`` orange)::

           y
        1.00 +---------------------------------------+
             |                                       |
        0.72 |            O4            O6           |   O4 (-0.35, 0.72)   O6 (0.35, 0.72)
        0.62 |        G2  |             |   G3       |   G2 (-0.60, 0.62)   G3 (0.60, 0.62)
        0.52 |            O5            O7           |   O5 (-0.35, 0.52)   O7 (0.35, 0.52)
             |                                       |
             |                                       |
       -0.35 |            B0            B1           |   B0 (-0.35, -0.35)  B1 (0.35, -0.35)
             |                                       |
       -0.80 |                   A                   |   A  (0.00, -0.80) + U(+-0.15, +-0.05)
       -1.00 +---------------------------------------+
           -1.0                 0.0                 1.0   x

    The two oranges next to each green touch each other (centres 0.2 apart, collection radius 0.1), so
    they form a shield covering ``y in [0.42, 0.82]`` at ``x = -+0.35`` (the ``|`` in the sketch). A green
    is reached without a hit straight from the start (its pocket opens downwards and outwards), but the
    straight line from one green to the other crosses both shields (-10). Going on to the second green
    takes a detour below the shields (``y < 0.42``) or above them (``y > 0.82``). Which green is nearer
    depends on the sign of the seeded start offset, as in the paper's "one green object depending on
    initial positions".

    Dynamics and reward:

    * action ``a`` in ``[-1, 1]^2`` (out-of-box actions are clipped per component); the agent moves by
      ``max_speed * a`` per step and its position is clipped to the arena.
    * An object is collected when the segment the agent sweeps in the step comes within
      ``collect_radius`` (distance ``<=``) of its centre, so fast moves cannot tunnel through an object.
      Every object touched in a step is collected in that step. A collected object gives its reward once
      and disappears (its "present" flag in the observation drops to 0).
    * Reward per step: rewards of the objects collected in the step minus ``action_cost * ||a||_2``
      (norm of the clipped action). With the defaults a unit of travelled distance costs
      ``action_cost / max_speed = 1.0`` whatever the speed, so a route of length ``L`` collecting objects
      worth ``V`` returns exactly ``V - L``; a blue object is worth a detour of up to 5, a green of up
      to 10. Pushing against a wall pays the cost without moving.
    * Episodes always last ``max_steps`` steps: the last step returns ``truncated=True``;
      ``terminated`` is always ``False`` (nothing ends the task early). Stepping on after that, or
      before the first ``reset``, raises ``RuntimeError``.

    Observation (float32, ``3 + 3 * 8 = 27`` entries)::

        [0:2]            agent position (x, y)                            in [-1, 1]
        [2]              fraction of the episode elapsed, t / max_steps   in [0, 1]
        [3+3i : 5+3i]    object i's position minus the agent's (dx, dy)   in [-2, 2]
        [5+3i]           1.0 while object i is present, 0.0 once taken

    with objects in the order of :data:`OBJECT_KINDS`: ``B0 B1 G2 G3 O4 O5 O6 O7`` (the sketch's labels
    are the indices).

    Reference returns with the defaults from the nominal start ``(0, -0.8)`` (``reset(options={"start":
    (0.0, -0.8)})``), by waypoint-following scripts moving at full speed (checked in
    ``tests/test_point_mass.py``; a seeded start changes them by at most about 0.15):

    ========  =====================================================================================
    return    route
    ========  =====================================================================================
    26.92     best known: B0 -> B1 -> G3 -> below the shield -> G2 (all four positives, no orange;
              length 3.075, i.e. 31 of the 100 steps). The shortest such route found numerically is
              3.055 long, so the best achievable return is about 26.9.
    26.80     the same, passing above the shield instead
    17.38     both greens only: G2 -> below the shield -> G3
    13.55     one green with the blue on the way: B0 -> G2, then stand still
    8.50      "nearest green, then stop": straight at G2's centre (collected on step 15), then zero
              actions; the kind of early optimum the paper reports for PPO
    7.40      nearest green, then straight at the other green through both oranges: a greedy
              continuation loses against stopping, which is what makes one green a local optimum
    ========  =====================================================================================

    Args:
        max_steps: episode length; the ``max_steps``-th step is truncated.
        action_cost: coefficient of the actuation cost ``action_cost * ||a||_2`` per step.
        max_speed: distance moved per step by the action ``(1, 0)``.
        collect_radius: an object is collected within this distance of the agent's swept segment.
        render_mode: ``None`` or ``"rgb_array"`` (pure-numpy ``render_size x render_size x 3`` uint8
            picture of the remaining objects, the agent and its trail in this episode).
        render_size: side of the rendered picture in pixels.

    Example:
        >>> env = PointMassEnv()
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((27,), dtype('float32'))
        >>> [round(float(v), 3) for v in obs[:2]]  # start (0, -0.8) plus the seed's offset
        [0.041, -0.823]
        >>> obs, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], dtype=np.float32))
        >>> round(float(reward), 6), terminated, truncated
        (-0.1, False, False)
        >>> [o.kind for o in PointMassEnv.objects()][:4]
        ['blue', 'blue', 'green', 'green']
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}

    #: Lower and upper bound of the square arena, the same on both axes.
    ARENA: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    #: Nominal start; ``reset`` adds ``uniform(-START_NOISE, START_NOISE)`` per axis.
    START: ClassVar[tuple[float, float]] = (0.0, -0.8)
    START_NOISE: ClassVar[tuple[float, float]] = (0.15, 0.05)
    #: Reward of each object kind.
    KIND_REWARDS: ClassVar[dict[str, float]] = {"blue": 5.0, "green": 10.0, "orange": -5.0}
    #: RGB colours used by :meth:`render`, also handy for figure code.
    KIND_COLORS: ClassVar[dict[str, tuple[int, int, int]]] = {
        "blue": (31, 119, 180),
        "green": (44, 160, 44),
        "orange": (255, 127, 14),
    }
    #: The fixed layout: object i is at ``OBJECT_POSITIONS[i]`` and of kind ``OBJECT_KINDS[i]``.
    OBJECT_KINDS: ClassVar[tuple[str, ...]] = ("blue",) * 2 + ("green",) * 2 + ("orange",) * 4
    OBJECT_POSITIONS: ClassVar[np.ndarray] = np.array(
        [
            [-0.35, -0.35],
            [0.35, -0.35],
            [-0.60, 0.62],
            [0.60, 0.62],
            [-0.35, 0.72],
            [-0.35, 0.52],
            [0.35, 0.72],
            [0.35, 0.52],
        ]
    )
    OBJECT_POSITIONS.setflags(write=False)

    def __init__(
        self,
        max_steps: int = 100,
        action_cost: float = 0.1,
        max_speed: float = 0.1,
        collect_radius: float = 0.1,
        render_mode: str | None = None,
        render_size: int = 256,
    ):
        EzPickle.__init__(self, max_steps, action_cost, max_speed, collect_radius, render_mode, render_size)
        name = type(self).__name__
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ValueError(f"{name}: max_steps must be a positive integer, got {max_steps!r}")
        for key, value in (("max_speed", max_speed), ("collect_radius", collect_radius)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: {key} must be a positive finite number, got {value!r}")
        if not (math.isfinite(action_cost) and action_cost >= 0):
            raise ValueError(f"{name}: action_cost must be a non-negative finite number, got {action_cost!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = self.metadata["render_modes"]
            raise ValueError(f"{name}: render_mode must be None or one of {modes}, got {render_mode!r}")
        if int(render_size) < 16:
            raise ValueError(f"{name}: render_size must be at least 16 pixels, got {render_size!r}")

        self.max_steps = int(max_steps)
        self.action_cost = float(action_cost)
        self.max_speed = float(max_speed)
        self.collect_radius = float(collect_radius)
        self.render_mode = render_mode
        self.render_size = int(render_size)

        n = len(self.OBJECT_KINDS)
        low, high = self.ARENA
        span = high - low
        obs_low = np.concatenate([[low, low, 0.0], np.tile([-span, -span, 0.0], n)]).astype(np.float32)
        obs_high = np.concatenate([[high, high, 1.0], np.tile([span, span, 1.0], n)]).astype(np.float32)
        self.observation_space = spaces.Box(obs_low, obs_high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

        # Per-object constants for the hot path.
        self._ox = self.OBJECT_POSITIONS[:, 0].copy()
        self._oy = self.OBJECT_POSITIONS[:, 1].copy()
        self._rewards = np.array([self.KIND_REWARDS[k] for k in self.OBJECT_KINDS])
        self._kind_index = np.array([("blue", "green", "orange").index(k) for k in self.OBJECT_KINDS])
        self._r2 = self.collect_radius**2

        # Episode state; _present is None until the first reset.
        self._x = 0.0
        self._y = 0.0
        self._t = 0
        self._present: np.ndarray | None = None
        self._counts = [0, 0, 0]  # collected blue, green, orange this episode
        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        self._trail: list[tuple[float, float]] = []
        self._pixel_centres: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------------
    # layout helpers for figure code

    @classmethod
    def objects(cls) -> tuple[PointMassObject, ...]:
        """The fixed layout: position, kind and reward of every object, in observation order."""
        return tuple(
            PointMassObject(float(x), float(y), kind, cls.KIND_REWARDS[kind])
            for (x, y), kind in zip(cls.OBJECT_POSITIONS, cls.OBJECT_KINDS, strict=True)
        )

    @property
    def agent_position(self) -> np.ndarray:
        """Current agent position ``(x, y)`` (a copy)."""
        return np.array([self._x, self._y])

    @property
    def present(self) -> np.ndarray:
        """Boolean mask of the objects not collected yet in this episode (a copy)."""
        if self._present is None:
            return np.ones(len(self.OBJECT_KINDS), dtype=bool)
        return self._present.copy()

    def state_dict(self) -> dict:
        """The episode in progress: ``position`` (x, y), ``step``, ``present`` (objects not collected
        yet; None before the first reset), ``counts`` (blue, green, orange collected) and ``trail``
        (positions visited, for rendering). The random generator is saved by
        :func:`gasil_wrappers.persistence.env_state_dict` with every base env's."""
        present = None if self._present is None else self._present.copy()
        return {"position": (self._x, self._y), "step": self._t, "present": present,
                "counts": list(self._counts), "trail": [tuple(p) for p in self._trail]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        present = state["present"]
        if present is not None:
            present = np.array(present, dtype=bool)
            if present.shape != (len(self.OBJECT_KINDS),):
                raise ValueError(f"{type(self).__name__}: {present.shape[0]} objects saved, the layout "
                                 f"has {len(self.OBJECT_KINDS)}")
        self._x, self._y = (float(v) for v in state["position"])
        self._t = int(state["step"])
        self._present = present
        self._counts = [int(c) for c in state["counts"]]
        self._trail = [(float(x), float(y)) for x, y in state["trail"]]
        if present is not None:
            self._obs[5::3] = present

    # ------------------------------------------------------------------------------------------------
    # gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode at ``START`` plus seeded uniform noise, all objects present.

        ``options={"start": (x, y)}`` places the agent exactly at ``(x, y)`` instead (tests, figures).
        """
        super().reset(seed=seed)
        name = type(self).__name__
        start = None if options is None else options.get("start")
        if start is None:
            noise = self.np_random.uniform(-1.0, 1.0, size=2) * np.asarray(self.START_NOISE)
            x, y = self.START[0] + noise[0], self.START[1] + noise[1]
        else:
            try:
                x, y = (float(v) for v in np.asarray(start, dtype=np.float64).reshape(2))
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name}: options['start'] must be an (x, y) pair, got {start!r}") from err
            low, high = self.ARENA
            if not (low <= x <= high and low <= y <= high):
                raise ValueError(f"{name}: options['start'] {start!r} lies outside the arena {self.ARENA}")
        self._x, self._y = float(x), float(y)
        self._t = 0
        self._present = np.ones(len(self.OBJECT_KINDS), dtype=bool)
        self._counts = [0, 0, 0]
        if self.render_mode is not None:
            self._trail = [(self._x, self._y)]
        self._obs[5::3] = 1.0
        return self._observe(), self._info()

    def step(self, action):
        """Move by ``max_speed * clip(action)``, collect touched objects, pay the actuation cost."""
        if self._present is None:
            raise RuntimeError(f"{type(self).__name__}: step() called before reset()")
        if self._t >= self.max_steps:
            raise RuntimeError(
                f"{type(self).__name__}: step() called after the episode ended (max_steps="
                f"{self.max_steps}); call reset()"
            )
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{type(self).__name__}: action must be 2 numbers, got {action!r}") from err
        if a.shape != (2,):
            raise ValueError(f"{type(self).__name__}: action must have shape (2,), got shape {a.shape}")
        ax, ay = float(a[0]), float(a[1])
        if not (math.isfinite(ax) and math.isfinite(ay)):
            raise ValueError(f"{type(self).__name__}: action must be finite, got {action!r}")
        ax = -1.0 if ax < -1.0 else (1.0 if ax > 1.0 else ax)
        ay = -1.0 if ay < -1.0 else (1.0 if ay > 1.0 else ay)

        low, high = self.ARENA
        x0, y0 = self._x, self._y
        x1 = min(max(x0 + self.max_speed * ax, low), high)
        y1 = min(max(y0 + self.max_speed * ay, low), high)
        self._x, self._y = x1, y1

        # Swept collection: squared distance from each object centre to the segment (x0,y0)-(x1,y1).
        dx, dy = x1 - x0, y1 - y0
        rx, ry = self._ox - x0, self._oy - y0
        dd = dx * dx + dy * dy
        if dd > 0.0:
            s = np.clip((rx * dx + ry * dy) / dd, 0.0, 1.0)
            rx = rx - s * dx
            ry = ry - s * dy
        hit = (rx * rx + ry * ry <= self._r2) & self._present
        object_reward = 0.0
        if hit.any():
            object_reward = float(self._rewards[hit].sum())
            self._present[hit] = False
            self._obs[5::3][hit] = 0.0
            for k in self._kind_index[hit]:
                self._counts[k] += 1

        cost = self.action_cost * math.hypot(ax, ay)
        self._t += 1
        if self.render_mode is not None:
            self._trail.append((x1, y1))
        info = self._info()
        info["object_reward"] = object_reward
        info["actuation_cost"] = cost
        return self._observe(), object_reward - cost, False, self._t >= self.max_steps, info

    def render(self):
        """``render_size x render_size x 3`` uint8 picture (``rgb_array``), or ``None`` without a mode."""
        if self.render_mode is None:
            gym.logger.warn(
                f"{type(self).__name__}.render() called without a render_mode; "
                'pass render_mode="rgb_array" to the constructor.'
            )
            return None
        size = self.render_size
        low, high = self.ARENA
        if self._pixel_centres is None:
            # world coordinate of each pixel column / row centre (row 0 is the top, y = high)
            c = low + (np.arange(size) + 0.5) * (high - low) / size
            self._pixel_centres = c
        c = self._pixel_centres
        img = np.full((size, size, 3), 245, dtype=np.uint8)
        px = (high - low) / size  # world units per pixel

        def disc(cx: float, cy: float, radius: float, color) -> None:
            mask = (c[None, :] - cx) ** 2 + (c[::-1, None] - cy) ** 2 <= radius * radius
            img[mask] = color

        present = self.present
        for i, kind in enumerate(self.OBJECT_KINDS):
            if present[i]:
                disc(self._ox[i], self._oy[i], self.collect_radius, self.KIND_COLORS[kind])

        if len(self._trail) > 1:
            pts = np.asarray(self._trail)
            seg = pts[1:] - pts[:-1]
            n = math.ceil(self.max_speed * math.sqrt(2.0) / px) + 2
            s = np.linspace(0.0, 1.0, n)
            samples = (pts[:-1, None, :] + s[None, :, None] * seg[:, None, :]).reshape(-1, 2)
            cols = np.clip(((samples[:, 0] - low) / px).astype(int), 0, size - 1)
            rows = np.clip(((high - samples[:, 1]) / px).astype(int), 0, size - 1)
            for dr in (0, 1):
                for dc in (0, 1):
                    img[np.minimum(rows + dr, size - 1), np.minimum(cols + dc, size - 1)] = (110, 110, 110)

        if self._present is not None:
            disc(self._x, self._y, 0.04, (20, 20, 20))
        return img

    # ------------------------------------------------------------------------------------------------

    def _observe(self) -> np.ndarray:
        obs = self._obs
        obs[0] = self._x
        obs[1] = self._y
        obs[2] = self._t / self.max_steps
        obs[3::3] = self._ox - self._x
        obs[4::3] = self._oy - self._y
        return obs.copy()

    def _info(self) -> dict[str, Any]:
        b, g, o = self._counts
        return {"n_blue": b, "n_green": g, "n_orange": o, "object_reward": 0.0, "actuation_cost": 0.0}
