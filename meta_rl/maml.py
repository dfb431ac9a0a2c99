"""MAML for RL (Finn et al. 2017) with a TRPO outer step, on the shared rollout collector and GAE.

One meta-iteration (:meth:`Trainer.update`), all ``meta_batch`` tasks ``vmap``ped in one call:

1. For each task (a world of the ``fixed`` mode, tiled over ``rollouts_per_task`` envs), collect
   ``horizon``-step rollouts with the current weights theta; advantages from GAE over a linear feature
   baseline fitted to the task's own returns (:func:`task_advantages`, as in the MAML reference code).
2. Take ``inner_steps`` policy-gradient steps ``theta' = theta - alpha * grad L_in(theta)``, collecting
   fresh rollouts after each; ``L_in`` is the score-function surrogate (``estimator="maml"``) or
   ProMP's low-variance curvature estimator (``"lvc"``, Rothfuss et al. 2019): :func:`inner_loss`.
3. The outer objective is the importance-weighted surrogate of the post-adaptation rollouts as a
   function of theta *through the inner steps* (``jax.grad`` differentiates the inner gradient: exact
   second-order terms; ``first_order=True`` stops them). TRPO (:func:`trpo_step`): conjugate gradient
   on exact Hessian-vector products of the mean KL between the adapted policies before and after the
   step, a step to the ``max_kl`` boundary, and a backtracking line search that keeps the KL inside
   and the surrogate improving.

The agent (:class:`MAMLAgent`) adapts at test time as in training: its state is the adapted weights
of each world plus the episodes since its last step; after every ``adapt_episodes`` episodes (1 by
default; ``rollouts_per_task`` is the step as trained) it takes one inner step on them
(:func:`adapt_on_episodes`, the function ``adapt.onnx`` exports for robots). It samples its actions in every episode (a policy gradient needs them); the exported
``policy_step`` acts with the mode of the adapted policy.
"""

from __future__ import annotations

from typing import Any

import distrax
import numpy as np
import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from meta_rl.agent import Agent, Step
from meta_rl.configs import GradientMetaConfig, MAMLConfig
from meta_rl.learners import ScanTrainer
from meta_rl.losses import gae
from meta_rl.networks import Policy, PolicySpec
from meta_rl.rollout import Runner, Transition, collect
from sim.core import Env
from sim.normalize import update_stats
from sim.wrappers import VmapEnv, find_wrapper, with_mode

# --------------------------------------------------------------------------------------------------
# Pure pieces (golden-value tests in tests/test_maml.py)
# --------------------------------------------------------------------------------------------------


def baseline_features(obs: jax.Array, t: jax.Array, horizon: int) -> jax.Array:
    """The linear feature baseline's features (Duan et al. 2016's benchmark, used by MAML):
    ``[o, o^2, a, a^2, a^3, 1]`` with ``o`` clipped to [-10, 10] and ``a = t / horizon``.

    Args:
        obs: [..., D] observations; t: [...] step index within the episode.

    Returns:
        [..., 2 D + 4] features.
    """
    o = jnp.clip(obs.astype(jnp.float32), -10.0, 10.0)
    a = (t.astype(jnp.float32) / horizon)[..., None]
    return jnp.concatenate([o, o * o, a, a * a, a * a * a, jnp.ones_like(a)], -1)


BASELINE_RIDGE = 1e-4  # ridge of the baseline's normal equations, relative to their (unit) diagonal


def spd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """``x`` with ``a x = b`` for a symmetric positive-definite ``a`` [F, F] and ``b`` [F]: Gaussian
    elimination without pivoting (stable on SPD matrices), unrolled over the F columns with static
    slices only, so that :mod:`deploy.export` can write it as ONNX nodes (``adapt.onnx``), which
    ``jnp.linalg.solve``/``lstsq`` (LAPACK calls) cannot be."""
    n = a.shape[-1]
    m = jnp.concatenate([a, b[..., None]], -1)  # [F, F + 1]: the augmented system
    pivots = []
    for _ in range(n):  # forward elimination: each step drops the first row and column
        row = jax.lax.slice_in_dim(m, 0, 1, axis=-2)  # [1, k + 1]
        rest = jax.lax.slice_in_dim(m, 1, m.shape[-2], axis=-2)
        pivots.append(row[..., 0, :])
        factor = rest[..., :1] / row[..., :1]
        m = (rest - factor * row)[..., 1:]
    x = jnp.zeros(b.shape[:-1] + (0,), a.dtype)
    for row in reversed(pivots):  # back substitution: row = [pivot, coefficients of the later x, rhs]
        rhs = row[..., -1:] - jnp.sum(row[..., 1:-1] * x, -1, keepdims=True)
        x = jnp.concatenate([rhs / row[..., :1], x], -1)
    return x


