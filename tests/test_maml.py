"""MAML (:mod:`meta_rl.maml`): golden values for the baseline, advantages, inner step, LVC estimator,
second-order meta-gradient, conjugate gradient and TRPO step; a tiny run whose agent adapts; export
parity; bad configs refused before anything compiles."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from meta_rl import learners
from meta_rl.configs import ConfigError, MAMLConfig
from meta_rl.maml import (BASELINE_RIDGE, Batch, adapt, baseline_features, conjugate_gradient, episode_advantages,
                          fit_linear_baseline, inner_loss, spd_solve, task_advantages, trpo_step)
from meta_rl.networks import Policy, PolicySpec

ENV = "point-goal"


def _tiny_policy(hidden=(3,)) -> Policy:
    return Policy(PolicySpec(kind="mlp", obs_names=("x", "y"), action_names=("vx", "vy"), discrete=False,
                             hidden=hidden, action_low=(-1.0, -1.0), action_high=(1.0, 1.0), normalize_obs=False,
                             init_log_std=0.0))


def _batch(policy, params, n=40, seed=0) -> Batch:
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)
    _, dist, _ = policy.apply(params, {}, obs)
    u = dist.sample(seed=jax.random.key(seed))
    adv = jnp.asarray(rng.normal(size=(n,)), jnp.float32)
    return Batch(obs, u, dist.log_prob(u), adv, jnp.ones((n,), jnp.float32))


# -- baseline and advantages -------------------------------------------------------------------------


def test_baseline_features_golden():
    f = baseline_features(jnp.array([[1.0, -20.0]]), jnp.array([5]), 10)
    np.testing.assert_allclose(f, [[1.0, -10.0, 1.0, 100.0, 0.5, 0.25, 0.125, 1.0]])


def _ridge_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The fitted values of the baseline's ridge regression, in float64: columns scaled to unit norm,
    ``(F^T F + BASELINE_RIDGE I) w = F^T y``."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    f = x / np.sqrt((x * x).sum(0) + 1e-12)
    w = np.linalg.solve(f.T @ f + BASELINE_RIDGE * np.eye(f.shape[1]), f.T @ y)
    return f @ w


def test_spd_solve_golden():
    """The unrolled elimination solves SPD systems (here of the baseline's size for the cheetah)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 38))
    a = (x.T @ x / 200 + 0.1 * np.eye(38)).astype(np.float32)
    b = rng.normal(size=38).astype(np.float32)
    np.testing.assert_allclose(spd_solve(jnp.asarray(a), jnp.asarray(b)), np.linalg.solve(a.astype(np.float64), b),
                               rtol=1e-4, atol=1e-5)


def test_linear_baseline_is_least_squares():
    """The ridge fit is the reference's ridge least squares, and (ridge 1e-4) near plain least squares."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.normal(size=(30,)).astype(np.float32)
    got = fit_linear_baseline(jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(got, _ridge_fit(x, y), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, x @ np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-3, atol=1e-3)
    mask = np.r_[np.ones(20), np.zeros(10)].astype(np.float32)  # masked rows do not move the fit
    np.testing.assert_allclose(fit_linear_baseline(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))[:20],
                               _ridge_fit(x[:20], y[:20]), rtol=1e-4, atol=1e-5)


def test_task_advantages_golden():
    """Four 5-step rollouts: returns-to-go, the linear fit on [o, o^2, a, a^2, a^3, 1], GAE over the fit
    with the episode end terminal, then normalization: computed here in NumPy."""
    rng = np.random.default_rng(7)
    T, R = 5, 4
    reward = rng.normal(size=(T, R)).astype(np.float32)
    done = np.zeros((T, R), bool)
    done[-1] = True
    done[2, 1] = True  # one rollout ends early and starts again (auto-reset inside the task)
    obs = rng.normal(size=(T, R, 2)).astype(np.float32)
    t = np.array([[min(i, i - 3 if (r == 1 and i >= 3) else i) for r in range(R)] for i in range(T)])
    gamma, lam = 0.9, 0.8
    ret = np.zeros_like(reward)
    acc = np.zeros(R, np.float32)
    for i in reversed(range(T)):
        acc = reward[i] + gamma * acc * (1 - done[i])
        ret[i] = acc
    o = obs.reshape(T * R, 2)
    a = t.reshape(T * R, 1) / 5
    feats = np.concatenate([o, o**2, a, a**2, a**3, np.ones_like(a)], 1)
    v = _ridge_fit(feats, ret.reshape(T * R)).reshape(T, R)
    nxt = np.concatenate([v[1:], np.zeros((1, R))])
    delta = reward + gamma * nxt * (1 - done) - v
    adv = np.zeros_like(reward)
    acc = np.zeros(R)
    for i in reversed(range(T)):
        acc = delta[i] + gamma * lam * (1 - done[i]) * acc
        adv[i] = acc
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    got = task_advantages(jnp.asarray(reward), jnp.asarray(done), jnp.asarray(obs), jnp.asarray(t), gamma, lam, 5)
    np.testing.assert_allclose(got, adv, rtol=2e-3, atol=2e-3)


def test_episode_advantages_match_task_advantages():
    """The matrix form (one episode per row, a masked prefix) equals the scan form on the same episodes."""
    rng = np.random.default_rng(8)
    E, H, D = 3, 12, 2
    lengths = np.array([12, 7, 4])
    mask = (np.arange(H) < lengths[:, None]).astype(np.float32)
    reward = (rng.normal(size=(E, H)) * mask).astype(np.float32)
    obs = (rng.normal(size=(E, H, D)) * mask[..., None]).astype(np.float32)
    got = episode_advantages(jnp.asarray(reward), jnp.asarray(mask), jnp.asarray(obs), 0.95, 0.9, H)
    t = np.broadcast_to(np.arange(H), (E, H))
    done = np.arange(H) == lengths[:, None] - 1
    want = task_advantages(jnp.asarray(reward.T), jnp.asarray(done.T), jnp.asarray(obs.transpose(1, 0, 2)),
                           jnp.asarray(t.T), 0.95, 0.9, H, jnp.asarray(mask.T))
    # Both routes solve the baseline's float32 normal equations (cubic time features, relative ridge
    # 1e-4: condition numbers up to ~1e4), summed in different orders: they agree to eps * kappa ~ 1e-3,
    # and where inside that depends on the CPU's instruction set (1.4e-4 apart on one Xeon, < 1e-4 on
    # another). The test above holds task_advantages to a float64 reference at 2e-3.
    np.testing.assert_allclose(got, np.asarray(want).T, rtol=1e-3, atol=1e-3)
    assert np.all(np.asarray(got)[mask == 0] == 0)


# -- the inner step and its estimators ---------------------------------------------------------------


def test_inner_step_golden():
    """theta' = theta - alpha * grad(-mean(log pi(a|s) A)), the gradient written out by hand for a
    linear-Gaussian mean: d/dW of -mean(A * sum((u - (o W + b)) / s^2 ... )) over the mean layer only."""
    policy = _tiny_policy()
    params = policy.init(jax.random.key(0))
    b = _batch(policy, params)
    new = adapt(policy, params["net"], params["obs_norm"], b, 0.5)
    g = jax.grad(lambda n: -jnp.mean(policy.apply({"net": n, "obs_norm": params["obs_norm"]}, {}, b.obs)[1]
                                     .log_prob(b.action) * b.adv))(params["net"])
    for x, y, d in zip(jax.tree.leaves(new), jax.tree.leaves(params["net"]), jax.tree.leaves(g)):
        np.testing.assert_allclose(x, y - 0.5 * d, rtol=1e-6, atol=1e-7)
    # the log-std gradient in closed form: d/dlogs -mean(A log N(u; mu, e^logs)) = -mean(A ((u-mu)^2/s^2 - 1))
    _, dist, _ = policy.apply(params, {}, b.obs)
    z2 = ((b.action - dist.loc) / dist.scale_diag) ** 2
    want = -jnp.mean(b.adv[:, None] * (z2 - 1.0), 0)
    np.testing.assert_allclose(g["params"]["log_std"], want, rtol=1e-4, atol=1e-6)


def test_lvc_has_the_same_gradient_and_the_outer_product_hessian_term():
    """At the behaviour policy: grad L_lvc = grad L_maml, and
    H_lvc - H_maml = -mean(A_i grad log pi_i grad log pi_i^T) (ProMP, eq. 7), here over the log-std."""
    policy = _tiny_policy()
    params = policy.init(jax.random.key(1))
    b = _batch(policy, params, seed=3)
    net, stats = params["net"], params["obs_norm"]

    def loss(log_std, est):
        n = {"params": {**net["params"], "log_std": log_std}}
        return inner_loss(policy, n, stats, b, est)

    ls = net["params"]["log_std"]
    np.testing.assert_allclose(jax.grad(loss)(ls, "lvc"), jax.grad(loss)(ls, "maml"), rtol=1e-5, atol=1e-7)
    h_lvc, h_maml = jax.hessian(loss)(ls, "lvc"), jax.hessian(loss)(ls, "maml")

    def logp(log_std):
        return policy.apply({"net": {"params": {**net["params"], "log_std": log_std}}, "obs_norm": stats}, {},
                            b.obs)[1].log_prob(b.action)

    jac = jax.jacobian(logp)(ls)  # [N, A]
    want = -jnp.einsum("n,ni,nj->ij", b.adv, jac, jac) / b.adv.shape[0]
    np.testing.assert_allclose(h_lvc - h_maml, want, rtol=1e-3, atol=1e-5)


def test_second_order_meta_gradient_matches_finite_differences():
    """d/dtheta of an outer surrogate at theta' = adapt(theta): jax.grad through the inner step agrees
    with central differences; the first-order shortcut does not."""
    policy = _tiny_policy()
    params = policy.init(jax.random.key(2))
    pre, post = _batch(policy, params, seed=4), _batch(policy, params, seed=5)
    stats = params["obs_norm"]

    def outer(net, first_order=False):
        adapted = adapt(policy, net, stats, pre, 1.0, "maml", first_order)
        return inner_loss(policy, adapted, stats, post, "lvc")

    flat, unravel = jax.flatten_util.ravel_pytree(params["net"])
    direction = jax.random.normal(jax.random.key(9), flat.shape)
    direction = direction / jnp.linalg.norm(direction)
    eps = 1e-2
    fd = (outer(unravel(flat + eps * direction)) - outer(unravel(flat - eps * direction))) / (2 * eps)
    second = jnp.dot(jax.flatten_util.ravel_pytree(jax.grad(outer)(params["net"]))[0], direction)
    first = jnp.dot(jax.flatten_util.ravel_pytree(jax.grad(lambda n: outer(n, True))(params["net"]))[0], direction)
    assert abs(float(second - fd)) < 0.02 * abs(float(fd)) + 1e-4, (second, fd)
    assert abs(float(first - fd)) > 5 * abs(float(second - fd)), (first, second, fd)


# -- conjugate gradient and TRPO ---------------------------------------------------------------------


def test_conjugate_gradient_solves_spd_systems():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    a = (m @ m.T + 6 * np.eye(6)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    x = conjugate_gradient(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), 6)  # exact in n iterations
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-3, atol=1e-4)


def test_trpo_step_goes_to_the_trust_region_boundary_along_the_natural_gradient():
    """objective g.x, KL 0.5 x^T A x: the step is -sqrt(2 delta / g^T A^-1 g) A^-1 g, and the KL of the
    accepted step is delta (the full step passes the line search)."""
    a = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    g = jnp.array([1.0, -2.0])
    x0 = {"w": jnp.zeros(2)}
    new, m = trpo_step(lambda p: (g @ p["w"], 0.5 * p["w"] @ a @ p["w"]), x0, max_kl=0.01, cg_iters=10,
                       cg_damping=0.0, ls_steps=10, ls_backtrack=0.5)
    nat = np.linalg.solve(np.asarray(a), np.asarray(g))
    want = -np.sqrt(2 * 0.01 / (np.asarray(g) @ nat)) * nat
    np.testing.assert_allclose(new["w"], want, rtol=1e-4)
    assert float(m["accepted"]) == 1.0 and float(m["step_frac"]) == 1.0
    np.testing.assert_allclose(m["kl"], 0.01, rtol=1e-4)


def test_trpo_line_search_backtracks_and_rejects():
    """A KL that grows 4x faster beyond the linear model forces shorter steps; an objective that never
    improves leaves the params as they were."""
    g = jnp.array([1.0, 0.0])
    quad = lambda p: 0.5 * p["w"] @ p["w"]  # noqa: E731
    steep = lambda p: quad(p) + 40.0 * jnp.sum(p["w"] ** 4)  # noqa: E731
    x0 = {"w": jnp.zeros(2)}
    new, m = trpo_step(lambda p: (g @ p["w"], steep(p)), x0, max_kl=0.5, cg_iters=5, cg_damping=0.0, ls_steps=10,
                       ls_backtrack=0.5)
    assert float(m["accepted"]) == 1.0 and float(m["step_frac"]) < 1.0 and float(m["kl"]) <= 0.5
    new, m = trpo_step(lambda p: (g @ p["w"] + 10 * quad(p) ** 0.5 * 3, quad(p)), x0, max_kl=0.5, cg_iters=5,
                       cg_damping=0.0, ls_steps=4, ls_backtrack=0.5)
    assert float(m["accepted"]) == 0.0
    np.testing.assert_array_equal(new["w"], x0["w"])


# -- a tiny run, the agent, export -------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """MAML-TRPO on point-goal, 32 tasks x 1 rollout (the agent adapts from one episode too), 20
    meta-iterations (one jitted call)."""
    L = learners.get("maml")
    c = L.default_config(ENV, meta_batch=32, rollouts_per_task=1, hidden=(16,), total_steps=32 * 100 * 2 * 20)
    env = sim.make(ENV, batch_size=L.env_batch(c), mode="fixed")
    trainer = L.make_train(c, env)
    params, metrics = jax.jit(trainer)(jax.random.key(0))
    return L, c, params, jax.device_get(metrics)


def test_maml_learns_to_adapt(trained):
    """Training: the TRPO steps are taken and the post-adaptation return rises above the pre-adaptation one."""
    _, _, _, m = trained
    assert m["accepted"].mean() > 0.7 and not m["nonfinite"].any()
    assert m["kl"].max() <= 0.01 + 1e-6
    assert m["adapt_gain"][-4:].mean() > 3.0, m["adapt_gain"]


def test_agent_adapts_on_held_out_worlds(trained):
    """The agent's one inner step on its first episode makes the second episode better, paired over
    128 held-out worlds (the evaluation's trial loop)."""
    from meta_rl.evaluate import compiled_run_trials, eval_tasks

    L, c, params, _ = trained
    agent = L.make_agent(c, sim.make(ENV, mode="fixed"), params, True)  # built on its training mode's env
    env = sim.make(ENV, batch_size=128, mode="trial", split="interp")  # evaluated on trials, as proteus eval does
    res = compiled_run_trials(env)(agent, eval_tasks(env, 128, "interp"), jax.random.key(1))
    ep = np.asarray(res.episode_returns)
    gain = ep[:, 1] - ep[:, 0]
    assert gain.mean() - 1.96 * gain.std(ddof=1) / np.sqrt(len(gain)) > 5, gain  # 13.0 +- 1.3 measured


def test_agent_exports_with_parity(trained, tmp_path):
    """The agent (adapted weights and episode in its state) exports through the generic tracer."""
    from deploy.export import export_agent

    L, c, params, _ = trained
    env = sim.make(ENV, batch_size=2, mode="fixed")
    agent = L.make_agent(c, env, params, True)
    rep = export_agent(agent, tmp_path / "maml.onnx", {"control_dt": 0.1, "env_id": ENV, "episodes_per_trial": 2,
                                                       "episode_length": 100})
    assert rep.max_action_error < 1e-5 and rep.max_carry_error < 1e-5
    assert "net.params.mean.kernel_in" in rep.metadata["inputs"]


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, why", [
    ("inner_lr", 0.0, "must be > 0"),
    ("inner_lr", float("nan"), "must be finite"),
    ("rollouts_per_task", 0, "must lie in"),
    ("meta_batch", 2.5, "must be an integer"),
    ("estimator", "dice", "must be one of"),
    ("max_kl", -1.0, "must be > 0"),
    ("ls_backtrack", 1.0, "must lie in (0, 1)"),
    ("total_steps", 10, "less than one meta-iteration"),
])
def test_bad_config_is_named(field, value, why):
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(MAMLConfig(), **{field: value})
    assert e.value.field == field and why in e.value.why


