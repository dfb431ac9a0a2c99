"""Issue 19: the RL² network candidates (an input embedding, separate actor and critic heads) and
``proteus bench learn`` (time-to-result)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deploy.export import export_onnx
from meta_rl.configs import ConfigError, PPOConfig
from meta_rl.networks import Policy, PolicySpec, reset_carry
from proteus.bench_learn import CANDIDATES, Curve, Point, parse_candidate

OBS = ("a", "b", "c", "d")


def spec(discrete: bool, **kw) -> PolicySpec:
    base = dict(kind="gru", obs_names=OBS, hidden=(), core_size=8, embed=8, heads=(8,), normalize_obs=False)
    base.update(kw)
    if discrete:
        return PolicySpec(action_names=("x", "y", "z"), discrete=True, **base)
    return PolicySpec(action_names=("u", "v"), discrete=False, action_low=(-1.0, -2.0), action_high=(1.0, 2.0), **base)


def perturbed(policy: Policy, seed: int) -> dict:
    """Random params far from init (heads included), in the flax tree's structure."""
    rng = np.random.default_rng(seed)
    params = policy.init(jax.random.key(seed))
    net = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape) / np.sqrt(max(x.shape[0], 1)), x.dtype),
                       params["net"])
    return {**params, "net": net}


def test_embedding_and_heads_are_in_the_network():
    p = Policy(spec(True)).init(jax.random.key(0))["net"]["params"]
    assert p["embed"]["kernel"].shape == (len(OBS), 8)
    assert p["actor_0"]["kernel"].shape == (8, 8) and p["critic_0"]["kernel"].shape == (8, 8)
    assert p["logits"]["kernel"].shape == (8, 3) and p["value"]["kernel"].shape == (8, 1)
    plain = Policy(spec(True, embed=0, heads=())).init(jax.random.key(0))["net"]["params"]
    assert not {"embed", "actor_0", "critic_0"} & set(plain)  # the defaults build the old network


def test_heads_are_separate():
    """The value does not move when only the actor head's weights change, and vice versa."""
    policy = Policy(spec(True))
    params = perturbed(policy, 1)
    obs = jnp.asarray(np.random.default_rng(0).standard_normal((5, len(OBS))), jnp.float32)
    carry = policy.init_carry(5)
    _, dist, value = policy.apply(params, carry, obs)
    moved = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 1.0 if "actor_0" in jax.tree_util.keystr(path) else x, params)
    _, dist2, value2 = policy.apply(moved, carry, obs)
    np.testing.assert_array_equal(np.asarray(value), np.asarray(value2))
    assert not np.allclose(np.asarray(dist.logits), np.asarray(dist2.logits))


def check_reset_matches_fresh(policy: Policy, params, done: list[bool], seed: int, warm_steps: int = 5):
    """After ``warm_steps`` random steps, the rows reset by ``done`` give exactly a fresh policy's output on
    the same inputs; the rows not reset do not."""
    rng = np.random.default_rng(seed)
    batch = len(done)
    step = jax.jit(policy.apply)
    carry = policy.init_carry(batch)
    for _ in range(warm_steps):
        carry, _, _ = step(params, carry, jnp.asarray(rng.standard_normal((batch, len(OBS))), jnp.float32))
    carry = reset_carry(carry, jnp.array(done), policy.init_carry(batch))
    obs = jnp.asarray(rng.standard_normal((batch, len(OBS))), jnp.float32)
    _, dist, value = step(params, carry, obs)
    _, fresh_dist, fresh_value = step(params, policy.init_carry(batch), obs)
    for i, reset in enumerate(done):
        if reset:
            np.testing.assert_array_equal(np.asarray(dist.mean())[i], np.asarray(fresh_dist.mean())[i])
            assert float(value[i]) == float(fresh_value[i])
        else:
            assert not np.allclose(np.asarray(value)[i], np.asarray(fresh_value)[i])


def test_carry_reset_with_embedding():
    """After a trial ends, the reset carry gives exactly a fresh policy's output on the same inputs."""
    policy = Policy(spec(False))
    check_reset_matches_fresh(policy, perturbed(policy, 2), [True, False, True, False], seed=3)


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
def test_export_parity(tmp_path, discrete):
    policy = Policy(spec(discrete, normalize_obs=True, value_norm=discrete))  # PopArt params travel too
    params = perturbed(policy, 4)
    report = export_onnx(policy, params, tmp_path / "p.onnx", {"control_dt": 0.02, "note": "test"}, steps=48)
    assert report.max_action_error <= 1e-5 and report.max_carry_error <= 1e-5