def fit_linear_baseline(features: jax.Array, returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Ridge least-squares fit of ``returns`` on ``features`` [..., F] over the leading axes (rows where
    ``mask`` only); the fitted values (constant, no gradient).

    The normal equations of the MAML reference's linear baseline (rllab's, ``F^T F + reg I``), with
    the features first scaled to unit norm (so one relative ridge, :data:`BASELINE_RIDGE`, suits any
    units) and solved by :func:`spd_solve`, which exports to ONNX.
    """
    if mask is not None:
        features, returns = features * mask[..., None], returns * mask
    axes = tuple(range(features.ndim - 1))
    scale = jax.lax.rsqrt(jnp.sum(features * features, axes) + 1e-12)  # [F]
    f = features * scale
    gram = jnp.tensordot(f, f, (axes, axes)) + BASELINE_RIDGE * jnp.eye(f.shape[-1], dtype=f.dtype)
    w = spd_solve(gram, jnp.tensordot(f, returns, (axes, axes)))
    return jax.lax.stop_gradient(f @ w)


def task_advantages(reward: jax.Array, done: jax.Array, obs: jax.Array, t: jax.Array, gamma: float, lam: float,
                    horizon: int, mask: jax.Array | None = None) -> jax.Array:
    """Advantages of one task's rollouts, normalized to mean 0 and std 1 (over ``mask``).

    Discounted returns-to-go (cut at ``done``) are fitted by :func:`fit_linear_baseline`; GAE(lambda)
    then runs over the fitted values, an episode's end counting as terminal (MAML's finite horizon).

    Args:
        reward, done, t: [T, R]; obs [T, R, D]; mask [T, R] (steps that happened; default all).

    Returns:
        [T, R] advantages (no gradient).
    """
    zeros = jnp.zeros_like(reward)
    m = jnp.ones_like(reward) if mask is None else mask.astype(jnp.float32)
    done = done | (m == 0)
    _, returns = gae(reward * m, zeros, zeros, done, done, gamma, 1.0)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    fit = fit_linear_baseline(baseline_features(flat(obs), flat(t), horizon), flat(returns), flat(m))
    values = fit.reshape(reward.shape)
    following = jnp.concatenate([values[1:], jnp.zeros_like(values[:1])], 0)
    adv, _ = gae(reward * m, values, following, done, done, gamma, lam)
    n = jnp.maximum(m.sum(), 1.0)
    mean = (adv * m).sum() / n
    std = jnp.sqrt((((adv - mean) * m) ** 2).sum() / n)
    return jax.lax.stop_gradient((adv - mean) / (std + 1e-8) * m)


@struct.dataclass
class Batch:
    """One task's samples for a loss (flattened over rollouts and steps).

    Attributes:
        obs: [..., D]; action: [..., A] the distribution samples ``u``; log_prob: [...] of the behaviour
        policy; adv: [...] normalized advantages; mask: [...] 1 where the sample counts (the leading
        axes: [N] flattened in training, [E, H] episodes in :func:`adapt_on_episodes`).
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    adv: jax.Array
    mask: jax.Array


def _log_prob(policy: Policy, net: Any, obs_norm: Any, obs: jax.Array, action: jax.Array) -> jax.Array:
    _, dist, _ = policy.apply({"net": net, "obs_norm": obs_norm}, {}, obs)
    return dist.log_prob(action)


def inner_loss(policy: Policy, net: Any, obs_norm: Any, batch: Batch, estimator: str) -> jax.Array:
    """The inner-step surrogate ``L_in(theta)`` whose gradient is the policy gradient.

    ``maml``: ``-mean(log pi(a|s) A)``. ``lvc``: ``-mean(pi(a|s) / pi_b(a|s) A)`` with the behaviour
    log-probabilities as constants; the gradients agree at the behaviour policy, but the LVC Hessian
    holds the ``grad log pi grad log pi^T`` term that the plain surrogate lacks (ProMP, eq. 7).
    """
    lp = _log_prob(policy, net, obs_norm, batch.obs, batch.action)
    n = jnp.maximum(batch.mask.sum(), 1.0)
    if estimator == "lvc":
        return -(jnp.exp(lp - batch.log_prob) * batch.adv * batch.mask).sum() / n
    return -(lp * batch.adv * batch.mask).sum() / n


