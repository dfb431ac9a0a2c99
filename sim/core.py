"""The Env contract every backend implements.

An env is a set of pure functions over pytrees (Brax/gymnax style):

* ``sample_params(key, split, ranges=None) -> params``: one world (task parameters, randomized physics,
  sensor and actuator parameters) drawn from the ``train``, ``interp`` or ``extrap`` split. ``ranges``
  is the randomization ranges as data (a pytree; ``None``: the env's :meth:`Env.default_ranges`), so
  guided randomization (ADR) moves them inside a jitted run without recompiling;
* ``reset(key, params) -> State``: start an episode in that world;
* ``step(state, action) -> State``: advance one control step. ``step`` never reads ``state.obs``
  (observations are outputs only), so wrappers may rewrite them freely.

``State`` keeps ``terminated`` (the MDP ended: do not bootstrap) apart from ``truncated`` (a time limit
cut the episode: bootstrap from the final observation, which auto-resetting wrappers keep in
``info["final_obs"]``). Observation and action spaces carry a name for every element (of the last
axis). An observation is an array (a :class:`Box`, any shape: a vector, an H×W×C uint8 image) or a
dict of them (a :class:`Dict` space of named parts).

A batch of worlds is a ``vmap`` over params (:class:`sim.wrappers.VmapEnv`); resampling a world is a
``jnp.where`` on params, never a recompile.
"""

from __future__ import annotations

import abc
import dataclasses
import operator
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from randomization.ranges import SPLITS, SplitRange, check_split

__all__ = [
    "SPLITS",
    "Box",
    "Dict",
    "Discrete",
    "Env",
    "State",
    "action_fault",
    "check_batch_size",
    "check_split",
    "draw_params",
    "guard_action",
    "key_batch_shape",
    "split_key",
    "where_done",
]

Params = Any


@struct.dataclass
class State:
    """One env step's output (leading batch dims when batched).

    Attributes:
        obs: observation: an array of ``observation_space.shape`` (float32 for vectors), or a dict of
            arrays for a :class:`Dict` space.
        reward: reward of the transition that led here (float32 scalar).
        terminated: the episode reached a terminal state (bool).
        truncated: the episode was cut by a time limit, not terminal (bool).
        params: the world this state lives in (pytree from ``sample_params``).
        env_state: backend-specific state (step counter, physics state...).
        key: PRNG key for the env's own randomness (reward noise, resets).
        metrics: scalars for logging.
        info: extra outputs (``final_obs`` on auto-reset, trial bookkeeping...).
    """

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    params: Params
    env_state: Any
    key: jax.Array
    metrics: dict
    info: dict

    @property
    def done(self) -> jax.Array:
        """Episode ended for either reason."""
        return jnp.logical_or(self.terminated, self.truncated)


