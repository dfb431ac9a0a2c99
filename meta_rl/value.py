"""What the value-based learners (MFEC, DQN, NEC) share: the env check, ε-greedy behaviour and its
schedule, the actor :func:`meta_rl.rollout.collect` drives, the test-time agent, N-step targets and
per-action DND writes.

Each learner gives a *Q head*: a frozen (hashable) dataclass called as ``head(params, obs [B, D]) ->
Q [B, A]``. The same head drives the rollout (:class:`QActor`, ε-greedy), the test-time agent and
the exported ONNX controller (:class:`QAgent`, greedy), so what is trained is what is evaluated and
deployed.
"""

from __future__ import annotations

from typing import Any, Callable

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from meta_rl import dnd
from meta_rl.agent import Agent
from meta_rl.learners import ScanTrainer
from meta_rl.networks import PolicySpec
from sim.core import Discrete, Env


class ReluMLP(nn.Module):
    """ReLU hidden layers of widths ``hidden``, then a linear layer of ``out`` (DQN's Q-network, NEC's
    embedding)."""

    hidden: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


def check_env(learner: str, env: Env) -> None:
    """A value-based learner needs a discrete action space and a flat vector observation; refuse
    naming the learner and the env."""
    if not isinstance(env.action_space, Discrete):
        raise ValueError(f"{learner} needs discrete actions; {env.id} has {env.action_space.describe()} "
                         "(the value-based learners' envs: cartpole-balance-discrete, maze-discrete, bandits, MDPs)")
    if len(env.observation_space.shape) != 1:
        raise ValueError(f"{learner} needs a flat vector observation; {env.id} has {env.observation_space.describe()}")


def policy_spec(learner: str, env: Env) -> PolicySpec:
    """The observation and action names of a value-based controller (stateless, feed-forward)."""
    check_env(learner, env)
    return PolicySpec(kind="mlp", obs_names=tuple(env.observation_space.names),
                      action_names=tuple(env.action_space.names), discrete=True, normalize_obs=False)


def epsilon_greedy(q: jax.Array, epsilon: jax.Array | float) -> distrax.Categorical:
    """The greedy action on ``q [B, A]`` with probability ``1 - epsilon``, else a uniform one."""
    n = q.shape[-1]
    return distrax.Categorical(probs=epsilon / n + (1.0 - epsilon) * jax.nn.one_hot(jnp.argmax(q, -1), n))


def epsilon_at(c: Any, env_steps: jax.Array) -> jax.Array:
    """ε after ``env_steps`` env steps: linear from ``c.eps_start`` to ``c.eps_end`` over
    ``c.eps_decay_steps``, then held."""
    frac = jnp.clip(env_steps.astype(jnp.float32) / c.eps_decay_steps, 0.0, 1.0)
    return jnp.asarray(c.eps_start + (c.eps_end - c.eps_start) * frac, jnp.float32)


class QActor:
    """ε-greedy on a Q head in the interface :func:`meta_rl.rollout.collect` drives. Its params are
    ``{"agent": agent params, "epsilon": ε}``; the value it reports is ``max_a Q`` (what N-step
    targets bootstrap from). No carry."""

    def __init__(self, head: Callable[[Any, jax.Array], jax.Array]):
        self.head = head

    def init_carry(self, batch: int) -> dict:
        return {}

    def apply(self, params, carry, obs):
        q = self.head(params["agent"], obs)
        return carry, epsilon_greedy(q, params["epsilon"]), jnp.max(q, -1)

    def env_action(self, u):
        return u


