"""DQN with experience replay (Mnih et al. 2015), the baseline of NEC (:mod:`meta_rl.nec`).

A ReLU MLP maps an observation to ``Q(s, ·)``. Each update collects ``num_steps`` steps of every env
with :func:`meta_rl.rollout.collect` (the one rollout of every learner), ε-greedy on the online
network (ε from :func:`meta_rl.value.epsilon_at`), writes the transitions into the replay buffer
(:mod:`meta_rl.replay`, shared with NEC) and, once ``learning_starts`` steps are in, takes
``grad_steps`` Adam steps on minibatches of the Huber loss to the one-step target
``r + γ max_a' Q_target(s', a')`` (Double DQN's ``Q_target(s', argmax_a' Q(s', a'))`` when ``double``).
The target network is a copy of the online one, refreshed every ``target_period`` minibatch steps.

A stored transition keeps ``reward`` and ``discount`` ready for the target: where the episode was
truncated, ``reward`` already holds ``r + γ V(final observation)`` with the value the online network
gave at collection (the rollout computes it) and ``discount`` is 0; where it terminated, ``discount``
is 0. A minibatch step whose loss or gradient is not finite is skipped and counted in
``metrics["nonfinite"]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from meta_rl import replay as rb
from meta_rl import value
from meta_rl.configs import DQNConfig
from meta_rl.networks import PolicySpec
from meta_rl.ppo import rollout_metrics
from meta_rl.rollout import Runner, collect, start
from sim.core import Env


@dataclasses.dataclass(frozen=True)
class DQNHead:
    """The Q head (:mod:`meta_rl.value`): the Q-network on ``params["q"]``."""

    hidden: tuple[int, ...]
    n_actions: int

    def __call__(self, params, obs):
        return value.ReluMLP(self.hidden, self.n_actions).apply(params["q"], obs.astype(jnp.float32))


def _head(c: DQNConfig, env: Env) -> DQNHead:
    value.check_env("dqn", env)
    return DQNHead(tuple(c.hidden), env.action_space.n)


def policy_spec(c: DQNConfig, env: Env) -> PolicySpec:
    return value.policy_spec("dqn", env)


def init_agent_params(c: DQNConfig, env: Env, key: jax.Array) -> dict:
    """The online Q-network's weights (what the agent and the saved policy need)."""
    head = _head(c, env)
    obs = jnp.zeros((1, env.observation_space.shape[0]), jnp.float32)
    return {"q": value.ReluMLP(head.hidden, head.n_actions).init(key, obs)}


def td_loss(head: DQNHead, params: dict, target: dict, batch: dict, double: bool) -> jax.Array:
    """Mean Huber loss of ``Q(s, a)`` to the one-step target (see the module docstring)."""
    q = head(params, batch["obs"])
    q_taken = jnp.take_along_axis(q, batch["action"][:, None], -1)[:, 0]
    q_next = head(target, batch["next_obs"])
    if double:
        pick = jnp.argmax(head(params, batch["next_obs"]), -1)
        v_next = jnp.take_along_axis(q_next, pick[:, None], -1)[:, 0]
    else:
        v_next = jnp.max(q_next, -1)
    y = jax.lax.stop_gradient(batch["reward"] + batch["discount"] * v_next)
    return jnp.mean(optax.huber_loss(q_taken, y))


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly."""

    params: Any
    target: Any
    opt_state: Any
    replay: rb.Replay
    runner: Runner
    key: jax.Array
    update: jax.Array
    grad_step: jax.Array


class Trainer(value.ReplayTrainer):
    """DQN on one batched env (pure and un-jitted, DESIGN.md's learner contract)."""

    def __init__(self, config: DQNConfig, env: Env, split: str = "train"):
        super().__init__(config, env, _head(config, env), split)

    def init(self, key: jax.Array) -> TrainState:
        k_params, k_env, k_next = jax.random.split(key, 3)
        params = init_agent_params(self.config, self.env, k_params)
        runner = start(self.env, self.actor, k_env, self.split)
        obs = jnp.zeros(self.env.observation_space.shape, jnp.float32)
        example = {"obs": obs, "action": jnp.zeros((), jnp.int32), "reward": jnp.zeros(()), "discount": jnp.zeros(()),
                   "next_obs": obs}
        zero = jnp.zeros((), jnp.int32)
        return TrainState(params, params, self.optimizer.init(params), rb.init(example, self.config.buffer_size),
                          runner, k_next, zero, zero)

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        c = self.config
        key, k_roll, k_train = jax.random.split(ts.key, 3)
        epsilon = value.epsilon_at(c, ts.update * c.steps_per_update)
        runner, traj, _ = collect(self.env, self.actor, {"agent": ts.params, "epsilon": epsilon}, ts.runner, k_roll,
                                  c.num_steps)
        next_obs = jnp.concatenate([traj.obs[1:], runner.env_state.obs[None]], 0)
        items = {"obs": traj.obs, "action": traj.action.astype(jnp.int32),
                 "reward": traj.reward + c.gamma * traj.bootstrap_value,
                 "discount": c.gamma * (1.0 - traj.done.astype(jnp.float32)), "next_obs": next_obs}
        buf = rb.add(ts.replay, jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), items))

        def sgd(carry, k):
            params, target, opt_state, n = carry
            batch = rb.sample(buf, k, c.batch_size)
            params, opt_state, loss, _, skipped = value.finite_step(
                self.optimizer, lambda p: (td_loss(self.head, p, target, batch, c.double), None), params, opt_state)
            n = n + 1
            target = jax.tree.map(lambda t, p: jnp.where(n % c.target_period == 0, p, t), target, params)
            return (params, target, opt_state, n), (loss, skipped)

        (params, target, opt_state, n), loss, skipped = self.minibatches(
            buf.size, sgd, (ts.params, ts.target, ts.opt_state, ts.grad_step), k_train)
        metrics = rollout_metrics(traj)
        metrics.update(loss=loss, epsilon=epsilon, nonfinite=skipped, q_mean=jnp.mean(traj.value))
        return ts.replace(params=params, target=target, opt_state=opt_state, replay=buf, runner=runner, key=key,
                          update=ts.update + 1, grad_step=n), metrics


def make_train(config: DQNConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)``."""
    return Trainer(config, env, split)


def make_agent(c: DQNConfig, env: Env, params: Any, deterministic: bool) -> value.QAgent:
    """The test-time agent: greedy (``deterministic``) or ε-greedy with the final training ε."""
    return value.QAgent(params, policy_spec(c, env), _head(c, env), 0.0 if deterministic else c.eps_end)
