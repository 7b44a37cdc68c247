"""RayGASILOwner: one GASIL owner in a named Ray actor, shared by env workers anywhere in the cluster.

- A **named Ray actor** (``gasil-owner-<group>`` in namespace ``gasil`` by default; detached or not)
  owns the one real :class:`~gasil_wrappers.GASILState`: buffer, recent policy samples, D with its
  optimizer and normalizer, counters, α schedule, rng. It records what workers ship with GASILState's
  own code (:meth:`~gasil_wrappers.GASILState.add_episode`,
  :meth:`~gasil_wrappers.GASILState.record_samples`), so D trains on its cadence (``d_every`` samples
  summed over all workers), and after every round it puts D's numpy snapshot
  (:meth:`DiscriminatorForward.dump`, float64) into the object store under a new version number.
- Every process that steps envs holds a :class:`RayGASILOwner` **handle**, with the interface the
  wrappers use on a GASILState (``attach``, ``seed_if_unset``, ``add_episode``, ``shaped_reward``,
  ``config``, ``ready``, ``diagnostics``, ``state_dict``, ``load_state_dict``, ...). It finds the actor by
  name (``ray.get_actor(name, namespace=...)``), computes −log D(s, a) locally with a
  :class:`~gasil_wrappers.discriminator.DiscriminatorForward` loaded from the newest weights it has,
  and ships policy samples in chunks and every finished episode with fire-and-forget ``.remote()``
  calls. The per-step path never waits on Ray: each chunk it looks (``ray.wait(timeout=0)``) at the
  replies of earlier shipments (the actor's version, rounds, sample count) and at a weights fetch in
  flight, and starts fetching newer weights when the version moved. It blocks only when more than
  ``max_inflight`` shipments are unanswered (back-pressure on an overloaded actor).
- The handle pickles to (config, actor name, namespace, cluster address): put it in env thunks, Ray
  task arguments, ``multiprocessing`` workers. A process not yet connected to Ray connects to the
  handle's cluster on first use (``ray.init(address=...)``).

Failures: if the actor dies or is killed (``ray.kill``), every worker's next chunk (at most
``chunk`` steps later) and every call from the driver raise :class:`GASILOwnerError` naming the actor.
A worker that dies loses only what it had not shipped (less than one chunk of samples; episodes are
shipped when they end): the actor keeps serving the others. :meth:`RayGASILOwner.close` on the handle
that started the actor kills it; a non-detached actor also ends with the Ray job that started it.

RLlib: see :mod:`gasil_wrappers.rllib` (a callback binds the envs of every env runner to the owner and
puts its diagnostics into the training results). Ray is imported when an owner is started or used,
not when this module is imported.

Example:
    >>> import gymnasium as gym, ray
    >>> from gasil_wrappers import GASILConfig, wrap_stack
    >>> _ = ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    >>> config = GASILConfig(gasil=True, d_every=64, seed=0, group="doc-ray")
    >>> owner = RayGASILOwner.start(config)
    >>> env = wrap_stack(gym.make("Pendulum-v1"), config, state=owner)
    >>> _ = env.reset(seed=1)
    >>> for _ in range(400):
    ...     _, reward, terminated, truncated, info = env.step([0.5])
    ...     if terminated or truncated:
    ...         _ = env.reset()
    >>> owner.diagnostics()["policy_steps"] >= 336, owner.ready
    (True, True)
    >>> owner.close(); ray.shutdown()
"""

from __future__ import annotations

import atexit
import collections
import os
import weakref

import gymnasium as gym
import numpy as np

from gasil_wrappers.config import GASILConfig
from gasil_wrappers.discriminator import DiscriminatorForward
from gasil_wrappers.reward import shaped_reward, term_sizes
from gasil_wrappers.state import GASILState, _flat_dim
from gasil_wrappers.topk import GoodTrajectoryBuffer

__all__ = ["DEFAULT_NAMESPACE", "GASILOwnerError", "RayGASILOwner", "actor_name", "bind_owner", "connect_for"]

