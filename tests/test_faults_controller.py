"""Controller safety layer under faults (issue 22: items 1, 2, the ONNX contract part of 8, NaN
policy outputs, and the controller soak on the MuJoCo stand-in).

The policies are tiny ONNX models built here with ``onnx.helper`` (no JAX export), so these tests
compile nothing but the stand-in."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy.runtime import ContractMismatch, Controller, ControllerStopped, OnnxPolicy, SafetyConfig

OBS = ("a", "b", "c")
ACT = ("j0", "j1")
DT = 0.01


def tiny_model(path, obs_names=OBS, action_names=ACT, *, obs_type=TensorProto.FLOAT, out_cols=None,
               out_shape=None, dt=DT, seed=0):
    """obs [B, n] -> tanh(obs @ W) [B, m] (a linear policy) with the export's metadata keys."""
    n, m = len(obs_names), len(action_names) if out_cols is None else out_cols
    w = np.random.default_rng(seed).standard_normal((n, m)).astype(np.float32)
    nodes = []
    x = "obs"
    if obs_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["obs"], ["obs32"], to=TensorProto.FLOAT))
        x = "obs32"
    nodes += [helper.make_node("MatMul", [x, "W"], ["z"]), helper.make_node("Tanh", ["z"], ["t"])]
    if out_shape is not None:  # e.g. a 0-d action: reduce everything
        nodes.append(helper.make_node("ReduceSum", ["t"], ["action"], keepdims=0))
    else:
        nodes.append(helper.make_node("Identity", ["t"], ["action"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("obs", obs_type, ["B", n])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT,
                                                             ["B", m] if out_shape is None else out_shape)],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"obs_names": list(obs_names), "action_names": list(action_names), "control_dt": dt, "discrete": False,
            "policy_kind": "mlp", "action_low": [-1.0] * len(action_names), "action_high": [1.0] * len(action_names),
            "action_offset": [0.0] * len(action_names)}
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.save(model, str(path))
    return path


class Robot:
    """Scripted robot: fresh random observations stamped now, unless told otherwise; records commands."""

    def __init__(self, obs_names=OBS, action_names=ACT, dt=DT):
        self.obs_names, self.action_names, self.control_dt = obs_names, action_names, dt
        self.rng = np.random.default_rng(0)
        self.ts = None  # a timestamp to return once
        self.read_exc = self.write_exc = 0  # raise in the next N reads / writes
        self.commands = []

    def read_observation(self):
        if self.read_exc:
            self.read_exc -= 1
            raise OSError("bus timeout")
        ts, self.ts = (time.monotonic() if self.ts is None else self.ts), None
        return self.rng.standard_normal(len(self.obs_names)).astype(np.float32), ts

    def write_command(self, action):
        if self.write_exc:
            self.write_exc -= 1
            raise OSError("CAN write failed")
        self.commands.append(np.array(action, copy=True))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("faults") / "tiny.onnx")


def test_future_timestamp_is_one_fault(model):
    robot = Robot()
    ctl = Controller(model, robot, SafetyConfig(max_stale_steps=1))
    ctl.step()
    robot.ts = time.monotonic() + 100.0  # 100 s in the future
    np.testing.assert_array_equal(ctl.step(), [0.0, 0.0])  # not acted on: the safe action
    assert ctl.events.future == 1 and ctl.events.stale == 0
    for _ in range(20):  # the next good readings are accepted (HEAD: all stale, then stopped)
        assert not np.array_equal(ctl.step(), [0.0, 0.0])
    assert ctl.events.future == 1 and ctl.events.stale == 0 and not ctl.stopped
    # reset() forgets the timestamp reference: a reading older than the last accepted one is fine after it
    old = time.monotonic() - DT
    ctl.step()
    ctl.reset()
    robot.ts = old
    ctl.step()
    assert ctl.events.stale == 0


