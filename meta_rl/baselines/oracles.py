"""Known optima and classic references per env, as :class:`meta_rl.agent.Agent` s.

:func:`known_oracle` gives the best an agent can do knowing the world (the bandit's Bayes-optimal
Gittins strategy, the MDP's optimal plan, point navigation's straight line); :func:`known_references`
the classic strategies a meta-learner is compared with on the same worlds. MuJoCo robots have
neither (pass an oracle run trained on the exact world instead).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from meta_rl.agent import Agent


@struct.dataclass
class PointNavOracle(Agent):
    """The exact optimum of point navigation, knowing the target (read from the world at ``init``).

    The action is a velocity clipped to ``[-max_v, max_v]`` per axis. ``goal``: step straight at the
    goal, clipped per axis: after t steps this reaches the point of the reachable box (origin ± t·dt·max_v)
    nearest the goal, so every step's distance, hence the return, is minimal. ``vel``: command the target
    velocity clipped to the box, the closest reachable velocity.
    """

    family: str = struct.field(pytree_node=False)
    dt: float = struct.field(pytree_node=False, default=0.1)
    max_v: float = struct.field(pytree_node=False, default=1.0)

    def label(self) -> str:
        return f"exact optimum (point-{self.family})"

    def initial_state(self, batch: int) -> Any:
        return {"target": jnp.zeros((batch, 2), jnp.float32)}

    def init(self, key: jax.Array, world: Any) -> Any:
        return {"target": jnp.asarray(world.target, jnp.float32)}

    def act(self, state: Any, obs: jax.Array, key: jax.Array):
        return self.policy_step(state, obs)

    def policy_step(self, state: Any, obs: jax.Array):
        target = state["target"]
        v = (target - obs[..., :2]) / self.dt if self.family in ("goal", "goal2d", "goalx", "arc", "arc-sparse") else target
        return jnp.clip(v, -self.max_v, self.max_v).astype(jnp.float32), state



def _mdp_strategy(mdp, kind: str):
    """A classic tabular-MDP strategy sized for ``mdp`` (a :class:`TabularMDP`)."""
    from meta_rl.baselines.mdp import MDPStrategy

    return MDPStrategy(kind, mdp.num_states, mdp.num_actions, mdp.episode_length)


def known_oracle(env) -> tuple[Agent, str, str] | None:
    """``(agent, label, note)`` of a trial env's known optimum, or ``None`` (MuJoCo robots)."""
    from sim.tasks.bandit import BernoulliBandit
    from sim.tasks.point_nav import PointNav
    from sim.tasks.tabular_mdp import TabularMDP

    base = env.unwrapped
    if isinstance(base, BernoulliBandit):
        from meta_rl.baselines.tuned import tuned_strategy

        strat = tuned_strategy("gittins", base.num_arms, env.episodes_per_trial)
        return strat, strat.label(), ("Gittins index of the Beta(1, 1) posterior, discount tuned on tuning tasks: the "
                                      "Bayes-optimal baseline for the training prior (arm probabilities U[0, 1])")
    if isinstance(base, TabularMDP):
        return _mdp_strategy(base, "oracle"), "knows the MDP", "finite-horizon optimal plan of the true MDP, every episode"
    if isinstance(base, PointNav):
        from sim.tasks import point_nav

        strat = PointNavOracle(base.task, float(point_nav._DT), float(point_nav._MAX_V))
        return strat, strat.label(), "knows the target; exactly optimal"
    return None


def known_references(env) -> dict[str, Agent]:
    """Classic strategies scored beside the policy on the same worlds (name -> agent): UCB1 and
    Thompson sampling (tuned) on bandits, PSRL on tabular MDPs, none elsewhere. Scoring them in the
    same evaluation makes the comparison paired."""
    from sim.tasks.bandit import BernoulliBandit
    from sim.tasks.tabular_mdp import TabularMDP

    base = env.unwrapped
    if isinstance(base, BernoulliBandit):
        from meta_rl.baselines.tuned import tuned_strategy

        return {kind: tuned_strategy(kind, base.num_arms, env.episodes_per_trial) for kind in ("ucb1", "thompson")}
    if isinstance(base, TabularMDP):
        return {"psrl": _mdp_strategy(base, "psrl")}
    return {}
