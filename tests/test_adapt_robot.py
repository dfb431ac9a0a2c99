"""Adaptation on the robot (issue 15): a MAML run's ``policy.onnx`` explores in the stand-in, the
runtime records the episodes, ``proteus adapt`` turns them into an adapted ``policy.onnx``, and
``adapt.onnx`` computes the same adapted weights with onnxruntime alone."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deploy.episodes import EpisodeRecorder, check_episodes, load_episodes, pad_to
from deploy.runtime import OnnxPolicy

ENV = "pendulum-swingup"


@pytest.fixture(scope="module")
def robot_flow(tmp_path_factory):
    """train (1 meta-iteration) -> export (policy.onnx + adapt.onnx) -> deploy --explore --record -> adapt."""
    from proteus.cli import main

    d = tmp_path_factory.mktemp("adapt")
    run, eps = d / "run", d / "eps.npz"
    main(["train", "maml", "--env", ENV, "--meta-batch", "1", "--rollouts-per-task", "2", "--hidden", "8",
          "--steps", "400", "--out", str(run), "--no-progress"])
    main(["export", str(run)])
    main(["deploy", str(run / "policy.onnx"), "--standin", ENV, "--worlds", "1", "--episodes", "2", "--explore",
          "--record", str(eps), "--latency-ms", "0:0", "--friction", "None", "--training-return", "1.0"])
    main(["adapt", str(run), "--episodes", str(eps)])
    return run, eps


def test_recorded_episodes_are_explored_whole_episodes(robot_flow):
    run, eps = robot_flow
    ep = load_episodes(eps)
    meta = OnnxPolicy(run / "policy.onnx").metadata
    assert ep["obs_names"] == tuple(meta["obs_names"]) and ep["action_names"] == tuple(meta["action_names"])
    assert ep["reward"].shape == (2, meta["episode_length"]) and np.all(ep["mask"] == 1)
    assert ep["control_dt"] == pytest.approx(meta["control_dt"])
    # sampled, not the mode: the recorded actions differ from the policy's deterministic ones
    pol = OnnxPolicy(run / "policy.onnx")
    mode, _ = pol.step(ep["obs"][0], {k: np.repeat(v, len(ep["obs"][0]), 0) for k, v in pol.init_carry(1).items()})
    assert np.abs(ep["action"][0] - mode).mean() > 0.1


def test_adapt_onnx_alone_gives_the_adapted_policy(robot_flow):
    """A robot with onnxruntime alone: the controller's state (policy.onnx's initial weights) and the
    recorded episodes through adapt.onnx (OnnxAdapter) give the weights ``proteus adapt`` (JAX) wrote
    into the adapted policy, within 1e-4; set as the controller's state, it then acts as that policy."""
    from deploy.runtime import Controller, OnnxAdapter

    run, eps = robot_flow
    pol = OnnxPolicy(run / "policy.onnx")
    meta = pol.metadata
    obs = np.linspace(-1, 1, len(meta["obs_names"])).astype(np.float32)

    class Robot:
        obs_names, action_names, control_dt = meta["obs_names"], meta["action_names"], meta["control_dt"]
        t = 0.0
        written = []

        def read_observation(self):
            self.t += 1e-3
            return obs, self.t

        def write_command(self, a):
            self.written.append(np.array(a))

    ctl = Controller(run / "policy.onnx", Robot(), clock=type("C", (), {"now": lambda self: Robot.t,
                                                                         "sleep_until": lambda self, t: None})())
    adapted_state = OnnxAdapter(run / "adapt.onnx")(ctl.carry, load_episodes(eps))
    adapted = OnnxPolicy(run / "adapted" / "policy.onnx")
    moved = 0.0
    for name, got in adapted_state.items():
        want = adapted.init_carry(1)[name]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        moved = max(moved, float(np.abs(want - ctl.carry[name]).max()))
    assert moved > 1e-4  # the step did move the weights
    report = json.loads((run / "adapted" / "adapt.json").read_text())
    assert report["episodes"] == 2 and report["weight_change_l2"] > 0
    ctl.set_state(adapted_state)  # the adapted weights drive the controller
    command = ctl.step()
    want, _ = adapted.step(obs[None], adapted.init_carry(1))
    np.testing.assert_allclose(command, np.clip(want[0], meta["action_low"], meta["action_high"]), atol=1e-4)
    with pytest.raises(ValueError, match="differ from the policy's"):
        ctl.set_state({"h_in": np.zeros((1, 3), np.float32)})


