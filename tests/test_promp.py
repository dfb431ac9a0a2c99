"""ProMP (:mod:`meta_rl.promp`): the KL penalty to the sampling policies, the outer step (PPO's clipped
loss through the inner step, the fixed or adaptive KL weight) and a tiny run whose adaptation pays."""

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
from meta_rl.promp import inner_kl, sampling_dists

ENV = "point-goal"


@pytest.fixture(scope="module")
def tiny():
    L = learners.get("promp")
    c = L.default_config(ENV, meta_batch=4, rollouts_per_task=4, hidden=(16,), outer_lr=1e-2, outer_steps=10,
                         total_steps=4 * 4 * 100 * 2 * 20)
    env = sim.make(ENV, batch_size=L.env_batch(c), mode="fixed")
    return L, c, L.make_train(c, env)


def _gauss_kl(m0, s0, m1, s1):
    """KL(N(m0, s0) || N(m1, s1)) summed over actions, averaged over observations, written out."""
    return np.mean(np.sum(np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5, -1))


def _batch(trainer, params, seed=0):
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(50, 2)), jnp.float32)
    _, dist, _ = trainer.policy.apply(params, {}, obs)
    u = dist.sample(seed=jax.random.key(seed + 1))
    return Batch(obs, u, dist.log_prob(u), jnp.asarray(rng.normal(size=50), jnp.float32), jnp.ones(50))


def test_inner_kl_is_the_kl_to_the_sampling_policies(tiny):
    """ProMP's penalty (paper eq. 8): for each inner step, KL(the policy that sampled that step's
    episodes || the one the current weights give there). Zero, with zero gradient, at the sampling
    weights, whatever the inner step does; the Gaussian KL written out once the weights move."""
    _, c, trainer = tiny
    params = trainer.policy.init(jax.random.key(0))
    net, norm = params["net"], params["obs_norm"]
    b0 = _batch(trainer, params, 0)
    after = adapt(trainer.policy, net, norm, b0, c.inner_lr, c.estimator)
    b1 = _batch(trainer, {**params, "net": after}, 2)  # the second inner step's episodes, sampled by the adapted policy
    sampling = sampling_dists(trainer, net, norm, [b0, b1])
    (m, s), (m1, s1) = sampling
    np.testing.assert_allclose(m1, trainer._dist(after, norm, b1.obs)[0], rtol=1e-6)  # the chain of sampling policies

    kl_fn = lambda n: inner_kl(trainer, n, norm, [b0, b1], sampling)[0]  # noqa: E731
    kl, grad = jax.value_and_grad(kl_fn)(net)
    assert abs(float(kl)) < 1e-6  # the inner step's own size costs nothing: adaptation is not penalized
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad)) < 1e-5

    moved = jax.tree.map(lambda p: p + 0.05 * jnp.sign(p), net)
    got, adapted = inner_kl(trainer, moved, norm, [b0, b1], sampling)
    moved_after = adapt(trainer.policy, moved, norm, b0, c.inner_lr, c.estimator)
    want = 0.5 * (_gauss_kl(m, s, *trainer._dist(moved, norm, b0.obs))
                  + _gauss_kl(m1, s1, *trainer._dist(moved_after, norm, b1.obs)))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert float(got) > 0
    final = adapt(trainer.policy, moved_after, norm, b1, c.inner_lr, c.estimator)
    for x, y in zip(jax.tree.leaves(adapted), jax.tree.leaves(final)):  # the weights after both steps come back
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("adaptive, target, factor", [(True, 1.0, 0.5), (True, 1e-9, 2.0), (False, 1e-9, 1.0)])
def test_kl_weight_fixed_or_adapting_to_its_target(tiny, adaptive, target, factor):
    L, c, _ = tiny
    c = dataclasses.replace(c, adaptive_kl=adaptive, target_inner_kl=target)
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


def test_promp_run_exports_policy_and_lvc_inner_step_with_parity(tmp_path):
    """A ProMP run exports like MAML's: ``policy.onnx`` and ``adapt.onnx``, whose inner step is the LVC
    estimator's; both are written only after onnxruntime matched JAX."""
    from proteus.cli import main
    from proteus.export import export_run

    run = tmp_path / "promp"
    main(["train", "promp", "--env", ENV, "--meta-batch", "2", "--rollouts-per-task", "2", "--hidden", "8",
          "--steps", "800", "--out", str(run), "--no-progress"])
    rep = export_run(run)
    assert rep["max_action_error"] < 1e-5 and rep["max_carry_error"] < 1e-5
    assert rep["adapt"]["max_param_error"] < 1e-4 and (run / "adapt.onnx").stat().st_size > 0