@dataclasses.dataclass(frozen=True)
class Box:
    """A continuous (or integer, e.g. ``uint8`` image) array space whose last axis is named.

    ``Box(names, low, high)`` is the 1-D space of ``len(names)`` named elements (float32). Any other
    shape is given by ``shape``, whose last axis ``names`` name (an H×W×C image's channels):
    ``Box(("r", "g", "b"), 0, 255, shape=(64, 64, 3), dtype="uint8")``, or :meth:`image`. ``low`` and
    ``high`` are one value or one per name (broadcast over the other axes).
    """

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    shape: tuple[int, ...] = None  # type: ignore[assignment]  # None: (len(names),)
    dtype: Any = jnp.float32

    def __post_init__(self):
        names = tuple(self.names)
        n = len(names)
        if len(set(names)) != n:
            raise ValueError(f"Box names must be unique, got {names}")
        shape = (n,) if self.shape is None else tuple(int(d) for d in self.shape)
        if not shape or any(d < 0 for d in shape) or shape[-1] != n:
            raise ValueError(f"Box shape {shape} must be non-empty, non-negative, and end with the {n} names {names}")
        try:
            dtype = jnp.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"Box dtype {self.dtype!r} is not a dtype") from None
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise ValueError(f"Box dtype must be floating or integer, got {dtype}")
        low = tuple(float(v) for v in (self.low if isinstance(self.low, tuple) else (self.low,) * n))
        high = tuple(float(v) for v in (self.high if isinstance(self.high, tuple) else (self.high,) * n))
        if len(low) != n or len(high) != n:
            raise ValueError(f"Box bounds need {n} entries, got low={low}, high={high}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype)

    @classmethod
    def image(cls, height: int, width: int, channels: tuple[str, ...] = ("r", "g", "b")) -> "Box":
        """An ``height × width × len(channels)`` uint8 image in [0, 255]."""
        return cls(tuple(channels), 0.0, 255.0, shape=(int(height), int(width), len(channels)), dtype=jnp.uint8)

    @property
    def is_vector(self) -> bool:
        """1-D and floating: the kind of part policies feed to an MLP and normalize."""
        return len(self.shape) == 1 and jnp.issubdtype(self.dtype, jnp.floating)

    def index(self, name: str) -> int:
        """Position of a named element along the last axis (raises naming the valid names)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no element {name!r}; names are {list(self.names)}") from None

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        lo = jnp.asarray(self.low, jnp.float32)
        hi = jnp.asarray(self.high, jnp.float32)
        lo = jnp.where(jnp.isfinite(lo), lo, -1.0)
        hi = jnp.where(jnp.isfinite(hi), hi, 1.0)
        if jnp.issubdtype(self.dtype, jnp.integer):
            lo, hi = lo.astype(jnp.int32), hi.astype(jnp.int32)
            return jax.random.randint(key, batch_shape + self.shape, lo, hi + 1, jnp.int32).astype(self.dtype)
        return jax.random.uniform(key, batch_shape + self.shape, jnp.float32, lo, hi).astype(self.dtype)

    def zeros(self, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.zeros(batch_shape + self.shape, self.dtype)

    def describe(self) -> str:
        if self.shape == (len(self.names),) and self.dtype == jnp.float32:
            return f"Box({len(self.names)})"
        return f"Box({'x'.join(map(str, self.shape))} {self.dtype.name})"


@dataclasses.dataclass(frozen=True)
class Discrete:
    """A choice among ``len(names)`` named actions (an int32 scalar)."""

    names: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def dtype(self):
        return jnp.int32

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        return jax.random.randint(key, batch_shape, 0, self.n, jnp.int32)

    def describe(self) -> str:
        return f"Discrete({self.n})"


@dataclasses.dataclass(frozen=True)
class Dict:
    """Named parts, each a :class:`Box` (observations are then ``{name: array}`` dicts).

    ``Dict({"image": Box.image(64, 64), "state": Box(("x", "v"), -1.0, 1.0)})``. Parts keep the
    order given (policies concatenate their features in it); ``spaces`` holds ``(name, space)`` pairs
    so the space stays hashable.
    """

    spaces: tuple[tuple[str, Box], ...]

    def __post_init__(self):
        items = tuple(self.spaces.items()) if isinstance(self.spaces, Mapping) else tuple(self.spaces)
        if not items:
            raise ValueError("Dict space needs at least one part")
        for name, space in items:
            if not isinstance(name, str) or not name:
                raise ValueError(f"Dict part names must be non-empty strings, got {name!r}")
            if not isinstance(space, Box):
                raise ValueError(f"Dict part {name!r} must be a Box, got {space!r}")
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(f"Dict part names must be unique, got {names}")
        object.__setattr__(self, "spaces", items)

    def keys(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.spaces)

    @property
    def vector_names(self) -> tuple[str, ...]:
        """The vector parts' elements as ``part.element``, in order: how policies, exported metadata and
        robot drivers name a dict observation's values (image parts have no per-element names)."""
        return tuple(f"{n}.{e}" for n, sp in self.spaces if sp.is_vector for e in sp.names)

    def items(self) -> tuple[tuple[str, Box], ...]:
        return self.spaces

    def __getitem__(self, name: str) -> Box:
        for n, space in self.spaces:
            if n == name:
                return space
        raise KeyError(f"no part {name!r}; parts are {list(self.keys())}")

    def __contains__(self, name) -> bool:
        return name in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.spaces)

    @property
    def shape(self) -> dict[str, tuple[int, ...]]:
        return {n: s.shape for n, s in self.spaces}

    @property
    def dtype(self) -> dict[str, Any]:
        return {n: s.dtype for n, s in self.spaces}

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> dict[str, jax.Array]:
        keys = jax.random.split(key, len(self.spaces))
        return {n: s.sample(k, batch_shape) for k, (n, s) in zip(keys, self.spaces)}

    def zeros(self, batch_shape: tuple[int, ...] = ()) -> dict[str, jax.Array]:
        return {n: s.zeros(batch_shape) for n, s in self.spaces}

    def describe(self) -> str:
        return "Dict(" + ", ".join(f"{n}: {s.describe()}" for n, s in self.spaces) + ")"


