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

Ranges as data. A range's *structure* (its distribution, whether it has a hole, how many
extrapolation intervals) is fixed at construction; its *bounds* are data: :meth:`SplitRange.bounds`
gives them as a small pytree of float32 arrays (``{"train": [2], "interp": [2], "extrap": [k, 2]}``,
the last two only where declared) and ``sample(key, split, shape, bounds)`` draws from whatever
bounds it is given, with no bound baked into the trace. Guided randomization (ADR, SimOpt) moves the
bounds inside a jitted run without recompiling; :meth:`SplitRange.with_bounds` turns moved bounds
back into a validated range on the host. With the default bounds the draws equal the
declared-float draws of earlier releases up to float32 rounding of the interval arithmetic (bit for
bit where the bounds are exact in float32, such as integers and halves), so they have the same
distribution.

Everything is validated at construction and every error names the parameter and the bad value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

SPLITS: tuple[str, ...] = ("train", "interp", "extrap")

Interval = tuple[float, float]
DISTS = ("uniform", "log_uniform", "normal", "discrete")


def _piecewise(u: jax.Array, bounds: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """Map ``u`` in ``[0, total length)`` onto the union of ``bounds`` (float32 scalars), skipping the
    gaps: the first length of ``u`` goes to the first interval, the next to the second, and so on."""
    x = u + bounds[0][0]
    acc = None
    for (lo, hi), (nlo, _) in zip(bounds[:-1], bounds[1:]):
        acc = hi - lo if acc is None else acc + (hi - lo)
        x = jnp.where(u >= acc, u - acc + nlo, x)
    return x


def _total(bounds: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    total = None
    for lo, hi in bounds:
        total = hi - lo if total is None else total + (hi - lo)
    return total


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

    # -- bounds as data ----------------------------------------------------------------------
    def bounds(self) -> dict[str, jax.Array]:
        """The declared bounds as data (float32): ``{"train": [2]}`` plus ``"interp": [2]`` and
        ``"extrap": [k, 2]`` where declared. :meth:`sample` and :meth:`contains` read this layout."""
        out = {"train": jnp.asarray(self.train, jnp.float32)}
        if self.interp is not None:
            out["interp"] = jnp.asarray(self.interp, jnp.float32)
        if self.extrap:
            out["extrap"] = jnp.asarray(self.extrap, jnp.float32).reshape(len(self.extrap), 2)
        return out

    def _check_bounds(self, bounds) -> dict[str, jax.Array]:
        if bounds is None:
            return self.bounds()
        want = {"train"} | ({"interp"} if self.interp is not None else set()) | ({"extrap"} if self.extrap else set())
        got = set(bounds) if isinstance(bounds, dict) else None
        if got != want:
            raise ValueError(f"{self.name}: bounds must have the keys {sorted(want)}, got {sorted(got) if got is not None else type(bounds).__name__}")
        for k, v in bounds.items():
            shape = (len(self.extrap), 2) if k == "extrap" else (2,)
            if tuple(jnp.shape(v)) != shape:
                raise ValueError(f"{self.name}: bounds[{k!r}] must have shape {shape}, got {tuple(jnp.shape(v))}")
        return bounds

    def split_bounds(self, split: str, bounds: dict[str, jax.Array] | None = None) -> list[tuple[jax.Array, jax.Array]]:
        """The split's intervals read from ``bounds`` (default: the declared ones), as float32
        ``(low, high)`` scalars; their number is fixed by the range's structure."""
        self.intervals(split)  # validates the split and that it is declared
        b = self._check_bounds(bounds)
        f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        train = (f32(b["train"][0]), f32(b["train"][1]))
        if self.shared:
            return [train]
        if split == "train":
            if self.interp is None:
                return [train]
            return [(train[0], f32(b["interp"][0])), (f32(b["interp"][1]), train[1])]
        if split == "interp":
            return [(f32(b["interp"][0]), f32(b["interp"][1]))] if self.interp is not None else [train]
        ext = f32(b["extrap"])
        return [(ext[i, 0], ext[i, 1]) for i in range(len(self.extrap))]

    def with_bounds(self, bounds: dict) -> "SplitRange":
        """A validated range with the structure of this one and the given bounds (host side: to check
        or show bounds that guided randomization moved)."""
        b = {k: np.asarray(v, np.float64) for k, v in self._check_bounds(bounds).items()}
        return dataclasses.replace(
            self,
            train=tuple(b["train"].tolist()),
            interp=tuple(b["interp"].tolist()) if "interp" in b else None,
            extrap=tuple(tuple(iv) for iv in b["extrap"].tolist()) if "extrap" in b else (),
        )

    # -- sampling -------------------------------------------------------------------------------
    def sample(
        self, key: jax.Array, split: str = "train", shape: tuple[int, ...] = (), bounds: dict[str, jax.Array] | None = None
    ) -> jax.Array:
        """Draw values from the split's support with the range's distribution (module docstring).

        ``bounds`` (the layout of :meth:`bounds`; ``None``: the declared bounds) is data: any float32
        arrays, traced or not, so one compiled sampler serves every bound.
        """
        ivs = self.split_bounds(split, bounds)
        if self.dist == "normal":
            train = self._check_bounds(bounds)["train"]
            return self._sample_normal(key, ivs, (jnp.asarray(train[0], jnp.float32), jnp.asarray(train[1], jnp.float32)), shape)
        fwd = jnp.log if self.dist == "log_uniform" else (lambda v: v)
        fb = [(fwd(lo), fwd(hi)) for lo, hi in ivs]
        u = jax.random.uniform(key, shape, jnp.float32, 0.0, _total(fb))
        x = _piecewise(u, fb)
        if self.dist == "log_uniform":
            return jnp.exp(x)
        if self.dist == "discrete":
            return jnp.floor(x)
        return x

    @staticmethod
    def _sample_normal(key, ivs, train, shape):
        mean = 0.5 * (train[0] + train[1])
        std = 0.25 * (train[1] - train[0])
        # the split's intervals in CDF space: sample uniformly there, map back by the inverse CDF
        ndtr = lambda v: jax.scipy.special.ndtr((v - mean) / std)  # noqa: E731
        cb = [(ndtr(lo), ndtr(hi)) for lo, hi in ivs]
        p = _piecewise(jax.random.uniform(key, shape, jnp.float32, 0.0, _total(cb)), cb)
        x = mean + std * jax.scipy.special.ndtri(jnp.clip(p, 1e-7, 1 - 1e-7))
        lo = functools.reduce(jnp.minimum, [a for a, _ in ivs])
        hi = functools.reduce(jnp.maximum, [b for _, b in ivs])
        return jnp.clip(x, lo, hi)

    def contains(self, x: jax.Array, split: str, bounds: dict[str, jax.Array] | None = None) -> jax.Array:
        """Elementwise: is ``x`` inside the split's support (closed intervals) under ``bounds``?"""
        x = jnp.asarray(x)
        inside = jnp.zeros(x.shape, bool)
        for lo, hi in self.split_bounds(split, bounds):
            inside = inside | ((x >= lo - 1e-6 * jnp.abs(lo)) & (x <= hi + 1e-6 * jnp.abs(hi)))
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
