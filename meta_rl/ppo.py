"""PPO over the Env contract, feed-forward or recurrent: the core every learner builds on.

``make_train(config, env) -> train`` where ``train(key) -> (params, metrics)`` runs the whole
training as one ``lax.scan`` of updates, pure and un-jitted (``jax.jit(jax.vmap(train))(keys)``
trains several seeds at once). The same object exposes the pieces the run loop needs to checkpoint
between chunks: ``init(key)``, ``update(train_state)`` and ``run(train_state, num_updates)``; a
chunked run and one whole scan take identical steps.

One update: collect ``num_steps`` x ``num_envs`` transitions (:mod:`meta_rl.rollout`), then
:func:`ppo_update`, the one PPO update every learner that needs one reuses. A minibatch whose loss or
gradient is not finite is skipped and counted in ``metrics["nonfinite"]``; the run loop stops on it
(:mod:`proteus.runs`).

Two learners are registered from here (:mod:`meta_rl.learners`): ``ppo`` (feed-forward, a fresh world
every episode) and ``rl2`` (recurrent, trials), both with :class:`PPOConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import optax
import tyro
from flax import struct

from meta_rl.agent import PolicyAgent
from meta_rl.learners import Learner
from meta_rl.losses import gae, ppo_loss
from meta_rl.networks import KINDS, Policy, PolicySpec
from meta_rl.presets import ppo_preset, rl2_preset
from meta_rl.rollout import Runner, Transition, collect, evaluate_sequence, next_values, start
from sim.core import Env
from sim.normalize import update_stats
from sim.wrappers import Trial


class ConfigError(ValueError):
    """A config field refused at construction: ``str()`` reads ``PPOConfig.lr=inf: must be finite``.

    Attributes:
        owner: the config class's name.
        field: the refused field.
        value: its value.
        why: what the value must be.
    """

    def __init__(self, owner: str, field: str, value: Any, why: str):
        super().__init__(f"{owner}.{field}={value!r}: {why}")
        self.owner, self.field, self.value, self.why = owner, field, value, why


_INT32_MAX = 2**31 - 1
_MAX_WIDTH = 65_536
_INT_BOUNDS = {"total_steps": 2**62, "num_envs": 2**24, "num_steps": 2**20, "update_epochs": 10_000,
               "num_minibatches": 2**24, "core_size": _MAX_WIDTH}
"""Integer fields and their upper bounds: counters stay far from overflow (update and optimizer-step
counts must also fit int32, checked in :class:`PPOConfig`)."""
_FLOAT_FIELDS = ("lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm", "reward_scale",
                 "init_log_std")
_LOG_STD = (-20.0, 5.0)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (defaults: a feed-forward agent under domain randomization).

    Attributes:
        total_steps: env steps over the whole run (rounded down to whole updates).
        num_envs: parallel envs (worlds) in the batch.
        num_steps: rollout length per update, per env.
        update_epochs: passes over each rollout.
        num_minibatches: minibatches per pass (split over envs for recurrent policies).
        lr: Adam learning rate.
        anneal_lr: decay the learning rate linearly to 0 over the run.
        gamma: discount.
        gae_lambda: GAE lambda.
        clip_eps: PPO ratio (and value) clip.
        ent_coef: entropy bonus.
        vf_coef: value loss weight.
        max_grad_norm: global gradient norm clip.
        reward_scale: rewards are multiplied by this in the loss (not in reported returns).
        network: ``mlp``, ``gru`` or ``lstm``.
        hidden: MLP torso widths.
        core_size: recurrent core width.
        normalize_obs: running observation normalization inside the policy.
        init_log_std: initial Gaussian log std (continuous actions).
    """

    total_steps: Annotated[int, tyro.conf.arg(aliases=("--steps",))] = 2_000_000
    num_envs: int = 64
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float = 1.0
    network: str = "mlp"
    hidden: tuple[int, ...] = (64, 64)
    core_size: int = 128
    normalize_obs: bool = True
    init_log_std: float = -0.5

    def __post_init__(self):
        def bad(field, why):
            raise ConfigError(type(self).__name__, field, getattr(self, field), why)

        for f, hi in _INT_BOUNDS.items():
            v = getattr(self, f)
            if not _is_int(v):
                bad(f, "must be an integer")
            if not 1 <= v <= hi:
                bad(f, f"must lie in [1, {hi:_}]")
        for f in ("anneal_lr", "normalize_obs"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "must be True or False")
        for f in _FLOAT_FIELDS:
            if isinstance(getattr(self, f), bool) or not isinstance(getattr(self, f), numbers.Real):
                bad(f, "must be a number")
            if not math.isfinite(getattr(self, f)):
                bad(f, "must be finite")
        for f in ("lr", "clip_eps", "max_grad_norm", "reward_scale"):
            if not getattr(self, f) > 0:
                bad(f, "must be > 0")
        for f in ("ent_coef", "vf_coef"):
            if getattr(self, f) < 0:
                bad(f, "must be >= 0")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must lie in (0, 1]")
        if not 0 <= self.gae_lambda <= 1:
            bad("gae_lambda", "must lie in [0, 1]")
        if not _LOG_STD[0] <= self.init_log_std <= _LOG_STD[1]:
            bad("init_log_std", f"must lie in [{_LOG_STD[0]}, {_LOG_STD[1]}]")
        if not isinstance(self.hidden, tuple) or not all(_is_int(h) and 1 <= h <= _MAX_WIDTH for h in self.hidden):
            bad("hidden", f"must be a tuple of integer widths in [1, {_MAX_WIDTH:_}]")
        if self.network not in KINDS:
            bad("network", f"must be one of {KINDS}")
        if self.steps_per_update > _INT32_MAX:
            bad("num_envs", f"times num_steps ({self.steps_per_update:_} transitions per update) must be <= {_INT32_MAX:_}")
        if self.network == "mlp":
            if (self.num_envs * self.num_steps) % self.num_minibatches:
                bad("num_minibatches", f"must divide num_envs * num_steps = {self.num_envs * self.num_steps}")
        elif self.num_envs % self.num_minibatches:
            bad("num_minibatches", f"must divide num_envs = {self.num_envs} (recurrent minibatches are whole sequences)")
        if self.total_steps < self.steps_per_update:
            bad("total_steps", f"is less than one update (num_envs * num_steps = {self.steps_per_update})")
        if self.num_updates * self.update_epochs * self.num_minibatches > _INT32_MAX:
            bad("total_steps", f"makes {self.num_updates:_} updates x {self.update_epochs} epochs x "
                               f"{self.num_minibatches} minibatches, more optimizer steps than the int32 counters "
                               f"hold ({_INT32_MAX:_})")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update


