"""2-D point navigation, the MAML / ProMP point-robot tasks (Finn et al. 2017, Rothfuss et al. 2019).

A point starts at the origin; the action is its velocity, clipped to ``[-1, 1]^2`` per axis, integrated
with ``dt = 0.1`` (so at most 0.1 per step per axis, as in MAML's displacement actions). Episodes last
100 steps (a time limit: ``truncated``); there is no terminal state. The observation is the position.

The task families:

* ``goal``: reward ``-||x - goal||``. Goals sit at radius ``U[0.2, 0.5]`` and at an angle that is
  ``train``: [0°, 300°] minus the held-out sector (150°, 180°); ``interp``: that sector, (150°, 180°),
  inside the training hull; ``extrap``: (300°, 360°), a sector training never sees.
* ``vel``: reward ``-||v - v*||`` for the commanded (clipped) velocity ``v`` and a target ``v*`` with a
  uniform direction and speed ``train``: [0.2, 0.6] minus (0.35, 0.45); ``interp``: (0.35, 0.45);
  ``extrap``: (0.6, 0.9], faster than anything trained on.
* ``goal2d``: the MAML paper's 2-D navigation (Finn et al. 2017, §5.3): goals ``U[-0.5, 0.5]^2``,
  reward the negative *squared* distance, and the episode ends (``terminated``) once the point is
  within 0.01 of the goal. Each coordinate is drawn on its own: ``train`` [-0.5, 0.5] minus
  (0.15, 0.25); ``interp`` that band on both axes (a held-out patch inside the square); ``extrap``
  [-0.7, -0.5) or (0.5, 0.7] on both axes (the four corners beyond the square).
* ``goalx``: EPG's out-of-distribution protocol (Houthooft et al. 2018, GoalAnt): reward
  ``-||x - goal||`` to a goal in a half-plane. ``goal_y`` is ``U[-1, 1]`` in every split; ``goal_x`` is
  ``train`` [0.5, 1.5] minus (0.9, 1.1), ``interp`` that band, ``extrap`` [-1.5, -0.5]: goals with
  ``x < 0``, which training never sees. Mirroring a world's goal (``x -> -x``) maps ``train`` onto
  ``extrap`` with the same distance to the start, so the two splits are equally hard.
* ``arc``: MAESN's navigation protocol (Gupta et al. 2018): goals on a semicircle of radius
  :data:`ARC_RADIUS` (2) around the start, at an angle ``train`` [0°, 180°] minus (60°, 120°),
  ``interp`` that arc (the top of the semicircle, between the training arcs), ``extrap``
  (180°, 225°], beyond the semicircle's end. The reward is dense,
  ``-||x - goal||``, on training worlds and *sparse* on held-out worlds: 1 on each step the point is
  within ``sparse_radius`` (default :data:`SPARSE_RADIUS`) of the goal, exactly 0 elsewhere, so a
  held-out goal must be found by exploring. A world carries its reward kind (:class:`ArcParams`
  ``sparse``), set by the split it was drawn from.
* ``arc-sparse``: the same goals with the sparse reward on every split (what RL² trains on: a first
  episode that has to search).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from randomization.ranges import SplitRange, check_split
from sim.core import Box, Env, new_state

_DT = 0.1
_MAX_V = 1.0
GOAL2D_RADIUS = 0.01  # goal2d: the episode ends within this distance of the goal
ARC_RADIUS = 2.0  # arc: the goals' distance from the start
SPARSE_RADIUS = 0.3  # arc: the sparse reward's goal radius
FAMILIES = ("goal", "vel", "goal2d", "goalx", "arc", "arc-sparse")
ARC_FAMILIES = ("arc", "arc-sparse")


@struct.dataclass
class PointParams:
    target: jax.Array  # [2] goal position (goal family) or target velocity (vel family)


@struct.dataclass
class ArcParams:
    """A world of the ``arc`` families: the goal and whether its reward is sparse (1 within the goal
    radius, else 0) or dense (``-distance``)."""

    target: jax.Array  # [2] goal position
    sparse: jax.Array  # [] bool


class PointNav(Env):
    def __init__(self, family: str = "goal", episode_length: int = 100, sparse_radius: float = SPARSE_RADIUS):
        if family not in FAMILIES:
            raise ValueError(f"unknown point-nav family {family!r}; expected one of {', '.join(FAMILIES)}")
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if not (isinstance(sparse_radius, (int, float)) and 0 < sparse_radius < float("inf")):
            raise ValueError(f"sparse_radius must be a finite number > 0, got {sparse_radius!r}")
        self.sparse_radius = float(sparse_radius)
        self.task = family
        self.family = f"point-{family}"
        self.id = f"point-{family}"
        self.episode_length = int(episode_length)
        self.observation_space = Box(names=("x", "y"), low=-float("inf"), high=float("inf"))
        self.action_space = Box(names=("vx", "vy"), low=-_MAX_V, high=_MAX_V)
        if family == "goal":
            self.ranges = {
                "goal_radius": SplitRange("goal_radius", train=(0.2, 0.5), extrap=()),
                "goal_angle_deg": SplitRange(
                    "goal_angle_deg", train=(0.0, 300.0), interp=(150.0, 180.0), extrap=((300.0, 360.0),), unit="°"
                ),
            }
        elif family == "goal2d":
            coord = dict(train=(-0.5, 0.5), interp=(0.15, 0.25), extrap=((-0.7, -0.5), (0.5, 0.7)))
            self.ranges = {"goal_x": SplitRange("goal_x", **coord), "goal_y": SplitRange("goal_y", **coord)}
        elif family == "goalx":
            self.ranges = {"goal_x": SplitRange("goal_x", train=(0.5, 1.5), interp=(0.9, 1.1), extrap=((-1.5, -0.5),)),
                           "goal_y": SplitRange("goal_y", train=(-1.0, 1.0))}
        elif family in ARC_FAMILIES:
            self.ranges = {"goal_angle_deg": SplitRange("goal_angle_deg", train=(0.0, 180.0), interp=(60.0, 120.0),
                                                        extrap=((180.0, 225.0),), unit="°")}
        else:
            self.ranges = {
                "speed": SplitRange("speed", train=(0.2, 0.6), interp=(0.35, 0.45), extrap=((0.6, 0.9),), unit="/s"),
                "direction_deg": SplitRange("direction_deg", train=(0.0, 360.0), unit="°"),
            }

    def default_ranges(self):
        """The target's ranges as data: name -> :meth:`SplitRange.bounds`."""
        return {n: r.bounds() for n, r in self.ranges.items()}

    def sample_params(self, key, split="train", ranges=None):
        check_split(split)
        b = (lambda n: None) if ranges is None else (lambda n: ranges[n])  # noqa: E731
        if self.task in ARC_FAMILIES:
            rad = jnp.deg2rad(self.ranges["goal_angle_deg"].sample(key, split, (), b("goal_angle_deg")))
            sparse = self.task == "arc-sparse" or split != "train"
            return ArcParams(target=ARC_RADIUS * jnp.stack([jnp.cos(rad), jnp.sin(rad)]),
                             sparse=jnp.asarray(sparse, bool))
        if self.task in ("goal2d", "goalx"):
            kx, ky = jax.random.split(key)
            r = self.ranges
            return PointParams(target=jnp.stack([r["goal_x"].sample(kx, split, (), b("goal_x")),
                                                 r["goal_y"].sample(ky, split, (), b("goal_y"))]))
        k_mag, k_ang = jax.random.split(key)
        (mag_name, mag_range), (ang_name, ang_range) = self.ranges.items()  # (magnitude, angle in degrees)
        mag = mag_range.sample(k_mag, split, (), b(mag_name))
        rad = jnp.deg2rad(ang_range.sample(k_ang, split, (), b(ang_name)))
        return PointParams(target=mag * jnp.stack([jnp.cos(rad), jnp.sin(rad)]))

    def param_values(self, params: PointParams) -> dict[str, jax.Array]:
        """The named parameters of a world (inverse of ``sample_params``; any batch shape): polar, or
        the goal's coordinates for ``goal2d``."""
        if self.task in ARC_FAMILIES:
            ang = jnp.rad2deg(jnp.arctan2(params.target[..., 1], params.target[..., 0])) % 360.0
            return {"goal_angle_deg": ang}
        if self.task in ("goal2d", "goalx"):
            return {"goal_x": params.target[..., 0], "goal_y": params.target[..., 1]}
        mag = jnp.linalg.norm(params.target, axis=-1)
        ang = jnp.rad2deg(jnp.arctan2(params.target[..., 1], params.target[..., 0])) % 360.0
        return dict(zip(self.ranges, (mag, ang)))

    def reset(self, key, params):
        env_state = {"pos": jnp.zeros((2,), jnp.float32), "t": jnp.zeros((), jnp.int32)}
        return new_state(env_state["pos"], params, env_state, key)

    def step(self, state, action):
        action = self.check_action(action)
        v = jnp.clip(action, -_MAX_V, _MAX_V)
        pos = state.env_state["pos"] + _DT * v
        t = state.env_state["t"] + 1
        target = state.params.target
        terminated = jnp.zeros((), bool)
        if self.task in ARC_FAMILIES:
            reward = arc_reward(pos, state.params, self.sparse_radius)
        elif self.task in ("goal", "goalx"):
            reward = -jnp.linalg.norm(pos - target)
        elif self.task == "goal2d":
            d2 = jnp.sum(jnp.square(pos - target))
            reward = -d2
            terminated = d2 < GOAL2D_RADIUS**2
        else:
            reward = -jnp.linalg.norm(v - target)
        return state.replace(
            obs=pos,
            reward=reward.astype(jnp.float32),
            terminated=terminated,
            truncated=t >= self.episode_length,
            env_state={"pos": pos, "t": t},
        )

    def param_ranges(self):
        return dict(self.ranges)

    def split_description(self):
        return {split: " · ".join(f"{n} {r.describe()[split]}" for n, r in self.ranges.items()) for split in ("train", "interp", "extrap")}


def arc_reward(pos: jax.Array, params: ArcParams, sparse_radius: float) -> jax.Array:
    """The ``arc`` families' reward at position ``pos`` [..., 2]: ``-||pos - goal||`` (dense worlds) or
    1 within ``sparse_radius`` of the goal and exactly 0 outside it (sparse worlds)."""
    d = jnp.linalg.norm(pos - params.target, axis=-1)
    return jnp.where(params.sparse, (d <= sparse_radius).astype(jnp.float32), -d)
