"""Ant direction and goal tasks on a quadruped written for Proteus (MJCF in :data:`XML`).

The model follows the layout of Gymnasium's Ant-v4 without copying it: a sphere torso (radius 0.25)
on a free joint ``root`` starting 0.5 above the ``floor`` plane (it settles near 0.4), four
diagonal legs, each a hip (hinge about z, ±30°) carrying a thigh and an ankle (hinge about the leg's
horizontal normal, ±20° around a foot pitched 50° down). Eight torque motors with gear 150 and
ctrlrange [-1, 1]; hinge damping 1 and armature 1. Geoms have density 50 (6.9 kg in all; with
Gymnasium's density 5, random actions often throw the 0.7 kg ant above the healthy height within
an episode). Only robot-floor contacts exist (robot geoms have ``conaffinity="0"``); the floor has
contact priority, so its friction alone sets the contact friction. Friction cones are elliptic:
pyramidal cones are anisotropic, oriented by each backend's own tangent-frame convention, and made
native MuJoCo and MJX disagree at the first foot contact. Timestep 0.01 s, no deprecated attributes.

Observation (27): ``qpos[2:]`` (torso height, orientation quaternion, eight joint angles) then
``qvel`` (torso linear velocity in the world frame, angular velocity in the torso frame, eight joint
velocities), named after the joints (``qpos.root_z``, ``qpos.root_qw`` ... ``qvel.root_vx`` ...,
``qpos.hip_fl``, ``qvel.ankle_br``...). Episodes start at ``qpos0`` with ``U[-0.1, 0.1]`` added to
the torso height and the joint angles (the quaternion is left untouched, so it stays normalized) and
``qvel ~ 0.1 N(0, 1)``. An episode terminates when the torso height leaves ``[0.2, 1.0]`` (fell or
flew) or the state is non-finite. Control period 0.05 s (5 physics steps), episodes of 200 steps.

Tasks; every step earns an alive bonus of 1 and pays a control cost ``0.5 * 0.01 * sum(action^2)``:

* ``ant-dir``: reward ``vx cos(a) + vy sin(a)`` (torso velocity along the direction ``a``) plus the
  bonus minus the cost. ``direction_deg`` (degrees) is drawn per world: train ``[0, 300]`` without
  the held-out band ``[150, 180]`` (interp), extrap ``[300, 360]``.
* ``ant-goal``: reward ``-||torso_xy - goal||`` plus the bonus minus the cost, the goal at radius
  ``goal_radius ~ U[1, 3]`` (shared by all splits) and angle ``goal_angle_deg`` (same split pattern
  as ``direction_deg``). The goal is not observed: the agent must infer it from rewards.

* ``ant-ring``: MAESN's legged protocol. The goal lies on a ring of radius :data:`RING_RADIUS` (2 m)
  at ``goal_angle_deg`` (same split pattern as ``direction_deg``), with ``ant-goal``'s dense reward.
* ``ant-ring-sparse``: the same goals (the same key gives the same goal), reward 1 per step within
  :data:`RING_SPARSE_RADIUS` (0.8 m) of the goal and exactly 0 outside it, with no alive bonus and
  no control cost: what held-out goals are scored on (``proteus eval --env ant-ring-sparse``).

Randomized by default (scale factors): torso mass, floor sliding friction, joint damping (one
factor for the eight hinges) and motor strength (one factor for the eight motors); ``interp`` holds
out a band around nominal, ``extrap`` lies outside the training range.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mujoco

from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec, Term
from robots.common import check_sparse_radius, sparse_reward
from robots.task import MujocoTask, PhysicsView

LEGS = {"fl": 45.0, "bl": 135.0, "br": 225.0, "fr": 315.0}  # leg name -> direction (degrees)
FOOT, FOOT_PITCH = 0.4, 50.0  # foot (shin) length and nominal downward pitch (degrees)


def _leg(name: str, angle: float) -> str:
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return f"""
      <body name="thigh_{name}" pos="{0.2 * c:.6f} {0.2 * s:.6f} 0" euler="0 0 {angle:g}">
        <joint name="hip_{name}" axis="0 0 1" range="-30 30"/>
        <geom name="thigh_{name}" type="capsule" fromto="0 0 0 0.28 0 0" size="0.08"/>
        <body name="shin_{name}" pos="0.28 0 0">
          <joint name="ankle_{name}" axis="0 1 0" range="-20 20"/>
          <geom name="shin_{name}" type="capsule" fromto="0 0 0 {FOOT * math.cos(math.radians(FOOT_PITCH)):.6f} 0 {-FOOT * math.sin(math.radians(FOOT_PITCH)):.6f}" size="0.08"/>
        </body>
      </body>"""


XML = f"""<mujoco model="proteus-ant">
  <compiler angle="degree"/>
  <option timestep="0.01" cone="elliptic"/>
  <default>
    <joint type="hinge" limited="true" damping="1" armature="1"/>
    <geom contype="1" conaffinity="0" condim="3" density="50" friction="1 0.5 0.5" rgba="0.8 0.6 0.4 1"/>
    <motor ctrllimited="true" ctrlrange="-1 1" gear="150"/>
  </default>
  <worldbody>
    <light name="light" pos="0 0 3" dir="0 0 -1"/>
    <geom name="floor" type="plane" size="40 40 0.1" conaffinity="1" priority="1" friction="1 0.005 0.0001" rgba="0.3 0.4 0.5 1"/>
    <body name="torso" pos="0 0 0.5">
      <freejoint name="root"/>
      <geom name="torso" type="sphere" size="0.25"/>{"".join(_leg(n, a) for n, a in LEGS.items())}
    </body>
  </worldbody>
  <actuator>
{chr(10).join(f'    <motor name="hip_{n}" joint="hip_{n}"/>{chr(10)}    <motor name="ankle_{n}" joint="ankle_{n}"/>' for n in LEGS)}
  </actuator>
