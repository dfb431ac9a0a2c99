"""deploy/standin.py: the MuJoCo hardware stand-in (parity with the JAX env, latency, timestep, hidden
dynamics) and the sim2sim report."""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
import sim.wrappers
from deploy.export import export_onnx
from deploy.rl2_inputs import RL2Inputs, is_rl2
from deploy.runtime import ContractMismatch, Controller, RobotInterface
from deploy.standin import (
    MujocoStandIn,
    jax_episode_returns,
    rl2_input_names,
    run_episodes,
    run_standin,
)
from meta_rl.networks import Policy, PolicySpec
from sim.core import Discrete

ENV = "pendulum-swingup"  # control period 0.04 s = 2 physics steps of 0.02 s; episodes of 250 steps; trials of 2
DT, H = 0.04, 0.02
EPISODES = 4
# measured (8 episodes each): |stand-in - JAX| <= 3e-7 (MLP) and <= 1.5e-5 (GRU, RL²) on returns of 0.8..40.
# The stand-in steps the training env itself (the native MuJoCo env, one unbatched copy), so what is
# left is onnxruntime's arithmetic against XLA's in the policy (the GRU's compounds over a trial).
PARITY_TOL = 1e-4


def _policy(kind: str, trial: bool, seed: int):
    """A small policy for the pendulum with weights perturbed so its actions vary with the input."""
    env = sim.make(ENV, trial=trial, backend="native")
    policy = Policy(PolicySpec.for_env(env, kind, hidden=(16,), core_size=8))
    params = policy.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    params["net"] = jax.tree.map(lambda x: x + jnp.asarray(0.5 * rng.standard_normal(x.shape), jnp.float32), params["net"])
    return env, policy, params


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """{"mlp": DR-env MLP, "gru": RL² GRU on the trial env}: (policy, params, onnx path, JAX returns, initial states)."""
    root = tmp_path_factory.mktemp("standin")
    out = {}
    for i, (kind, trial) in enumerate((("mlp", False), ("gru", True))):
        env, policy, params = _policy(kind, trial, seed=i + 1)
        path = root / f"{kind}.onnx"
        export_onnx(policy, params, path, {"control_dt": env.unwrapped.control_dt, "env_id": ENV})
        returns, states = jax_episode_returns(policy, params, ENV, EPISODES, seed=3, return_initial_states=True)
        out[kind] = (policy, params, path, returns, states)
    return out


def _run(path, episodes=EPISODES, **kw):
    standin = MujocoStandIn(ENV, **kw)
    controller = Controller(path, standin)
    out = run_episodes(controller, standin, episodes)
    return standin, controller, out


def test_standin_is_a_robot_with_the_env_contract():
    env = sim.make(ENV, trial=False, backend="native")
    trial_env = sim.make(ENV, trial=True, backend="native")
    s = MujocoStandIn(ENV)
    assert isinstance(s, RobotInterface)
    assert tuple(s.obs_names) == env.observation_space.names and tuple(s.action_names) == env.action_space.names
    assert s.control_dt == pytest.approx(DT) and s.substeps == 2 and s.timestep == pytest.approx(H)
    r = MujocoStandIn(ENV, rl2=True)
    assert tuple(r.obs_names) == trial_env.observation_space.names
    assert tuple(r.obs_names[-3:]) == rl2_input_names(env.action_space.names) == ("prev_action.torque", "prev_reward", "prev_done")
    assert r.episodes_per_trial == sim.entry(ENV).episodes_per_trial == 2


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_parity_with_jax_returns(policies, kind):
    """Zero latency, no noise, nominal dynamics, training timestep, the JAX env's initial states:
    the stand-in's returns are the in-training returns of the same deterministic policy."""
    policy, params, path, want, states = policies[kind]
    rl2 = kind == "gru"
    _, _, out = _run(path, rl2=rl2, initial_states=states)
    got = np.array([e["return"] for e in out["episodes"]])
    assert got.shape == want.shape == (EPISODES,)
    assert np.max(np.abs(got - want)) < PARITY_TOL, (got, want, got - want)
    assert np.ptp(want) > 0.1  # the policy does something that depends on where it starts
    assert all(e["length"] == 250 for e in out["episodes"]) and not out["stopped"]
    assert out["events"] == {k: 0 for k in out["events"]}
    assert [e["episode_in_trial"] for e in out["episodes"]] == ([0, 1, 0, 1] if rl2 else [0, 0, 0, 0])
    # determinism: the JAX returns do not depend on anything but the seed
    again = jax_episode_returns(policy, params, ENV, EPISODES, seed=3)
    np.testing.assert_array_equal(again, want)


