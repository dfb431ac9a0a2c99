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
from randomization.visual import VisualSpec


@struct.dataclass
class PhysicsView:
    """What task code may read: generalized positions and velocities and the simulation time."""

    qpos: jax.Array
    qvel: jax.Array
    time: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity (holds functions)
class PixelSpec:
    """A task observed through a camera (:mod:`sim.render`): the observation becomes a dict with an
    ``image`` part (``height x width x 3`` uint8) and, when ``proprio``, a ``state`` part (the task's
    vector observation).

    Attributes:
        load_spec: builds the robot's model as an editable ``mujoco.MjSpec`` (the render model is
            built from it: :meth:`randomization.visual.VisualSpec.resolve`).
        camera: the camera's name in the model.
        height, width: image size (pixels).
        visual: the appearance randomization (an empty spec: the nominal appearance in every world).
        proprio: also observe the task's vector observation.
        markers: world-body geoms placed per world from the task parameters (a goal made visible).
        marker_fn: ``task_params -> [len(markers), 3]`` positions of the markers.
        threads, tiles: the renderer's GL contexts and worlds per framebuffer read
            (:class:`sim.render.BatchRenderer`).
        appearance_split: draw every world's appearance from this split whatever split its dynamics
            come from (``extrap``: held-out appearances on training dynamics); ``None``: the same split.
    """

    load_spec: Callable[[], mujoco.MjSpec]
    camera: str
    height: int = 64
    width: int = 64
    visual: VisualSpec = VisualSpec()
    proprio: bool = False
    markers: tuple[str, ...] = ()
    marker_fn: Callable[[dict], jax.Array] | None = None
    threads: int = 1
    tiles: int = 64
    appearance_split: str | None = None


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
        pixels: observe through a camera (:class:`PixelSpec`); ``None``: the vector observation.
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
    pixels: PixelSpec | None = None


