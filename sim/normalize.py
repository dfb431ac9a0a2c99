"""Running observation statistics (parallel Welford), shared by the env wrapper and policies.

A flat observation has one :class:`RunningStats`; a :class:`sim.core.Dict` observation has a dict of
them, one per vector part (1-D floating :class:`sim.core.Box`); other parts (images) are not
normalized. :func:`update_stats` and :func:`normalize` take either form.
"""

from __future__ import annotations

from typing import Any, Union

import jax
import jax.numpy as jnp
from flax import struct

from sim.core import Box, Dict


@struct.dataclass
class RunningStats:
    """Mean and variance of everything seen so far (over all leading dims)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, dim: int) -> "RunningStats":
        return cls(jnp.zeros(dim, jnp.float32), jnp.ones(dim, jnp.float32), jnp.zeros((), jnp.float32))


Stats = Union[RunningStats, dict[str, RunningStats]]


def create_stats(space: Box | Dict) -> Stats:
    """Fresh statistics for observations of ``space``: one :class:`RunningStats` over a Box's last axis,
    or ``{part: RunningStats}`` over the vector parts of a Dict."""
    if isinstance(space, Dict):
        return {name: RunningStats.create(s.shape[-1]) for name, s in space.items() if s.is_vector}
    if isinstance(space, Box):
        return RunningStats.create(space.shape[-1])
    raise ValueError(f"observation statistics need a Box or Dict space, got {space!r}")


def update_stats(stats: Stats, x: Any) -> Stats:
    """Fold a batch ``x`` [..., dim] (a dict of them for dict statistics) into the statistics
    (Chan et al. parallel update)."""
    if isinstance(stats, dict):
        return {name: update_stats(s, x[name]) for name, s in stats.items()}
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    n = jnp.asarray(x.shape[0], jnp.float32)
    mean_b = x.mean(0)
    var_b = x.var(0)
    total = stats.count + n
    delta = mean_b - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + var_b * n + delta**2 * stats.count * n / total
    return RunningStats(mean=mean, var=m2 / total, count=total)


def normalize(stats: Stats, x: Any, clip: float = 10.0) -> Any:
    """``clip((x - mean) / sqrt(var + 1e-8))``; with dict statistics, the parts they cover (the others
    pass through unchanged)."""
    if isinstance(stats, dict):
        return {name: normalize(stats[name], v, clip) if name in stats else v for name, v in x.items()}
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.var + 1e-8), -clip, clip)