def adapt(policy: Policy, net: Any, obs_norm: Any, batch: Batch, inner_lr, estimator: str = "maml",
          first_order: bool = False) -> Any:
    """One inner step ``theta - alpha * grad L_in(theta)``; differentiable in ``theta`` (second order)
    unless ``first_order``."""
    g = jax.grad(lambda n: inner_loss(policy, n, obs_norm, batch, estimator))(net)
    if first_order:
        g = jax.lax.stop_gradient(g)
    return jax.tree.map(lambda p, d: p - inner_lr * d, net, g)


def _lag_matrix(n: int, base: float) -> np.ndarray:
    """[n, n] float32 ``base ** (j - i)`` for ``j >= i``, else 0: ``x @ M.T`` sums ``base``-discounted
    futures along the last axis (a discounted reverse cumulative sum, as one matrix product)."""
    lag = np.arange(n)[None, :] - np.arange(n)[:, None]
    return np.where(lag >= 0, np.float64(base) ** np.maximum(lag, 0), 0.0).astype(np.float32)


def episode_advantages(reward: jax.Array, mask: jax.Array, obs: jax.Array, gamma: float, lam: float,
                       horizon: int) -> jax.Array:
    """:func:`task_advantages` for the layout the agent and a robot record: one episode per row, from
    its first step, ``mask`` 1 on the steps that happened (a prefix), the last of them terminal.

    The same quantities (returns-to-go, the linear feature baseline, GAE(lambda) over it, normalization
    over the masked steps), written with matrix products instead of a scan so that the whole inner
    step exports to ONNX (``adapt.onnx``); ``tests/test_maml.py`` checks it against
    :func:`task_advantages`.

    Args:
        reward, mask: [E, H]; obs: [E, H, D].

    Returns:
        [E, H] advantages (0 where masked; no gradient).
    """
    H = reward.shape[-1]
    m = mask.astype(jnp.float32)
    r = reward.astype(jnp.float32) * m
    returns = r @ _lag_matrix(H, gamma).T
    t = jnp.broadcast_to(jnp.arange(H, dtype=jnp.float32), r.shape)
    values = fit_linear_baseline(baseline_features(obs, t, horizon), returns, m)
    following = jnp.concatenate([(values * m)[..., 1:], jnp.zeros_like(values[..., :1])], -1)
    delta = (r + gamma * following - values) * m
    adv = delta @ _lag_matrix(H, gamma * lam).T
    n = jnp.maximum(m.sum(), 1.0)
    mean = (adv * m).sum() / n
    std = jnp.sqrt((((adv - mean) * m) ** 2).sum() / n)
    return jax.lax.stop_gradient((adv - mean) / (std + 1e-8) * m)


def adapt_on_episodes(policy: Policy, net: Any, obs_norm: Any, episodes: dict, c: GradientMetaConfig) -> Any:
    """One inner step (``c.inner_lr``, ``c.estimator``, first order: no meta-gradient at test time) on
    recorded episodes of one world, as the agent takes it after each episode and ``adapt.onnx`` runs it
    on a robot.

    Args:
        episodes: ``obs`` [E, H, D], ``action`` [E, H, A] the policy's samples ``u`` (distribution
            units, before the clip to [-1, 1]), ``reward`` [E, H], ``mask`` [E, H] (1 on the steps
            that happened, a prefix of each row). They must come from the policy with weights ``net``:
            the behaviour log-probabilities are recomputed from it.

    Returns:
        The adapted weights.
    """
    obs, u = episodes["obs"].astype(jnp.float32), episodes["action"].astype(jnp.float32)
    mask = episodes["mask"].astype(jnp.float32)
    adv = episode_advantages(episodes["reward"], mask, obs, c.gamma, c.gae_lambda, c.horizon)
    log_prob = jax.lax.stop_gradient(_log_prob(policy, net, obs_norm, obs, u))
    return adapt(policy, net, obs_norm, Batch(obs, u, log_prob, adv, mask), c.inner_lr, c.estimator, True)


def conjugate_gradient(matvec, b: jax.Array, iters: int) -> jax.Array:
    """``x`` with ``matvec(x) ~= b`` after ``iters`` CG iterations from 0 (``jax.scipy``'s CG, no tolerance stop)."""
    x, _ = jax.scipy.sparse.linalg.cg(matvec, b, maxiter=iters, tol=0.0, atol=0.0)
    return x


