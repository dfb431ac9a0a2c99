"""Issue 16: the sparse-reward arc tasks, MAESN's latent maths, a tiny run, its agent and its export."""

from __future__ import annotations

import dataclasses

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from meta_rl import learners
from meta_rl.configs import ConfigError, MAESNConfig
from randomization.ranges import SplitRange
from sim.tasks.point_nav import SPARSE_RADIUS, ArcParams, PointNav, arc_reward

ENV = "point-arc"


# -- the arc tasks -----------------------------------------------------------------------------------


def test_sparse_reward_is_zero_outside_the_radius_and_shares_the_dense_goal():
    goal = jnp.array([0.6, 1.9])
    pos = jax.random.uniform(jax.random.key(0), (4000, 2), minval=-3.0, maxval=3.0)
    pos = jnp.concatenate([pos, goal + 0.25 * jax.random.normal(jax.random.key(1), (500, 2))])
    d = np.asarray(jnp.linalg.norm(pos - goal, axis=-1))
    sparse = np.asarray(arc_reward(pos, ArcParams(goal, jnp.asarray(True)), SPARSE_RADIUS))
    dense = np.asarray(arc_reward(pos, ArcParams(goal, jnp.asarray(False)), SPARSE_RADIUS))
    outside = d > SPARSE_RADIUS
    assert outside.sum() > 100 and (~outside).sum() > 100
    assert np.all(sparse[outside] == 0.0) and np.all(sparse[~outside] == 1.0)
    np.testing.assert_allclose(dense, -d, rtol=1e-6)
    # the same goal: the sparse region is the dense reward's top, around its maximum
    assert np.all(dense[~outside] >= -SPARSE_RADIUS) and np.all(dense[outside] < -SPARSE_RADIUS)


def test_arc_splits_reward_kinds_and_held_out_goals():
    """Training goals are dense and never on a held-out arc; held-out goals are sparse; point-arc and
    point-arc-sparse draw the same goal from the same key (only the reward kind differs)."""
    arc, arc_sparse = PointNav("arc"), PointNav("arc-sparse")
    keys = jax.random.split(jax.random.key(3), 5000)
    bounds = {"train": [(0, 60), (120, 180)], "interp": [(60, 120)], "extrap": [(180, 225)]}
    for split, intervals in bounds.items():
        p = jax.vmap(lambda k: arc.sample_params(k, split))(keys)
        q = jax.vmap(lambda k: arc_sparse.sample_params(k, split))(keys)
        np.testing.assert_array_equal(np.asarray(p.target), np.asarray(q.target))
        np.testing.assert_allclose(np.linalg.norm(np.asarray(p.target), axis=-1), 2.0, rtol=1e-5)
        ang = np.asarray(arc.param_values(p)["goal_angle_deg"])
        inside = np.zeros(ang.shape, bool)
        for lo, hi in intervals:
            inside |= (ang >= lo - 1e-3) & (ang <= hi + 1e-3)
        assert inside.all(), (split, ang[~inside][:5])
        assert np.all(np.asarray(p.sparse) == (split != "train"))
        assert np.all(np.asarray(q.sparse))
    # a training goal never falls on the held-out arcs, away from their edges
    ang = np.asarray(arc.param_values(jax.vmap(lambda k: arc.sample_params(k, "train"))(keys))["goal_angle_deg"])
    assert not np.any((ang > 60.5) & (ang < 119.5)) and not np.any(ang > 180.5)


def test_sparse_episode_rewards_only_at_the_goal():
    """A point driven straight at a held-out goal collects 1 per step inside the radius and 0 elsewhere."""
    env = PointNav("arc")
    p = env.sample_params(jax.random.key(0), "extrap")
    s = env.reset(jax.random.key(1), p)
    direction = p.target / jnp.abs(p.target).max()
    rewards, dists = [], []
    for _ in range(30):
        s = env.step(s, direction)
        rewards.append(float(s.reward))
        dists.append(float(jnp.linalg.norm(s.obs - p.target)))
    rewards, dists = np.array(rewards), np.array(dists)
    np.testing.assert_array_equal(rewards, (dists <= SPARSE_RADIUS).astype(np.float32))
    assert rewards.sum() >= 3


@pytest.mark.parametrize("radius", [0.0, -0.5, float("nan"), float("inf")])
def test_bad_sparse_radius_is_named(radius):
    with pytest.raises(ValueError, match="sparse_radius"):
        PointNav("arc", sparse_radius=radius)


def test_goal_set_overlapping_a_held_out_arc_is_refused():
    with pytest.raises(ValueError, match="goal_angle_deg"):
        SplitRange("goal_angle_deg", train=(0.0, 200.0), interp=(60.0, 120.0), extrap=((180.0, 225.0),))


