"""Evolved Policy Gradients (Houthooft et al. 2018): a loss function evolved by ES.

An EPG *loss* L_phi is a small network over the agent's recent experience. A freshly initialised
agent lives for ``lifetime_steps`` env steps in one world; every ``update_every`` steps it takes
``inner_minibatches`` Adam steps on ``(1 - alpha) * L_phi + alpha * L_PPO`` (the PPO bootstrap,
annealed to zero early in evolution). Its *fitness* is the mean return of the episodes its final
policy finishes in ``final_steps`` more steps. The config is :class:`meta_rl.configs.EPGConfig`. OpenES (evosax) moves phi towards the fitter losses; the population's lifetimes are
one ``vmap``ped call.

The loss network (:class:`EPGLoss`, the reference's ``Conv1DLoss``):

* every buffer row holds the normalised observation, the action sample, the reward, the done flag,
  the policy's output parameters (Gaussian mean and log std, or categorical probabilities) and an
  optional memory vector;
* a temporal convolution over the whole buffer (``buffer`` rows in time order, zero rows before the
  first step): Conv1D(k 6, s 5) -> 16 channels, Conv1D(k 4, s 2) -> 32, leaky ReLU (slope 0.2), the mean
  over time and a linear map give a *context* vector, tiled over the rows;
* a per-row MLP head (16 -> 1) reads the row, the context, the policy outputs and the memory; the
  loss is its mean over the rows of a minibatch.

Causality: a row's head reads only that row, the context and the memory. The context summarises the
whole buffer, which holds nothing later than the current step (the buffer is the past).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct

from meta_rl.configs import EPGConfig, PPOConfig
from meta_rl.learners import ScanTrainer
from meta_rl.losses import gae, ppo_loss
from meta_rl.networks import Policy, PolicySpec
from meta_rl.ppo import policy_spec as ppo_policy_spec
from meta_rl.rollout import Runner, Transition, collect, next_values
from sim.core import Env
from sim.normalize import update_stats
from sim.wrappers import VmapEnv, find_wrapper, with_mode

LEAKY_SLOPE = 0.2  # Chainer's leaky_relu default, which the reference uses


def _lrelu(x):
    return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


class EPGLoss(nn.Module):
    """The evolved loss network: ``(rows [B, L, F], pi [B, L, P], memory [M], idx [B, N]) -> scalar``.

    Attributes:
        conv: ``(channels, kernel, stride)`` per temporal convolution.
        context: width of the context vector.
        head: width of the per-row head's hidden layer.
    """

    conv: tuple[tuple[int, int, int], ...] = ((16, 6, 5), (32, 4, 2))
    context: int = 32
    head: int = 16

    def setup(self):
        self.convs = [nn.Conv(ch, (k,), strides=(s,), padding="VALID", name=f"conv_{i}")
                      for i, (ch, k, s) in enumerate(self.conv)]
        self.ctx = nn.Dense(self.context, name="context")
        self.head_0 = nn.Dense(self.head, name="head_0")
        self.head_1 = nn.Dense(1, name="head_1")

    def context_vector(self, rows: jax.Array, pi: jax.Array, memory: jax.Array) -> jax.Array:
        """[B, context] from the whole buffer (rows [B, L, F], pi [B, L, P]); the memory enters as data."""
        mem = jnp.broadcast_to(jax.lax.stop_gradient(memory), rows.shape[:2] + memory.shape[-1:])
        x = jnp.concatenate([rows, pi, mem], -1)
        for conv in self.convs:
            x = _lrelu(conv(x))
        return self.ctx(x.mean(-2))

    def row_losses(self, rows: jax.Array, pi: jax.Array, memory: jax.Array, context: jax.Array) -> jax.Array:
        """Per-row losses [..., N] of rows [..., N, F] with their policy outputs and the context [..., C]."""
        lead = rows.shape[:-1]
        x = jnp.concatenate([rows, jnp.broadcast_to(context[..., None, :], lead + context.shape[-1:]), pi,
                             jnp.broadcast_to(memory, lead + memory.shape[-1:])], -1)
        return self.head_1(_lrelu(self.head_0(x)))[..., 0]

    def __call__(self, rows, pi, memory, idx):
        """The loss: the mean head output over the rows ``idx`` ([B, N] indices into each env's buffer)."""
        context = self.context_vector(rows, pi, memory)
        take = lambda x: jnp.take_along_axis(x, idx[..., None], axis=1)  # noqa: E731
        return self.row_losses(take(rows), take(pi), memory, context).mean()


@struct.dataclass
class Buffer:
    """The newest ``L`` steps of every env, in time order (oldest first), zero rows before the first step.

    Attributes:
        obs: [L, B, O] observations (raw; normalised when the loss reads them).
        action: [L, B, A] action samples ``u`` (one-hot for discrete actions).
        reward: [L, B].
        done: [L, B] the episode ended after the step.
        valid: [L, B] the row holds a step (False in the zero padding).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    done: jax.Array
    valid: jax.Array

    @classmethod
    def create(cls, length: int, batch: int, obs_dim: int, action_dim: int) -> "Buffer":
        z = lambda *s: jnp.zeros((length, batch) + s, jnp.float32)  # noqa: E731
        return cls(z(obs_dim), z(action_dim), z(), z(), jnp.zeros((length, batch), bool))

    def push(self, obs, action, reward, done) -> "Buffer":
        """Append [T, B, ...] steps, dropping the oldest T."""
        t = obs.shape[0]
        cat = lambda old, new: jnp.concatenate([old[t:], new.astype(old.dtype)], 0)  # noqa: E731
        return Buffer(cat(self.obs, obs), cat(self.action, action), cat(self.reward, reward), cat(self.done, done),
                      cat(self.valid, jnp.ones(done.shape, bool)))


def policy_outputs(policy: Policy, params: Any, obs: jax.Array) -> jax.Array:
    """The policy's output parameters the loss reads: [..., 2A] (mean, log std) or [..., A] probabilities."""
    lead = obs.shape[:-1]
    flat = obs.reshape((-1, obs.shape[-1]))
    _, out, _ = policy.net.apply(params["net"], policy.init_carry(flat.shape[0]), policy.normalize(params, flat))
    if policy.spec.discrete:
        out = jax.nn.softmax(out, -1)
    else:
        out = jnp.concatenate(out, -1)
    return out.reshape(lead + out.shape[-1:])


def action_features(policy: Policy, u: jax.Array) -> jax.Array:
    """[..., A] the action as the loss reads it: one-hot for discrete actions, the sample otherwise."""
    if policy.spec.discrete:
        return jax.nn.one_hot(u, policy.spec.action_dim)
    return u


def loss_inputs(policy: Policy, params: Any, buf: Buffer) -> tuple[jax.Array, jax.Array]:
    """(rows [B, L, F], pi [B, L, P]) of the buffer under ``params``, zero in the padding."""
    mask = buf.valid[..., None].astype(jnp.float32)
    obs = policy.normalize(params, buf.obs) if policy.spec.normalize_obs else buf.obs
    rows = jnp.concatenate([obs, buf.action, buf.reward[..., None], buf.done[..., None]], -1) * mask
    pi = policy_outputs(policy, params, buf.obs) * mask
    return jnp.swapaxes(rows, 0, 1), jnp.swapaxes(pi, 0, 1)


@struct.dataclass
class AgentState:
    """One agent during its lifetime.

    Attributes:
        params: the policy's params (``net``, ``obs_norm``).
        memory: [M] the memory vector (trained by the inner loop).
        opt_state: the inner Adam's state over ``(net, memory)``.
        buf: the experience the loss reads.
        runner: where the agent's envs are.
        key: its random stream.
    """

    params: Any
    memory: jax.Array
    opt_state: Any
    buf: Buffer
    runner: Runner
    key: jax.Array


class Lifetime:
    """One agent's life under an evolved loss (pure; ``vmap`` it over the population).

    ``env`` is the env of one agent, batched ``(B,)``: in training the ``envs_per_lifetime`` envs of one
    world in the ``fixed`` mode (the caller tiles the world over them) with enough episodes per world
    for the lifetime and the final episodes; under ``proteus train ppo --loss RUN`` PPO's own env (a new
    world every episode) with ``B = num_envs``. Nothing here depends on ``B``.
    """

    def __init__(self, config: EPGConfig, env: Env, policy: Policy, loss_net: EPGLoss | None = None):
        self.config = config
        if len(env.batch_shape) != 1:
            raise ValueError(f"a lifetime's env must have one batch axis, got batch shape {env.batch_shape}")
        self.env, self.policy = env, policy
        self.loss_net = loss_net or EPGLoss()
        self.inner_opt = optax.adam(config.inner_lr)
        self.num_envs = int(env.batch_shape[0])

    # -- shapes ------------------------------------------------------------------------------------

    @property
    def row_dim(self) -> int:
        s = self.policy.spec
        return s.obs_dim + s.action_dim + 2

    @property
    def pi_dim(self) -> int:
        s = self.policy.spec
        return s.action_dim if s.discrete else 2 * s.action_dim

    def init_loss(self, key: jax.Array) -> Any:
        """Fresh loss-network parameters phi (the ES's starting mean)."""
        c = self.config
        n = c.update_every // c.inner_minibatches
        return self.loss_net.init(key, jnp.zeros((1, c.buffer, self.row_dim)), jnp.zeros((1, c.buffer, self.pi_dim)),
                                  jnp.zeros((c.memory,)), jnp.zeros((1, n), jnp.int32))

    # -- the inner loop ------------------------------------------------------------------------------

    def init_agent(self, key: jax.Array, world: Any = None, params: Any = None) -> AgentState:
        """A fresh agent (``params``: its policy, default a fresh initialisation) in ``world`` (``None``:
        the env samples its own)."""
        c, s = self.config, self.policy.spec
        k_net, k_reset, k_next = jax.random.split(key, 3)
        params = self.policy.init(k_net) if params is None else params
        memory = jnp.zeros((c.memory,), jnp.float32)
        b = self.num_envs
        if world is None:  # PPO's env (a new world every episode) draws its own first worlds
            k_reset, k_world = jax.random.split(k_reset)
            world = self.env.sample_params(k_world, getattr(self.env, "split", "train"))
        state = self.env.reset(k_reset, world)
        zeros = jnp.zeros((b,), jnp.float32)
        runner = Runner(state, {}, jnp.ones((b,), bool), zeros, zeros.astype(jnp.int32))
        buf = Buffer.create(c.buffer, b, s.obs_dim, s.action_dim)
        return AgentState(params, memory, self.inner_opt.init((params["net"], memory)), buf, runner, k_next)

    def epg_loss(self, phi: Any, trainable: tuple, params: Any, buf: Buffer, t_idx: jax.Array) -> jax.Array:
        """``L_phi`` on the rows ``t_idx`` [n] of the newest ``update_every`` (the rollout sits at the buffer's end)."""
        c = self.config
        net, memory = trainable
        rows, pi = loss_inputs(self.policy, {**params, "net": net}, buf)
        idx = jnp.broadcast_to(c.buffer - c.update_every + t_idx, (rows.shape[0], t_idx.shape[0]))
        return self.loss_net.apply(phi, rows, pi, memory, idx)

    def ppo_loss(self, trainable: tuple, params: Any, traj: Transition, adv: jax.Array, returns: jax.Array,
                 t_idx: jax.Array) -> jax.Array:
        """The PPO bootstrap (the core's clipped surrogate and value loss) on the rollout's rows ``t_idx``."""
        c = self.config
        p = {**params, "net": trainable[0]}
        take = lambda x: x[t_idx].reshape((-1,) + x.shape[2:])  # noqa: E731  [n * B, ...]
        obs, action = take(traj.obs), take(traj.action)
        _, dist, value = self.policy.apply(p, self.policy.init_carry(obs.shape[0]), obs)
        a = take(adv)
        a = (a - a.mean()) / (a.std() + 1e-8)
        loss, _ = ppo_loss(dist.log_prob(action), take(traj.log_prob), a, value, take(traj.value), take(returns),
                           dist.entropy(), clip_eps=c.clip_eps, vf_coef=0.5, ent_coef=0.0)
        return loss

    def inner_loss(self, phi: Any, trainable: tuple, params: Any, buf: Buffer, traj: Transition, adv: jax.Array,
                   returns: jax.Array, t_idx: jax.Array, alpha: jax.Array) -> tuple[jax.Array, dict]:
        """``(1 - alpha) * L_phi + alpha * L_PPO``; either term is skipped where its weight is 0 (``alpha``
        is the same for the whole population, so ``lax.cond`` stays a branch under ``vmap``)."""
        zero = jnp.zeros((), jnp.float32)
        epg = jax.lax.cond(alpha < 1.0, lambda: self.epg_loss(phi, trainable, params, buf, t_idx), lambda: zero)
        ppo = jax.lax.cond(alpha > 0.0, lambda: self.ppo_loss(trainable, params, traj, adv, returns, t_idx),
                           lambda: zero)
        return (1.0 - alpha) * epg + alpha * ppo, {"epg_loss": epg, "ppo_loss": ppo}

    def inner_update(self, phi: Any, a: AgentState, alpha: jax.Array) -> tuple[AgentState, dict]:
        """``update_every`` steps of the agent's envs, then ``inner_minibatches`` Adam steps."""
        c = self.config
        key, k_roll, k_perm = jax.random.split(a.key, 3)
        runner, traj, last_value = collect(self.env, self.policy, a.params, a.runner, k_roll, c.update_every)
        traj = jax.lax.stop_gradient(traj)
        buf = a.buf.push(traj.obs, action_features(self.policy, traj.action), traj.reward, traj.done)
        adv, returns = gae(traj.reward, traj.value, next_values(traj, last_value), traj.terminated, traj.done,
                           c.gamma, c.gae_lambda)
        perm = jax.random.permutation(k_perm, c.update_every).reshape(c.inner_minibatches, -1)

        def step(carry, t_idx):
            trainable, opt_state = carry
            (_, parts), g = jax.value_and_grad(self.inner_loss, argnums=1, has_aux=True)(
                phi, trainable, a.params, buf, traj, adv, returns, t_idx, alpha)
            finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(g)]))
            upd, new_opt = self.inner_opt.update(g, opt_state, trainable)
            new = optax.apply_updates(trainable, upd)
            keep = lambda n, o: jax.tree.map(lambda x, y: jnp.where(finite, x, y), n, o)  # noqa: E731
            return (keep(new, trainable), keep(new_opt, opt_state)), {**parts, "nonfinite": (~finite).astype(jnp.int32)}

        ((net, memory), opt_state), parts = jax.lax.scan(step, ((a.params["net"], a.memory), a.opt_state), perm)
        params = {**a.params, "net": net}
        if self.policy.spec.normalize_obs:
            params["obs_norm"] = update_stats(a.params["obs_norm"], traj.obs)
        finished = traj.done.sum()
        metrics = {"epg_loss": parts["epg_loss"].mean(), "ppo_loss": parts["ppo_loss"].mean(),
                   "nonfinite": parts["nonfinite"].sum(), "episodes": finished,
                   "episode_return": traj.finished_return.sum() / jnp.maximum(finished, 1)}
        return AgentState(params, memory, opt_state, buf, runner, key), metrics

    def final_return(self, params: Any, key: jax.Array, world: Any) -> jax.Array:
        """Mean return of the episodes the final policy (sampling, frozen) finishes in ``final_steps`` steps
        from a reset of the same world (0 if none finishes)."""
        b = self.num_envs
        k_reset, k_run = jax.random.split(key)
        zeros = jnp.zeros((b,), jnp.float32)
        runner = Runner(self.env.reset(k_reset, world), {}, jnp.ones((b,), bool), zeros, zeros.astype(jnp.int32))
        _, traj, _ = collect(self.env, self.policy, params, runner, k_run, self.config.final_steps)
        return traj.finished_return.sum() / jnp.maximum(traj.done.sum(), 1)

    def __call__(self, phi: Any, key: jax.Array, world: Any, alpha: jax.Array) -> tuple[jax.Array, dict]:
        """A whole lifetime: (fitness, per-update metrics [updates_per_lifetime])."""
        k_agent, k_final = jax.random.split(key)
        a = self.init_agent(k_agent, world)
        a, metrics = jax.lax.scan(lambda s, _: self.inner_update(phi, s, alpha), a, None,
                                  length=self.config.updates_per_lifetime)
        return self.final_return(a.params, k_final, world), metrics


