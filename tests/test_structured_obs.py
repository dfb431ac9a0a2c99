"""Structured observations: a dict of a uint8 image and a vector, through the trial wrapper, the
policy (a CNN torso for the image, an MLP for the vector), PPO/RL² training and evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_rl import learners
from meta_rl.agent import PolicyAgent
from meta_rl.evaluate import compiled_run_trials, eval_tasks
from meta_rl.networks import Policy, PolicySpec
from sim.core import Box, Dict
from sim.tasks.point_nav import PointNav
from sim.wrappers import RL2_PART, Trial, VmapEnv, Wrapper, with_mode

SIZE = 8


class GoalPicture(Wrapper):
    """Point navigation whose observation is ``{"image": SIZE x SIZE x 1 uint8 with the goal lit,
    "state": the point's position}``: the goal is visible, but only in the picture."""

    def __init__(self):
        super().__init__(PointNav("goal", episode_length=10))

    @property
    def observation_space(self):
        return Dict({"image": Box.image(SIZE, SIZE, ("lum",)), "state": Box(("x", "y"), -1.0, 1.0)})

    def _obs(self, s):
        cell = jnp.clip(((s.params.target + 1.0) / 2.0 * SIZE).astype(jnp.int32), 0, SIZE - 1)
        img = jnp.zeros((SIZE, SIZE, 1), jnp.uint8).at[cell[1], cell[0], 0].set(255)
        return s.replace(obs={"image": img, "state": s.obs})

    def reset(self, key, params):
        return self._obs(self.env.reset(key, params))

    def step(self, state, action):
        inner = self.env.step(state.replace(obs=state.obs["state"]), action)
        return self._obs(inner)


def test_dict_spaces_validate_and_describe():
    space = Dict({"image": Box.image(4, 5), "state": Box(("x",), -1.0, 1.0)})
    assert space.keys() == ("image", "state") and space["image"].shape == (4, 5, 3)
    assert space.describe() == "Dict(image: Box(4x5x3 uint8), state: Box(1))"
    assert space.sample(jax.random.key(0))["image"].dtype == jnp.uint8
    with pytest.raises(ValueError, match="Dict part names must be unique"):
        Dict((("a", Box(("x",), 0.0, 1.0)), ("a", Box(("y",), 0.0, 1.0))))
    with pytest.raises(ValueError, match="Box shape"):
        Box(("r", "g"), 0, 255, shape=(4, 4, 3))


def test_trial_wrapper_adds_the_rl2_inputs_as_a_part():
    env = Trial(VmapEnv(GoalPicture(), 3), episodes_per_trial=2)
    assert env.observation_space.keys() == ("image", "state", RL2_PART)
    s = env.reset(jax.random.key(0), env.sample_params(jax.random.key(1)))
    assert s.obs["image"].shape == (3, SIZE, SIZE, 1) and s.obs["image"].dtype == jnp.uint8
    assert s.obs[RL2_PART].shape == (3, env.observation_space[RL2_PART].shape[0])
    s = jax.jit(env.step)(s, jnp.full((3, 2), 0.5))
    assert float(s.obs[RL2_PART][0, -2]) == pytest.approx(float(s.reward[0]))  # prev_reward


def test_policy_builds_a_cnn_for_images_and_an_mlp_for_vectors():
    env = with_mode(VmapEnv(GoalPicture(), 2), "trial", episodes_per_trial=2)
    spec = PolicySpec.for_env(env, "gru", hidden=(16,), core_size=8)
    assert [(n, k) for n, _, k in spec.obs_parts] == [("image", "image"), ("state", "vector"), (RL2_PART, "vector")]
    assert spec.obs_names[:2] == ("state.x", "state.y")
    assert PolicySpec.from_dict(spec.to_dict()) == spec
    policy = Policy(spec)
    params = policy.init(jax.random.key(0))
    layers = set(params["net"]["params"])
    assert {"image_conv_0", "image_conv_1", "image_proj", "state_torso_0", f"{RL2_PART}_torso_0", "core"} <= layers
    assert set(params["obs_norm"]) == {"state", RL2_PART}  # images are not normalized
    s = env.reset(jax.random.key(1), env.sample_params(jax.random.key(2)))
    @jax.jit
    def head(obs):
        _, dist, value = policy.apply(params, policy.init_carry(2), obs)
        return value, dist.mode(), dist.sample(seed=jax.random.key(3))

    value, mode, sample = head(s.obs)
    assert value.shape == (2,) and sample.shape == (2, 2)
    # the image matters: another goal picture, another action
    lit = s.obs["image"].at[:, 0, 0, 0].set(255)
    _, mode2, _ = head({**s.obs, "image": lit})
    assert not np.allclose(mode, mode2)


def test_rl2_trains_and_evaluates_on_image_observations():
    rl2 = learners.get("rl2")
    c = rl2.config(total_steps=2 * 16 * 20, num_envs=16, num_steps=20, num_minibatches=1, update_epochs=1,
                   network="gru", hidden=(16,), core_size=8)
    env = with_mode(VmapEnv(GoalPicture(), c.num_envs), rl2.env_mode(c), episodes_per_trial=2)
    params, metrics = jax.jit(rl2.make_train(c, env))(jax.random.key(0))
    assert np.isfinite(np.asarray(metrics["loss"])).all() and int(np.sum(metrics["nonfinite"])) == 0
    agent = rl2.make_agent(c, env, params, True)
    assert isinstance(agent, PolicyAgent)
    ev = with_mode(VmapEnv(GoalPicture(), 32), "trial", episodes_per_trial=2)
    r = compiled_run_trials(ev)(agent, eval_tasks(ev, 32), jax.random.key(1))
    assert r.episode_returns.shape == (32, 2) and np.isfinite(np.asarray(r.trial_return)).all()


def test_dict_observation_policy_exports_with_one_input_per_part(tmp_path):
    from deploy.export import export_onnx
    from deploy.runtime import OnnxPolicy

    env = with_mode(VmapEnv(GoalPicture(), 4), "trial", episodes_per_trial=2)
    policy = Policy(PolicySpec.for_env(env, "gru", hidden=(16,), core_size=8))
    params = policy.init(jax.random.key(0))
    s = env.reset(jax.random.key(1), env.sample_params(jax.random.key(2)))
    recorded = jax.tree.map(lambda x: np.asarray(x)[None], s.obs)  # one recorded step, [1, B, ...]
    report = export_onnx(policy, params, tmp_path / "p.onnx", {"control_dt": 0.1, "episodes_per_trial": 2,
                                                               "episode_length": 10}, parity_obs=recorded, steps=8)
    assert report.max_action_error <= 1e-5 and report.max_carry_error <= 1e-5
    ort = OnnxPolicy(tmp_path / "p.onnx")
    assert ort.input_names == ["obs.image", "obs.state", f"obs.{RL2_PART}", "h_in"]
    action, carry = ort.step({k: np.asarray(v) for k, v in s.obs.items()}, ort.init_carry(4))
    expect, _ = PolicyAgent(params, policy, True).policy_step(policy.init_carry(4), s.obs)
    np.testing.assert_allclose(action, np.asarray(expect), atol=1e-5)
