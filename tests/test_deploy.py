"""deploy/: ONNX export (parity, metadata, atomic no-clobber writes) and the controller runtime's safety layer."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from flax import linen as nn
from flax import struct

from deploy.export import ParityError, UnsupportedPrimitive, export_agent, export_onnx, read_metadata
from deploy.runtime import (
    ContractMismatch,
    Controller,
    ControllerStopped,
    OnnxPolicy,
    SafetyConfig,
    SafetyEvents,
)
from meta_rl.agent import Agent
from meta_rl.networks import Policy, PolicySpec
from sim.normalize import RunningStats

OBS_NAMES = ("qpos.hip", "qpos.knee", "qvel.hip", "qvel.knee", "goal")
ACTION_NAMES = ("hip", "knee", "ankle")
LOW, HIGH = (-1.0, 0.0, -2.0), (1.0, 3.0, 2.0)
DT = 0.02
META = {"control_dt": DT, "env_id": "cheetah-vel", "randomization": {"body_mass[torso]": [0.5, 1.5]},
        "pd_gains": {"kp": [20.0, 20.0, 10.0], "kd": [0.5, 0.5, 0.2]}, "note": "unit test"}
CASES = [("mlp", False), ("gru", False), ("lstm", False), ("gru", True)]
# what the traced policies use: elementary ops only (no fused GRU/LSTM op), Gemm for dense layers
ELEMENTARY_OPS = {"Sub", "Div", "Clip", "Gemm", "MatMul", "Tanh", "Add", "Sigmoid", "Mul", "ArgMax", "ReduceMax",
                  "Max", "Unsqueeze", "Exp", "ReduceSum", "Log"}


def make_spec(kind: str, discrete: bool = False) -> PolicySpec:
    if discrete:
        return PolicySpec(kind=kind, obs_names=OBS_NAMES, action_names=("left", "stay", "right", "jump"),
                          discrete=True, hidden=(16, 16), core_size=8)
    return PolicySpec(kind=kind, obs_names=OBS_NAMES, action_names=ACTION_NAMES, discrete=False,
                      hidden=(16, 16), core_size=8, action_low=LOW, action_high=HIGH)


def perturbed_params(policy: Policy, seed: int = 0) -> dict:
    """Random "trained" params in the flax tree's exact structure (from ``jax.eval_shape``, no eager
    init): kernels ~ N(0, 1.5² / fan_in), so the heads are far from init's ~0, biases ~ N(0, 0.3²),
    and non-trivial observation statistics."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(policy.init, jax.random.key(seed))["net"]

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            x = 1.5 / np.sqrt(leaf.shape[0]) * rng.standard_normal(leaf.shape)
        elif "log_std" in name:
            x = np.full(leaf.shape, -0.5)
        else:
            x = 0.3 * rng.standard_normal(leaf.shape)
        return jnp.asarray(x, jnp.float32)

    d = policy.spec.obs_dim
    stats = RunningStats(jnp.asarray(3.0 * rng.standard_normal(d), jnp.float32),
                         jnp.asarray(np.exp(rng.standard_normal(d)), jnp.float32), jnp.float32(1000.0))
    return {"net": jax.tree_util.tree_map_with_path(fill, shapes), "obs_norm": stats}


def obs_sequence(policy: Policy, params: dict, T: int, B: int = 1, seed: int = 0) -> np.ndarray:
    """[T, B, obs_dim] observations around the normalizer's statistics, some beyond its clip."""
    rng = np.random.default_rng(seed)
    mean, std = np.asarray(params["obs_norm"].mean), np.sqrt(np.asarray(params["obs_norm"].var))
    spread = rng.choice([1.0, 3.0, 40.0], size=(T, B, 1), p=[0.6, 0.3, 0.1])
    return (mean + std * spread * rng.standard_normal((T, B, policy.spec.obs_dim))).astype(np.float32)


_JAX_STEPS = {}