@pytest.mark.parametrize("field, value, why", [
    ("latent_dim", 0, "must lie in"),
    ("latent_lr", 0.0, "must be > 0"),
    ("kl_weight", -0.1, "must be >= 0"),
    ("num_tasks", 4, "must be >= meta_batch"),
    ("learn_step", 1, "must be True or False"),
])
def test_bad_maesn_config_is_named(field, value, why):
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(MAESNConfig(meta_batch=8, num_tasks=16), **{field: value})
    assert e.value.field == field and why in e.value.why


# -- the latent maths --------------------------------------------------------------------------------


def test_prior_kl_matches_the_closed_form():
    from meta_rl.maesn import prior_kl

    mu = jax.random.normal(jax.random.key(0), (7, 3))
    ls = 0.5 * jax.random.normal(jax.random.key(1), (7, 3))
    want = distrax.MultivariateNormalDiag(mu, jnp.exp(ls)).kl_divergence(
        distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3)))
    np.testing.assert_allclose(prior_kl({"mu": mu, "log_sigma": ls}), want, rtol=1e-5, atol=1e-6)
    assert float(prior_kl({"mu": jnp.zeros(3), "log_sigma": jnp.zeros(3)})) == 0.0


def test_latent_step_is_the_reparameterized_policy_gradient():
    """``adapt_latent`` moves ``mu`` and ``log_sigma`` by minus the step times the surrogate's gradient
    through ``z = mu + sigma * eps``, checked against central finite differences."""
    from meta_rl.maesn import LatentBatch, LatentPolicy, adapt_latent, log_prob
    from meta_rl.maml import policy_spec

    c = learners.get("maesn").default_config(ENV, hidden=(8,), latent_dim=2)
    lp = LatentPolicy(policy_spec(c, sim.make(ENV, mode="fixed")), 2)
    params = lp.init(jax.random.key(0))
    k = jax.random.split(jax.random.key(1), 4)
    n = 64
    batch = LatentBatch(obs=jax.random.normal(k[0], (n, 2)), action=jax.random.normal(k[1], (n, 2)),
                        log_prob=jnp.zeros(n), adv=jax.random.normal(k[2], (n,)), mask=jnp.ones(n),
                        eps=jnp.repeat(jax.random.normal(k[3], (4, 2)), n // 4, 0))
    latent = {"mu": jnp.array([0.3, -0.2]), "log_sigma": jnp.array([-0.1, 0.2])}
    step = {"mu": jnp.array([0.7, 1.3]), "log_sigma": jnp.array([0.4, 0.9]), "net": jnp.asarray(0.1)}
    x = {"net": params["net"], "latent": latent}
    new = adapt_latent(lp, x, params["obs_norm"], step, batch, "maml", False, True)

    def surrogate(lat):
        return -(log_prob(lp, params["net"], params["obs_norm"], lat, batch) * batch.adv).mean()

    h = 1e-2
    for name in ("mu", "log_sigma"):
        for i in range(2):
            e = jnp.zeros(2).at[i].set(h)
            up = surrogate({**latent, name: latent[name] + e})
            down = surrogate({**latent, name: latent[name] - e})
            fd = float(up - down) / (2 * h)
            want = float(latent[name][i]) - float(step[name][i]) * fd
            np.testing.assert_allclose(float(new["latent"][name][i]), want, atol=2e-3)
    # the weights stay put unless adapt_policy
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new["net"]), jax.tree.leaves(params["net"])))
    moved = adapt_latent(lp, x, params["obs_norm"], step, batch, "maml", True, True)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(moved["net"]), jax.tree.leaves(params["net"])))


