"""A uniform experience-replay buffer as a pure pytree: what DQN and NEC share (:mod:`meta_rl.dqn`,
:mod:`meta_rl.nec`).

A :class:`Replay` holds a pytree of items (each leaf ``[capacity, ...]``), a write head and a fill
count. :func:`add` writes a batch at the head, wrapping around (the oldest items are overwritten);
:func:`sample` draws uniformly, with replacement, among the items held. Everything works under
``jit`` and in a ``lax.scan`` carry, and is saved with the run's checkpoints like any other state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Replay:
    """A replay buffer's contents.

    Attributes:
        items: pytree of ``[capacity, ...]`` arrays (zeros where nothing was written yet).
        size: ``[]`` int32 items held (``<= capacity``).
        head: ``[]`` int32 slot the next item goes to.
    """

    items: Any
    size: jax.Array
    head: jax.Array

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.items)[0].shape[0]


def init(example: Any, capacity: int) -> Replay:
    """An empty buffer for items shaped like ``example`` (a pytree of one item's arrays)."""
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ValueError(f"replay capacity must be a positive integer, got {capacity!r}")
    items = jax.tree.map(lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example)
    return Replay(items, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buf: Replay, batch: Any) -> Replay:
    """Write a batch of items (leaves ``[n, ...]``, ``n <= capacity``) at the head, in order."""
    n = jax.tree.leaves(batch)[0].shape[0]
    cap = buf.capacity
    if n > cap:
        raise ValueError(f"replay batch of {n} items exceeds the buffer's capacity {cap}")
    slots = (buf.head + jnp.arange(n)) % cap
    items = jax.tree.map(lambda store, x: store.at[slots].set(x.astype(store.dtype)), buf.items, batch)
    return Replay(items, jnp.minimum(buf.size + n, cap), (buf.head + n) % cap)


def sample(buf: Replay, key: jax.Array, batch_size: int) -> Any:
    """``batch_size`` items drawn uniformly with replacement among those held (an empty buffer gives
    its zero slot 0)."""
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
    return jax.tree.map(lambda x: x[index], buf.items)
