"""The test-time adaptation contract every learner's ``Agent`` implements (DESIGN.md).

An agent acts in one world after another and may adapt to the world it is in::

    state = agent.init(key, world)                  # world: the batched env params [B, ...]
    action, state = agent.act(state, obs, key)      # every step
    state = agent.observe(state, transition)        # every step, after the env answered
    state = where_done(done, agent.end_episode(state), state)   # where an episode ended (gradient steps, memory writes)

Everything is batched over a leading axis ``B`` and pure: the agent is a pytree (its learned
parameters are leaves, its configuration static), so one jitted evaluation function serves every
agent of a kind whatever its weights. What each learner keeps in ``state``: RL² its recurrent carry,
MAML its adapted weights, MAESN its latent, NEC its memory; a domain-randomization policy keeps
nothing (``{}``).

``policy_step(state, obs) -> (action, state)`` is the deterministic step a robot runs: the ONNX
export traces exactly this function, with one input and one output per leaf of
``initial_state(batch)`` (named after its path) beside ``obs`` and ``action``.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

AgentState = Any


@struct.dataclass
class Step:
    """What :meth:`Agent.observe` sees after each env step (leading batch axis ``B``).

    Attributes:
        obs: the observation the action was chosen from.
        action: the action taken (env units).
        reward: the reward received.
        next_obs: the observation after the step (the next episode's first one where ``done``).
        terminated: the episode ended in a terminal state.
        truncated: a time limit cut the episode.
        done: the episode ended (either way): :meth:`Agent.end_episode` follows where it is set.
    """

    obs: Any
    action: jax.Array
    reward: jax.Array
    next_obs: Any
    terminated: jax.Array
    truncated: jax.Array
    done: jax.Array


def batch_size_of(world: Any) -> int:
    """The leading batch size of a batched world pytree."""
    leaves = jax.tree.leaves(world)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ValueError("Agent.init needs a batched world (leading batch axis on every leaf of the env params)")
    return int(jnp.shape(leaves[0])[0])


class Agent(abc.ABC):
    """Base class of every learner's agent (see the module docstring).

    Subclasses are flax ``struct.dataclass`` es (pytrees) and define :meth:`initial_state`,
    :meth:`act` and :meth:`policy_step`; :meth:`observe` and :meth:`end_episode` default to keeping
    the state, which is right for agents that adapt through their state alone (RL²) or not at all.
    ``policy_spec`` (a :class:`meta_rl.networks.PolicySpec`) names the observation and action
    elements for export and deployment.
    """

    @abc.abstractmethod
    def initial_state(self, batch: int) -> AgentState:
        """The state before any experience of the world (what a robot starts from)."""

    def init(self, key: jax.Array, world: Any) -> AgentState:
        """Start in a batch of worlds ``world`` (the env params). Oracles may read ``world``; learners
        must not (they meet held-out worlds knowing nothing of them)."""
        del key
        return self.initial_state(batch_size_of(world))

    @abc.abstractmethod
    def act(self, state: AgentState, obs: Any, key: jax.Array) -> tuple[jax.Array, AgentState]:
        """Choose actions (env units) for a batch of observations."""

    def observe(self, state: AgentState, step: Step) -> AgentState:
        """Take in one transition (every step)."""
        del step
        return state

    def end_episode(self, state: AgentState) -> AgentState:
        """An episode ended: gradient adaptation, memory writes. The runner calls it on the whole batch
        after every step and keeps its result only where the episode ended (:func:`sim.core.where_done`),
        so it is written for one world at a time, with no ``done`` argument."""
        return state

    @abc.abstractmethod
    def policy_step(self, state: AgentState, obs: Any) -> tuple[jax.Array, AgentState]:
        """The deterministic step in env units: what export traces and a robot runs."""

    @property
    def policy_spec(self):
        """The :class:`meta_rl.networks.PolicySpec` naming observations and actions (what export and
        deployment read). Agents that are not exportable (classic baselines, oracles that read the
        world) keep this default, which refuses naming the agent."""
        raise TypeError(f"{type(self).__name__} has no policy spec: it is an evaluation baseline, not an "
                        "exportable policy")


@struct.dataclass
class PolicyAgent(Agent):
    """A :class:`meta_rl.networks.Policy` as an Agent: its state is the recurrent carry (``{}`` for a
    feed-forward policy), reset only by ``init``; the carry runs through every episode of a world.

    The policy reads its own part of the observation (:meth:`PolicySpec.select_obs`): a policy
    trained without trial inputs (DR PPO) evaluated on a trial env sees its base observation only,
    so both kinds are scored on the same trials. ``deterministic`` acts with the distribution's mode (what export
    deploys), else samples.
    """

    params: Any
    policy: Any = struct.field(pytree_node=False)
    deterministic: bool = struct.field(pytree_node=False, default=False)

    @property
    def policy_spec(self):
        return self.policy.spec

    def initial_state(self, batch: int) -> AgentState:
        return self.policy.init_carry(batch)

    def _dist(self, state, obs):
        obs = self.policy.spec.select_obs(obs)
        state, dist, _ = self.policy.apply(self.params, state, obs)
        return state, dist

    def act(self, state, obs, key):
        state, dist = self._dist(state, obs)
        u = dist.mode() if self.deterministic else dist.sample(seed=key)
        return self.policy.env_action(u), state

    def policy_step(self, state, obs):
        state, dist = self._dist(state, obs)
        return self.policy.deterministic(dist), state


@struct.dataclass
class TaskObservingAgent(Agent):
    """An oracle trained on the privileged env ``<id>+task`` (:class:`sim.wrappers.ObserveTask`)
    played on ``<id>``: at :meth:`init` it reads each world's task parameters (oracles may read the
    world) and inserts them where its policy reads them, right after the base observation.

    Attributes:
        agent: the oracle run's own agent (its policy reads ``base_dim`` base values, then the task).
        task_fn: ``world -> [B, T]`` the task parameters of a batch of worlds.
        base_dim: base observation values before the task's.
        task_dim: T.
    """

    agent: Any
    task_fn: Any = struct.field(pytree_node=False)
    base_dim: int = struct.field(pytree_node=False)
    task_dim: int = struct.field(pytree_node=False)

    @property
    def policy_spec(self):
        return self.agent.policy_spec

    def initial_state(self, batch: int) -> AgentState:
        return {"inner": self.agent.initial_state(batch), "task": jnp.zeros((batch, self.task_dim), jnp.float32)}

    def init(self, key: jax.Array, world: Any) -> AgentState:
        return {"inner": self.agent.init(key, world), "task": jnp.asarray(self.task_fn(world), jnp.float32)}

    def _obs(self, state, obs):
        return jnp.concatenate([obs[..., : self.base_dim], state["task"], obs[..., self.base_dim:]], -1)

    def act(self, state, obs, key):
        action, inner = self.agent.act(state["inner"], self._obs(state, obs), key)
        return action, {**state, "inner": inner}

    def observe(self, state, step: Step):
        step = step.replace(obs=self._obs(state, step.obs), next_obs=self._obs(state, step.next_obs))
        return {**state, "inner": self.agent.observe(state["inner"], step)}

    def end_episode(self, state):
        return {**state, "inner": self.agent.end_episode(state["inner"])}

    def policy_step(self, state, obs):
        action, inner = self.agent.policy_step(state["inner"], self._obs(state, obs))
        return action, {**state, "inner": inner}


@struct.dataclass
class ForgetfulAgent(Agent):
    """``agent`` with its state put back to :meth:`initial_state` at every episode end: each episode of
    a trial starts from what a robot starts from, so a learner that adapts through its state (RL²'s
    carry, an episodic memory, a gradient learner's adapted weights) meets every episode afresh. The
    memory ablation of ``proteus eval --reset-memory``: episode 2 minus episode 1 is then what the
    memory carried across the boundary was worth, good or bad."""

    agent: Any

    @property
    def policy_spec(self):
        return self.agent.policy_spec

    def initial_state(self, batch: int) -> AgentState:
        return self.agent.initial_state(batch)

    def init(self, key: jax.Array, world: Any) -> AgentState:
        return self.agent.init(key, world)

    def act(self, state, obs, key):
        return self.agent.act(state, obs, key)

    def observe(self, state, step: Step):
        return self.agent.observe(state, step)

    def end_episode(self, state):
        leaves = jax.tree.leaves(state)
        if not leaves:  # a stateless agent has nothing to forget
            return state
        fresh = self.agent.initial_state(int(jnp.shape(leaves[0])[0]))
        return jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), fresh, state)

    def policy_step(self, state, obs):
        return self.agent.policy_step(state, obs)
