"""Model-free episodic control (MFEC, Blundell et al. 2016) on the DND (:mod:`meta_rl.dnd`).

One memory per action maps a state's key (a fixed random projection of the observation) to the best
discounted return seen after taking that action there. The value of a state the memory holds (within
``match_tol``) is that return; of any other state, the mean over its ``k`` nearest stored keys; an
action whose memory is empty is worth 0. Control is greedy on these values, with ε-exploration while
training. Each update collects ``num_steps`` steps of every env with :func:`meta_rl.rollout.collect`
(the one rollout of every learner), computes the discounted returns of the episodes in the segment and
writes them into the memories with the max rule.

The agent's parameters are ``{"proj": [obs_dim, key_dim], "memory": Memory with a leading [A] axis}``:
the memories are saved with the run's checkpoints and restored on resume like any parameters, and the
exported ONNX controller takes them as inputs, with the k-nearest-neighbour lookup inside the graph
(TopK and Gather): ``proteus export`` writes them to ``policy.memory.npz``, and on the robot
:class:`deploy.memory.MemoryController` keeps writing the returns of each episode into them. Evaluation
in simulation (``proteus eval``) keeps the memory fixed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from meta_rl import dnd, value
from meta_rl.configs import MFECConfig
from meta_rl.learners import ScanTrainer
from meta_rl.losses import gae
from meta_rl.networks import PolicySpec
from meta_rl.ppo import rollout_metrics
from meta_rl.rollout import Runner, collect, start
from sim.core import Env


def check_env(env: Env) -> None:
    """MFEC needs a discrete action space and a flat vector observation; refuse naming the env."""
    value.check_env("mfec", env)


def policy_spec(c: MFECConfig, env: Env) -> PolicySpec:
    """The observation and action names (a stateless, feed-forward controller)."""
    return value.policy_spec("mfec", env)


def init_agent_params(c: MFECConfig, env: Env, key: jax.Array) -> dict:
    """A random projection and empty memories, one per action."""
    check_env(env)
    obs_dim, n_actions = env.observation_space.shape[0], env.action_space.n
    proj = jax.random.normal(key, (obs_dim, c.key_dim), jnp.float32) / jnp.sqrt(float(obs_dim))
    memory = jax.vmap(lambda _: dnd.init(c.capacity, c.key_dim))(jnp.arange(n_actions))
    return {"proj": proj, "memory": memory}


def _keys(params: dict, obs: jax.Array) -> jax.Array:
    """The memory keys of observations ``[..., obs_dim]``: their random projection, flattened to ``[N, key_dim]``."""
    return obs.reshape(-1, obs.shape[-1]).astype(jnp.float32) @ params["proj"]


def q_values(params: dict, obs: jax.Array, k: int, match_tol: float) -> jax.Array:
    """``[B, A]`` MFEC values of a batch of observations ``[B, obs_dim]`` (see the module docstring)."""
    keys = _keys(params, obs)
    out = []
    for mem in value.memories(params["memory"]):
        look = dnd.lookup(mem, keys, k)
        vals = jnp.asarray(mem.values)[:, 0][look.index]  # [B, k]
        count = jnp.sum(look.valid, -1)
        mean = jnp.sum(jnp.where(look.valid, vals, 0.0), -1) / jnp.maximum(count, 1)
        seen = look.valid[:, 0] & (look.sq_dist[:, 0] <= match_tol)
        out.append(jnp.where(seen, vals[:, 0], jnp.where(count > 0, mean, 0.0)))
    return jnp.stack(out, -1)


@dataclasses.dataclass(frozen=True)
class MFECHead:
    """The Q head (:mod:`meta_rl.value`): :func:`q_values` with the config's ``k`` and ``match_tol``."""

    k: int
    match_tol: float
    memory_rule = "max"  # how a deployed controller writes its memory (deploy.memory): the best return seen

    def __call__(self, params, obs):
        return q_values(params, obs, self.k, self.match_tol)

    def memory_key(self, params, obs):
        """``[B, key_dim]``: the keys the lookup uses (the random projection)."""
        return _keys(params, obs)


def discounted_returns(reward: jax.Array, done: jax.Array, gamma: float) -> jax.Array:
    """``[T, B]`` discounted return from each step to the end of its episode, or of the segment for an
    episode still running at its end (the return so far): GAE with no values and lambda 1."""
    zeros = jnp.zeros_like(reward)
    return gae(reward, zeros, zeros, done, done, gamma, 1.0)[1]


def write_returns(params: dict, obs: jax.Array, action: jax.Array, returns: jax.Array, c: MFECConfig) -> dict:
    """Write each (observation, action, return) into that action's memory by the max rule."""
    memory = value.write_per_action(params["memory"], _keys(params, obs), action, returns, rule="max",
                                    chunk=c.write_chunk, tolerance=c.match_tol)
    return {**params, "memory": memory}


@struct.dataclass
class TrainState:
    params: Any
    runner: Runner
    key: jax.Array
    update: jax.Array


class Trainer(ScanTrainer):
    """MFEC on one batched env (pure and un-jitted, DESIGN.md's learner contract)."""

    def __init__(self, config: MFECConfig, env: Env, split: str = "train"):
        self.config = c = config
        check_env(env)
        if env.batch_shape != (c.num_envs,):
            raise ValueError(f"env batch {env.batch_shape} does not match num_envs={c.num_envs}")
        self.env, self.split = env, split
        self.actor = value.QActor(MFECHead(c.k, c.match_tol))

    def init(self, key: jax.Array) -> TrainState:
        k_params, k_env, k_next = jax.random.split(key, 3)
        params = init_agent_params(self.config, self.env, k_params)
        runner = start(self.env, self.actor, k_env, self.split)
        return TrainState(params, runner, k_next, jnp.zeros((), jnp.int32))

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        c = self.config
        key, k_roll = jax.random.split(ts.key)
        actor_params = {"agent": ts.params, "epsilon": jnp.float32(c.epsilon)}
        runner, traj, _ = collect(self.env, self.actor, actor_params, ts.runner, k_roll, c.num_steps)
        returns = discounted_returns(traj.reward, traj.done, c.gamma)
        params = write_returns(ts.params, traj.obs, traj.action, returns, c)
        metrics = rollout_metrics(traj)
        metrics.update(memory_size=jnp.sum(params["memory"].stamps >= 0).astype(jnp.float32),
                       nonfinite=jnp.zeros((), jnp.int32))
        return ts.replace(params=params, runner=runner, key=key, update=ts.update + 1), metrics


def make_train(config: MFECConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)``."""
    return Trainer(config, env, split)


def make_agent(c: MFECConfig, env: Env, params: Any, deterministic: bool) -> value.QAgent:
    """The test-time agent: greedy (``deterministic``) or ε-greedy with the training ε."""
    return value.QAgent(params, policy_spec(c, env), MFECHead(c.k, c.match_tol), 0.0 if deterministic else c.epsilon)
