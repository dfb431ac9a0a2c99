"""The Env contract every backend implements.

An env is a set of pure functions over pytrees (Brax/gymnax style):

* ``sample_params(key, split) -> params``: one world (task parameters, randomized physics, sensor and
  actuator parameters) drawn from the ``train``, ``interp`` or ``extrap`` split;
* ``reset(key, params) -> State``: start an episode in that world;
* ``step(state, action) -> State``: advance one control step. ``step`` never reads ``state.obs``
  (observations are outputs only), so wrappers may rewrite them freely.

``State`` keeps ``terminated`` (the MDP ended: do not bootstrap) apart from ``truncated`` (a time limit
cut the episode: bootstrap from the final observation, which auto-resetting wrappers keep in
``info["final_obs"]``). Observation and action spaces carry a name for every element.

A batch of worlds is a ``vmap`` over params (:class:`sim.wrappers.VmapEnv`); resampling a world is a
``jnp.where`` on params, never a recompile.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from randomization.ranges import SPLITS, SplitRange, check_split

__all__ = [
    "SPLITS",
    "Box",
    "Discrete",
    "Env",
    "State",
    "check_split",
    "key_batch_shape",
    "split_key",
    "where_done",
]

Params = Any


@struct.dataclass
class State:
    """One env step's output (leading batch dims when batched).

    Attributes:
        obs: observation, ``observation_space.shape`` (float32).
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
    """A 1-D continuous space with one name per element."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self):
        n = len(self.names)
        if len(set(self.names)) != n:
            raise ValueError(f"Box names must be unique, got {self.names}")
        low = tuple(float(v) for v in (self.low if isinstance(self.low, tuple) else (self.low,) * n))
        high = tuple(float(v) for v in (self.high if isinstance(self.high, tuple) else (self.high,) * n))
        if len(low) != n or len(high) != n:
            raise ValueError(f"Box bounds need {n} entries, got low={low}, high={high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.names),)

    @property
    def dtype(self):
        return jnp.float32

    def index(self, name: str) -> int:
        """Position of a named element (raises naming the valid names)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no element {name!r}; names are {list(self.names)}") from None

    def sample(self, key: jax.Array, batch_shape: tuple[int, ...] = ()) -> jax.Array:
        lo = jnp.asarray(self.low, jnp.float32)
        hi = jnp.asarray(self.high, jnp.float32)
        lo = jnp.where(jnp.isfinite(lo), lo, -1.0)
        hi = jnp.where(jnp.isfinite(hi), hi, 1.0)
        return jax.random.uniform(key, batch_shape + self.shape, jnp.float32, lo, hi)

    def describe(self) -> str:
        return f"Box({len(self.names)})"


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


Space = Box | Discrete


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


def where_done(done: jax.Array, new: Any, old: Any) -> Any:
    """Select ``new`` where ``done`` (broadcast over trailing dims of every leaf), else ``old``."""

    def sel(n, o):
        d = done.reshape(done.shape + (1,) * (jnp.ndim(o) - done.ndim))
        return jnp.where(d, n, o)

    return jax.tree.map(sel, new, old)


class Env(abc.ABC):
    """Base class of every env (see the module docstring for the contract).

    Subclasses set ``id``, ``family``, ``observation_space``, ``action_space`` and ``episode_length``
    and implement the three pure functions. ``param_ranges`` lists the randomized parameters.
    """

    id: str = "env"
    backend: str = "jax"
    family: str = ""
    observation_space: Box
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
    def sample_params(self, key: jax.Array, split: str = "train") -> Params:
        """Draw one world from ``split`` (``train``, ``interp`` or ``extrap``)."""

    @abc.abstractmethod
    def reset(self, key: jax.Array, params: Params) -> State:
        """Start an episode in world ``params``."""

    @abc.abstractmethod
    def step(self, state: State, action: jax.Array) -> State:
        """Advance one step. Must not read ``state.obs``."""

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
        """Fail at trace time, naming the expected shape, when ``action`` has the wrong shape."""
        action = jnp.asarray(action)
        expected = self.batch_shape + self.action_space.shape
        if tuple(action.shape) != expected:
            raise ValueError(
                f"{self.id}: action has shape {tuple(action.shape)}, expected {expected} "
                f"(batch {self.batch_shape} + {self.action_space.describe()} action)"
            )
        return action.astype(self.action_space.dtype)

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