def trpo_step(objective_and_kl, params: Any, *, max_kl: float, cg_iters: int, cg_damping: float, ls_steps: int,
              ls_backtrack: float) -> tuple[Any, dict]:
    """One TRPO step minimizing the objective under ``kl <= max_kl`` (Schulman et al. 2015);
    ``objective_and_kl(params) -> (objective, kl)``, the KL measured from ``params`` (0 there, with zero
    gradient).

    ``d = -F^{-1} g`` by conjugate gradient on Hessian-vector products of the KL (exact, forward over
    reverse), scaled to the trust-region boundary ``0.5 d^T F d = max_kl``; then a backtracking line
    search (``ls_backtrack^k`` of the step, ``k < ls_steps``, in a ``while_loop`` that stops at the first
    fraction whose KL stays within ``max_kl`` and whose objective improves). None passing: the params stay.

    Returns:
        (new params, metrics: ``objective`` before, ``improvement``, ``kl`` of the step taken,
        ``accepted``, ``step_frac``, ``nonfinite`` (the objective or its gradient was not finite)).
    """
    flat, unravel = ravel_pytree(params)
    fk = lambda x: objective_and_kl(unravel(x))  # noqa: E731
    f0, g = jax.value_and_grad(lambda x: fk(x)[0])(flat)
    grad_k = jax.grad(lambda x: fk(x)[1])

    def fvp(v):
        return jax.jvp(grad_k, (flat,), (v,))[1] + cg_damping * v

    d = conjugate_gradient(fvp, -g, cg_iters)
    shs = 0.5 * jnp.dot(d, fvp(d))
    step = jnp.sqrt(max_kl / jnp.maximum(shs, 1e-12)) * d
    finite = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(step))

    def body(s):
        i, _, _, _, _ = s
        frac = jnp.asarray(ls_backtrack, jnp.float32) ** i
        fx, kx = fk(flat + frac * step)
        ok = (kx <= max_kl) & (fx < f0) & jnp.isfinite(fx) & jnp.isfinite(kx)
        return i + 1, ok, frac, fx, kx

    zero = jnp.zeros((), jnp.float32)
    start = (jnp.zeros((), jnp.int32), ~finite, zero, f0, zero)  # a non-finite step is not searched
    _, ok, frac, fx, kx = jax.lax.while_loop(lambda s: (s[0] < ls_steps) & ~s[1], body, start)
    accepted = ok & finite
    new = jnp.where(accepted, flat + frac * step, flat)
    return unravel(new), {
        "objective": f0,
        "improvement": jnp.where(accepted, f0 - fx, 0.0),
        "kl": jnp.where(accepted, kx, 0.0),
        "accepted": accepted.astype(jnp.float32),
        "step_frac": jnp.where(accepted, frac, 0.0),
        "nonfinite": (~finite).astype(jnp.int32),
    }


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


@struct.dataclass
class TrainState:
    """Meta-parameters, key and update counter: all a run needs to continue exactly (every
    meta-iteration starts from fresh worlds and resets)."""

    params: Any
    key: jax.Array
    update: jax.Array
    outer: Any  # the outer optimizer's state ({} for TRPO; Adam and the KL weight for ProMP)


def policy_spec(c: GradientMetaConfig, env: Env) -> PolicySpec:
    """MAML's policy for ``env``: a Gaussian MLP (continuous actions only)."""
    spec = PolicySpec.for_env(env, "mlp", hidden=tuple(c.hidden), normalize_obs=c.normalize_obs,
                              init_log_std=c.init_log_std)
    if spec.discrete:
        raise ValueError(f"maml needs continuous actions; {env.id} has discrete ones")
    return spec


def _base_batched(env: Env) -> VmapEnv:
    return find_wrapper(env, VmapEnv, "maml needs a batched env (sim.make(..., batch_size=(meta_batch, "
                                      "rollouts_per_task)))")


def _steps_in_episode(first: jax.Array) -> jax.Array:
    """[T, R] the step index within its episode (0 where ``first``)."""
    def f(c, fi):
        c = jnp.where(fi, 0, c + 1)
        return c, c

    return jax.lax.scan(f, jnp.full(first.shape[1:], -1, jnp.int32), first)[1]


