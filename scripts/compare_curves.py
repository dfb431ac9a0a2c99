"""Plot several runs' learning curves on one figure: a metric of ``metrics.jsonl`` against env steps.

    .venv/bin/python scripts/compare_curves.py runs/maml-cd runs/promp-cd --out curves.png
    .venv/bin/python scripts/compare_curves.py runs/maml-cd runs/promp-cd --metric pre_return --label MAML ProMP

Each run is drawn faintly as logged and in bold as a running mean of ``--smooth`` points. For MAML and
ProMP, ``episode_return`` is the return after the inner step(s) and ``pre_return`` the one before.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proteus.runs import read_metrics  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    """Arguments.

    Attributes:
        runs: run folders (each with a metrics.jsonl).
        out: the PNG to write.
        metric: the ``metrics.jsonl`` field to plot.
        label: one legend label per run (default: "LEARNER (FOLDER)").
        smooth: points in the running mean.
        title: figure title (default: the metric and the runs' env).
    """

    runs: tyro.conf.Positional[tuple[Path, ...]]
    out: Path = Path("curves.png")
    metric: str = "episode_return"
    label: tuple[str, ...] = ()
    smooth: int = 10
    title: str = ""


def main(a: Args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not a.runs:
        raise SystemExit("give at least one run folder")
    if a.label and len(a.label) != len(a.runs):
        raise SystemExit(f"--label has {len(a.label)} labels for {len(a.runs)} runs")
    if a.smooth < 1:
        raise SystemExit(f"--smooth must be >= 1, got {a.smooth}")
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    envs = set()
    for i, run in enumerate(a.runs):
        rows = read_metrics(run)
        cfg = json.loads((run / "config.json").read_text())
        envs.add(cfg["env"])
        pts = np.array([(r["env_steps"], r[a.metric]) for r in rows if r.get(a.metric) is not None], dtype=float)
        if not len(pts):
            known = sorted({k for r in rows for k in r})
            raise SystemExit(f"{run}/metrics.jsonl has no {a.metric!r}; its fields: {', '.join(known)}")
        x, y = pts.T
        label = a.label[i] if a.label else f"{cfg['algo']} ({run.name})"
        ax.plot(x, y, lw=0.7, alpha=0.3, color=f"C{i}")
        w = min(a.smooth, len(y))
        ax.plot(x[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid"), lw=2, color=f"C{i}", label=label)
    ax.set(xlabel="env steps", ylabel=a.metric, title=a.title or f"{a.metric} on {', '.join(sorted(envs))}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out)
    plt.close(fig)
    print(f"wrote {a.out}")
    return a.out


if __name__ == "__main__":
    main(tyro.cli(Args))