@pytest.mark.parametrize("where", ["read", "write"])
def test_interface_errors_are_faults(model, where):
    robot = Robot()
    ctl = Controller(model, robot, SafetyConfig(max_stale_steps=2))
    ctl.step()
    n = len(robot.commands)
    setattr(robot, f"{where}_exc", 1)
    np.testing.assert_array_equal(ctl.step(), [0.0, 0.0])  # HEAD: the OSError escaped, nothing written
    np.testing.assert_array_equal(robot.commands[-1], [0.0, 0.0])  # the safe action reached the robot
    assert len(robot.commands) == n + 1
    assert (ctl.events.read_error, ctl.events.write_error) == ((1, 0) if where == "read" else (0, 1))
    ctl.step()  # recovers
    per_step = 1 if where == "read" else 2  # a failed command, then a failed safe action
    setattr(robot, f"{where}_exc", 3 * per_step)
    ctl.step(), ctl.step()
    with pytest.raises(ControllerStopped, match="3 fault steps"):
        ctl.step()
    # run() reports a stop caused by interface errors, it does not raise them
    ctl.reset()
    setattr(robot, f"{where}_exc", 10)
    out = ctl.run(10, realtime=False)
    assert out["stopped"] and out["steps"] == 3 and "fault steps" in out["stop_reason"]


def test_safe_action_write_failure_counted_once(model):
    robot = Robot()
    ctl = Controller(model, robot, SafetyConfig(max_stale_steps=0))
    ctl.step()
    robot.write_exc = 2  # the command and the safe action both fail
    with pytest.raises(ControllerStopped, match="not written"):
        ctl.step()
    assert ctl.events.write_error == 2 and robot.write_exc == 0  # two attempts, no loop


def test_nan_policy_output_never_written(model):
    robot = Robot()
    ctl = Controller(model, robot)
    real = ctl.policy.step
    for bad in (np.nan, np.inf):
        ctl.policy.step = lambda obs, c, bad=bad: (np.full((1, 2), bad, np.float32), c)
        np.testing.assert_array_equal(ctl.step(), [0.0, 0.0])
    ctl.policy.step = real
    assert ctl.events.nan_action == 2 and all(np.all(np.isfinite(c)) for c in robot.commands)


@pytest.mark.parametrize("case, kw, words", [
    ("float64 input", {"obs_type": TensorProto.DOUBLE}, ["'obs'", "tensor(double)", "tensor(float)"]),
    ("0-d output", {"out_shape": []}, ["'action'", "shape []", "[B, 2]"]),
    ("more actions", {"out_cols": 3}, ["'action'", "[B, 3]", "[B, 2]"]),
    ("fewer actions", {"out_cols": 1}, ["'action'", "[B, 1]", "[B, 2]"]),
])
def test_model_contract_refused(tmp_path, case, kw, words):
    path = tiny_model(tmp_path / "bad.onnx", **kw)
    for load in (lambda: OnnxPolicy(path), lambda: Controller(path, Robot())):
        with pytest.raises(ContractMismatch) as e:  # HEAD: onnxruntime error / reshape error / accepted
            load()
        for w in words:
            assert w in str(e.value), (case, str(e.value))


# --------------------------------------------------------------------------------------------------
# Soak on the MuJoCo stand-in
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin_model(tmp_path_factory):
    from deploy.standin import MujocoStandIn

    robot = MujocoStandIn("pendulum-swingup")
    dt = 0.002  # 500 Hz: the soak presents the stand-in at the bench's rate
    path = tiny_model(tmp_path_factory.mktemp("soak") / "pendulum.onnx", robot.obs_names, robot.action_names, dt=dt,
                      seed=3)
    return robot, path, dt


def _check_soak(out):
    assert out["unsafe_commands"] == 0, out["unsafe"]
    assert out["injected"] and all(n > 0 for n in out["injected"].values()), out["injected"]
    assert out["detected"] == out["expected"], (out["detected"], out["expected"])
    assert out["stops"] and out["stops_match"], (out["stops"], out["expected_stops"])
    assert out["commands"] > 0 and out["events"]["rate_limited"] > 0


def test_soak_short(standin_model):
    from deploy.bench import soak

    robot, path, dt = standin_model
    _check_soak(soak(path, robot, 3000, fault_rate=0.03, seed=1, control_dt=dt))


@pytest.mark.slow
def test_soak_1e5(standin_model):
    from deploy.bench import soak

    robot, path, dt = standin_model
    _check_soak(soak(path, robot, 100_000, fault_rate=0.01, seed=2, control_dt=dt))
