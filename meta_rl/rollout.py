"""The one rollout collector every learner uses: a policy over a batched env, [T, B] transitions.

Recurrent carries reset only where the env says ``done`` (on a :class:`sim.Trial` env that is the
trial's end, so the hidden state spans the trial's K episodes). Truncated episodes record the value
of their final observation (kept by the env in ``info["final_obs"]``) so GAE can bootstrap them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from meta_rl.networks import Policy, reset_carry
from sim.core import Env, State


@struct.dataclass
class Runner:
    """Where a rollout left off.

    Attributes:
        env_state: the batched env's State.
        carry: the policy carry to use at the next step (before the reset by ``first``).
        first: [B] the next step starts a new episode (trial) and resets the carry.
        ep_return: [B] reward so far in the current episode (trial).
        ep_length: [B] steps so far in the current episode (trial).
    """

    env_state: State
    carry: Any
    first: jax.Array
    ep_return: jax.Array
    ep_length: jax.Array


@struct.dataclass
class Transition:
    """One step of a batch; stacked by :func:`collect` into [T, B, ...].

    Attributes:
        obs: observation the action was chosen from.
        first: the carry was reset before this step.
        action: the sample ``u`` of the policy distribution (before env scaling).
        log_prob, value: of the behaviour policy.
        reward, terminated, truncated, done: what the env returned.
        bootstrap_value: V(final observation) where truncated, else 0.
        finished_return, finished_length: the episode's return and length where done, else 0.
        env_metrics: the env's per-step ``metrics`` (e.g. ``unstable``).
    """

    obs: jax.Array
    first: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    done: jax.Array
    bootstrap_value: jax.Array
    finished_return: jax.Array
    finished_length: jax.Array
    env_metrics: Any


def start(env: Env, policy: Policy, key: jax.Array, split: str = "train") -> Runner:
    """Sample worlds, reset the batched env and start fresh carries."""
    (batch,) = env.batch_shape
    k_params, k_reset = jax.random.split(key)
    state = env.reset(k_reset, env.sample_params(k_params, split))
    zeros = jnp.zeros((batch,), jnp.float32)
    return Runner(state, policy.init_carry(batch), jnp.ones((batch,), bool), zeros, zeros.astype(jnp.int32))


def collect(
    env: Env, policy: Policy, params: Any, runner: Runner, key: jax.Array, num_steps: int
) -> tuple[Runner, Transition, jax.Array]:
    """Run ``num_steps`` batched steps, sampling actions.

    Returns:
        (runner after the last step, transitions [T, B], V of the next observation [B]).
    """
    (batch,) = runner.first.shape
    fresh = policy.init_carry(batch)

    def step(r: Runner, k):
        carry = reset_carry(r.carry, r.first, fresh)
        carry, dist, value = policy.apply(params, carry, r.env_state.obs)
        u = dist.sample(seed=k)
        log_prob = dist.log_prob(u)
        s = env.step(r.env_state, policy.env_action(u))
        done = s.done

        def final_value():
            _, _, v = policy.apply(params, carry, s.info["final_obs"])
            return jnp.where(s.truncated, v, 0.0)

        boot = jax.lax.cond(jnp.any(s.truncated), final_value, lambda: jnp.zeros_like(value))
        ep_return = r.ep_return + s.reward
        ep_length = r.ep_length + 1
        t = Transition(
            obs=r.env_state.obs,
            first=r.first,
            action=u,
            log_prob=log_prob,
            value=value,
            reward=s.reward,
            terminated=s.terminated,
            truncated=s.truncated,
            done=done,
            bootstrap_value=boot,
            finished_return=jnp.where(done, ep_return, 0.0),
            finished_length=jnp.where(done, ep_length, 0),
            env_metrics=s.metrics,
        )
        nxt = Runner(s, carry, done, jnp.where(done, 0.0, ep_return), jnp.where(done, 0, ep_length))
        return nxt, t

    runner, traj = jax.lax.scan(step, runner, jax.random.split(key, num_steps))
    carry = reset_carry(runner.carry, runner.first, fresh)
    _, _, last_value = policy.apply(params, carry, runner.env_state.obs)
    return runner, traj, last_value


def next_values(traj: Transition, last_value: jax.Array) -> jax.Array:
    """V of the state after each step within its episode (for :func:`meta_rl.losses.gae`)."""
    following = jnp.concatenate([traj.value[1:], last_value[None]], 0)
    return jnp.where(traj.truncated, traj.bootstrap_value, following)


def evaluate_sequence(policy: Policy, params: Any, carry0: Any, obs: jax.Array, first: jax.Array, action: jax.Array):
    """Re-run the policy over a stored [T, B] sequence (resetting the carry where ``first``).

    Returns:
        (log_prob [T, B], entropy [T, B], value [T, B]) of ``action`` under ``params``.
    """
    batch = first.shape[1]
    fresh = policy.init_carry(batch)
    if policy.split_torso:  # the CNN over the whole sequence at once, then the core step by step
        feats = policy.features(params, obs)

        def g(carry, x):
            f_t, fi, a = x
            carry = reset_carry(carry, fi, fresh)
            carry, dist, v = policy.apply_features(params, carry, f_t)
            return carry, (dist.log_prob(a), dist.entropy(), v)

        return jax.lax.scan(g, carry0, (feats, first, action))[1]

    def f(carry, x):
        o, fi, a = x
        carry = reset_carry(carry, fi, fresh)
        carry, dist, v = policy.apply(params, carry, o)
        return carry, (dist.log_prob(a), dist.entropy(), v)

    _, out = jax.lax.scan(f, carry0, (obs, first, action))
    return out
