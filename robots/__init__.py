"""Robot packages: each holds its MuJoCo model, its task as jnp functions of a backend-neutral physics
view (:mod:`robots.task`), its default randomization and its splits. ``sim`` registers and runs them."""

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (sim.render); set before MuJoCo loads a GL backend