def test_rl2_inputs_and_controller_reset_at_trial_ends_only(policies):
    _, _, path, _, states = policies["gru"]
    standin = MujocoStandIn(ENV, rl2=True, initial_states=states)
    seen, writes = [], []
    read, write = standin.read_observation, standin.write_command

    def logged_read():
        obs, ts = read()
        seen.append(obs.copy())
        return obs, ts

    def logged_write(action):
        writes.append(np.asarray(action).copy())
        write(action)

    standin.read_observation, standin.write_command = logged_read, logged_write
    controller = Controller(path, standin)
    resets = []
    reset = controller.reset
    controller.reset = lambda: (resets.append(standin.steps), reset())[1]
    run_episodes(controller, standin, EPISODES)
    assert resets == [500, 1000]  # after each trial of 2 × 250 steps, never between its episodes
    seen = np.stack(seen)
    rl2_in = seen[:, -3:]
    np.testing.assert_array_equal(rl2_in[0], 0.0)  # trial start
    np.testing.assert_array_equal(rl2_in[500], 0.0)  # second trial's start
    assert rl2_in[250, 2] == 1.0 and rl2_in[1:250, 2].max() == 0.0  # prev_done after the first episode only
    np.testing.assert_allclose(rl2_in[1:500, 0], np.concatenate(writes[:499]), rtol=0, atol=0)  # prev_action
    ep = standin.episodes[0]
    # prev_reward sums to the first episode's return
    assert rl2_in[1:251, 1].astype(np.float64).sum() == pytest.approx(ep["return"], abs=1e-4)
    # the base observation after the in-trial reset is the second episode's initial state
    q, v = states[1]
    np.testing.assert_allclose(seen[250, :3], [np.cos(q[0]), np.sin(q[0]), v[0]], atol=1e-6)


@pytest.mark.parametrize("env_id", ["mdp-s10-a5-n10", "bandit-k5-n10", "point-goal", ENV])
def test_rl2_inputs_match_the_trial_wrapper(env_id):
    """deploy.rl2_inputs.RL2Inputs (NumPy, what a robot's driver uses) builds the inputs sim.wrappers.Trial
    appends: the same names and values step by step, through episode ends and trial ends (discrete
    one-hot actions and trial_time on the tabular envs, continuous unclipped actions elsewhere)."""
    env = sim.make(env_id, mode="trial")
    e, base, act = sim.entry(env_id), env.unwrapped, env.action_space
    discrete = isinstance(act, Discrete)
    rl2 = RL2Inputs(act.names, e.episodes_per_trial, discrete=discrete, time_input=e.trial_time,
                    episode_length=base.episode_length)
    # as a robot driver builds it from an exported policy's metadata
    meta = {"obs_names": list(env.observation_space.names), "action_names": list(act.names), "discrete": discrete,
            "episodes_per_trial": e.episodes_per_trial, "max_trial_steps": env.max_trial_steps}
    assert RL2Inputs.from_metadata(meta).names == rl2.names
    rl2 = RL2Inputs.from_metadata(meta)
    n = len(base.observation_space.names)
    m = rl2.size - int(e.trial_time)  # the inputs compared exactly
    assert rl2.names == sim.wrappers.rl2_input_names(act.names, discrete, e.trial_time)
    assert tuple(env.observation_space.names) == tuple(base.observation_space.names) + rl2.names
    assert is_rl2(env.observation_space.names) and not is_rl2(base.observation_space.names)
    steps = 2 * env.max_trial_steps + 7
    k_act, k_world, k_env = jax.random.split(jax.random.key(0), 3)
    if discrete:
        actions = jax.random.randint(k_act, (steps,), 0, act.n)
    else:  # beyond the bounds: the previous action is the one sent, unclipped
        actions = jax.random.uniform(k_act, (steps,) + act.shape, minval=-1.5, maxval=1.5)
    s0 = env.reset(k_env, env.sample_params(k_world))

    def body(s, a):
        s = env.step(s, a)
        return s, (s.obs, s.reward, s.info["episode_terminated"] | s.info["episode_truncated"], s.info["trial_done"])

    _, (obs, reward, done, trial_done) = jax.device_get(jax.jit(lambda s, a: jax.lax.scan(body, s, a))(s0, actions))
    np.testing.assert_array_equal(np.asarray(s0.obs)[n:], rl2.inputs)
    sent, ends = np.asarray(actions), []
    for t in range(steps):
        ends.append(rl2.step(sent[t], reward[t], done[t]))
        assert ends[-1] == trial_done[t], t
        got, want = rl2.inputs, obs[t, n:]
        np.testing.assert_array_equal(want[:m], got[:m], err_msg=f"step {t}")
        # trial_time: XLA divides by the constant trial length as a multiplication by its reciprocal
        np.testing.assert_allclose(want[m:], got[m:], rtol=1e-6, atol=0, err_msg=f"step {t}")
    assert sum(ends) == 2 and done.sum() > 2 and rl2.trial_step == 7  # two whole trials and a bit


