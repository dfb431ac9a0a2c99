"""The backend-neutral description of a MuJoCo robot task (robots define these; sim runs them)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import mujoco
from flax import struct

from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec


@struct.dataclass
class PhysicsView:
    """What task code may read: generalized positions and velocities and the simulation time."""

    qpos: jax.Array
    qvel: jax.Array
    time: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity (holds functions)
class MujocoTask:
    """A robot task, backend-neutral.

    Attributes:
        name: task id.
        family: task family shown by ``proteus envs``.
        load_model: builds the nominal ``MjModel``.
        obs_names: one name per observation element.
        obs_fn: ``(view, task_params) -> obs``.
        reward_fn: ``(view, action, task_params) -> reward`` (action normalized to [-1, 1]).
        init_fn: ``(key, qpos0, qvel0) -> (qpos, qvel)`` initial state of an episode.
        n_substeps: physics steps per control step.
        episode_length: control steps per episode (then ``truncated``).
        randomization: the default dynamics randomization.
        task_ranges: task parameters (target velocity, goal...) per split.
        terminated_fn: ``(view, task_params) -> bool``; by default the task never terminates.
        action_fn: ``(action, task_params) -> action``: what the motors receive of the agent's
            normalized action (a hidden actuator fault); by default all of it. Rewards and costs
            read the agent's own action.
    """

    name: str
    family: str
    load_model: Callable[[], mujoco.MjModel]
    obs_names: tuple[str, ...]
    obs_fn: Callable[[PhysicsView, dict], jax.Array]
    reward_fn: Callable[[PhysicsView, jax.Array, dict], jax.Array]
    init_fn: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    n_substeps: int
    episode_length: int
    randomization: RandomizationSpec
    task_ranges: dict[str, SplitRange] = dataclasses.field(default_factory=dict)
    terminated_fn: Callable[[PhysicsView, dict], jax.Array] = lambda view, task: jnp.zeros((), bool)
    action_fn: Callable[[jax.Array, dict], jax.Array] = lambda action, task: action


