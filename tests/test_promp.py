"""ProMP (:mod:`meta_rl.promp`): the pre/post-update KL, the outer step (PPO's clipped loss through the
inner step, the adaptive KL weight) and a tiny run whose adaptation pays."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from meta_rl import learners
from meta_rl.configs import ConfigError, ProMPConfig
from meta_rl.maml import Batch, adapt
from meta_rl.promp import inner_kl

ENV = "point-goal"


@pytest.fixture(scope="module")
def tiny():
    L = learners.get("promp")
    c = L.default_config(ENV, meta_batch=4, rollouts_per_task=4, hidden=(16,), outer_lr=1e-2, outer_steps=10,
                         total_steps=4 * 4 * 100 * 2 * 20)
    env = sim.make(ENV, batch_size=L.env_batch(c), mode="fixed")
    return L, c, L.make_train(c, env)


def test_inner_kl_is_the_gaussian_kl_of_the_inner_step(tiny):
    """KL(N(m0, s0) || N(m1, s1)) summed over actions, averaged over observations, written out."""
    _, c, trainer = tiny
    params = trainer.policy.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(50, 2)), jnp.float32)
    _, dist, _ = trainer.policy.apply(params, {}, obs)
    u = dist.sample(seed=jax.random.key(1))
    b = Batch(obs, u, dist.log_prob(u), jnp.asarray(rng.normal(size=50), jnp.float32), jnp.ones(50))
    got, adapted = inner_kl(trainer, params["net"], params["obs_norm"], [b])
    after = adapt(trainer.policy, params["net"], params["obs_norm"], b, c.inner_lr, c.estimator)
    m0, s0 = trainer._dist(params["net"], params["obs_norm"], obs)
    m1, s1 = trainer._dist(after, params["obs_norm"], obs)
    want = np.mean(np.sum(np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5, -1))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for x, y in zip(jax.tree.leaves(adapted), jax.tree.leaves(after)):  # the adapted weights come back too
        np.testing.assert_array_equal(x, y)
    assert float(got) > 0


@pytest.mark.parametrize("target, factor", [(1.0, 0.5), (1e-9, 2.0)])
def test_kl_weight_adapts_to_its_target(tiny, target, factor):
    L, c, _ = tiny
    c = dataclasses.replace(c, target_inner_kl=target)
    trainer = L.make_train(c, sim.make(ENV, batch_size=L.env_batch(c), mode="fixed"))
    ts, m = jax.jit(trainer.update)(trainer.init(jax.random.key(0)))
    np.testing.assert_allclose(ts.outer["kl_coef"], c.inner_kl_coef * factor, rtol=1e-6)
    assert float(m["improvement"]) > 0 and int(m["nonfinite"]) == 0  # the Adam steps lowered the outer loss


def test_promp_learns_to_adapt(tiny):
    _, _, trainer = tiny
    _, m = jax.jit(trainer)(jax.random.key(0))
    gain = np.asarray(m["adapt_gain"])
    assert gain[-5:].mean() > 1.0, gain  # the inner step pays (2.9 measured)
    ret = np.asarray(m["episode_return"])
    assert ret[-5:].mean() > ret[:3].mean() + 10, ret  # and the adapted policy got better (-53 -> -28 measured)


@pytest.mark.parametrize("field, value", [("outer_steps", 0), ("clip_eps", 0.0), ("outer_lr", float("inf")),
                                          ("inner_lr", -0.1)])
def test_bad_config_is_named(field, value):
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(ProMPConfig(), **{field: value})
    assert e.value.field == field
