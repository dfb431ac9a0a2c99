"""The learner registry: every learner plugs into runs, resume, eval, export and bench through it.

A learner is a module under ``meta_rl/`` that calls :func:`register` with a :class:`Learner`:

* ``name``: what ``proteus train NAME`` takes;
* ``config``: its frozen, documented config dataclass (the CLI renders its fields as flags);
* ``presets(env_id) -> dict``: field overrides per env family (the defaults ``proteus train`` starts from);
* ``env_mode(config) -> str``: the env mode it trains in (``sim.make(mode=...)``: ``trial``, ``fixed`` or ``fresh``);
* ``make_train(config, env) -> Trainer``: the :class:`Trainer` protocol below, ``trainer(key)`` pure;
* ``init_agent_params(config, env, key)``: a template of the agent's parameters (what a run saves);
* ``make_agent(config, env, params, deterministic) -> Agent``: the test-time agent (:mod:`meta_rl.agent`);
* ``env_batch(config)``, ``steps_per_update(config)``, ``num_updates(config)``: the run's shape.

Nothing above ``meta_rl/`` branches on a learner's name. The built-in learners register in
:func:`_register_builtin`; a new learner adds its module and one entry there.

This module, the configs (:mod:`meta_rl.configs`) and the presets import no JAX: the CLI lists learners,
renders their flags and refuses bad values in well under a second. The entries' heavy callables are
:func:`lazy` references that import the learner's module on first call.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:  # annotations only: importing this module loads no JAX
    import jax

    from sim.core import Env


class Trainer(Protocol):
    """What ``make_train(config, env)`` returns.

    ``init(key) -> train_state`` and ``update(train_state) -> (train_state, metrics)`` are pure; so is
    ``run(train_state, n)`` (``n`` updates in one ``lax.scan``, metrics stacked ``[n]``) and
    ``trainer(key) -> (agent_params, metrics)``, the whole training. None of them jits or places
    anything on a device: the caller decides (``jax.jit(jax.vmap(trainer))(keys)`` trains several seeds
    at once). ``train_state.update`` counts updates done; ``metrics["nonfinite"]`` counts skipped
    non-finite steps (the run loop stops on them). ``agent_params(train_state)`` is what the agent and
    the saved policy need.
    """

    config: Any
    env: Env

    def init(self, key: jax.Array) -> Any: ...

    def update(self, train_state: Any) -> tuple[Any, dict]: ...

    def run(self, train_state: Any, num_updates: int) -> tuple[Any, dict]: ...

    def agent_params(self, train_state: Any) -> Any: ...

    def __call__(self, key: jax.Array) -> tuple[Any, dict]: ...


class ScanTrainer:
    """What every trainer shares once it has ``config`` (with ``num_updates``), ``init(key)`` and
    ``update(ts)``: :meth:`run` (updates in one ``lax.scan``), :meth:`agent_params` (``ts.params``) and
    ``trainer(key)``, the whole training. Subclass it; pure and un-jitted like the rest."""

    step_on_host = False
    """Callers should loop over updates on the host (one jitted :meth:`update` per call) instead of
    jitting :meth:`run`: set by trainers whose update holds convolutions, which XLA's CPU backend runs
    many times slower inside a loop body (:func:`meta_rl.ppo.ppo_update`)."""

    def run(self, ts: Any, num_updates: int) -> tuple[Any, dict]:
        """``num_updates`` updates in one ``lax.scan``; metrics stacked [num_updates]."""
        import jax

        return jax.lax.scan(lambda t, _: self.update(t), ts, None, length=int(num_updates))

    def agent_params(self, ts: Any) -> Any:
        return ts.params

    def __call__(self, key: jax.Array) -> tuple[Any, dict]:
        """Train from scratch: ``(params, metrics [num_updates])``."""
        ts, metrics = self.run(self.init(key), self.config.num_updates)
        return self.agent_params(ts), metrics


@dataclasses.dataclass(frozen=True)
class Learner:
    """A registered learner (see the module docstring).

    Attributes:
        name: registry name (``proteus train NAME``).
        description: one line for ``proteus train --help``.
        config: the frozen config dataclass.
        make_train: ``(config, env) -> Trainer``.
        init_agent_params: ``(config, env, key) -> params`` template of the agent's parameters.
        make_agent: ``(config, env, params, deterministic) -> Agent``.
        env_mode: ``config -> mode`` the learner trains in.
        presets: ``env_id -> dict`` of config overrides for that env (its family's preset).
        steps_per_update: ``config -> int`` env steps one update consumes (progress, logs).
        num_updates: ``config -> int`` updates in the whole run.
        policy_spec: ``(config, env) -> PolicySpec`` naming the agent's observations and actions.
        env_batch: ``config -> int`` (or a batch shape) of the worlds the training env steps in parallel
            (``sim.make(batch_size=...)``).
        finetune_agent: for learners that adapt by gradient, ``(config, env, policy_spec, params) -> Agent``:
            the learner's test-time adaptation applied to *another* policy (a DR-PPO policy, a random
            initialization): the comparisons of the MAML paper (``proteus eval --finetune``). ``None``:
            the learner does not adapt by gradient.
        export_agent: ``(config, env, params) -> Agent`` whose ``policy_step`` ``proteus export`` writes
            (``None``: the deterministic ``make_agent``).
        adapt_function: ``(config, policy_spec, obs_norm) -> f(state, episodes) -> state``: the inner step
            on a robot's recorded episodes over the export agent's state (``adapt.onnx``, ``proteus adapt``).
        adapt_params: ``(config, env, params, episodes) -> params``: ``proteus adapt`` for a learner whose
            adaptation moves more than the export agent's state (MAESN's latent distribution); used
            instead of ``adapt_function`` when given.
    """

    name: str
    description: str
    config: type
    make_train: Callable[[Any, Env], Trainer]
    init_agent_params: Callable[[Any, Env, jax.Array], Any]
    make_agent: Callable[[Any, Env, Any, bool], Any]
    env_mode: Callable[[Any], str]
    presets: Callable[[str], dict]
    steps_per_update: Callable[[Any], int]
    num_updates: Callable[[Any], int]
    policy_spec: Callable[[Any, Env], Any]
    env_batch: Callable[[Any], Any]
    finetune_agent: Callable[[Any, Env, Any, Any], Any] | None = None
    export_agent: Callable[[Any, Env, Any], Any] | None = None
    adapt_function: Callable[[Any, Any, Any], Any] | None = None
    adapt_params: Callable[[Any, Env, Any, dict], Any] | None = None

    def default_config(self, env_id: str, **overrides) -> Any:
        """The preset for ``env_id`` with ``overrides`` applied (unknown fields are named)."""
        fields = {f.name for f in dataclasses.fields(self.config)}
        bad = sorted(set(overrides) - fields)
        if bad:
            raise ValueError(f"{self.name} has no config field(s) {', '.join(bad)}; fields: {', '.join(sorted(fields))}")
        return self.config(**{**self.presets(env_id), **overrides})

    def config_from_dict(self, d: dict) -> Any:
        """Rebuild a config from ``dataclasses.asdict`` output read back from JSON (lists -> tuples)."""
        fields = {f.name for f in dataclasses.fields(self.config)}
        bad = sorted(set(d) - fields)
        if bad:
            raise ValueError(f"unknown {self.name} config field(s) {', '.join(bad)}")
        out = {}
        for k, v in d.items():
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            out[k] = v
        return self.config(**out)


_REGISTRY: dict[str, Learner] = {}


def register(learner: Learner, *, replace: bool = False) -> Learner:
    """Add a learner; a second one under the same name is refused unless ``replace``."""
    if not replace and learner.name in _REGISTRY and _REGISTRY[learner.name] is not learner:
        raise ValueError(f"learner {learner.name!r} is already registered")
    _REGISTRY[learner.name] = learner
    return learner


def unregister(name: str) -> None:
    """Remove a learner (tests that register toy learners clean up with this)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Registered learner names, in registration order."""
    _register_builtin()
    return list(_REGISTRY)


def get(name: str) -> Learner:
    """The learner called ``name``; an unknown name raises listing the known ones."""
    _register_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown learner {name!r}.{hint} Known learners: {', '.join(_REGISTRY)}") from None


def lazy(target: str) -> Callable:
    """``"module:function"`` as a callable that imports ``module`` on its first call, so a registry entry
    can name a learner's JAX code without loading it (``lazy("meta_rl.ppo:make_train")``)."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"lazy target must read 'module:function', got {target!r}")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = attr
    call.__qualname__ = call.__doc__ = target
    return call


