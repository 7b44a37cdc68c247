"""RLlib on our env ids with one GASIL owner for every env runner: :class:`GASILCallback`.

RLlib's env runners build their envs themselves (``gym.make_vec(env_id, **env_config)``), so with a
``gasil_wrappers:`` id each runner would get its own in-process GASILState (one D per runner). Add
this callback, start the owner actor on the driver, and every runner's stacks use the one
:class:`~gasil_wrappers.ray_owner.RayGASILOwner`; its ``gasil/*`` diagnostics go into every training
result::

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from gasil_wrappers.ray_owner import RayGASILOwner
    from gasil_wrappers.rllib import GASILCallback

    ray.init()
    env_id, env_config = "gasil_wrappers:GASIL-DelayedHopper-v5", {"group": "hopper-run", "d_every": 4000}
    owner = RayGASILOwner.start(RayGASILOwner.for_env_id(env_id, **env_config))
    algo = (PPOConfig().environment(env_id, env_config=env_config)
            .env_runners(num_env_runners=2).callbacks(GASILCallback).build_algo())
    result = algo.train()
    result["gasil"]["d_loss"], result["gasil"]["rounds"]

The owner actor is found by the name of the config's ``group`` (``env_config["group"]``, "default" if
not given). RLlib itself is unmodified; Ray (and RLlib) are imported only by this module.

The owner lives outside the Algorithm, so ``algo.save_to_path()`` does not hold its buffer and D (RLlib
has no save hook a callback could use). :func:`save_checkpoint` / :func:`restore_checkpoint` write and
read both, the owners' state as ``gasil_owners.pt`` in the checkpoint directory::

    path = save_checkpoint(algo, "ckpt", owner)
    # later, in a new driver: the owner started with the same config, the algo built as before
    owner = RayGASILOwner.start(RayGASILOwner.for_env_id(env_id, **env_config))
    algo = config.build_algo()
    restore_checkpoint(algo, path, owner)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ray
from ray.rllib.callbacks.callbacks import RLlibCallback

from gasil_wrappers.persistence import _load_file, save_atomically
from gasil_wrappers.ray_owner import _ACTOR_PREFIX, DEFAULT_NAMESPACE, RayGASILOwner, bind_owner

__all__ = ["GASILCallback", "RayGASILOwner", "owner_diagnostics", "restore_checkpoint", "save_checkpoint"]

OWNERS_FILE = "gasil_owners.pt"
_OWNERS_FORMAT = "gasil-rllib-owners/1"


def owner_diagnostics(namespace: str = DEFAULT_NAMESPACE, timeout: float = 30.0) -> dict[str, dict]:
    """Group name → diagnostics of every GASIL owner actor running in ``namespace``."""
    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, ns = entry["name"], entry["namespace"]
        if ns == namespace and name.startswith(_ACTOR_PREFIX):
            try:
                actor = ray.get_actor(name, namespace=ns)
                out[name[len(_ACTOR_PREFIX):]] = ray.get(actor.diagnostics.remote(), timeout=timeout)
            except Exception:  # an owner that died since the listing: nothing to report
                continue
    return out


class GASILCallback(RLlibCallback):
    """Binds every env runner's GASIL stacks to the owner actor; adds ``result["gasil"]`` after each train().

    ``on_environment_created``: every ``TopKEpisodeRecorder`` / ``DiscriminatorRewardWrapper`` of the
    runner's sub-envs switches from its in-process owner to the :class:`RayGASILOwner` of its config's
    group (:func:`~gasil_wrappers.ray_owner.bind_owner`: the configs must match; a missing actor raises
    :class:`~gasil_wrappers.ray_owner.GASILOwnerError`). ``on_train_result``: ``result["gasil"]`` is
    the owner's diagnostics (D loss and accuracies, rounds, policy steps, buffer statistics, α,
    publications, shipping processes); with several owners, one dict per group.
    """

    namespace = DEFAULT_NAMESPACE

    def on_environment_created(self, *, env_runner, metrics_logger=None, env, env_context, **kwargs) -> None:
        bind_owner(env, namespace=self.namespace)

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        diagnostics = owner_diagnostics(self.namespace)
        if len(diagnostics) == 1:
            result["gasil"] = next(iter(diagnostics.values()))
        elif diagnostics:
            result["gasil"] = diagnostics


def _by_group(owners: RayGASILOwner | Sequence[RayGASILOwner]) -> dict[str, RayGASILOwner]:
    owners = [owners] if isinstance(owners, RayGASILOwner) else list(owners)
    by_group = {owner.config.group: owner for owner in owners}
    if not owners or len(by_group) != len(owners):
        raise ValueError(f"one owner per group, at least one: got groups {[o.config.group for o in owners]}")
    return by_group


def save_checkpoint(algo, path: str, owners: RayGASILOwner | Sequence[RayGASILOwner]) -> str:
    """``algo.save_to_path(path)``, then each owner's state (buffer, D and its optimizer, counters, rng)
    into ``path/gasil_owners.pt`` (atomic write); returns the checkpoint directory.

    Call it between ``train()`` calls: what env runners have not shipped yet (episodes in progress, less
    than a chunk of samples) is not in the owner and not saved, as with ``owner.state_dict()``.
    """
    by_group = _by_group(owners)
    path = str(algo.save_to_path(path))
    states = {group: owner.state_dict() for group, owner in by_group.items()}
    save_atomically({"format": _OWNERS_FORMAT, "owners": states}, os.path.join(path, OWNERS_FILE))
    return path


def restore_checkpoint(algo, path: str, owners: RayGASILOwner | Sequence[RayGASILOwner]) -> None:
    """Restore a :func:`save_checkpoint` directory: each owner's state (published to every env runner),
    then ``algo.restore_from_path(path)``.

    The owners must be running with the saved configs and be exactly the saved groups. A missing or
    corrupt owners file, other groups, or a state an owner refuses raise ``ValueError`` before the algo
    is touched; any failure, the algo's restore included, leaves every owner as it was.
    """
    by_group = _by_group(owners)
    file = os.path.join(str(path), OWNERS_FILE)

    def check(state) -> dict:
        if not isinstance(state, dict) or state.get("format") != _OWNERS_FORMAT:
            raise ValueError(f"not a GASIL owners file (format {_OWNERS_FORMAT!r})")
        saved = state["owners"]
        if sorted(saved) != sorted(by_group):
            raise ValueError(f"saved groups {sorted(saved)}, owners given for {sorted(by_group)}")
        return saved

    found = _load_file(file, "GASIL owners", "gasil_wrappers.rllib.save_checkpoint", check)
    before, loaded = {}, []
    try:
        for group, owner in by_group.items():
            before[group] = owner.state_dict()  # a fresh copy from the actor
            owner.load_state_dict(found[group])
            loaded.append(group)
        algo.restore_from_path(path)
    except BaseException:
        for group in loaded:  # nothing lost: every owner as it was
            by_group[group].load_state_dict(before[group])
        raise
