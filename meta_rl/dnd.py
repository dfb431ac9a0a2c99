"""A differentiable neural dictionary (DND, Pritzel et al. 2017) as pure JAX functions over a memory pytree.

A :class:`Memory` has a fixed capacity: ``keys [C, D]``, ``values [C, V]``, ``stamps [C]`` (the
clock tick of each entry's last write or lookup; ``-1`` marks an empty slot) and ``clock``, the tick
counter. Every function returns a new memory and works under ``jit``, ``vmap`` (a memory per env:
vmap over a batched ``Memory``) and in a ``lax.scan`` carry; nothing is sized by data.

* :func:`lookup`: exact k nearest neighbours by ``top_k`` on squared distances (empty slots never
  win), weighted by NEC's kernel ``w_i = 1 / (d_i² + δ)`` normalised over the k (weight 0 for the
  neighbours a memory holding fewer than k entries cannot supply). The distances to the k are
  recomputed from the gathered keys, so gradients reach the queries, the neighbours' keys and their
  values; the choice of neighbours is not differentiated (it is piecewise constant).
* :func:`lookup_each`: each query in its own memory of a batch of memories (one top-k per query).
* :func:`touch`: the looked-up entries become the most recently used.
* :func:`write`: each ``(key, value)`` in order. A key within ``tolerance`` (squared distance) of a
  stored key updates that entry's value in place (the stored key stays), by the rule: ``"max"``
  (MFEC: the best return seen), ``"q"`` (NEC: ``v += alpha (new - v)``) or ``"replace"``. Otherwise it takes an empty slot, or
  when the memory is full the least recently used entry (lowest stamp; ties to the lowest index).
  A full memory never errors: it replaces, and keeps exactly ``capacity`` entries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

RULES = ("max", "q", "replace")


@struct.dataclass
class Memory:
    """A DND's contents (a pytree; leading axes, if any, are batches of memories).

    Attributes:
        keys: ``[C, D]`` float32 keys (zeros in empty slots).
        values: ``[C, V]`` float32 values.
        stamps: ``[C]`` int32 tick of each entry's last use (write or :func:`touch`); ``-1``: empty.
        clock: ``[]`` int32 ticks so far (one per written key and per :func:`touch` call).
    """

    keys: jax.Array
    values: jax.Array
    stamps: jax.Array
    clock: jax.Array

    @property
    def capacity(self) -> int:
        return self.keys.shape[-2]

    @property
    def key_dim(self) -> int:
        return self.keys.shape[-1]

    @property
    def value_dim(self) -> int:
        return self.values.shape[-1]


def init(capacity: int, key_dim: int, value_dim: int = 1) -> Memory:
    """An empty memory; sizes are refused by name when not positive integers."""
    for name, v in (("capacity", capacity), ("key_dim", key_dim), ("value_dim", value_dim)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"DND {name} must be a positive integer, got {v!r}")
    return Memory(
        keys=jnp.zeros((capacity, key_dim), jnp.float32),
        values=jnp.zeros((capacity, value_dim), jnp.float32),
        stamps=jnp.full((capacity,), -1, jnp.int32),
        clock=jnp.zeros((), jnp.int32),
    )


def size(mem: Memory) -> jax.Array:
    """Entries held (``<= capacity``)."""
    return jnp.sum(mem.stamps >= 0, axis=-1)


def _check_keys(mem: Memory, keys: jax.Array, what: str) -> None:
    if keys.ndim != 2 or keys.shape[-1] != mem.key_dim:
        raise ValueError(f"DND {what} must be [batch, key_dim={mem.key_dim}], got shape {tuple(keys.shape)}")


def _stored(mem: Memory) -> tuple[jax.Array, jax.Array]:
    """The stored keys (no gradient: they only rank) and their squared norms, ``inf`` in empty slots so
    that an empty slot is never the nearest."""
    keys = jax.lax.stop_gradient(mem.keys)
    return keys, jnp.where(mem.stamps >= 0, jnp.sum(keys * keys, -1), jnp.inf)


@struct.dataclass
class Lookup:
    """What :func:`lookup` found, per query (``[B, k]`` unless noted).

    Attributes:
        value: ``[B, V]`` kernel-weighted mean of the neighbours' values.
        weights: normalised kernel weights (0 for missing neighbours).
        index: the neighbours' slots.
        sq_dist: their squared distances (differentiable).
        valid: whether each neighbour exists (the memory held fewer than k entries otherwise).
    """

    value: jax.Array
    weights: jax.Array
    index: jax.Array
    sq_dist: jax.Array
    valid: jax.Array


def lookup(mem: Memory, queries: jax.Array, k: int, delta: float = 1e-3) -> Lookup:
    """k nearest stored keys of each query ``[B, D]`` (see the module docstring)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"DND lookup k must be a positive integer, got {k!r}")
    if k > mem.capacity:
        raise ValueError(f"DND lookup k={k} exceeds the memory's capacity={mem.capacity}")
    if delta <= 0:
        raise ValueError(f"DND kernel delta must be > 0, got {delta!r}")
    _check_keys(mem, queries, "queries")
    # rank by 2 q.k - |k|² (the squared distance but for |q|², constant per query): one matmul and one
    # subtraction of a [C] vector that is -inf in empty slots, so they never win
    keys, k2 = _stored(mem)
    score, index = jax.lax.top_k(2.0 * jax.lax.stop_gradient(queries) @ keys.T - k2[None, :], k)
    valid = jnp.isfinite(score)
    near = jnp.asarray(mem.keys)[index]  # [B, k, D]: gradients reach these keys
    sq = jnp.sum((queries[:, None, :] - near) ** 2, -1)
    kernel = jnp.where(valid, 1.0 / (sq + delta), 0.0)
    weights = kernel / jnp.maximum(jnp.sum(kernel, -1, keepdims=True), 1e-30)
    value = jnp.einsum("bk,bkv->bv", weights, jnp.asarray(mem.values)[index])
    return Lookup(value=value, weights=weights, index=index, sq_dist=jnp.where(valid, sq, jnp.inf), valid=valid)


