"""Save and restore a whole env (wrapper chain, simulator, GASIL owner) as explicit, versioned state.

- :func:`env_state_dict` / :func:`load_env_state_dict`: one env, walked from the outermost wrapper to
  the base env.
- :func:`vector_env_state_dict` / :func:`load_vector_env_state_dict`: every sub-env of a
  ``SyncVectorEnv``, with the GASIL owners they share saved once.
- :func:`save_env_state` / :func:`load_env_state`: the same to and from a file (atomic write).
- :func:`register_state_handler` / :func:`register_stateless`: teach it a wrapper or env of your own.

Each layer's state is a dict under public, documented keys, never a copy of the object's attributes:
our wrappers and :class:`~gasil_wrappers.envs.point_mass.PointMassEnv` say what is state in their own
``state_dict()`` / ``load_state_dict()``; the gymnasium wrappers the scripts use and MuJoCo envs have
handlers here, keyed by class. What construction rebuilds (spaces, settings, callables, caches) is
left out, so renaming a private attribute, or a gymnasium release that moves one, does not break
loading. The result holds only plain data (dicts, lists, numbers, strings, numpy arrays, torch
tensors); :func:`load_env_state` reads files with ``torch.load(weights_only=True)`` and loads nothing
else.

Errors are ``ValueError`` naming the layer: a chain of other wrapper classes or order, a layer whose
saved keys differ from what this code saves, a malformed value, a file that is not an env state. A
layer that holds state but has neither a ``state_dict()`` nor a handler raises too: nothing is skipped
silently.

Example:
    >>> import gymnasium as gym
    >>> from gasil_wrappers import DelayedReward
    >>> env = DelayedReward(gym.make("Pendulum-v1"), delay=3)
    >>> _ = env.reset(seed=123)
    >>> _ = env.step([0.5])
    >>> saved = env_state_dict(env)
    >>> later = [env.step([0.5])[1] for _ in range(3)]
    >>> load_env_state_dict(env, saved)
    >>> [env.step([0.5])[1] for _ in range(3)] == later
    True
    >>> [layer["class"] for layer in saved["layers"]]
    ['DelayedReward', 'TimeLimit', 'OrderEnforcing', 'PassiveEnvChecker', 'PendulumEnv']
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

__all__ = [
    "ENV_STATE_FORMAT",
    "ENV_STATE_VERSION",
    "attribute_handler",
    "env_state_dict",
    "load_env_state",
    "load_env_state_dict",
    "load_vector_env_state_dict",
    "register_state_handler",
    "register_stateless",
    "save_atomically",
    "save_env_state",
    "torch_load_plain",
    "vector_env_state_dict",
]

ENV_STATE_FORMAT = "gasil_wrappers.env_state"
ENV_STATE_VERSION = 1

Save = Callable[[Any], dict]
Load = Callable[[Any, dict], None]

# Handlers by exact class (a subclass may add state, so it is not covered by its parent's handler), and
# by "module.QualName" of a base class for classes we do not want to import here (MuJoCo's envs).
_HANDLERS: dict[type, tuple[Save, Load]] = {}
_BASE_HANDLERS: dict[str, tuple[Save, Load]] = {}
# What gym.Wrapper, RecordConstructorArgs and EzPickle set on every instance: a wrapper with nothing
# else is stateless.
_WRAPPER_ATTRIBUTES = {"env", "_action_space", "_observation_space", "_reward_range", "_metadata",
                       "_cached_spec", "_saved_kwargs", "_ezpickle_args", "_ezpickle_kwargs"}


def register_state_handler(cls: type, save: Save, load: Load) -> None:
    """Save and load layers of exactly class ``cls`` with ``save(layer) -> dict`` / ``load(layer, dict)``.

    For classes you cannot give a ``state_dict()`` / ``load_state_dict()`` pair of methods (those are
    used directly). ``save`` returns public keys and plain data; the keys it returns are the keys a
    saved state must have.
    """
    _HANDLERS[cls] = (save, load)


def _save_nothing(layer) -> dict:
    return {}


def _load_nothing(layer, state: dict) -> None:
    pass


def register_stateless(*classes: type) -> None:
    """Declare wrappers whose instances hold no state (everything they have is rebuilt by construction)."""
    for cls in classes:
        register_state_handler(cls, _save_nothing, _load_nothing)


# --- plain data --------------------------------------------------------------------------------------
def _rng_state(rng: np.random.Generator | None) -> dict | None:
    return None if rng is None else rng.bit_generator.state


def _rng_from_state(state: dict | None) -> np.random.Generator | None:
    """A numpy Generator in ``state`` (its bit generator made from the name in the state)."""
    if state is None:
        return None
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _array(value, dtype=None) -> np.ndarray:
    return np.array(value, dtype=dtype, copy=True)


# --- gymnasium's wrappers ----------------------------------------------------------------------------
def _rms_state(rms) -> dict:
    return {"mean": _array(rms.mean), "var": _array(rms.var), "count": float(rms.count)}


def _load_rms(rms, state: dict) -> None:
    # In the statistics' own dtype (float32 for a float32 observation space in gymnasium 1.x).
    mean = _array(state["mean"], np.asarray(rms.mean).dtype)
    var = _array(state["var"], np.asarray(rms.var).dtype)
    if mean.shape != np.shape(rms.mean) or var.shape != np.shape(rms.var):
        raise ValueError(f"running statistics of shape {mean.shape} do not fit {np.shape(rms.mean)}")
    rms.mean, rms.var, rms.count = mean, var, float(state["count"])


def _save_normalize_observation(layer) -> dict:
    return {"obs_rms": _rms_state(layer.obs_rms),
            "update_running_mean": bool(getattr(layer, "_update_running_mean", True))}


def _load_normalize_observation(layer, state: dict) -> None:
    _load_rms(layer.obs_rms, state["obs_rms"])
    if hasattr(layer, "_update_running_mean"):  # gymnasium >= 1.0
        layer._update_running_mean = bool(state["update_running_mean"])


def _save_normalize_reward(layer) -> dict:
    discounted = layer.discounted_reward if hasattr(layer, "discounted_reward") else layer.returns
    return {"return_rms": _rms_state(layer.return_rms), "discounted_return": _array(discounted, np.float64),
            "update_running_mean": bool(getattr(layer, "_update_running_mean", True))}


def _load_normalize_reward(layer, state: dict) -> None:
    _load_rms(layer.return_rms, state["return_rms"])
    name = "discounted_reward" if hasattr(layer, "discounted_reward") else "returns"  # 1.x, 0.29
    discounted = _array(state["discounted_return"], np.asarray(getattr(layer, name)).dtype)
    if discounted.shape != np.shape(getattr(layer, name)):
        raise ValueError(f"discounted return of shape {discounted.shape} does not fit "
                         f"{np.shape(getattr(layer, name))}")
    setattr(layer, name, discounted)
    if hasattr(layer, "_update_running_mean"):
        layer._update_running_mean = bool(state["update_running_mean"])


def _save_episode_statistics(layer) -> dict:
    if hasattr(layer, "episode_start_time"):  # gymnasium >= 1.0: one env
        start, ret, length = layer.episode_start_time, layer.episode_returns, layer.episode_lengths
        times = list(layer.time_queue)
    else:  # gymnasium 0.29: arrays of one entry
        start, ret, length = layer.episode_start_times[0], layer.episode_returns[0], layer.episode_lengths[0]
        times = []
    return {"episode_count": int(layer.episode_count), "episode_return": float(ret),
            "episode_length": int(length), "episode_time_elapsed": time.perf_counter() - float(start),
            "return_queue": [float(x) for x in layer.return_queue],
            "length_queue": [int(x) for x in layer.length_queue], "time_queue": [float(x) for x in times]}


def _load_episode_statistics(layer, state: dict) -> None:
    # The episode's wall-clock time goes on from what it was, measured on this machine's clock.
    start = time.perf_counter() - float(state["episode_time_elapsed"])
    layer.episode_count = int(state["episode_count"])
    if hasattr(layer, "episode_start_time"):
        layer.episode_start_time = start
        layer.episode_returns = float(state["episode_return"])
        layer.episode_lengths = int(state["episode_length"])
        queues = {"return_queue": float, "length_queue": int, "time_queue": float}
    else:
        layer.episode_start_times[0] = start
        layer.episode_returns[0] = float(state["episode_return"])
        layer.episode_lengths[0] = int(state["episode_length"])
        queues = {"return_queue": float, "length_queue": int}
    for name, kind in queues.items():
        queue = getattr(layer, name)
        queue.clear()
        queue.extend(kind(x) for x in state[name])


def _save_time_limit(layer) -> dict:
    steps = layer._elapsed_steps
    return {"elapsed_steps": None if steps is None else int(steps)}


def _load_time_limit(layer, state: dict) -> None:
    steps = state["elapsed_steps"]
    layer._elapsed_steps = None if steps is None else int(steps)


def _save_order_enforcing(layer) -> dict:
    return {"has_reset": bool(layer._has_reset)}


def _load_order_enforcing(layer, state: dict) -> None:
    layer._has_reset = bool(state["has_reset"])


_CHECKER_FLAGS = ("checked_reset", "checked_step", "checked_render")


def _save_env_checker(layer) -> dict:
    return {name: bool(getattr(layer, name)) for name in _CHECKER_FLAGS}


def _load_env_checker(layer, state: dict) -> None:
    for name in _CHECKER_FLAGS:
        setattr(layer, name, bool(state[name]))


register_state_handler(gym.wrappers.NormalizeObservation, _save_normalize_observation,
                       _load_normalize_observation)
register_state_handler(gym.wrappers.NormalizeReward, _save_normalize_reward, _load_normalize_reward)
register_state_handler(gym.wrappers.RecordEpisodeStatistics, _save_episode_statistics,
                       _load_episode_statistics)
register_state_handler(gym.wrappers.TimeLimit, _save_time_limit, _load_time_limit)
register_state_handler(gym.wrappers.OrderEnforcing, _save_order_enforcing, _load_order_enforcing)
register_state_handler(gym.wrappers.PassiveEnvChecker, _save_env_checker, _load_env_checker)
register_stateless(*(getattr(gym.wrappers, name) for name in (
    "ClipAction", "RescaleAction", "TransformAction", "TransformObservation", "TransformReward",
    "FlattenObservation") if hasattr(gym.wrappers, name)))


# --- base envs -----------------------------------------------------------------------------------------
def _mujoco_components():
    """MuJoCo's state components that mj_step integrates from (mjSTATE_INTEGRATION), by short name."""
    import mujoco  # here, so that runs without MuJoCo do not need it

    integration = int(mujoco.mjtState.mjSTATE_INTEGRATION)
    components = {}
    for name in dir(mujoco.mjtState):
        bit = int(getattr(mujoco.mjtState, name)) if name.startswith("mjSTATE_") else 0
        if bit and bit & (bit - 1) == 0 and bit & integration:  # a single component of the spec
            components[name.removeprefix("mjSTATE_").lower()] = getattr(mujoco.mjtState, name)
    return mujoco, components


