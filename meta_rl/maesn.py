"""MAESN (Gupta et al. 2018): meta-learned latent exploration spaces, on MAML's trainer.

The policy ``pi(a | s, z)`` (:class:`LatentPolicy`: a Gaussian MLP over the observation and ``z``)
reads a latent drawn *once per episode*, ``z = mu + sigma * eps``: the noise that explores is a whole
episode's consistent behaviour, not per-step jitter. Each of ``num_tasks`` fixed training tasks has
its own latent distribution ``(mu_i, log sigma_i)``.

One meta-iteration (:meth:`Trainer.update`), ``meta_batch`` of the training tasks ``vmap``ped:

1. Rollouts of the task with ``z ~ N(mu_i, sigma_i)`` per episode; linear-baseline GAE advantages
   (:func:`meta_rl.maml.task_advantages`).
2. ``inner_steps`` policy-gradient steps on the latent (:func:`adapt_latent`): the surrogate's
   gradient with respect to ``mu`` and ``log sigma`` through the held ``eps`` of each episode
   (reparameterized), scaled by per-dimension step sizes the outer step learns; the policy's weights
   move too when ``adapt_policy``.
3. TRPO (:func:`meta_rl.maml.trpo_step`) on the post-adaptation surrogate as a function of the
   policy's weights, every training task's latent and the step sizes, through the inner steps, plus
   ``kl_weight * KL(N(mu_i, sigma_i) || N(0, I))``: a new task starts from the prior.

``latent_baseline=True`` trains the latent-space baseline of the paper: the same latents and policy
trained by TRPO on the pre-update episodes, no inner step.

The agent (:class:`MAESNAgent`) starts every world at the prior, draws ``eps`` at each episode's
first step, and after every ``adapt_episodes`` episodes takes the inner step on them. The exported
policy (:class:`LatentPolicyAgent`) takes ``z`` as a state input (``z_in``, initial value the prior's
mean, 0): a robot sets it per episode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import jax
import jax.numpy as jnp
from flax import struct

from meta_rl import maml
from meta_rl.agent import Agent
from meta_rl.configs import MAESNConfig
from meta_rl.maml import MAMLAgent, episode_advantages
from meta_rl.networks import Policy, PolicySpec
from sim.core import Env, draw_params
from sim.normalize import update_stats
from sim.wrappers import VmapEnv

LATENT_PREFIX = "latent.z"  # the policy network's names for the latent inputs (after the observation's)


class LatentPolicy:
    """A Gaussian MLP over ``[obs, z]``: :class:`~meta_rl.networks.Policy`'s interface for
    :func:`~meta_rl.rollout.collect`, with ``params["z"]`` [B, latent_dim] the rows' latents.

    Attributes:
        env_spec: the policy as the env sees it (its observation names, actions).
        spec: the network's (the observation names plus ``latent.z0`` ...).
        policy: the :class:`Policy` over ``spec``.
    """

    def __init__(self, env_spec: PolicySpec, latent_dim: int):
        self.env_spec = env_spec
        self.latent_dim = int(latent_dim)
        names = tuple(f"{LATENT_PREFIX}{i}" for i in range(self.latent_dim))
        self.spec = dataclasses.replace(env_spec, obs_names=env_spec.obs_names + names)
        self.policy = Policy(self.spec)

    def init_carry(self, batch: int) -> dict:
        return {}

    def init(self, key: jax.Array) -> dict:
        return self.policy.init(key)

    def apply(self, params, carry, obs):
        """``obs`` the env's (its first ``env_spec.obs_dim`` elements are read), ``params["z"]`` [B, L]."""
        obs = self.env_spec.select_obs(obs).astype(jnp.float32)
        x = jnp.concatenate([obs, params["z"].astype(jnp.float32)], -1)
        return self.policy.apply(params, carry, x)

    def env_action(self, u):
        return self.policy.env_action(u)

    def deterministic(self, dist):
        return self.policy.deterministic(dist)