def _layer_norm(v, scale, bias, eps=1e-5):
    mu = v.mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(v.var(-1, keepdims=True) + eps) * scale + bias


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_layer_norm_gru_golden():
    """The layer-normalized GRU step against the equations in NumPy, with random (not initial) norms."""
    from meta_rl.networks import LayerNormGRUCell

    cell, f = LayerNormGRUCell(5), 5
    rng = np.random.default_rng(0)
    h, x = rng.standard_normal((3, f)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    p = cell.init(jax.random.key(0), jnp.asarray(h), jnp.asarray(x))
    p = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), p)
    q = jax.tree.map(np.asarray, p)["params"]
    wx = _layer_norm((x @ q["input"]["kernel"]).reshape(3, 3, f), q["input_norm"]["scale"], q["input_norm"]["bias"])
    uh = _layer_norm((h @ q["recurrent"]["kernel"]).reshape(3, 3, f), q["recurrent_norm"]["scale"],
                     q["recurrent_norm"]["bias"])
    r, z = _sigmoid(wx[:, 0] + uh[:, 0]), _sigmoid(wx[:, 1] + uh[:, 1])
    n = np.tanh(wx[:, 2] + r * uh[:, 2])
    want = (1 - z) * n + z * h
    got, out = cell.apply(p, jnp.asarray(h), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(out))


def test_layer_norm_lstm_golden():
    from meta_rl.networks import LayerNormLSTMCell

    cell, f = LayerNormLSTMCell(5), 5
    rng = np.random.default_rng(1)
    c, h, x = (rng.standard_normal((3, d)).astype(np.float32) for d in (f, f, 4))
    p = cell.init(jax.random.key(0), (jnp.asarray(c), jnp.asarray(h)), jnp.asarray(x))
    p = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), p)
    q = jax.tree.map(np.asarray, p)["params"]
    g = _layer_norm((x @ q["input"]["kernel"]).reshape(3, 4, f), q["input_norm"]["scale"], q["input_norm"]["bias"]) \
        + _layer_norm((h @ q["recurrent"]["kernel"]).reshape(3, 4, f), q["recurrent_norm"]["scale"],
                      q["recurrent_norm"]["bias"])
    c2 = _sigmoid(g[:, 1]) * c + _sigmoid(g[:, 0]) * np.tanh(g[:, 2])
    h2 = _sigmoid(g[:, 3]) * np.tanh(_layer_norm(c2, q["cell_norm"]["scale"], q["cell_norm"]["bias"]))
    (gc, gh), out = cell.apply(p, (jnp.asarray(c), jnp.asarray(h)), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(gc), c2, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gh), h2, atol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_layer_norm_core_reset_and_export(tmp_path, kind):
    """The layer-normalized core is the network's core; a reset carry gives a fresh policy's output; ONNX parity."""
    policy = Policy(spec(False, kind=kind, core_norm=True))
    assert "recurrent_norm" in policy.init(jax.random.key(0))["net"]["params"]["core"]
    params = perturbed(policy, 5)
    check_reset_matches_fresh(policy, params, [True, False], seed=6, warm_steps=4)
    report = export_onnx(policy, params, tmp_path / "p.onnx", {"control_dt": 0.02, "note": "test"}, steps=32)
    assert report.max_action_error <= 1e-5 and report.max_carry_error <= 1e-5


def test_spec_round_trip_and_old_specs():
    s = spec(True)
    assert PolicySpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    old = s.to_dict()
    del old["embed"], old["heads"]  # a policy saved before these fields existed
    loaded = PolicySpec.from_dict(old)
    assert loaded.embed == 0 and loaded.heads == ()
    with pytest.raises(ValueError, match="embed"):
        spec(True, embed=-1)
    with pytest.raises(ValueError, match="heads"):
        spec(True, heads=(8, 0))