class Trainer(ScanTrainer):
    """MAML-TRPO over ``meta_batch`` tasks (see the module docstring). Pure and un-jitted, like every
    trainer (:class:`meta_rl.learners.Trainer`)."""

    def __init__(self, config: GradientMetaConfig, env: Env, split: str = "train"):
        self.config = c = config
        want = (c.meta_batch, c.rollouts_per_task)
        if env.batch_shape != want:
            raise ValueError(f"env batch {env.batch_shape} does not match (meta_batch, rollouts_per_task) = {want}")
        if c.horizon > env.unwrapped.episode_length:
            raise ValueError(f"MAMLConfig.horizon={c.horizon} is longer than {env.id}'s episode "
                             f"({env.unwrapped.episode_length} steps)")
        self.env = env
        self.split = split
        outer = _base_batched(env)
        # one task's envs: the rollouts of one world, vmapped over tasks by the trainer
        self.task_env = with_mode(outer.env, "fixed", getattr(env, "episodes_per_trial", 1), split=split)
        self.spec = policy_spec(c, env)
        self.policy = Policy(self.spec)

    def init(self, key: jax.Array) -> TrainState:
        k_net, k_next = jax.random.split(key)
        params = self.policy.init(k_net)
        return TrainState(params, k_next, jnp.zeros((), jnp.int32), self.init_outer(params["net"]))

    # -- one task ------------------------------------------------------------------------------------

    def _traj(self, policy, params, world, k_reset, k_run) -> Transition:
        """``horizon`` steps of ``policy`` (``params``) in the task's ``rollouts_per_task`` envs from
        reset (no gradient)."""
        c = self.config
        state = self.task_env.reset(k_reset, world)
        R = c.rollouts_per_task
        zeros = jnp.zeros((R,), jnp.float32)
        runner = Runner(state, {}, jnp.ones((R,), bool), zeros, zeros.astype(jnp.int32))
        _, traj, _ = collect(self.task_env, policy, params, runner, k_run, c.horizon)
        return jax.lax.stop_gradient(traj)

    def _rollout(self, net, obs_norm, world, key) -> tuple[Batch, jax.Array]:
        """``horizon`` steps of the task's ``rollouts_per_task`` envs from reset: (batch, mean return)."""
        traj = self._traj(self.policy, {"net": net, "obs_norm": obs_norm}, world, *jax.random.split(key))
        return self._batch(traj), traj.reward.sum(0).mean()

    def _batch(self, traj: Transition) -> Batch:
        c = self.config
        t = _steps_in_episode(traj.first)
        adv = task_advantages(traj.reward, traj.done, traj.obs, t, c.gamma, c.gae_lambda, c.horizon)
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
        return Batch(flat(traj.obs), flat(traj.action), flat(traj.log_prob), flat(adv), jnp.ones_like(flat(adv)))

    def _adapted(self, net, obs_norm, pre: list[Batch]) -> Any:
        c = self.config
        for b in pre:
            net = adapt(self.policy, net, obs_norm, b, c.inner_lr, c.estimator, c.first_order)
        return net

    def _collect_task(self, net, obs_norm, world, key) -> tuple[list[Batch], jax.Array]:
        """Every phase's batch for one task (no gradient) and the mean return of each phase [S + 1]."""
        c = self.config
        batches, returns = [], []
        for k in jax.random.split(key, c.inner_steps + 1):
            b, ret = self._rollout(net, obs_norm, world, k)
            batches.append(b)
            returns.append(ret)
            if len(batches) <= c.inner_steps:
                net = adapt(self.policy, net, obs_norm, b, c.inner_lr, c.estimator, True)
        return batches, jnp.stack(returns)

    # -- the meta-iteration --------------------------------------------------------------------------

    def update(self, ts: TrainState) -> tuple[TrainState, dict]:
        """One meta-iteration: every task's rollouts and inner steps (vmapped), then :meth:`outer_step`."""
        c = self.config
        key, k_world, k_tasks = jax.random.split(ts.key, 3)
        obs_norm = ts.params["obs_norm"]
        worlds = self.env.sample_params(k_world, self.split)  # [M, R, ...]: one world per task, tiled
        worlds = jax.tree.map(lambda x: jnp.broadcast_to(x[:, :1], x.shape), worlds)
        batches, returns = jax.vmap(self._collect_task, in_axes=(None, None, 0, 0))(
            ts.params["net"], obs_norm, worlds, jax.random.split(k_tasks, c.meta_batch))
        net, outer, m = self.outer_step(ts.params["net"], obs_norm, batches[:-1], batches[-1], ts.outer)
        if self.spec.normalize_obs:  # as PPO: this iteration used the old statistics; the next uses these
            obs_norm = update_stats(obs_norm, batches[0].obs)
        ret = returns.mean(0)  # [S + 1] per phase
        metrics = {**m, "pre_return": ret[0], "episode_return": ret[-1], "adapt_gain": ret[-1] - ret[0],
                   "episodes": jnp.asarray(c.num_envs * (c.inner_steps + 1), jnp.float32)}
        return ts.replace(params={"net": net, "obs_norm": obs_norm}, key=key, update=ts.update + 1, outer=outer), metrics

    def init_outer(self, net: Any) -> Any:
        """The outer optimizer's state (TRPO keeps none)."""
        return {}

    def adapted_dist(self, net, obs_norm, pre: list[Batch], obs) -> distrax.MultivariateNormalDiag:
        """The policy adapted from ``net`` on one task's pre-update batches, at ``obs``."""
        return distrax.MultivariateNormalDiag(*self._dist(self._adapted(net, obs_norm, pre), obs_norm, obs))

    def outer_step(self, net0, obs_norm, pre: list[Batch], post: Batch, outer: Any) -> tuple[Any, Any, dict]:
        """TRPO on the post-update surrogate through the inner steps (``pre``/``post``: [M, ...] per task)."""
        c = self.config
        # the adapted policies that collected `post`: the reference of the ratios and of the KL
        old = jax.vmap(lambda p, b: self._dist(self._adapted(net0, obs_norm, p), obs_norm, b.obs))(pre, post)
        old = jax.tree.map(jax.lax.stop_gradient, old)

        def per_task(net, p, b, od):
            new = self.adapted_dist(net, obs_norm, p, b.obs)
            n = jnp.maximum(b.mask.sum(), 1.0)
            surr = -(jnp.exp(new.log_prob(b.action) - b.log_prob) * b.adv * b.mask).sum() / n
            kl = (distrax.MultivariateNormalDiag(*od).kl_divergence(new) * b.mask).sum() / n
            return surr, kl

        def objective_and_kl(net):
            surr, kl = jax.vmap(per_task, in_axes=(None, 0, 0, 0))(net, pre, post, old)
            return surr.mean(), kl.mean()

        net, m = trpo_step(objective_and_kl, net0, max_kl=c.max_kl, cg_iters=c.cg_iters, cg_damping=c.cg_damping,
                           ls_steps=c.ls_steps, ls_backtrack=c.ls_backtrack)
        return net, outer, m

    def _dist(self, net, obs_norm, obs):
        _, dist, _ = self.policy.apply({"net": net, "obs_norm": obs_norm}, {}, obs)
        return dist.loc, dist.scale_diag



