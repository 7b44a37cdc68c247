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
"""

from __future__ import annotations

import ray
from ray.rllib.callbacks.callbacks import RLlibCallback

from gasil_wrappers.ray_owner import _ACTOR_PREFIX, DEFAULT_NAMESPACE, RayGASILOwner, bind_owner

__all__ = ["GASILCallback", "RayGASILOwner", "owner_diagnostics"]


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

