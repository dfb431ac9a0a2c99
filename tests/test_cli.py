"""The ``proteus`` CLI: envs listing, benchmarks, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import sim
from proteus.cli import main


def test_envs_lists_every_env(capsys):
    main(["envs", "--verbose"])
    out = capsys.readouterr().out
    for env_id in sim.registered():
        assert env_id in out
    assert "goal_angle_deg: train [0, 150] ∪ [180, 300] · interp [150, 180] · extrap [300, 360]" in out


def test_env_rows_carry_spaces_families_and_ranges():
    from proteus.envs import env_rows

    rows = {r["id"]: r for r in env_rows()}
    assert rows["point-goal"]["action"] == "Box(2)" and rows["bandit-k10-n100"]["action"] == "Discrete(10)"
    assert rows["mdp-s10-a5-n25"]["trial"] == "25 × 10 steps"
    assert "(150, 180)" not in rows["point-goal"]["ranges"]["goal_angle_deg"]["train"]
    assert rows["point-goal"]["ranges"]["goal_angle_deg"]["extrap"] == "[300, 360]"
    assert rows["point-vel"]["family"] == "point-vel"


def test_bench_env_writes_json_with_ratio(tmp_path, capsys):
    path = tmp_path / "env.json"
    main(["bench", "env", "--env", "point-goal", "--batch", "64", "--steps", "20", "--repeats", "1", "--json", str(path)])
    data = json.loads(path.read_text())
    assert all("jax" in r["name"] for r in data["rows"])
    assert {r["baseline_name"] for r in data["rows"]} == {
        "numpy loop, vectorized over the batch", "numpy loop, one env at a time"}
    for r in data["rows"]:
        assert r["value"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])
    assert "numpy loop, one env at a time" in capsys.readouterr().out


def test_bench_baselines_small(tmp_path):
    path = tmp_path / "b.json"
    main(["bench", "baselines", "--tasks", "50", "--mdp-tasks", "20", "--pulls", "10", "--arms", "5",
          "--episodes", "10", "--json", str(path)])
    rows = json.loads(path.read_text())["rows"]
    names = {r["name"].split(" ")[0] for r in rows}
    assert {"bandit-k5-n10/random", "bandit-k5-n10/thompson", "bandit-k5-n10/gittins", "mdp-s10-a5-n10/psrl"} <= names
    assert all(r["baseline"] is None or r["ratio"] > 0 for r in rows)


def test_unknown_env_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "env", "--env", "cheetah"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown env 'cheetah'" in err and "bandit-k5-n10" in err


def test_console_script_runs():
    exe = shutil.which("proteus") or str(__import__("pathlib").Path(sys.executable).parent / "proteus")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "envs" in out.stdout and "bench" in out.stdout


def test_bench_sim_small(tmp_path):
    path = tmp_path / "sim.json"
    main(["bench", "sim", "--env", "pendulum-swingup", "--batch", "4", "--steps", "5", "--mjx-steps", "2",
          "--json", str(path)])
    from proteus import bench_envpool

    data = json.loads(path.read_text())
    peer = bench_envpool.available()  # the EnvPool row needs the optional bench extra
    assert set(data["results"]) == {"a", "b", "b+", "c", "d"} | ({"e"} if peer else set())
    assert all(v > 0 for v in data["results"].values())
    names = [r["baseline_name"] for r in data["rows"]]
    assert names[:-1] == [
        "(a) open-loop rollout", "(b) one rollout call per step", "(b+) one call per step, persistent pool",
        "(d) MJX on CPU"] + (["(e) EnvPool PendulumSwingup-v1, jitted loop"] if peer else [])
    # the auto row: tests force PROTEUS_AUTO_BACKEND=native, so auto is row (c) against the faster of (a), (d)
    assert data["auto_backend"] == "native" and names[-1].endswith("the faster of open-loop native and MJX")
    fastest = max(data["results"]["a"], data["results"]["d"])
    assert data["rows"][-1]["value"] == pytest.approx(data["results"]["c"])
    assert data["rows"][-1]["baseline"] == pytest.approx(fastest)


def test_bench_memory_small(tmp_path):
    import importlib.util

    path = tmp_path / "memory.json"
    main(["bench", "memory", "--capacity", "64", "128", "--key-dim", "4", "--batch", "8", "--k", "2",
          "--json", str(path)])
    data = json.loads(path.read_text())
    assert [r["name"] for r in data["rows"]] == [f"DND {op}s/s, capacity {c}" for c in (64, 128) for op in ("lookup", "write")]
    assert all(r["value"] > 0 for r in data["rows"])
    faiss = importlib.util.find_spec("faiss") is not None  # the peer needs the optional bench extra
    assert all((r["baseline"] is not None) == faiss for r in data["rows"])


def test_bench_memory_refuses_capacity_below_k(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "memory", "--capacity", "8", "--k", "50"])
    assert "every capacity >= k" in capsys.readouterr().err


def test_bench_sim_refuses_non_mujoco_env(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "sim", "--env", "bandit-k5-n10"])
    assert "bandit-k5-n10 is not a MuJoCo robot" in capsys.readouterr().err


def test_demo_end_to_end_smoke(tmp_path, capsys):
    """``proteus demo`` on a one-update budget: every stage runs and leaves its artefact."""
    from proteus.cli import main

    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--steps", "8192", "--no-progress", "--standin-worlds", "2"])
    text = capsys.readouterr().out
    for f in ("config.json", "learning_curve.png", "eval/report.json", "eval/adaptation.png", "policy.onnx",
              "policy_parity.png", "sim2sim/sim2sim.json", "sim2sim/sim2sim.png", "demo.json"):
        assert (out / f).is_file(), f
    assert "stand-in return / training return" in text
    figures = json.loads((out / "demo.json").read_text())
    assert figures["standin_mean_return"] is not None and figures["training_return"] is not None
    # a second run on the same folder resumes: nothing is overwritten, nothing recomputed
    main(["demo", "--out", str(out), "--steps", "8192", "--no-progress", "--standin-worlds", "2"])
    assert "exists (resumed demo): kept" in capsys.readouterr().out
