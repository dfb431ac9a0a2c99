"""The evaluation compute: run agents through whole trials on shared evaluation worlds.

Every baseline, oracle and learner is an :class:`meta_rl.agent.Agent` scored by :func:`run_trials`
on the worlds from :func:`eval_tasks`, so their numbers are comparable world by world (the reporting
lives in :mod:`proteus.evaluation`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from randomization.ranges import check_split
from meta_rl.agent import Agent, Step
from sim.core import Env, State, where_done

EVAL_SEED = 20161102  # evaluation tasks (the RL² arXiv date); tuning uses TUNE_SEED, never these
TUNE_SEED = 7


@struct.dataclass
class TrialResult:
    """Returns of one trial per task.

    Attributes:
        trial_return: [B] total reward of the trial.
        episode_returns: [B, K] reward of each episode of the trial (within-trial adaptation).
        obs: with ``record_obs``, the observations acted on, [max_trial_steps, B, ...] (else ``None``).
        metrics: with ``record_metrics``, the env's per-step ``metrics`` [max_trial_steps, B] (e.g. a
            bandit's regret) and ``live`` (the step belongs to the trial) (else ``None``).
    """

    trial_return: jax.Array
    episode_returns: jax.Array
    obs: Any = None  # [T, B, ...] the observations the agent acted on, when asked (record_obs)
    metrics: Any = None  # {name: [T, B]} the env's per-step metrics and "live", when asked (record_metrics)


def eval_tasks(env: Env, num_tasks: int, split: str = "train", seed: int = EVAL_SEED) -> Any:
    """The ``num_tasks`` worlds every method is evaluated on (a batched env's ``sample_params``)."""
    check_split(split)
    if env.batch_shape != (num_tasks,):
        raise ValueError(f"env batch {env.batch_shape} does not match num_tasks={num_tasks}")
    return env.sample_params(jax.random.key(seed), split)


def _trial_step_done(state: State) -> jax.Array:
    """Where the episode ended on this step, in a ``trial`` or ``fixed`` env (both keep the episode's
    own flags in ``info``; a ``trial`` env's ``terminated`` is the trial's end)."""
    info = state.info
    if "episode_terminated" in info:
        return info["episode_terminated"] | info["episode_truncated"]
    return state.terminated | state.truncated


def run_trials(env: Env, agent: Agent, params: Any, key: jax.Array, record_obs: bool = False,
               record_metrics: bool = False) -> TrialResult:
    """Run one full trial of ``agent`` in each world of ``params``.

    ``env`` is a batched env in ``trial`` or ``fixed`` mode (K episodes per world); ``agent`` any
    :class:`meta_rl.agent.Agent`: ``init`` once per world, then every step ``act``, ``observe`` the
    transition and, where the episode ended, ``end_episode``. The env's observation goes to the agent
    as is (a policy trained without the RL² inputs slices its own part, see
    :class:`meta_rl.agent.PolicyAgent`). ``record_obs`` (static) also returns every observation
    acted on (export records its parity inputs so); ``record_metrics`` (static) the env's per-step
    ``metrics`` and whether each step was inside the trial.
    """
    k_reset, k_init, k_run = jax.random.split(key, 3)
    batch = env.batch_shape[0]
    num_eps = env.episodes_per_trial
    state = env.reset(k_reset, params)
    agent_state = agent.init(k_init, params)

    def body(c, k):
        state, agent_state, live, ep_ret = c
        action, agent_state = agent.act(agent_state, state.obs, k)
        episode = state.info["episode"]
        nxt = env.step(state, action)
        done = _trial_step_done(nxt)
        step = Step(
            obs=state.obs,
            action=action,
            reward=nxt.reward,
            next_obs=nxt.info.get("final_obs", nxt.obs),
            terminated=nxt.info.get("episode_terminated", nxt.terminated),
            truncated=nxt.info.get("episode_truncated", nxt.truncated),
            done=done,
        )
        agent_state = agent.observe(agent_state, step)
        agent_state = where_done(done, agent.end_episode(agent_state), agent_state)
        r = jnp.where(live, nxt.reward, 0.0)
        ep_ret = ep_ret + jax.nn.one_hot(episode, num_eps) * r[:, None]
        recorded = ({**nxt.metrics, "live": live} if record_metrics else None)
        live = live & ~nxt.info["trial_done"]
        return (nxt, agent_state, live, ep_ret), (state.obs if record_obs else None, recorded)

    init = (state, agent_state, jnp.ones((batch,), bool), jnp.zeros((batch, num_eps), jnp.float32))
    keys = jax.random.split(k_run, env.max_trial_steps)
    (_, _, _, ep_ret), (obs, metrics) = jax.lax.scan(body, init, keys)
    return TrialResult(trial_return=ep_ret.sum(-1), episode_returns=ep_ret, obs=obs, metrics=metrics)


@functools.lru_cache(maxsize=64)
def compiled_run_trials(env: Env):
    """``jit(run_trials)`` for ``env``, taking the agent as an argument (a pytree), cached per env:
    agents of one kind share the compiled function whatever their parameter values."""
    return jax.jit(lambda agent, params, key: run_trials(env, agent, params, key))


def mean_ci95(x) -> tuple[float, float]:
    """Mean and half-width of its normal 95% confidence interval."""
    import numpy as np

    x = np.asarray(x, np.float64)
    return float(x.mean()), float(1.96 * x.std(ddof=1) / np.sqrt(len(x)))