def test_config_refuses_bad_fields():
    with pytest.raises(ConfigError, match="heads"):
        PPOConfig(heads=(0,))
    with pytest.raises(ConfigError, match="embed"):
        PPOConfig(embed=-3)
    with pytest.raises(ConfigError, match="core_norm"):
        PPOConfig(network="mlp", core_norm=True)
    with pytest.raises(ValueError, match="core_norm"):
        spec(True, kind="mlp", core_norm=True)
    c = PPOConfig(network="gru", embed=128, heads=(128,))
    assert c.embed == 128 and c.heads == (128,)


def test_parse_candidate():
    assert parse_candidate("preset") == ("preset", {})
    assert parse_candidate("peer") == ("peer", CANDIDATES["peer"])
    assert parse_candidate("x:embed=64,heads=32x16,lr=0.003,anneal_lr=false") == (
        "x", {"embed": 64, "heads": (32, 16), "lr": 0.003, "anneal_lr": False})
    assert parse_candidate("none:heads=") == ("none", {"heads": ()})
    assert parse_candidate("p:value_norm=True,core_norm=False") == ("p", {"value_norm": True, "core_norm": False})
    with pytest.raises(ValueError, match="unknown candidate 'nope'"):
        parse_candidate("nope")
    with pytest.raises(ValueError, match="not field=value"):
        parse_candidate("x:embed")
    with pytest.raises(ValueError, match="widths like 128"):
        parse_candidate("x:heads=abc")


def test_time_to_target_is_the_first_crossing():
    pts = [Point(10.0, 100, 5.0, 0.80, 0.01), Point(20.0, 200, 6.0, 0.96, 0.01), Point(30.0, 300, 6.0, 0.94, 0.01),
           Point(40.0, 400, 6.3, 0.99, 0.01)]
    c = Curve("c", {}, pts, 10.0)
    assert c.first(0.95).wall_s == 20.0 and c.first(0.98).env_steps == 400 and c.first(0.999) is None


def test_cli_refusals(capsys):
    from proteus.cli import main

    for args, msg in ((["--tasks", "1"], "--tasks"), (["--max-seconds", "0"], "--max-seconds"),
                      (["--targets", "3"], "--targets"), (["--candidates", "bogus"], "unknown candidate"),
                      (["--candidates", "x:no_such_field=1"], "no_such_field")):
        with pytest.raises(SystemExit) as e:
            main(["bench", "learn", "--no-progress", *args])
        assert e.value.code == 2
        assert msg in capsys.readouterr().err


# -- PopArt --------------------------------------------------------------------------------------
def test_value_norm_golden():
    """Debiased moving averages, hand-computed: beta 0.5, targets [1, 3] then [5]."""
    from meta_rl import popart

    vn = popart.update(popart.ValueNorm.create(), jnp.array([1.0, 3.0]), 0.5)
    # debiased step 0.5 / (1 - 0.5) = 1: the batch's own mean 2 and variance 1
    np.testing.assert_allclose([vn.mu, vn.sigma], [2.0, 1.0], rtol=1e-6)
    vn = popart.update(vn, jnp.array([5.0]), 0.5)
    # as debiased moments: E[G] (0.5 * 2 * 0.5 + 0.5 * 5) / 0.75 = 4, E[G²] (0.25 * 5 + 0.5 * 25) / 0.75 = 18.333,
    # var 18.333 - 16 = 2.333
    np.testing.assert_allclose([vn.mu, vn.sigma], [4.0, np.sqrt(13.75 / 0.75 - 16.0)], rtol=1e-6)
    assert float(vn.updates) == 2.0
    const = popart.update(popart.ValueNorm.create(), jnp.full((4,), 7.0), 0.1)
    assert float(const.mu) == 7.0 and float(const.var) == 0.0 and float(const.sigma) == pytest.approx(popart.MIN_SCALE)
    big = popart.update(popart.ValueNorm.create(), jnp.array([400.0, 400.5]), 0.1)  # no float32 cancellation
    np.testing.assert_allclose([big.mu, big.sigma], [400.25, 0.25], rtol=1e-6)


def test_popart_preserves_outputs():
    from meta_rl import popart

    rng = np.random.default_rng(0)
    head = {"kernel": jnp.asarray(rng.standard_normal((6, 1)), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(1), jnp.float32)}
    old = popart.update(popart.ValueNorm.create(), jnp.asarray(rng.normal(3.0, 2.0, 64), jnp.float32), 0.3)
    new = popart.update(old, jnp.asarray(rng.normal(-10.0, 9.0, 64), jnp.float32), 0.3)
    x = jnp.asarray(rng.standard_normal((10, 6)), jnp.float32)
    before = (x @ head["kernel"] + head["bias"]) * old.sigma + old.mu
    h2 = popart.preserve_outputs(head, old, new)
    after = (x @ h2["kernel"] + h2["bias"]) * new.sigma + new.mu
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-5, atol=1e-5)
    assert float(new.sigma) != pytest.approx(float(old.sigma))