def test_env_batch_and_horizon_mismatch_refused():
    L = learners.get("maml")
    c = L.default_config(ENV, meta_batch=2, rollouts_per_task=3, total_steps=1200)
    with pytest.raises(ValueError, match=r"does not match \(meta_batch, rollouts_per_task\) = \(2, 3\)"):
        L.make_train(c, sim.make(ENV, batch_size=6, mode="fixed"))
    with pytest.raises(ValueError, match="horizon=101 is longer than point-goal's episode"):
        L.make_train(dataclasses.replace(c, horizon=101, total_steps=10**6), sim.make(ENV, batch_size=(2, 3),
                                                                                         mode="fixed"))


def test_discrete_envs_refused_by_the_preset():
    with pytest.raises(ValueError, match="maml needs continuous actions; bandit-k5-n10"):
        learners.get("maml").default_config("bandit-k5-n10")


# -- through the CLI ---------------------------------------------------------------------------------


def test_cli_train_eval_finetune_and_export(tmp_path, capsys):
    """``proteus train maml`` makes a run folder; ``proteus eval --finetune --episodes 3`` scores it
    after 0, 1 and 2 inner steps beside a PPO baseline fine-tuned by the same step and a random
    initialization, all paired on the same worlds; ``proteus export`` writes a parity-checked ONNX."""
    import json

    from proteus.cli import main

    maml, ppo = tmp_path / "maml", tmp_path / "ppo"
    main(["train", "maml", "--env", ENV, "--meta-batch", "2", "--rollouts-per-task", "2", "--hidden", "8",
          "--steps", "1600", "--out", str(maml), "--no-progress"])
    main(["train", "ppo", "--env", ENV, "--num-envs", "4", "--num-steps", "8", "--hidden", "8", "--steps", "32",
          "--update-epochs", "1", "--num-minibatches", "1", "--out", str(ppo), "--no-progress"])
    main(["eval", str(maml), "--tasks", "8", "--split", "train", "--baseline", str(ppo), "--finetune",
          "--episodes", "3"])
    report = json.loads((maml / "eval" / "report.json").read_text())
    assert report["episodes_per_trial"] == 3
    row = report["splits"]["train"]
    assert set(row["baselines"]) == {"ppo", "ppo + maml step", "random init + maml step"}
    assert len(row["policy"]["episode_means"]) == 3
    for d in row["paired"].values():
        assert {"policy_minus", "ci95", "last_episode_minus", "last_episode_ci95"} <= set(d)
    assert report["baselines"]["ppo + maml step"]["finetuned_by"] == "maml"
    assert "episode 3 alone (after adaptation)" in capsys.readouterr().out
    # --adapt-episodes reaches a gradient-learner baseline too: the run against itself plays identically
    main(["eval", str(maml), "--tasks", "8", "--split", "train", "--baseline", str(maml), "--episodes", "3",
          "--adapt-episodes", "2", "--overwrite"])
    report = json.loads((maml / "eval" / "report.json").read_text())
    row = report["splits"]["train"]
    assert report["baselines"]["maml"]["adapt_episodes"] == report["adapt_episodes"] == 2
    np.testing.assert_allclose(row["baselines"]["maml"]["episode_means"], row["policy"]["episode_means"])
    main(["export", str(maml)])
    assert (maml / "policy.onnx").stat().st_size > 0


@pytest.mark.parametrize("env_id", ["cheetah-dir", "ant-dir", "reacher-goal", "pendulum-swingup", "cartpole-balance"])
def test_robot_presets_fit_the_episode(env_id):
    """The preset's rollouts never outlast the env's episode (the trainer refuses that), and cover it
    whole for the cheetah and the ant."""
    from meta_rl.presets import maml_preset

    length = sim.entry(env_id).factory("native").unwrapped.episode_length
    horizon = maml_preset(env_id)["horizon"]
    assert horizon <= length and (horizon == length or not env_id.startswith(("cheetah", "ant")))
