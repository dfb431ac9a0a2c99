"""Meta-RL: evaluation over shared task sets and the classic baselines (learners build on these)."""

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (sim.render); set before MuJoCo loads a GL backend