def _save_mujoco(env) -> dict:
    """The simulator state (time, qpos, qvel, act, warm start, controls, applied forces, mocap...)."""
    mujoco, components = _mujoco_components()
    simulator = {}
    for name, spec in components.items():
        value = np.empty(mujoco.mj_stateSize(env.model, spec))
        mujoco.mj_getState(env.model, env.data, value, spec)
        simulator[name] = value
    return {"simulator": simulator}


def _load_mujoco(env, state: dict) -> None:
    mujoco, components = _mujoco_components()
    simulator = state["simulator"]
    unknown = sorted(set(simulator) - set(components))
    if unknown or not {"time", "qpos", "qvel"} <= set(simulator):
        raise ValueError(f"MuJoCo state components {sorted(simulator)} do not fit this MuJoCo's "
                         f"{sorted(components)}")
    for name, value in simulator.items():  # a component this MuJoCo added since keeps its reset value
        spec = components[name]
        value = np.asarray(value, np.float64)
        if value.shape != (mujoco.mj_stateSize(env.model, spec),):
            raise ValueError(f"MuJoCo {name} of size {value.size} does not fit this model's "
                             f"{mujoco.mj_stateSize(env.model, spec)}")
        mujoco.mj_setState(env.model, env.data, value, spec)
    mujoco.mj_forward(env.model, env.data)  # positions, contacts, sensors: consistent with the state


