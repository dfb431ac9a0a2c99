"""Helpers shared by robot packages."""

from __future__ import annotations

import importlib.util
import os

import jax.numpy as jnp
import mujoco


def _suite_path(name: str) -> str:
    spec = importlib.util.find_spec("dm_control")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("dm-control is not installed; run bash scripts/setup.sh")
    path = os.path.join(list(spec.submodule_search_locations)[0], "suite", f"{name}.xml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"dm_control suite has no model {name!r} (looked for {path})")
    return path


def suite_model(name: str) -> mujoco.MjModel:
    """A dm_control suite model (shipped in the ``dm-control`` package) by file stem.

    The file is found without importing dm_control (whose import starts a renderer)."""
    return mujoco.MjModel.from_xml_path(_suite_path(name))


def suite_spec(name: str) -> mujoco.MjSpec:
    """The same model as an editable ``mujoco.MjSpec`` (pixel tasks build their render model from it)."""
    return mujoco.MjSpec.from_file(_suite_path(name))


def upright(cos_angle):
    """1 when a pole points straight up, 0 straight down, smooth in between."""
    return (1.0 + cos_angle) / 2.0


def centered(x, width: float = 1.0):
    """1 at x = 0, 1/2 far away."""
    return (1.0 + jnp.exp(-((x / width) ** 2))) / 2.0


def check_sparse_radius(radius, field: str = "sparse_radius") -> float:
    """``radius`` as a float if it is a finite number > 0, else a ``ValueError`` naming ``field``."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < float(radius) < float("inf"):
        raise ValueError(f"{field} must be a finite number > 0, got {radius!r}")
    return float(radius)


def sparse_reward(distance, radius: float):
    """1 within ``radius`` of a goal, exactly 0 outside it (a sparse goal reward)."""
    return (distance <= radius).astype(jnp.float32)


def fault_action(action, motor, flipped):
    """A hidden actuator fault on the normalized ``action`` [nu]: motor ``motor`` (an integer-valued
    task parameter) receives ``-action`` when ``flipped`` (a 0/1 task parameter) is 1, nothing when
    it is 0 (disabled); every other motor receives its action."""
    hit = jnp.arange(action.shape[-1]) == motor.astype(jnp.int32)
    gain = jnp.where(flipped >= 0.5, -1.0, 0.0)
    return jnp.where(hit, gain * action, action)
