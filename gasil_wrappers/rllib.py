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
    result["env_runners"]["true_episode_return_mean"]  # RLlib's episode_return_mean is the shaped one

The owner actor is found by the name of the config's ``group`` (``env_config["group"]``, "default" if
not given). RLlib itself is unmodified; Ray (and RLlib) are imported only by this module.

An owner you start lives outside the Algorithm, so ``algo.save_to_path()`` does not hold its buffer and
D (RLlib has no save hook a callback could use). :func:`save_checkpoint` / :func:`restore_checkpoint`
write and read both, the owners' state as ``gasil_owners.pt`` in the checkpoint directory::

    path = save_checkpoint(algo, "ckpt", owner)
    # later, in a new driver: the owner started with the same config, the algo built as before
    owner = RayGASILOwner.start(RayGASILOwner.for_env_id(env_id, **env_config))
    algo = config.build_algo()
    restore_checkpoint(algo, path, owner)

Or let the algorithm own its owner: :class:`GASILPPO` (the :class:`GASILAlgorithm` mixin on PPO) starts
the actor itself (one per Tune trial), and every checkpoint it writes, Tune's included, holds the owner::

    results = tune.Tuner(GASILPPO, param_space=config.evaluation(evaluation_interval=10)).fit()
    best = results.get_best_result("evaluation/env_runners/episode_return_mean", "max")  # true return
    algo = GASILPPO.from_checkpoint(best.checkpoint.path)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import ray
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.callbacks.callbacks import RLlibCallback

from gasil_wrappers.config import INFO_KEY
from gasil_wrappers.persistence import load_file, save_atomically
from gasil_wrappers.ray_owner import (
    _ACTOR_PREFIX,
    DEFAULT_NAMESPACE,
    GASILOwnerError,
    RayGASILOwner,
    bind_owner,
)
from gasil_wrappers.stack import EVAL_SETTINGS
from gasil_wrappers.state import find_state

__all__ = [
    "GASILAlgorithm", "GASILCallback", "GASILPPO", "RayGASILOwner", "owner_diagnostics", "restore_checkpoint",
    "save_checkpoint",
]