def attribute_handler(*names: str) -> tuple[Save, Load]:
    """A handler that saves copies of the given attributes under the same names (for simple envs)."""

    def save(layer) -> dict:
        return {name: _array(value) if isinstance(value, np.ndarray) else value
                for name, value in ((name, getattr(layer, name, None)) for name in names)}  # None: not reset

    def load(layer, state: dict) -> None:
        for name in names:
            value = state[name]
            setattr(layer, name, _array(value) if isinstance(value, np.ndarray) else value)

    return save, load


_BASE_HANDLERS["gymnasium.envs.mujoco.mujoco_env.MujocoEnv"] = (_save_mujoco, _load_mujoco)
_BASE_HANDLERS["gymnasium.envs.classic_control.pendulum.PendulumEnv"] = attribute_handler("state", "last_u")


# --- one layer -----------------------------------------------------------------------------------------
def _handler(layer) -> tuple[Save, Load]:
    """How to save and load ``layer``; ValueError for a layer that holds state nobody declared."""
    cls = type(layer)
    if cls in _HANDLERS:
        return _HANDLERS[cls]
    # Looked up on the class: gymnasium 0.29's Wrapper.__getattr__ would find the inner env's method.
    if callable(getattr(cls, "state_dict", None)) and callable(getattr(cls, "load_state_dict", None)):
        return cls.state_dict, cls.load_state_dict
    for base in cls.__mro__:
        handler = _BASE_HANDLERS.get(f"{base.__module__}.{base.__qualname__}")
        if handler is not None:
            return handler
    if isinstance(layer, gym.Wrapper) and set(vars(layer)) <= _WRAPPER_ATTRIBUTES:
        return _save_nothing, _load_nothing  # nothing but the links and spaces every wrapper has
    raise ValueError(
        f"{cls.__name__} ({cls.__module__}) holds state gasil_wrappers.persistence does not know how to "
        "save: give it state_dict()/load_state_dict() methods, or call register_state_handler (or "
        "register_stateless if it has none)")


