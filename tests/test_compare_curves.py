"""scripts/compare_curves.py: several runs' curves on one figure; a missing metric is named."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_curves.py"


def _load():
    spec = importlib.util.spec_from_file_location("compare_curves", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _run(path: Path, algo: str, slope: float) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"algo": algo, "env": "point-goal2d", "seed": 0}))
    rows = [{"update": i, "env_steps": 1000 * i, "episode_return": slope * i, "pre_return": -i} for i in range(1, 30)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plots_runs_and_names_a_missing_metric(tmp_path):
    mod = _load()
    a, b = _run(tmp_path / "a", "maml", 1.0), _run(tmp_path / "b", "promp", 2.0)
    out = mod.main(mod.Args(runs=(a, b), out=tmp_path / "fig" / "c.png", label=("MAML", "ProMP")))
    assert out.is_file() and out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no 'kl'.*episode_return"):
        mod.main(mod.Args(runs=(a,), out=tmp_path / "d.png", metric="kl"))
    with pytest.raises(SystemExit, match="1 labels for 2 runs"):
        mod.main(mod.Args(runs=(a, b), out=tmp_path / "d.png", label=("x",)))