def test_bad_episode_files_are_refused_naming_the_difference(robot_flow, tmp_path, capsys):
    from proteus.cli import main

    run, eps = robot_flow
    ep = load_episodes(eps)
    meta = OnnxPolicy(run / "policy.onnx").metadata
    rec = EpisodeRecorder(["cos", "sin", "vel"], meta["action_names"], 5)
    rec.add([1, 0, 0], [0.1], 1.0)
    rec.end_episode()
    bad = rec.save(tmp_path / "names.npz")
    with pytest.raises(SystemExit) as e:
        main(["adapt", str(run), "--episodes", str(bad), "--out", str(tmp_path / "p.onnx")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "observation" in err and "cos" in err
    arrays = {k: ep[k] for k in ("obs", "action", "reward", "mask")}
    arrays["action"] = arrays["action"][:, :-3]  # a truncated action array
    np.savez(tmp_path / "shape.npz", **arrays, obs_names=np.asarray(ep["obs_names"]),
             action_names=np.asarray(ep["action_names"]))
    with pytest.raises(ValueError, match=r"action has shape \(2, 247, 1\), expected \(2, 250, 1\)"):
        load_episodes(tmp_path / "shape.npz")
    with pytest.raises(ValueError, match="longer than the policy's horizon"):
        check_episodes(ep, ep["obs_names"], ep["action_names"], 100)


def test_recorder_refuses_bad_steps(tmp_path):
    rec = EpisodeRecorder(["a", "b"], ["u"], 2, control_dt=0.1)
    with pytest.raises(ValueError, match="observation has 3 values, the policy reads 2"):
        rec.add([1, 2, 3], [0], 0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        rec.add([1, 2], [np.nan], 0.0)
    rec.add([1, 2], [0.5], 1.0)
    rec.add([1, 2], [0.5], 1.0)
    with pytest.raises(ValueError, match="longer than the horizon"):
        rec.add([1, 2], [0.5], 1.0)
    rec.end_episode()
    rec.add([3, 4], [0.1], 2.0)
    rec.end_episode()
    path = rec.save(tmp_path / "e.npz")
    ep = load_episodes(path)
    np.testing.assert_array_equal(ep["mask"], [[1, 1], [1, 0]])
    np.testing.assert_array_equal(ep["reward"], [[1, 1], [2, 0]])
    assert ep["control_dt"] == 0.1
    with pytest.raises(FileExistsError):
        rec.save(path)
    with pytest.raises(ValueError, match="not an episode file"):
        (tmp_path / "x.npz").write_text("nope")
        load_episodes(tmp_path / "x.npz")


def test_controller_explore_needs_exploration_outputs(tmp_path):
    """A policy without the exploration outputs (a PPO export) cannot explore: refused, named."""
    from deploy.export import export_onnx
    from deploy.runtime import Controller
    from meta_rl.networks import Policy, PolicySpec

    spec = PolicySpec(kind="mlp", obs_names=("x",), action_names=("u",), discrete=False, hidden=(4,),
                      action_low=(-1.0,), action_high=(1.0,), normalize_obs=False)
    policy = Policy(spec)
    export_onnx(policy, policy.init(jax.random.key(0)), tmp_path / "p.onnx", {"control_dt": 0.1}, steps=2)

    class Robot:
        obs_names, action_names, control_dt = ("x",), ("u",), 0.1

        def read_observation(self):
            return np.zeros(1, np.float32), 0.0

        def write_command(self, a):
            pass

    with pytest.raises(ValueError, match="no exploration outputs"):
        Controller(tmp_path / "p.onnx", Robot(), explore=True)


def test_adapt_function_is_the_agents_inner_step():
    """``adapt.onnx``'s function (env-unit actions, a batch of worlds) takes the same step as the
    evaluated MAML agent at an episode's end (distribution-unit samples in its buffer)."""
    import sim
    from meta_rl import learners

    L = learners.get("maml")
    c = L.default_config("point-goal", meta_batch=2, rollouts_per_task=1, hidden=(8,), total_steps=400)
    env = sim.make("point-goal", batch_size=(2, 1), mode="fixed")
    params = L.init_agent_params(c, env, jax.random.key(0))
    agent = L.make_agent(c, env, params, False)
    H, D = agent.episode_length, agent.policy_spec.obs_dim
    rng = np.random.default_rng(0)
    state = agent.initial_state(2)
    u = rng.normal(size=(2, H, 2)).astype(np.float32)
    ep = {"obs": rng.normal(size=(2, H, D)).astype(np.float32), "action": u,
          "reward": rng.normal(size=(2, H)).astype(np.float32)}
    state = {**state, "episode": {k: jnp.asarray(v)[:, None] for k, v in ep.items()}, "t": jnp.array([H, 60]),
             "ended": jnp.array([True, True])}
    want = agent.end_episode(state)["net"]
    spec = agent.policy_spec
    fn = L.adapt_function(c, spec, params["obs_norm"])
    mask = (np.arange(H) < np.array([[H], [60]])).astype(np.float32)
    exp = L.export_agent(c, env, params)
    got = fn(exp.initial_state(2), {"obs": ep["obs"][:, None] * mask[:, None, :, None],
                                     "action": (spec.action_offset + spec.action_scale * u)[:, None],
                                     "reward": ep["reward"][:, None] * mask[:, None], "mask": mask[:, None]})["net"]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("item", ["direction", "=1", "direction=fast", "direction=nan"])
def test_deploy_task_option_is_checked(item):
    from proteus.demo import parse_task

    with pytest.raises(ValueError, match="--task takes NAME=NUMBER"):
        parse_task([item])
    assert parse_task(["direction=-1", "target_vel=1.5"]) == {"direction": -1.0, "target_vel": 1.5}


def test_agent_steps_on_k_episodes_at_once():
    """``adapt_episodes=2``: the first episode's end leaves the weights as they are; the second's takes
    one inner step on both episodes, the same as the export's function on those two episodes."""
    import dataclasses

    import sim
    from meta_rl import learners

    L = learners.get("maml")
    c = L.default_config("point-goal", meta_batch=2, rollouts_per_task=1, hidden=(8,), total_steps=400)
    c2 = dataclasses.replace(c, adapt_episodes=2)
    env = sim.make("point-goal", batch_size=(2, 1), mode="fixed")
    params = L.init_agent_params(c, env, jax.random.key(0))
    agent = L.make_agent(c2, env, params, False)
    H, D = agent.episode_length, agent.policy_spec.obs_dim
    rng = np.random.default_rng(1)
    eps = [{"obs": rng.normal(size=(1, H, D)).astype(np.float32), "action": rng.normal(size=(1, H, 2)).astype(np.float32),
            "reward": rng.normal(size=(1, H)).astype(np.float32)} for _ in range(2)]
    state = agent.initial_state(1)
    for i, ep in enumerate(eps):
        buf = {k: state["episode"][k].at[:, i].set(jnp.asarray(v)) for k, v in ep.items()}
        state = agent.end_episode({**state, "episode": buf, "t": jnp.array([H]), "ended": jnp.array([True])})
        if i == 0:
            for a, b in zip(jax.tree.leaves(state["net"]), jax.tree.leaves(agent.initial_state(1)["net"])):
                np.testing.assert_array_equal(a, b)
            assert int(state["k"][0]) == 1
    spec = agent.policy_spec
    fn = L.adapt_function(c2, spec, params["obs_norm"])
    both = {k: np.concatenate([e[k] for e in eps])[None] for k in ("obs", "reward")}
    both["action"] = (spec.action_offset + spec.action_scale * np.concatenate([e["action"] for e in eps]))[None]
    both["mask"] = np.ones((1, 2, H), np.float32)
    want = fn(L.export_agent(c2, env, params).initial_state(1), both)["net"]
    for a, b in zip(jax.tree.leaves(state["net"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert int(state["k"][0]) == 0