OWNERS_FILE = "gasil_owners.pt"
TRUE_RETURN_KEY = "true_episode_return_mean"  # result["env_runners"][TRUE_RETURN_KEY]
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
    publications, shipping processes); with several owners, one dict per group. ``on_episode_end``:
    the episode's true return (undelayed, unshaped; the stack's ``info["gasil"]["episode_return"]``) goes
    to ``result["env_runners"]["true_episode_return_mean"]`` (and under ``"evaluation"``), averaged over
    the episodes RLlib averages ``episode_return_mean`` over, which for training is the shaped return.
    """

    namespace = DEFAULT_NAMESPACE

    def on_environment_created(self, *, env_runner, metrics_logger=None, env, env_context, **kwargs) -> None:
        if getattr(getattr(env_runner, "config", None), "in_evaluation", False):
            if any(find_state(sub) is not None for sub in getattr(env, "envs", None) or [env]):
                raise ValueError(
                    "GASILCallback: an evaluation env runner's envs have GASIL (they would feed the owner's "
                    "buffer and D, and report the shaped return); evaluate without it: config.evaluation("
                    "evaluation_config={'env_config': {**env_config, 'gasil': False, 'top_k': False}}) "
                    "(GASILAlgorithm does this for you)")
            return
        bind_owner(env, namespace=self.namespace)

    def on_episode_end(self, *, episode, env_runner=None, metrics_logger=None, **kwargs) -> None:
        info = episode.get_infos(-1)
        true_return = (info.get(INFO_KEY) or {}).get("episode_return") if isinstance(info, dict) else None
        if true_return is None or metrics_logger is None:  # not one of our stacks
            return
        # the window SingleAgentEnvRunner uses for episode_return_mean (runners merge on the driver)
        config = env_runner.config
        window = max(1, math.ceil(config.metrics_num_episodes_for_smoothing / (config.num_env_runners or 1)))
        metrics_logger.log_value(TRUE_RETURN_KEY, float(true_return), window=window)

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        own = getattr(algorithm, "gasil_owner", None)
        if own is not None:  # a GASILAlgorithm: its own owner only
            result["gasil"] = own.diagnostics()
            return
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


def _write_owners(path: str, by_group: dict[str, RayGASILOwner]) -> None:
    states = {group: owner.state_dict() for group, owner in by_group.items()}
    save_atomically({"format": _OWNERS_FORMAT, "owners": states}, os.path.join(path, OWNERS_FILE))


def _restore_owners(path, by_group: dict[str, RayGASILOwner], restore_algo, *, any_group=False) -> None:
    """Load ``path``'s owners file into the owners, then ``restore_algo()``; any failure loads them back.

    ``any_group``: one owner given and one saved: load it whatever its group was called (an algorithm's
    own owner, whose group carries the Tune trial id).
    """
    file = os.path.join(str(path), OWNERS_FILE)

    def check(state) -> dict:
        if not isinstance(state, dict) or state.get("format") != _OWNERS_FORMAT:
            raise ValueError(f"not a GASIL owners file (format {_OWNERS_FORMAT!r})")
        saved = state["owners"]
        if any_group and len(saved) == 1 and len(by_group) == 1:
            return {next(iter(by_group)): next(iter(saved.values()))}
        if sorted(saved) != sorted(by_group):
            raise ValueError(f"saved groups {sorted(saved)}, owners given for {sorted(by_group)}")
        return saved

    found = load_file(file, "GASIL owners", "gasil_wrappers.rllib (save_checkpoint, GASILAlgorithm)", check)
    before, loaded = {}, []
    try:
        for group, owner in by_group.items():
            before[group] = owner.state_dict()  # a fresh copy from the actor
            owner.load_state_dict(found[group])
            loaded.append(group)
        restore_algo()
    except BaseException:
        for group in loaded:  # nothing lost: every owner as it was
            by_group[group].load_state_dict(before[group])
        raise


def save_checkpoint(algo, path: str, owners: RayGASILOwner | Sequence[RayGASILOwner]) -> str:
    """``algo.save_to_path(path)``, then each owner's state (buffer, D and its optimizer, counters, rng)
    into ``path/gasil_owners.pt`` (atomic write); returns the checkpoint directory.

    Call it between ``train()`` calls: what env runners have not shipped yet (episodes in progress, less
    than a chunk of samples) is not in the owner and not saved, as with ``owner.state_dict()``.
    (A :class:`GASILAlgorithm` saves its own owner in every checkpoint: no need for this.)
    """
    by_group = _by_group(owners)
    path = str(algo.save_to_path(path))
    _write_owners(path, by_group)
    return path


def restore_checkpoint(algo, path: str, owners: RayGASILOwner | Sequence[RayGASILOwner]) -> None:
    """Restore a :func:`save_checkpoint` directory: each owner's state (published to every env runner),
    then ``algo.restore_from_path(path)``.

    The owners must be running with the saved configs and be exactly the saved groups. A missing or
    corrupt owners file, other groups, or a state an owner refuses raise ``ValueError`` before the algo
    is touched; any failure, the algo's restore included, leaves every owner as it was.
    """
    _restore_owners(path, _by_group(owners), lambda: algo.restore_from_path(path))


class GASILAlgorithm:
    """Mixin for an RLlib ``Algorithm`` class: each instance has its own GASIL owner, in its checkpoints.

    ``class GASILAPPO(GASILAlgorithm, APPO): pass`` (at module level, so checkpoints can name it);
    :class:`GASILPPO` is PPO's. On ``setup`` the algorithm

    - names its group: ``env_config["group"]`` ("default" if not given); under Tune, with the trial id
      appended (``<group>-<trial_id>``), so that trials running side by side never share a buffer or D;
    - starts the owner actor of that group from ``config.env`` (a ``gasil_wrappers:`` id) and
      ``env_config`` (or, if one of that name already runs, e.g. started by you, joins it and leaves it
      running at the end);
    - adds :class:`GASILCallback` to the callbacks if they lack it, first (so your ``on_train_result``
      sees ``result["gasil"]``);
    - evaluates on the task without GASIL (``evaluation_config``'s ``env_config``, unless you set one:
      ``gasil`` and ``top_k`` off, as :func:`~gasil_wrappers.make_eval_env`), so evaluation never feeds
      the owner and reports the true (delayed) return;

    then builds as its base class does. ``result["gasil"]`` holds this owner's diagnostics only. Every
    checkpoint, ``algo.save_to_path()`` and Tune's alike, writes the owner's state as ``gasil_owners.pt``
    beside the algorithm's; ``restore_from_path`` (so ``Algorithm.from_checkpoint``, ``algo.restore``
    and Tune's trial restores) loads it first, refuses a missing or corrupt file with ``ValueError``
    before anything changes, and loads the owner back as it was if the algorithm's own restore fails. A
    restore of a component only (``component=...``) leaves the owner alone. ``stop()`` kills the owner
    it started. New API stack only, local checkpoint paths only.
    """

    gasil_owner: RayGASILOwner | None = None

    def __init__(self, config=None, *args, **kwargs):
        # Tune puts the trial into the config dict; RLlib's config conversion drops it before Trainable
        # would keep it (self.trial_id is "default" in an RLlib trial), so take it here.
        from ray.tune.result import TRIAL_INFO

        trial = config.get(TRIAL_INFO) if isinstance(config, dict) else None
        self._gasil_trial_id = getattr(trial, "trial_id", None)
        super().__init__(config, *args, **kwargs)

    def setup(self, config) -> None:
        from ray.rllib.utils import force_list

        env_config = dict(self.config.env_config)
        group = str(env_config.get("group", "default"))
        if self._gasil_trial_id:  # a Tune trial: its own owner
            group = f"{group}-{self._gasil_trial_id}"
        callbacks = force_list(self.config.callbacks_class)
        missing = not any(isinstance(c, type) and issubclass(c, GASILCallback) for c in callbacks)
        evaluation = self.config.evaluation_config
        if isinstance(evaluation, dict) or evaluation is None:
            evaluation = dict(evaluation or {})
            evaluation.setdefault("env_config", {**env_config, "group": group, **EVAL_SETTINGS})
        cfg = self.config.copy(copy_frozen=False)
        cfg.env_config = {**env_config, "group": group}
        cfg.evaluation_config = evaluation
        if missing:
            cfg.callbacks_class = [GASILCallback, *callbacks]  # first: yours see result["gasil"]
        cfg.freeze()
        self.config = cfg
        try:
            gasil_config = RayGASILOwner.for_env_id(str(self.config.env), **self.config.env_config)
        except Exception as e:
            raise ValueError(f"{type(self).__name__}: config.env must be a gasil_wrappers: id with its "
                             f"settings in env_config, got {self.config.env!r} ({e})") from None
        try:
            self.gasil_owner = RayGASILOwner.connect(group, namespace=GASILCallback.namespace)
        except GASILOwnerError:
            self.gasil_owner = RayGASILOwner.start(gasil_config, namespace=GASILCallback.namespace)
        try:
            super().setup(config)
        except BaseException:
            self.gasil_owner.close()
            raise

    @property
    def gasil_group(self) -> str:
        return self.gasil_owner.config.group

    def save_to_path(self, path=None, *, state=None, filesystem=None, use_msgpack=False) -> str:
        if filesystem is not None:
            raise ValueError(f"{type(self).__name__} saves its GASIL owner to local paths only "
                             f"(no filesystem=)")
        path = str(super().save_to_path(path, state=state, use_msgpack=use_msgpack))
        _write_owners(path, {self.gasil_group: self.gasil_owner})
        return path

    def restore_from_path(self, path, *args, **kwargs) -> None:
        restore = super().restore_from_path
        if kwargs.get("component") is not None:
            return restore(path, *args, **kwargs)
        _restore_owners(path, {self.gasil_group: self.gasil_owner}, lambda: restore(path, *args, **kwargs),
                        any_group=True)

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            if self.gasil_owner is not None:
                self.gasil_owner.close()  # kills the actor only if this algorithm started it


class GASILPPO(GASILAlgorithm, PPO):
    """RLlib's PPO with its own GASIL owner (:class:`GASILAlgorithm`): ``tune.Tuner(GASILPPO, ...)``."""