def _ppo_family(name: str, description: str, mode: str, presets: Callable[[str], dict]) -> Learner:
    """A learner on the PPO core (:mod:`meta_rl.ppo`) with :class:`meta_rl.configs.PPOConfig`."""
    from meta_rl.configs import PPOConfig

    return Learner(
        name=name,
        description=description,
        config=PPOConfig,
        make_train=lazy("meta_rl.ppo:make_train"),
        init_agent_params=lazy("meta_rl.ppo:init_agent_params"),
        make_agent=lazy("meta_rl.ppo:make_agent"),
        env_mode=lambda c: mode,
        presets=presets,
        steps_per_update=lambda c: c.steps_per_update,
        num_updates=lambda c: c.num_updates,
        policy_spec=lazy("meta_rl.ppo:policy_spec"),
        env_batch=lambda c: c.num_envs,
    )


_BUILTIN_DONE = False


def _register_builtin() -> None:
    """The built-in learners: one entry each."""
    global _BUILTIN_DONE
    if _BUILTIN_DONE:
        return
    _BUILTIN_DONE = True
    from meta_rl import configs, presets
    from meta_rl.presets import episodic_lstm_preset, ppo_preset, rl2_preset

    register(_ppo_family("ppo", "feed-forward PPO under domain randomization (a new world every episode)", "fresh",
                         ppo_preset))
    register(_ppo_family("rl2", "RL² (Duan et al. 2016): a recurrent policy over trials of K episodes in one "
                                "world", "trial", rl2_preset))
    register(_ppo_family("episodic-lstm", "episodic LSTM (Ritter et al. 2018): RL² with a reinstatement gate and a "
                                          "DND of cell states keyed by the context cue", "trial", episodic_lstm_preset))
    register(_gradient_meta("maml", "MAML (Finn et al. 2017): a policy-gradient inner step per world, TRPO outer "
                                    "step through it", "MAMLConfig", "maml_preset", "meta_rl.maml"))
    register(_value_based("mfec", "model-free episodic control (Blundell et al. 2016): a DND per action of the best "
                                  "returns seen, greedy on its k-nearest-neighbour values", "MFECConfig"))
    register(_value_based("dqn", "DQN with experience replay (Mnih et al. 2015; Double DQN targets): NEC's "
                                 "baseline", "DQNConfig"))
    register(_value_based("nec", "neural episodic control (Pritzel et al. 2017): a learned embedding keys a DND per "
                                 "action; N-step Q targets, replay, keys and values trained", "NECConfig"))
    register(Learner(
        name="epg",
        description="EPG (Houthooft et al. 2018): a policy-gradient loss network evolved by OpenES over the "
                    "lifetimes of fresh agents; `proteus train ppo --loss RUN` trains with it",
        config=configs.EPGConfig,
        make_train=lazy("meta_rl.epg:make_train"),
        init_agent_params=lazy("meta_rl.epg:init_agent_params"),
        make_agent=lazy("meta_rl.epg:make_agent"),
        env_mode=lambda c: "fixed",
        presets=presets.epg_preset,
        steps_per_update=lambda c: c.steps_per_update,
        num_updates=lambda c: c.num_updates,
        policy_spec=lazy("meta_rl.epg:policy_spec"),
        env_batch=lambda c: (c.population, c.envs_per_lifetime),
    ))
    register(Learner(
        name="maesn",
        description="MAESN (Gupta et al. 2018): a latent drawn once per episode conditions the policy; each "
                    "training task's latent distribution adapts by a meta-learned policy-gradient step",
        config=configs.MAESNConfig,
        make_train=lazy("meta_rl.maesn:make_train"),
        init_agent_params=lazy("meta_rl.maesn:init_agent_params"),
        make_agent=lazy("meta_rl.maesn:make_agent"),
        env_mode=lambda c: "fixed",
        presets=presets.maesn_preset,
        steps_per_update=lambda c: c.steps_per_update,
        num_updates=lambda c: c.num_updates,
        policy_spec=lazy("meta_rl.maesn:policy_spec"),
        env_batch=lambda c: (c.meta_batch, c.rollouts_per_task),
        finetune_agent=lazy("meta_rl.maesn:finetune_agent"),
        export_agent=lazy("meta_rl.maesn:export_agent"),
        adapt_params=lazy("meta_rl.maesn:adapt_params"),
    ))
    register(_gradient_meta("promp", "ProMP (Rothfuss et al. 2019): MAML with the LVC inner estimator and a clipped "
                                     "PPO outer step", "ProMPConfig", "promp_preset", "meta_rl.promp"))


