"""Faults the simulators must absorb: nothing non-finite or invalid reaches the learner (issue 22, items 3, 7).

A NaN or inf action, an out-of-range discrete choice and a diverged simulation all end the episode as
terminated, are counted in ``metrics["unstable"]``, and leave every output (obs, reward, final_obs,
the RL² inputs) finite, on both MuJoCo backends and the pure-JAX tasks. Statically bad input (a
float or bool discrete action, a fractional batch size) and concrete out-of-range choices are
refused with an error naming the value.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec, Term
from robots import pendulum
from sim.mujoco_env import MujocoEnv
from sim.wrappers import VmapEnv
from tests.helpers import made

BAD_BOX = jnp.array([[jnp.nan], [jnp.inf], [0.3]])  # per env: NaN, inf, a valid action
BAD_CHOICE = jnp.array([7, -1, 2], jnp.int32)  # per env: above n, negative, valid
FAULT = np.array([1.0, 1.0, 0.0])


def _finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact))


def _step_once(env, action):
    s = env.reset(jax.random.key(1), env.sample_params(jax.random.key(0)))
    return s, jax.jit(env.step)(s, action)


def _check_trial_fault(env, s):
    """A trial env's step where envs 0 and 1 got a bad action and env 2 a valid one."""
    np.testing.assert_array_equal(np.asarray(s.metrics["unstable"]), FAULT)
    assert np.asarray(s.info["episode_terminated"])[:2].all()
    assert _finite((s.obs, s.reward, s.info["final_obs"]))
    assert np.all(np.asarray(s.reward)[:2] == 0.0)
    names = env.observation_space.names
    prev = [i for i, n in enumerate(names) if n.startswith("prev_action")]
    final = np.asarray(s.info["final_obs"])
    assert np.all(final[:2, prev] == 0.0), "the bad action reached the RL² inputs"
    assert np.all(final[:2, names.index("prev_done")] == 1.0)


# -- continuous actions: native MuJoCo, MJX, point navigation ---------------------------------------


def test_nan_and_inf_actions_end_the_episode_on_native():
    env = made("pendulum-swingup", 3, backend="native")
    _, s = _step_once(env, BAD_BOX)
    _check_trial_fault(env, s)
    # the backend itself, without the wrappers: counted and terminated, nothing non-finite
    base = VmapEnv(env.unwrapped, 3)
    _, b = _step_once(base, BAD_BOX)
    np.testing.assert_array_equal(np.asarray(b.metrics["unstable"]), FAULT)
    np.testing.assert_array_equal(np.asarray(b.terminated), FAULT > 0)
    np.testing.assert_array_equal(np.asarray(s.info["episode_terminated"]), FAULT > 0)
    assert _finite((b.obs, b.reward))


def test_nan_and_inf_actions_end_the_episode_on_mjx():
    env = made("pendulum-swingup", 3, backend="mjx")
    _, s = _step_once(env, BAD_BOX)
    _check_trial_fault(env, s)


def test_native_blow_up_is_counted_not_silently_reset():
    """A huge gear makes qacc blow up after a finite action: MuJoCo's own auto-reset used to put the
    pendulum back at qpos0 (time stuck, nothing counted); now the episode ends and is counted."""
    spec = RandomizationSpec((Term("actuator_gear", ("torque",), SplitRange("gear ×", (1e30, 2e30)), columns=(0,)),))
    task = dataclasses.replace(pendulum.SWINGUP, name="pendulum-blowup", randomization=spec)
    env = sim.Trial(VmapEnv(MujocoEnv(task, "native"), 2), episodes_per_trial=2)
    s = env.reset(jax.random.key(1), env.sample_params(jax.random.key(0)))
    step = jax.jit(env.step)
    for _ in range(3):
        s = step(s, jnp.ones((2, 1)))
        assert np.all(np.asarray(s.metrics["unstable"]) == 1.0)
        assert np.all(np.asarray(s.info["episode_terminated"]))
        assert _finite((s.obs, s.reward, s.info["final_obs"]))


def test_nan_actions_on_point_nav_do_not_poison_the_position():
    env = made("point-goal", 3)
    s0, s = _step_once(env, jnp.array([[jnp.nan, 0.0], [jnp.inf, -jnp.inf], [0.3, 0.3]]))
    _check_trial_fault(env, s)
    s = jax.jit(env.step)(s, jnp.full((3, 2), 0.5))  # the next episode starts clean
    assert _finite((s.obs, s.reward)) and not np.asarray(s.metrics["unstable"]).any()


# -- discrete actions: dtype at trace time, range by value ------------------------------------------


@pytest.mark.parametrize("env_id", ["bandit-k5-n10", "mdp-s10-a5-n10"])
def test_out_of_range_choice_under_jit_ends_the_episode(env_id):
    env = made(env_id, 3)
    s0, s = _step_once(env, BAD_CHOICE)
    _check_trial_fault(env, s)


@pytest.mark.parametrize("env_id", ["bandit-k5-n10", "mdp-s10-a5-n10"])
def test_concrete_out_of_range_choice_is_refused(env_id):
    env = made(env_id, 3)
    s = env.reset(jax.random.key(1), env.sample_params(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"Discrete\(5\) action 7 is out of range; valid choices are 0\.\.4"):
        env.step(s, BAD_CHOICE)
    with pytest.raises(ValueError, match=r"action -1 is out of range"):
        env.unwrapped.step(env.unwrapped.reset(jax.random.key(1), env.unwrapped.sample_params(jax.random.key(0))),
                           jnp.int32(-1))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bool_])
def test_float_or_bool_choice_fails_at_trace_time(dtype):
    env = made("bandit-k5-n10", 3)
    s = env.reset(jax.random.key(1), env.sample_params(jax.random.key(0)))
    name = jnp.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"Discrete\(5\) action must be an integer array \(expected int32\), got dtype {name}"):
        jax.jit(env.step)(s, jnp.ones((3,), dtype))


# -- batch sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size, shown", [(2.5, "2.5"), (True, "True"), (0, "0"), (-3, "-3"), ("4", "'4'"),
                                                ((2, 2.5), r"\(2, 2\.5\)"), ((), r"\(\)")])
def test_bad_batch_sizes_are_refused_naming_the_value(batch_size, shown):
    with pytest.raises(ValueError, match=rf"batch_size must be >= 1 and an integer .* got {shown}"):
        sim.make("bandit-k5-n10", batch_size=batch_size)


def test_integer_batch_sizes_still_work():
    assert sim.make("bandit-k5-n10", batch_size=np.int64(3)).batch_shape == (3,)
    assert sim.make("bandit-k5-n10", batch_size=(2, 3)).batch_shape == (2, 3)