def latent_z(latent: dict, eps: jax.Array) -> jax.Array:
    """``mu + exp(log_sigma) * eps`` (any leading axes of ``eps`` over a [L] latent)."""
    return latent["mu"] + jnp.exp(latent["log_sigma"]) * eps


def prior_kl(latent: dict) -> jax.Array:
    """``KL(N(mu, sigma^2) || N(0, I))`` summed over the latent's last axis: ``0.5 * sum(mu^2 +
    sigma^2 - 1 - 2 log sigma)``."""
    mu, ls = latent["mu"], latent["log_sigma"]
    return 0.5 * jnp.sum(mu * mu + jnp.exp(2.0 * ls) - 1.0 - 2.0 * ls, -1)


@struct.dataclass
class LatentBatch(maml.Batch):
    """:class:`meta_rl.maml.Batch` plus ``eps`` [..., L]: the latent noise of each sample's episode."""

    eps: jax.Array


def log_prob(lp: LatentPolicy, net: Any, obs_norm: Any, latent: dict, batch: LatentBatch) -> jax.Array:
    """log pi(action | obs, z) with ``z`` rebuilt from ``latent`` and the batch's ``eps`` (so it is
    differentiable in the latent)."""
    z = latent_z(latent, batch.eps)
    _, dist, _ = lp.apply({"net": net, "obs_norm": obs_norm, "z": z}, {}, batch.obs)
    return dist.log_prob(batch.action)


def adapt_latent(lp: LatentPolicy, x: dict, obs_norm: Any, step: dict, batch: LatentBatch, estimator: str,
                 adapt_policy: bool, first_order: bool) -> dict:
    """One inner step on ``x = {"net", "latent"}``: ``latent - step ⊙ grad L_in`` (per dimension, for
    ``mu`` and ``log_sigma``) and, when ``adapt_policy``, ``net - step["net"] * grad L_in``. ``L_in`` is
    :func:`meta_rl.maml.inner_loss`'s surrogate (``maml`` or ``lvc``) with ``z`` reparameterized.
    Differentiable in ``x`` and ``step`` unless ``first_order``."""
    def loss(net, latent):
        lp_ = log_prob(lp, net, obs_norm, latent, batch)
        n = jnp.maximum(batch.mask.sum(), 1.0)
        if estimator == "lvc":
            return -(jnp.exp(lp_ - batch.log_prob) * batch.adv * batch.mask).sum() / n
        return -(lp_ * batch.adv * batch.mask).sum() / n

    g_net, g_lat = jax.grad(loss, argnums=(0, 1))(x["net"], x["latent"])
    if first_order:
        g_net, g_lat = jax.lax.stop_gradient((g_net, g_lat))
    latent = {k: x["latent"][k] - step[k] * g_lat[k] for k in ("mu", "log_sigma")}
    net = x["net"]
    if adapt_policy:
        net = jax.tree.map(lambda p, d: p - step["net"] * d, net, g_net)
    return {"net": net, "latent": latent}


def adapt_on_episodes(lp: LatentPolicy, x: dict, obs_norm: Any, step: dict, episodes: dict, c: MAESNConfig) -> dict:
    """The test-time inner step (first order) on one world's recorded episodes: ``obs`` [E, H, D],
    ``action`` [E, H, A] (the samples ``u``), ``reward`` and ``mask`` [E, H], ``eps`` [E, L] the latent
    noise each episode was drawn with; they come from ``x``'s policy and latent."""
    obs, u = episodes["obs"].astype(jnp.float32), episodes["action"].astype(jnp.float32)
    mask = episodes["mask"].astype(jnp.float32)
    adv = episode_advantages(episodes["reward"], mask, obs, c.gamma, c.gae_lambda, c.horizon)
    eps = jnp.broadcast_to(episodes["eps"][:, None, :], obs.shape[:2] + episodes["eps"].shape[-1:])
    batch = LatentBatch(obs, u, jnp.zeros_like(adv), adv, mask, eps)
    behaviour = jax.lax.stop_gradient(log_prob(lp, x["net"], obs_norm, x["latent"], batch))
    batch = batch.replace(log_prob=behaviour)
    return adapt_latent(lp, x, obs_norm, step, batch, c.estimator, c.adapt_policy, True)


