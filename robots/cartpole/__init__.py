"""Cart-pole balance and swing-up on the dm_control suite model (``cartpole.xml``).

The hinge angle is 0 with the pole up. ``balance`` starts near upright (angle and cart position
within ±0.05), ``swingup`` starts hanging down (angle π ± 0.05). Reward per step:
``upright(angle) * centered(cart position)`` with ``upright = (1 + cos) / 2`` and
``centered = (1 + exp(-x^2)) / 2``. No termination: the rails bound the cart. Control period 0.04 s
(4 physics steps of 0.01 s), episodes of 250 steps.

Randomized by default: cart mass, pole mass, pole centre of mass along the pole (length), extra hinge
damping (added to the nominal 2e-6), and gravity; observation noise (std up to 0.01, extrap
0.01–0.03) and an observation latency of 0 or 1 control steps (extrap 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from randomization.effects import Effects, ObsLatency, ObsNoise
from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec, Term
import dataclasses

from randomization.visual import Backdrop, CameraPose, Colors, Distractors, Lights, PixelEffects, Textures, VisualSpec
from robots.common import centered, suite_model, suite_spec, upright
from robots.task import MujocoTask, PhysicsView, PixelSpec

RANDOMIZATION = RandomizationSpec((
    Term("body_mass", ("cart",), SplitRange("cart mass ×", (0.5, 1.5), (0.9, 1.1), ((1.5, 2.5),))),
    Term("body_mass", ("pole_1",), SplitRange("pole mass ×", (0.5, 1.5), (0.9, 1.1), ((1.5, 3.0),))),
    Term("body_ipos", ("pole_1",), SplitRange("pole COM ×", (0.7, 1.3), (0.95, 1.05), ((0.5, 0.7), (1.3, 1.6))), columns=(2,)),
    Term("dof_damping", ("hinge_1",), SplitRange("hinge damping +", (0.0, 0.01), (0.004, 0.006), ((0.01, 0.03),)), mode="add"),
    Term("opt.gravity", (), SplitRange("gravity ×", (0.9, 1.1), (0.98, 1.02), ((1.1, 1.3),)), columns=(2,)),
), effects=Effects(
    obs_noise=ObsNoise(SplitRange("obs noise std", (0.0, 0.01), (0.004, 0.006), ((0.01, 0.03),))),
    obs_latency=ObsLatency(SplitRange("obs latency steps", (0.0, 2.0), extrap=((2.0, 3.0),), dist="discrete"), max_steps=2),
))

OBS_NAMES = ("cart_pos", "pole_cos", "pole_sin", "cart_vel", "pole_angvel")


def _obs(view: PhysicsView, task) -> jax.Array:
    x, a = view.qpos[0], view.qpos[1]
    return jnp.stack([x, jnp.cos(a), jnp.sin(a), view.qvel[0], view.qvel[1]])


def _reward(view: PhysicsView, action, task) -> jax.Array:
    return upright(jnp.cos(view.qpos[1])) * centered(view.qpos[0])


def _init(angle: float):
    def init(key, qpos0, qvel0):
        k1, k2 = jax.random.split(key)
        x = jax.random.uniform(k1, (), jnp.float32, -0.05, 0.05)
        a = angle + jax.random.uniform(k2, (), jnp.float32, -0.05, 0.05)
        return qpos0.at[0].set(x).at[1].set(a), qvel0

    return init


def _task(name: str, angle: float) -> MujocoTask:
    return MujocoTask(
        name=name,
        family="cartpole",
        load_model=lambda: suite_model("cartpole"),
        obs_names=OBS_NAMES,
        obs_fn=_obs,
        reward_fn=_reward,
        init_fn=_init(angle),
        n_substeps=4,
        episode_length=250,
        randomization=RANDOMIZATION,
    )


BALANCE = _task("cartpole-balance", 0.0)
SWINGUP = _task("cartpole-swingup", float(jnp.pi))


# -- pixels: the same task seen through a camera (64 x 64 RGB), no vector observation
VISUAL = VisualSpec(
    colors=Colors(("self", "decoration")),
    textures=Textures(("grid",)),
    lights=Lights(),
    camera=CameraPose(),
    backdrop=Backdrop(pos=(0.0, 4.0, 1.0), size=(8.0, 0.1, 6.0)),
    distractors=Distractors(low=(-1.5, 0.5, 0.2), high=(1.5, 2.5, 2.0)),
    pixels=PixelEffects(),
)


PIXEL_CAMERA = "pixels"
"""The pixel tasks' camera, added to the render model: 3 m in front of the rails, 0.3 m above them,
looking along +y (the suite's ``fixed`` camera stands 4 m away, where the pole is a few pixels wide at
64x64); it sees the rails' middle 2.5 m and the pole whole."""


def pixel_spec():
    """The suite model with :data:`PIXEL_CAMERA`."""
    spec = suite_spec("cartpole")
    spec.worldbody.add_camera(name=PIXEL_CAMERA, pos=[0.0, -3.0, 1.3], quat=[0.7071068, 0.7071068, 0.0, 0.0], fovy=45.0)
    return spec


def pixel_task(name: str = "cartpole-balance-pixels", visual: VisualSpec = VISUAL, height: int = 64, width: int = 64,
               camera: str = PIXEL_CAMERA, appearance_split: str | None = None) -> MujocoTask:
    """Cart-pole balance from pixels: the dynamics (and its latency) as ``cartpole-balance``, the
    observation one ``height x width`` RGB image from ``camera`` in the world's appearance
    (``visual``; an empty :class:`VisualSpec`: the nominal appearance in every world), drawn from
    ``appearance_split`` when given (else from the world's own split)."""
    return dataclasses.replace(BALANCE, name=name, pixels=PixelSpec(
        load_spec=pixel_spec, camera=camera, height=height, width=width, visual=visual,
        appearance_split=appearance_split))


BALANCE_PIXELS = pixel_task()
BALANCE_PIXELS_NOMINAL = pixel_task("cartpole-balance-pixels-nominal", VisualSpec())
BALANCE_PIXELS_UNSEEN = pixel_task("cartpole-balance-pixels-unseen", appearance_split="extrap")
