"""Sensor and actuator effects: delays shift by exactly k steps, noise has the declared size."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randomization.effects import ActionDelay, Effects, ObsLatency, ObsNoise, Push
from randomization.ranges import SplitRange
from robots import pendulum
from sim.effects import SensorActuator
from sim.mujoco_env import MujocoEnv
from sim.tasks.point_nav import PointNav

STEPS = 30


@functools.lru_cache(maxsize=None)
def _base():
    return MujocoEnv(pendulum.SWINGUP, "native")


def _run(env, actions, seed=0):
    params = env.sample_params(jax.random.key(seed))

    @jax.jit
    def go(params, actions):
        s = env.reset(jax.random.key(1), params)

        def body(s, a):
            s = env.step(s, a)
            return s, s.obs

        _, obs = jax.lax.scan(body, s, actions)
        return s.obs, obs

    return go(params, actions)


def _fixed(k):
    return SplitRange("k", (float(k), k + 0.999))


def _actions(seed=0):
    return 0.8 * jnp.sin(jnp.arange(STEPS)[:, None] * 0.7 + seed)


@pytest.mark.parametrize("k", [1, 3])
def test_action_delay_shifts_the_response_by_exactly_k_steps(k):
    base = _base()
    delayed = SensorActuator(base, Effects(action_delay=ActionDelay(_fixed(k), max_steps=3)))
    plain = SensorActuator(base, Effects(action_delay=ActionDelay(_fixed(0), max_steps=3)))
    acts = _actions()
    shifted = jnp.concatenate([jnp.zeros((k, 1)), acts[:-k]])
    _, obs_delayed = _run(delayed, acts)
    _, obs_shifted = _run(plain, shifted)
    np.testing.assert_allclose(obs_delayed, obs_shifted, atol=1e-6)
    _, obs_undelayed = _run(plain, acts)
    assert np.abs(np.asarray(obs_delayed - obs_undelayed)).max() > 1e-3


@pytest.mark.parametrize("k", [1, 2])
def test_observation_latency_shows_the_state_k_steps_old(k):
    base = _base()
    late = SensorActuator(base, Effects(obs_latency=ObsLatency(_fixed(k), max_steps=2)))
    now = SensorActuator(base, Effects(obs_latency=ObsLatency(_fixed(0), max_steps=2)))
    acts = _actions(1)
    first_late, obs_late = _run(late, acts)
    first_now, obs_now = _run(now, acts)
    np.testing.assert_allclose(obs_late[k:], obs_now[:-k], atol=1e-6)
    np.testing.assert_allclose(obs_late[: k - 1], np.broadcast_to(first_now, obs_late[: k - 1].shape), atol=1e-6)


def test_observation_noise_has_the_drawn_std():
    base = _base()
    noisy = SensorActuator(base, Effects(obs_noise=ObsNoise(SplitRange("std", (0.05, 0.0501)))))
    clean = SensorActuator(base, Effects(obs_noise=ObsNoise(SplitRange("std", (0.0, 1e-9)))))
    acts = jnp.zeros((200, 1))
    _, a = _run(noisy, acts)
    _, b = _run(clean, acts)
    err = np.asarray(a - b)
    assert abs(err.std() - 0.05) < 0.005 and abs(err.mean()) < 0.01


def test_pushes_kick_the_named_joint():
    base = _base()
    pushed = SensorActuator(base, Effects(push=Push(("hinge",), SplitRange("m", (2.0, 2.001)), probability=1.0)))
    calm = SensorActuator(base, Effects(push=Push(("hinge",), SplitRange("m", (2.0, 2.001)), probability=0.0)))
    acts = jnp.zeros((5, 1))
    _, a = _run(pushed, acts)
    _, b = _run(calm, acts)
    # one kick of 2 rad/s per step, ± direction: the angular velocity moves by about 2 each step
    dw = np.abs(np.asarray(a[0, 2] - b[0, 2]))
    assert 1.5 < dw < 2.5, dw


def test_effect_params_are_listed_and_respect_splits():
    env = SensorActuator(_base(), pendulum.SWINGUP.randomization.effects)
    ranges = env.param_ranges()
    assert {"obs_noise.std", "action_delay.steps", "push.magnitude"} <= set(ranges)
    p = jax.vmap(lambda k: env.sample_params(k, "extrap"))(jax.random.split(jax.random.key(0), 200))
    vals = env.param_values(p)
    assert (np.asarray(vals["action_delay.steps"]) == 2).all()
    assert (np.asarray(vals["obs_noise.std"]) >= 0.02).all()


def test_bad_effects_are_named():
    with pytest.raises(ValueError, match="action_delay: steps range reaches 4 steps but the buffer holds max_steps=2"):
        ActionDelay(SplitRange("k", (0.0, 5.0)), max_steps=2)
    with pytest.raises(ValueError, match="obs_noise.std: range low -0.1 is negative"):
        ObsNoise(SplitRange("std", (-0.1, 0.1)))
    with pytest.raises(ValueError, match="push: probability must be in"):
        Push(("hinge",), SplitRange("m", (0.0, 1.0)), probability=2.0)
    with pytest.raises(ValueError, match="push: no joint named 'knee'; valid joint names: hinge"):
        SensorActuator(_base(), Effects(push=Push(("knee",), SplitRange("m", (0.0, 1.0)))))
    with pytest.raises(ValueError, match="pushes need a physics env"):
        SensorActuator(PointNav("goal"), Effects(push=Push(("x",), SplitRange("m", (0.0, 1.0)))))


def test_effect_ranges_may_omit_extrapolation():
    ObsNoise(SplitRange("std", (0.0, 0.1), (0.04, 0.06)))  # interp hole, no extrap: valid
    ActionDelay(SplitRange("k", (0.0, 2.0), (0.5, 1.0)), max_steps=1)
