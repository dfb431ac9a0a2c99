"""The learner platform (:mod:`meta_rl.learners`): a learner registered from outside ``proteus/`` and
``deploy/`` trains, resumes, evaluates and exports through the CLI; training is a pure function."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import sim
from meta_rl import learners
from meta_rl.agent import PolicyAgent
from meta_rl.networks import Policy, PolicySpec
from meta_rl.rollout import collect, start
from proteus.cli import main
from proteus.runs import RunSpec, read_metrics, train_run

ENV = "point-goal"


# -- a toy learner, defined entirely here -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HillConfig:
    """Hill climbing on the weights of a small MLP policy (a toy: the platform test's learner)."""

    total_steps: int = 2048
    """env steps over the whole run."""
    num_envs: int = 8
    """parallel worlds."""
    num_steps: int = 16
    """steps per evaluation of a candidate."""
    sigma: float = 0.05
    """perturbation scale."""
    hidden: tuple[int, ...] = (8,)
    """MLP widths."""

    @property
    def steps_per_update(self) -> int:
        return 2 * self.num_envs * self.num_steps  # the incumbent and the candidate

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.steps_per_update)


@struct.dataclass
class HillState:
    params: dict
    key: jax.Array
    update: jax.Array


def _spec(c: HillConfig, env) -> PolicySpec:
    return PolicySpec.for_env(env, "mlp", hidden=tuple(c.hidden), normalize_obs=False)


class HillTrainer:
    def __init__(self, config: HillConfig, env):
        self.config, self.env = config, env
        self.policy = Policy(_spec(config, env))

    def _score(self, params, key):
        runner = start(self.env, self.policy, key)
        _, traj, _ = collect(self.env, self.policy, params, runner, key, self.config.num_steps)
        return traj.reward.mean()

    def init(self, key):
        k_p, k = jax.random.split(key)
        return HillState(self.policy.init(k_p), k, jnp.zeros((), jnp.int32))

    def update(self, ts):
        key, k_noise, k_eval = jax.random.split(ts.key, 3)
        leaves, treedef = jax.tree.flatten(ts.params)
        noise = jax.random.split(k_noise, len(leaves))
        cand = jax.tree.unflatten(treedef, [x + self.config.sigma * jax.random.normal(k, x.shape, x.dtype)
                                            for x, k in zip(leaves, noise)])
        old, new = self._score(ts.params, k_eval), self._score(cand, k_eval)
        params = jax.tree.map(lambda a, b: jnp.where(new > old, b, a), ts.params, cand)
        metrics = {"episode_return": jnp.maximum(old, new), "nonfinite": (~jnp.isfinite(new)).astype(jnp.int32)}
        return HillState(params, key, ts.update + 1), metrics

    def run(self, ts, num_updates):
        return jax.lax.scan(lambda s, _: self.update(s), ts, None, length=num_updates)

    def agent_params(self, ts):
        return ts.params

    def __call__(self, key):
        ts, metrics = self.run(self.init(key), self.config.num_updates)
        return self.agent_params(ts), metrics


HILL = learners.Learner(
    name="hill",
    description="toy hill climbing on MLP weights (tests only)",
    config=HillConfig,
    make_train=HillTrainer,
    init_agent_params=lambda c, env, key: Policy(_spec(c, env)).init(key),
    make_agent=lambda c, env, params, det: PolicyAgent(params, Policy(_spec(c, env)), det),
    env_mode=lambda c: "fresh",
    presets=lambda env_id: {},
    steps_per_update=lambda c: c.steps_per_update,
    num_updates=lambda c: c.num_updates,
    policy_spec=_spec,
    env_batch=lambda c: c.num_envs,
)


@pytest.fixture
def hill():
    learners.register(HILL)
    yield HILL
    learners.unregister("hill")


def test_a_new_learner_trains_resumes_evaluates_and_exports_through_the_cli(hill, tmp_path, capsys):
    out = tmp_path / "hill"
    # killed after 2 of 8 updates, then the CLI (learner named after the options) finishes the run
    train_run(RunSpec("hill", ENV, "auto", 0, HillConfig()), out, checkpoint_every=1, max_updates=2, progress=False)
    main(["train", "--env", ENV, "hill", "--out", str(out), "--checkpoint-every", "1", "--no-progress"])
    assert "resuming" in capsys.readouterr().out
    rows = read_metrics(out)
    assert [r["update"] for r in rows] == list(range(1, 9))
    # the same run uninterrupted gives the same weights (resume is exact)
    whole = tmp_path / "whole"
    main(["train", "hill", "--env", ENV, "--out", str(whole), "--no-progress"])
    a = json.loads((out / "config.json").read_text())
    assert a["algo"] == "hill" and a["config"]["sigma"] == 0.05
    assert (out / "policy" / "params.msgpack").read_bytes() == (whole / "policy" / "params.msgpack").read_bytes()

    main(["eval", str(out), "--tasks", "16", "--split", "train", "--baseline", str(whole), "--baseline", str(whole)])
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["algo"] == "hill" and report["oracle"]["kind"] == "known"
    row = report["splits"]["train"]
    assert list(row["baselines"]) == ["whole", "whole'"]  # two --baseline flags, named by folder
    # the same weights as the resumed run: identical returns world by world
    assert row["paired"]["baseline"]["policy_minus"] == 0.0 and row["paired"]["baseline"]["ci95"] == 0.0

    main(["export", str(out)])
    assert (out / "policy.onnx").is_file() and "max |action error|" in capsys.readouterr().out


def test_train_help_lists_registered_learners(hill, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "ppo" in text and "rl2" in text and "hill" in text


def test_learner_config_flags_and_errors(hill, capsys):
    with pytest.raises(SystemExit):
        main(["train", "hill", "--env", ENV, "--help"])
    assert "--sigma" in capsys.readouterr().out
    with pytest.raises(KeyError, match="unknown learner 'hil'.*Did you mean hill"):
        learners.get("hil")
    with pytest.raises(ValueError, match="hill has no config field.*sigmaa"):
        HILL.default_config(ENV, sigmaa=1.0)
    with pytest.raises(ValueError, match="already registered"):
        learners.register(dataclasses.replace(HILL, description="another"))


def test_training_is_a_pure_function_vmapped_over_seeds():
    """``jit(vmap(train))`` over two seeds gives what two separate runs give (the built-in RL²)."""
    rl2 = learners.get("rl2")
    c = rl2.default_config("bandit-k5-n10", total_steps=2 * 16 * 10, num_envs=16, num_steps=10, num_minibatches=1,
                           update_epochs=1, hidden=(), core_size=8, normalize_obs=False)
    env = sim.make("bandit-k5-n10", batch_size=c.num_envs, mode=rl2.env_mode(c))
    trainer = rl2.make_train(c, env)
    keys = jax.random.split(jax.random.key(0), 2)
    both, metrics = jax.jit(jax.vmap(trainer))(keys)
    assert metrics["loss"].shape == (2, c.num_updates)
    single = jax.jit(trainer)
    for i in range(2):
        one, _ = single(keys[i])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(both)):
            np.testing.assert_allclose(np.asarray(b)[i], np.asarray(a), rtol=1e-5, atol=1e-6)
    first = jax.tree.leaves(both)[0]
    assert not np.allclose(first[0], first[1])  # the seeds differ
