"""Plot return against training budget, one line per learner, from ``proteus eval`` reports.

    .venv/bin/python scripts/budget_curves.py runs/nec20k runs/nec50k runs/nec100k --out budgets.png

Each argument is a run folder evaluated with ``proteus eval RUN --baseline OTHER ...`` (or its
``eval/report.json``). The run and each of its baselines give one point per report: the mean trial
return with its 95% CI over the report's worlds, at the env steps that run trained for. Points of the
same learner (by ``algo``) are joined across reports, so a run evaluated at 20k, 50k and 100k steps
against baselines of the same budgets draws every learner's learning curve, measured on the same
held-out worlds, in one panel per split.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Arguments.

    Attributes:
        reports: run folders (with ``eval/report.json``) or report files.
        out: the PNG to write.
        title: figure title (default: the reports' env).
    """

    reports: tyro.conf.Positional[tuple[Path, ...]]
    out: Path = Path("budgets.png")
    title: str = ""


def _load(path: Path) -> dict:
    file = path / "eval" / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"error: no eval report at {file} (run proteus eval {path} --baseline ... first)")
    return json.loads(file.read_text())


def points(reports: list[dict]) -> dict:
    """``{split: {algo: [(env_steps, mean, ci95)]}}`` sorted by env steps."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in reports:
        for split, row in r["splits"].items():
            if not row or not row.get("policy"):
                continue
            players = [(r["policy"], row["policy"])]
            players += [(r["baselines"][name], s) for name, s in (row.get("baselines") or {}).items()]
            for meta, s in players:
                entry = (int(meta["env_steps"]), float(s["mean"]), float(s["ci95"]))
                if entry not in out[split][meta["algo"]]:
                    out[split][meta["algo"]].append(entry)
    return {sp: {a: sorted(v) for a, v in d.items()} for sp, d in out.items()}


def main(a: Args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [_load(p) for p in a.reports]
    envs = sorted({r["env"] for r in reports})
    if len(envs) != 1:
        raise SystemExit(f"error: the reports are on different envs ({', '.join(envs)}); plot one env at a time")
    pts = points(reports)
    splits = [s for s in ("train", "interp", "extrap") if s in pts]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.8), sharey=True, squeeze=False)
    for ax, split in zip(axes[0], splits):
        for algo, rows in sorted(pts[split].items()):
            x, y, ci = zip(*rows)
            ax.errorbar(x, y, yerr=ci, marker="o", capsize=3, label=algo)
        ax.set_title(split)
        ax.set_xlabel("env steps trained")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("trial return (mean ± 95% CI)")
    axes[0][0].legend()
    fig.suptitle(a.title or f"{envs[0]}: return against training budget, same held-out worlds")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return a.out


if __name__ == "__main__":
    sys.exit(0 if main(tyro.cli(Args)) else 1)