def make_train(config: MAMLConfig, env: Env, split: str = "train") -> Trainer:
    """``make_train(config, env)(key) -> (params, metrics)`` (DESIGN.md's learner contract)."""
    return Trainer(config, env, split)


def init_agent_params(c: GradientMetaConfig, env: Env, key: jax.Array) -> Any:
    """A template of the agent's parameters (what a run saves)."""
    return Policy(policy_spec(c, env)).init(key)


# --------------------------------------------------------------------------------------------------
# The agent: one inner step at the end of every episode
# --------------------------------------------------------------------------------------------------


def per_row_dist(policy: Policy, obs_norm: Any, nets: Any, obs: jax.Array) -> distrax.MultivariateNormalDiag:
    """The Gaussian of each row's own weights (``nets`` [B, ...]) at its observation ``obs`` [B, D]."""
    def one(net, o):
        _, d, _ = policy.apply({"net": net, "obs_norm": obs_norm}, {}, o[None])
        return d.loc[0], d.scale_diag[0]

    return distrax.MultivariateNormalDiag(*jax.vmap(one)(nets, obs))


@struct.dataclass
class MAMLAgent(Agent):
    """MAML's test-time adaptation (see the module docstring).

    State: ``net`` the adapted weights of each world [B, ...]; ``episode`` the episodes since the last
    step (``obs``, ``action`` samples ``u``, ``reward``: [B, K, H, ...], K = ``config.adapt_episodes``)
    with ``k`` [B] episodes complete, their ``lengths`` [B, K], ``t`` [B] steps of the one in progress
    and ``ended`` [B]; ``pending`` the last action's observation and sample until its reward arrives.
    Once K episodes are in, it takes :func:`adapt_on_episodes` on all of them (K = 1: after every
    episode, from that episode alone).
    """

    params: Any
    policy: Any = struct.field(pytree_node=False)
    config: GradientMetaConfig = struct.field(pytree_node=False)
    episode_length: int = struct.field(pytree_node=False)

    @property
    def policy_spec(self):
        return self.policy.spec

    def initial_state(self, batch: int):
        s, H, K = self.policy.spec, self.episode_length, self.config.adapt_episodes
        A = len(s.action_names)
        zf = lambda *shape: jnp.zeros((batch,) + shape, jnp.float32)  # noqa: E731
        zi = lambda *shape: jnp.zeros((batch,) + shape, jnp.int32)  # noqa: E731
        return {
            "net": jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape), self.params["net"]),
            "episode": {"obs": zf(K, H, s.obs_dim), "action": zf(K, H, A), "reward": zf(K, H)},
            "pending": {"obs": zf(s.obs_dim), "action": zf(A)},
            "t": zi(),
            "k": zi(),
            "lengths": zi(K),
            "ended": jnp.zeros((batch,), bool),
        }

    def _dist(self, nets, obs):
        return per_row_dist(self.policy, self.params["obs_norm"], nets, obs)

    def act(self, state, obs, key):
        obs = self.policy.spec.select_obs(obs)
        dist = self._dist(state["net"], obs)
        u = dist.sample(seed=key)
        pending = {"obs": obs.astype(jnp.float32), "action": u}
        return self.policy.env_action(u), {**state, "pending": pending}

    def observe(self, state, step: Step):
        H = self.episode_length
        t = jnp.minimum(state["t"], H - 1)
        row = {**state["pending"], "reward": step.reward.astype(jnp.float32)}
        # one element per row written in place (a scatter), not the whole [K, H] buffer rewritten
        ep = jax.tree.map(lambda buf, x: jax.vmap(lambda b, v, k, i: b.at[k, i].set(v))(buf, x, state["k"], t),
                          state["episode"], row)
        return {**state, "episode": ep, "t": state["t"] + 1, "ended": state["ended"] | step.done}

    def _adapt_rows(self, state):
        """Every row's episode end: its length is kept; once ``adapt_episodes`` episodes are in, one
        inner step on all of them (the caller keeps the result only where an episode ended)."""
        H, K = self.episode_length, self.config.adapt_episodes
        steps = jnp.arange(H)
        lengths = jnp.where(jax.nn.one_hot(state["k"], K, dtype=bool), jnp.minimum(state["t"], H)[:, None],
                            state["lengths"])
        full = state["k"] + 1 >= K

        def one(x, ep, lens):
            episodes = {**ep, "mask": (steps[None, :] < lens[:, None]).astype(jnp.float32)}
            return self._adapt_world(x, episodes)

        # the inner step only when a row that just ended has all its episodes in (with early
        # terminations some row ends at most steps, but a row steps once per K episodes)
        before = self._adaptable(state)
        adapted = jax.lax.cond(jnp.any(state["ended"] & full),
                               lambda: jax.vmap(one)(before, self._episodes(state), lengths), lambda: before)
        after = jax.tree.map(lambda a, n: jnp.where(full.reshape((-1,) + (1,) * (n.ndim - 1)), a, n), adapted, before)
        zero = jnp.zeros_like(state["t"])
        return {**state, **after, "t": zero, "k": jnp.where(full, 0, state["k"] + 1),
                "lengths": jnp.where(full[:, None], 0, lengths), "ended": jnp.zeros_like(state["ended"])}

    # what the inner step moves, and how (MAESN's agent overrides these three)
    def _adaptable(self, state) -> dict:
        """The part of the state the inner step moves, rows [B, ...]."""
        return {"net": state["net"]}

    def _episodes(self, state) -> dict:
        """The rows' recorded episodes (without ``mask``), [B, K, H, ...]."""
        return state["episode"]

    def _adapt_world(self, x: dict, episodes: dict) -> dict:
        """One world's inner step on its episodes (``mask`` included)."""
        return {"net": adapt_on_episodes(self.policy, x["net"], self.params["obs_norm"], episodes, self.config)}

    def end_episode(self, state):
        # computed for the whole batch only when some episode ended (the runner keeps it where one did)
        return jax.lax.cond(jnp.any(state["ended"]), self._adapt_rows, lambda s: s, state)

    def policy_step(self, state, obs):
        obs = self.policy.spec.select_obs(obs)
        return self.policy.deterministic(self._dist(state["net"], obs)), state


