"""Episode k minus episode 1, per world, against one world parameter: where in a split a learner gains or
loses from one episode to the next.

    python scripts/episode_gain_by_param.py RUN/eval --param target_vel --split extrap [--bins 5]
        [--compare RUN/eval-reset-memory] [--plot gain.png]

Reads ``returns.npz`` and ``report.json`` of a ``proteus eval`` folder, re-draws the evaluated worlds
(the same ``eval_tasks`` draw as the evaluation: same env, world count and split) and prints, per
parameter bin, the mean paired gain of every player with its 95% CI. ``--compare`` adds the same
player from a second evaluation of the same worlds (``--reset-memory``'s, say) as its own column.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _load(folder: Path):
    report = json.loads((folder / "report.json").read_text())
    with np.load(folder / "returns.npz") as z:
        returns = {k: z[k] for k in z.files}
    return report, returns


def _ci(x: np.ndarray) -> tuple[float, float]:
    if len(x) < 2:
        return float(np.mean(x)) if len(x) else float("nan"), float("nan")
    return float(x.mean()), float(1.96 * x.std(ddof=1) / np.sqrt(len(x)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--param", required=True, help="a world parameter's name (proteus envs --verbose lists them)")
    ap.add_argument("--split", default="extrap")
    ap.add_argument("--episode", type=int, default=2, help="episode k of the gain k - 1 (1-based)")
    ap.add_argument("--bins", type=int, default=5)
    ap.add_argument("--player", default="policy")
    ap.add_argument("--compare", type=Path, default=None, help="a second eval folder of the same worlds")
    ap.add_argument("--plot", type=Path, default=None)
    a = ap.parse_args(argv)

    report, returns = _load(a.eval_dir)
    key = f"{a.split}/{a.player}"
    if key not in returns:
        print(f"{a.eval_dir}/returns.npz has no {key}; it holds {', '.join(sorted(returns))}", file=sys.stderr)
        return 2
    series = {a.player: returns[key]}
    if a.compare is not None:
        other_report, other = _load(a.compare)
        if (other_report["env"], other_report["tasks"]) != (report["env"], report["tasks"]) or key not in other:
            print(f"{a.compare} is not an evaluation of the same worlds ({report['env']}, {report['tasks']} worlds, "
                  f"{key})", file=sys.stderr)
            return 2
        series[f"{a.player} ({a.compare.name})"] = other[key]
    k = a.episode
    if not 2 <= k <= next(iter(series.values())).shape[1]:
        print(f"--episode must lie in [2, {next(iter(series.values())).shape[1]}], got {k}", file=sys.stderr)
        return 2

    from randomization.ranges import check_split
    from meta_rl.evaluate import eval_tasks
    from proteus.evaluation import eval_env

    env = eval_env(report["env"], report["backend"], report["tasks"], report["episodes_per_trial"])
    values = env.param_values(eval_tasks(env, report["tasks"], check_split(a.split)))
    if a.param not in values:
        print(f"{report['env']} has no parameter {a.param!r}; it has {', '.join(values)}", file=sys.stderr)
        return 2
    x = np.asarray(values[a.param], np.float64).reshape(report["tasks"], -1)[:, 0]
    edges = np.quantile(x, np.linspace(0, 1, a.bins + 1))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, a.bins - 1)
    names = list(series)
    print(f"{report['env']} {a.split}: episode {k} minus episode 1 by {a.param} ({report['tasks']} worlds)\n")
    print("| " + a.param + " | worlds | " + " | ".join(f"{n}: ep 1 → ep {k} (gain)" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    rows = []
    for b in range(a.bins):
        m = which == b
        cells = []
        for n in names:
            r = series[n][m]
            g, h = _ci(r[:, k - 1] - r[:, 0])
            cells.append(f"{r[:, 0].mean():.1f} → {r[:, k - 1].mean():.1f} ({g:+.1f} ± {h:.1f})")
            rows.append((b, n, g, h))
        print(f"| [{edges[b]:.3g}, {edges[b + 1]:.3g}] | {int(m.sum())} | " + " | ".join(cells) + " |")
    if a.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        mids = (edges[:-1] + edges[1:]) / 2
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for n in names:
            g = np.array([r[2] for r in rows if r[1] == n])
            h = np.array([r[3] for r in rows if r[1] == n])
            ax.errorbar(mids, g, yerr=h, marker="o", capsize=3, label=n)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(a.param)
        ax.set_ylabel(f"episode {k} − episode 1")
        ax.set_title(f"{report['env']} · {a.split}")
        ax.legend()
        fig.tight_layout()
        a.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=120)
        print(f"\nwrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
