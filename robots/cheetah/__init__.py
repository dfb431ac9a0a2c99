"""Half-cheetah velocity and direction tasks on the dm_control suite model (``cheetah.xml``).

The model is the suite's planar cheetah (a torso on ``rootx``/``rootz`` slides and a ``rooty``
hinge, two 3-joint legs, six torque motors). The suite file sets its total mass with the deprecated
``<compiler settotalmass="14"/>``; :func:`load_model` drops that attribute, compiles the XML and
then scales masses and inertias to the same 14 kg with ``mj_setTotalmass`` + ``mj_setConst`` (and
refreshes ``stat.meanmass``/``stat.meaninertia``), giving the same model without the warning.

Observation (17): ``qpos`` without ``rootx`` (8: ``rootz``, ``rooty`` and the six leg angles), then
``qvel`` (9), named ``qpos.<joint>`` / ``qvel.<joint>``. Episodes start at ``qpos0 + U[-0.1, 0.1]``
per coordinate with ``qvel ~ 0.1 N(0, 1)``. No termination. Control period 0.05 s (5 physics steps
of 0.01 s), episodes of 200 steps (10 s). Actions in [-1, 1] per motor.

Tasks (meta-RL, as in MAML / PEARL); ``v`` is the forward velocity (``qvel`` of ``rootx``):

* ``cheetah-vel``: reward ``-|v - target_vel| - 0.05 * sum(action^2)``. ``target_vel`` is drawn per
  world: train ``[0, 2]`` without the held-out band ``[0.9, 1.1]`` (interp), extrap ``[2, 3]``.
* ``cheetah-dir``: reward ``direction * v - 0.05 * sum(action^2)`` with ``direction = ±1``, the sign
  of the task parameter ``direction ~ U[-1, 1]`` (shared by all splits), so forward and backward
  each have probability 1/2 (the nominal world, parameter 0, runs forward).

* ``cheetah-fault``: run forward (``cheetah-dir``'s forward reward) with a hidden actuator fault:
  motor ``fault_motor`` (one of the six, uniform) is disabled (``fault_flipped`` 0: it receives
  nothing) or sign-flipped (``fault_flipped`` 1: it receives the negated action), each with
  probability 1/2, on every split (the dynamics terms give the splits). Rewards and the control
  cost read the agent's action. Which motor misbehaves, and how, shows only in how the body
  answers the motor commands, so a policy that knows it runs differently. The nominal world (each
  range's middle) has motor 3 (``fthigh``) flipped.

Randomized by default (scale factors on the nominal model): torso mass, ground sliding friction,
leg joint damping (one factor for all six leg joints) and motor strength (one factor for all six
motors). ``interp`` holds out a band around nominal, ``extrap`` lies outside the training range.
MuJoCo uses the larger friction of a contacting pair; the ground's (1.0) exceeds the cheetah's (0.4)
down to a factor of 0.4, where the friction extrapolation range stops.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec, Term
from robots.common import fault_action
from robots.task import MujocoTask, PhysicsView

TOTAL_MASS_ATTR = re.compile(r'\s*settotalmass\s*=\s*"([^"]*)"')
LEG_JOINTS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
CTRL_COST = 0.05


def _suite_dir() -> str:
    spec = importlib.util.find_spec("dm_control")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("dm-control is not installed; run bash scripts/setup.sh")
    return os.path.join(list(spec.submodule_search_locations)[0], "suite")


def load_model() -> mujoco.MjModel:
    """``cheetah.xml`` without the deprecated ``settotalmass``, scaled to the same total mass."""
    suite = _suite_dir()
    with open(os.path.join(suite, "cheetah.xml")) as f:
        xml = f.read()
    match = TOTAL_MASS_ATTR.search(xml)
    total = float(match.group(1)) if match else None
    xml = TOTAL_MASS_ATTR.sub("", xml)
    assets = {}
    for inc in re.findall(r'<include\s+file="([^"]+)"', xml):
        with open(os.path.join(suite, inc), "rb") as f:
            assets[inc] = f.read()
    model = mujoco.MjModel.from_xml_string(xml, assets)
    if total is not None:
        mujoco.mj_setTotalmass(model, total)  # scales body_mass and body_inertia
        data = mujoco.MjData(model)
        mujoco.mj_setConst(model, data)  # subtree masses, invweights, actuator_acc0...
        # statistics the compiler derives from masses: mean body mass, mean diagonal inertia at qpos0
        model.stat.meanmass = float(np.mean(model.body_mass[1:]))
        mujoco.mj_resetData(model, data)
        mujoco.mj_forward(model, data)
        full = np.zeros((model.nv, model.nv))
        mujoco.mj_fullM(model, data, full)
        model.stat.meaninertia = float(np.trace(full) / model.nv)
    return model


def _joint_layout(model: mujoco.MjModel):
    names, qadr, vadr = [], [], []
    for j in range(model.njnt):
        if int(model.jnt_type[j]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
            raise ValueError("cheetah joints are expected to be 1-dof")
        names.append(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j))
        qadr.append(int(model.jnt_qposadr[j]))
        vadr.append(int(model.jnt_dofadr[j]))
    return names, qadr, vadr


_NAMES, _QADR, _VADR = _joint_layout(load_model())
_ROOTX = _NAMES.index("rootx")
OBS_QPOS = tuple(i for n, i in zip(_NAMES, _QADR) if n != "rootx")
OBS_QVEL = tuple(_VADR)
OBS_NAMES = tuple(f"qpos.{n}" for n in _NAMES if n != "rootx") + tuple(f"qvel.{n}" for n in _NAMES)
_VX = _VADR[_ROOTX]

RANDOMIZATION = RandomizationSpec((
    Term("body_mass", ("torso",), SplitRange("torso mass ×", (0.5, 1.5), (0.9, 1.1), ((0.3, 0.5), (1.5, 2.0)))),
    Term("geom_friction", ("ground",), SplitRange("ground friction ×", (0.5, 1.5), (0.9, 1.1), ((0.4, 0.5), (1.5, 2.5))), columns=(0,)),
    Term("dof_damping", LEG_JOINTS, SplitRange("leg damping ×", (0.5, 2.0), (0.85, 1.15), ((0.2, 0.5), (2.0, 4.0)), dist="log_uniform")),
    Term("actuator_gainprm", LEG_JOINTS, SplitRange("motor strength ×", (0.6, 1.4), (0.9, 1.1), ((0.3, 0.6), (1.4, 1.8))), columns=(0,)),
))


def forward_velocity(view: PhysicsView) -> jax.Array:
    return view.qvel[_VX]


def _obs(view: PhysicsView, task) -> jax.Array:
    return jnp.concatenate([view.qpos[jnp.asarray(OBS_QPOS)], view.qvel[jnp.asarray(OBS_QVEL)]])


def _ctrl_cost(action) -> jax.Array:
    return CTRL_COST * jnp.sum(jnp.square(action))


def _vel_reward(view: PhysicsView, action, task) -> jax.Array:
    return -jnp.abs(forward_velocity(view) - task["target_vel"]) - _ctrl_cost(action)


def direction(task) -> jax.Array:
    """±1 from the ``direction`` task parameter (0 counts as forward)."""
    return jnp.where(task["direction"] >= 0, 1.0, -1.0)


def _dir_reward(view: PhysicsView, action, task) -> jax.Array:
    return direction(task) * forward_velocity(view) - _ctrl_cost(action)


def _init(key, qpos0, qvel0):
    k1, k2 = jax.random.split(key)
    qpos = qpos0 + jax.random.uniform(k1, qpos0.shape, jnp.float32, -0.1, 0.1)
    qvel = qvel0 + 0.1 * jax.random.normal(k2, qvel0.shape, jnp.float32)
    return qpos, qvel


def _task(name: str, reward_fn, task_ranges) -> MujocoTask:
    return MujocoTask(
        name=name,
        family=name,
        load_model=load_model,
        obs_names=OBS_NAMES,
        obs_fn=_obs,
        reward_fn=reward_fn,
        init_fn=_init,
        n_substeps=5,
        episode_length=200,
        randomization=RANDOMIZATION,
        task_ranges=task_ranges,
    )


VEL = _task("cheetah-vel", _vel_reward, {"target_vel": SplitRange("target_vel", train=(0.0, 2.0), interp=(0.9, 1.1), extrap=((2.0, 3.0),), unit="m/s")})
DIR = _task("cheetah-dir", _dir_reward, {"direction": SplitRange("direction", train=(-1.0, 1.0))})


def _forward_reward(view: PhysicsView, action, task) -> jax.Array:
    return forward_velocity(view) - _ctrl_cost(action)


def _fault(action, task) -> jax.Array:
    return fault_action(action, task["fault_motor"], task["fault_flipped"])


FAULT = dataclasses.replace(
    _task("cheetah-fault", _forward_reward, {
        "fault_motor": SplitRange("fault_motor", train=(0.0, float(len(LEG_JOINTS))), dist="discrete"),
        "fault_flipped": SplitRange("fault_flipped", train=(0.0, 2.0), dist="discrete"),
    }),
    action_fn=_fault,
)
