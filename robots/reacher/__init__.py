"""Two-link planar reacher with a hidden goal on the dm_control suite model (``reacher.xml``).

The arm has a ``shoulder`` hinge (unlimited) and a ``wrist`` hinge (±160°), both about z, driven by
two torque motors (gear 0.05, action in [-1, 1]); contacts are disabled in the model. The fingertip
is the origin of the ``finger`` body (the centre of the ``finger`` sphere, which dm_control's reacher
also uses; the suite model has no fingertip site). Its (x, y) is computed from ``qpos`` by planar
forward kinematics with the link offsets read from the model at import (:data:`BASE_XY`,
:data:`UPPER`, :data:`LOWER`). dm_control's own ``target`` geom stays in the model at the origin,
unused and without effect (contacts are off); the goal lives in the task parameters only.

Observation (8): ``cos``/``sin`` of both joint angles, both joint velocities and the fingertip (x, y).
The goal is *not* observed (meta-RL: the agent infers it from rewards). Reward
``-||fingertip - goal|| - 0.01 * sum(action^2)``. No termination. Episodes start with the shoulder at
``U[-π, π]``, the wrist uniform over its joint range (±160°; a wrist angle outside it would start in
violation of the joint limit) and zero velocity. Control period 0.04 s (2 physics steps of 0.02 s),
episodes of 100 steps (4 s).

Task (``reacher-goal``): the goal sits at radius ``goal_radius ~ U[0.05, 0.20]`` (shared by all
splits; the arm reaches 0.24) and angle ``goal_angle_deg`` (degrees): train ``[0, 300]`` without the
held-out band ``[150, 180]`` (interp), extrap ``[300, 360]``.

Task (``reacher-goal-sparse``): the same goals (the same key gives the same goal), reward 1 per step
within :data:`SPARSE_RADIUS` (0.05 m, the tolerance of dm_control's easy sparse reacher) of the goal and
exactly 0 outside it, with no control cost.

Task (``reacher-payload``): the goal is *observed* (two more observations, ``goal_x``/``goal_y``;
radius and angle as ``reacher-goal``, on every split) and the hidden quantity is a payload at the
fingertip: the ``finger`` body's mass (left out of the arm-mass factor) is scaled by ``payload mass ×``, log-uniform on train
``[1, 40]`` without the held-out band ``[5, 10]`` (interp), extrap ``[40, 80]`` (up to 0.34 kg,
several times the arm). The arm moves in a horizontal plane, so gravity never loads the joints: the
payload shows only when the arm accelerates, and a policy that knows it brakes earlier.

Randomized by default (scale factors): the masses of the arm bodies (one factor for ``arm``,
``hand`` and ``finger``), joint damping (one factor for both hinges) and motor strength (one factor
for both motors); ``interp`` holds out a band around nominal, ``extrap`` lies outside the training
range.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec, Term
from randomization.visual import CameraPose, Colors, Distractors, Lights, PixelEffects, Textures, VisualSpec
from robots.common import check_sparse_radius, sparse_reward, suite_model, suite_spec
from robots.task import MujocoTask, PhysicsView, PixelSpec

JOINTS = ("shoulder", "wrist")
ARM_BODIES = ("arm", "hand", "finger")
CTRL_COST = 0.01


def load_model() -> mujoco.MjModel:
    return suite_model("reacher")


def _kinematics(model: mujoco.MjModel):
    body = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)  # noqa: E731
    joint = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)  # noqa: E731
    for n in JOINTS:  # the forward kinematics below assumes hinges about z at their body origins
        j = joint(n)
        assert np.allclose(model.jnt_axis[j], (0, 0, 1)) and np.allclose(model.jnt_pos[j], 0), n
    for n in ARM_BODIES:
        assert np.allclose(model.body_quat[body(n)], (1, 0, 0, 0)), n
    assert model.body_parentid[body("arm")] == 0
    qadr = tuple(int(model.jnt_qposadr[joint(n)]) for n in JOINTS)
    vadr = tuple(int(model.jnt_dofadr[joint(n)]) for n in JOINTS)
    wrist_range = tuple(float(x) for x in model.jnt_range[joint("wrist")])
    return (
        np.array(model.body_pos[body("arm")][:2]),
        np.array(model.body_pos[body("hand")][:2]),
        np.array(model.body_pos[body("finger")][:2]),
        qadr,
        vadr,
        wrist_range,
    )


BASE_XY, UPPER, LOWER, _QADR, _VADR, WRIST_RANGE = _kinematics(load_model())
OBS_NAMES = ("shoulder_cos", "shoulder_sin", "wrist_cos", "wrist_sin", "shoulder_vel", "wrist_vel", "fingertip_x", "fingertip_y")


def _rotate(v: np.ndarray, angle) -> jax.Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def fingertip(qpos) -> jax.Array:
    """World (x, y) of the fingertip from the joint angles (planar 2-link forward kinematics)."""
    a1 = qpos[_QADR[0]]
    a2 = a1 + qpos[_QADR[1]]
    return jnp.asarray(BASE_XY, jnp.float32) + _rotate(UPPER, a1) + _rotate(LOWER, a2)


def goal_xy(task) -> jax.Array:
    a = jnp.deg2rad(task["goal_angle_deg"])
    return task["goal_radius"] * jnp.stack([jnp.cos(a), jnp.sin(a)])


RANDOMIZATION = RandomizationSpec((
    Term("body_mass", ARM_BODIES, SplitRange("arm mass ×", (0.5, 1.5), (0.9, 1.1), ((0.3, 0.5), (1.5, 2.5)))),
    Term("dof_damping", JOINTS, SplitRange("joint damping ×", (0.3, 3.0), (0.8, 1.25), ((3.0, 10.0),), dist="log_uniform")),
    Term("actuator_gainprm", JOINTS, SplitRange("motor strength ×", (0.6, 1.4), (0.9, 1.1), ((0.3, 0.6), (1.4, 1.8))), columns=(0,)),
))


def _obs(view: PhysicsView, task) -> jax.Array:
    q = view.qpos[jnp.asarray(_QADR)]
    v = view.qvel[jnp.asarray(_VADR)]
    return jnp.concatenate([jnp.stack([jnp.cos(q[0]), jnp.sin(q[0]), jnp.cos(q[1]), jnp.sin(q[1])]), v, fingertip(view.qpos)])


def _reward(view: PhysicsView, action, task) -> jax.Array:
    return -jnp.linalg.norm(fingertip(view.qpos) - goal_xy(task)) - CTRL_COST * jnp.sum(jnp.square(action))


def _init(key, qpos0, qvel0):
    k1, k2 = jax.random.split(key)
    shoulder = jax.random.uniform(k1, (), jnp.float32, -jnp.pi, jnp.pi)
    wrist = jax.random.uniform(k2, (), jnp.float32, WRIST_RANGE[0], WRIST_RANGE[1])
    return qpos0.at[_QADR[0]].set(shoulder).at[_QADR[1]].set(wrist), jnp.zeros_like(qvel0)


SPARSE_RADIUS = 0.05  # reacher-goal-sparse: the sparse reward's goal radius (m)
GOAL_RANGES = {
    "goal_radius": SplitRange("goal_radius", (0.05, 0.20), unit="m"),
    "goal_angle_deg": SplitRange("goal_angle_deg", train=(0.0, 300.0), interp=(150.0, 180.0), extrap=((300.0, 360.0),), unit="deg"),
}


def _task(name: str, reward_fn, **changes) -> MujocoTask:
    return MujocoTask(**{**dict(
        name=name,
        family=name,
        load_model=load_model,
        obs_names=OBS_NAMES,
        obs_fn=_obs,
        reward_fn=reward_fn,
        init_fn=_init,
        n_substeps=2,
        episode_length=100,
        randomization=RANDOMIZATION,
        task_ranges=GOAL_RANGES,
    ), **changes})


def sparse_task(sparse_radius: float = SPARSE_RADIUS) -> MujocoTask:
    """``reacher-goal-sparse`` with goal radius ``sparse_radius`` (m), refused unless a finite number > 0."""
    radius = check_sparse_radius(sparse_radius)

    def reward(view: PhysicsView, action, task) -> jax.Array:
        return sparse_reward(jnp.linalg.norm(fingertip(view.qpos) - goal_xy(task)), radius)

    return _task("reacher-goal-sparse", reward)


def _payload_obs(view: PhysicsView, task) -> jax.Array:
    return jnp.concatenate([_obs(view, task), goal_xy(task)])


PAYLOAD_TERM = Term("body_mass", ("finger",), SplitRange("payload mass ×", (1.0, 40.0), (5.0, 10.0), ((40.0, 80.0),), dist="log_uniform"))

GOAL = _task("reacher-goal", _reward)
GOAL_SPARSE = sparse_task()
# the arm-mass factor covers the arm and hand only: the finger's mass is the payload's term
PAYLOAD = _task("reacher-payload", _reward, obs_names=OBS_NAMES + ("goal_x", "goal_y"), obs_fn=_payload_obs,
                randomization=RandomizationSpec((dataclasses.replace(RANDOMIZATION.terms[0], elements=ARM_BODIES[:2]),)
                                                + RANDOMIZATION.terms[1:] + (PAYLOAD_TERM,)))


# -- pixels: reach a goal shown in the image (the suite's ``target`` sphere placed at the goal), seen
# from above by the ``fixed`` camera, with the arm's proprioception (joint angles and velocities)
PIXEL_OBS = OBS_NAMES[:6]
PIXEL_GOAL_RANGES = {
    "goal_radius": SplitRange("goal_radius", (0.05, 0.20), unit="m"),
    "goal_angle_deg": SplitRange("goal_angle_deg", (0.0, 360.0), unit="deg"),
}
VISUAL = VisualSpec(
    colors=Colors(("self", "effector", "target", "decoration")),
    textures=Textures(("grid",)),
    lights=Lights(offset=SplitRange("light offset", (-0.3, 0.3), extrap=((-0.5, -0.3), (0.3, 0.5)), unit="m")),
    camera=CameraPose(offset=SplitRange("camera offset", (-0.03, 0.03), extrap=((-0.05, -0.03), (0.03, 0.05)), unit="m")),
    distractors=Distractors(low=(-0.25, -0.25, 0.0), high=(0.25, 0.25, 0.01),
                            size=SplitRange("distractor size", (0.005, 0.015), unit="m")),
    pixels=PixelEffects(),
)


def _target_xyz(task) -> jax.Array:
    return jnp.concatenate([goal_xy(task), jnp.full((1,), 0.01, jnp.float32)])[None]


def pixel_task(name: str = "reacher-pixels", visual: VisualSpec = VISUAL, height: int = 64, width: int = 64) -> MujocoTask:
    """The reacher to a goal it sees: a ``height x width`` image from above with the target sphere at
    the goal, plus the arm's joint angles and velocities; reward as ``reacher-goal``."""
    return _task(name, _reward, obs_names=PIXEL_OBS, obs_fn=lambda view, task: _obs(view, task)[:6],
                 task_ranges=PIXEL_GOAL_RANGES,
                 pixels=PixelSpec(load_spec=lambda: suite_spec("reacher"), camera="fixed", height=height, width=width,
                                  visual=visual, proprio=True, markers=("target",), marker_fn=_target_xyz))


PIXELS = pixel_task()