DEFAULT_NAMESPACE = "gasil"
_ACTOR_PREFIX = "gasil-owner-"
_handles: weakref.WeakSet = weakref.WeakSet()


class GASILOwnerError(RuntimeError):
    """The Ray-backed GASIL owner is unusable: its actor died, was killed, or cannot be found."""


def actor_name(group: str) -> str:
    """The name of the owner actor of a GASILConfig ``group``."""
    return _ACTOR_PREFIX + group


def _box(n: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)


# --- the actor ----------------------------------------------------------------------------------------
class _OwnerActor:
    """Runs in the actor's process: one GASILState, fed by shipments, publishing D after every round."""

    def __init__(self, config: GASILConfig, name: str, keep_history: bool):
        self.config, self.name, self.keep_history = config, name, keep_history
        self.state = GASILState(config)
        self.version = 0  # publications (rounds and loads)
        self.weights_ref = None
        self.min_seed: int | None = None
        self.shippers: set = set()
        self.history: dict[int, dict] = {}

    def ping(self) -> dict:
        return {"config": self.config, "pid": os.getpid(), "name": self.name}

    def attach(self, obs_dim: int, act_dim: int):
        self.state.attach(_box(obs_dim), _box(act_dim))  # raises ValueError for another env's dims
        return self.status()

    def status(self):
        """(version, rounds, policy_steps, shippers, [weights ref]): what a worker needs each chunk."""
        return (self.version, self.state.rounds, self.state.policy_steps, len(self.shippers),
                [self.weights_ref])

    def ship(self, sender: str, items: list, seed: int | None, terms: tuple[float, float]):
        """Shipments from one worker, in that worker's order: ("s", rows) samples, ("e", o, a, r) episodes."""
        state = self.state
        if seed is not None:
            self.min_seed = seed if self.min_seed is None else min(self.min_seed, seed)
        state._terms[0] += terms[0]  # the GASIL term's share in diagnostics() (workers shape the rewards)
        state._terms[1] += terms[1]
        published = False
        for item in items:
            if item[0] == "e":
                state.add_episode(item[1], item[2], item[3])
                continue
            rows = item[1]
            self.shippers.add(sender)
            if state.rounds == 0 and self.min_seed is not None and \
                    state.policy_steps + len(rows) >= self.config.round_every:
                state.seed_if_unset(self.min_seed)  # before D's init: the smallest reset seed of any worker
            if state.record_samples(rows):
                published = True
        if published:
            self._publish()
        return self.status()

    def _publish(self) -> None:
        import ray

        d = self.state.discriminator
        flat = np.empty(DiscriminatorForward.size(d.in_dim, self.config.d_hidden))
        d.forward.dump(flat)
        self.version += 1
        self.weights_ref = ray.put(flat)
        if self.keep_history:
            import copy

            self.history[self.version] = {"rounds": self.state.rounds, "forward": flat,
                                          "discriminator": copy.deepcopy(d.state_dict())}

    def diagnostics(self) -> dict:
        return {**self.state.diagnostics(), "publications": self.version, "shippers": len(self.shippers)}

    def state_dict(self) -> dict:
        return self.state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state)
        if self.state.discriminator is not None:
            self._publish()

    def buffer(self) -> dict:
        return self.state.buffer.state_dict()

    def info(self) -> dict:
        return {"pid": os.getpid(), "name": self.name, "version": self.version,
                "rounds": self.state.rounds, "policy_steps": self.state.policy_steps,
                "shippers": sorted(self.shippers), "seed": self.state._seed}

    def history_(self) -> dict:
        return dict(self.history)


_remote_actor_cls = None


def _actor_cls():
    global _remote_actor_cls
    if _remote_actor_cls is None:
        import ray

        _remote_actor_cls = ray.remote(_OwnerActor)
    return _remote_actor_cls


