"""Helpers shared by robot packages."""

from __future__ import annotations

import importlib.util
import os

import jax.numpy as jnp
import mujoco


def suite_model(name: str) -> mujoco.MjModel:
    """A dm_control suite model (shipped in the ``dm-control`` package) by file stem.

    The file is found without importing dm_control (whose import starts a renderer)."""
    spec = importlib.util.find_spec("dm_control")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("dm-control is not installed; run bash scripts/setup.sh")
    path = os.path.join(list(spec.submodule_search_locations)[0], "suite", f"{name}.xml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"dm_control suite has no model {name!r} (looked for {path})")
    return mujoco.MjModel.from_xml_path(path)


def upright(cos_angle):
    """1 when a pole points straight up, 0 straight down, smooth in between."""
    return (1.0 + cos_angle) / 2.0


def centered(x, width: float = 1.0):
    """1 at x = 0, 1/2 far away."""
    return (1.0 + jnp.exp(-((x / width) ** 2))) / 2.0