# -- a tiny run and its agent ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """MAESN on point-arc's dense training goals: 10 tasks, 10 rollouts each, the latent alone adapting
    (the weights stay), 30 meta-iterations in one jitted call."""
    L = learners.get("maesn")
    c = L.default_config(ENV, meta_batch=10, rollouts_per_task=10, num_tasks=10, hidden=(32,), latent_lr=5.0,
                         adapt_policy=False, total_steps=10 * 10 * 100 * 2 * 30, adapt_episodes=10)
    env = sim.make(ENV, batch_size=L.env_batch(c), mode="fixed")
    params, metrics = jax.jit(L.make_train(c, env))(jax.random.key(0))
    return L, c, params, jax.device_get(metrics)


def test_training_moves_the_latents_and_keeps_the_trust_region(trained):
    _, c, params, m = trained
    assert m["accepted"].mean() > 0.7 and not m["nonfinite"].any()
    assert m["kl"].max() <= c.max_kl + 1e-6
    assert params["latent"]["mu"].shape == (c.num_tasks, c.latent_dim)
    assert m["latent_mu_norm"][-1] > 0.3  # the tasks' latents spread from the prior (0.89 measured)
    assert m["adapt_gain"][-5:].mean() > 3.0, m["adapt_gain"]  # 9.5 measured


def test_adapting_the_latent_beats_not_adapting_it(trained):
    """The same agent with its step sizes set to 0 (the latent stays at the prior), paired over 64 worlds:
    after one latent step on 10 episodes, the 11th episode's return is higher (+16.8 ± 10.8 measured)."""
    from meta_rl.evaluate import compiled_run_trials, eval_tasks

    L, c, params, _ = trained
    fixed = sim.make(ENV, mode="fixed")
    agent = L.make_agent(c, fixed, params, True)
    still = L.make_agent(c, fixed, {**params, "step": jax.tree.map(jnp.zeros_like, params["step"])}, True)
    env = sim.make(ENV, batch_size=64, mode="trial", episodes_per_trial=11)
    worlds = eval_tasks(env, 64, "train")
    run = compiled_run_trials(env)
    moved = np.asarray(run(agent, worlds, jax.random.key(1)).episode_returns)
    stayed = np.asarray(run(still, worlds, jax.random.key(1)).episode_returns)
    np.testing.assert_allclose(moved[:, :10], stayed[:, :10])  # the same until the step
    gain = moved[:, 10] - stayed[:, 10]
    assert gain.mean() - 1.96 * gain.std(ddof=1) / np.sqrt(len(gain)) > 0, gain


def test_agent_draws_one_latent_per_episode(trained):
    """Within an episode the agent's ``z`` is fixed; a new episode draws a new one, and the episode
    buffer keeps each episode's noise for the inner step."""
    L, c, params, _ = trained
    agent = L.make_agent(c, sim.make(ENV, mode="fixed"), params, True)
    state = agent.initial_state(3)
    obs = jnp.zeros((3, 2))
    _, s1 = agent.act(state, obs, jax.random.key(0))
    s1 = {**s1, "t": s1["t"] + 1}
    _, s2 = agent.act(s1, obs, jax.random.key(1))
    np.testing.assert_array_equal(s1["eps"], s2["eps"])
    assert not np.allclose(s1["eps"][0], s1["eps"][1])  # rows draw their own
    np.testing.assert_array_equal(s1["episode_eps"][:, 0], s1["eps"])
    fresh = {**s2, "t": jnp.zeros_like(s2["t"]), "k": jnp.ones_like(s2["k"])}
    _, s3 = agent.act(fresh, obs, jax.random.key(2))
    assert not np.allclose(s3["eps"], s2["eps"])
    np.testing.assert_array_equal(s3["episode_eps"][:, 1], s3["eps"])
    np.testing.assert_array_equal(s3["episode_eps"][:, 0], s1["eps"])


# -- through the CLI, and on the robot ---------------------------------------------------------------