def jax_rollout(policy: Policy, params: dict, obs: np.ndarray, carry=None):
    """JAX deterministic actions [T, B, ...] over ``obs`` [T, B, obs_dim], carry fed forward; and the final carry."""
    if policy not in _JAX_STEPS:
        def step(params, carry, o):
            carry, dist, _ = policy.apply(params, carry, o)
            return carry, policy.deterministic(dist)

        _JAX_STEPS[policy] = jax.jit(step)
    step = _JAX_STEPS[policy]
    carry = policy.init_carry(obs.shape[1]) if carry is None else carry
    actions = []
    for o in obs:
        carry, a = step(params, carry, jnp.asarray(o))
        actions.append(np.asarray(a))
    return np.stack(actions), carry


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One exported policy per case: {(kind, discrete): (policy, params, path, report)}."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for i, (kind, discrete) in enumerate(CASES):
        policy = Policy(make_spec(kind, discrete))
        params = perturbed_params(policy, seed=i)
        recorded = obs_sequence(policy, params, T=40, B=3, seed=100 + i)
        path = root / f"{kind}{'_discrete' if discrete else ''}.onnx"
        report = export_onnx(policy, params, path, META, parity_obs=recorded, steps=64)
        out[(kind, discrete)] = (policy, params, path, report)
    return out


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{k}{'-discrete' if d else ''}" for k, d in CASES])
def test_onnx_parity(exported, case):
    policy, params, path, report = exported[case]
    kind, discrete = case
    assert report.path == path and path.is_file()
    assert report.max_action_error <= 1e-5 and report.max_carry_error <= 1e-5
    assert report.steps == 64 + 40 and report.inputs_checked == 64 * 4 + 40 * 3
    if kind == "mlp":
        assert report.max_carry_error == 0.0

    model = onnx.load(str(path))
    assert {n.op_type for n in model.graph.node} <= ELEMENTARY_OPS  # no fused GRU/LSTM op
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in sess.get_inputs()}
    outs = {o.name: o for o in sess.get_outputs()}
    carry_names = {"mlp": [], "gru": ["h"], "lstm": ["c", "h"]}[kind]  # the state's pytree (sorted key) order
    assert list(ins) == ["obs"] + [f"{c}_in" for c in carry_names]
    assert list(outs) == ["action"] + [f"{c}_out" for c in carry_names]
    assert outs["action"].type == ("tensor(int64)" if discrete else "tensor(float)")

    # independent re-check over a fresh sequence at another batch size, carries fed forward
    T, B = 80, 5
    obs = obs_sequence(policy, params, T, B, seed=7)
    want, _ = jax_rollout(policy, params, obs)
    carry = {f"{c}_in": np.zeros((B, policy.spec.core_size), np.float32) for c in carry_names}
    got = []
    for o in obs:
        out = sess.run(None, {"obs": o, **carry})
        got.append(out[0])
        carry = {f"{c}_in": v for c, v in zip(carry_names, out[1:])}
    got = np.stack(got)
    if discrete:
        assert got.dtype == np.int64 and got.shape == (T, B)
        assert np.array_equal(got, want)
    else:
        assert got.shape == (T, B, len(ACTION_NAMES))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        assert np.all(got >= np.array(LOW) - 1e-6) and np.all(got <= np.array(HIGH) + 1e-6)
        assert np.ptp(got) > 0.5  # the heads are not ~0: the comparison is meaningful


