"""Neural episodic control (NEC, Pritzel et al. 2017) on the DND (:mod:`meta_rl.dnd`).

An embedding network (a ReLU MLP) maps an observation to a key ``h``. Each action ``a`` has a DND;
``Q(s, a)`` is the kernel-weighted mean (``1 / (d² + δ)``) of the values of the ``k`` keys nearest to
``h`` in ``a``'s DND. Control is ε-greedy on ``Q`` (ε from :func:`meta_rl.value.epsilon_at`).

Each update:

1. collects ``num_steps`` steps of every env with :func:`meta_rl.rollout.collect` (the one rollout of
   every learner);
2. computes the N-step targets ``Q_N(s_t, a_t) = sum_{j<N} γ^j r_{t+j} + γ^N max_a Q(s_{t+N}, a)``
   (:func:`meta_rl.value.n_step_targets`: fewer steps where the episode or the segment ends; the
   bootstrap is the memory's value at collection);
3. writes ``(h(s_t), Q_N)`` into ``a_t``'s DND: a key already stored (within ``match_tol``) is updated
   by the tabular rule ``v += alpha (Q_N - v)``, a new one takes the least recently used slot;
4. adds ``(s_t, a_t, Q_N)`` to the replay buffer (:mod:`meta_rl.replay`, shared with DQN) and, once
   ``learning_starts`` steps are in, takes ``grad_steps`` Adam steps on minibatches of
   ``(Q(s, a) - Q_N)² / 2``. The gradient trains the embedding *and* the DND's keys and values (the
   neighbours' keys move through the kernel weights; the choice of neighbours is not differentiated).
   The entries a minibatch looked up become the most recently used (NEC's LRU by use).

The agent's parameters are ``{"embed": the embedding's weights, "memory": Memory with a leading
[A] axis}``: the memories are saved with the run's checkpoints and restored on resume, and the
exported ONNX controller takes them as inputs with the lookup inside the graph (TopK and Gather);
``proteus export`` writes them to ``policy.memory.npz``, and on the robot
:class:`deploy.memory.MemoryController` keeps writing N-step targets into them. Adam keeps
moments for the memory's keys and values too; a slot taken by a new key keeps the old entry's moments
(they decay within a few hundred steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from meta_rl import dnd, value
from meta_rl import replay as rb
from meta_rl.configs import NECConfig
from meta_rl.networks import PolicySpec
from meta_rl.ppo import rollout_metrics
from meta_rl.rollout import Runner, collect, next_values, start
from sim.core import Env


@dataclasses.dataclass(frozen=True)
class NECHead:
    """The Q head (:mod:`meta_rl.value`): embed, then a kernel-weighted lookup in each action's DND."""

    hidden: tuple[int, ...]
    key_dim: int
    k: int
    delta: float
    memory_rule = "q"  # how a deployed controller writes its memory (deploy.memory): v += alpha (Q_N - v)

    def embed(self, params, obs):
        """``h(s) [B, key_dim]``."""
        return value.ReluMLP(self.hidden, self.key_dim).apply(params["embed"], obs.astype(jnp.float32))

    def memory_key(self, params, obs):
        """``[B, key_dim]``: the keys the lookup uses (the embedding)."""
        return self.embed(params, obs)

    def lookups(self, params, obs) -> list[dnd.Lookup]:
        h = self.embed(params, obs)
        return [dnd.lookup(mem, h, self.k, self.delta) for mem in value.memories(params["memory"])]

    def __call__(self, params, obs):
        return jnp.stack([look.value[:, 0] for look in self.lookups(params, obs)], -1)


def _head(c: NECConfig, env: Env) -> NECHead:
    value.check_env("nec", env)
    return NECHead(tuple(c.hidden), c.key_dim, c.k, c.delta)


def policy_spec(c: NECConfig, env: Env) -> PolicySpec:
    return value.policy_spec("nec", env)


def init_agent_params(c: NECConfig, env: Env, key: jax.Array) -> dict:
    """The embedding's weights and empty memories, one per action."""
    head = _head(c, env)
    obs = jnp.zeros((1, env.observation_space.shape[0]), jnp.float32)
    embed = value.ReluMLP(head.hidden, head.key_dim).init(key, obs)
    memory = jax.vmap(lambda _: dnd.init(c.capacity, c.key_dim))(jnp.arange(env.action_space.n))
    return {"embed": embed, "memory": memory}


