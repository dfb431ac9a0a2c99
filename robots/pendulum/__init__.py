"""Pendulum swing-up on the dm_control suite model (``pendulum.xml``).

The hinge angle is 0 with the pole pointing up. Episodes start at a uniform random angle at rest;
the reward is ``(1 + cos angle) / 2`` per step. Control: one torque motor, action in [-1, 1].
Control period 0.04 s (2 physics steps of 0.02 s), episodes of 250 steps (10 s).

Randomized by default (scale factors on the nominal model): pole mass, pole centre of mass along the
pole (its effective length), pole inertia, hinge damping and motor strength; ``interp`` holds out a
band around nominal, ``extrap`` lies outside the training range on both sides where it makes sense.
Sensor/actuator effects: observation noise (std up to 0.02, extrap 0.02–0.05), an action delay of
0 or 1 control steps (extrap 2), and random angular-velocity kicks (up to 1 rad/s, extrap 1–3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from randomization.effects import ActionDelay, Effects, ObsNoise, Push
from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec, Term
from robots.common import suite_model, upright
from robots.task import MujocoTask, PhysicsView

RANDOMIZATION = RandomizationSpec((
    Term("body_mass", ("pole",), SplitRange("pole mass ×", (0.6, 1.6), (0.9, 1.1), ((0.3, 0.6), (1.6, 2.5)))),
    Term("body_ipos", ("pole",), SplitRange("pole COM ×", (0.7, 1.3), (0.95, 1.05), ((0.5, 0.7), (1.3, 1.6))), columns=(2,)),
    Term("body_inertia", ("pole",), SplitRange("pole inertia ×", (0.7, 1.3), (0.95, 1.05), ((1.3, 2.0),))),
    Term("dof_damping", ("hinge",), SplitRange("hinge damping ×", (0.3, 3.0), (0.8, 1.25), ((3.0, 10.0),), dist="log_uniform")),
    Term("actuator_gainprm", ("torque",), SplitRange("motor strength ×", (0.8, 1.2), (0.95, 1.05), ((0.5, 0.8),)), columns=(0,)),
), effects=Effects(
    obs_noise=ObsNoise(SplitRange("obs noise std", (0.0, 0.02), (0.008, 0.012), ((0.02, 0.05),))),
    action_delay=ActionDelay(SplitRange("action delay steps", (0.0, 2.0), extrap=((2.0, 3.0),), dist="discrete"), max_steps=2),
    push=Push(("hinge",), SplitRange("push |Δω| rad/s", (0.0, 1.0), extrap=((1.0, 3.0),)), probability=0.02),
))


def _obs(view: PhysicsView, task) -> jax.Array:
    a = view.qpos[0]
    return jnp.stack([jnp.cos(a), jnp.sin(a), view.qvel[0]])


def _reward(view: PhysicsView, action, task) -> jax.Array:
    return upright(jnp.cos(view.qpos[0]))


def _init(key, qpos0, qvel0):
    return qpos0.at[0].set(jax.random.uniform(key, (), jnp.float32, -jnp.pi, jnp.pi)), qvel0


SWINGUP = MujocoTask(
    name="pendulum-swingup",
    family="pendulum",
    load_model=lambda: suite_model("pendulum"),
    obs_names=("pole_cos", "pole_sin", "pole_angvel"),
    obs_fn=_obs,
    reward_fn=_reward,
    init_fn=_init,
    n_substeps=2,
    episode_length=250,
    randomization=RANDOMIZATION,
)