@struct.dataclass
class PPOHyper:
    """PPO quantities passed as traced arrays, so a meta-learner can learn them (meta-gradient RL moves
    ``gamma`` and ``gae_lambda``) and a change of value never recompiles. Built from the config by
    :meth:`from_config`; kept in the train state.

    Attributes:
        gamma: discount.
        gae_lambda: GAE lambda.
    """

    gamma: jax.Array
    gae_lambda: jax.Array

    @classmethod
    def from_config(cls, c: PPOConfig) -> "PPOHyper":
        return cls(jnp.asarray(c.gamma, jnp.float32), jnp.asarray(c.gae_lambda, jnp.float32))


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: weights, optimizer, envs, keys, counters."""

    params: Any
    opt_state: Any
    runner: Runner
    key: jax.Array
    update: jax.Array
    hyper: PPOHyper


def _is_trial(env: Env) -> bool:
    e = env
    while e is not None:
        if isinstance(e, Trial):
            return True
        e = getattr(e, "env", None)
    return False


def make_optimizer(c: PPOConfig) -> optax.GradientTransformation:
    """Adam with global-norm clipping, the learning rate annealed linearly to 0 over the run when asked."""
    steps = c.num_updates * c.update_epochs * c.num_minibatches
    lr = optax.linear_schedule(c.lr, 0.0, steps) if c.anneal_lr else c.lr
    return optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(lr, eps=1e-5))


def policy_spec(c: PPOConfig, env: Env) -> PolicySpec:
    """The policy a PPO config builds for ``env``."""
    return PolicySpec.for_env(env, c.network, hidden=tuple(c.hidden), core_size=c.core_size,
                              normalize_obs=c.normalize_obs, init_log_std=c.init_log_std)


def ppo_update(
    c: PPOConfig,
    policy: Policy,
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    traj: Transition,
    last_value: jax.Array,
    carry0: Any,
    hyper: PPOHyper,
    key: jax.Array,
) -> tuple[Any, Any, dict]:
    """One PPO update from a collected rollout (pure; every learner that needs PPO calls this).

    GAE (truncation bootstrapped, ``hyper.gamma``/``hyper.gae_lambda`` traced), then
    ``c.update_epochs`` passes of ``c.num_minibatches`` clipped-PPO steps. Recurrent policies keep
    whole sequences in a minibatch (split over envs) replayed from ``carry0``, the carry the rollout
    started with; feed-forward ones shuffle single transitions. A minibatch whose loss or gradient is
    not finite is skipped and counted in ``metrics["nonfinite"]``. Observation statistics move after
    the update, so it saw consistent inputs.

    Args:
        traj: [T, B] transitions (:func:`meta_rl.rollout.collect`); ``last_value`` [B] V after them.

    Returns:
        (params, opt_state, metrics): metrics are scalars (means over minibatches, ``nonfinite`` summed).
    """
    spec = policy.spec
    num_envs = traj.reward.shape[1]
    adv, returns = gae(traj.reward * c.reward_scale, traj.value, next_values(traj, last_value), traj.terminated,
                       traj.done, hyper.gamma, hyper.gae_lambda)
    # values live in scaled-reward units; next_values came from the same value head
    stats = params["obs_norm"]

    def loss_fn(net, mb):
        p = {"net": net, "obs_norm": stats}
        if spec.recurrent:
            log_prob, entropy, value = evaluate_sequence(policy, p, mb["carry0"], mb["obs"], mb["first"], mb["action"])
        else:
            _, dist, value = policy.apply(p, policy.init_carry(mb["adv"].shape[0]), mb["obs"])
            log_prob, entropy = dist.log_prob(mb["action"]), dist.entropy()
        a = mb["adv"]
        a = (a - a.mean()) / (a.std() + 1e-8)
        return ppo_loss(log_prob, mb["log_prob"], a, value, mb["value"], mb["returns"], entropy,
                        clip_eps=c.clip_eps, vf_coef=c.vf_coef, ent_coef=c.ent_coef)

    data = {"obs": traj.obs, "first": traj.first, "action": traj.action, "log_prob": traj.log_prob,
            "value": traj.value, "adv": adv, "returns": returns}

    def minibatches(k):
        if spec.recurrent:  # whole sequences: split the env axis
            perm = jax.random.permutation(k, num_envs).reshape(c.num_minibatches, -1)
            mbs = jax.tree.map(lambda x: jnp.swapaxes(x[:, perm], 0, 1), data)  # [M, T, b, ...]
            mbs["carry0"] = jax.tree.map(lambda x: x[perm], carry0)
            return mbs
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
        perm = jax.random.permutation(k, flat["adv"].shape[0]).reshape(c.num_minibatches, -1)
        return jax.tree.map(lambda x: x[perm], flat)

    def sgd_step(carry, mb):
        net, opt = carry
        (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(net, mb)
        updates, new_opt = optimizer.update(grads, opt, net)
        new_net = optax.apply_updates(net, updates)
        finite = jnp.isfinite(parts["loss"]) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        return (keep(new_net, net), keep(new_opt, opt)), {**parts, "nonfinite": (~finite).astype(jnp.int32)}

    def epoch(carry, k):
        return jax.lax.scan(sgd_step, carry, minibatches(k))

    (net, opt_state), parts = jax.lax.scan(epoch, (params["net"], opt_state), jax.random.split(key, c.update_epochs))
    if spec.normalize_obs:
        stats = update_stats(stats, traj.obs)
    metrics = {k: v.mean() for k, v in parts.items() if k != "nonfinite"}
    metrics["nonfinite"] = parts["nonfinite"].sum()
    return {"net": net, "obs_norm": stats}, opt_state, metrics


def rollout_metrics(traj: Transition) -> dict:
    """Episode (trial) return and length of the episodes that ended in a rollout, mean reward, env counters."""
    n_done = traj.done.sum()
    metrics = dict(
        episodes=n_done,
        episode_return=jnp.where(n_done > 0, traj.finished_return.sum() / jnp.maximum(n_done, 1), jnp.nan),
        episode_length=jnp.where(n_done > 0, traj.finished_length.sum() / jnp.maximum(n_done, 1), jnp.nan),
        reward=traj.reward.mean(),
    )
    if isinstance(traj.env_metrics, dict):  # env counters, summed over the rollout (e.g. unstable)
        metrics.update({f"env/{k}": v.sum().astype(jnp.float32) for k, v in traj.env_metrics.items()})
    return metrics


class Trainer:
    """PPO on one batched env (see the module docstring). Call it as ``train(key)``.

    Every method is pure and un-jitted (DESIGN.md's learner contract): the caller jits, vmaps over
    seeds, or places the state on devices.
    """

    def __init__(self, config: PPOConfig, env: Env, split: str = "train"):
        self.config = c = config
        if env.batch_shape != (c.num_envs,):
            raise ValueError(f"env batch {env.batch_shape} does not match num_envs={c.num_envs}")
        if c.network != "mlp" and not _is_trial(env):
            raise ValueError(
                f"network={c.network!r} is recurrent but {env.id} is not a trial env: recurrent (RL²) "
                "policies need trials (sim.make(..., mode='trial')); use network='mlp' for domain randomization"
            )
        self.env = env
        self.split = split
        self.spec = policy_spec(c, env)
        self.policy = Policy(self.spec)
        self.optimizer = make_optimizer(c)

    def init(self, key: jax.Array) -> TrainState:
        k_net, k_env, k_next = jax.random.split(key, 3)
        params = self.policy.init(k_net)
        runner = start(self.env, self.policy, k_env, self.split)
        return TrainState(params, self.optimizer.init(params["net"]), runner, k_next, jnp.zeros((), jnp.int32),
                          PPOHyper.from_config(self.config))

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        """One PPO update (pure): a rollout, then :func:`ppo_update`."""
        key, k_roll, k_upd = jax.random.split(ts.key, 3)
        carry0 = ts.runner.carry
        runner, traj, last_value = collect(self.env, self.policy, ts.params, ts.runner, k_roll, self.config.num_steps)
        params, opt_state, metrics = ppo_update(self.config, self.policy, self.optimizer, ts.params, ts.opt_state,
                                                traj, last_value, carry0, ts.hyper, k_upd)
        metrics.update(rollout_metrics(traj))
        return ts.replace(params=params, opt_state=opt_state, runner=runner, key=key, update=ts.update + 1), metrics

    def run(self, ts: TrainState, num_updates: int) -> tuple[TrainState, dict]:
        """``num_updates`` updates in one ``lax.scan``; metrics stacked [num_updates]."""
        return jax.lax.scan(lambda t, _: self.update(t), ts, None, length=int(num_updates))

    def agent_params(self, ts: TrainState) -> Any:
        return ts.params

    def __call__(self, key: jax.Array) -> tuple[Any, dict]:
        """Train from scratch: ``(params, metrics [num_updates])``."""
        ts, metrics = self.run(self.init(key), self.config.num_updates)
        return ts.params, metrics


def make_train(config: PPOConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)`` (DESIGN.md's learner contract)."""
    return Trainer(config, env, split)


def _make_agent(c: PPOConfig, env: Env, params: Any, deterministic: bool) -> PolicyAgent:
    return PolicyAgent(params, Policy(policy_spec(c, env)), deterministic)


def _learner(name: str, description: str, mode: str, presets) -> Learner:
    return Learner(
        name=name,
        description=description,
        config=PPOConfig,
        make_train=make_train,
        init_agent_params=lambda c, env, key: Policy(policy_spec(c, env)).init(key),
        make_agent=_make_agent,
        env_mode=lambda c: mode,
        presets=presets,
        steps_per_update=lambda c: c.steps_per_update,
        num_updates=lambda c: c.num_updates,
        policy_spec=policy_spec,
        env_batch=lambda c: c.num_envs,
    )


PPO_LEARNER = _learner("ppo", "feed-forward PPO under domain randomization (a new world every episode)", "fresh",
                       ppo_preset)
RL2_LEARNER = _learner("rl2", "RL² (Duan et al. 2016): a recurrent policy over trials of K episodes in one world",
                       "trial", rl2_preset)