</mujoco>
"""

HINGES = tuple(f"{j}_{n}" for n in LEGS for j in ("hip", "ankle"))
ALIVE_BONUS = 1.0
CTRL_COST = 0.5 * 0.01
HEALTHY_Z = (0.2, 1.0)


def load_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(XML)


def _names(model: mujoco.MjModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
    qpos, qvel = [], []
    for j in range(model.njnt):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
        if int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_FREE):
            qpos += [f"{name}_{c}" for c in ("x", "y", "z", "qw", "qx", "qy", "qz")]
            qvel += [f"{name}_{c}" for c in ("vx", "vy", "vz", "wx", "wy", "wz")]
        else:
            qpos.append(name)
            qvel.append(name)
    return tuple(qpos), tuple(qvel)


_QPOS_NAMES, _QVEL_NAMES = _names(load_model())
OBS_NAMES = tuple(f"qpos.{n}" for n in _QPOS_NAMES[2:]) + tuple(f"qvel.{n}" for n in _QVEL_NAMES)

RANDOMIZATION = RandomizationSpec((
    Term("body_mass", ("torso",), SplitRange("torso mass ×", (0.5, 1.5), (0.9, 1.1), ((0.3, 0.5), (1.5, 2.5)))),
    Term("geom_friction", ("floor",), SplitRange("floor friction ×", (0.5, 1.5), (0.9, 1.1), ((0.2, 0.5), (1.5, 2.5))), columns=(0,)),
    Term("dof_damping", HINGES, SplitRange("joint damping ×", (0.5, 2.0), (0.85, 1.15), ((0.2, 0.5), (2.0, 4.0)), dist="log_uniform")),
    Term("actuator_gainprm", HINGES, SplitRange("motor strength ×", (0.6, 1.4), (0.9, 1.1), ((0.3, 0.6), (1.4, 1.8))), columns=(0,)),
))


def _obs(view: PhysicsView, task) -> jax.Array:
    return jnp.concatenate([view.qpos[2:], view.qvel])


def _bonus_minus_cost(action) -> jax.Array:
    return ALIVE_BONUS - CTRL_COST * jnp.sum(jnp.square(action))


def _dir_reward(view: PhysicsView, action, task) -> jax.Array:
    a = jnp.deg2rad(task["direction_deg"])
    return view.qvel[0] * jnp.cos(a) + view.qvel[1] * jnp.sin(a) + _bonus_minus_cost(action)


def goal_xy(task) -> jax.Array:
    a = jnp.deg2rad(task["goal_angle_deg"])
    return task["goal_radius"] * jnp.stack([jnp.cos(a), jnp.sin(a)])


def _goal_reward(view: PhysicsView, action, task) -> jax.Array:
    return -jnp.linalg.norm(view.qpos[:2] - goal_xy(task)) + _bonus_minus_cost(action)


def _terminated(view: PhysicsView, task) -> jax.Array:
    z = view.qpos[2]
    finite = jnp.all(jnp.isfinite(view.qpos)) & jnp.all(jnp.isfinite(view.qvel))
    return ~finite | (z < HEALTHY_Z[0]) | (z > HEALTHY_Z[1])


def _init(key, qpos0, qvel0):
    k1, k2 = jax.random.split(key)
    noise = jax.random.uniform(k1, qpos0.shape, jnp.float32, -0.1, 0.1)
    mask = jnp.zeros(qpos0.shape, jnp.float32).at[2].set(1.0).at[7:].set(1.0)  # height and joint angles
    qvel = qvel0 + 0.1 * jax.random.normal(k2, qvel0.shape, jnp.float32)
    return qpos0 + mask * noise, qvel


ANGLE_SPLIT = dict(train=(0.0, 300.0), interp=(150.0, 180.0), extrap=((300.0, 360.0),), unit="deg")


def _task(name: str, reward_fn, task_ranges) -> MujocoTask:
    return MujocoTask(
        name=name,
        family=name,
        load_model=load_model,
        obs_names=OBS_NAMES,
        obs_fn=_obs,
        reward_fn=reward_fn,
        terminated_fn=_terminated,
        init_fn=_init,
        n_substeps=5,
        episode_length=200,
        randomization=RANDOMIZATION,
        task_ranges=task_ranges,
    )


DIR = _task("ant-dir", _dir_reward, {"direction_deg": SplitRange("direction_deg", **ANGLE_SPLIT)})
GOAL = _task("ant-goal", _goal_reward, {
    "goal_radius": SplitRange("goal_radius", (1.0, 3.0), unit="m"),
    "goal_angle_deg": SplitRange("goal_angle_deg", **ANGLE_SPLIT),
})


RING_RADIUS = 2.0  # ant-ring: the goals' distance from the start (m)
RING_SPARSE_RADIUS = 0.8  # ant-ring-sparse: the sparse reward's goal radius (m)


def ring_goal_xy(task) -> jax.Array:
    a = jnp.deg2rad(task["goal_angle_deg"])
    return RING_RADIUS * jnp.stack([jnp.cos(a), jnp.sin(a)])


def _ring_reward(view: PhysicsView, action, task) -> jax.Array:
    return -jnp.linalg.norm(view.qpos[:2] - ring_goal_xy(task)) + _bonus_minus_cost(action)


def ring_sparse_task(sparse_radius: float = RING_SPARSE_RADIUS) -> MujocoTask:
    """``ant-ring-sparse`` with goal radius ``sparse_radius`` (m), refused unless a finite number > 0."""
    radius = check_sparse_radius(sparse_radius)

    def reward(view: PhysicsView, action, task) -> jax.Array:
        return sparse_reward(jnp.linalg.norm(view.qpos[:2] - ring_goal_xy(task)), radius)

    return _task("ant-ring-sparse", reward, RING_RANGES)


RING_RANGES = {"goal_angle_deg": SplitRange("goal_angle_deg", **ANGLE_SPLIT)}
RING = _task("ant-ring", _ring_reward, RING_RANGES)
RING_SPARSE = ring_sparse_task()
