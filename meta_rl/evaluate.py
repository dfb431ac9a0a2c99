"""Run policies through whole trials of a batched trial env, on shared evaluation tasks.

Every baseline and every learner is scored by :func:`run_trials` on the tasks from
:func:`eval_tasks`, so their numbers are comparable task by task.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct

from randomization.ranges import check_split
from sim.core import Env, State

EVAL_SEED = 20161102  # evaluation tasks (the RL² arXiv date); tuning uses TUNE_SEED, never these
TUNE_SEED = 7


class BatchPolicy(Protocol):
    """A policy over a batch of trial states (leading dim B).

    ``init(batch_size, key) -> carry`` starts a trial; ``act(carry, state, key) -> (carry, action)``
    sees the trial env's whole State (classic baselines may read ``info`` and oracles ``params``).
    """

    def init(self, batch_size: int, key: jax.Array) -> Any: ...

    def act(self, carry: Any, state: State, key: jax.Array) -> tuple[Any, jax.Array]: ...


@struct.dataclass
class TrialResult:
    """Returns of one trial per task.

    Attributes:
        trial_return: [B] total reward of the trial.
        episode_returns: [B, K] reward of each episode of the trial (within-trial adaptation).
    """

    trial_return: jax.Array
    episode_returns: jax.Array


def eval_tasks(env: Env, num_tasks: int, split: str = "train", seed: int = EVAL_SEED) -> Any:
    """The ``num_tasks`` worlds every method is evaluated on (a batched env's ``sample_params``)."""
    check_split(split)
    if env.batch_shape != (num_tasks,):
        raise ValueError(f"env batch {env.batch_shape} does not match num_tasks={num_tasks}")
    return env.sample_params(jax.random.key(seed), split)


def run_trials(env: Env, policy: BatchPolicy, params: Any, key: jax.Array) -> TrialResult:
    """Run one full trial of ``policy`` in each world of ``params`` (``env``: batched ``Trial`` env)."""
    k_reset, k_init, k_run = jax.random.split(key, 3)
    batch = env.batch_shape[0]
    num_eps = env.episodes_per_trial
    state = env.reset(k_reset, params)
    carry = policy.init(batch, k_init)

    def body(c, k):
        state, carry, live, ep_ret = c
        carry, action = policy.act(carry, state, k)
        episode = state.info["episode"]
        nxt = env.step(state, action)
        r = jnp.where(live, nxt.reward, 0.0)
        ep_ret = ep_ret + jax.nn.one_hot(episode, num_eps) * r[:, None]
        live = live & ~nxt.info["trial_done"]
        return (nxt, carry, live, ep_ret), None

    init = (state, carry, jnp.ones((batch,), bool), jnp.zeros((batch, num_eps), jnp.float32))
    keys = jax.random.split(k_run, env.max_trial_steps)
    (_, _, _, ep_ret), _ = jax.lax.scan(body, init, keys)
    return TrialResult(trial_return=ep_ret.sum(-1), episode_returns=ep_ret)


@functools.lru_cache(maxsize=64)
def compiled_run_trials(env: Env):
    """``jit(run_trials)`` for ``env``, taking the policy as an argument (a pytree), cached per env:
    policies of one kind share the compiled function whatever their hyperparameter values."""
    return jax.jit(lambda policy, params, key: run_trials(env, policy, params, key))


def mean_ci95(x) -> tuple[float, float]:
    """Mean and half-width of its normal 95% confidence interval."""
    import numpy as np

    x = np.asarray(x, np.float64)
    return float(x.mean()), float(1.96 * x.std(ddof=1) / np.sqrt(len(x)))


@struct.dataclass
class PolicyActor:
    """A trained :class:`meta_rl.networks.Policy` as a :class:`BatchPolicy` for :func:`run_trials`.

    The carry starts fresh at the trial's start and runs through its K episodes; actions are sampled
    (``deterministic=False``) or the distribution's mode. A policy trained without trials (DR PPO)
    sees only the first ``obs_dim`` elements, the base observation (the trial wrapper appends the
    RL² inputs after it), so both kinds are scored on the same trials.
    """

    params: Any
    policy: Any = struct.field(pytree_node=False)
    deterministic: bool = struct.field(pytree_node=False, default=False)

    def init(self, batch_size: int, key: jax.Array) -> Any:
        return self.policy.init_carry(batch_size)

    def act(self, carry: Any, state: State, key: jax.Array) -> tuple[Any, jax.Array]:
        obs = state.obs[..., : self.policy.spec.obs_dim]
        carry, dist, _ = self.policy.apply(self.params, carry, obs)
        u = dist.mode() if self.deterministic else dist.sample(seed=key)
        return carry, self.policy.env_action(u)
