"""Checkpoints of whole pytrees (train states) with orbax, and policy files.

Orbax stores a flat ``{"leaf_00000": array, ...}`` dict: restoring against a template built by the
same code gives back the exact pytree (typed PRNG keys included, stored as their key data), whatever
node types (flax structs, optax states) it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flat(tree: Any) -> dict[str, np.ndarray]:
    """Leaves by position; empty arrays (a feed-forward policy's [B, 0] carry) are left out (orbax
    refuses them) and come back from the template."""
    leaves = jax.tree.leaves(tree)
    out = {}
    for i, x in enumerate(leaves):
        if np.size(x) or _is_key(x):
            out[f"leaf_{i:05d}"] = np.asarray(jax.random.key_data(x) if _is_key(x) else x)
    return out


def _unflat(template: Any, flat: dict) -> Any:
    leaves, treedef = jax.tree.flatten(template)
    expected = sum(1 for t in leaves if np.size(t) or _is_key(t))
    if len(flat) != expected:
        raise ValueError(f"checkpoint holds {len(flat)} arrays, the current code expects {expected}")
    out = []
    for i, t in enumerate(leaves):
        if not (np.size(t) or _is_key(t)):
            out.append(t)
            continue
        v = np.asarray(flat[f"leaf_{i:05d}"])
        if _is_key(t):
            out.append(jax.random.wrap_key_data(v, impl=jax.random.key_impl(t)))
        else:
            if v.shape != np.shape(t):
                raise ValueError(f"checkpoint array {i} has shape {v.shape}, expected {np.shape(t)}")
            out.append(jax.numpy.asarray(v, dtype=t.dtype))
    return jax.tree.unflatten(treedef, out)


class Checkpoints:
    """Orbax checkpoints of a train state in ``directory``, the last ``keep`` kept."""

    def __init__(self, directory: Path, keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, tree: Any) -> None:
        self.manager.save(int(step), args=self._ocp.args.StandardSave(_flat(tree)))
        self.manager.wait_until_finished()

    def restore(self, template: Any, step: int | None = None) -> Any:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = {k: np.zeros(v.shape, v.dtype) for k, v in _flat(template).items()}
        flat = self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        return _unflat(template, flat)

    def close(self) -> None:
        self.manager.close()


def save_policy(directory: Path, spec, params: Any, extra: dict | None = None) -> None:
    """``spec.json`` (the PolicySpec and ``extra`` metadata) and ``params.msgpack`` (flax serialization)."""
    from flax import serialization

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spec.json").write_text(json.dumps({"spec": spec.to_dict(), **(extra or {})}, indent=2))
    (directory / "params.msgpack").write_bytes(serialization.to_bytes(jax.device_get(params)))


def read_policy_meta(directory: Path, hint: str = "") -> tuple[dict, Path]:
    """``(metadata, params file)`` of :func:`save_policy`'s folder; missing files and corrupt JSON
    raise naming the file (``hint`` is added to the missing-file message)."""
    directory = Path(directory)
    spec_file, params_file = directory / "spec.json", directory / "params.msgpack"
    for f in (spec_file, params_file):
        if not f.is_file():
            raise FileNotFoundError(f"policy file missing: {f}{hint}")
    try:
        return json.loads(spec_file.read_text()), params_file
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt policy spec {spec_file}: {e}") from None


def read_policy_params(template: Any, params_file: Path) -> Any:
    """The saved params read against ``template``; a corrupt file raises naming it."""
    from flax import serialization

    try:
        return serialization.from_bytes(template, Path(params_file).read_bytes())
    except Exception as e:  # msgpack raises several types
        raise ValueError(f"corrupt policy parameters {params_file}: {e}") from None


def load_policy(directory: Path):
    """``(Policy, params, extra)`` from :func:`save_policy`'s folder; errors name the path."""
    from meta_rl.networks import Policy, PolicySpec

    meta, params_file = read_policy_meta(directory)
    try:
        policy = Policy(PolicySpec.from_dict(meta.pop("spec")))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt policy spec {Path(directory) / 'spec.json'}: {e}") from None
    return policy, read_policy_params(policy.init(jax.random.key(0)), params_file), meta