def _chain(env: gym.Env) -> list[gym.Env]:
    """The layers of ``env`` from the outermost wrapper in, then the base env."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _owner(layer):
    """The GASIL owner a layer holds, or None (``vars``: gymnasium 0.29 forwards unknown attributes)."""
    state = vars(layer).get("state")
    return state if getattr(state, "is_gasil_owner", False) else None


def _layer_state(layer, is_base: bool) -> dict:
    save, _ = _handler(layer)
    state = dict(save(layer))
    if is_base:  # the env's own random generator, which reset() and its dynamics draw from
        if "np_random" in state:
            raise ValueError(f"{type(layer).__name__}: the key 'np_random' is reserved for the env's rng")
        state["np_random"] = _rng_state(layer._np_random)
        state["np_random_seed"] = getattr(layer, "_np_random_seed", None)
    return state


def _load_layer_state(layer, state: dict, is_base: bool) -> None:
    _, load = _handler(layer)
    if is_base:
        state = dict(state)
        layer._np_random = _rng_from_state(state.pop("np_random"))
        seed = state.pop("np_random_seed")
        if hasattr(layer, "_np_random_seed"):  # gymnasium >= 1.0
            layer._np_random_seed = seed
    load(layer, state)


# --- one env -------------------------------------------------------------------------------------------
def _chain_state(env: gym.Env) -> list[dict]:
    layers = _chain(env)
    entries = []
    for i, layer in enumerate(layers):
        try:
            state = _layer_state(layer, is_base=i == len(layers) - 1)
        except ValueError as e:
            raise ValueError(f"layer {i} ({type(layer).__name__}): {e}") from e
        entries.append({"class": type(layer).__name__, "state": state})
    return entries


def _owners_of(*envs: gym.Env) -> list:
    """The GASIL owners in the chains of ``envs``, each once, in the order they are met."""
    owners: list = []
    for layer in (layer for env in envs for layer in _chain(env)):
        owner = _owner(layer)
        if owner is not None and not any(owner is seen for seen in owners):
            owners.append(owner)
    return owners


def _check_header(state, what: str) -> None:
    if not isinstance(state, dict) or state.get("format") != ENV_STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not a gasil_wrappers env state (format {found!r}, expected {ENV_STATE_FORMAT!r})")
    version = state.get("version")
    if not isinstance(version, int) or version > ENV_STATE_VERSION or version < 1:
        raise ValueError(f"env state version {version!r}: this gasil_wrappers reads versions 1 to "
                         f"{ENV_STATE_VERSION}")
    if state.get("kind") != what:
        raise ValueError(f"this is the state of {state.get('kind')!r}, not of {what!r}")


def _kind(value) -> str:
    """bool, int, float, str, array of a dtype kind, sequence, dict or none: what a saved value must match."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, np.ndarray):
        return f"array of kind {value.dtype.kind!r}"
    if isinstance(value, torch.Tensor):
        return "tensor"
    for kind in (str, dict, list, tuple):
        if isinstance(value, kind):
            return "sequence" if kind in (list, tuple) else kind.__name__
    return "none" if value is None else type(value).__name__