def make_agent(c: GradientMetaConfig, env: Env, params: Any, deterministic: bool) -> MAMLAgent:
    """The test-time agent (it samples in every episode whatever ``deterministic`` says: the inner
    policy gradient needs sampled actions; the exported ``policy_step`` acts with the mode)."""
    del deterministic
    return MAMLAgent(params, Policy(policy_spec(c, env)), c, env.unwrapped.episode_length)


def finetune_agent(c: GradientMetaConfig, env: Env, spec: PolicySpec, params: Any) -> MAMLAgent:
    """MAML's test-time inner step (``c.inner_lr``, ``c.estimator``) applied to another Gaussian MLP
    policy (``spec``, ``params``): the "pretrained + fine-tuned" and "random initialization"
    comparisons of Finn et al. (2017)."""
    if spec.discrete or spec.recurrent:
        raise ValueError(f"the maml inner step fine-tunes Gaussian MLP policies, got a {'discrete' if spec.discrete else spec.kind} one")
    return MAMLAgent(params, Policy(spec), c, env.unwrapped.episode_length)


# --------------------------------------------------------------------------------------------------
# What a run exports for a robot: the policy with its weights as state, and the inner step
# --------------------------------------------------------------------------------------------------


@struct.dataclass
class AdaptivePolicyAgent(Agent):
    """The Gaussian MLP a MAML/ProMP run exports (``policy.onnx``): its weights are the agent's
    *state* (ONNX inputs ``net.<path>_in``, passed through to ``net.<path>_out``, initial value the
    meta-learned weights), so the adapted weights that ``adapt.onnx`` outputs (same names) drop
    straight into the policy on a robot that has onnxruntime alone.

    ``policy_step`` acts with the mode (the deterministic contract); :meth:`exploration` gives what a
    robot needs to sample from the policy for the episodes it adapts on (``deploy.runtime.Controller``
    with ``explore=True``).
    """

    params: Any
    policy: Any = struct.field(pytree_node=False)

    @property
    def policy_spec(self):
        return self.policy.spec

    def initial_state(self, batch: int):
        return {"net": jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape), self.params["net"])}

    def _dist(self, state, obs):
        return per_row_dist(self.policy, self.params["obs_norm"], state["net"], self.policy.spec.select_obs(obs))

    def act(self, state, obs, key):
        return self.policy.env_action(self._dist(state, obs).sample(seed=key)), state

    def policy_step(self, state, obs):
        return self.policy.deterministic(self._dist(state, obs)), state

    def exploration(self, state, obs) -> tuple[jax.Array, jax.Array]:
        """``(mean, std)`` of the policy's Gaussian in env units *before* the clip to the action bounds
        (``offset + scale * loc``, ``scale * std``): a robot samples ``mean + std * noise`` and clips
        the command; the unclipped sample is what :func:`adapt_on_episodes` needs (``u = (a - offset) /
        scale``)."""
        d = self._dist(state, obs)
        s = self.policy.spec
        return jnp.asarray(s.action_offset) + jnp.asarray(s.action_scale) * d.loc, jnp.asarray(s.action_scale) * d.scale_diag