# --------------------------------------------------------------------------------------------------
# The outer loop: OpenES over the loss network's parameters
# --------------------------------------------------------------------------------------------------


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: the ES's state (mean phi, Adam), the key, the generation."""

    es_state: Any
    key: jax.Array
    update: jax.Array


def _base_batched(env: Env) -> VmapEnv:
    return find_wrapper(env, VmapEnv, "epg needs a batched env (sim.make(..., batch_size=(population, "
                                      "envs_per_lifetime)))")


def make_es(c: EPGConfig, phi_template: Any):
    """OpenES (evosax) with antithetic sampling, centred-rank fitness shaping and the reference's outer Adam
    (beta1 = 0, step annealed linearly from ``outer_lr`` to ``outer_lr_final`` over half the generations).
    evosax minimises and scales its gradient by 1 / sigma: the L2 penalty is divided by sigma to match EPG's."""
    from evosax.algorithms import Open_ES

    lr = optax.linear_schedule(c.outer_lr, c.outer_lr_final, max(1, c.num_updates // 2))
    opt = optax.chain(optax.add_decayed_weights(c.outer_l2 / c.sigma), optax.adam(lr, b1=0.0))
    return Open_ES(c.population, phi_template, use_antithetic_sampling=True, optimizer=opt,
                   std_schedule=optax.constant_schedule(c.sigma))


def policy_spec(c: EPGConfig, env: Env) -> PolicySpec:
    """The agents' policy: separate actor and critic MLPs of widths ``hidden`` (the PPO bootstrap's value
    loss must not move the actor's features, as in the reference's separate V network), normalised
    observations, a state-independent log std starting at 0."""
    return PolicySpec.for_env(env, "mlp", hidden=(), heads=tuple(c.hidden), normalize_obs=True, init_log_std=0.0)


class Trainer(ScanTrainer):
    """EPG: each update is one ES generation of ``population`` lifetimes (one ``vmap``ped call).

    The env is batched ``(population, envs_per_lifetime)``; every lifetime gets its own world, and the two
    members of an antithetic pair share their world and random stream (common random numbers). The ES
    ranks each member by its fitness minus its pair's mean: what the perturbation changed in that world.
    """

    def __init__(self, config: EPGConfig, env: Env, split: str = "train"):
        self.config = c = config
        want = (c.population, c.envs_per_lifetime)
        if env.batch_shape != want:
            raise ValueError(f"env batch {env.batch_shape} does not match (population, envs_per_lifetime) = {want}")
        self.env, self.split = env, split
        outer = _base_batched(env)
        # one world for the whole lifetime and the final episodes (an episode lasts at least one step)
        self.task_env = with_mode(outer.env, "fixed", c.lifetime_steps + c.final_steps, split=split)
        self.policy = Policy(policy_spec(c, env))
        self.lifetime = Lifetime(c, self.task_env, self.policy)
        self.es = make_es(c, self.lifetime.init_loss(jax.random.PRNGKey(0)))

    def init(self, key: jax.Array) -> TrainState:
        k_phi, k_es, k_next = jax.random.split(key, 3)
        es_state = self.es.init(k_es, self.lifetime.init_loss(k_phi), self.es.default_params)
        # evosax starts some fields as Python scalars (weak types): fix them so a resumed state compiles once
        es_state = jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)) if hasattr(x, "dtype") else x, es_state)
        return TrainState(es_state, k_next, jnp.zeros((), jnp.int32))

    def alpha(self, generation: jax.Array) -> jax.Array:
        """The PPO bootstrap's weight: 1 -> 0 linearly over the first ``ppo_anneal`` of the generations."""
        c = self.config
        span = c.ppo_anneal * c.num_updates
        if span <= 0:
            return jnp.zeros((), jnp.float32)
        return jnp.clip(1.0 - generation / span, 0.0, 1.0).astype(jnp.float32)

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        c = self.config
        half = c.population // 2
        key, k_ask, k_world, k_life, k_tell = jax.random.split(ts.key, 5)
        pop, es_state = self.es.ask(k_ask, ts.es_state, self.es.default_params)
        worlds = self.env.sample_params(k_world, self.split)  # [P, B, ...]: one world per pair, tiled over B
        pair = lambda x: jnp.concatenate([x[:half], x[:half]], 0)  # noqa: E731
        worlds = jax.tree.map(lambda x: pair(jnp.broadcast_to(x[:, :1], x.shape)), worlds)
        keys = pair(jax.random.split(k_life, c.population))
        alpha = self.alpha(ts.update)
        fitness, m = jax.vmap(self.lifetime, in_axes=(0, 0, 0, None))(pop, keys, worlds, alpha)
        # the pair shares its world: rank on each member's margin over its antithetic twin, so the ES sees
        # the perturbation's effect rather than which worlds were easy (evosax minimises: negated)
        margin = fitness - pair(0.5 * (fitness[:half] + fitness[half:]))
        es_state, _ = self.es.tell(k_tell, pop, jnp.where(jnp.isfinite(margin), -margin, jnp.inf), es_state,
                                   self.es.default_params)
        tail = max(1, c.updates_per_lifetime // 8)  # the lifetimes' last eighth: episodes end there
        ret, eps = m["episode_return"][:, -tail:], m["episodes"][:, -tail:]
        metrics = {"fitness": fitness.mean(), "fitness_max": fitness.max(), "alpha": alpha,
                   "nonfinite": m["nonfinite"].sum() + (~jnp.isfinite(fitness)).sum(),
                   "episode_return": (ret * eps).sum() / jnp.maximum(eps.sum(), 1), "epg_loss": m["epg_loss"].mean()}
        return TrainState(es_state, key, ts.update + 1), metrics

    def agent_params(self, ts: TrainState) -> Any:
        """The evolved loss: the ES's mean phi."""
        return self.es.get_mean(ts.es_state)


def make_train(config: EPGConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (phi, metrics)`` (DESIGN.md's learner contract)."""
    return Trainer(config, env, split)


def init_agent_params(c: EPGConfig, env: Env, key: jax.Array) -> Any:
    """A template of what an EPG run saves: the loss network's parameters phi."""
    return Lifetime(c, _one_env(env, c), Policy(policy_spec(c, env))).init_loss(key)


def _one_env(env: Env, c: EPGConfig) -> Env:
    """An env with one batch axis ``(envs_per_lifetime,)`` and ``env``'s spaces (shapes only)."""
    if len(env.batch_shape) == 1:
        return env
    e = env
    while e.batch_shape:  # down to the unbatched env
        e = e.env
    return VmapEnv(e, (c.envs_per_lifetime,))


def make_agent(c: EPGConfig, env: Env, params: Any, deterministic: bool):
    """An EPG run holds a loss, not a policy: refused with what to do instead."""
    raise ValueError("an epg run holds an evolved loss, not a policy: `proteus train ppo --env ENV --loss RUN` trains "
                     "an agent with it (that agent evaluates and exports like any PPO policy), and `proteus eval-loss "
                     "RUN` scores fresh agents' lifetimes under it on held-out worlds")


# --------------------------------------------------------------------------------------------------
# Scoring a loss: fresh agents' lifetimes in given worlds (``proteus eval-loss``)
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def lifetime_env(env_id: str, backend: str, c: EPGConfig, split: str = "train") -> Env:
    """The env of one lifetime: ``envs_per_lifetime`` envs of one world (``fixed`` mode), kept for the
    whole lifetime and the final episodes (cached: one env object per arguments, so the compiled
    lifetimes of :func:`score_lifetimes` are shared)."""
    import sim

    return sim.make(env_id, batch_size=c.envs_per_lifetime, mode="fixed", backend=backend, split=split,
                    episodes_per_trial=c.lifetime_steps + c.final_steps)


def score_lifetimes(c: EPGConfig, env: Env, phi: Any, worlds: Any, key: jax.Array, alpha: float) -> dict:
    """Fresh agents' lifetimes, one per world of ``worlds`` (leaves [W, ...], one world each), under
    ``(1 - alpha) * L_phi + alpha * L_PPO`` (``alpha = 0``: the evolved loss alone, ``1``: PPO alone).

    ``env`` is :func:`lifetime_env`'s. The same ``key`` gives every loss the same agent initialisations
    and random streams (common random numbers). Returns numpy arrays: ``final`` [W] the fitness (the
    final policy's mean episode return), ``returns`` and ``episodes`` [W, updates] per inner update.
    """
    import numpy as np

    policy = Policy(policy_spec(c, env))
    life = Lifetime(c, env, policy)
    e = c.envs_per_lifetime
    tiled = jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], e) + x.shape[1:]), worlds)
    w = jax.tree.leaves(worlds)[0].shape[0]
    keys = jax.random.split(key, w)
    final, m = _scorer(life)(phi, keys, tiled, jnp.float32(alpha))
    return {"final": np.asarray(final, np.float64), "returns": np.asarray(m["episode_return"], np.float64),
            "episodes": np.asarray(m["episodes"], np.float64)}