def test_cli_train_eval_finetune_export_and_table(tmp_path, capsys):
    """``proteus train maesn`` (and its latent-space baseline) -> ``proteus eval --finetune
    --adapt-episodes`` (returns.npz: the same worlds for every player) -> the adaptation table ->
    ``proteus export`` (z as a state input, the latent in the metadata; a z of the wrong size refused)."""
    import json
    import subprocess
    import sys

    from deploy.runtime import OnnxPolicy
    from proteus.cli import main

    run, base = tmp_path / "maesn", tmp_path / "latent"
    tiny = ["--env", ENV, "--meta-batch", "2", "--rollouts-per-task", "2", "--num-tasks", "4", "--hidden", "8",
            "--no-progress"]
    main(["train", "maesn", *tiny, "--steps", "1600", "--out", str(run)])
    main(["train", "maesn", *tiny, "--steps", "800", "--latent-baseline", "--out", str(base)])
    main(["eval", str(run), "--tasks", "6", "--split", "extrap", "--baseline", str(base), "--finetune", "--episodes",
          "4", "--adapt-episodes", "2"])
    report = json.loads((run / "eval" / "report.json").read_text())
    assert set(report["splits"]["extrap"]["baselines"]) == {"latent", "random init + maesn step"}
    with np.load(run / "eval" / "returns.npz") as z:
        assert set(z.files) == {"extrap/policy", "extrap/oracle", "extrap/latent", "extrap/random init + maesn step"}
        assert z["extrap/policy"].shape == (6, 4)
        assert np.all(z["extrap/policy"] >= 0)  # held-out goals: sparse rewards
    out = subprocess.run([sys.executable, "scripts/adaptation_table.py", str(run / "eval"), "--every", "2", "--after",
                          "0", "1", "--plot", str(tmp_path / "s.png")], capture_output=True, text=True, check=True)
    assert "| latent | 1 |" in out.stdout and (tmp_path / "s.png").stat().st_size > 0
    bad = subprocess.run([sys.executable, "scripts/adaptation_table.py", str(run / "eval"), "--every", "2", "--after",
                          "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "need 12 episodes per trial" in bad.stderr

    # --env: the same run scored on point-arc-sparse's training goals (sparse there), in eval-ENV/
    main(["eval", str(run), "--env", "point-arc-sparse", "--tasks", "6", "--split", "train", "--baseline", str(base),
          "--episodes", "2"])
    other = json.loads((run / "eval-point-arc-sparse" / "report.json").read_text())
    assert other["env"] == "point-arc-sparse" and other["trained_on"] == ENV
    with np.load(run / "eval-point-arc-sparse" / "returns.npz") as z:
        assert np.all(z["train/policy"] >= 0) and set(np.unique(z["train/oracle"] > 0)) == {True}
    with pytest.raises(SystemExit):
        main(["eval", str(run), "--env", "bandit-k5-n10", "--tasks", "6", "--split", "train", "--overwrite"])
    assert "does not fit bandit-k5-n10" in capsys.readouterr().err

    main(["export", str(run)])
    pol = OnnxPolicy(run / "policy.onnx")
    assert "z_in" in pol.carry_names and pol.latent["input"] == "z_in"
    np.testing.assert_array_equal(pol.init_carry(1)["z_in"], np.zeros((1, 2), np.float32))  # the prior's mean
    with pytest.raises(ValueError, match=r"state 'z_in': float32 \(1, 3\), expected float32 \(1, 2\)"):
        from deploy.runtime import Controller

        class Robot:
            obs_names, action_names = pol.metadata["obs_names"], pol.metadata["action_names"]
            control_dt = pol.metadata["control_dt"]

            def read_observation(self):
                return np.zeros(2, np.float32), 0.0

            def write_command(self, a):
                pass

        Controller(run / "policy.onnx", Robot(), explore=True, seed=0).set_state({"z_in": np.zeros((1, 3), np.float32)})
    capsys.readouterr()


def test_robot_flow_records_latents_and_adapt_fits_the_latent(tmp_path, capsys):
    """On the pendulum stand-in: the exported MAESN policy explores with a latent drawn per episode,
    the recording keeps each episode's z, ``proteus adapt`` fits the latent from the prior and exports
    a policy whose z starts at the fitted mean; episodes without latents are refused, naming them."""
    import json

    from deploy.episodes import EpisodeRecorder, load_episodes
    from deploy.runtime import OnnxPolicy
    from proteus.cli import main

    env_id = "pendulum-swingup"
    run, eps = tmp_path / "run", tmp_path / "eps.npz"
    main(["train", "maesn", "--env", env_id, "--meta-batch", "1", "--rollouts-per-task", "2", "--num-tasks", "2",
          "--hidden", "8", "--steps", "400", "--out", str(run), "--no-progress"])
    main(["export", str(run)])
    main(["deploy", str(run / "policy.onnx"), "--standin", env_id, "--worlds", "1", "--episodes", "3", "--explore",
          "--record", str(eps), "--latency-ms", "0:0", "--friction", "None", "--training-return", "1.0"])
    ep = load_episodes(eps)
    assert ep["latent"].shape == (3, 2) and len({tuple(z) for z in ep["latent"]}) == 3
    main(["adapt", str(run), "--episodes", str(eps)])
    report = json.loads((run / "adapted" / "adapt.json").read_text())
    mu = np.asarray(report["latent"]["mu"], np.float32)
    assert mu.shape == (2,) and np.abs(mu).max() > 0
    adapted = OnnxPolicy(run / "adapted" / "policy.onnx")
    np.testing.assert_allclose(adapted.init_carry(1)["z_in"][0], mu, atol=1e-6)
    np.testing.assert_allclose(adapted.latent["mu"], mu, atol=1e-6)
    rec = EpisodeRecorder(ep["obs_names"], ep["action_names"], 4)
    rec.add(ep["obs"][0, 0], ep["action"][0, 0], 0.0)
    rec.end_episode()
    rec.save(tmp_path / "plain.npz")
    with pytest.raises(SystemExit):
        main(["adapt", str(run), "--episodes", str(tmp_path / "plain.npz"), "--out", str(tmp_path / "p.onnx")])
    assert "'latent'" in capsys.readouterr().err