def lookup_each(mem: Memory, which: jax.Array, queries: jax.Array, k: int, delta: float = 1e-3) -> Lookup:
    """:func:`lookup` of each query ``[B, D]`` in its own memory ``which [B]`` of a batch of memories
    (``mem`` with a leading ``[M]`` axis): what NEC's loss needs (each transition's own action's DND),
    at one top-k per query instead of one per memory. The same neighbours, weights and gradients as
    :func:`lookup` in that memory; ``index`` is the slot within it."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"DND lookup k must be a positive integer, got {k!r}")
    if mem.keys.ndim != 3:
        raise ValueError(f"DND lookup_each needs a batch of memories [M, C, D], got keys of shape {mem.keys.shape}")
    if k > mem.capacity:
        raise ValueError(f"DND lookup k={k} exceeds the memory's capacity={mem.capacity}")
    if delta <= 0:
        raise ValueError(f"DND kernel delta must be > 0, got {delta!r}")
    if queries.ndim != 2 or queries.shape[-1] != mem.key_dim or which.shape != queries.shape[:1]:
        raise ValueError(f"DND lookup_each needs queries [B, key_dim={mem.key_dim}] and which [B], got "
                         f"{tuple(queries.shape)} and {tuple(which.shape)}")
    keys, k2 = _stored(mem)  # [M, C, D], [M, C]
    score = 2.0 * jnp.einsum("bd,mcd->bmc", jax.lax.stop_gradient(queries), keys)  # one matmul for all memories
    score = jnp.take_along_axis(score, which[:, None, None], 1)[:, 0] - k2[which]  # [B, C]
    score, index = jax.lax.top_k(score, k)
    valid = jnp.isfinite(score)
    near = jnp.asarray(mem.keys)[which[:, None], index]  # [B, k, D]: gradients reach these keys
    sq = jnp.sum((queries[:, None, :] - near) ** 2, -1)
    kernel = jnp.where(valid, 1.0 / (sq + delta), 0.0)
    weights = kernel / jnp.maximum(jnp.sum(kernel, -1, keepdims=True), 1e-30)
    value = jnp.einsum("bk,bkv->bv", weights, jnp.asarray(mem.values)[which[:, None], index])
    return Lookup(value=value, weights=weights, index=index, sq_dist=jnp.where(valid, sq, jnp.inf), valid=valid)


def touch(mem: Memory, index: jax.Array, valid: jax.Array | None = None) -> Memory:
    """Mark the entries at ``index`` (any shape; where ``valid``) as used now (one clock tick)."""
    index = jnp.reshape(index, (-1,))
    ok = jnp.ones(index.shape, bool) if valid is None else jnp.reshape(valid, (-1,))
    used = jnp.zeros(mem.capacity, bool).at[index].max(ok) & (mem.stamps >= 0)
    return mem.replace(stamps=jnp.where(used, mem.clock, mem.stamps), clock=mem.clock + 1)


def write(mem: Memory, keys: jax.Array, values: jax.Array, rule: str = "max", alpha: float = 0.1,
          tolerance: float = 0.0, mask: jax.Array | None = None) -> Memory:
    """Write ``keys [B, D]`` with ``values [B, V]`` (or ``[B]`` for ``V = 1``) in order, where ``mask``
    (default: all); see the module docstring for the rule, ``alpha`` and ``tolerance``."""
    if rule not in RULES:
        raise ValueError(f"DND write rule must be one of {', '.join(RULES)}, got {rule!r}")
    _check_keys(mem, keys, "keys")
    if values.ndim == 1:
        values = values[:, None]
    if values.shape != (keys.shape[0], mem.value_dim):
        raise ValueError(f"DND values must be [batch={keys.shape[0]}, value_dim={mem.value_dim}], "
                         f"got shape {tuple(values.shape)}")
    mask = jnp.ones(keys.shape[0], bool) if mask is None else mask
    keys, values = keys.astype(jnp.float32), values.astype(jnp.float32)
    n, cap = keys.shape[0], mem.capacity
    # Distances to the stored keys by one matmul, to the batch's own keys exactly. Each write then costs
    # O(batch), not O(capacity x key_dim): the nearest stored key of each new key is found up front (a
    # slot this batch rewrote is searched again in full, the rare case), and so are the least recently
    # used slots new keys will take (as long as the batch is no larger than the memory).
    stored, k2 = _stored(mem)  # empty slots: never a duplicate
    d_mem = jnp.sum(keys * keys, -1, keepdims=True) + k2[None, :] - 2.0 * keys @ stored.T  # [n, C]
    best = jnp.argmin(d_mem, axis=1)  # [n]
    d_own = jnp.sum((keys[:, None, :] - keys[None, :, :]) ** 2, -1)  # [n, n]
    planned = n <= cap
    # the n least recently used slots, oldest first (an empty slot's stamp -1 is the lowest); ties to
    # the lower slot, as argmin breaks them
    victims = jax.lax.top_k(-mem.stamps, n)[1] if planned else jnp.zeros((0,), jnp.int32)

    def one(carry, i):
        m, slot_of, rewritten, free = carry  # slot_of[j]: the slot key j of this batch holds (cap: none)
        key, value, on = keys[i], values[i], mask[i]
        own = jnp.where(slot_of < cap, d_own[i], jnp.inf)
        j = jnp.argmin(own)
        pre = best[i]
        nearest = jax.lax.cond(
            rewritten[pre],
            lambda: jnp.argmin(d_mem[i].at[slot_of].set(d_own[i], mode="drop")),
            lambda: jnp.where(own[j] < d_mem[i, pre], slot_of[j], pre),
        )
        # the duplicate decision on the exact distance (the matmul's rounding only picks the candidate)
        dup = (m.stamps[nearest] >= 0) & (jnp.sum((m.keys[nearest] - key) ** 2) <= tolerance)
        if planned:  # the oldest slot not used yet in this batch: the argmin of the stamps
            p = jnp.argmax(free)
            lru = victims[p]
        else:
            lru = jnp.argmin(m.stamps)  # an empty slot (stamp -1) first, else the least recently used
        slot = jnp.where(dup, nearest, lru)
        old = m.values[slot]
        if rule == "max":
            merged = jnp.maximum(old, value)
        elif rule == "q":
            merged = old + alpha * (value - old)
        else:
            merged = value
        fresh = on & ~dup  # a new key takes the slot; a duplicate keeps the stored key
        m = m.replace(
            keys=m.keys.at[slot].set(jnp.where(fresh, key, m.keys[slot])),
            values=m.values.at[slot].set(jnp.where(on, jnp.where(dup, merged, value), old)),
            stamps=m.stamps.at[slot].set(jnp.where(on, m.clock, m.stamps[slot])),
            clock=m.clock + on.astype(jnp.int32),
        )
        slot_of = jnp.where(fresh & (slot_of == slot), cap, slot_of).at[i].set(jnp.where(fresh, slot, cap))
        rewritten = rewritten.at[slot].set(rewritten[slot] | fresh)
        if planned:
            free = free & ~(on & (victims == slot))
        return (m, slot_of, rewritten, free), None

    carry = (mem, jnp.full((n,), cap, jnp.int32), jnp.zeros((cap,), bool), jnp.ones((victims.shape[0],), bool))
    return jax.lax.scan(one, carry, jnp.arange(n))[0][0]


def write_one(mem: Memory, key: jax.Array, value: jax.Array, mask: jax.Array | bool = True,
              tolerance: float = 0.0) -> Memory:
    """Write one ``key [D]`` with ``value [V]`` by the ``replace`` rule, where ``mask``: :func:`write`
    of a single key, with no loop and no scatter (one-hot selects), so it runs inside a recurrent
    step and exports to ONNX as elementwise ops (``vmap`` it over a batch of memories)."""
    stored, k2 = _stored(mem)
    d = jnp.where(mem.stamps >= 0, jnp.sum((stored - key) ** 2, -1), jnp.inf)
    nearest = jnp.argmin(d)
    dup = jnp.min(d) <= tolerance  # (not d[nearest]: no gather, for the ONNX export)
    slot = jnp.where(dup, nearest, jnp.argmin(mem.stamps))  # an empty slot (-1) first, else the LRU
    on = jnp.asarray(mask, bool)
    pick = (jnp.arange(mem.capacity) == slot) & on
    return mem.replace(
        keys=jnp.where(pick[:, None], key.astype(mem.keys.dtype), mem.keys),
        values=jnp.where(pick[:, None], value.astype(mem.values.dtype), mem.values),
        stamps=jnp.where(pick, mem.clock, mem.stamps),
        clock=mem.clock + on.astype(jnp.int32),
    )


def read_nearest(mem: Memory, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The value of the stored key nearest to ``key [D]`` (:func:`lookup` with k = 1) and its squared
    distance (``inf`` and a zero value when the memory is empty), by a one-hot contraction instead
    of a gather (exports to ONNX as elementwise ops; gradients reach the value)."""
    stored, _ = _stored(mem)
    d = jnp.where(mem.stamps >= 0, jnp.sum((stored - key) ** 2, -1), jnp.inf)
    best, nearest = jnp.argmin(d), jnp.min(d)
    pick = ((jnp.arange(mem.capacity) == best) & (nearest < jnp.inf)).astype(mem.values.dtype)
    return pick @ mem.values, nearest
