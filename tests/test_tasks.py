"""Task generators: golden values, distributions and split semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from sim.tasks.point_nav import PointNav
from sim.tasks.tabular_mdp import TabularMDP
from tests.helpers import made


def test_golden_task_draws():
    """The same key gives the same worlds, release after release."""
    b = sim.make("bandit-k5-n10").sample_params(jax.random.key(0))
    np.testing.assert_allclose(b.arm_probs, [0.947667, 0.97858, 0.332291, 0.468668, 0.569889], atol=1e-5)
    m = sim.make("mdp-s10-a5-n10").sample_params(jax.random.key(0))
    np.testing.assert_allclose(
        m.transition[0, 0],
        [0.21469, 0.023403, 0.029953, 0.014954, 0.024752, 0.148793, 0.168538, 0.019237, 0.352223, 0.003458],
        atol=1e-5,
    )
    np.testing.assert_allclose(m.reward_mean[0], [-1.442456, -1.035681, 1.205544, 0.64645, 0.238026], atol=1e-5)
    np.testing.assert_allclose(sim.make("point-goal").sample_params(jax.random.key(0)).target, [0.452427, 0.015557], atol=1e-5)
    np.testing.assert_allclose(sim.make("point-vel").sample_params(jax.random.key(0)).target, [0.552114, 0.02532], atol=1e-5)


def test_bandit_distribution_and_rewards():
    env = made("bandit-k10-n100", batch_size=4000)
    p = np.asarray(env.sample_params(jax.random.key(1)).arm_probs)
    assert p.shape == (4000, 10) and p.min() >= 0 and p.max() <= 1
    assert abs(p.mean() - 0.5) < 0.01 and abs(p.var() - 1 / 12) < 0.003  # U[0, 1]
    pe = np.asarray(env.sample_params(jax.random.key(1), "extrap").arm_probs)
    assert pe.max() <= 0.5 and abs(pe.mean() - 0.25) < 0.01
    # a pull of arm i pays 1 with probability p_i
    base = sim.make("bandit-k5-n10").unwrapped
    params = base.sample_params(jax.random.key(2))
    s = base.reset(jax.random.key(3), params)
    rewards = jax.vmap(lambda k: base.step(s.replace(key=k), jnp.int32(4)).reward)(jax.random.split(jax.random.key(4), 20000))
    assert abs(float(rewards.mean()) - float(params.arm_probs[4])) < 0.015
    assert set(np.unique(rewards).tolist()) <= {0.0, 1.0}


def test_mdp_generator_matches_paper_distribution():
    env = made("mdp-s10-a5-n10", batch_size=2000)
    p = env.sample_params(jax.random.key(5))
    T, R = np.asarray(p.transition), np.asarray(p.reward_mean)
    np.testing.assert_allclose(T.sum(-1), 1.0, atol=1e-5)
    assert abs(T.mean() - 0.1) < 1e-4 and abs(T[..., 0].var() - 9 / (100 * 11)) < 2e-3  # flat Dirichlet, S=10
    assert abs(R.mean() - 1.0) < 0.01 and abs(R.std() - 1.0) < 0.01
    pe = env.sample_params(jax.random.key(5), "extrap")
    assert np.asarray(pe.transition).max(-1).mean() > T.max(-1).mean() + 0.2  # sparser rows
    assert abs(np.asarray(pe.reward_mean).std() - 2.0) < 0.03


def test_mdp_episode_starts_in_state_zero_and_is_truncated_after_ten_steps():
    base = TabularMDP()
    params = base.sample_params(jax.random.key(0))
    s = base.reset(jax.random.key(1), params)
    np.testing.assert_array_equal(s.obs, np.eye(10)[0])
    for t in range(10):
        s = base.step(s, jnp.int32(t % 5))
        assert bool(s.truncated) == (t == 9) and not bool(s.terminated)


def test_mdp_transitions_follow_the_table():
    base = TabularMDP()
    params = base.sample_params(jax.random.key(0))
    s = base.reset(jax.random.key(1), params)
    nxt = jax.vmap(lambda k: jnp.argmax(base.step(s.replace(key=k), jnp.int32(2)).obs))(jax.random.split(jax.random.key(2), 40000))
    freq = np.bincount(np.asarray(nxt), minlength=10) / 40000
    np.testing.assert_allclose(freq, params.transition[0, 2], atol=0.01)


def test_mdp_reward_noise_is_unit_variance():
    base = TabularMDP()
    params = base.sample_params(jax.random.key(0))
    s = base.reset(jax.random.key(1), params)
    r = jax.vmap(lambda k: base.step(s.replace(key=k), jnp.int32(1)).reward)(jax.random.split(jax.random.key(2), 40000))
    assert abs(float(r.mean()) - float(params.reward_mean[0, 1])) < 0.02
    assert abs(float(r.std()) - 1.0) < 0.02


@pytest.mark.parametrize("family", ["goal", "vel"])
def test_point_nav_splits_are_really_held_out(family):
    env = PointNav(family)
    keys = jax.random.split(jax.random.key(0), 5000)
    vals = {split: env.param_values(jax.vmap(lambda k: env.sample_params(k, split))(keys)) for split in sim.SPLITS}
    name = "goal_angle_deg" if family == "goal" else "speed"
    train, interp, extrap = (np.asarray(vals[s][name]) for s in sim.SPLITS)
    lo, hi = env.ranges[name].interp
    assert not ((train > lo) & (train < hi)).any(), "training draws fall in the held-out interp range"
    assert ((interp >= lo) & (interp <= hi)).all()
    assert (extrap >= env.ranges[name].train[1]).all(), "extrap overlaps training"
    assert train.min() >= env.ranges[name].train[0] and train.max() <= env.ranges[name].train[1]


def test_point_nav_dynamics_and_rewards():
    env = PointNav("goal", episode_length=100)
    params = env.sample_params(jax.random.key(0))
    s = env.reset(jax.random.key(1), params)
    s = env.step(s, jnp.array([5.0, -0.5]))  # clipped to [-1, 1]
    np.testing.assert_allclose(s.obs, [0.1, -0.05], atol=1e-6)
    np.testing.assert_allclose(s.reward, -np.linalg.norm(np.array([0.1, -0.05]) - np.asarray(params.target)), atol=1e-6)
    venv = PointNav("vel")
    vp = venv.sample_params(jax.random.key(0))
    vs = venv.step(venv.reset(jax.random.key(1), vp), vp.target)
    np.testing.assert_allclose(vs.reward, 0.0, atol=1e-6)  # moving at exactly the target velocity


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        sim.make("point-goal").sample_params(jax.random.key(0), "validation")
    with pytest.raises(KeyError, match="unknown env 'bandit-k10-n1000'.*Did you mean.*Known envs: bandit-k5-n10"):
        sim.make("bandit-k10-n1000")
    with pytest.raises(ValueError, match="unknown point-nav family 'run'"):
        PointNav("run")
    with pytest.raises(ValueError, match="num_states must be >= 1, got 0"):
        TabularMDP(num_states=0)


def test_point_goal2d_is_the_maml_papers_navigation():
    """Goals in [-0.5, 0.5]^2 (minus the held-out band on each axis), squared-distance reward, the
    episode ends within 0.01 of the goal; interp is the band on both axes, extrap the corners beyond."""
    env = PointNav("goal2d")
    keys = jax.random.split(jax.random.key(0), 4000)
    goals = {split: np.asarray(jax.vmap(lambda k: env.sample_params(k, split))(keys).target) for split in sim.SPLITS}
    train, interp, extrap = (goals[s] for s in sim.SPLITS)
    assert np.all(np.abs(train) <= 0.5) and not np.any((train > 0.15) & (train < 0.25))
    assert np.all((interp >= 0.15) & (interp <= 0.25))
    assert np.all((np.abs(extrap) >= 0.5) & (np.abs(extrap) <= 0.7))
    params = env.sample_params(jax.random.key(3))
    s = env.reset(jax.random.key(1), params)
    s = env.step(s, jnp.array([1.0, -1.0]))
    np.testing.assert_allclose(s.reward, -np.sum((np.array([0.1, -0.1]) - np.asarray(params.target)) ** 2), atol=1e-6)
    assert not s.terminated
    for _ in range(10):  # straight at the goal: reached within 10 steps of 0.1 per axis
        s = env.step(s, (params.target - s.obs) / 0.1)
    assert s.terminated and float(s.reward) > -1e-4