def _value_based(name: str, description: str, config: str) -> Learner:
    """A value-based learner (:mod:`meta_rl.value`) in ``meta_rl.<name>``, preset ``<name>_preset``; it
    trains with a fresh world every episode."""
    from meta_rl import configs, presets

    module = f"meta_rl.{name}"
    return Learner(
        name=name,
        description=description,
        config=getattr(configs, config),
        make_train=lazy(f"{module}:make_train"),
        init_agent_params=lazy(f"{module}:init_agent_params"),
        make_agent=lazy(f"{module}:make_agent"),
        env_mode=lambda c: "fresh",
        presets=getattr(presets, f"{name}_preset"),
        steps_per_update=lambda c: c.steps_per_update,
        num_updates=lambda c: c.num_updates,
        policy_spec=lazy(f"{module}:policy_spec"),
        env_batch=lambda c: c.num_envs,
    )


def _gradient_meta(name: str, description: str, config: str, preset: str, module: str) -> Learner:
    """A learner on MAML's trainer and agent (:mod:`meta_rl.maml`); ``module`` gives its ``make_train``."""
    from meta_rl import configs, presets

    return Learner(
        name=name,
        description=description,
        config=getattr(configs, config),
        make_train=lazy(f"{module}:make_train"),
        init_agent_params=lazy("meta_rl.maml:init_agent_params"),
        make_agent=lazy("meta_rl.maml:make_agent"),
        env_mode=lambda c: "fixed",
        presets=getattr(presets, preset),
        steps_per_update=lambda c: c.steps_per_update,
        num_updates=lambda c: c.num_updates,
        policy_spec=lazy("meta_rl.maml:policy_spec"),
        env_batch=lambda c: (c.meta_batch, c.rollouts_per_task),
        finetune_agent=lazy("meta_rl.maml:finetune_agent"),
        export_agent=lazy("meta_rl.maml:export_agent"),
        adapt_function=lazy("meta_rl.maml:adapt_function"),
    )
