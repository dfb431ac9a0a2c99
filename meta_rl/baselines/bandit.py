"""Classic Bernoulli-bandit strategies, vectorized over a batch of tasks.

They run through the very trial env the learners use (:func:`meta_rl.evaluate.run_trials`) and learn
only from what an RL² agent sees: the previous action (one-hot) and previous reward in the
observation. Each keeps per-arm success and pull counts in its carry.

* ``random``: uniform arm.
* ``greedy``: highest posterior mean under a uniform Beta(1, 1) prior.
* ``epsilon_greedy``: greedy, but a uniform arm with probability ``epsilon``.
* ``ucb1``: untried arms first, then ``mean + c * sqrt(2 ln t / n_i)`` (Auer et al. 2002) with the
  exploration constant ``c`` tuned; ``prior`` adds pseudo-counts of ``prior`` successes and ``prior``
  failures to every arm (then no arm is "untried").
* ``thompson``: sample each arm's Beta(1 + s, 1 + f) posterior, pull the best sample.
* ``gittins``: the Gittins index of the Beta(1 + s, 1 + f) posterior for discount ``gamma`` (exact up
  to the calibration grid and truncation of :mod:`meta_rl.baselines.gittins`), ``gamma`` tuned.

Ties are broken uniformly at random.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from meta_rl.baselines.gittins import gittins_table
from randomization.sampling import beta_ge1
from meta_rl.agent import Agent

KINDS = ("random", "greedy", "epsilon_greedy", "ucb1", "thompson", "gittins")


@struct.dataclass
class BanditCarry:
    successes: jax.Array  # [B, k]
    pulls: jax.Array  # [B, k]


@struct.dataclass
class BanditStrategy(Agent):
    """One classic strategy with its hyperparameters (a pytree: hyperparameters are traced leaves,
    so one compiled evaluation serves a whole tuning grid). Build it with :func:`make_strategy`.

    Attributes:
        kind: one of ``KINDS`` (static).
        num_arms: k (static).
        max_pulls: trial length n (static; sizes the Gittins table).
        epsilon: exploration rate of ``epsilon_greedy``.
        c: exploration constant of ``ucb1``.
        prior: pseudo-counts of ``ucb1``.
        gamma: discount of the ``gittins`` index.
        table: the Gittins index table for ``gamma`` (``gittins`` only).
    """

    kind: str = struct.field(pytree_node=False)
    num_arms: int = struct.field(pytree_node=False)
    max_pulls: int = struct.field(pytree_node=False)
    epsilon: float = 0.1
    c: float = 1.0
    prior: float = 0.0
    gamma: float = 0.9
    table: jax.Array | None = None

    def label(self) -> str:
        extra = {
            "epsilon_greedy": f"ε={float(self.epsilon):g}",
            "ucb1": f"c={float(self.c):g}, prior={float(self.prior):g}",
            "gittins": f"γ={float(self.gamma):g}",
        }.get(self.kind)
        return f"{self.kind} ({extra})" if extra else self.kind

    def initial_state(self, batch: int) -> BanditCarry:
        z = jnp.zeros((batch, self.num_arms), jnp.float32)
        return BanditCarry(successes=z, pulls=z)

    def act(self, carry: BanditCarry, obs: jax.Array, key: jax.Array):
        k = self.num_arms
        # obs = [bias, prev_action one-hot (k), prev_reward, prev_done]; all zero at trial start
        prev_action = obs[:, 1 : 1 + k]
        prev_reward = obs[:, 1 + k]
        s = carry.successes + prev_action * prev_reward[:, None]
        n = carry.pulls + prev_action
        carry = BanditCarry(successes=s, pulls=n)
        k_tie, k_explore, k_arm, k_sample = jax.random.split(key, 4)
        shape = s.shape
        f = n - s
        if self.kind == "random":
            score = jnp.zeros(shape)
        elif self.kind in ("greedy", "epsilon_greedy"):
            score = (s + 1.0) / (n + 2.0)
        elif self.kind == "ucb1":
            t = jnp.maximum(n.sum(-1, keepdims=True) + self.prior * 2 * k, 1.0)
            m = n + 2 * self.prior
            mean = (s + self.prior) / jnp.maximum(m, 1e-9)
            bonus = self.c * jnp.sqrt(2.0 * jnp.log(t) / jnp.maximum(m, 1e-9))
            score = jnp.where(m > 0, mean + bonus, jnp.inf)
        elif self.kind == "thompson":
            score = beta_ge1(k_sample, 1.0 + s, 1.0 + f)
        else:  # gittins
            table = self.table
            si = jnp.clip(s.astype(jnp.int32), 0, self.max_pulls)
            fi = jnp.clip(f.astype(jnp.int32), 0, self.max_pulls)
            score = table[1 + si, 1 + fi]
        # uniform tie-break: lexicographic on (score, random)
        noise = jax.random.uniform(k_tie, shape)
        best = jnp.max(score, -1, keepdims=True)
        action = jnp.argmax(jnp.where(score >= best, noise + 1.0, noise - 1.0), -1).astype(jnp.int32)
        if self.kind == "epsilon_greedy":
            explore = jax.random.uniform(k_explore, (shape[0],)) < self.epsilon
            action = jnp.where(explore, jax.random.randint(k_arm, (shape[0],), 0, k), action)
        return action, carry

    def policy_step(self, carry: BanditCarry, obs: jax.Array):
        return self.act(carry, obs, jax.random.key(0))



HYPERPARAMETERS = {"random": (), "greedy": (), "thompson": (), "epsilon_greedy": ("epsilon",), "ucb1": ("c", "prior"), "gittins": ("gamma",)}


def make_strategy(kind: str, num_arms: int, max_pulls: int, **hparams: float) -> BanditStrategy:
    """Build a validated strategy; unknown kinds or hyperparameters raise naming the valid ones."""
    if kind not in KINDS:
        raise ValueError(f"unknown bandit strategy {kind!r}; expected one of {', '.join(KINDS)}")
    bad = set(hparams) - set(HYPERPARAMETERS[kind])
    if bad:
        raise ValueError(f"{kind} takes hyperparameters {HYPERPARAMETERS[kind] or '()'}, got {sorted(bad)}")
    if int(num_arms) < 2 or int(max_pulls) < 1:
        raise ValueError(f"need num_arms >= 2 and max_pulls >= 1, got {num_arms}, {max_pulls}")
    if not 0.0 <= hparams.get("epsilon", 0.1) <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {hparams['epsilon']}")
    for name in ("c", "prior"):
        if hparams.get(name, 0.0) < 0:
            raise ValueError(f"{name} must be >= 0, got {hparams[name]}")
    table = None
    if kind == "gittins":
        table = jnp.asarray(gittins_table(float(hparams.get("gamma", 0.9)), int(max_pulls)))
    return BanditStrategy(kind=kind, num_arms=int(num_arms), max_pulls=int(max_pulls), table=table, **hparams)
