"""MFEC (meta_rl/mfec.py): returns, values, memory writes, and a run through the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_rl import dnd, learners
from meta_rl.configs import ConfigError, MFECConfig
from meta_rl.mfec import discounted_returns, q_values, write_returns
from proteus.cli import main
from proteus.runs import read_metrics, train_run
from proteus.runspec import RunSpec

ENV = "cartpole-balance-discrete"
TINY = ["--num-envs", "2", "--num-steps", "20", "--capacity", "64", "--key-dim", "4", "--k", "3", "--steps", "160"]


def test_discounted_returns_against_a_hand_computed_trajectory():
    reward = jnp.asarray([[1.0], [2.0], [3.0], [4.0], [5.0]])
    done = jnp.asarray([[False], [True], [False], [False], [False]])
    g = discounted_returns(reward, done, 0.5)
    # episode 1 ends at t = 1: 1 + 0.5 * 2, 2; episode 2 runs past the segment: 3 + .5 * 4 + .25 * 5, ...
    np.testing.assert_allclose(np.asarray(g[:, 0]), [2.0, 2.0, 6.25, 6.5, 5.0])


def _params(obs_dim=2, n_actions=2, capacity=8):
    mem = jax.vmap(lambda _: dnd.init(capacity, obs_dim))(jnp.arange(n_actions))
    return {"proj": jnp.eye(obs_dim), "memory": mem}


def test_values_seen_unseen_and_empty_and_the_max_rule():
    c = MFECConfig(capacity=8, key_dim=2, k=2, match_tol=1e-8, write_chunk=4, num_envs=1, num_steps=5, total_steps=5)
    obs = jnp.asarray([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    action = jnp.asarray([0, 0, 0, 0, 1])
    returns = jnp.asarray([1.0, 4.0, 2.0, 10.0, 7.0])
    params = write_returns(_params(), obs, action, returns, c)
    q = q_values(params, jnp.asarray([[0.0, 0.0], [0.9, 0.0], [5.0, 5.0]]), k=2, match_tol=1e-8)
    # action 0: a seen state holds the max return written there (4, not 1); an unseen one averages its
    # 2 nearest (0.9 -> [1, 0]: 2 and [0, 0]: 4); action 1 holds one entry, found for every query
    np.testing.assert_allclose(np.asarray(q[:, 0]), [4.0, 3.0, (10.0 + 2.0) / 2])
    np.testing.assert_allclose(np.asarray(q[:, 1]), [7.0, 7.0, 7.0])
    assert int(jnp.sum(params["memory"].stamps[0] >= 0)) == 3  # the duplicate state is one entry
    empty = q_values(_params(), obs, k=2, match_tol=1e-8)
    assert np.all(np.asarray(empty) == 0.0)  # an empty memory is worth 0


def test_config_and_env_refusals():
    with pytest.raises(ConfigError, match="k=12: must be <= capacity = 8"):
        MFECConfig(capacity=8, k=12)
    with pytest.raises(ConfigError, match="epsilon"):
        MFECConfig(epsilon=1.5)
    import sim
    from meta_rl.mfec import make_train

    env = sim.make("pendulum-swingup", batch_size=8, mode="fresh", backend="native")
    with pytest.raises(ValueError, match="mfec needs discrete actions; pendulum-swingup"):
        make_train(MFECConfig(), env)


def test_mfec_trains_resumes_evaluates_and_exports_through_the_cli(tmp_path, capsys):
    out = tmp_path / "mfec"
    config = learners.get("mfec").default_config(ENV, num_envs=2, num_steps=20, capacity=64, key_dim=4, k=3,
                                                 total_steps=160)
    # killed after 2 of 4 updates, then the CLI finishes the run from its checkpoint (memories included)
    train_run(RunSpec("mfec", ENV, "auto", 0, config), out, checkpoint_every=1, max_updates=2, progress=False)
    main(["train", "mfec", "--env", ENV, "--out", str(out), "--checkpoint-every", "1", "--no-progress", *TINY])
    assert "resuming" in capsys.readouterr().out
    rows = read_metrics(out)
    assert [r["update"] for r in rows] == [1, 2, 3, 4]
    sizes = [r["memory_size"] for r in rows]  # 40 new states an update, until an action's 64 slots are full
    assert sizes[0] == 40 and sizes == sorted(sizes) and sizes[-1] <= 128
    whole = tmp_path / "whole"
    main(["train", "mfec", "--env", ENV, "--out", str(whole), "--no-progress", *TINY])
    assert (out / "policy" / "params.msgpack").read_bytes() == (whole / "policy" / "params.msgpack").read_bytes()

    main(["eval", str(out), "--tasks", "4", "--split", "train"])
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["algo"] == "mfec" and np.isfinite(report["splits"]["train"]["policy"]["mean"])
    main(["export", str(out)])
    printed = capsys.readouterr().out
    assert (out / "policy.onnx").is_file() and "max |action error| 0," in printed
