"""Classic strategies for random tabular MDPs, vectorized over a batch of tasks.

* ``random``: uniform actions.
* ``psrl``: posterior sampling for RL (Osband et al. 2013) with the TabulaRL defaults: a flat
  Dirichlet(1) prior on every transition row, a Normal prior on each mean reward (mean 0, precision 1)
  with known unit-variance reward noise. At the start of every episode it samples one MDP from the
  posterior, solves it by finite-horizon value iteration and follows that plan for the episode.
* ``oracle``: knows the MDP (the world given to ``init``) and follows its finite-horizon optimal plan.

Like the bandit strategies they are :class:`meta_rl.agent.Agent` s run through the learners' trial
env. They read the current state from the observation and count each transition in ``observe``,
whose ``next_obs`` is the true next state even where the episode ended (the observation then shows
the reset state).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from randomization.sampling import dirichlet_ge1
from meta_rl.agent import Agent, Step, batch_size_of

KINDS = ("random", "psrl", "oracle")


def finite_horizon_q(transition: jax.Array, reward: jax.Array, horizon: int) -> jax.Array:
    """Optimal Q-values ``Q[h, s, a]`` of an undiscounted ``horizon``-step problem.

    Args:
        transition: [..., S, A, S] next-state probabilities.
        reward: [..., S, A] mean rewards.
    Returns:
        [..., horizon, S, A]; ``Q[..., h]`` is the value with ``horizon - h`` steps to go.
    """

    def back(v_next, _):
        q = reward + jnp.einsum("...sat,...t->...sa", transition, v_next)
        return q.max(-1), q

    v0 = jnp.zeros(reward.shape[:-1], reward.dtype)
    _, qs = jax.lax.scan(back, v0, None, length=horizon)  # qs[i]: i + 1 steps to go
    qs = qs[::-1]  # qs[h]: horizon - h steps to go
    return jnp.moveaxis(qs, 0, -3)


@struct.dataclass
class MDPCarry:
    trans_counts: jax.Array  # [B, S, A, S]
    reward_sum: jax.Array  # [B, S, A]
    visits: jax.Array  # [B, S, A]
    q: jax.Array  # [B, H, S, A] plan for the current episode
    h: jax.Array  # [B] step within the episode


@struct.dataclass
class MDPStrategy(Agent):
    """A classic tabular-MDP strategy.

    Attributes:
        kind: one of ``KINDS``.
        num_states, num_actions, horizon: the MDP's sizes and episode length.
        prior_mean, prior_precision: Normal prior on mean rewards (``psrl``).
        noise_precision: known reward-noise precision (``psrl``).
        dirichlet_prior: pseudo-count on every next state (``psrl``).
    """

    kind: str = struct.field(pytree_node=False)
    num_states: int = struct.field(pytree_node=False, default=10)
    num_actions: int = struct.field(pytree_node=False, default=5)
    horizon: int = struct.field(pytree_node=False, default=10)
    prior_mean: float = struct.field(pytree_node=False, default=0.0)
    prior_precision: float = struct.field(pytree_node=False, default=1.0)
    noise_precision: float = struct.field(pytree_node=False, default=1.0)
    dirichlet_prior: float = struct.field(pytree_node=False, default=1.0)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown MDP strategy {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.dirichlet_prior < 1.0:
            raise ValueError(f"dirichlet_prior must be >= 1 (exact sampler), got {self.dirichlet_prior}")
        if self.prior_precision <= 0 or self.noise_precision <= 0:
            raise ValueError(f"precisions must be > 0, got prior {self.prior_precision}, noise {self.noise_precision}")

    def label(self) -> str:
        return self.kind

    def initial_state(self, batch: int) -> MDPCarry:
        B, S, A, H = batch, self.num_states, self.num_actions, self.horizon
        zi = jnp.zeros((B,), jnp.int32)
        return MDPCarry(
            trans_counts=jnp.zeros((B, S, A, S), jnp.float32),
            reward_sum=jnp.zeros((B, S, A), jnp.float32),
            visits=jnp.zeros((B, S, A), jnp.float32),
            q=jnp.zeros((B, H, S, A), jnp.float32),
            h=zi,
        )

    def init(self, key: jax.Array, world) -> MDPCarry:
        """Start a trial; the ``oracle`` reads the true MDP from ``world`` and plans once."""
        carry = self.initial_state(batch_size_of(world))
        if self.kind == "oracle":
            carry = carry.replace(q=finite_horizon_q(world.transition, world.reward_mean, self.horizon))
        return carry

    def _plan(self, carry: MDPCarry, key: jax.Array) -> jax.Array:
        if self.kind == "oracle":
            return carry.q
        k_p, k_r = jax.random.split(key)
        transition = dirichlet_ge1(k_p, self.dirichlet_prior + carry.trans_counts)
        precision = self.prior_precision + self.noise_precision * carry.visits
        mean = (self.prior_precision * self.prior_mean + self.noise_precision * carry.reward_sum) / precision
        reward = mean + jax.random.normal(k_r, mean.shape) / jnp.sqrt(precision)
        return finite_horizon_q(transition, reward, self.horizon)

    def act(self, carry: MDPCarry, obs: jax.Array, key: jax.Array):
        S, A = self.num_states, self.num_actions
        s_now = jnp.argmax(obs[:, :S], -1).astype(jnp.int32)  # obs = [state one-hot (S), RL² inputs]
        k_plan, k_act, k_tie = jax.random.split(key, 3)
        if self.kind == "random":
            action = jax.random.randint(k_act, s_now.shape, 0, A)
        else:
            new_episode = carry.h == 0
            q = jax.lax.cond(
                jnp.any(new_episode),
                lambda: jnp.where(new_episode[:, None, None, None], self._plan(carry, k_plan), carry.q),
                lambda: carry.q,
            )
            carry = carry.replace(q=q)
            h = jnp.minimum(carry.h, self.horizon - 1)
            q_now = q[jnp.arange(q.shape[0]), h, s_now]  # [B, A]
            noise = jax.random.uniform(k_tie, q_now.shape)
            best = q_now.max(-1, keepdims=True)
            action = jnp.argmax(jnp.where(q_now >= best, noise + 1.0, noise - 1.0), -1)
        return action.astype(jnp.int32), carry

    def observe(self, carry: MDPCarry, step: Step) -> MDPCarry:
        """Count the transition (the true next state even where the episode ended) and advance the
        step within the episode (back to 0 after its last step)."""
        S, A = self.num_states, self.num_actions
        s = jnp.argmax(step.obs[:, :S], -1)
        s_next = jnp.argmax(step.next_obs[:, :S], -1)
        sa = jax.nn.one_hot(s, S)[:, :, None] * jax.nn.one_hot(step.action, A)[:, None, :]  # [B, S, A]
        return carry.replace(
            trans_counts=carry.trans_counts + sa[..., None] * jax.nn.one_hot(s_next, S)[:, None, None, :],
            reward_sum=carry.reward_sum + sa * step.reward[:, None, None],
            visits=carry.visits + sa,
            h=jnp.where(step.done, 0, carry.h + 1),
        )

    def policy_step(self, carry: MDPCarry, obs: jax.Array):
        return self.act(carry, obs, jax.random.key(0))

