"""PopArt value normalization (van Hasselt et al. 2016), in place of a fixed ``reward_scale``.

The value head predicts a normalized value ``v̂``; the policy reports ``V = σ v̂ + μ`` (so rollouts,
GAE and everything outside the loss work in return units), and the value loss compares normalized
values, ``(V - G) / σ``, so its scale stays O(1) whatever the returns' scale. After each update the
statistics move towards the update's value targets ``G`` by exponential moving averages of their mean
and variance with step ``beta`` (debiased as Adam's moments are, so the first update is not pulled
towards the initial 0 and 1), and the value head's last layer is rescaled so that ``V`` is unchanged for every
input ("preserving outputs precisely"):

    W' = W σ / σ',      b' = (σ b + μ - μ') / σ'.

The statistics live in the policy's params (``params["value_norm"]``), saved with every checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

MIN_SCALE = 1e-4
"""Floor of σ: targets that never vary (a constant return) do not blow up the normalized loss."""


@struct.dataclass
class ValueNorm:
    """The debiased moving mean ``mu`` and variance ``var`` of the value targets, and the updates
    folded in (``mu = 0``, ``var = 1`` before the first)."""

    mu: jax.Array
    var: jax.Array
    updates: jax.Array

    @classmethod
    def create(cls) -> "ValueNorm":
        return cls(jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32))

    @property
    def sigma(self) -> jax.Array:
        """The standard deviation, floored at :data:`MIN_SCALE`."""
        return jnp.sqrt(jnp.maximum(self.var, MIN_SCALE**2))


def update(vn: ValueNorm, targets: jax.Array, beta: float) -> ValueNorm:
    """Fold one update's targets (any shape) into the statistics.

    The debiased moving average of Adam's moments is a moving average whose step at update ``t`` is
    ``beta_t = beta / (1 - (1 - beta)^t)`` (1 at the first update: the first targets' own statistics).
    The variance is the weighted mixture's, ``(1 - b)(var + b delta²) + b var_batch`` with
    ``delta`` the batch mean minus ``mu``: exact, and without ``E[G²] - E[G]²``'s cancellation in
    float32 when the returns are large and nearly constant.
    """
    t = targets.astype(jnp.float32).reshape(-1)
    updates = vn.updates + 1.0
    b = jnp.where(updates == 1.0, 1.0, beta / (1.0 - (1.0 - beta) ** updates))  # exactly 1 at the first
    delta = jnp.mean(t) - vn.mu
    return ValueNorm(mu=vn.mu + b * delta, var=(1.0 - b) * (vn.var + b * jnp.square(delta)) + b * jnp.var(t),
                     updates=updates)


def preserve_outputs(head: dict, old: ValueNorm, new: ValueNorm) -> dict:
    """The value head's last layer (``{"kernel", "bias"}``) rescaled so that ``σ v̂ + μ`` is the same
    under the ``new`` statistics as under the ``old``."""
    return {**head, "kernel": head["kernel"] * old.sigma / new.sigma,
            "bias": (old.sigma * head["bias"] + old.mu - new.mu) / new.sigma}