def test_latency_delays_observations_and_ages_timestamps(policies):
    path, states = policies["mlp"][2], policies["mlp"][4]
    cmds = 0.8 * np.sin(0.3 * np.arange(40))[:, None].astype(np.float32)

    def open_loop(**kw):
        s = MujocoStandIn(ENV, initial_states=states, **kw)
        obs, ages = [], []
        for a in cmds:
            o, ts = s.read_observation()
            ages.append(time.monotonic() - ts)
            obs.append(o)
            s.write_command(a)
        return s, np.stack(obs), np.array(ages)

    s0, o0, age0 = open_loop()
    s1, o1, age1 = open_loop(latency_ms=40.0)  # one control step = 2 physics steps
    s2, o2, age2 = open_loop(latency_ms=20.0)  # one physics step
    assert (s0.latency_steps, s1.latency_steps, s2.latency_steps) == (0, 2, 1)
    np.testing.assert_array_equal(o1[1:], o0[:-1])  # exactly the observation one control step older
    np.testing.assert_array_equal(o1[0], o0[0])  # the initial state, as if the robot had rested there
    assert not np.allclose(o2[2:], o0[2:]) and not np.allclose(o2[2:], o0[1:-1])  # in between: physics-step resolution
    assert age0.max() < 0.01 and 0.04 <= age1.min() < 0.05 and 0.02 <= age2.min() < 0.03
    assert s1.last_sample_age_s == pytest.approx(0.04)

    # closed loop: the delayed observations change what the policy does
    base = [e["return"] for e in _run(path, initial_states=states)[2]["episodes"]]
    _, _, out = _run(path, initial_states=states, latency_ms=80.0)
    lat = [e["return"] for e in out["episodes"]]
    assert out["events"]["stale"] == 0 and not out["stopped"]  # 80 ms < the default stale limit of 3 × 40 ms
    assert np.max(np.abs(np.subtract(lat, base))) > 1e-2


def test_timestep_keeps_control_dt(policies):
    path, want, states = policies["mlp"][2], policies["mlp"][3], policies["mlp"][4]
    for timestep, substeps in ((0.01, 4), (0.005, 8), (0.015, 3)):
        standin, _, out = _run(path, episodes=2, initial_states=states, timestep=timestep)  # contract accepted
        assert standin.control_dt == pytest.approx(DT) and standin.substeps == substeps
        assert standin.model.opt.timestep == pytest.approx(DT / substeps)
        got = [e["return"] for e in out["episodes"]]
        assert all(e["length"] == 250 for e in out["episodes"]) and np.all(np.isfinite(got))
        assert got != pytest.approx(want[:2], abs=1e-6)  # another integration of the same motion


