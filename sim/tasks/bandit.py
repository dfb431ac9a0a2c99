"""Bernoulli multi-armed bandits, the RL² setup (Duan et al. 2016, section 4.1).

A world is ``k`` arm probabilities ``p_i ~ U[0, 1]``; pulling arm ``i`` pays 1 with probability ``p_i``.
Each episode is a single pull (and is terminal: the bandit has no next state), so a trial of ``n``
pulls is ``n`` one-step episodes in the same world. The observation is a constant bias input: all the
information an agent gets arrives through the trial wrapper's previous action and reward.

Splits (arm probabilities already fill [0, 1], so no interval of them can be held out inside or
outside the training range without changing the task family):

* ``train``: ``p_i ~ U[0, 1]`` as in the paper;
* ``interp``: the same distribution (fresh held-out tasks);
* ``extrap``: low-payout bandits, ``p_i ~ U[0, 0.5]``: every arm pays at most half the time, a
  distribution shift away from training's typical best arm (~k/(k+1)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from randomization.ranges import check_split
from sim.core import Box, Discrete, Env, new_state


@struct.dataclass
class BanditParams:
    arm_probs: jax.Array  # [k] success probability of each arm


class BernoulliBandit(Env):
    family = "bandit"

    def __init__(self, num_arms: int):
        if int(num_arms) < 2:
            raise ValueError(f"num_arms must be >= 2, got {num_arms}")
        self.num_arms = int(num_arms)
        self.id = f"bandit-k{self.num_arms}"
        self.observation_space = Box(names=("bias",), low=(1.0,), high=(1.0,))
        self.action_space = Discrete(names=tuple(f"arm_{i}" for i in range(self.num_arms)))
        self.episode_length = 1

    def sample_params(self, key, split="train"):
        check_split(split)
        high = 0.5 if split == "extrap" else 1.0
        return BanditParams(arm_probs=jax.random.uniform(key, (self.num_arms,), jnp.float32, 0.0, high))

    def reset(self, key, params):
        obs = jnp.ones((1,), jnp.float32)
        return new_state(obs, params, jnp.zeros((), jnp.int32), key)

    def step(self, state, action):
        action = self.check_action(action)
        key, sub = jax.random.split(state.key)
        p = state.params.arm_probs[action]
        reward = (jax.random.uniform(sub) < p).astype(jnp.float32)
        return state.replace(
            obs=jnp.ones((1,), jnp.float32),
            reward=reward,
            terminated=jnp.ones((), bool),
            truncated=jnp.zeros((), bool),
            env_state=state.env_state + 1,
            key=key,
        )

    def param_ranges(self):
        return {"arm_probs": "train/interp: U[0, 1] per arm · extrap: U[0, 0.5] per arm"}

    def param_values(self, params):
        return {"arm_probs": params.arm_probs}

    def split_description(self):
        return {
            "train": "p_i ~ U[0, 1]",
            "interp": "p_i ~ U[0, 1] (held-out draws)",
            "extrap": "p_i ~ U[0, 0.5] (low-payout bandits)",
        }