def test_metadata_round_trip(exported):
    policy, _, path, report = exported[("lstm", False)]
    meta = read_metadata(path)
    assert meta == report.metadata
    s = policy.spec
    assert meta["obs_names"] == list(OBS_NAMES) and meta["action_names"] == list(ACTION_NAMES)
    assert meta["obs_layout"] == [{"name": "qpos", "start": 0, "stop": 2}, {"name": "qvel", "start": 2, "stop": 4},
                                  {"name": "goal", "start": 4, "stop": 5}]
    assert meta["control_dt"] == DT
    np.testing.assert_allclose(meta["action_scale"], s.action_scale)
    np.testing.assert_allclose(meta["action_offset"], s.action_offset)
    assert meta["action_low"] == list(LOW) and meta["action_high"] == list(HIGH)
    assert meta["policy_kind"] == "lstm" and meta["core_size"] == 8 and meta["discrete"] is False
    assert meta["env_id"] == "cheetah-vel" and meta["randomization"] == META["randomization"]
    assert meta["pd_gains"] == META["pd_gains"] and meta["note"] == "unit test"
    assert isinstance(meta["package_version"], str) and meta["package_version"]
    assert PolicySpec.from_dict(meta["policy_spec"]) == s
    # raw metadata_props are JSON strings
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["obs_names"].startswith("[")


