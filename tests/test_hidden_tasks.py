"""Issue 16's robot tasks: sparse goals (ant ring, reacher), a hidden actuator fault (cheetah) and a
hidden payload (reacher). Their contract is checked by the registry-wide tests; here their maths."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from robots import ant, cheetah, reacher
from robots.common import fault_action
from robots.task import PhysicsView
from tests.helpers import robot_batch, robot_rollout, with_values


def _view(qpos) -> PhysicsView:
    qpos = jnp.asarray(qpos, jnp.float32)
    return PhysicsView(qpos=qpos, qvel=jnp.zeros_like(qpos), time=jnp.zeros(()))


def test_ant_ring_sparse_reward_is_exactly_zero_outside_the_radius_and_shares_the_goal():
    task = {"goal_angle_deg": jnp.float32(90.0)}
    goal = np.asarray(ant.ring_goal_xy(task))
    np.testing.assert_allclose(goal, [0.0, ant.RING_RADIUS], atol=1e-6)
    q0 = np.asarray(ant.load_model().qpos0, np.float32)
    zero = jnp.zeros(8)
    for dist, expect in ((0.0, 1.0), (0.79, 1.0), (0.81, 0.0), (1.5, 0.0), (ant.RING_RADIUS, 0.0)):
        q = q0.copy()
        q[:2] = goal + [dist, 0.0]
        r = float(ant.RING_SPARSE.reward_fn(_view(q), zero, task))
        assert r == expect, (dist, r)  # exactly 0, no alive bonus, no control cost
        dense = float(ant.RING.reward_fn(_view(q), zero, task))
        assert dense == pytest.approx(-dist + ant.ALIVE_BONUS, abs=1e-5)  # the dense reward's goal is the same point
    # the same key draws the same goal on the dense and the sparse env, on every split
    for split in sim.SPLITS:
        a = sim.make("ant-ring", batch_size=64).sample_params(jax.random.key(7), split)["task"]
        b = sim.make("ant-ring-sparse", batch_size=64).sample_params(jax.random.key(7), split)["task"]
        np.testing.assert_array_equal(a["goal_angle_deg"], b["goal_angle_deg"])


def test_reacher_sparse_reward_is_exactly_zero_outside_the_radius_and_shares_the_goal():
    task = {"goal_radius": jnp.float32(0.15), "goal_angle_deg": jnp.float32(40.0)}
    goal = np.asarray(reacher.goal_xy(task))
    q0 = np.zeros(reacher.load_model().nq, np.float32)
    hits = 0
    for shoulder in np.linspace(-np.pi, np.pi, 181):
        for wrist in np.linspace(-2.7, 2.7, 37):
            q = q0.copy()
            q[0], q[1] = shoulder, wrist
            d = float(np.linalg.norm(np.asarray(reacher.fingertip(jnp.asarray(q))) - goal))
            r = float(reacher.GOAL_SPARSE.reward_fn(_view(q), jnp.ones(2), task))
            assert r == (1.0 if d <= reacher.SPARSE_RADIUS else 0.0), (d, r)
            hits += r == 1.0
            dense = float(reacher.GOAL.reward_fn(_view(q), jnp.zeros(2), task))
            assert dense == pytest.approx(-d, abs=1e-5)
    assert hits > 0
    for split in sim.SPLITS:
        a = sim.make("reacher-goal", batch_size=64).sample_params(jax.random.key(3), split)["task"]
        b = sim.make("reacher-goal-sparse", batch_size=64).sample_params(jax.random.key(3), split)["task"]
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("radius", [0.0, -0.1, float("nan"), float("inf"), "0.5", True])
def test_bad_sparse_radius_is_refused_naming_the_field(radius):
    for build in (ant.ring_sparse_task, reacher.sparse_task):
        with pytest.raises(ValueError, match="sparse_radius"):
            build(radius)


def test_fault_action_disables_or_flips_one_motor():
    a = jnp.asarray([0.1, -0.2, 0.3, -0.4, 0.5, -0.6])
    for motor in range(6):
        off = np.asarray(fault_action(a, jnp.float32(motor), jnp.float32(0.0)))
        flip = np.asarray(fault_action(a, jnp.float32(motor), jnp.float32(1.0)))
        expect_off, expect_flip = np.asarray(a).copy(), np.asarray(a).copy()
        expect_off[motor], expect_flip[motor] = 0.0, -a[motor]
        np.testing.assert_array_equal(off, expect_off)
        np.testing.assert_array_equal(flip, expect_flip)


def _fault_params(env, faults):
    params = with_values(env.env, [{}] * len(faults))
    params["task"] = {"fault_motor": jnp.asarray([m for m, _ in faults], jnp.float32),
                      "fault_flipped": jnp.asarray([f for _, f in faults], jnp.float32)}
    return params


def test_cheetah_fault_changes_the_physics_as_declared():
    """Worlds alike but for the fault: a disabled motor's command does nothing; a flipped motor k
    driven by +u moves the body as the same motor driven by -u in a world where another motor is
    broken; a healthy and a broken motor give different motion."""
    steps, k, other = 40, 3, 0
    env = robot_batch(cheetah.FAULT, "native", 4)
    params = _fault_params(env, [(k, 0), (k, 0), (k, 1), (other, 0)])
    keys = jnp.stack([jax.random.key(2)] * 4)
    u = 0.8 * jnp.sin(jnp.arange(steps) * 0.4)[:, None]
    on_k = jnp.zeros((steps, 6)).at[:, k].set(1.0) * u
    actions = jnp.stack([jnp.zeros((steps, 6)), on_k, on_k, -on_k], axis=1)
    obs, reward, _ = robot_rollout(env, steps)(params, keys, actions)
    obs = np.asarray(obs)
    np.testing.assert_array_equal(obs[:, 0], obs[:, 1])  # disabled: the command on motor k is lost
    np.testing.assert_array_equal(obs[:, 2], obs[:, 3])  # flipped +u == healthy -u
    assert np.abs(obs[:, 1] - obs[:, 2]).max() > 1e-2  # the fault kind matters
    # the reward reads the agent's action (its control cost), not what the motors received
    np.testing.assert_allclose(reward[:, 0] - reward[:, 1], cheetah.CTRL_COST * np.asarray(u[:, 0]) ** 2, rtol=1e-4, atol=1e-6)


def test_reacher_payload_shows_only_under_acceleration_and_the_goal_is_observed():
    steps = 30
    env = robot_batch(reacher.PAYLOAD, "native", 4)
    light, heavy = {"body_mass[finger]": 1.0}, {"body_mass[finger]": 40.0}
    params = with_values(env.env, [light, heavy, light, heavy])
    keys = jnp.stack([jax.random.key(5)] * 4)
    push = jnp.broadcast_to(jnp.asarray([0.7, -0.4]), (steps, 2))
    actions = jnp.stack([jnp.zeros((steps, 2))] * 2 + [push] * 2, axis=1)
    # the arm starts at rest: with no command the payload changes nothing (planar arm, no gravity load)
    rest_env = robot_batch(dataclasses.replace(reacher.PAYLOAD, init_fn=lambda key, q, v: (q + 0.3, v)), "native", 4)
    obs_rest, *_ = robot_rollout(rest_env, steps)(params, keys, actions)
    np.testing.assert_allclose(obs_rest[:, 0], obs_rest[:, 1], atol=1e-6)
    # under a torque the heavy fingertip accelerates less
    speed = np.abs(np.asarray(obs_rest[:, :, 4]))  # shoulder velocity
    assert speed[5, 3] < 0.75 * speed[5, 2], speed[:8, 2:]
    obs, *_ = robot_rollout(env, 1)(params, keys, actions[:1])
    goal = np.asarray(reacher.goal_xy(jax.tree.map(lambda x: x[0], params["task"])))
    np.testing.assert_allclose(np.asarray(obs[0, 0, -2:]), goal, atol=1e-6)
    assert reacher.PAYLOAD.obs_names[-2:] == ("goal_x", "goal_y")
