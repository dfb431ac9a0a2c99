"""Declarative randomization of worlds.

Today: :class:`SplitRange`, the split-aware (train / interp / extrap) range of one scalar parameter, which
the task parameters of the pure-JAX envs use. The per-robot dynamics specification (MuJoCo fields named
by element, modes, sensor/actuator effects, guided DR) builds on it.
"""

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (sim.render); set before MuJoCo loads a GL backend

from randomization.ranges import SPLITS, SplitRange, check_split

__all__ = ["SPLITS", "SplitRange", "check_split"]
