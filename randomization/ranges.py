"""Split-aware ranges for scalar world parameters.

A :class:`SplitRange` says where one scalar parameter lives in each evaluation split:

* ``train``: the training interval ``[lo, hi]``, minus the ``interp`` hole when one is declared;
* ``interp``: a held-out interval strictly *inside* the training hull, never sampled in training
  (interpolation); without a hole, interp draws fresh values from the training interval;
* ``extrap``: one or more intervals strictly *outside* the training hull (extrapolation).

A range that declares neither is *shared*: every split draws from the training interval.

Distributions over the union of a split's intervals:

* ``uniform`` / ``log_uniform``: weighted by length (in log space for the latter), so a split with a
  hole still covers its support evenly;
* ``normal``: a normal centred on the training interval's midpoint with standard deviation a quarter
  of its width, truncated to the split's intervals (exact, by inverse CDF);
* ``discrete``: the integers ``floor(x)`` of a uniform draw, i.e. an interval ``(0, 3)`` gives 0, 1 or 2
  with equal probability.

Everything is validated at construction and every error names the parameter and the bad value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import jax.scipy.special

SPLITS: tuple[str, ...] = ("train", "interp", "extrap")

Interval = tuple[float, float]
DISTS = ("uniform", "log_uniform", "normal", "discrete")


def _piecewise(u: jax.Array, bounds: list[Interval]) -> jax.Array:
    """Map ``u`` in ``[0, total length)`` onto the union of sorted ``bounds``, skipping the gaps."""
    x = u + bounds[0][0]
    acc = 0.0
    for (lo, hi), (nlo, _) in zip(bounds[:-1], bounds[1:]):
        acc += hi - lo
        x = jnp.where(u >= acc, u - acc + nlo, x)
    return x


def check_split(split: str) -> str:
    """Return ``split`` if it is a known split name, else raise naming it and the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def _check_interval(name: str, what: str, iv: Interval) -> Interval:
    try:
        lo, hi = (float(v) for v in iv)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {what} range must be a (low, high) pair, got {iv!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: {what} range {iv!r} must be finite")
    if lo >= hi:
        raise ValueError(f"{name}: {what} range has low {lo} >= high {hi}")
    return (lo, hi)


@dataclasses.dataclass(frozen=True)
class SplitRange:
    """Where one scalar parameter is drawn from in each split.

    Attributes:
        name: parameter name, used in error messages and listings.
        train: training interval ``(low, high)``.
        interp: held-out interval inside ``train`` (excluded from training), or ``None``.
        extrap: intervals outside the training hull, possibly empty (then ``extrap`` is refused).
        dist: ``"uniform"``, ``"log_uniform"`` (positive bounds), ``"normal"`` or ``"discrete"``.
        unit: unit shown in listings.
    """

    name: str
    train: Interval
    interp: Interval | None = None
    extrap: tuple[Interval, ...] = ()
    dist: Literal["uniform", "log_uniform", "normal", "discrete"] = "uniform"
    unit: str = ""

    def __post_init__(self):
        n = self.name
        if self.dist not in DISTS:
            raise ValueError(f"{n}: unknown distribution {self.dist!r}; expected one of {', '.join(DISTS)}")
        train = _check_interval(n, "train", self.train)
        object.__setattr__(self, "train", train)
        if self.interp is not None:
            interp = _check_interval(n, "interp", self.interp)
            if not (train[0] < interp[0] and interp[1] < train[1]):
                raise ValueError(f"{n}: interp range {interp} must lie strictly inside the train range {train}")
            object.__setattr__(self, "interp", interp)
        extrap = tuple(_check_interval(n, "extrap", iv) for iv in self.extrap)
        for iv in extrap:
            if iv[1] > train[0] and iv[0] < train[1]:
                raise ValueError(f"{n}: extrap range {iv} overlaps the train range {train}")
        object.__setattr__(self, "extrap", tuple(sorted(extrap)))
        if self.dist == "log_uniform":
            for split in SPLITS:
                for lo, _ in self._raw_intervals(split):
                    if lo <= 0:
                        raise ValueError(f"{n}: log_uniform needs positive bounds, got low {lo} in {split}")

    @property
    def shared(self) -> bool:
        """No held-out ranges: every split draws from the training range."""
        return self.interp is None and not self.extrap

    def _raw_intervals(self, split: str) -> list[Interval]:
        if self.shared:
            return [self.train]
        if split == "train":
            if self.interp is None:
                return [self.train]
            return [(self.train[0], self.interp[0]), (self.interp[1], self.train[1])]
        if split == "interp":
            return [self.interp if self.interp is not None else self.train]
        return list(self.extrap)

    def declared_intervals(self) -> list[Interval]:
        """Every interval any split can draw from."""
        return [iv for split in SPLITS for iv in self._raw_intervals(split)]

    def intervals(self, split: str) -> list[Interval]:
        """The intervals a split draws from (their union is the split's support)."""
        check_split(split)
        ivs = self._raw_intervals(split)
        if not ivs:
            raise ValueError(f"{self.name}: no {split!r} range declared")
        return ivs

    def sample(self, key: jax.Array, split: str = "train", shape: tuple[int, ...] = ()) -> jax.Array:
        """Draw values from the split's support with the range's distribution (module docstring)."""
        ivs = self.intervals(split)
        if self.dist == "normal":
            return self._sample_normal(key, ivs, shape)
        fwd = math.log if self.dist == "log_uniform" else float
        bounds = [(fwd(lo), fwd(hi)) for lo, hi in ivs]
        total = sum(hi - lo for lo, hi in bounds)
        u = jax.random.uniform(key, shape, jnp.float32, 0.0, total)
        x = _piecewise(u, bounds)
        if self.dist == "log_uniform":
            return jnp.exp(x)
        if self.dist == "discrete":
            return jnp.floor(x)
        return x

    def _sample_normal(self, key, ivs, shape):
        mean = 0.5 * (self.train[0] + self.train[1])
        std = 0.25 * (self.train[1] - self.train[0])
        # the split's intervals in CDF space: sample uniformly there, map back by the inverse CDF
        ndtr = lambda v: 0.5 * math.erfc(-(v - mean) / (std * math.sqrt(2.0)))  # noqa: E731
        bounds = [(ndtr(lo), ndtr(hi)) for lo, hi in ivs]
        total = sum(hi - lo for lo, hi in bounds)
        if total <= 0:
            raise ValueError(f"{self.name}: the normal has no mass on {ivs}")
        p = _piecewise(jax.random.uniform(key, shape, jnp.float32, 0.0, total), bounds)
        x = mean + std * jax.scipy.special.ndtri(jnp.clip(p, 1e-7, 1 - 1e-7))
        lo, hi = min(a for a, _ in ivs), max(b for _, b in ivs)
        return jnp.clip(x, lo, hi)

    def contains(self, x: jax.Array, split: str) -> jax.Array:
        """Elementwise: is ``x`` inside the split's support (closed intervals)?"""
        x = jnp.asarray(x)
        inside = jnp.zeros(x.shape, bool)
        for lo, hi in self.intervals(split):
            inside = inside | ((x >= lo - 1e-6 * abs(lo)) & (x <= hi + 1e-6 * abs(hi)))
        return inside

    def describe(self) -> dict[str, str]:
        """Human-readable ranges per split, for ``proteus envs``."""
        fmt = lambda ivs: " ∪ ".join(f"[{lo:g}, {hi:g}]" for lo, hi in ivs)  # noqa: E731
        out = {}
        for split in SPLITS:
            ivs = self._raw_intervals(split)
            out[split] = fmt(ivs) if ivs else "—"
        if self.shared:
            out = {split: fmt([self.train]) + " (all splits)" for split in SPLITS}
        elif self.interp is None:
            out["interp"] += " (fresh draws)"
        return out