Space = Box | Discrete | Dict


def key_batch_shape(key: jax.Array) -> tuple[int, ...]:
    """Batch shape of a (typed or raw uint32) key array."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return tuple(key.shape)
    return tuple(key.shape[:-1])


def split_key(key: jax.Array, num: int = 2) -> tuple[jax.Array, ...]:
    """``jax.random.split`` that also works on batches of keys (splits each one)."""
    split = lambda k: tuple(jax.random.split(k, num))  # noqa: E731
    for _ in key_batch_shape(key):
        split = jax.vmap(split)
    return split(key)


def check_batch_size(batch_size) -> tuple[int, ...]:
    """The batch shape ``batch_size`` gives (an int, or a non-empty tuple of ints: a leading batch
    shape), each entry a positive integer; anything else (``2.5``, ``True``, ``0``, ``"4"``) raises a
    ValueError naming the value."""
    entries = tuple(batch_size) if isinstance(batch_size, (tuple, list)) else (batch_size,)
    sizes = []
    for n in entries:
        try:
            size = None if isinstance(n, (bool, np.bool_)) else operator.index(n)
        except TypeError:
            size = None
        if size is None or size < 1:
            why = f"{n!r} is < 1" if size is not None else f"{n!r} is a {type(n).__name__}, not an integer"
            raise ValueError(f"batch_size must be >= 1 and an integer (or a non-empty tuple of them), got "
                             f"{batch_size!r} ({why})")
        sizes.append(size)
    if not sizes:
        raise ValueError(f"batch_size must be >= 1 and an integer (or a non-empty tuple of them), got {batch_size!r}")
    return tuple(sizes)


def draw_params(env: "Env", key: jax.Array, split: str = "train", ranges: Any = None) -> Params:
    """``env.sample_params(key, split, ranges=ranges)``, passing ``ranges`` only when it is not ``None``
    (so envs whose ``sample_params`` takes no ranges keep working)."""
    if ranges is None:
        return env.sample_params(key, split)
    return env.sample_params(key, split, ranges=ranges)


def where_done(done: jax.Array, new: Any, old: Any) -> Any:
    """Select ``new`` where ``done`` (broadcast over trailing dims of every leaf), else ``old``."""

    def sel(n, o):
        d = done.reshape(done.shape + (1,) * (jnp.ndim(o) - done.ndim))
        return jnp.where(d, n, o)

    return jax.tree.map(sel, new, old)


def action_fault(space: Space, action: jax.Array) -> jax.Array:
    """Where (one flag per env: the batch shape) ``action`` cannot be applied: a non-finite element of
    a float :class:`Box` action, or a :class:`Discrete` choice outside ``[0, n)``."""
    action = jnp.asarray(action)
    batch = action.shape[: action.ndim - len(space.shape)]
    if isinstance(space, Discrete):
        return (action < 0) | (action >= space.n)
    if not jnp.issubdtype(action.dtype, jnp.inexact):
        return jnp.zeros(batch, bool)
    return ~jnp.all(jnp.isfinite(action).reshape(batch + (-1,)), -1)


def guard_action(space: Space, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(applied, fault)``: ``action`` with every faulty one (:func:`action_fault`) replaced by a
    neutral valid action (choice 0; the :class:`Box` point nearest zero), and the fault flags.

    This is how invalid actions that only show under ``jit`` (NaN, inf, an out-of-range choice) are
    kept from the simulators: the env steps on the neutral action, and the caller ends the episode
    as ``terminated`` and counts it in ``metrics["unstable"]`` (:class:`sim.wrappers.AutoReset`
    does, for every env mode).
    """
    action = jnp.asarray(action)
    fault = action_fault(space, action)
    if isinstance(space, Discrete):
        return jnp.where(fault, jnp.zeros_like(action), action), fault
    neutral = jnp.clip(jnp.zeros(space.shape, jnp.float32), jnp.asarray(space.low), jnp.asarray(space.high))
    f = fault.reshape(fault.shape + (1,) * len(space.shape))
    return jnp.where(f, neutral.astype(action.dtype), action), fault