def policy_spec(c: MAESNConfig, env: Env) -> PolicySpec:
    """The policy as the env sees it (a Gaussian MLP over the env's observation; the latent is the
    agent's state, see :class:`LatentPolicy`)."""
    return maml.policy_spec(c, env)


def _steps(c: MAESNConfig) -> dict:
    """The initial step sizes: ``latent_lr`` per latent dimension, ``inner_lr`` for the weights."""
    L = c.latent_dim
    return {"mu": jnp.full((L,), c.latent_lr, jnp.float32), "log_sigma": jnp.full((L,), c.latent_lr, jnp.float32),
            "net": jnp.asarray(c.inner_lr, jnp.float32)}


@struct.dataclass
class TrainState(maml.TrainState):
    """:class:`meta_rl.maml.TrainState` plus the key that draws the fixed training tasks."""

    task_key: jax.Array = None


class Trainer(maml.Trainer):
    """MAESN with MAML's TRPO outer step (see the module docstring)."""

    def __init__(self, config: MAESNConfig, env: Env, split: str = "train"):
        super().__init__(config, env, split)
        self.lp = LatentPolicy(self.spec, config.latent_dim)
        self.world_env = maml._base_batched(env).env.env  # one world, unbatched
        if isinstance(self.world_env, VmapEnv):
            raise ValueError("maesn needs an env batched as (meta_batch, rollouts_per_task)")

    def init(self, key: jax.Array) -> TrainState:
        c = self.config
        k_net, k_tasks, k_next = jax.random.split(key, 3)
        params = self.lp.init(k_net)
        N, L = c.num_tasks, c.latent_dim
        params["latent"] = {"mu": jnp.zeros((N, L), jnp.float32), "log_sigma": jnp.zeros((N, L), jnp.float32)}
        params["step"] = _steps(c)
        return TrainState(params, k_next, jnp.zeros((), jnp.int32), {}, k_tasks)

    def task_worlds(self, task_key: jax.Array) -> Any:
        """The ``num_tasks`` fixed training worlds [N, ...] (drawn from ``task_key``, the same every call)."""
        keys = jax.random.split(task_key, self.config.num_tasks)
        return jax.vmap(lambda k: draw_params(self.world_env, k, self.split))(keys)

    # -- one task ------------------------------------------------------------------------------------

    def _latent_rollout(self, net, obs_norm, latent, world, key) -> tuple[LatentBatch, jax.Array]:
        c = self.config
        k_eps, k_reset, k_run = jax.random.split(key, 3)
        eps = jax.random.normal(k_eps, (c.rollouts_per_task, c.latent_dim), jnp.float32)
        z = jax.lax.stop_gradient(latent_z(latent, eps))
        traj = self._traj(self.lp, {"net": net, "obs_norm": obs_norm, "z": z}, world, k_reset, k_run)
        b = self._batch(traj)  # MAML's advantages, flattened over [T, R]
        eps_t = jnp.broadcast_to(eps, (c.horizon,) + eps.shape).reshape((-1, c.latent_dim))
        return LatentBatch(b.obs, b.action, b.log_prob, b.adv, b.mask, eps_t), traj.reward.sum(0).mean()

    def _inner(self, x, obs_norm, step, batch, first_order):
        c = self.config
        return adapt_latent(self.lp, x, obs_norm, step, batch, c.estimator, c.adapt_policy, first_order)

    def _adapted_x(self, x, obs_norm, step, pre: list[LatentBatch]) -> dict:
        for b in pre:
            x = self._inner(x, obs_norm, step, b, self.config.first_order)
        return x

    def _collect_latent_task(self, net, obs_norm, step, latent, world, key):
        """Every phase's batch of one task (no gradient) and each phase's mean return [phases]."""
        c = self.config
        x = {"net": net, "latent": latent}
        batches, returns = [], []
        for k in jax.random.split(key, c.phases):
            b, ret = self._latent_rollout(x["net"], obs_norm, x["latent"], world, k)
            batches.append(b)
            returns.append(ret)
            if len(batches) < c.phases:
                x = self._inner(x, obs_norm, step, b, True)
        return batches, jnp.stack(returns)

    # -- the meta-iteration --------------------------------------------------------------------------

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        c = self.config
        key, k_idx, k_tasks = jax.random.split(ts.key, 3)
        p = ts.params
        obs_norm = p["obs_norm"]
        idx = jax.random.choice(k_idx, c.num_tasks, (c.meta_batch,), replace=False)
        worlds = jax.tree.map(lambda x: jnp.broadcast_to(x[idx][:, None], (c.meta_batch, c.rollouts_per_task) + x.shape[1:]),
                              self.task_worlds(ts.task_key))
        latents = jax.tree.map(lambda x: x[idx], p["latent"])
        batches, returns = jax.vmap(self._collect_latent_task, in_axes=(None, None, None, 0, 0, 0))(
            p["net"], obs_norm, p["step"], latents, worlds, jax.random.split(k_tasks, c.meta_batch))
        meta = {"net": p["net"], "latent": p["latent"], "step": p["step"]}
        meta, m = self.latent_outer_step(meta, obs_norm, idx, batches[:-1], batches[-1])
        if self.spec.normalize_obs:  # the statistics of [obs, z] over the first phase's samples
            b0 = batches[0]
            z0 = jax.vmap(latent_z)(latents, b0.eps)
            obs_norm = update_stats(obs_norm, jnp.concatenate([self.spec.select_obs(b0.obs), z0], -1))
        ret = returns.mean(0)
        sigma = jnp.exp(meta["latent"]["log_sigma"])
        metrics = {**m, "pre_return": ret[0], "episode_return": ret[-1], "adapt_gain": ret[-1] - ret[0],
                   "latent_mu_norm": jnp.linalg.norm(meta["latent"]["mu"], axis=-1).mean(),
                   "latent_sigma": sigma.mean(), "step_mu": meta["step"]["mu"].mean(),
                   "step_log_sigma": meta["step"]["log_sigma"].mean(),
                   "episodes": jnp.asarray(c.num_envs * c.phases, jnp.float32)}
        params = {**p, **meta, "obs_norm": obs_norm}
        return ts.replace(params=params, key=key, update=ts.update + 1), metrics

    def latent_outer_step(self, meta, obs_norm, idx, pre: list[LatentBatch], post: LatentBatch) -> tuple[dict, dict]:
        """TRPO on the post-update surrogate through the inner steps plus the prior KL of the tasks'
        latents (``pre``/``post``: [M, ...] per task; ``idx`` [M] the tasks' indices)."""
        c = self.config

        def frozen(meta):  # the step sizes stay put unless learned
            return meta if c.learn_step else {**meta, "step": jax.lax.stop_gradient(meta["step"])}

        def adapted(meta, i, p):
            lat = jax.tree.map(lambda x: x[i], meta["latent"])
            return self._adapted_x({"net": meta["net"], "latent": lat}, obs_norm, meta["step"], p)

        def dist(x, b):
            z = latent_z(x["latent"], b.eps)
            _, d, _ = self.lp.apply({"net": x["net"], "obs_norm": obs_norm, "z": z}, {}, b.obs)
            return d.loc, d.scale_diag

        old = jax.vmap(lambda i, p, b: dist(adapted(meta, i, p), b))(idx, pre, post)
        old = jax.tree.map(jax.lax.stop_gradient, old)

        def per_task(meta, i, p, b, od):
            new = distrax.MultivariateNormalDiag(*dist(adapted(meta, i, p), b))
            n = jnp.maximum(b.mask.sum(), 1.0)
            surr = -(jnp.exp(new.log_prob(b.action) - b.log_prob) * b.adv * b.mask).sum() / n
            kl = (distrax.MultivariateNormalDiag(*od).kl_divergence(new) * b.mask).sum() / n
            return surr, kl

        def objective_and_kl(meta):
            meta = frozen(meta)
            surr, kl = jax.vmap(per_task, in_axes=(None, 0, 0, 0, 0))(meta, idx, pre, post, old)
            prior = prior_kl(jax.tree.map(lambda x: x[idx], meta["latent"])).mean()
            return surr.mean() + c.kl_weight * prior, kl.mean()

        new, m = maml.trpo_step(objective_and_kl, meta, max_kl=c.max_kl, cg_iters=c.cg_iters,
                                cg_damping=c.cg_damping, ls_steps=c.ls_steps, ls_backtrack=c.ls_backtrack)
        m["prior_kl"] = prior_kl(jax.tree.map(lambda x: x[idx], new["latent"])).mean()
        return new, m