# --- the handle ---------------------------------------------------------------------------------------
class RayGASILOwner:
    """Handle to the GASIL owner actor: GASILState's interface for the wrappers, in any process.

    Build one with :meth:`start` (creates the actor; this handle's :meth:`close` kills it) or
    :meth:`connect` (finds a running one by name). Pass it to ``wrap_stack(env, config, state=owner)``
    or bind existing stacks with :func:`bind_owner`. ``config`` is the actor's.

    Cadence: the actor records samples in arrival order (one worker's shipments stay in its order), so
    D trains whenever ``d_every`` samples summed over all workers have arrived since the last round;
    each worker scores with new weights from the chunk after they reach it. ``α(t)`` uses the actor's
    sample count plus this worker's unacknowledged samples times the number of shipping workers (an
    estimate; exact for the default constant α).
    """

    is_gasil_owner = True  # what gasil_wrappers.find_state looks for

    def __init__(self, config: GASILConfig, name: str, namespace: str, address: str | None = None, *,
                 chunk: int | None = None, max_inflight: int = 32):
        self.config = config
        self.name, self.namespace, self.address = name, namespace, address
        self.chunk = int(chunk) if chunk else max(1, min(128, config.round_every // 16))
        self.max_inflight = int(max_inflight)
        self._started_here = False
        self._closed = False
        self._spaces = None
        self._reset_client()
        _handles.add(self)

    # --- creation --------------------------------------------------------------------------------
    @classmethod
    def start(cls, config: GASILConfig, *, name: str | None = None, namespace: str = DEFAULT_NAMESPACE,
              detached: bool = False, num_cpus: float = 0, keep_history: bool = False,
              actor_options: dict | None = None, **handle_options) -> RayGASILOwner:
        """Create the owner actor (named ``actor_name(config.group)`` unless ``name``) and return its handle.

        Needs ``ray.init`` (or a Ray worker). ``detached``: the actor outlives this job (kill it with
        :meth:`close`). ``num_cpus``: what the actor reserves (0: it never blocks env runners from being
        scheduled; D's training is light). ``keep_history``: keep D after every publication, for tests.
        An actor of that name that is already running raises :class:`GASILOwnerError`.
        """
        import ray

        name = name or actor_name(config.group)
        options = {"name": name, "namespace": namespace, "num_cpus": num_cpus, "max_restarts": 0,
                   **({"lifetime": "detached"} if detached else {}), **(actor_options or {})}
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            pass
        else:
            raise GASILOwnerError(f"a GASIL owner actor {name!r} already runs in namespace {namespace!r}: "
                                  f"connect to it (RayGASILOwner.connect) or close it first")
        actor = _actor_cls().options(**options).remote(config, name, keep_history)
        ray.get(actor.ping.remote())  # raise here if it cannot start
        handle = cls(config, name, namespace, _cluster_address(), **handle_options)
        handle._started_here = True
        handle._actor = actor
        return handle

    @classmethod
    def connect(cls, group_or_config: str | GASILConfig = "default", *, name: str | None = None,
                namespace: str = DEFAULT_NAMESPACE, **handle_options) -> RayGASILOwner:
        """A handle to the running owner actor of a group (or a config's group); its config is the actor's."""
        import ray

        group = group_or_config.group if isinstance(group_or_config, GASILConfig) else group_or_config
        name = name or actor_name(group)
        _ensure_ray(None, namespace)
        actor = _lookup(name, namespace)
        try:
            config = ray.get(actor.ping.remote())["config"]
        except Exception as e:
            raise _dead(name, namespace, e) from None
        handle = cls(config, name, namespace, _cluster_address(), **handle_options)
        handle._actor = actor
        return handle

    @classmethod
    def for_env_id(cls, env_id: str, **settings) -> GASILConfig:
        """The GASILConfig a registered ``gasil_wrappers:`` id builds with ``settings`` (for ``start``)."""
        import gasil_wrappers  # noqa: F401  (registers the ids)

        kwargs = dict(gym.spec(env_id.rpartition(":")[2]).kwargs)
        kwargs.pop("base_id", None)
        return GASILConfig(**{**kwargs, **settings})

    # --- pickling: a client of the same actor ----------------------------------------------------
    def __reduce__(self):
        return _rebuild, (self.config, self.name, self.namespace, self.address, self.chunk, self.max_inflight)

    def __deepcopy__(self, memo):
        return self  # a shared service, like GASILState

    def __repr__(self) -> str:
        role = "owner" if self._started_here else "client"
        return f"RayGASILOwner({role}, actor {self.name!r}, namespace {self.namespace!r})"

    # --- client plumbing ---------------------------------------------------------------------------
    def _reset_client(self) -> None:
        """Forget this process's connection and unshipped samples (a new process)."""
        self._pid = os.getpid()
        self._actor = None
        self._sender = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        self._dims: tuple[int, int] | None = None
        self._snap: DiscriminatorForward | None = None
        self._pending: np.ndarray | None = None
        self._n_pending = 0
        self._items: list = []
        self._terms = [0.0, 0.0]
        self._seed_offer: int | None = None
        self._seed_sent: int | None = None
        self._inflight: collections.deque = collections.deque()  # (ref, samples in it)
        self._unacked = 0  # samples shipped whose reply has not been seen
        self._version = 0  # publications this process scores with
        self._seen = (0, 0, 0, 0)  # (version, rounds, policy_steps, shippers) of the last reply seen
        self._weights_rounds = 0
        self._fetch = None  # (version, rounds, ref) of weights being fetched
        self._error: GASILOwnerError | None = None
        self._exit_hook = None

    def _handle(self):
        """The actor handle in this process (connecting to Ray and looking it up the first time)."""
        if self._pid != os.getpid():  # a forked child: nothing of the parent's connection is usable
            self._reset_client()
        if self._error is not None:
            raise self._error
        if self._closed:
            raise GASILOwnerError(f"this handle of the GASIL owner actor {self.name!r} is closed")
        if self._actor is None:
            _ensure_ray(self.address, self.namespace)
            self._actor = _lookup(self.name, self.namespace)
        if self._exit_hook is None:
            self._exit_hook = _ExitFlush(self)
        return self._actor

    def _fail(self, cause) -> GASILOwnerError:
        self._error = _dead(self.name, self.namespace, cause)
        return self._error

    def _get(self, ref, timeout: float | None = 120.0):
        import ray

        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise GASILOwnerError(f"the GASIL owner actor {self.name!r} (namespace {self.namespace!r}) did "
                                  f"not answer within {timeout} s") from None
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as e:
            raise self._fail(e) from None

    def _call(self, method: str, *args):
        self._flush(poll=False)
        return self._get(getattr(self._handle(), method).remote(*args))

    def _flush(self, poll: bool = True) -> None:
        """Ship the samples and episodes queued in this process (fire and forget), then poll."""
        samples = self._n_pending
        if samples:
            self._items.append(("s", self._pending[:samples].copy()))
            self._n_pending = 0
        if self._items or self._seed_offer is not None:
            self._ship(samples)
        if poll:
            self._poll()

    def _ship(self, samples: int) -> None:
        actor = self._handle()
        seed, self._seed_offer = self._seed_offer, None
        ref = actor.ship.remote(self._sender, self._items, seed, tuple(self._terms))
        self._items, self._terms = [], [0.0, 0.0]
        self._inflight.append((ref, samples))
        self._unacked += samples

    def _poll(self) -> None:
        """Take the replies that arrived (never waiting, unless too many are unanswered) and new weights."""
        import ray

        inflight = self._inflight
        while inflight:
            ref, samples = inflight[0]
            if len(inflight) <= self.max_inflight:
                ready, _ = ray.wait([ref], timeout=0, fetch_local=True)
                if not ready:
                    break
            inflight.popleft()
            self._unacked -= samples
            self._take(self._get(ref))
        fetch = self._fetch
        if fetch is not None:
            ready, _ = ray.wait([fetch[2]], timeout=0, fetch_local=True)
            if ready:
                self._fetch = None
                self._snap.load(self._get(fetch[2]))
                self._version, self._weights_rounds = fetch[0], fetch[1]

    def _take(self, status) -> None:
        version, rounds, steps, shippers, (weights,) = status
        if version > self._seen[0] and weights is not None:
            self._fetch = (version, rounds, weights)  # the newest; an older fetch in flight is dropped
        self._seen = (max(version, self._seen[0]), rounds, steps, shippers)

    def flush(self, wait: bool = False) -> None:
        """Ship what this process holds now; with ``wait``, also wait for the replies and newest weights."""
        self._flush(poll=not wait)
        if wait:
            while self._inflight:
                ref, samples = self._inflight.popleft()
                self._unacked -= samples
                self._take(self._get(ref))
            if self._fetch is not None:
                fetch, self._fetch = self._fetch, None
                self._snap.load(self._get(fetch[2]))
                self._version, self._weights_rounds = fetch[0], fetch[1]

    # --- GASILState's interface ------------------------------------------------------------------
    def attach(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Called by each wrapper that uses this owner; fixes (and checks) the input dimensions."""
        dims = (_flat_dim(observation_space, "observation"), _flat_dim(action_space, "action"))
        if self._pid != os.getpid():
            self._reset_client()
        if dims == self._dims:
            return
        self._spaces = (observation_space, action_space)
        try:
            status = self._get(self._handle().attach.remote(*dims))
        except Exception as e:
            import ray

            if isinstance(e, ray.exceptions.RayTaskError) and isinstance(e.cause, ValueError):
                raise ValueError(str(e.cause)) from None
            raise
        if self._snap is None:
            c = self.config
            self._snap = DiscriminatorForward(sum(dims), c.d_hidden, c.d_input_clip, c.d_reward_form)
            self._pending = np.empty((self.chunk, sum(dims)))
        self._dims = dims
        self._take(status)
        if self._fetch is not None:  # weights published before this process attached
            self.flush(wait=True)

    def seed_if_unset(self, seed: int | None) -> None:
        """Offer a reset seed; the actor seeds D with the smallest one offered before its first round."""
        if seed is not None and (self._seed_sent is None or seed < self._seed_sent):
            self._seed_sent = self._seed_offer = int(seed)

    def add_episode(self, obs, actions, rewards) -> None:
        """Ship a finished episode to the actor's buffer now (after this process's queued samples).

        Returns None: whether the buffer keeps it is decided in the actor.
        """
        samples = self._n_pending
        if samples:  # the samples before the episode's end go first, as in the per-env stack
            self._items.append(("s", self._pending[:samples].copy()))
            self._n_pending = 0
        self._items.append(("e", np.array(obs), np.array(actions), np.array(rewards, dtype=np.float64)))
        self._ship(samples)
        self._poll()

    def shaped_reward(self, obs, action, env_reward: float) -> tuple[float, float, float]:
        """Queue (s, a) as a policy sample and return (shaped reward, −log D(s,a), α) with the newest D."""
        if self._pid != os.getpid():  # a wrapper built before a fork steps in the child: attach again
            self._reset_client()
            self.attach(*self._spaces)
        n = self._n_pending
        row = self._pending[n]
        od = self._dims[0]
        row[:od] = obs
        row[od:] = action
        if self._weights_rounds:
            d_reward = self._snap.reward(row)
            _, _, steps, shippers = self._seen
            alpha = self.alpha_at(steps + (self._unacked + n) * max(1, shippers))
            w = self.config.env_reward_weight
            env_part, term = term_sizes(env_reward, d_reward, alpha, w)
            self._terms[0] += env_part
            self._terms[1] += term
            shaped = shaped_reward(env_reward, d_reward, alpha, True, w)
        else:
            d_reward, alpha, shaped = 0.0, 0.0, env_reward
        self._n_pending = n + 1
        if n + 1 == self.chunk:
            self._flush()
        return shaped, d_reward, alpha

    alpha_at = GASILState.alpha_at

    @property
    def version(self) -> int:
        """Publications of D behind the weights this process scores with now (0: untrained)."""
        return self._version

    def info(self) -> dict:
        """The actor's pid, name, publication version, rounds, policy steps, shipping workers, seed."""
        return self._call("info")

    @property
    def ready(self) -> bool:
        """Whether D has trained at least once (asks the actor)."""
        return self.info()["rounds"] > 0

    @property
    def rounds(self) -> int:
        return self.info()["rounds"]

    @property
    def policy_steps(self) -> int:
        """Policy samples the actor has received (all workers; unshipped ones are not counted)."""
        return self.info()["policy_steps"]

    @property
    def buffer(self) -> GoodTrajectoryBuffer:
        """A copy of the actor's good-trajectory buffer, as it is now."""
        buf = GoodTrajectoryBuffer(self.config.buffer_steps, self.config.gamma)
        buf.load_state_dict(self._call("buffer"))
        return buf

    def discriminator_reward(self, obs, action) -> np.ndarray:
        """−log D(s, a) for rows of observations and actions with the newest D this process has."""
        self.flush(wait=True)
        if not self._weights_rounds:
            raise RuntimeError("GASILState: the discriminator has not trained yet")
        return self._snap.reward(np.concatenate([obs, action], axis=1))

    def diagnostics(self) -> dict[str, float]:
        """The actor's :meth:`GASILState.diagnostics` (after shipping this process's samples), plus
        ``publications`` (D versions published) and ``shippers`` (processes that shipped samples)."""
        return self._call("diagnostics")

    def state_dict(self) -> dict:
        """The actor's :meth:`GASILState.state_dict` (without what other workers have not shipped yet)."""
        return self._call("state_dict")

    def load_state_dict(self, state: dict) -> None:
        """Load into the actor's GASILState and publish its D to every worker."""
        try:
            self._call("load_state_dict", state)
        except Exception as e:
            import ray

            if isinstance(e, ray.exceptions.RayTaskError) and isinstance(e.cause, ValueError):
                raise ValueError(str(e.cause)) from None
            raise

    def published_discriminators(self) -> dict[int, dict]:
        """Versions → D as published (needs ``start(..., keep_history=True)``)."""
        return self._call("history_")

    def check(self) -> None:
        """Raise :class:`GASILOwnerError` if the actor is gone."""
        self._call("info")

    def close(self) -> None:
        """Ship what is left; on the handle that started the actor, also kill it."""
        if self._closed:
            return
        try:
            if self._actor is not None and self._error is None:
                self.flush(wait=False)
        except GASILOwnerError:
            pass
        if self._started_here and self._pid == os.getpid():
            import ray

            try:
                ray.kill(self._actor, no_restart=True)
            except Exception:  # already gone
                pass
        self._closed = True

    def __enter__(self) -> RayGASILOwner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rebuild(config, name, namespace, address, chunk, max_inflight) -> RayGASILOwner:
    return RayGASILOwner(config, name, namespace, address, chunk=chunk, max_inflight=max_inflight)


class _ExitFlush:
    """Ship a handle's unshipped samples when this process exits normally (best effort)."""

    def __init__(self, handle: RayGASILOwner):
        ref = weakref.ref(handle)

        def flush():
            h = ref()
            if h is not None and not h._closed and h._error is None and h._pid == os.getpid():
                try:
                    h._flush(poll=False)
                except Exception:
                    pass

        atexit.register(flush)


def _cluster_address() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return None


_fork_inherited = {"ray": False}


def _after_fork_in_child() -> None:
    import sys

    ray = sys.modules.get("ray")
    _fork_inherited["ray"] = ray is not None and ray.is_initialized()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _ensure_ray(address: str | None, namespace: str) -> None:
    """Connect this process to Ray if it is not (a multiprocessing worker, a fresh script)."""
    import ray

    if _fork_inherited["ray"]:
        # The child inherited the parent's Ray client state without its threads and gRPC channels: Ray
        # cannot be used here, and ray.shutdown() aborts (GcsSubscriber::Close on a dead channel).
        raise GASILOwnerError(
            f"process {os.getpid()} was forked from a process connected to Ray, which Ray does not support: "
            "start env workers with the 'spawn' or 'forkserver' start method, fork them before ray.init(), "
            "or make them Ray tasks/actors")
    if not ray.is_initialized():
        ray.init(address=address or "auto", namespace=namespace, log_to_driver=False,
                 configure_logging=False)


def _lookup(name: str, namespace: str):
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise GASILOwnerError(
            f"no GASIL owner actor {name!r} in Ray namespace {namespace!r} (pid {os.getpid()}): start one on "
            f"the driver with RayGASILOwner.start(config) before the env workers step, or it was killed"
        ) from None


def _dead(name: str, namespace: str, cause) -> GASILOwnerError:
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return GASILOwnerError(f"the GASIL owner actor {name!r} (namespace {namespace!r}) died or was killed; "
                           f"this process (pid {os.getpid()}) cannot use it: {type(cause).__name__}: {first}")


def bind_owner(env, owner: RayGASILOwner | None = None, *, namespace: str = DEFAULT_NAMESPACE) -> int:
    """Make every GASIL wrapper in ``env`` (an env or a sync vector env) use a Ray owner; returns how many.

    For stacks already built with an in-process owner (e.g. by ``gym.make("gasil_wrappers:...")`` inside
    an RLlib env runner): each ``TopKEpisodeRecorder`` / ``DiscriminatorRewardWrapper`` whose owner is a
    :class:`~gasil_wrappers.GASILState` that has not stepped is switched to ``owner`` (default: the
    actor of its config's group, :meth:`RayGASILOwner.connect`). Its config must match the actor's in
    every field but ``seed``.
    """
    from gasil_wrappers._owner_wrapper import OwnerWrapper

    envs = getattr(env, "envs", None) or [env]
    bound = 0
    for sub in envs:
        e = sub
        while e is not None:
            state = vars(e).get("state")
            if isinstance(e, OwnerWrapper) and isinstance(state, GASILState):
                if state.policy_steps or len(state.buffer):
                    raise ValueError(f"bind_owner: the in-process GASIL owner of {e} has already been used")
                handle = owner if owner is not None else \
                    RayGASILOwner.connect(state.config, namespace=namespace)
                _check_same(state.config, handle)
                e.state = handle
                handle.attach(e.env.observation_space, e.env.action_space)
                bound += 1
            e = getattr(e, "env", None)
    return bound


def connect_for(config: GASILConfig, *, namespace: str = DEFAULT_NAMESPACE) -> RayGASILOwner:
    """A handle to the running owner actor of ``config.group``, whose config must match ``config``
    (all fields but ``seed`` and ``backend``); what ``wrap_stack`` uses for ``backend="ray"``."""
    handle = RayGASILOwner.connect(config, namespace=namespace)
    _check_same(config, handle)
    return handle


def _check_same(mine: GASILConfig, owner: RayGASILOwner) -> None:
    import dataclasses

    theirs = owner.config
    diff = [f.name for f in dataclasses.fields(mine)
            if f.name not in ("seed", "backend") and getattr(mine, f.name) != getattr(theirs, f.name)]
    if diff:
        detail = ", ".join(f"{k}: env {getattr(mine, k)!r}, owner {getattr(theirs, k)!r}" for k in diff)
        raise ValueError(f"bind_owner: the env's GASILConfig differs from the owner actor {owner.name!r}'s "
                         f"({detail}); start the owner with the env's config (RayGASILOwner.for_env_id)")