def test_read_metadata_errors(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        read_metadata(missing)
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xff\xff not a protobuf")
    with pytest.raises(ValueError, match="corrupt.onnx"):
        read_metadata(bad)


def test_metadata_validation(tmp_path):
    policy = Policy(make_spec("mlp"))
    params = perturbed_params(policy)
    with pytest.raises(ValueError, match="control_dt"):
        export_onnx(policy, params, tmp_path / "a.onnx", {"env_id": "x"})
    with pytest.raises(ValueError, match="contradicts"):
        export_onnx(policy, params, tmp_path / "a.onnx", {"control_dt": DT, "obs_names": ["x"] * 5})
    assert not list(tmp_path.iterdir())


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    import deploy.export as export_mod

    policy = Policy(make_spec("gru"))
    params = perturbed_params(policy)
    path = tmp_path / "sub" / "policy.onnx"
    build = export_mod.build_onnx
    # the graph drifts from the JAX step (an exporter bug): the action head's bias is off by 1e-3
    drift = jax.tree_util.tree_map(lambda x: x, params)
    drift["net"]["params"]["mean"]["bias"] = drift["net"]["params"]["mean"]["bias"] + 1e-3
    monkeypatch.setattr(export_mod, "build_onnx", lambda pol, p, meta: build(pol, drift, meta))
    with pytest.raises(ParityError, match=r"tolerance 1e-05") as e:
        export_onnx(policy, params, path, META)
    assert "max action error 0.00" in str(e.value) and "not written" in str(e.value)
    assert not path.exists() and not path.parent.exists()
    # the graph is built from corrupted weights (an exporter bug): the carry diverges
    corrupt = jax.tree_util.tree_map(lambda x: x, params)
    corrupt["net"]["params"]["core"]["hz"]["kernel"] = corrupt["net"]["params"]["core"]["hz"]["kernel"] * 1.01
    monkeypatch.setattr(export_mod, "build_onnx", lambda pol, p, meta: build(pol, corrupt, meta))
    with pytest.raises(ParityError, match="carry error"):
        export_onnx(policy, params, path, META)
    assert not path.exists() and not path.parent.exists()


def test_no_silent_overwrite(exported, tmp_path):
    policy, params, _, _ = exported[("mlp", False)]
    path = tmp_path / "policy.onnx"
    export_onnx(policy, params, path, META)
    before = path.read_bytes()
    other = perturbed_params(policy, seed=9)
    with pytest.raises(FileExistsError, match="policy.onnx"):
        export_onnx(policy, other, path, META)
    assert path.read_bytes() == before
    export_onnx(policy, other, path, META, overwrite=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx"]  # no temp files left behind


class LatentMemoryAgent(Agent):
    """A learner whose state is a custom pytree (a latent and a memory), defined here only: its export
    must need no code under deploy/ that knows this state."""


@struct.dataclass
class _LatentMemoryAgent(LatentMemoryAgent):
    w: jax.Array  # [obs_dim, 3]
    keys_w: jax.Array  # [3, 4]
    head: jax.Array  # [7, act_dim]
    spec: PolicySpec = struct.field(pytree_node=False)

    @property
    def policy_spec(self):
        return self.spec

    def initial_state(self, batch):
        return {"latent": jnp.full((batch, 3), 0.5, jnp.float32), "mem": {"keys": jnp.zeros((batch, 4), jnp.float32)}}

    def act(self, state, obs, key):
        return self.policy_step(state, obs)

    def policy_step(self, state, obs):
        x = (obs - obs.mean(-1, keepdims=True)) * jax.lax.rsqrt(jnp.var(obs, -1, keepdims=True) + 1e-5)  # layer norm
        latent = 0.9 * state["latent"] + 0.1 * jnp.tanh(x @ self.w)
        keys = jnp.maximum(0.95 * state["mem"]["keys"], jax.nn.relu(latent @ self.keys_w))
        keys = jnp.where(keys > 3.0, 3.0, keys) ** 2 / 3.0
        u = jnp.clip(jnp.concatenate([latent, keys], -1) @ self.head, -1.0, 1.0)
        action = jnp.asarray(self.spec.action_offset) + jnp.asarray(self.spec.action_scale) * u
        return action, {"latent": latent, "mem": {"keys": keys}}


def make_latent_agent(seed: int = 0):
    rng = np.random.default_rng(seed)
    spec = make_spec("mlp")
    f = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)  # noqa: E731
    return _LatentMemoryAgent(w=f(len(OBS_NAMES), 3), keys_w=f(3, 4), head=f(7, len(ACTION_NAMES)), spec=spec)


def test_custom_state_agent_exports(tmp_path):
    """Any Agent exports: one ONNX input/output per state leaf, named from its pytree path, parity
    checked, its initial state in the metadata, and the controller runs it unchanged."""
    agent = make_latent_agent()
    path = tmp_path / "latent.onnx"
    obs = np.random.default_rng(1).standard_normal((30, 2, len(OBS_NAMES))).astype(np.float32) * 3
    report = export_agent(agent, path, META, parity_obs=obs)
    assert report.max_action_error <= 1e-5 and report.max_carry_error <= 1e-5
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["obs", "latent_in", "mem.keys_in"]
    assert [o.name for o in sess.get_outputs()] == ["action", "latent_out", "mem.keys_out"]
    meta = read_metadata(path)
    assert meta["agent"] == "_LatentMemoryAgent"
    assert meta["inputs"] == ["obs", "latent_in", "mem.keys_in"]
    assert [(s["path"], s["shape"], s["dtype"]) for s in meta["state"]] == [("latent", [3], "float32"),
                                                                          ("mem.keys", [4], "float32")]
    assert meta["state"][0]["init"] == [0.5, 0.5, 0.5] and meta["state"][1]["init"] == "zeros"

    # the runtime builds the state from the metadata and feeds it forward; JAX agrees step by step
    pol = OnnxPolicy(path)
    carry = pol.init_carry(1)
    np.testing.assert_array_equal(carry["latent_in"], np.full((1, 3), 0.5, np.float32))
    robot = FakeRobot(observations=obs[:, 0])
    ctl = Controller(path, robot)
    state = agent.initial_state(1)
    step = jax.jit(agent.policy_step)
    for t in range(obs.shape[0]):
        want, state = step(state, jnp.asarray(obs[t, :1]))
        np.testing.assert_allclose(ctl.step(), np.asarray(want)[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(ctl.carry["mem.keys_in"], np.asarray(state["mem"]["keys"]), atol=1e-5)
    ctl.reset()
    np.testing.assert_array_equal(ctl.carry["latent_in"], np.full((1, 3), 0.5, np.float32))


@struct.dataclass
class _ConvAgent(LatentMemoryAgent):
    """A small CNN torso over a 4x4 "image" (the first 16 observations), stateless."""

    params: dict
    spec: PolicySpec = struct.field(pytree_node=False)

    @property
    def policy_spec(self):
        return self.spec

    def initial_state(self, batch):
        return {}

    def act(self, state, obs, key):
        return self.policy_step(state, obs)

    def policy_step(self, state, obs):
        img = obs[:, :16].reshape(obs.shape[0], 4, 4, 1)
        y = nn.Conv(4, (3, 3), strides=(1, 1), padding="SAME").apply(self.params, img)
        y = jnp.tanh(y).reshape(obs.shape[0], -1).sum(-1, keepdims=True)
        return jnp.tanh(y + obs[:, 16:]), state


def test_cnn_torso_exports(tmp_path):
    obs_names = tuple(f"px{i}" for i in range(16)) + ("extra",)
    spec = PolicySpec(kind="mlp", obs_names=obs_names, action_names=("a",), discrete=False, hidden=(),
                      action_low=(-1.0,), action_high=(1.0,), normalize_obs=False)
    params = nn.Conv(4, (3, 3), padding="SAME").init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    agent = _ConvAgent(params=params, spec=spec)
    report = export_agent(agent, tmp_path / "cnn.onnx", META)
    assert report.max_action_error <= 1e-5
    ops = {n.op_type for n in onnx.load(str(tmp_path / "cnn.onnx")).graph.node}
    assert "Conv" in ops


def test_unsupported_primitive_named(tmp_path):
    class SortAgent(_ConvAgent):
        def policy_step(self, state, obs):
            return jnp.sort(obs, axis=-1)[:, :1], state

    spec = PolicySpec(kind="mlp", obs_names=OBS_NAMES, action_names=("a",), discrete=False, hidden=(),
                      action_low=(-1.0,), action_high=(1.0,))
    with pytest.raises(UnsupportedPrimitive, match="'sort'"):
        export_agent(SortAgent(params={}, spec=spec), tmp_path / "s.onnx", META)
    assert not list(tmp_path.iterdir())


def test_trial_metadata(tmp_path):
    names = OBS_NAMES + ("prev_action.hip", "prev_action.knee", "prev_action.ankle", "prev_reward", "prev_done",
                         "trial_time")
    spec = PolicySpec(kind="gru", obs_names=names, action_names=ACTION_NAMES, discrete=False, hidden=(8,),
                      core_size=4, action_low=LOW, action_high=HIGH)
    policy = Policy(spec)
    params = policy.init(jax.random.key(0))
    with pytest.raises(ValueError, match="max_trial_steps"):
        export_onnx(policy, params, tmp_path / "a.onnx", META)
    with pytest.raises(ValueError, match="episodes_per_trial"):
        export_onnx(policy, params, tmp_path / "a.onnx",
                    {**META, "episodes_per_trial": 2, "episode_length": 50, "max_trial_steps": 99})
    report = export_onnx(policy, params, tmp_path / "a.onnx", {**META, "episodes_per_trial": 2, "episode_length": 50})
    meta = report.metadata
    assert (meta["episodes_per_trial"], meta["episode_length"], meta["max_trial_steps"]) == (2, 50, 100)
    assert meta["state"] == [{"path": "h", "input": "h_in", "output": "h_out", "shape": [4], "dtype": "float32",
                              "init": "zeros"}]


def test_runtime_reads_v1_models(exported, tmp_path):
    """A model without ``state`` metadata (contract v1, hand-written h/c graphs) still runs: its
    ``h_in``/``c_in`` inputs are found by name."""
    _, _, path, _ = exported[("lstm", False)]
    model = onnx.load(str(path))
    props = [(p.key, p.value) for p in model.metadata_props if p.key != "state"]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(props))
    old = tmp_path / "v1.onnx"
    onnx.save(model, str(old))
    pol = OnnxPolicy(old)
    assert sorted(pol.carry_names) == ["c_in", "h_in"] and pol.core_size == 8
    assert {k: v.shape for k, v in pol.init_carry(2).items()} == {"c_in": (2, 8), "h_in": (2, 8)}
    new = OnnxPolicy(path)
    obs = np.ones((1, len(OBS_NAMES)), np.float32)
    a1, c1 = pol.step(obs, pol.init_carry(1))
    a2, c2 = new.step(obs, new.init_carry(1))
    np.testing.assert_array_equal(a1, a2)
    assert all(np.array_equal(c1[k], c2[k]) for k in c2)


def test_package_imports_no_jax():
    code = ("import sys; import deploy; from deploy import Controller, SafetyConfig, RobotInterface; "
            "import deploy.runtime; assert 'jax' not in sys.modules and 'mujoco' not in sys.modules, "
            "[m for m in sys.modules if m.startswith(('jax', 'mujoco'))]")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------
# Runtime
# ------------------------------------------------------------------------------------------------


class FakeRobot:
    """A scripted robot: replays observations (or random ones), timestamps them now unless told
    otherwise, optionally sleeps in every read, and records every command."""

    def __init__(self, obs_names=OBS_NAMES, action_names=ACTION_NAMES, control_dt=DT, observations=None,
                 read_sleep: float = 0.0, seed: int = 0):
        self.obs_names, self.action_names, self.control_dt = tuple(obs_names), tuple(action_names), control_dt
        self.observations = None if observations is None else list(observations)
        self.read_sleep = read_sleep
        self.timestamp_override: float | None = None  # return this timestamp instead of now
        self.nan_next = False
        self.rng = np.random.default_rng(seed)
        self.commands: list[np.ndarray] = []
        self.reads = 0

    def read_observation(self):
        if self.read_sleep:
            time.sleep(self.read_sleep)
        if self.observations is not None:
            obs = np.array(self.observations[self.reads % len(self.observations)], np.float32).reshape(-1)
        else:
            obs = self.rng.standard_normal(len(self.obs_names)).astype(np.float32)
        self.reads += 1
        if self.nan_next:
            obs = obs.copy()
            obs[1] = np.nan
            self.nan_next = False
        return obs, (time.monotonic() if self.timestamp_override is None else self.timestamp_override)

    def write_command(self, action):
        self.commands.append(np.array(action, copy=True))


@pytest.mark.parametrize("kind", ["gru", "lstm", "mlp"])
def test_runtime_matches_jax_and_reset(exported, kind):
    policy, params, path, _ = exported[(kind, False)]
    obs = obs_sequence(policy, params, T=30, B=1, seed=3)
    want, _ = jax_rollout(policy, params, obs)
    robot = FakeRobot(observations=obs[:, 0])
    ctl = Controller(path, robot)
    got = np.stack([ctl.step() for _ in range(30)])
    np.testing.assert_allclose(got, want[:, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.stack(robot.commands), got)
    if kind != "mlp":
        assert all(np.abs(v).max() > 0 for v in ctl.carry.values())  # the state carries across steps
    ctl.reset()
    assert all(np.all(v == 0) for v in ctl.carry.values())
    robot.reads = 0  # replay from the start: a zeroed carry gives the same actions again
    again = np.stack([ctl.step() for _ in range(10)])
    np.testing.assert_allclose(again, want[:10, 0], atol=1e-5, rtol=0)
    assert ctl.events == SafetyEvents()


def test_runtime_discrete(exported):
    policy, params, path, _ = exported[("gru", True)]
    obs = obs_sequence(policy, params, T=20, B=1, seed=4)
    want, _ = jax_rollout(policy, params, obs)
    robot = FakeRobot(action_names=policy.spec.action_names, observations=obs[:, 0])
    ctl = Controller(path, robot)
    got = [int(ctl.step()) for _ in range(20)]
    assert got == [int(a) for a in want[:, 0]]
    assert robot.commands[0].dtype == np.int64


def test_nan_observation_safe_and_carry_kept(exported):
    policy, params, path, _ = exported[("gru", False)]
    obs = obs_sequence(policy, params, T=6, B=1, seed=5)
    robot = FakeRobot(observations=obs[:, 0])
    ctl = Controller(path, robot)
    ctl.step(), ctl.step()
    carry = ctl.carry
    robot.nan_next = True
    a = ctl.step()
    np.testing.assert_array_equal(a, policy.spec.action_offset)  # mid-range safe action
    assert ctl.events.nan_obs == 1
    np.testing.assert_array_equal(ctl.carry["h_in"], carry["h_in"])  # not poisoned
    # the next step continues from the carry before the NaN: JAX over obs[0], obs[1], obs[3]
    robot.reads = 3
    a3 = ctl.step()
    want, _ = jax_rollout(policy, params, obs[[0, 1, 3]])
    np.testing.assert_allclose(a3, want[-1, 0], atol=1e-5, rtol=0)
    assert np.all(np.isfinite(ctl.carry["h_in"]))


def test_nan_policy_output_is_caught(exported):
    _, _, path, _ = exported[("lstm", False)]
    robot = FakeRobot()
    ctl = Controller(path, robot, SafetyConfig(safe_action=(0.5, 1.0, 0.0)))
    ctl.step()
    carry = ctl.carry
    real = ctl.policy.step
    ctl.policy.step = lambda obs, c: (np.full((1, 3), np.nan, np.float32), {k: v * np.nan for k, v in c.items()})
    np.testing.assert_array_equal(ctl.step(), [0.5, 1.0, 0.0])
    assert ctl.events.nan_action == 1
    for k in carry:
        np.testing.assert_array_equal(ctl.carry[k], carry[k])
    ctl.policy.step = real
    assert np.all(np.isfinite(ctl.step()))


def test_stale_sensor_and_stop(exported):
    policy, _, path, _ = exported[("mlp", False)]
    robot = FakeRobot()
    ctl = Controller(path, robot, SafetyConfig(max_stale_steps=2))
    ctl.step()
    safe = policy.spec.action_offset
    robot.timestamp_override = time.monotonic() - 10 * DT  # too old
    np.testing.assert_array_equal(ctl.step(), safe)
    assert ctl.events.stale == 1
    robot.timestamp_override = None
    ctl.step()  # fresh again: fault counter re-arms
    ts = time.monotonic()
    robot.timestamp_override = ts
    ctl.step()  # first read at ts: fine
    np.testing.assert_array_equal(ctl.step(), safe)  # same timestamp repeated: stale
    np.testing.assert_array_equal(ctl.step(), safe)
    assert ctl.events.stale == 3 and not ctl.stopped
    with pytest.raises(ControllerStopped, match="3 fault steps"):
        ctl.step()
    assert ctl.stopped
    np.testing.assert_array_equal(robot.commands[-1], safe)  # the last command is the safe action
    n = len(robot.commands)
    with pytest.raises(ControllerStopped):
        ctl.step()
    assert len(robot.commands) == n  # a stopped controller writes nothing
    # run() reports the stop instead of raising; reset() forgot the last timestamp, so the first
    # reading at ts is accepted again and its three repeats stop the controller
    ctl.reset()
    robot.timestamp_override = time.monotonic()
    summary = ctl.run(10, realtime=False)
    assert summary["stopped"] and summary["steps"] == 4 and summary["events"]["stale"] == 3
    assert "fault steps" in summary["stop_reason"]


def test_overrun_counted(exported):
    _, _, path, _ = exported[("mlp", False)]
    dt = DT
    robot = FakeRobot(read_sleep=2 * dt)  # every read takes longer than a period
    ctl = Controller(path, robot, SafetyConfig(stale_after_s=1.0))
    t = time.perf_counter()
    summary = ctl.run(4, realtime=True)
    wall = time.perf_counter() - t
    assert summary["steps"] == 4 and summary["events"]["overruns"] == 4 == ctl.events.overruns
    assert wall < 4 * 2 * dt + 0.5  # no extra sleeping after an overrun
    assert summary["latency_us"]["median"] >= 2 * dt * 1e6
    assert summary["events"]["stale"] == 0 and not summary["stopped"]


def test_fixed_rate(exported):
    _, _, path, _ = exported[("gru", False)]
    dt = DT
    ctl = Controller(path, FakeRobot())
    t = time.perf_counter()
    summary = ctl.run(10, realtime=True)
    assert time.perf_counter() - t >= 10 * dt - 1e-3  # paced at control_dt, not back to back
    assert summary["steps"] == 10 and set(summary["latency_us"]) == {"median", "p99", "max", "mean"}
    assert 0 < summary["latency_us"]["median"] < dt * 1e6


def test_clip_and_rate_limit(exported):
    policy, params, path, _ = exported[("mlp", False)]
    obs = obs_sequence(policy, params, T=20, B=1, seed=6)
    want, _ = jax_rollout(policy, params, obs)
    lo, hi = np.array([-0.2, 1.0, -0.1]), np.array([0.2, 1.5, 0.1])
    assert np.any(want < lo) or np.any(want > hi)  # the policy does leave these bounds
    robot = FakeRobot(observations=obs[:, 0])
    ctl = Controller(path, robot, SafetyConfig(action_low=lo, action_high=hi))
    got = np.stack([ctl.step() for _ in range(20)])
    np.testing.assert_allclose(got, np.clip(want[:, 0], lo, hi), atol=1e-5)
    assert ctl.events.clipped == int(np.sum(np.any((want[:, 0] < lo) | (want[:, 0] > hi), axis=1)))

    rate = 0.05
    robot = FakeRobot(observations=obs[:, 0])
    ctl = Controller(path, robot, SafetyConfig(max_rate=rate))
    got = np.stack([ctl.step() for _ in range(20)])
    np.testing.assert_allclose(got[0], want[0, 0], atol=1e-5)  # first command: nothing to limit against
    assert np.all(np.abs(np.diff(got, axis=0)) <= rate + 1e-6)
    assert ctl.events.rate_limited >= 1
    # a fault moves to the safe action at the limited rate too
    robot.nan_next = True
    prev = got[-1]
    a = ctl.step()
    assert np.all(np.abs(a - prev) <= rate + 1e-6)
    assert np.all(np.sign(policy.spec.action_offset - prev) == np.sign(a - prev))


def test_contract_mismatch_refused(exported):
    _, _, path, _ = exported[("gru", False)]
    Controller(path, FakeRobot(control_dt=DT * (1 + 1e-12)))  # within 1e-9 relative: accepted
    with pytest.raises(ContractMismatch) as e:
        Controller(path, FakeRobot(obs_names=OBS_NAMES[:-1] + ("target",), control_dt=0.021))
    msg = str(e.value)
    assert "goal" in msg and "target" in msg and "control_dt" in msg and len(e.value.mismatches) == 3
    assert isinstance(e.value, ValueError)
    with pytest.raises(ContractMismatch, match="order differs from index 0"):
        Controller(path, FakeRobot(action_names=("knee", "hip", "ankle")))
    with pytest.raises(ContractMismatch, match="count: robot has 4, policy expects 5"):
        Controller(path, FakeRobot(obs_names=OBS_NAMES[:4]))


def test_safety_config_validation(exported):
    _, _, path, _ = exported[("mlp", False)]
    with pytest.raises(ValueError, match="safe_action"):
        Controller(path, FakeRobot(), SafetyConfig(safe_action=(5.0, 0.0, 0.0)))  # outside the bounds
    with pytest.raises(ValueError, match="max_rate"):
        Controller(path, FakeRobot(), SafetyConfig(max_rate=(0.1, 0.1)))
    with pytest.raises(FileNotFoundError):
        OnnxPolicy(path.parent / "missing.onnx")
    assert math.isclose(Controller(path, FakeRobot()).stale_after_s, 3 * DT)
