"""Simulation: the Env contract, its backends, wrappers and the env registry.

>>> import sim, jax
>>> env = sim.make("bandit-k10-n100", batch_size=64)
>>> params = env.sample_params(jax.random.key(0), "train")
>>> state = env.reset(jax.random.key(1), params)
"""

from sim.core import SPLITS, Box, Discrete, Env, State
from sim.registry import EnvEntry, entry, make, register, registered
from sim.wrappers import AutoReset, NormalizeObs, Trial, VmapEnv, Wrapper

__all__ = [
    "SPLITS",
    "AutoReset",
    "Box",
    "Discrete",
    "Env",
    "EnvEntry",
    "NormalizeObs",
    "State",
    "Trial",
    "VmapEnv",
    "Wrapper",
    "entry",
    "make",
    "register",
    "registered",
]