def _unlike(saved, current) -> str:
    """Why ``saved`` cannot stand where this code has ``current`` ('' if it can): same kind of value, and
    for dicts the same kinds under the keys both have (None on either side, e.g. before the first reset,
    is left to the loader; a whole number may stand for a float)."""
    mine, theirs = _kind(current), _kind(saved)
    if "none" in (mine, theirs) or mine == theirs or (mine, theirs) == ("float", "int"):
        if mine == "dict":
            for key in set(current) & set(saved):
                problem = _unlike(saved[key], current[key])
                if problem:
                    return f"[{key!r}] {problem}"
        return ""
    return f"is a {theirs}, this code saves a {mine}"


def _load_chain(env: gym.Env, entries, where: str = "") -> None:
    layers = _chain(env)
    mine = [type(layer).__name__ for layer in layers]
    try:
        theirs = [entry["class"] for entry in entries]
    except (TypeError, KeyError) as e:
        raise ValueError(f"{where}malformed list of layers ({e!r})") from e
    if mine != theirs:
        i = next((k for k, (a, b) in enumerate(zip(theirs, mine)) if a != b), min(len(mine), len(theirs)))
        raise ValueError(
            f"{where}layer {i}: the saved chain has {theirs[i] if i < len(theirs) else 'no layer'} there, "
            f"this env has {mine[i] if i < len(mine) else 'no layer'} (saved chain {theirs}, this env "
            f"{mine})")
    # Check every layer before changing any: other keys, or values of another kind than this code saves.
    for i, (layer, entry) in enumerate(zip(layers, entries)):
        state = entry.get("state") if isinstance(entry, dict) else None
        expected = _layer_state(layer, is_base=i == len(layers) - 1)
        if not isinstance(state, dict) or set(state) != set(expected):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{where}layer {i} ({mine[i]}): saved keys {found}, this code saves "
                             f"{sorted(expected)} (written by other code, or corrupt)")
        for key in expected:
            problem = _unlike(state[key], expected[key])
            if problem:
                raise ValueError(f"{where}layer {i} ({mine[i]}): {key!r} {problem} (corrupt?)")
    for i, (layer, entry) in enumerate(zip(layers, entries)):
        try:
            _load_layer_state(layer, entry["state"], is_base=i == len(layers) - 1)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise ValueError(f"{where}layer {i} ({mine[i]}): cannot load its state ({type(e).__name__}: "
                             f"{e})") from e


def _owner_states(owners: list) -> list[dict]:
    # Copies: an owner's state_dict() may hand out its live tensors, which its next D round changes.
    return [copy.deepcopy(owner.state_dict()) for owner in owners]


def _load_owners(owners: list, states, include_owners: bool) -> None:
    if not include_owners:
        return
    if states is None:
        raise ValueError("the state was saved without its GASIL owners (include_owners=False): load it "
                         "with include_owners=False too")
    if not isinstance(states, list) or len(states) != len(owners):
        n = len(states) if isinstance(states, list) else type(states).__name__
        raise ValueError(f"the saved state has {n} GASIL owner(s), this env {len(owners)}")
    for k, (owner, state) in enumerate(zip(owners, states)):
        try:
            owner.load_state_dict(copy.deepcopy(state))  # a copy: torch's optimizers keep the given tensors
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"GASIL owner {k} ({type(owner).__name__}): {e}") from e