_SCORERS: dict = {}


def _scorer(life: Lifetime):
    """``jit(vmap(lifetime))`` cached per (config, env) so repeated scoring compiles once."""
    k = (life.config, id(life.env))
    if k not in _SCORERS:  # the env is kept with its function, so its id is not reused while cached
        _SCORERS[k] = (life.env, jax.jit(jax.vmap(life, in_axes=(None, 0, 0, None))))
    return _SCORERS[k][1]


# --------------------------------------------------------------------------------------------------
# Training with an evolved loss: ``proteus train ppo --loss RUN``
# --------------------------------------------------------------------------------------------------


def read_loss(run_dir: str | Path) -> tuple[EPGConfig, Any, str]:
    """``(config, phi, env id)`` of an epg run folder's evolved loss; errors name the path."""
    from proteus.runs import read_agent
    from proteus.runspec import read_run_spec

    if (algo := read_run_spec(Path(run_dir)).algo) != "epg":
        raise ValueError(f"--loss {run_dir} is a {algo} run; it must be an epg run (an evolved loss)")
    spec, _, phi, _ = read_agent(Path(run_dir))
    return spec.config, phi, spec.env


@struct.dataclass
class LossTrainState:
    """The agent learning from an evolved loss, and the updates done."""

    agent: AgentState
    update: jax.Array

    @property
    def params(self):
        """The policy's params (what ``ScanTrainer.agent_params`` saves)."""
        return self.agent.params


