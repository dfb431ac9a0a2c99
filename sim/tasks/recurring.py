"""Recurring-task bandits, the task of the episodic LSTM (Ritter et al. 2018, "Been there, done that").

A world is a *lifetime* of ``episodes`` bandit episodes of ``pulls`` pulls each, played as one env
episode of ``episodes * pulls`` steps (so a recurrent agent's carry, and an episodic memory in it,
spans the lifetime: the registry's trial is this one episode). Each bandit episode has ``arms``
Bernoulli arms with probabilities ``U[0, 1]`` and a *context cue*: a random binary vector of
``cue_dim`` elements that identifies the task. The first episode is a new task; each later one is,
with probability ``recur_prob`` (a world parameter), a task already seen in this lifetime (uniformly
one of the earlier episodes': the same arms and the same cue), else a new one. Tasks never recur
across lifetimes, so no weights can memorize them: only what the agent keeps within the lifetime can.

* Observation: ``cue.0 .. cue.{cue_dim-1}`` (the current episode's cue) and ``episode_start`` (1 on
  the first pull of each bandit episode, else 0). The trial wrapper adds the previous action,
  reward and done (and the elapsed fraction of the lifetime).
* Actions: ``arm_0 .. arm_{arms-1}``; a pull pays 1 with the arm's probability.
* The env episode ends (``terminated``) after the lifetime's last pull.
* ``metrics``: ``regret`` (the best arm's probability minus the pulled one's), ``recurring`` (the
  episode's task was seen before in this lifetime) and ``pull`` (the pull's index in its episode):
  what the recurring-task evaluation reads (regret over the first pulls of recurring against novel
  episodes).

Splits move how often tasks recur (:class:`randomization.ranges.SplitRange` ``recur_prob``):
``train`` [0.25, 0.75] minus (0.45, 0.55); ``interp`` (0.45, 0.55); ``extrap`` (0.75, 0.9].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from randomization.ranges import SplitRange, check_split
from sim.core import Box, Discrete, Env, new_state


@struct.dataclass
class LifetimeParams:
    """One lifetime (any leading batch shape).

    Attributes:
        arm_probs: ``[E, arms]`` each episode's arm probabilities.
        cue: ``[E, cue_dim]`` each episode's context cue (0/1).
        recurring: ``[E]`` the episode's task was seen earlier in the lifetime.
        recur_prob: ``[]`` the lifetime's recurrence probability.
    """

    arm_probs: jax.Array
    cue: jax.Array
    recurring: jax.Array
    recur_prob: jax.Array


class RecurringBandit(Env):
    family = "recurring-bandit"

    def __init__(self, arms: int = 5, pulls: int = 10, episodes: int = 20, cue_dim: int = 16):
        for name, v, lo in (("arms", arms, 2), ("pulls", pulls, 1), ("episodes", episodes, 1), ("cue_dim", cue_dim, 1)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"RecurringBandit {name} must be an integer >= {lo}, got {v!r}")
        self.arms, self.pulls, self.episodes, self.cue_dim = arms, pulls, episodes, cue_dim
        self.id = f"recurring-bandit-k{arms}-n{pulls}-e{episodes}"
        self.episode_length = episodes * pulls
        names = tuple(f"cue.{i}" for i in range(cue_dim)) + ("episode_start",)
        self.observation_space = Box(names=names, low=(0.0,) * (cue_dim + 1), high=(1.0,) * (cue_dim + 1))
        self.action_space = Discrete(names=tuple(f"arm_{i}" for i in range(arms)))
        self.ranges = {"recur_prob": SplitRange("recur_prob", train=(0.25, 0.75), interp=(0.45, 0.55),
                                                extrap=((0.75, 0.9),))}

    def default_ranges(self):
        return {n: r.bounds() for n, r in self.ranges.items()}

    def sample_params(self, key, split="train", ranges=None):
        check_split(split)
        k_rec, k_probs, k_cue, k_draw, k_src = jax.random.split(key, 5)
        recur = self.ranges["recur_prob"].sample(k_rec, split, (), None if ranges is None else ranges["recur_prob"])
        fresh_probs = jax.random.uniform(k_probs, (self.episodes, self.arms), jnp.float32)
        fresh_cue = jax.random.bernoulli(k_cue, 0.5, (self.episodes, self.cue_dim)).astype(jnp.float32)
        draw = jax.random.uniform(k_draw, (self.episodes,)) < recur
        src_u = jax.random.uniform(k_src, (self.episodes,))

        def one(carry, e):
            probs, cue = carry
            again = draw[e] & (e > 0)
            j = jnp.minimum(jnp.floor(src_u[e] * e).astype(jnp.int32), jnp.maximum(e - 1, 0))  # an earlier episode
            probs = probs.at[e].set(jnp.where(again, probs[j], fresh_probs[e]))
            cue = cue.at[e].set(jnp.where(again, cue[j], fresh_cue[e]))
            return (probs, cue), again

        (probs, cue), recurring = jax.lax.scan(one, (fresh_probs, fresh_cue), jnp.arange(self.episodes))
        return LifetimeParams(probs, cue, recurring, jnp.asarray(recur, jnp.float32))

    def param_values(self, params):
        return {"recur_prob": params.recur_prob}

    def param_ranges(self):
        return dict(self.ranges)

    def split_description(self):
        return {s: f"recur_prob {self.ranges['recur_prob'].describe()[s]}" for s in ("train", "interp", "extrap")}

    def _obs(self, params, t):
        e = jnp.minimum(t // self.pulls, self.episodes - 1)
        start = (t % self.pulls == 0).astype(jnp.float32)
        return jnp.concatenate([params.cue[e], start[None]])

    def reset(self, key, params):
        t = jnp.zeros((), jnp.int32)
        metrics = {"regret": jnp.zeros(()), "recurring": jnp.zeros((), bool), "pull": t}
        return new_state(self._obs(params, t), params, t, key, metrics=metrics)

    def step(self, state, action):
        action = self.check_action(action)
        t = state.env_state
        e = t // self.pulls
        key, sub = jax.random.split(state.key)
        probs = state.params.arm_probs[e]
        p = probs[action]
        reward = (jax.random.uniform(sub) < p).astype(jnp.float32)
        t1 = t + 1
        metrics = {"regret": jnp.max(probs) - p, "recurring": state.params.recurring[e], "pull": t % self.pulls}
        return state.replace(obs=self._obs(state.params, t1), reward=reward, terminated=t1 >= self.episode_length,
                             truncated=jnp.zeros((), bool), env_state=t1, key=key, metrics=metrics)
