"""scripts/budget_curves.py: learners' returns against training budget from eval reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "budget_curves.py"


def _load():
    spec = importlib.util.spec_from_file_location("budget_curves", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _report(path: Path, steps: int, env: str = "maze-discrete") -> Path:
    (path / "eval").mkdir(parents=True)
    summary = lambda m: {"mean": m, "ci95": 1.0}  # noqa: E731
    r = {"env": env, "policy": {"algo": "nec", "env_steps": steps},
         "baselines": {"d": {"algo": "dqn", "env_steps": steps}, "p": {"algo": "ppo", "env_steps": steps - 1}},
         "splits": {s: {"policy": summary(steps / 1000), "baselines": {"d": summary(1.0), "p": summary(0.5)}}
                    for s in ("train", "extrap")}}
    (path / "eval" / "report.json").write_text(json.dumps(r))
    return path


def test_points_join_each_learner_across_budgets_and_the_figure_is_written(tmp_path):
    mod = _load()
    runs = [_report(tmp_path / f"r{s}", s) for s in (50_000, 20_000)]
    pts = mod.points([mod._load(p) for p in runs])
    assert pts["train"]["nec"] == [(20_000, 20.0, 1.0), (50_000, 50.0, 1.0)]
    assert pts["extrap"]["ppo"] == [(19_999, 0.5, 1.0), (49_999, 0.5, 1.0)]
    out = mod.main(mod.Args(reports=tuple(runs), out=tmp_path / "b.png"))
    assert out.stat().st_size > 0
    other = _report(tmp_path / "other", 1000, env="cartpole-balance-discrete")
    with pytest.raises(SystemExit, match="different envs"):
        mod.main(mod.Args(reports=(runs[0], other), out=tmp_path / "c.png"))
    with pytest.raises(SystemExit, match="no eval report"):
        mod.main(mod.Args(reports=(tmp_path / "missing",), out=tmp_path / "d.png"))