@struct.dataclass
class QAgent(Agent):
    """Greedy control on a Q head (ε-greedy when ``epsilon > 0``); keeps no state."""

    params: Any
    spec: PolicySpec = struct.field(pytree_node=False)
    head: Any = struct.field(pytree_node=False)
    epsilon: float = struct.field(pytree_node=False, default=0.0)

    @property
    def policy_spec(self):
        return self.spec

    def initial_state(self, batch: int) -> dict:
        return {}

    def q(self, obs):
        """``Q [B, A]`` of an env observation (a trial env appends the RL² inputs: the head reads its own part)."""
        return self.head(self.params, self.spec.select_obs(obs))

    def act(self, state, obs, key):
        return epsilon_greedy(self.q(obs), self.epsilon).sample(seed=key).astype(jnp.int32), state

    def policy_step(self, state, obs):
        return jnp.argmax(self.q(obs), -1).astype(jnp.int32), state

    # ---- the memory as ONNX inputs (deploy.export): a DND memory grows on the robot, outside the graph

    def memory_inputs(self) -> dict:
        """The agent's DND memory (``params["memory"]``, a :class:`~meta_rl.dnd.Memory` with a leading
        ``[A]`` axis) as the exported graph's inputs :data:`MEMORY_INPUTS` (``float32 [A, C, D]``,
        ``float32 [A, C, V]``, ``int32 [A, C]``); ``{}`` for a head without one (DQN)."""
        mem = self.params.get("memory") if isinstance(self.params, dict) else None
        if not isinstance(mem, dnd.Memory) or mem.stamps.ndim != 2:
            return {}
        return dict(zip(MEMORY_INPUTS, (np.asarray(mem.keys, np.float32), np.asarray(mem.values, np.float32),
                                        np.asarray(mem.stamps, np.int32))))

    def with_memory(self, memory: dict) -> QAgent:
        """This agent with its memory's keys, values and stamps replaced by ``memory`` (named as
        :meth:`memory_inputs`; the clock is kept: a lookup does not read it)."""
        keys, values, stamps = (memory[n] for n in MEMORY_INPUTS)
        mem = self.params["memory"].replace(keys=jnp.asarray(keys, jnp.float32),
                                            values=jnp.asarray(values, jnp.float32),
                                            stamps=jnp.asarray(stamps, jnp.int32))
        return self.replace(params={**self.params, "memory": mem})

    def memory_key(self, obs) -> jax.Array:
        """``[B, D]``: the key the head looks its memories up with (MFEC's projection, NEC's embedding)."""
        return memory_key(self.head, self.params, self.spec.select_obs(obs))

    def policy_step_with(self, memory: dict, state, obs):
        """:meth:`policy_step` on the memory ``memory`` (graph inputs, :meth:`memory_inputs`), with the
        outputs a robot's writes need: ``(action, state, {"q": [B, A], "memory_key": [B, D]})``."""
        agent = self.with_memory(memory)
        q = agent.q(obs)
        return jnp.argmax(q, -1).astype(jnp.int32), state, {"q": q, "memory_key": agent.memory_key(obs)}


