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

Two learners run on this module (registered in :mod:`meta_rl.learners`): ``ppo`` (feed-forward, a fresh
world every episode) and ``rl2`` (recurrent, trials), both with :class:`meta_rl.configs.PPOConfig`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from meta_rl import popart
from meta_rl.agent import PolicyAgent
from meta_rl.learners import ScanTrainer
from meta_rl.losses import gae, ppo_loss
from meta_rl.configs import ConfigError, PPOConfig  # noqa: F401 (re-exported: meta_rl.ppo.PPOConfig)
from meta_rl.networks import Policy, PolicySpec
from meta_rl.rollout import Runner, Transition, collect, evaluate_sequence, next_values, start
from sim.core import Env
from sim.normalize import update_stats
from sim.wrappers import Trial


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
    meta_opt: Any = ()  # Adam state of the meta-parameters (meta_gradient only; no leaves otherwise)


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
                              memory_capacity=c.memory_capacity, embed=c.embed, heads=tuple(c.heads),
                              value_norm=c.value_norm, core_norm=c.core_norm,
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
    vn = params.get("value_norm")  # PopArt: the value loss on normalized values (fixed within the update)

    def normed(v):
        return v if vn is None else (v - vn.mu) / vn.sigma

    def loss_fn(net, mb):
        p = {**params, "net": net}
        if spec.recurrent:
            log_prob, entropy, value = evaluate_sequence(policy, p, mb["carry0"], mb["obs"], mb["first"], mb["action"])
        else:
            _, dist, value = policy.apply(p, policy.init_carry(mb["adv"].shape[0]), mb["obs"])
            log_prob, entropy = dist.log_prob(mb["action"]), dist.entropy()
        a = mb["adv"]
        a = (a - a.mean()) / (a.std() + 1e-8)
        return ppo_loss(log_prob, mb["log_prob"], a, normed(value), normed(mb["value"]), normed(mb["returns"]), entropy,
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

    # XLA's CPU convolutions run ~35x slower inside a loop body (measured: 4 minibatch gradients of a
    # GRU over 100 steps of 64x64 images, 0.96 s unrolled, 34 s in a scan), so a policy that reads
    # images unrolls its epochs and minibatches; the steps taken are the same
    unroll = any(k == "image" for _, _, k in spec.obs_parts)

    def epoch(carry, k):
        return jax.lax.scan(sgd_step, carry, minibatches(k), unroll=unroll)

    (net, opt_state), parts = jax.lax.scan(epoch, (params["net"], opt_state), jax.random.split(key, c.update_epochs),
                                           unroll=unroll)
    if spec.normalize_obs:
        stats = update_stats(stats, traj.obs)
    metrics = {k: v.mean() for k, v in parts.items() if k != "nonfinite"}
    metrics["nonfinite"] = parts["nonfinite"].sum()
    new_params = {**params, "net": net, "obs_norm": stats}
    if vn is not None:  # move the statistics to this update's targets, the head keeping its outputs
        new_vn = popart.update(vn, returns, c.value_norm_beta)
        head = popart.preserve_outputs(net["params"]["value"], vn, new_vn)
        new_params["net"] = {**net, "params": {**net["params"], "value": head}}
        new_params["value_norm"] = new_vn
        metrics.update(value_mu=new_vn.mu, value_sigma=new_vn.sigma)
    return new_params, opt_state, metrics


def _logit(p: jax.Array) -> jax.Array:
    return jnp.log(p) - jnp.log1p(-p)


def meta_gradient_step(c: PPOConfig, policy: Policy, params: Any, traj: Transition, last_value: jax.Array,
                       carry0: Any, hyper: PPOHyper, meta_opt: Any, meta_optimizer) -> tuple[PPOHyper, Any, dict]:
    """One meta-gradient step on ``gamma`` and ``gae_lambda`` (Xu et al. 2018), pure.

    The envs split in two halves. On the first, one SGD step (size ``c.lr``) of the actor-critic loss
    ``-mean(log pi A) + vf_coef * 0.5 (V - G)^2 - ent_coef H`` whose advantages and returns come from
    GAE with the current ``(gamma, lambda)``; on the second, the same loss with the fixed
    ``(meta_gamma, meta_lambda)`` is the held-out objective of the stepped weights. Its gradient with
    respect to the logits of ``(gamma, lambda)`` runs through the step (second order) and moves them by
    Adam. A non-finite meta-gradient leaves them as they were.

    Returns:
        (new hyper, new meta optimizer state, metrics: ``meta_objective``, ``meta_grad_gamma``,
        ``meta_grad_lambda``).
    """
    spec = policy.spec
    B = traj.reward.shape[1]
    h = B // 2
    halves = [jax.tree.map(lambda x, sl=sl: x[:, sl], traj) for sl in (slice(0, h), slice(h, 2 * h))]
    carries = [jax.tree.map(lambda x, sl=sl: x[sl], carry0) for sl in (slice(0, h), slice(h, 2 * h))]
    lasts = [last_value[:h], last_value[h: 2 * h]]

    def terms(net, tr, c0):
        p = {**params, "net": net}
        if spec.recurrent:
            return evaluate_sequence(policy, p, c0, tr.obs, tr.first, tr.action)
        T, b = tr.reward.shape
        flat = jax.tree.map(lambda x: x.reshape((T * b,) + x.shape[2:]), (tr.obs, tr.action))
        _, dist, v = policy.apply(p, policy.init_carry(T * b), flat[0])
        return tuple(x.reshape(T, b) for x in (dist.log_prob(flat[1]), dist.entropy(), v))

    def loss(net, i, gamma, lam):
        tr = halves[i]
        adv, ret = gae(tr.reward * c.reward_scale, tr.value, next_values(tr, lasts[i]), tr.terminated, tr.done,
                       gamma, lam)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        lp, ent, v = terms(net, tr, carries[i])
        return -(lp * adv).mean() + c.vf_coef * 0.5 * ((v - ret) ** 2).mean() - c.ent_coef * ent.mean()

    def objective(eta):
        gamma, lam = jax.nn.sigmoid(eta[0]), jax.nn.sigmoid(eta[1])
        g = jax.grad(loss)(params["net"], 0, gamma, lam)
        stepped = jax.tree.map(lambda p, d: p - c.lr * d, params["net"], g)
        return loss(stepped, 1, c.meta_gamma, c.meta_lambda)

    eta = jnp.stack([_logit(hyper.gamma), _logit(hyper.gae_lambda)])
    value, grad = jax.value_and_grad(objective)(eta)
    updates, new_opt = meta_optimizer.update(grad, meta_opt)
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
    eta = jnp.where(finite, optax.apply_updates(eta, updates), eta)
    meta_opt = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_opt, meta_opt)
    p = jnp.clip(jax.nn.sigmoid(eta), 1e-4, 1.0 - 1e-6)  # stays a valid discount and trace
    return PPOHyper(p[0], p[1]), meta_opt, {"meta_objective": value, "meta_grad_gamma": grad[0],
                                            "meta_grad_lambda": grad[1]}


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


