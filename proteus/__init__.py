"""Proteus: the CLI, run folders, reports and benchmarks."""

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (sim.render); set before MuJoCo loads a GL backend

__version__ = "0.1.0"
