"""Save and restore a whole env (wrapper chain, simulator, GASIL owner) as explicit, versioned state.

- :func:`env_state_dict` / :func:`load_env_state_dict`: one env, walked from the outermost wrapper to
  the base env.
- :func:`vector_env_state_dict` / :func:`load_vector_env_state_dict`: every sub-env of a
  ``SyncVectorEnv`` and the vector wrappers around it, with the GASIL owners they share saved once.
- :func:`save_env_state` / :func:`load_env_state`: the same to and from a file (atomic write).
- :func:`gasil_state_dict` / :func:`save_gasil_state` (and their loaders): the GASIL part alone of a
  batched wrapper whose sub-envs live in other processes (SB3's vec envs, ``AsyncVectorEnv``).
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
    "gasil_state_dict",
    "load_gasil_state",
    "load_gasil_state_dict",
    "load_env_state",
    "load_env_state_dict",
    "load_file",
    "load_vector_env_state_dict",
    "register_state_handler",
    "register_stateless",
    "save_atomically",
    "save_env_state",
    "save_gasil_state",
    "torch_load_plain",
    "vector_env_state_dict",
]

ENV_STATE_FORMAT = "gasil_wrappers.env_state"
# 2: a vector env's autoreset flags and vector wrappers; the "gasil" kind; MuJoCo's kinematics and
# DelayedReward's cut_episodes in the env layers (_ADDED_IN_V2: what a version-1 state stands for)
ENV_STATE_VERSION = 2

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


# What mj_step computed from the positions at its start (mj_kinematics, mj_comPos, mj_comVel) and leaves
# in mjData: one step behind qpos afterwards. Envs read some of it before their next mj_step (Ant's
# torso xpos, Humanoid's mass centre from xipos): restored as saved, not recomputed from the new qpos.
_KINEMATICS = ("xpos", "xquat", "xmat", "xipos", "ximat", "xanchor", "xaxis", "geom_xpos", "geom_xmat",
               "site_xpos", "site_xmat", "cam_xpos", "cam_xmat", "light_xpos", "light_xdir", "subtree_com",
               "cdof", "cinert", "cvel", "cdof_dot")


def _save_mujoco(env) -> dict:
    """``simulator``: the simulator state (time, qpos, qvel, act, warm start, controls, applied forces,
    mocap...); ``kinematics``: the body, geom and site frames and centres of mass as the last step left
    them (``_KINEMATICS``)."""
    mujoco, components = _mujoco_components()
    simulator = {}
    for name, spec in components.items():
        value = np.empty(mujoco.mj_stateSize(env.model, spec))
        mujoco.mj_getState(env.model, env.data, value, spec)
        simulator[name] = value
    kinematics = {name: _array(getattr(env.data, name)) for name in _KINEMATICS}
    return {"simulator": simulator, "kinematics": kinematics}


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
    kinematics = state["kinematics"]  # None in a version-1 state: then the frames of the restored qpos
    if kinematics is not None:
        for name in _KINEMATICS:
            value, here = np.asarray(kinematics[name], np.float64), getattr(env.data, name)
            if value.shape != here.shape:
                raise ValueError(f"MuJoCo {name} of shape {value.shape} does not fit this model's "
                                 f"{here.shape}")
        for name in _KINEMATICS:
            getattr(env.data, name)[:] = kinematics[name]


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
    return _unique(_owner(layer) for env in envs for layer in _chain(env))


def _unique(owners) -> list:
    """``owners`` without None and without repeats (by identity), in order."""
    out: list = []
    for owner in owners:
        if owner is not None and not any(owner is seen for seen in out):
            out.append(owner)
    return out


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
        if mine == theirs == "dict":
            for key in set(current) & set(saved):
                problem = _unlike(saved[key], current[key])
                if problem:
                    return f"[{key!r}] {problem}"
        return ""
    return f"is a {theirs}, this code saves a {mine}"


def _saved_classes(entries, what: str, where: str = "") -> list[str]:
    """The class names in a saved list of layers or wrappers (``what`` names the list in the error)."""
    try:
        return [entry["class"] for entry in entries]
    except (TypeError, KeyError) as e:
        raise ValueError(f"{where}malformed list of {what} ({e!r})") from e


# Keys layers gained in version 2, and the value a version-1 state stands for.
_ADDED_IN_V2 = {"cut_episodes": 0, "kinematics": None}


def _load_chain(env: gym.Env, entries, where: str = "", version: int = ENV_STATE_VERSION) -> None:
    layers = _chain(env)
    mine = [type(layer).__name__ for layer in layers]
    theirs = _saved_classes(entries, "layers", where)
    if mine != theirs:
        i = next((k for k, (a, b) in enumerate(zip(theirs, mine)) if a != b), min(len(mine), len(theirs)))
        raise ValueError(
            f"{where}layer {i}: the saved chain has {theirs[i] if i < len(theirs) else 'no layer'} there, "
            f"this env has {mine[i] if i < len(mine) else 'no layer'} (saved chain {theirs}, this env "
            f"{mine})")
    # Check every layer before changing any: other keys, or values of another kind than this code saves.
    states = []
    for i, (layer, entry) in enumerate(zip(layers, entries)):
        state = entry.get("state") if isinstance(entry, dict) else None
        expected = _layer_state(layer, is_base=i == len(layers) - 1)
        if version == 1 and isinstance(state, dict):
            state = {**{k: v for k, v in _ADDED_IN_V2.items() if k in expected and k not in state}, **state}
        states.append(state)
        if not isinstance(state, dict) or set(state) != set(expected):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{where}layer {i} ({mine[i]}): saved keys {found}, this code saves "
                             f"{sorted(expected)} (written by other code, or corrupt)")
        for key in expected:
            problem = _unlike(state[key], expected[key])
            if problem:
                raise ValueError(f"{where}layer {i} ({mine[i]}): {key!r} {problem} (corrupt?)")
    for i, (layer, state) in enumerate(zip(layers, states)):
        try:
            _load_layer_state(layer, state, is_base=i == len(layers) - 1)
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
    _load_chain(env, state.get("layers"), version=state["version"])
    _load_owners(_owners_of(env), state.get("owners"), include_owners)


_VECTOR_WRAPPER_ATTRIBUTES = {"env", "_observation_space", "_action_space", "_single_observation_space",
                              "_single_action_space", "_metadata"}


def _vector_layers(envs, who: str) -> tuple[list, gym.vector.SyncVectorEnv]:
    """The vector wrappers around ``envs``' innermost vector env (outermost first), and that env, which
    must be a ``SyncVectorEnv``; each wrapper saves its state with ``state_dict()`` or holds none."""
    wrappers = []
    while isinstance(envs, getattr(gym.vector, "VectorWrapper", ())):
        cls = type(envs)
        has_methods = all(callable(getattr(cls, name, None)) for name in ("state_dict", "load_state_dict"))
        if not has_methods and not set(vars(envs)) <= _VECTOR_WRAPPER_ATTRIBUTES:
            raise ValueError(f"{who}: the vector wrapper {cls.__name__} ({cls.__module__}) holds state "
                             "gasil_wrappers.persistence does not know how to save (give it "
                             "state_dict()/load_state_dict() methods)")
        wrappers.append(envs)
        envs = envs.env
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        hint = (": save the GASIL part alone with gasil_wrappers.persistence.save_gasil_state"
                if wrappers and isinstance(getattr(wrappers[0], "core", None), _batched_core()) else "")
        raise TypeError(f"{who}: needs a SyncVectorEnv (sub-envs in this process), or vector wrappers around "
                        f"one, got {type(envs).__name__}{hint}")
    return wrappers, envs


def _wrapper_state(wrapper) -> dict:
    return {"class": type(wrapper).__name__,
            "state": wrapper.state_dict() if callable(getattr(type(wrapper), "state_dict", None)) else {}}


def _vector_owners(wrappers: list, inner: gym.vector.SyncVectorEnv) -> list:
    """The GASIL owners of a vector env, each once: its vector wrappers' first, then its sub-envs'."""
    return _unique([*(_owner(w) for w in wrappers), *_owners_of(*inner.envs)])


def vector_env_state_dict(envs) -> dict:
    """:func:`env_state_dict` of every sub-env of a ``SyncVectorEnv``, with the vector wrappers around it
    (such as :class:`~gasil_wrappers.GASILVectorReward` from ``make_vec_stack(..., "sync")``); shared
    GASIL owners saved once.

    ``{"format", "version", "kind": "sync_vector_env", "envs": [[layer, ...], ...], "autoreset": [...],
    "wrappers": [{"class", "state"}, ...], "owners": [...]}``: ``autoreset`` is, per sub-env, whether
    its next step is a next-step autoreset (gymnasium >= 1.0; so any step can be saved), ``wrappers``
    the vector wrappers from the outermost in. Resume from the observations your loop kept.
    """
    wrappers, inner = _vector_layers(envs, "vector_env_state_dict")
    autoreset = getattr(inner, "_autoreset_envs", None)  # gymnasium >= 1.0: next-step bookkeeping
    return {"format": ENV_STATE_FORMAT, "version": ENV_STATE_VERSION, "kind": "sync_vector_env",
            "envs": [_chain_state(env) for env in inner.envs],
            "autoreset": None if autoreset is None else [bool(a) for a in autoreset],
            "wrappers": [_wrapper_state(w) for w in wrappers],
            "owners": _owner_states(_vector_owners(wrappers, inner))}


def load_vector_env_state_dict(envs, state: dict) -> None:
    """Restore :func:`vector_env_state_dict` into a ``SyncVectorEnv`` of the same sub-envs (and vector
    wrappers). Reads version 1 (no ``autoreset``, no ``wrappers``) too."""
    _check_header(state, "sync_vector_env")
    wrappers, inner = _vector_layers(envs, "load_vector_env_state_dict")
    chains = state.get("envs")
    if not isinstance(chains, list) or len(chains) != len(inner.envs):
        n = len(chains) if isinstance(chains, list) else chains
        raise ValueError(f"the saved state has {n} sub-envs, this vector env {len(inner.envs)}")
    saved_wrappers = state.get("wrappers", [])
    mine = [type(w).__name__ for w in wrappers]
    theirs = _saved_classes(saved_wrappers, "vector wrappers")
    if mine != theirs:
        raise ValueError(f"the saved vector wrappers are {theirs}, this vector env has {mine}")
    autoreset = state.get("autoreset")
    here = getattr(inner, "_autoreset_envs", None)
    if autoreset is not None and (here is None or len(autoreset) != len(here)):
        raise ValueError(f"the saved autoreset flags {autoreset!r} do not fit this vector env")
    for k, (env, chain) in enumerate(zip(inner.envs, chains)):
        _load_chain(env, chain, where=f"sub-env {k}, ", version=state["version"])
    for wrapper, entry in zip(wrappers, saved_wrappers):
        if callable(getattr(type(wrapper), "load_state_dict", None)):
            try:
                wrapper.load_state_dict(entry["state"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"vector wrapper {type(wrapper).__name__}: {e}") from e
    if autoreset is not None:
        here[:] = np.array(autoreset, dtype=bool)
    _load_owners(_vector_owners(wrappers, inner), state.get("owners"), True)


# --- the GASIL part of a batched wrapper whose sub-envs live elsewhere -------------------------------------
def _batched_core():
    from gasil_wrappers.vector import BatchedGASIL  # here: vector.py imports state.py, which is heavier

    return BatchedGASIL


def _batched_wrapper(envs, who: str):
    """The batched GASIL wrapper in ``envs`` or under the vector wrappers around it (``VecNormalize``...)."""
    core, wrapper = _batched_core(), envs
    while wrapper is not None and not isinstance(vars(wrapper).get("core"), core):
        wrapper = vars(wrapper).get("venv", vars(wrapper).get("env"))  # SB3's VecEnvWrapper, gymnasium's
    if wrapper is None:
        raise TypeError(f"{who}: needs a batched GASIL wrapper (GASILVectorReward, or the SB3 "
                        f"GASILVecEnvWrapper), or wrappers around one; {type(envs).__name__} has none (for "
                        "the per-env stack use save_env_state)")
    return wrapper


def gasil_state_dict(wrapper) -> dict:
    """The GASIL part of a batched wrapper, whatever vector env it wraps: its own state (episodes in
    progress, env-reward scale) and its owner's (buffer, D, its trainer). ``wrapper`` may also be a
    vector wrapper around it (SB3's ``VecNormalize``, ...): the batched wrapper is found inside.

    For vector envs whose sub-envs cannot be saved from here (SB3's ``SubprocVecEnv``, gymnasium's
    ``AsyncVectorEnv``): ``{"format", "version", "kind": "gasil", "wrapper": {"class", "state"},
    "owners": [...]}``. After loading it, reset the vector env (SB3's ``learn()`` does): the sub-envs
    start new episodes, and the episodes that were in progress when it was saved enter the buffer as
    cut: as if truncated at their last recorded step, with the delayed reward their sub-env's
    ``DelayedReward`` had not paid yet (asked from the sub-envs here, kept as the core's
    ``unpaid_reward``) added there, as when the per-env stack's episode is cut.
    """
    wrapper = _batched_wrapper(wrapper, "gasil_state_dict")
    entry = _wrapper_state(wrapper)
    core = entry["state"]["core"]
    core["unpaid_reward"] = _unpaid_in_sub_envs(wrapper, core).tolist()
    return {"format": ENV_STATE_FORMAT, "version": ENV_STATE_VERSION, "kind": "gasil",
            "wrapper": entry, "owners": _owner_states([wrapper.state])}


def _unpaid_in_sub_envs(wrapper, core: dict) -> np.ndarray:
    """Per sub-env, the delayed reward of its episode in progress not paid yet (``DelayedReward.
    unpaid_reward``, asked through the vector env's ``get_attr``), plus what a loaded state still owes
    (``core``: the batched core's state)."""
    owed = np.array(core["unpaid_reward"], dtype=np.float64)
    delay = wrapper.core.config.delay
    if delay == 1:  # every reward is paid at once (and sub-envs built by hand may lack one)
        return owed
    try:
        pending = np.array(wrapper.unwrapped.get_attr("unpaid_reward"), dtype=np.float64)  # SB3, gymnasium
    except AttributeError as e:
        raise ValueError(f"gasil_state_dict: the config delays rewards by {delay} steps, but the "
                         f"sub-envs have no DelayedReward to ask what is unpaid ({e})") from e
    return owed + np.where(core["running"], pending, 0.0)


def load_gasil_state_dict(wrapper, state: dict) -> None:
    """Restore :func:`gasil_state_dict` into a batched wrapper of as many sub-envs and the same config."""
    wrapper = _batched_wrapper(wrapper, "load_gasil_state_dict")
    _check_header(state, "gasil")
    entry = state.get("wrapper")
    if not isinstance(entry, dict) or entry.get("class") != type(wrapper).__name__:
        found = entry.get("class") if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"the state is of a {found}, this is a {type(wrapper).__name__}")
    owners = state.get("owners")
    if not isinstance(owners, list) or len(owners) != 1:
        raise ValueError("the state must hold exactly one GASIL owner")
    snapshot = copy.deepcopy(wrapper.state_dict())
    wrapper.load_state_dict(entry["state"])  # checks before it changes anything
    try:
        _load_owners([wrapper.state], owners, True)
    except ValueError:
        wrapper.load_state_dict(snapshot)  # nothing lost: the wrapper as it was
        raise


def save_gasil_state(wrapper, path: str) -> None:
    """Write :func:`gasil_state_dict` of a batched wrapper to ``path`` atomically."""
    save_atomically(gasil_state_dict(wrapper), path)


def load_gasil_state(wrapper, path: str) -> None:
    """Restore a file written by :func:`save_gasil_state`; ``ValueError`` naming the file if it is not one."""
    load_file(path, "GASIL state", "save_gasil_state", lambda state: load_gasil_state_dict(wrapper, state))


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


def save_env_state(env: gym.Env | gym.vector.VectorEnv, path: str) -> None:
    """Write :func:`env_state_dict` (or, for a vector env, :func:`vector_env_state_dict`) of ``env`` to
    ``path`` atomically."""
    is_vector = isinstance(env, gym.vector.VectorEnv)
    save_atomically(vector_env_state_dict(env) if is_vector else env_state_dict(env), path)


def load_file(path: str, what: str, writer: str, load):
    """``load(state)`` of the plain data in ``path``, and what it returns; ``ValueError`` naming the file
    on any failure."""
    try:
        state = torch_load_plain(path)
    except Exception as e:
        raise ValueError(f"cannot read {what} {path!r} (corrupt, or not written by {writer}): "
                         f"{type(e).__name__}: {e}") from e
    try:
        return load(state)
    except ValueError as e:
        raise ValueError(f"{what} {path!r}: {e}") from e


def load_env_state(env: gym.Env | gym.vector.VectorEnv, path: str) -> None:
    """Restore a file written by :func:`save_env_state`; ``ValueError`` naming the file if it is not one."""
    load = load_vector_env_state_dict if isinstance(env, gym.vector.VectorEnv) else load_env_state_dict
    load_file(path, "env state", "save_env_state", lambda state: load(env, state))