class LossTrainer(ScanTrainer):
    """PPO's run shape (``num_envs`` envs, ``num_steps`` steps per update, a new world every episode) with
    the agent learning from an epg run's evolved loss, exactly as in that run's lifetimes: every
    ``update_every`` steps, ``inner_minibatches`` Adam steps on ``L_phi`` over its recent experience.
    The policy is PPO's (``PPOConfig`` network fields), so the agent evaluates and exports as a PPO policy.
    """

    def __init__(self, config: PPOConfig, env: Env, split: str = "train"):
        self.config = config
        self.loss_config, self.phi, loss_env = read_loss(config.loss)
        lc = self.loss_config
        if config.num_steps % lc.update_every:
            raise ValueError(f"num_steps={config.num_steps} must be a multiple of the loss run's update_every "
                             f"({lc.update_every}): the agent updates every {lc.update_every} steps")
        self.env, self.split = env, split
        self.policy = Policy(ppo_policy_spec(config, env))
        self.lifetime = Lifetime(lc, env, self.policy)
        want = jax.tree.map(jnp.shape, self.phi)
        have = jax.tree.map(jnp.shape, self.lifetime.init_loss(jax.random.PRNGKey(0)))
        if want != have:
            s = self.policy.spec
            raise ValueError(f"--loss {config.loss} was evolved on {loss_env!r}, whose observation and action sizes "
                             f"differ from those of {env.id!r} (obs {s.obs_dim}, action {s.action_dim}"
                             f"{', discrete' if s.discrete else ''}): the loss network reads rows of that size")
        self.inner = config.num_steps // lc.update_every

    def init(self, key: jax.Array) -> LossTrainState:
        return LossTrainState(self.lifetime.init_agent(key), jnp.zeros((), jnp.int32))

    def update(self, ts: LossTrainState) -> tuple[LossTrainState, dict]:
        zero = jnp.zeros((), jnp.float32)
        a, m = jax.lax.scan(lambda s, _: self.lifetime.inner_update(self.phi, s, zero), ts.agent, None,
                            length=self.inner)
        eps = m["episodes"].sum()
        metrics = {"epg_loss": m["epg_loss"].mean(), "nonfinite": m["nonfinite"].sum(), "episodes": eps,
                   "episode_return": jnp.where(eps > 0, (m["episode_return"] * m["episodes"]).sum() /
                                               jnp.maximum(eps, 1), jnp.nan)}
        return LossTrainState(a, ts.update + 1), metrics