class Env(abc.ABC):
    """Base class of every env (see the module docstring for the contract).

    Subclasses set ``id``, ``family``, ``observation_space``, ``action_space`` and ``episode_length``
    and implement the three pure functions. ``param_ranges`` lists the randomized parameters;
    ``default_ranges`` gives the ranges ``sample_params`` draws from when passed ``ranges=None``, as a
    pytree (``None``: the env takes no ranges as data).
    """

    id: str = "env"
    backend: str = "jax"
    mode: str | None = None  # set by the mode wrappers: "trial", "fixed" or "fresh" (sim.wrappers.MODES)
    family: str = ""
    observation_space: Box | Dict
    action_space: Space
    episode_length: int

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dims of states, params and actions (``()`` unbatched)."""
        return ()

    @property
    def unwrapped(self) -> "Env":
        return self

    @abc.abstractmethod
    def sample_params(self, key: jax.Array, split: str = "train", ranges: Any = None) -> Params:
        """Draw one world from ``split`` (``train``, ``interp`` or ``extrap``) of ``ranges`` (a pytree
        shaped like :meth:`default_ranges`; ``None``: the defaults)."""

    @abc.abstractmethod
    def reset(self, key: jax.Array, params: Params) -> State:
        """Start an episode in world ``params``."""

    @abc.abstractmethod
    def step(self, state: State, action: jax.Array) -> State:
        """Advance one step. Must not read ``state.obs``."""

    def default_ranges(self) -> Any:
        """The randomization ranges as data (a pytree of arrays) ``sample_params`` uses by default;
        ``None`` when the env does not take ranges as data."""
        return None

    def param_ranges(self) -> dict[str, SplitRange | str]:
        """Randomized parameters: name -> SplitRange, or a text describing the distribution per split."""
        return {}

    def param_values(self, params: Params) -> dict[str, jax.Array]:
        """The named randomized parameters of a world (same names as ``param_ranges``)."""
        return {}

    def split_description(self) -> dict[str, str]:
        """One line per split saying what is held out (for ``proteus envs`` and docs)."""
        return {}

    def check_action(self, action: jax.Array) -> jax.Array:
        """``action`` as the action space's dtype, after the checks that need no traced values.

        Fails at trace time, naming the expected shape, when ``action`` has the wrong shape, and, for a
        :class:`Discrete` space, naming the space and both dtypes when it is not an integer array (a
        float or bool choice would be silently truncated). A concrete (un-traced) :class:`Discrete`
        action outside ``[0, n)`` raises naming the bad value and the valid range; under ``jit`` the
        range can only be checked on the values, which :func:`guard_action` does.
        """
        action = jnp.asarray(action)
        space = self.action_space
        expected = self.batch_shape + space.shape
        if tuple(action.shape) != expected:
            raise ValueError(
                f"{self.id}: action has shape {tuple(action.shape)}, expected {expected} "
                f"(batch {self.batch_shape} + {space.describe()} action)"
            )
        if isinstance(space, Discrete):
            if not jnp.issubdtype(action.dtype, jnp.integer):
                raise TypeError(
                    f"{self.id}: a {space.describe()} action must be an integer array "
                    f"(expected {jnp.dtype(space.dtype).name}), got dtype {action.dtype.name}"
                )
            if not isinstance(action, jax.core.Tracer):
                values = np.asarray(action)
                bad = values[(values < 0) | (values >= space.n)]
                if bad.size:
                    raise ValueError(
                        f"{self.id}: {space.describe()} action {bad.flat[0]} is out of range; "
                        f"valid choices are 0..{space.n - 1}"
                    )
        return action.astype(space.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"


def new_state(obs, params, env_state, key, info=None, metrics=None) -> State:
    """A fresh episode's State (zero reward, not done)."""
    return State(
        obs=obs,
        reward=jnp.zeros((), jnp.float32),
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
        params=params,
        env_state=env_state,
        key=key,
        metrics={} if metrics is None else metrics,
        info={} if info is None else info,
    )
