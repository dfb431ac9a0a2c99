"""Random tabular MDPs, the RL² setup (Duan et al. 2016, section 4.1).

A world is an MDP with ``S = 10`` states and ``A = 5`` actions: each transition row ``P[s, a]`` is drawn
from a flat Dirichlet, and each mean reward ``R[s, a] ~ N(1, 1)``. An episode lasts 10 steps and
starts in state 0; a trial is ``n`` episodes in one MDP.

Choices the paper leaves open, made here:

* the reward is paid for taking action ``a`` in state ``s``: ``r ~ N(R[s, a], 1)`` (unit variance),
  drawn before the transition;
* the observation is the one-hot current state (no time index);
* the 10-step limit is a time limit, so the episode's end is ``truncated``, not ``terminated``;
* splits: ``train`` and ``interp`` use the paper's distribution (``interp`` = fresh held-out MDPs);
  ``extrap`` draws near-deterministic transitions (Dirichlet concentration 0.1 instead of 1) and
  reward means ``N(1, 2^2)``, both outside what training shows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from randomization.ranges import check_split
from randomization.sampling import dirichlet
from sim.core import Box, Discrete, Env, new_state


@struct.dataclass
class MDPParams:
    transition: jax.Array  # [S, A, S] next-state probabilities
    reward_mean: jax.Array  # [S, A] mean reward


class TabularMDP(Env):
    family = "tabular-mdp"

    def __init__(self, num_states: int = 10, num_actions: int = 5, episode_length: int = 10):
        for name, v in (("num_states", num_states), ("num_actions", num_actions), ("episode_length", episode_length)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.num_states, self.num_actions = int(num_states), int(num_actions)
        self.episode_length = int(episode_length)
        self.id = f"mdp-s{self.num_states}-a{self.num_actions}"
        self.observation_space = Box(
            names=tuple(f"state={i}" for i in range(self.num_states)), low=0.0, high=1.0
        )
        self.action_space = Discrete(names=tuple(f"action_{i}" for i in range(self.num_actions)))

    def sample_params(self, key, split="train"):
        check_split(split)
        k_p, k_r = jax.random.split(key)
        S, A = self.num_states, self.num_actions
        alpha, reward_std = (0.1, 2.0) if split == "extrap" else (1.0, 1.0)
        if alpha == 1.0:  # flat Dirichlet: normalized exponentials, one uniform per entry
            # -log(1 - u) equals jax.random.exponential's -log1p(-u) on float32 uniforms (1 - u is
            # exact on their grid) and costs half as much on CPU
            g = -jnp.log(1.0 - jax.random.uniform(k_p, (S, A, S), jnp.float32))
            transition = g / g.sum(-1, keepdims=True)
        else:
            transition = dirichlet(k_p, jnp.full((S, A, S), alpha, jnp.float32))
        reward_mean = 1.0 + reward_std * jax.random.normal(k_r, (S, A), jnp.float32)
        return MDPParams(transition=transition, reward_mean=reward_mean)

    def _obs(self, s):
        return jax.nn.one_hot(s, self.num_states, dtype=jnp.float32)

    def reset(self, key, params):
        env_state = {"s": jnp.zeros((), jnp.int32), "t": jnp.zeros((), jnp.int32)}
        return new_state(self._obs(env_state["s"]), params, env_state, key)

    def step(self, state, action):
        action = self.check_action(action)
        key, sub = jax.random.split(state.key)
        # one draw of two uniforms on (-1, 1) per step: the reward noise by inverse erf (as
        # jax.random.normal does) and the next state by inverse CDF
        u = jax.random.uniform(sub, (2,), jnp.float32, jnp.nextafter(-1.0, 0.0), 1.0)
        s, t = state.env_state["s"], state.env_state["t"] + 1
        p = state.params
        reward = p.reward_mean[s, action] + jnp.sqrt(2.0) * jax.lax.erf_inv(u[0])
        cdf = jnp.cumsum(p.transition[s, action])
        s_next = jnp.minimum(jnp.sum(0.5 * (u[1] + 1.0) * cdf[-1] >= cdf), self.num_states - 1).astype(jnp.int32)
        return state.replace(
            obs=self._obs(s_next),
            reward=reward,
            terminated=jnp.zeros((), bool),
            truncated=t >= self.episode_length,
            env_state={"s": s_next, "t": t},
            key=key,
        )

    def param_ranges(self):
        return {
            "transition": "train/interp: rows ~ Dirichlet(1) · extrap: rows ~ Dirichlet(0.1)",
            "reward_mean": "train/interp: N(1, 1) · extrap: N(1, 2²)",
        }

    def param_values(self, params):
        return {"transition": params.transition, "reward_mean": params.reward_mean}

    def split_description(self):
        return {
            "train": "P[s,a] ~ Dir(1), R ~ N(1,1)",
            "interp": "same distribution, held-out draws",
            "extrap": "P[s,a] ~ Dir(0.1), R ~ N(1,2²)",
        }
