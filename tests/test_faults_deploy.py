"""Hardening of the deploy outputs (issue 22): partial sim2sim reports, stand-in option checks, file
modes of atomic writes, the ONNX metadata's obs_layout of one-hot blocks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import sim
from deploy.export import build_onnx, export_onnx, obs_layout
from deploy.files import write_atomic
from deploy.rl2_inputs import RL2Inputs
from deploy.standin import MujocoStandIn, run_standin
from meta_rl.networks import Policy, PolicySpec
from proteus.demo import deploy_standin

ENV = "pendulum-swingup"


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """(healthy policy.onnx, nan.onnx: the same graph whose output offset is NaN), exported under umask 022."""
    root = tmp_path_factory.mktemp("faults_deploy")
    env = sim.make(ENV, trial=False, backend="native")
    policy = Policy(PolicySpec.for_env(env, "mlp", hidden=(8,)))
    mask = os.umask(0o022)
    try:
        export_onnx(policy, policy.init(jax.random.key(0)), root / "policy.onnx",
                    {"control_dt": env.unwrapped.control_dt, "env_id": ENV})
    finally:
        os.umask(mask)
    model = onnx.load(str(root / "policy.onnx"))
    last = model.graph.node[-1]  # the action's "+ offset"
    for init in model.graph.initializer:
        if init.name in last.input:
            init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(model, str(root / "nan.onnx"))
    return root / "policy.onnx", root / "nan.onnx"


def test_report_when_every_world_stops(onnx_files, tmp_path):
    """A NaN policy stops every world on the safety layer: the report is written (it crashed in _plot)."""
    out = tmp_path / "r"
    report = run_standin(onnx_files[1], ENV, worlds=2, latency_ms=0.0, friction=None, out_dir=out)
    data = json.loads((out / "sim2sim.json").read_text())
    assert (out / "sim2sim.png").stat().st_size > 1000
    assert data["summary"]["stopped_worlds"] == 2 and data["summary"]["mean_return"] is None
    assert [s["world"] for s in data["summary"]["stopped"]] == [0, 1]
    for r in data["results"]:
        assert r["stopped"] and r["episodes"] == [] and r["mean_return"] is None
        assert "non-finite" in r["stop_reason"] or "nan" in r["stop_reason"].lower()
        assert r["stop_step"] == r["steps"] > 0 and r["partial_episode"]["length"] == r["steps"]
        assert r["safety_events"]["nan_action"] > 0
    assert report["summary"] == data["summary"]


def test_report_with_some_worlds_stopped(onnx_files, tmp_path):
    """Stale worlds (latency above the stale limit) stop; the others keep their full report fields."""
    from deploy.runtime import SafetyConfig

    data = run_standin(onnx_files[0], ENV, worlds=2, latency_ms=(0.0, 400.0), friction=None, out_dir=tmp_path,
                       safety=SafetyConfig(stale_after_s=0.3))
    lat = {r["world"]: r["latency_ms"] for r in data["results"]}
    assert sorted(lat.values())[0] < 200 <= sorted(lat.values())[1]
    for r in data["results"]:
        assert r["stopped"] == (r["latency_ms"] > 300.0)
        if not r["stopped"]:
            assert len(r["episodes"]) == 2 and r["mean_return"] is not None and r["partial_episode"] is None
    rets = [e["return"] for r in data["results"] for e in r["episodes"]]
    assert data["summary"]["mean_return"] == pytest.approx(np.mean(rets))


@pytest.mark.parametrize("kw, match", [
    ({"latency_ms": "1e10"}, r"--latency-ms must be at most 1000, got 1e\+?10|--latency-ms .*10000000000"),
    ({"latency_ms": "5:2"}, r"--latency-ms .*'5:2'"),
    ({"latency_ms": "x:1"}, r"--latency-ms .*'x:1'"),
    ({"latency_ms": "nan"}, r"--latency-ms must be finite, got nan"),
    ({"latency_ms": "-3:2"}, r"--latency-ms must be >= 0, got -3"),
    ({"friction": "0:1"}, r"--friction must be > 0, got 0"),
    ({"mass": "inf"}, r"--mass must be finite, got inf"),
    ({"gain": "-1"}, r"--gain must be > 0, got -1"),
    ({"noise_std": float("nan")}, r"--noise-std must be finite, got nan"),
    ({"noise_std": -0.1}, r"--noise-std must be >= 0, got -0.1"),
    ({"timestep": 0.0}, r"--timestep must be > 0, got 0"),
    ({"worlds": 0}, r"--worlds must be in \[1, 1024\], got 0"),
    ({"worlds": 2.5}, r"--worlds must be a whole number, got 2.5"),
])
def test_bad_standin_options_refused_first(tmp_path, kw, match):
    """Refused before anything is read or built (the missing ONNX file is not reached)."""
    with pytest.raises(ValueError, match=match):
        deploy_standin(tmp_path / "missing.onnx", ENV, out_dir=tmp_path / "r", **kw)
    assert not (tmp_path / "r").exists()


def test_robot_limits_refused(onnx_files, tmp_path):
    with pytest.raises(ValueError, match=r"--timestep must be in .*got 1e-07"):
        deploy_standin(onnx_files[0], ENV, timestep=1e-7, out_dir=tmp_path / "r", training_return=1.0)
    with pytest.raises(ValueError, match=r"latency_ms must be at most 1000, got 10000000000"):
        MujocoStandIn(ENV, latency_ms=1e10)
    assert not (tmp_path / "r").exists()


def test_atomic_writes_have_the_normal_mode(onnx_files, tmp_path):
    assert onnx_files[0].stat().st_mode & 0o777 == 0o644  # exported under umask 022 (was 0600)
    mask = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.bin", b"x")
        with pytest.raises(FileExistsError, match="a.bin"):
            write_atomic(tmp_path / "a.bin", b"y")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640 and (tmp_path / "a.bin").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_sim2sim_files_have_the_normal_mode(onnx_files, tmp_path):
    mask = os.umask(0o022)
    try:
        run_standin(onnx_files[1], ENV, worlds=1, latency_ms=0.0, friction=None, out_dir=tmp_path)
    finally:
        os.umask(mask)
    assert {p.name: p.stat().st_mode & 0o777 for p in Path(tmp_path).iterdir()} == \
        {"sim2sim.json": 0o644, "sim2sim.png": 0o644}


def test_obs_layout_keeps_one_hot_blocks_whole():
    """A discrete RL² bandit: the one-hot previous action is one entry (it was one per column)."""
    env = sim.make("bandit-k5-n10", mode="trial")
    names = env.observation_space.names
    want = [{"name": "bias", "start": 0, "stop": 1}, {"name": "prev_action", "start": 1, "stop": 6},
            {"name": "prev_reward", "start": 6, "stop": 7}, {"name": "prev_done", "start": 7, "stop": 8},
            {"name": "trial_time", "start": 8, "stop": 9}]
    assert obs_layout(names) == want
    policy = Policy(PolicySpec.for_env(env, "gru", hidden=(8,), core_size=4))
    e = sim.entry("bandit-k5-n10")
    model = build_onnx(policy, policy.init(jax.random.key(0)),
                       {"control_dt": 1.0, "episodes_per_trial": e.episodes_per_trial,
                        "episode_length": env.unwrapped.episode_length})
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["obs_layout"] == want
    # the RL² inputs a driver builds from the metadata fill exactly the layout's tail blocks
    rl2 = RL2Inputs.from_metadata(meta)
    block = next(b for b in meta["obs_layout"] if b["name"] == "prev_action")
    assert tuple(meta["obs_names"][block["start"]:block["stop"]]) == rl2.names[:5]