def make_train(config: MAESNConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)`` (DESIGN.md's learner contract)."""
    return Trainer(config, env, split)


def init_agent_params(c: MAESNConfig, env: Env, key: jax.Array) -> Any:
    """A template of what a run saves: the policy over ``[obs, z]``, every training task's latent
    and the step sizes."""
    lp = LatentPolicy(policy_spec(c, env), c.latent_dim)
    params = lp.init(key)
    N, L = c.num_tasks, c.latent_dim
    params["latent"] = {"mu": jnp.zeros((N, L), jnp.float32), "log_sigma": jnp.zeros((N, L), jnp.float32)}
    params["step"] = _steps(c)
    return params


# --------------------------------------------------------------------------------------------------
# The agent: a world starts at the prior; the latent adapts after every adapt_episodes episodes
# --------------------------------------------------------------------------------------------------


def _prior(batch: int, L: int) -> dict:
    return {"mu": jnp.zeros((batch, L), jnp.float32), "log_sigma": jnp.zeros((batch, L), jnp.float32)}


def agent_steps(c: MAESNConfig, params: Any) -> dict:
    """The test-time inner step sizes of a run's ``params``: the meta-learned ones (``params["step"]``),
    or the configured ones where nothing was learned (the latent-space baseline, a fixed step)."""
    step = dict(params.get("step") or {})
    if c.latent_baseline or not step:
        step = dict(_steps(c))
    step.setdefault("net", jnp.asarray(c.inner_lr, jnp.float32))
    return step


@struct.dataclass
class MAESNAgent(MAMLAgent):
    """MAESN's test-time adaptation (:class:`~meta_rl.maml.MAMLAgent`'s episode bookkeeping).

    State adds ``latent`` (each row's ``mu``, ``log_sigma`` [B, L], the prior at first), ``eps`` [B, L]
    the noise of the episode in progress (drawn at its first step) and ``episode_eps`` [B, K, L] that
    of each recorded episode. The latent-space baseline's run adapts with the fixed ``latent_lr``.
    """

    @property
    def lp(self) -> LatentPolicy:
        return LatentPolicy(self.policy.spec, self.config.latent_dim)

    @property
    def steps(self) -> dict:
        return agent_steps(self.config, self.params)

    def initial_state(self, batch: int):
        s = super().initial_state(batch)
        L, K = self.config.latent_dim, self.config.adapt_episodes
        return {**s, "latent": _prior(batch, L), "eps": jnp.zeros((batch, L), jnp.float32),
                "episode_eps": jnp.zeros((batch, K, L), jnp.float32)}

    def _latent_dist(self, state, obs, z) -> distrax.MultivariateNormalDiag:
        lp = self.lp

        def one(net, o, zz):
            _, d, _ = lp.apply({"net": net, "obs_norm": self.params["obs_norm"], "z": zz[None]}, {}, o[None])
            return d.loc[0], d.scale_diag[0]

        return distrax.MultivariateNormalDiag(*jax.vmap(one)(state["net"], obs, z))

    def act(self, state, obs, key):
        obs = self.policy.spec.select_obs(obs)
        k_eps, k_act = jax.random.split(key)
        first = state["t"] == 0
        eps = jnp.where(first[:, None], jax.random.normal(k_eps, state["eps"].shape, jnp.float32), state["eps"])
        K = self.config.adapt_episodes
        episode_eps = jnp.where((first[:, None] & jax.nn.one_hot(state["k"], K, dtype=bool))[..., None], eps[:, None],
                                state["episode_eps"])
        u = self._latent_dist(state, obs, latent_z(state["latent"], eps)).sample(seed=k_act)
        pending = {"obs": obs.astype(jnp.float32), "action": u}
        return self.policy.env_action(u), {**state, "pending": pending, "eps": eps, "episode_eps": episode_eps}

    def policy_step(self, state, obs):
        obs = self.policy.spec.select_obs(obs)
        return self.policy.deterministic(self._latent_dist(state, obs, state["latent"]["mu"])), state

    def _adaptable(self, state) -> dict:
        return {"net": state["net"], "latent": state["latent"]}

    def _episodes(self, state) -> dict:
        return {**state["episode"], "eps": state["episode_eps"]}

    def _adapt_world(self, x: dict, episodes: dict) -> dict:
        return adapt_on_episodes(self.lp, x, self.params["obs_norm"], self.steps, episodes, self.config)


def make_agent(c: MAESNConfig, env: Env, params: Any, deterministic: bool) -> MAESNAgent:
    """The test-time agent (it samples ``z`` and the actions whatever ``deterministic`` says: the inner
    step needs them; the exported ``policy_step`` acts with ``z = mu`` and the action's mode)."""
    del deterministic
    return MAESNAgent(params, Policy(policy_spec(c, env)), c, env.unwrapped.episode_length)


def finetune_agent(c: MAESNConfig, env: Env, spec: PolicySpec, params: Any) -> Agent:
    """``proteus eval --finetune``: a MAESN policy (the random initialization) adapted from scratch by
    the policy-gradient step on its weights (``inner_lr``) as well as its latent; any other Gaussian MLP
    (a PPO baseline) by MAML's step (:func:`meta_rl.maml.finetune_agent`)."""
    if "latent" in params:
        c = dataclasses.replace(c, adapt_policy=True, latent_baseline=True)  # nothing learned: configured steps
        return MAESNAgent(params, Policy(policy_spec(c, env)), c, env.unwrapped.episode_length)
    return maml.finetune_agent(c, env, spec, params)


# --------------------------------------------------------------------------------------------------
# What a run exports: the policy with z as a state input
# --------------------------------------------------------------------------------------------------


@struct.dataclass
class LatentPolicyAgent(Agent):
    """The policy a MAESN run exports (``policy.onnx``): ``z`` is its state (ONNX ``z_in``/``z_out``,
    [B, latent_dim]), initially the latent's mean: the prior's (0) for a trained run, the adapted one
    after ``proteus adapt``. The latent distribution itself travels in the metadata
    (:meth:`latent_metadata`): an exploring controller (``deploy.runtime.Controller`` with
    ``explore=True``) draws ``z`` from it once per episode and samples actions from the Gaussian
    (:meth:`exploration`); otherwise the robot acts with ``z = mu`` and the action's mode
    (``policy_step``).

    Attributes:
        params: ``net``, ``obs_norm`` and ``latent`` (``mu``, ``log_sigma`` [L]: the distribution).
    """

    params: Any
    policy: Any = struct.field(pytree_node=False)
    latent_dim: int = struct.field(pytree_node=False)

    @property
    def policy_spec(self):
        return self.policy.spec

    def _lp(self) -> LatentPolicy:
        return LatentPolicy(self.policy.spec, self.latent_dim)

    def initial_state(self, batch: int):
        return {"z": jnp.broadcast_to(self.params["latent"]["mu"].astype(jnp.float32), (batch, self.latent_dim))}

    def _dist(self, state, obs):
        obs = self.policy.spec.select_obs(obs)
        p = {"net": self.params["net"], "obs_norm": self.params["obs_norm"], "z": state["z"]}
        _, d, _ = self._lp().apply(p, {}, obs)
        return d

    def act(self, state, obs, key):
        return self.policy.env_action(self._dist(state, obs).sample(seed=key)), state

    def policy_step(self, state, obs):
        return self.policy.deterministic(self._dist(state, obs)), state

    def exploration(self, state, obs) -> tuple[jax.Array, jax.Array]:
        """``(mean, std)`` of the Gaussian in env units before the clip (as
        :meth:`meta_rl.maml.AdaptivePolicyAgent.exploration`)."""
        d = self._dist(state, obs)
        s = self.policy.spec
        return jnp.asarray(s.action_offset) + jnp.asarray(s.action_scale) * d.loc, jnp.asarray(s.action_scale) * d.scale_diag

    def latent_metadata(self) -> dict:
        """The export metadata's ``latent`` entry: the state input holding ``z`` and the distribution a
        robot draws it from when exploring."""
        lat = jax.device_get(self.params["latent"])
        return {"input": "z_in", "mu": [float(x) for x in lat["mu"]], "log_sigma": [float(x) for x in lat["log_sigma"]]}


def export_agent(c: MAESNConfig, env: Env, params: Any) -> LatentPolicyAgent:
    """What ``proteus export`` writes as ``policy.onnx`` for a MAESN run (see :class:`LatentPolicyAgent`):
    the prior's latent, or the one ``proteus adapt`` fitted (``params["adapted_latent"]``)."""
    latent = params.get("adapted_latent") or {k: v[0] for k, v in _prior(1, c.latent_dim).items()}
    return LatentPolicyAgent({"net": params["net"], "obs_norm": params["obs_norm"], "latent": latent},
                             Policy(policy_spec(c, env)), c.latent_dim)


def adapt_params(c: MAESNConfig, env: Env, params: Any, episodes: dict) -> Any:
    """``proteus adapt``: the test-time inner step from the prior on one world's recorded episodes, in
    the robot's units (``obs`` [E, H, D], ``action`` [E, H, A] the unclipped samples, ``reward``,
    ``mask`` [E, H], ``latent`` [E, L] the ``z`` each episode was played with, drawn from the prior as
    an exploring controller does with a trained run's policy). Returns ``params`` with
    ``adapted_latent`` (and the weights, when ``adapt_policy``) stepped: what :func:`export_agent` exports.

    Raises:
        ValueError: the episodes carry no latent, or one of the wrong size (named).
    """
    L = c.latent_dim
    if "latent" not in episodes:
        raise ValueError("maesn adapts its latent from episodes that record the z each was played with (an "
                         "episode file's 'latent' [episodes, latent_dim]: proteus deploy --explore --record writes it)")
    z = jnp.asarray(episodes["latent"], jnp.float32)
    if z.ndim != 2 or z.shape[1] != L:
        raise ValueError(f"the episodes' latent has shape {tuple(z.shape)}, the policy's latent_dim is {L}")
    spec = policy_spec(c, env)
    offset, scale = jnp.asarray(spec.action_offset), jnp.asarray(spec.action_scale)
    prior = {k: v[0] for k, v in _prior(1, L).items()}
    eps = (z - prior["mu"]) / jnp.exp(prior["log_sigma"])
    ep = {"obs": jnp.asarray(episodes["obs"]), "action": (jnp.asarray(episodes["action"], jnp.float32) - offset) / scale,
          "reward": jnp.asarray(episodes["reward"]), "mask": jnp.asarray(episodes["mask"]), "eps": eps}
    new = jax.jit(lambda p, e: adapt_on_episodes(LatentPolicy(spec, L), {"net": p["net"], "latent": prior},
                                                 p["obs_norm"], agent_steps(c, p), e, c))(params, ep)
    return {**params, "net": new["net"], "adapted_latent": new["latent"]}
