"""DQN and NEC (meta_rl/dqn.py, meta_rl/nec.py) and what they share (meta_rl/value.py, meta_rl/replay.py):
the replay buffer, N-step targets, the TD and NEC losses, keys moving under the NEC loss, and a run
of each through the CLI (kill, resume exactly, eval, export)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from meta_rl import dnd, learners
from meta_rl import replay as rb
from meta_rl.configs import ConfigError, DQNConfig, NECConfig
from meta_rl.dqn import DQNHead, td_loss
from meta_rl.nec import NECHead, _trainable, _with, q_loss
from meta_rl.value import epsilon_at, n_step_targets
from proteus.cli import main
from proteus.runs import read_metrics, train_run
from proteus.runspec import RunSpec

ENV = "cartpole-balance-discrete"


def test_replay_wraps_around_and_samples_only_what_it_holds():
    buf = rb.init({"x": jnp.zeros(()), "a": jnp.zeros((), jnp.int32)}, 4)
    buf = rb.add(buf, {"x": jnp.asarray([1.0, 2.0, 3.0]), "a": jnp.asarray([1, 2, 3])})
    assert int(buf.size) == 3 and int(buf.head) == 3
    got = rb.sample(buf, jax.random.PRNGKey(0), 200)
    assert set(np.asarray(got["x"]).tolist()) == {1.0, 2.0, 3.0}  # never the empty slot
    buf = rb.add(buf, {"x": jnp.asarray([4.0, 5.0, 6.0]), "a": jnp.asarray([4, 5, 6])})
    assert int(buf.size) == 4 and int(buf.head) == 2  # the oldest two (1, 2) were overwritten
    np.testing.assert_array_equal(np.asarray(buf.items["x"]), [5.0, 6.0, 3.0, 4.0])
    np.testing.assert_array_equal(np.asarray(buf.items["a"]), [5, 6, 3, 4])
    with pytest.raises(ValueError, match="exceeds the buffer's capacity 4"):
        rb.add(buf, {"x": jnp.zeros(5), "a": jnp.zeros(5, jnp.int32)})


def test_n_step_targets_against_a_hand_computed_trajectory():
    # column 0: terminated at t = 1; column 1: truncated at t = 2 (bootstraps from its final observation)
    reward = jnp.asarray([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0], [5.0, 1.0]])
    terminated = jnp.asarray([[False, False], [True, False], [False, False], [False, False], [False, False]])
    done = terminated | jnp.asarray([[False, False], [False, False], [False, True], [False, False], [False, False]])
    v = jnp.asarray([[10.0, 8.0], [20.0, 8.0], [30.0, 6.0], [40.0, 8.0], [50.0, 8.0]])  # V(s_{t+1}) in its episode
    g = 0.5
    np.testing.assert_allclose(np.asarray(n_step_targets(reward, terminated, done, v, g, 1)[:, 0]),
                               [6.0, 2.0, 18.0, 24.0, 30.0])
    np.testing.assert_allclose(np.asarray(n_step_targets(reward, terminated, done, v, g, 2)[:, 0]),
                               [2.0, 2.0, 15.0, 19.0, 30.0])
    # n = 3 at t = 2: r2 + g r3 + g² r4 + g³ V(s5) (the segment ends: the bootstrap after it)
    three = n_step_targets(reward, terminated, done, v, g, 3)
    np.testing.assert_allclose(np.asarray(three[:, 0]), [2.0, 2.0, 3 + 2 + 1.25 + 0.125 * 50, 19.0, 30.0])
    # column 1, n = 3: t = 0: 1 + .5 + .25 (1 + .5 * 6) (the truncated episode's final value, no further)
    np.testing.assert_allclose(np.asarray(three[:, 1]), [1 + 0.5 + 0.25 * (1 + 3), 1 + 0.5 * (1 + 3), 4.0,
                                                         1 + 0.5 * (1 + 4), 5.0])
    with pytest.raises(ValueError, match="n >= 1"):
        n_step_targets(reward, terminated, done, v, g, 0)


def test_epsilon_schedule_and_config_refusals():
    c = DQNConfig(eps_start=1.0, eps_end=0.1, eps_decay_steps=1000)
    np.testing.assert_allclose([float(epsilon_at(c, jnp.asarray(s))) for s in (0, 500, 1000, 5000)],
                               [1.0, 0.55, 0.1, 0.1], rtol=1e-6)
    with pytest.raises(ConfigError, match="NECConfig.k=60: must be <= capacity = 50"):
        NECConfig(capacity=50, k=60)
    with pytest.raises(ConfigError, match="batch_size=64: must be <= buffer_size = 32"):
        DQNConfig(buffer_size=32, batch_size=64, num_envs=2, num_steps=8)
    with pytest.raises(ConfigError, match="eps_end"):
        DQNConfig(eps_end=2.0)
    import sim
    from meta_rl.nec import make_train

    env = sim.make("point-goal", batch_size=8, mode="fresh")
    with pytest.raises(ValueError, match="nec needs discrete actions; point-goal"):
        make_train(NECConfig(), env)


def test_td_loss_is_the_huber_loss_to_the_double_dqn_target():
    head = DQNHead(hidden=(), n_actions=2)  # Q(s) = s @ W + b
    w_online = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
    w_target = jnp.asarray([[3.0, 0.0], [0.0, 1.0]])
    net = lambda w: {"q": {"params": {"Dense_0": {"kernel": w, "bias": jnp.zeros(2)}}}}  # noqa: E731
    batch = {"obs": jnp.asarray([[1.0, 1.0], [2.0, 0.0]]), "action": jnp.asarray([1, 0]),
             "reward": jnp.asarray([1.0, 0.5]), "discount": jnp.asarray([0.5, 0.0]),
             "next_obs": jnp.asarray([[1.0, 1.0], [0.0, 1.0]])}
    # row 0: Q = [1, 2], taken 2; online picks action 1 at s' ([1, 2]); the target values it 1: y = 1 + 0.5
    # row 1: Q = [2, 0], taken 2; discount 0: y = 0.5
    err = np.asarray([2.0 - 1.5, 2.0 - 0.5])
    huber = np.where(np.abs(err) <= 1, 0.5 * err**2, np.abs(err) - 0.5)
    got = td_loss(head, net(w_online), net(w_target), batch, double=True)
    np.testing.assert_allclose(float(got), huber.mean(), rtol=1e-6)
    # plain DQN: the target's own max at s' (row 0: max(3, 1) = 3, y = 2.5)
    err = np.asarray([2.0 - 2.5, 2.0 - 0.5])
    huber = np.where(np.abs(err) <= 1, 0.5 * err**2, np.abs(err) - 0.5)
    np.testing.assert_allclose(float(td_loss(head, net(w_online), net(w_target), batch, double=False)), huber.mean(),
                               rtol=1e-6)


def _nec_params():
    head = NECHead(hidden=(), key_dim=2, k=2, delta=1e-3)
    embed = {"params": {"Dense_0": {"kernel": jnp.eye(2), "bias": jnp.zeros(2)}}}  # h(s) = s
    mems = []
    for keys, vals in (([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [1.0, 2.0, 3.0]), ([[0.5, 0.5]], [4.0])):
        m = dnd.init(4, 2)
        mems.append(dnd.write(m, jnp.asarray(keys), jnp.asarray(vals), rule="replace"))
    return head, {"embed": embed, "memory": jax.tree.map(lambda *x: jnp.stack(x), *mems)}


def test_nec_q_is_the_kernel_weighted_mean_and_the_loss_moves_keys_values_and_embedding():
    head, params = _nec_params()
    obs = jnp.asarray([[0.1, 0.0]])
    q = np.asarray(head(params, obs))[0]
    # action 0: the 2 nearest of (0,0), (1,0), (0,1) to (0.1, 0) are (0,0) at d² .01 and (1,0) at d² .81
    w = np.asarray([1 / (0.01 + 1e-3), 1 / (0.81 + 1e-3)])
    np.testing.assert_allclose(q[0], (w @ [1.0, 2.0]) / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(q[1], 4.0, rtol=1e-6)  # one entry: weight 1
    batch = {"obs": obs, "action": jnp.asarray([0]), "target": jnp.asarray([5.0])}
    grads = jax.grad(lambda t: q_loss(head, _with(params, t), batch)[0])(_trainable(params))
    gk = np.asarray(grads["keys"][0])
    assert np.abs(gk[0]).sum() > 0 and np.abs(gk[1]).sum() > 0  # the two neighbours' keys get gradient
    assert np.abs(gk[2]).sum() == 0 and np.abs(np.asarray(grads["keys"][1])).sum() == 0  # the rest do not
    assert np.abs(np.asarray(grads["values"][0][:2])).sum() > 0
    assert np.abs(np.asarray(grads["embed"]["params"]["Dense_0"]["kernel"])).sum() > 0
    # one Adam step moves the neighbours' keys and lowers the loss
    opt = optax.adam(1e-2)
    t = _trainable(params)
    before = float(q_loss(head, params, batch)[0])
    updates, _ = opt.update(grads, opt.init(t), t)
    moved = _with(params, optax.apply_updates(t, updates))
    assert not np.allclose(np.asarray(moved["memory"].keys[0][:2]), np.asarray(params["memory"].keys[0][:2]))
    assert float(q_loss(head, moved, batch)[0]) < before


@pytest.mark.parametrize("algo,extra", [
    ("dqn", ["--target-period", "4"]),
    ("nec", ["--capacity", "64", "--key-dim", "4", "--k", "3", "--n-step", "3"]),
])
def test_value_learner_trains_resumes_evaluates_and_exports_through_the_cli(algo, extra, tmp_path, capsys):
    tiny = ["--num-envs", "2", "--num-steps", "8", "--steps", "64", "--learning-starts", "24", "--batch-size", "8",
            "--grad-steps", "2", "--buffer-size", "64", "--hidden", "8", *extra]
    out = tmp_path / algo
    config = learners.get(algo).default_config(
        ENV, num_envs=2, num_steps=8, total_steps=64, learning_starts=24, batch_size=8, grad_steps=2, buffer_size=64,
        hidden=(8,), **({"target_period": 4} if algo == "dqn" else dict(capacity=64, key_dim=4, k=3, n_step=3)))
    # killed after 2 of 4 updates, then the CLI finishes the run from its checkpoint (replay and memories included)
    train_run(RunSpec(algo, ENV, "auto", 0, config), out, checkpoint_every=1, max_updates=2, progress=False)
    main(["train", algo, "--env", ENV, "--out", str(out), "--checkpoint-every", "1", "--no-progress", *tiny])
    assert "resuming" in capsys.readouterr().out
    rows = read_metrics(out)
    assert [r["update"] for r in rows] == [1, 2, 3, 4]
    assert np.isnan(rows[0]["loss"]) if rows[0]["loss"] is not None else True  # no minibatch before 24 steps
    assert all(np.isfinite(r["loss"]) for r in rows[1:])
    whole = tmp_path / "whole"
    main(["train", algo, "--env", ENV, "--out", str(whole), "--no-progress", *tiny])
    assert (out / "policy" / "params.msgpack").read_bytes() == (whole / "policy" / "params.msgpack").read_bytes()

    main(["eval", str(out), "--tasks", "4", "--split", "train"])
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["algo"] == algo and np.isfinite(report["splits"]["train"]["policy"]["mean"])
    main(["export", str(out)])
    printed = capsys.readouterr().out
    assert (out / "policy.onnx").is_file() and "max |action error| 0," in printed
