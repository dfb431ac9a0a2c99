"""Hardening, the CLI: a bad train config is refused naming the flag and the value before anything is
built or written; Ctrl-C and OS errors end without a traceback (issue 22, items 7 and 8)."""

from __future__ import annotations

import pytest

from meta_rl.ppo import PPOConfig
from proteus.cli import main

BASE = ["train", "ppo", "--env", "pendulum-swingup", "--no-progress"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", str(10**21)], "--steps must lie in [1, 4_611_686_018_427_387_904], got 1000000000000000000000"),
        (["--lr", "inf"], "--lr must be finite, got inf"),
        (["--ent-coef", "nan"], "--ent-coef must be finite, got nan"),
        (["--lr", "-1"], "--lr must be > 0, got -1.0"),
        (["--gamma", "1.5"], "--gamma must lie in (0, 1], got 1.5"),
        (["--steps", str(2**40)], "more optimizer steps than the int32 counters hold"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1"),
        (["--seed", "-1"], "--seed must be an integer in [0, 2**32), got -1"),
        (["--seed", str(2**32)], f"--seed must be an integer in [0, 2**32), got {2**32}"),
        (["--backend", "foo"], "--backend must be one of auto, jax, native, mjx, got 'foo'"),
        (["--backend", "jax"], "--backend jax: pendulum-swingup runs on native, mjx (or auto)"),
    ],
)
def test_bad_train_value_is_refused_naming_the_flag_and_no_run_folder_is_made(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(BASE + ["--out", str(out)] + args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not out.exists()


def test_unknown_env_lists_the_closest_ids(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "ppo", "--env", "pendulum-swingupp", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    assert "Did you mean pendulum-swingup" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "kw, text",
    [
        ({"num_envs": 2.5}, "PPOConfig.num_envs=2.5: must be an integer"),
        ({"total_steps": 10**21}, "PPOConfig.total_steps=1000000000000000000000: must lie in"),
        ({"lr": float("inf")}, "PPOConfig.lr=inf: must be finite"),
        ({"ent_coef": float("nan")}, "PPOConfig.ent_coef=nan: must be finite"),
        ({"max_grad_norm": float("inf")}, "PPOConfig.max_grad_norm=inf: must be finite"),
        ({"init_log_std": float("nan")}, "PPOConfig.init_log_std=nan: must be finite"),
        ({"anneal_lr": "yes"}, "PPOConfig.anneal_lr='yes': must be True or False"),
        ({"hidden": (64, 0)}, "PPOConfig.hidden=(64, 0): must be a tuple of integer widths"),
        ({"num_envs": 2**20, "num_steps": 2**12, "num_minibatches": 1, "total_steps": 2**40},
         "transitions per update) must be <="),
    ],
)
def test_config_refuses_values_that_used_to_pass(kw, text):
    with pytest.raises(ValueError) as e:
        PPOConfig(**kw)
    assert text in str(e.value)


def _raising(exc):
    def run(*_, **__):
        raise exc
    return run


def test_ctrl_c_prints_interrupted_and_exits_130(monkeypatch, capsys):
    monkeypatch.setattr("proteus.envs.print_envs", _raising(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as e:
        main(["envs"])
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_interrupted_training_says_where_to_resume(monkeypatch, tmp_path, capsys):
    from proteus.runs import RunInterrupted

    msg = "training interrupted: last checkpoint at update 3. Run again to resume: proteus train ppo ..."
    monkeypatch.setattr("proteus.runs.train_run", _raising(RunInterrupted(msg)))
    with pytest.raises(SystemExit) as e:
        main(BASE + ["--out", str(tmp_path / "run")])
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == msg


@pytest.mark.parametrize("exc", [PermissionError(13, "Permission denied", "/runs/x/metrics.jsonl"),
                                 NotADirectoryError(20, "Not a directory", "/runs/x/metrics.jsonl"),
                                 OSError(30, "Read-only file system", "/runs/x/metrics.jsonl")])
def test_os_errors_name_the_path_without_a_traceback(monkeypatch, tmp_path, capsys, exc):
    monkeypatch.setattr("proteus.runs.train_run", _raising(exc))
    with pytest.raises(SystemExit) as e:
        main(BASE + ["--out", str(tmp_path / "run")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: /runs/x/metrics.jsonl: {exc.strerror}"


_NO_JAX = """
import sys
from proteus.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = sorted(m for m in ("jax", "mujoco", "flax", "onnxruntime") if m in sys.modules)
print("HEAVY", ",".join(heavy), "CODE", code)
"""


@pytest.mark.parametrize("args, code", [
    (["train", "--help"], 0),
    (["train", "rl2", "--env", "bandit-k50-n100", "--help"], 0),
    (["train", "ppo", "--lr", "-1"], 2),
    (["train", "rl2", "--env", "cartpole-swingup", "--seed", "-1"], 2),
    (["train", "ppo", "--env", "nope"], 2),
    (["train", "maml", "--env", "point-goal", "--inner-lr", "0"], 2),
    (["eval", "no/such/run"], 2),
    (["export", "no/such/run"], 2),
    (["demo", "--steps", "0"], 2),
    (["bench", "deploy", "--rounds", "0"], 2),
])
def test_help_and_refusals_load_no_jax_or_mujoco(tmp_path, args, code):
    """``--help`` and refusals answer before JAX, MuJoCo, flax or onnxruntime are imported (issue 22, 9e:
    they took 3-10 s), and a refusal makes no folder."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _NO_JAX, *args], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    last = r.stdout.strip().splitlines()[-1]
    assert last == f"HEAVY  CODE {code}", (last, r.stderr[-2000:])
    if code:
        assert r.stderr.startswith("error: "), r.stderr
    assert not any(tmp_path.iterdir())