def env_state_dict(env: gym.Env, *, include_owners: bool = True) -> dict:
    """Everything needed to continue ``env`` bitwise identically, as plain data under public keys.

    ``{"format", "version", "kind": "env", "layers": [{"class": name, "state": {...}}, ...],
    "owners": [...]}``: one entry per layer from the outermost wrapper in; the base env's entry also
    holds its ``np_random``. ``owners`` holds the ``state_dict()`` of each GASIL owner in the chain
    (an owner is shared: leave it out with ``include_owners=False`` to save only this env's part).
    """
    owners = _owner_states(_owners_of(env)) if include_owners else None
    return {"format": ENV_STATE_FORMAT, "version": ENV_STATE_VERSION, "kind": "env",
            "layers": _chain_state(env), "owners": owners}


def load_env_state_dict(env: gym.Env, state: dict, *, include_owners: bool = True) -> None:
    """Restore :func:`env_state_dict` into an env built the same way (same wrapper classes, in order).

    Raises ``ValueError`` naming the layer on a chain of other classes, other keys or bad values.
    """
    _check_header(state, "env")
    _load_chain(env, state.get("layers"))
    _load_owners(_owners_of(env), state.get("owners"), include_owners)


def vector_env_state_dict(envs: gym.vector.SyncVectorEnv) -> dict:
    """:func:`env_state_dict` of every sub-env of a ``SyncVectorEnv``; shared GASIL owners saved once.

    ``{"format", "version", "kind": "sync_vector_env", "envs": [[layer, ...], ...], "owners": [...]}``.
    The vector env's own next-step bookkeeping is not included: resume from the observations your
    loop kept, at a step where no sub-env waits for an autoreset (``autoreset_mode=SAME_STEP`` never
    does).
    """
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        raise TypeError(f"vector_env_state_dict: needs a SyncVectorEnv (sub-envs in this process), got "
                        f"{type(envs).__name__}")
    return {"format": ENV_STATE_FORMAT, "version": ENV_STATE_VERSION, "kind": "sync_vector_env",
            "envs": [_chain_state(env) for env in envs.envs],
            "owners": _owner_states(_owners_of(*envs.envs))}


def load_vector_env_state_dict(envs: gym.vector.SyncVectorEnv, state: dict) -> None:
    """Restore :func:`vector_env_state_dict` into a ``SyncVectorEnv`` of the same sub-envs."""
    _check_header(state, "sync_vector_env")
    chains = state.get("envs")
    if not isinstance(chains, list) or len(chains) != len(envs.envs):
        n = len(chains) if isinstance(chains, list) else chains
        raise ValueError(f"the saved state has {n} sub-envs, this vector env {len(envs.envs)}")
    for k, (env, chain) in enumerate(zip(envs.envs, chains)):
        _load_chain(env, chain, where=f"sub-env {k}, ")
    _load_owners(_owners_of(*envs.envs), state.get("owners"), True)


# --- files ---------------------------------------------------------------------------------------------
def _numpy_globals() -> list:
    """What pickled numpy arrays, scalars and dtypes refer to (numpy 2 moved them to numpy._core)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGSUVMm"}  # Float64DType, ... (no objects)
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, bytes, *dtypes]


def torch_load_plain(path: str):
    """``torch.load`` of a file that may hold only plain data: containers, numbers, strings, tensors and
    numpy arrays (``weights_only=True``, numpy allowed). A pickled object of any other class fails."""
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def save_atomically(obj, path: str) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a half-written file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_env_state(env: gym.Env | gym.vector.SyncVectorEnv, path: str) -> None:
    """Write :func:`env_state_dict` (or :func:`vector_env_state_dict`) of ``env`` to ``path`` atomically."""
    is_vector = isinstance(env, gym.vector.SyncVectorEnv)
    save_atomically(vector_env_state_dict(env) if is_vector else env_state_dict(env), path)


def load_env_state(env: gym.Env | gym.vector.SyncVectorEnv, path: str) -> None:
    """Restore a file written by :func:`save_env_state`; ``ValueError`` naming the file if it is not one."""
    try:
        state = torch_load_plain(path)
    except Exception as e:
        raise ValueError(f"cannot read env state {path!r} (corrupt, or not written by save_env_state): "
                         f"{type(e).__name__}: {e}") from e
    try:
        if isinstance(env, gym.vector.SyncVectorEnv):
            load_vector_env_state_dict(env, state)
        else:
            load_env_state_dict(env, state)
    except ValueError as e:
        raise ValueError(f"env state {path!r}: {e}") from e