class Trainer(ScanTrainer):
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
        self.meta_optimizer = optax.adam(c.meta_lr) if c.meta_gradient else None
        self.step_on_host = any(k == "image" for _, _, k in self.spec.obs_parts)

    def init(self, key: jax.Array) -> TrainState:
        k_net, k_env, k_next = jax.random.split(key, 3)
        params = self.policy.init(k_net)
        runner = start(self.env, self.policy, k_env, self.split)
        hyper = PPOHyper.from_config(self.config)
        meta_opt = self.meta_optimizer.init(jnp.zeros((2,), jnp.float32)) if self.meta_optimizer else ()
        return TrainState(params, self.optimizer.init(params["net"]), runner, k_next, jnp.zeros((), jnp.int32),
                          hyper, meta_opt)

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        """One PPO update (pure): a rollout, then :func:`ppo_update`."""
        key, k_roll, k_upd = jax.random.split(ts.key, 3)
        carry0 = ts.runner.carry
        runner, traj, last_value = collect(self.env, self.policy, ts.params, ts.runner, k_roll, self.config.num_steps)
        hyper, meta_opt, meta = ts.hyper, ts.meta_opt, {}
        if self.meta_optimizer is not None:  # move gamma and lambda first, then update with them
            hyper, meta_opt, meta = meta_gradient_step(self.config, self.policy, ts.params, traj, last_value, carry0,
                                                       hyper, meta_opt, self.meta_optimizer)
        params, opt_state, metrics = ppo_update(self.config, self.policy, self.optimizer, ts.params, ts.opt_state,
                                                traj, last_value, carry0, hyper, k_upd)
        metrics.update(rollout_metrics(traj), **meta, gamma=hyper.gamma, gae_lambda=hyper.gae_lambda)
        return ts.replace(params=params, opt_state=opt_state, runner=runner, key=key, update=ts.update + 1,
                          hyper=hyper, meta_opt=meta_opt), metrics



def make_train(config: PPOConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)`` (DESIGN.md's learner contract); with
    ``config.loss`` the agent learns from that epg run's evolved loss (:class:`meta_rl.epg.LossTrainer`)."""
    if config.loss:
        from meta_rl.epg import LossTrainer

        return LossTrainer(config, env, split)
    return Trainer(config, env, split)


def make_agent(c: PPOConfig, env: Env, params: Any, deterministic: bool) -> PolicyAgent:
    """The test-time agent of a PPO/RL² policy."""
    return PolicyAgent(params, Policy(policy_spec(c, env)), deterministic)


def init_agent_params(c: PPOConfig, env: Env, key: jax.Array) -> Any:
    """A template of the agent's parameters (what a run saves)."""
    return Policy(policy_spec(c, env)).init(key)
