"""ProMP (Rothfuss et al. 2019): MAML's trainer (:mod:`meta_rl.maml`) with the low-variance curvature
(LVC) inner estimator and a PPO-style outer step.

Everything but the outer step is MAML's: the vmapped tasks, the shared rollout collector, the
linear-baseline advantages, the inner step (with ``estimator="lvc"``) and the agent. The outer step
takes ``outer_steps`` Adam steps on the same meta-iteration's data, each re-running the inner steps
(second-order gradients through them), on

    mean over tasks of  clipped-PPO(pi_theta'(theta) / pi_behaviour, A_post)  +  eta * KL(pi_o,s || pi_theta,s)

with the PPO core's :func:`meta_rl.losses.ppo_loss` (no value term). The KL term is ProMP's (paper eq. 8,
and ``kl_sym(dist_info_old, dist_info_new)`` in the reference): for each inner step ``s``, the policy
that *sampled* that step's episodes (``pi_o,s``: the pre-update policy, then its adaptations) against
the policy the current ``theta`` gives there (``pi_theta,s``), on those episodes' observations. The
clip bounds only the post-update policy; this term keeps the pre-update policy near the one that
collected the data. (It is not the KL between a policy before and after its inner step: penalizing
that would penalize adaptation itself.) ``eta`` is fixed at ``inner_kl_coef`` (the reference's
``adaptive_inner_kl_penalty=False``); with ``adaptive_kl`` it is halved when the KL falls below
``target_inner_kl / 1.5`` and doubled above ``1.5 * target_inner_kl``.
"""

from __future__ import annotations

from typing import Any

import distrax
import jax
import jax.numpy as jnp
import optax

from meta_rl import maml
from meta_rl.configs import ProMPConfig
from meta_rl.losses import ppo_loss
from meta_rl.maml import Batch, adapt
from sim.core import Env


def sampling_dists(trainer: maml.Trainer, net, obs_norm, pre: list[Batch]) -> list[tuple[jax.Array, jax.Array]]:
    """The ``(loc, scale)`` of the policies that sampled one task's inner-step episodes, on their
    observations: ``net`` on ``pre[0]``, its adaptation on ``pre[1]``, ... (constants: no gradient)."""
    c = trainer.config
    out = []
    for b in pre:
        out.append(jax.lax.stop_gradient(trainer._dist(net, obs_norm, b.obs)))
        net = jax.lax.stop_gradient(adapt(trainer.policy, net, obs_norm, b, c.inner_lr, c.estimator, True))
    return out


def inner_kl(trainer: maml.Trainer, net, obs_norm, pre: list[Batch], sampling: list[tuple[jax.Array, jax.Array]]
             ) -> tuple[jax.Array, Any]:
    """``(kl, adapted weights)`` of one task: the mean over inner steps ``s`` of
    KL(pi_o,s || pi_theta,s) on step ``s``'s observations (``sampling``: :func:`sampling_dists`), and
    the weights after the last inner step (the inner steps run once, differentiably)."""
    c = trainer.config
    kls = []
    for b, (loc, scale) in zip(pre, sampling):
        d_old = distrax.MultivariateNormalDiag(loc, scale)
        d_new = distrax.MultivariateNormalDiag(*trainer._dist(net, obs_norm, b.obs))
        kls.append((d_old.kl_divergence(d_new) * b.mask).sum() / jnp.maximum(b.mask.sum(), 1.0))
        net = adapt(trainer.policy, net, obs_norm, b, c.inner_lr, c.estimator, c.first_order)
    return jnp.mean(jnp.stack(kls)), net


class Trainer(maml.Trainer):
    """ProMP: :class:`meta_rl.maml.Trainer` with the PPO outer step of the module docstring."""

    def __init__(self, config: ProMPConfig, env: Env, split: str = "train"):
        super().__init__(config, env, split)
        self.optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.outer_lr))

    def init_outer(self, net: Any) -> Any:
        return {"opt": self.optimizer.init(net), "kl_coef": jnp.asarray(self.config.inner_kl_coef, jnp.float32)}

    def outer_step(self, net0, obs_norm, pre: list[Batch], post: Batch, outer: Any) -> tuple[Any, Any, dict]:
        c = self.config

        sampling = jax.vmap(lambda p: sampling_dists(self, net0, obs_norm, p))(pre)

        def per_task(net, p, b, old):
            kl, adapted = inner_kl(self, net, obs_norm, p, old)
            lp = distrax.MultivariateNormalDiag(*self._dist(adapted, obs_norm, b.obs)).log_prob(b.action)
            z = jnp.zeros_like(lp)
            loss, parts = ppo_loss(lp, b.log_prob, b.adv, z, z, z, z, clip_eps=c.clip_eps, vf_coef=0.0, ent_coef=0.0,
                                   clip_value=False)
            return loss, kl, parts["clip_frac"]

        def total(net, kl_coef):
            loss, kl, clip_frac = jax.vmap(per_task, in_axes=(None, 0, 0, 0))(net, pre, post, sampling)
            return loss.mean() + kl_coef * kl.mean(), {"surrogate": loss.mean(), "inner_kl": kl.mean(),
                                                       "clip_frac": clip_frac.mean()}

        def step(carry, _):
            net, opt = carry
            (value, parts), grads = jax.value_and_grad(total, has_aux=True)(net, outer["kl_coef"])
            updates, new_opt = self.optimizer.update(grads, opt, net)
            finite = jnp.isfinite(value) & jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
            keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
            return (keep(optax.apply_updates(net, updates), net), keep(new_opt, opt)), {
                **parts, "loss": value, "nonfinite": (~finite).astype(jnp.int32)}

        (net, opt), parts = jax.lax.scan(step, (net0, outer["opt"]), None, length=c.outer_steps)
        kl = parts["inner_kl"][-1]
        coef = outer["kl_coef"]
        if c.adaptive_kl:
            coef = jnp.where(kl < c.target_inner_kl / 1.5, coef / 2, jnp.where(kl > c.target_inner_kl * 1.5, coef * 2, coef))
        metrics = {k: v.mean() for k, v in parts.items() if k != "nonfinite"}
        metrics.update(nonfinite=parts["nonfinite"].sum(), kl_coef=outer["kl_coef"], improvement=parts["loss"][0] - parts["loss"][-1])
        return net, {"opt": opt, "kl_coef": coef}, metrics


def make_train(config: ProMPConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)`` (DESIGN.md's learner contract)."""
    return Trainer(config, env, split)