def _trainable(params: dict) -> dict:
    """What the gradient moves: the embedding, and the memories' keys and values."""
    return {"embed": params["embed"], "keys": params["memory"].keys, "values": params["memory"].values}


def _with(params: dict, trainable: dict) -> dict:
    return {"embed": trainable["embed"],
            "memory": params["memory"].replace(keys=trainable["keys"], values=trainable["values"])}


def q_loss(head: NECHead, params: dict, batch: dict) -> tuple[jax.Array, dnd.Lookup]:
    """``mean (Q(s, a) - Q_N)² / 2`` over a minibatch, and the lookups of ``Q(s, a)`` (in each
    transition's own action's DND, for the LRU)."""
    look = dnd.lookup_each(params["memory"], batch["action"], head.embed(params, batch["obs"]), head.k, head.delta)
    return 0.5 * jnp.mean(jnp.square(look.value[:, 0] - batch["target"])), look


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly."""

    params: Any
    opt_state: Any
    replay: rb.Replay
    runner: Runner
    key: jax.Array
    update: jax.Array


class Trainer(value.ReplayTrainer):
    """NEC on one batched env (pure and un-jitted, DESIGN.md's learner contract)."""

    def __init__(self, config: NECConfig, env: Env, split: str = "train"):
        super().__init__(config, env, _head(config, env), split)

    def init(self, key: jax.Array) -> TrainState:
        k_params, k_env, k_next = jax.random.split(key, 3)
        params = init_agent_params(self.config, self.env, k_params)
        runner = start(self.env, self.actor, k_env, self.split)
        example = {"obs": jnp.zeros(self.env.observation_space.shape, jnp.float32), "action": jnp.zeros((), jnp.int32),
                   "target": jnp.zeros(())}
        return TrainState(params, self.optimizer.init(_trainable(params)), rb.init(example, self.config.buffer_size),
                          runner, k_next, jnp.zeros((), jnp.int32))

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        c, head = self.config, self.head
        key, k_roll, k_train = jax.random.split(ts.key, 3)
        epsilon = value.epsilon_at(c, ts.update * c.steps_per_update)
        runner, traj, last_value = collect(self.env, self.actor, {"agent": ts.params, "epsilon": epsilon}, ts.runner,
                                           k_roll, c.num_steps)
        targets = value.n_step_targets(traj.reward, traj.terminated, traj.done, next_values(traj, last_value),
                                       c.gamma, c.n_step)
        obs = traj.obs.reshape((-1,) + traj.obs.shape[2:])
        action = traj.action.reshape(-1).astype(jnp.int32)
        memory = value.write_per_action(ts.params["memory"], head.embed(ts.params, obs), action, targets, rule="q",
                                        chunk=c.write_chunk, alpha=c.alpha, tolerance=c.match_tol)
        params = {**ts.params, "memory": memory}
        buf = rb.add(ts.replay, {"obs": obs, "action": action, "target": targets.reshape(-1)})

        def sgd(carry, k):
            params, opt_state = carry
            batch = rb.sample(buf, k, c.batch_size)
            trainable, opt_state, loss, looks, skipped = value.finite_step(
                self.optimizer, lambda t: q_loss(head, _with(params, t), batch), _trainable(params), opt_state)
            params = _with(params, trainable)
            mems = [dnd.touch(m, looks.index, looks.valid & (batch["action"] == a)[:, None])
                    for a, m in enumerate(value.memories(params["memory"]))]
            params = {**params, "memory": jax.tree.map(lambda *x: jnp.stack(x), *mems)}
            return (params, opt_state), (loss, skipped)

        (params, opt_state), loss, skipped = self.minibatches(buf.size, sgd, (params, ts.opt_state), k_train)
        metrics = rollout_metrics(traj)
        metrics.update(loss=loss, epsilon=epsilon, nonfinite=skipped, q_mean=jnp.mean(traj.value),
                       memory_size=jnp.sum(params["memory"].stamps >= 0).astype(jnp.float32))
        return ts.replace(params=params, opt_state=opt_state, replay=buf, runner=runner, key=key,
                          update=ts.update + 1), metrics


def make_train(config: NECConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)``."""
    return Trainer(config, env, split)


def make_agent(c: NECConfig, env: Env, params: Any, deterministic: bool) -> value.QAgent:
    """The test-time agent: greedy (``deterministic``) or ε-greedy with the final training ε. The memory
    does not grow at test time."""
    return value.QAgent(params, policy_spec(c, env), _head(c, env), 0.0 if deterministic else c.eps_end)
