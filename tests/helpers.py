"""Shared test helpers: one compiled rollout per env, reused across tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import sim


def fixed_actions(env: sim.Env, key: jax.Array, steps: int) -> jax.Array:
    """A reproducible action sequence [steps, *batch, *action_shape]."""
    keys = jax.random.split(key, steps)
    return jax.vmap(lambda k: env.action_space.sample(k, env.batch_shape))(keys)


@functools.lru_cache(maxsize=None)
def compiled_rollout(env: sim.Env, steps: int):
    """jit(reset + ``steps`` steps) -> (first State, stacked States)."""

    @jax.jit
    def run(key, params, actions):
        s0 = env.reset(key, params)

        def body(s, a):
            s = env.step(s, a)
            return s, s

        _, traj = jax.lax.scan(body, s0, actions)
        return s0, traj

    return run


@functools.lru_cache(maxsize=None)
def made(env_id: str, batch_size: int | None = None, split: str = "train", trial: bool = True,
         backend: str = "auto") -> sim.Env:
    """``sim.make`` cached so compiled functions keyed on the env object are shared across tests."""
    return sim.make(env_id, batch_size=batch_size, split=split, trial=trial, backend=backend)


def tree_allclose(a, b, **kw) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.allclose(x, y, **kw)), a, b)))