def export_agent(c: GradientMetaConfig, env: Env, params: Any) -> AdaptivePolicyAgent:
    """What ``proteus export`` writes as ``policy.onnx`` for a MAML/ProMP run (see :class:`AdaptivePolicyAgent`)."""
    return AdaptivePolicyAgent(params, Policy(policy_spec(c, env)))


def adapt_function(c: GradientMetaConfig, spec: PolicySpec, obs_norm: Any):
    """``f(state, episodes) -> state``: the inner step on each world's recorded episodes, over a batch of
    worlds, in the robot's units: ``state`` is :class:`AdaptivePolicyAgent`'s (``{"net": [W, ...]}``),
    ``episodes`` holds ``obs`` [W, E, H, D], ``action`` [W, E, H, A] in env units (the unclipped
    samples), ``reward`` and ``mask`` [W, E, H]. What ``adapt.onnx`` computes."""
    policy = Policy(spec)
    offset, scale = jnp.asarray(spec.action_offset), jnp.asarray(spec.action_scale)

    def one(net, ep):
        ep = {**ep, "action": (ep["action"].astype(jnp.float32) - offset) / scale}
        return adapt_on_episodes(policy, net, obs_norm, ep, c)

    return lambda state, episodes: {"net": jax.vmap(one)(state["net"], episodes)}