def test_policy_reports_denormalized_values():
    from meta_rl import popart

    policy = Policy(spec(True, value_norm=True))
    params = policy.init(jax.random.key(0))
    assert isinstance(params["value_norm"], popart.ValueNorm)
    obs = jnp.ones((3, len(OBS)))
    _, _, v0 = policy.apply(params, policy.init_carry(3), obs)
    moved = {**params, "value_norm": params["value_norm"].replace(mu=jnp.float32(2.0), var=jnp.float32(9.0))}
    _, _, v1 = policy.apply(moved, policy.init_carry(3), obs)
    np.testing.assert_allclose(np.asarray(v1), 3.0 * np.asarray(v0) + 2.0, rtol=1e-6)


def test_rl2_trains_with_value_norm_and_new_network():
    """Two tiny RL² updates with the embedding, separate heads and PopArt: the statistics follow the
    targets and the head's outputs were preserved through each rescale (finite, no skipped steps)."""
    from meta_rl.presets import default_config
    from proteus.runs import build
    from proteus.runspec import RunSpec

    c = default_config("rl2", "bandit-k5-n10", total_steps=2 * 16 * 10, num_envs=16, num_minibatches=2,
                       embed=16, heads=(16,), core_size=16, value_norm=True, value_norm_beta=0.5, reward_scale=1.0)
    trainer = build(RunSpec("rl2", "bandit-k5-n10", "jax", 0, c))
    ts, metrics = jax.jit(trainer.run, static_argnums=1)(trainer.init(jax.random.key(0)), 2)
    vn = ts.params["value_norm"]
    assert float(vn.updates) == 2.0
    assert 0.0 < float(vn.mu) < 10.0 and float(vn.sigma) > 0.0  # a 10-pull trial's returns lie in [0, 10]
    assert int(np.sum(metrics["nonfinite"])) == 0
    assert np.all(np.isfinite(np.asarray(metrics["value_sigma"])))


def test_bench_learn_end_to_end(tmp_path, capsys):
    """A tiny run on the CLI: one line per finished candidate, the table, the JSON curve and the plot."""
    from proteus.cli import main

    out = tmp_path / "learn.json"
    main(["bench", "learn", "--no-progress", "--env", "bandit-k5-n10", "--candidates", "tiny:num_envs=16",
          "--steps", "3200", "--eval-every", "1600", "--tasks", "50", "--json", str(out),
          "--plot", str(tmp_path / "learn.png")])
    text = capsys.readouterr().out
    assert "tiny:" in text and "steps/s" in text and "last" in text
    data = json.loads(out.read_text())
    curve = data["curves"][0]
    assert [p["env_steps"] for p in curve["points"]] == [1600, 3200]
    assert all(0.0 < p["ratio"] < 1.5 for p in curve["points"])
    assert (tmp_path / "learn.png").stat().st_size > 0


@pytest.mark.slow
def test_preset_reaches_95_percent_of_gittins_on_k10_n100_in_8m_steps():
    """The README's time-to-result row: RL² from the bandit-k10-n100 preset (its 30M-step schedule,
    stopped after 8M env steps, about 4 minutes on one core) scores >= 95% of Gittins on 1,000 held-out
    worlds, evaluated by the code of `proteus bench learn` and `proteus eval` (measured: 95% at 5.4M)."""
    from proteus.bench_learn import learn_curve, make_evaluator

    evaluator, _, _ = make_evaluator("bandit-k10-n100", 1000, "train")
    curve = learn_curve("rl2", "bandit-k10-n100", "preset", {}, steps=None, max_seconds=1.0,
                        eval_every=8_000_000, seed=0, stop_at=None, evaluator=evaluator, progress=False)
    (point,) = curve.points  # max_seconds=1: one chunk of 8M steps, then the evaluation
    assert point.env_steps >= 7_900_000 and point.ratio >= 0.95, point