def n_step_targets(reward: jax.Array, terminated: jax.Array, done: jax.Array, next_value: jax.Array, gamma: float,
                   n: int) -> jax.Array:
    """``[T, B]`` N-step targets ``sum_{j<m} γ^j r_{t+j} + γ^m V(s_{t+m})`` of a collected segment.

    ``m`` is ``n``, or fewer where the episode ends first (a terminated episode adds no bootstrap, a
    truncated one bootstraps from its final observation) or where the segment ends (the last step
    bootstraps from the state after the segment). ``next_value[t]`` is ``V(s_{t+1})`` within the
    episode (:func:`meta_rl.rollout.next_values`: the final observation's value where truncated).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n-step targets need an integer n >= 1, got {n!r}")
    one = reward + gamma * jnp.where(terminated, 0.0, next_value)
    g = one
    for _ in range(n - 1):  # g holds the k-step targets; one more step of reward in front of each
        longer = jnp.where(done[:-1], one[:-1], reward[:-1] + gamma * g[1:])
        g = jnp.concatenate([longer, one[-1:]], 0)
    return g


def write_per_action(memory: dnd.Memory, keys: jax.Array, action: jax.Array, values: jax.Array, *, rule: str,
                     chunk: int, alpha: float = 0.1, tolerance: float = 0.0) -> dnd.Memory:
    """Write ``keys [N, D]`` with ``values [N]`` into the memory of each one's ``action [N]`` (``memory``
    has a leading ``[A]`` axis) by ``rule``, in order, in chunks of ``chunk`` keys (the last one padded
    with masked writes: a chunk bounds the memory one batched write needs)."""
    action, values = action.reshape(-1), values.reshape(-1)
    n = keys.shape[0]
    chunk = min(chunk, n)
    pad = (-n) % chunk
    keys = jnp.pad(keys, ((0, pad), (0, 0)))
    values = jnp.pad(values, (0, pad))
    action = jnp.pad(action, (0, pad), constant_values=-1)
    chunks = (keys.reshape(-1, chunk, keys.shape[-1]), values.reshape(-1, chunk), action.reshape(-1, chunk))
    mems = []
    for a in range(memory.stamps.shape[0]):
        def body(m, x, a=a):
            kk, v, act = x
            return dnd.write(m, kk, v, rule=rule, alpha=alpha, tolerance=tolerance, mask=act == a), None

        mems.append(jax.lax.scan(body, jax.tree.map(lambda x, a=a: x[a], memory), chunks)[0])
    return jax.tree.map(lambda *x: jnp.stack(x), *mems)


def memories(memory: dnd.Memory) -> list[dnd.Memory]:
    """Each action's memory of a ``[A]``-batched one (a Python list, not a vmap: the lookup exports as
    plain TopK and Gather)."""
    return [jax.tree.map(lambda x, a=a: x[a], memory) for a in range(memory.stamps.shape[0])]


MEMORY_INPUTS = ("memory.keys", "memory.values", "memory.stamps")  # QAgent.memory_inputs, in this order


def memory_key(head: Any, params: Any, obs: jax.Array) -> jax.Array:
    """``[B, D]``: the key a Q head looks its DND memories up with, for observations ``[B, obs_dim]``
    (the head's ``memory_key(params, obs)``: MFEC's projection, NEC's embedding)."""
    if not callable(getattr(head, "memory_key", None)):
        raise ValueError(f"the Q head {type(head).__name__} has no memory key (give it a memory_key(params, obs) method)")
    return head.memory_key(params, obs)


def replay_optimizer(c: Any) -> optax.GradientTransformation:
    """Adam with global-norm clipping (DQN and NEC)."""
    return optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(c.lr))


def finite_step(optimizer, loss_fn, params, opt_state):
    """One optimizer step on ``loss_fn(params) -> (loss, aux)``, skipped (params and state kept) when the
    loss or the gradient is not finite. Returns ``(params, opt_state, loss, aux, skipped)``."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    ok = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    updates, new_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    return keep(new_params, params), keep(new_state, opt_state), loss, aux, ~ok


class ReplayTrainer(ScanTrainer):
    """What DQN's and NEC's trainers share: the env check, the ε-greedy actor on the learner's Q head,
    the optimizer, and :meth:`minibatches` (pure and un-jitted, DESIGN.md's learner contract)."""

    def __init__(self, config: Any, env: Env, head: Any, split: str = "train"):
        self.config = config
        self.head = head
        if env.batch_shape != (config.num_envs,):
            raise ValueError(f"env batch {env.batch_shape} does not match num_envs={config.num_envs}")
        self.env, self.split = env, split
        self.actor = QActor(head)
        self.optimizer = replay_optimizer(config)

    def minibatches(self, replay_size: jax.Array, sgd, carry: Any, key: jax.Array):
        """``grad_steps`` scanned ``sgd(carry, key) -> (carry, (loss, skipped))`` once the replay holds
        ``learning_starts`` (and a minibatch of) transitions, else nothing: ``(carry, mean loss (NaN when
        none), steps skipped as non-finite)``."""
        c = self.config

        def train(carry):
            carry, (loss, skipped) = jax.lax.scan(sgd, carry, jax.random.split(key, c.grad_steps))
            return carry, jnp.mean(loss), jnp.sum(skipped).astype(jnp.int32)

        def wait(carry):
            return carry, jnp.float32(jnp.nan), jnp.zeros((), jnp.int32)

        return jax.lax.cond(replay_size >= max(c.learning_starts, c.batch_size), train, wait, carry)
