"""``<id>+task``: a MuJoCo robot env with its task parameters observed, for training oracles, and
``proteus eval --oracle`` playing such a run on the plain env."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim

ENV = "reacher-goal"


def test_task_parameters_are_appended_to_the_observation():
    env = sim.make(ENV + "+task", batch_size=3, mode="fresh")
    base = sim.make(ENV, batch_size=3, mode="fresh")
    names = env.observation_space.names
    T = len(names) - len(base.observation_space.names)
    assert T >= 1 and names[: -T] == base.observation_space.names
    assert all(n.startswith("task.") for n in names[-T:])
    params = env.sample_params(jax.random.key(1))
    s = env.reset(jax.random.key(0), params)
    s2 = base.reset(jax.random.key(0), params)
    np.testing.assert_array_equal(s.obs[:, :-T], s2.obs)  # the same world, the same base observation
    values = base.unwrapped.param_values(params)
    want = jnp.stack([values[n[len("task."):]] for n in names[-T:]], -1)
    np.testing.assert_allclose(s.obs[:, -T:], want)
    s = env.step(s, jnp.zeros((3,) + env.action_space.shape))
    np.testing.assert_allclose(s.obs[:, -T:], want)


def test_envs_without_task_parameters_have_no_task_variant():
    with pytest.raises(ValueError, match="no task parameters to observe"):
        sim.make("pendulum-swingup+task")
    with pytest.raises(KeyError, match="unknown env"):
        sim.entry("nope+task")


def test_eval_plays_a_task_observing_oracle_on_the_plain_env(tmp_path):
    from proteus.cli import main

    ppo, oracle = tmp_path / "ppo", tmp_path / "oracle"
    small = ["--num-envs", "4", "--num-steps", "8", "--hidden", "8", "--steps", "32", "--update-epochs", "1",
             "--num-minibatches", "1", "--no-progress"]
    main(["train", "ppo", "--env", ENV, "--out", str(ppo), *small])
    main(["train", "ppo", "--env", ENV + "+task", "--out", str(oracle), *small])
    main(["eval", str(ppo), "--tasks", "4", "--split", "train", "--oracle", str(oracle)])
    report = json.loads((ppo / "eval" / "report.json").read_text())
    assert report["oracle"]["kind"] == "run" and "observes each world's task" in report["oracle"]["note"]
    assert report["splits"]["train"]["oracle"]["mean"] is not None
    with pytest.raises(SystemExit):  # a +task run is an oracle only, not a baseline
        main(["eval", str(ppo), "--tasks", "4", "--split", "train", "--baseline", str(oracle), "--overwrite"])
