"""Small pure losses shared by every learner: GAE and the clipped PPO objective.

Shapes are in the docstrings; all functions are jit-safe and have golden-value tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation over a [T, ...] rollout (Schulman et al. 2016).

    Args:
        rewards: [T, ...] reward of step t.
        values: [T, ...] V(s_t).
        next_values: [T, ...] V of the state after step t *in the same episode*: V(s_{t+1}) while
            the episode goes on, V(final observation) where it was truncated (the time limit is not
            part of the MDP, so it bootstraps); ignored where it terminated.
        terminated: [T, ...] the episode ended for real after step t (no bootstrap).
        done: [T, ...] the episode ended after step t (terminated or truncated): advantages do not
            flow back across it.

    Returns:
        (advantages [T, ...], returns = advantages + values [T, ...]).
    """
    term = terminated.astype(jnp.float32)
    cont = 1.0 - done.astype(jnp.float32)
    deltas = rewards + gamma * (1.0 - term) * next_values - values

    def back(a_next, x):
        delta, c = x
        a = delta + gamma * lam * c * a_next
        return a, a

    _, adv = jax.lax.scan(back, jnp.zeros_like(deltas[0]), (deltas, cont), reverse=True)
    return adv, adv + values


def ppo_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    value: jax.Array,
    old_value: jax.Array,
    returns: jax.Array,
    entropy: jax.Array,
    *,
    clip_eps: float,
    vf_coef: float,
    ent_coef: float,
    clip_value: bool = True,
) -> tuple[jax.Array, dict]:
    """The clipped PPO objective (Schulman et al. 2017), averaged over all elements.

    ``loss = -min(r A, clip(r, 1±eps) A) + vf_coef * 0.5 * (V - R)^2 - ent_coef * H`` with
    ``r = exp(log_prob - old_log_prob)``; with ``clip_value`` the value error is the larger of the
    plain and the clipped one (``old_value ± eps``), as in the reference implementations.

    Returns:
        (scalar loss, dict of its parts and diagnostics).
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    pg = -jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantages).mean()
    v_err = (value - returns) ** 2
    if clip_value:
        v_clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
        v_err = jnp.maximum(v_err, (v_clipped - returns) ** 2)
    v_loss = 0.5 * v_err.mean()
    ent = entropy.mean()
    loss = pg + vf_coef * v_loss - ent_coef * ent
    parts = {
        "loss": loss,
        "policy_loss": pg,
        "value_loss": v_loss,
        "entropy": ent,
        "approx_kl": ((ratio - 1) - log_ratio).mean(),
        "clip_frac": (jnp.abs(ratio - 1) > clip_eps).astype(jnp.float32).mean(),
    }
    return loss, parts
