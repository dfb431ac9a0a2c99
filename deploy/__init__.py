"""Deployment: ONNX export with a parity check, and a fixed-rate controller runtime with a safety layer.

- :mod:`deploy.export` — :func:`export_onnx` / :func:`export_agent` (an agent's JAX step traced to
  ONNX, checked against JAX before writing), :func:`read_metadata`. Needs ``onnx`` and
  ``onnxruntime``; JAX only for the export itself.
- :mod:`deploy.rl2_inputs` — :class:`RL2Inputs`: the RL² inputs (previous action, reward, done,
  trial time) a robot driver appends to its observations, NumPy only.
- :mod:`deploy.runtime` — :class:`Controller`, :class:`RobotInterface`, :class:`SafetyConfig`,
  :class:`SafetyEvents`, :class:`OnnxPolicy`, :class:`OnnxAdapter` (a gradient learner's
  ``adapt.onnx``). Needs ``numpy`` and ``onnxruntime`` only.
- :mod:`deploy.episodes` — :class:`EpisodeRecorder`, :func:`load_episodes`: the episodes a robot
  records for adaptation, NumPy only.
- :mod:`deploy.bench` — :func:`bench_export` (onnxruntime vs jitted JAX latency per control step),
  :func:`soak` (the controller under injected faults) and :func:`bench_deploy` (soak at 500 Hz, jitter,
  Controller.step vs raw onnxruntime).
- :mod:`deploy.standin` — :class:`MujocoStandIn` (native MuJoCo playing the robot, hidden dynamics,
  latency, noise, another timestep) and :func:`run_standin` (the sim2sim report). Needs JAX and MuJoCo.

This package never imports JAX on import: names are resolved lazily, so ``from deploy import
Controller`` works on a robot computer without JAX.
"""

from __future__ import annotations

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (sim.render); set before MuJoCo loads a GL backend

import importlib

_EXPORTS = {
    "export_onnx": "deploy.export",
    "read_metadata": "deploy.export",
    "build_onnx": "deploy.export",
    "ExportReport": "deploy.export",
    "ParityError": "deploy.export",
    "export_agent": "deploy.export",
    "UnsupportedPrimitive": "deploy.export",
    "RL2Inputs": "deploy.rl2_inputs",
    "is_rl2": "deploy.rl2_inputs",
    "Controller": "deploy.runtime",
    "ControllerStopped": "deploy.runtime",
    "ContractMismatch": "deploy.runtime",
    "OnnxPolicy": "deploy.runtime",
    "OnnxAdapter": "deploy.runtime",
    "EpisodeRecorder": "deploy.episodes",
    "load_episodes": "deploy.episodes",
    "export_adapt": "deploy.export",
    "RobotInterface": "deploy.runtime",
    "SafetyConfig": "deploy.runtime",
    "SafetyEvents": "deploy.runtime",
    "SystemClock": "deploy.runtime",
    "bench_export": "deploy.bench",
    "bench_deploy": "deploy.bench",
    "soak": "deploy.bench",
    "MujocoStandIn": "deploy.standin",
    "run_standin": "deploy.standin",
    "run_episodes": "deploy.standin",
    "jax_episode_returns": "deploy.standin",
}

__all__ = [  # noqa: RUF022 (grouped by module, as _EXPORTS)
    "export_onnx",
    "read_metadata",
    "build_onnx",
    "ExportReport",
    "ParityError",
    "export_agent",
    "UnsupportedPrimitive",
    "RL2Inputs",
    "is_rl2",
    "Controller",
    "ControllerStopped",
    "ContractMismatch",
    "OnnxPolicy",
    "OnnxAdapter",
    "EpisodeRecorder",
    "load_episodes",
    "export_adapt",
    "RobotInterface",
    "SafetyConfig",
    "SafetyEvents",
    "SystemClock",
    "bench_export",
    "bench_deploy",
    "soak",
    "MujocoStandIn",
    "run_standin",
    "run_episodes",
    "jax_episode_returns",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
