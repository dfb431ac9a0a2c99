"""Bridges to Brax's env types, both ways.

* :class:`FromBrax`: any ``brax.envs`` environment as a Proteus env (pure ``reset``/``step``; Brax envs
  carry no world parameters, so ``sample_params`` returns an empty world and nothing is randomized).
  Brax's ``done`` is termination; Proteus adds the time limit as ``truncated``.
* :class:`ToBrax`: a Proteus env as a ``brax.envs.Env``, so Brax's own trainers (``brax.training``
  PPO, SAC...) can train on it: every ``reset`` draws a fresh world from ``split``. The Proteus state
  rides in Brax's ``pipeline_state`` slot, which Brax's training wrappers carry and reset as an
  opaque pytree; ``done`` is Proteus's ``terminated`` (Brax's episode wrapper adds the time limit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env as BraxEnvBase
from brax.envs.base import State as BraxState

from randomization.ranges import check_split
from sim.core import Box, Env, new_state


class FromBrax(Env):
    """A ``brax.envs`` environment behind the Proteus Env contract."""

    family = "brax"

    def __init__(self, brax_env: BraxEnvBase, episode_length: int = 1000, env_id: str | None = None):
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.brax_env = brax_env
        self.id = env_id or type(brax_env.unwrapped).__name__
        self.backend = f"brax-{getattr(brax_env.unwrapped, '_backend', 'custom')}"
        self.episode_length = int(episode_length)
        obs_size = brax_env.observation_size
        if not isinstance(obs_size, int):
            raise ValueError(f"{self.id}: only flat observations are supported, got {obs_size}")
        self.observation_space = Box(names=tuple(f"obs_{i}" for i in range(obs_size)), low=-float("inf"), high=float("inf"))
        self.action_space = Box(names=tuple(f"action_{i}" for i in range(brax_env.action_size)), low=-1.0, high=1.0)

    def sample_params(self, key, split="train"):
        check_split(split)
        return {}

    def reset(self, key, params):
        bs = self.brax_env.reset(key)
        return new_state(bs.obs.astype(jnp.float32), params, {"brax": bs, "t": jnp.zeros((), jnp.int32)}, key)

    def step(self, state, action):
        action = self.check_action(action)
        bs = self.brax_env.step(state.env_state["brax"], action)
        t = state.env_state["t"] + 1
        terminated = bs.done > 0.5
        return state.replace(
            obs=bs.obs.astype(jnp.float32),
            reward=bs.reward.astype(jnp.float32),
            terminated=terminated,
            truncated=(t >= self.episode_length) & ~terminated,
            env_state={"brax": bs, "t": t},
        )


class ToBrax(BraxEnvBase):
    """A Proteus env as a ``brax.envs.Env`` (see the module docstring)."""

    def __init__(self, env: Env, split: str = "train"):
        if env.batch_shape != ():
            raise ValueError(f"ToBrax takes an unbatched env (Brax vmaps it), got batch {env.batch_shape}")
        self.env = env
        self.split = check_split(split)

    def reset(self, rng: jax.Array) -> BraxState:
        k_params, k_reset = jax.random.split(rng)
        s = self.env.reset(k_reset, self.env.sample_params(k_params, self.split))
        return BraxState(pipeline_state=s, obs=s.obs, reward=s.reward, done=jnp.zeros(()), metrics={}, info={})

    def step(self, state: BraxState, action: jax.Array) -> BraxState:
        s = self.env.step(state.pipeline_state, action)
        return state.replace(pipeline_state=s, obs=s.obs, reward=s.reward, done=s.terminated.astype(jnp.float32))

    @property
    def observation_size(self) -> int:
        return self.env.observation_space.shape[0]

    @property
    def action_size(self) -> int:
        return self.env.action_space.shape[0]

    @property
    def backend(self) -> str:
        return self.env.unwrapped.backend


def brax_training_compat() -> None:
    """Let ``brax.training`` run on current JAX.

    Brax 0.14's trainers call ``jax.device_put_replicated``, which JAX 0.10 removed. When it is
    missing, install the drop-in replacement the JAX migration guide gives (stack one copy per
    device, put the stack on the devices); with JAX versions that still have it, do nothing.
    """
    if "device_put_replicated" in jax.__dict__:
        return
    import numpy as np

    def device_put_replicated(x, devices):
        stacked = jax.tree.map(lambda a: np.stack([np.asarray(a)] * len(devices)), x)
        mesh = jax.sharding.Mesh(np.asarray(devices), ("devices",))
        return jax.device_put(stacked, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices")))

    jax.device_put_replicated = device_put_replicated