def test_hidden_dynamics_change_the_return(policies):
    path, want, states = policies["mlp"][2], policies["mlp"][3], policies["mlp"][4]
    nominal = MujocoStandIn(ENV)
    for kw in ({"gain": 0.5}, {"mass": 1.8}):
        _, _, out = _run(path, episodes=2, initial_states=states, **kw)
        got = np.array([e["return"] for e in out["episodes"]])
        assert np.max(np.abs(got - want[:2])) > 1e-2, kw
    s = MujocoStandIn(ENV, gain=0.5, mass=1.8, friction=0.7)
    np.testing.assert_allclose(s.model.actuator_gainprm[:, 0], 0.5 * nominal.model.actuator_gainprm[:, 0])
    np.testing.assert_allclose(s.model.body_mass[1:], 1.8 * nominal.model.body_mass[1:])
    np.testing.assert_allclose(s.model.geom_friction[:, 0], 0.7 * nominal.model.geom_friction[:, 0])
    # a range is drawn from, reproducibly per seed
    a, b = MujocoStandIn(ENV, mass=(0.5, 2.0), seed=5), MujocoStandIn(ENV, mass=(0.5, 2.0), seed=5)
    assert a.world["mass"] == b.world["mass"] and 0.5 <= a.world["mass"] <= 2.0


def test_report_written_and_not_overwritten(policies, tmp_path):
    src, want = policies["gru"][2], policies["gru"][3]
    path = tmp_path / "policy.onnx"
    path.write_bytes(src.read_bytes())
    kw = {"worlds": 3, "latency_ms": (0.0, 100.0), "friction": (0.5, 1.5), "mass": (0.8, 1.2), "gain": (0.8, 1.2),
          "noise_std": 0.01, "timestep": 0.01, "training_return": float(want.mean())}
    report = run_standin(path, ENV, **kw)
    out = tmp_path / "policy_sim2sim"
    assert report["json"] == str(out / "sim2sim.json") and (out / "sim2sim.png").stat().st_size > 1000
    data = json.loads((out / "sim2sim.json").read_text())
    assert data["rl2"] and data["episodes_per_world"] == 2 and len(data["results"]) == 3
    assert data["ranges"]["latency_ms"] == [0.0, 100.0] and data["ranges"]["friction"] == [0.5, 1.5]
    assert data["ranges"]["substeps"] == 4 and data["control_dt"] == pytest.approx(DT)
    s = data["summary"]
    rets = [e["return"] for r in data["results"] for e in r["episodes"]]
    assert s["mean_return"] == pytest.approx(np.mean(rets)) and s["episodes"] == 6
    assert s["return_ratio"] == pytest.approx(s["mean_return"] / want.mean())
    assert s["tracking_error"] is None and s["mean_action_change"] > 0  # the pendulum has no tracking target
    lats = sorted(r["latency_ms"] for r in data["results"])
    assert 0.0 <= lats[0] < 40.0 and lats[-1] > 60.0  # stratified over the range
    assert all(0.5 <= r["friction"] <= 1.5 for r in data["results"])

    mtime = (out / "sim2sim.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="sim2sim.json"):
        run_standin(path, ENV, **kw)
    assert (out / "sim2sim.json").stat().st_mtime_ns == mtime
    again = run_standin(path, ENV, **kw, overwrite=True, seed=1)
    assert again["summary"]["mean_return"] != pytest.approx(s["mean_return"], abs=1e-9)


def test_bad_policy_files_and_mismatched_env(policies, tmp_path):
    path = policies["mlp"][2]
    with pytest.raises(ContractMismatch) as e:
        run_standin(path, "cartpole-balance", worlds=1, out_dir=tmp_path / "r")
    msg = str(e.value)
    assert str(path) in msg and "observation" in msg and "cart_pos" in msg and "torque" in msg
    assert "exported for env 'pendulum-swingup'" in msg and "'cartpole-balance'" in msg
    assert not (tmp_path / "r").exists()
    # an RL² policy on a stand-in told it is not one: the prev_* inputs are named as missing
    with pytest.raises(ContractMismatch, match="prev_reward"):
        Controller(policies["gru"][2], MujocoStandIn(ENV))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        run_standin(tmp_path / "missing.onnx", ENV, worlds=1)
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07not an onnx model\xff\xff")
    with pytest.raises(ValueError, match="corrupt.onnx"):
        run_standin(bad, ENV, worlds=1)
    with pytest.raises(ValueError, match="not a MuJoCo robot"):
        MujocoStandIn("bandit-k5-n10")
