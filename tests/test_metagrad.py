"""Meta-gradient RL (Xu et al. 2018) as an option of the PPO core (``--meta-gradient``): the
meta-gradient through one SGD step against finite differences, gamma and lambda moving the right
way on a bandit whose exploration pays many steps later, and the config refusals."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sim
from meta_rl import learners
from meta_rl.configs import ConfigError, PPOConfig
from meta_rl.ppo import PPOHyper, _logit, meta_gradient_step
from meta_rl.rollout import collect, start


def test_meta_gradient_matches_finite_differences():
    """d(held-out objective)/d(logit gamma, logit lambda) through the inner step, against central
    differences (a large inner step so the objective moves measurably in float32)."""
    L = learners.get("ppo")
    c = L.default_config("point-goal", num_envs=8, num_steps=20, hidden=(8,), lr=0.5, total_steps=160,
                         meta_gradient=True, gamma=0.9, gae_lambda=0.6, meta_gamma=0.99, meta_lambda=1.0,
                         update_epochs=1, num_minibatches=1)
    env = sim.make("point-goal", batch_size=8, mode="fresh")
    trainer = L.make_train(c, env)
    ts = trainer.init(jax.random.key(0))
    _, traj, last = collect(env, trainer.policy, ts.params, ts.runner, jax.random.key(1), 20)
    sgd = optax.sgd(1.0)  # the step is the gradient itself: read it off the update

    def grad_at(g, lam):
        hyper = PPOHyper(jnp.float32(g), jnp.float32(lam))
        eta = jnp.stack([_logit(hyper.gamma), _logit(hyper.gae_lambda)])
        new, _, m = jax.jit(lambda h: meta_gradient_step(c, trainer.policy, ts.params, traj, last, ts.runner.carry,
                                                          h, sgd.init(eta), sgd))(hyper)
        return m

    m = grad_at(0.9, 0.6)

    def objective(eta):
        return float(grad_at(jax.nn.sigmoid(eta[0]), jax.nn.sigmoid(eta[1]))["meta_objective"])

    eta = np.array([_logit(jnp.float32(0.9)), _logit(jnp.float32(0.6))], np.float64)
    for i, name in enumerate(("meta_grad_gamma", "meta_grad_lambda")):
        e = np.zeros(2)
        e[i] = 0.05
        fd = (objective(eta + e) - objective(eta - e)) / 0.1
        assert abs(fd) > 1e-3, (name, fd)  # a measurable effect (about 0.08 and 0.02 here)
        assert abs(float(m[name]) - fd) < 0.05 * abs(fd), (name, float(m[name]), fd)


@pytest.mark.parametrize("field, value, why", [
    ("gamma", 1.0, "must lie in (0, 1) with meta_gradient"),
    ("gae_lambda", 0.0, "must lie in (0, 1) with meta_gradient"),
    ("meta_lr", 0.0, "must be > 0"),
    ("meta_gamma", 1.5, "must lie in (0, 1]"),
    ("num_envs", 1, "must be >= 2 with meta_gradient"),
])
def test_bad_meta_config_is_named(field, value, why):
    base = dict(meta_gradient=True, gamma=0.99, gae_lambda=0.5, num_envs=4, num_minibatches=2, total_steps=10**6)
    with pytest.raises(ConfigError) as e:
        PPOConfig(**{**base, field: value, **({"num_minibatches": 1} if field == "num_envs" else {})})
    assert e.value.field == field and why in e.value.why


def test_gamma_and_lambda_grow_where_a_longer_horizon_pays():
    """RL² on 100-pull bandits: an exploratory pull pays tens of steps later, so from gamma 0.95 and
    lambda 0.3 the meta-gradient raises both (the preset's hand-tuned values are 1 and 0.95)."""
    L = learners.get("rl2")
    c = L.default_config("bandit-k5-n100", gamma=0.95, gae_lambda=0.3, meta_gradient=True, num_envs=64,
                         core_size=32, total_steps=64 * 100 * 15)
    env = sim.make("bandit-k5-n100", batch_size=c.num_envs, mode="trial")
    _, m = jax.jit(L.make_train(c, env))(jax.random.key(0))
    gamma, lam = np.asarray(m["gamma"]), np.asarray(m["gae_lambda"])
    assert gamma[-1] > 0.95 + 0.002 and lam[-1] > 0.3 + 0.01, (gamma, lam)
    assert (np.diff(gamma) > 0).mean() > 0.7, gamma
