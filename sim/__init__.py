"""Simulation: the Env contract, its backends, wrappers and the env registry.

>>> import sim, jax
>>> env = sim.make("bandit-k10-n100", batch_size=64)
>>> params = env.sample_params(jax.random.key(0), "train")
>>> state = env.reset(jax.random.key(1), params)

The names below load on first use (PEP 562): ``import sim`` and the registry's lookups
(``sim.registered()``, ``sim.entry(id)``) import no JAX, so the CLI answers ``--help`` and refusals fast.
"""

from __future__ import annotations

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (sim.render); set before MuJoCo loads a GL backend

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "SPLITS": "sim.core", "Box": "sim.core", "Discrete": "sim.core", "Env": "sim.core", "State": "sim.core",
    "EnvEntry": "sim.registry", "entry": "sim.registry", "make": "sim.registry", "register": "sim.registry",
    "registered": "sim.registry", "resolve_backend": "sim.registry",
    "AutoReset": "sim.wrappers", "NormalizeObs": "sim.wrappers", "Trial": "sim.wrappers", "VmapEnv": "sim.wrappers",
    "Wrapper": "sim.wrappers",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:  # a submodule: sim.wrappers, sim.core, ...
        try:
            return importlib.import_module(f"sim.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"sim.{name}":
                raise
            raise AttributeError(f"module 'sim' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:
    from sim.core import SPLITS, Box, Discrete, Env, State
    from sim.registry import EnvEntry, entry, make, register, registered, resolve_backend
    from sim.wrappers import AutoReset, NormalizeObs, Trial, VmapEnv, Wrapper
