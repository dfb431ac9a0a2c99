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


# -- MuJoCo robots ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def robot_batch(task, backend: str, batch: int) -> sim.Env:
    """``VmapEnv(MujocoEnv(task, backend), batch)``, cached so compiled rollouts are shared."""
    from sim.mujoco_env import MujocoEnv
    from sim.wrappers import VmapEnv

    return VmapEnv(MujocoEnv(task, backend), batch)


@functools.lru_cache(maxsize=None)
def robot_rollout(env: sim.Env, steps: int):
    """jit(reset + scan of ``steps`` steps) -> (obs, reward, terminated) stacked over time."""

    @jax.jit
    def run(params, key, actions):
        s = env.reset(key, params)

        def body(s, a):
            s = env.step(s, a)
            return s, (s.obs, s.reward, s.terminated)

        _, out = jax.lax.scan(body, s, actions)
        return out

    return run


def with_values(env, batch_values: list[dict]) -> dict:
    """Nominal params for a batch, with some dynamics values replaced per env (by term name)."""
    nominal = env.nominal_params()
    dyn = {
        k: jnp.stack([jnp.broadcast_to(jnp.asarray(v.get(k, nominal["dynamics"][k]), jnp.float32), nominal["dynamics"][k].shape)
                      for v in batch_values])
        for k in nominal["dynamics"]
    }
    task = {k: jnp.stack([v] * len(batch_values)) for k, v in nominal["task"].items()}
    return {"dynamics": dyn, "task": task}


def smooth_actions(steps: int, batch: int, nu: int, scale: float = 0.6, seed: int = 0) -> jax.Array:
    """Sinusoids with random phases per env and actuator: [steps, batch, nu]."""
    phase = jax.random.uniform(jax.random.key(seed), (1, batch, nu)) * 6
    return scale * jnp.sin(jnp.arange(steps)[:, None, None] * 0.3 + phase)
