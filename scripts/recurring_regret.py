"""Regret on recurring against novel tasks: the episodic LSTM's claim (Ritter et al. 2018).

    .venv/bin/python scripts/recurring_regret.py runs/eplstm --baseline runs/rl2 --out regret.png

Both runs (trained on a recurring-task env, ``recurring-bandit``) play the same held-out lifetimes
(``--worlds`` per split, the evaluation worlds of ``proteus eval``), sampling their actions as
``proteus eval`` does for discrete actions. For each lifetime it averages the regret (the best arm's
probability minus the pulled one's) over the first ``--first`` pulls of its *recurring* episodes (a
task seen earlier in the lifetime, identified by the same cue) and of its *novel* ones, then reports
each run's mean and the run minus the baseline, paired over the same lifetimes, with 95% CIs. The
figure shows the regret per pull, recurring and novel, for both runs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclasses.dataclass(frozen=True)
class Args:
    """Arguments.

    Attributes:
        run: the run folder to score (e.g. ``proteus train episodic-lstm --env recurring-bandit``).
        baseline: the run it is compared with on the same lifetimes (e.g. ``proteus train rl2``).
        worlds: lifetimes per split.
        split: the splits to score.
        first: pulls counted from the start of each episode.
        out: the figure (PNG); a JSON of the numbers is written next to it.
    """

    run: tyro.conf.Positional[Path]
    baseline: Path
    worlds: int = 1000
    split: tuple[str, ...] = ("train", "interp", "extrap")
    first: int = 10
    out: Path = Path("recurring_regret.png")


def per_world(metrics: dict, first: int) -> dict[str, np.ndarray]:
    """Mean regret per episode over its first ``first`` pulls, ``[B]`` for recurring and novel episodes
    (NaN for a lifetime with none of that kind), and the per-pull curves ``[first]`` of each kind."""
    regret, rec, pull, live = (np.asarray(metrics[k]) for k in ("regret", "recurring", "pull", "live"))
    counted = live & (pull < first)
    out = {}
    for kind, mask in (("recurring", counted & rec), ("novel", counted & ~rec)):
        episodes = (mask & (pull == 0)).sum(0)
        total = np.where(mask, regret, 0.0).sum(0)
        out[kind] = np.where(episodes > 0, total / np.maximum(episodes, 1), np.nan)
        out[f"{kind}_by_pull"] = np.asarray([regret[mask & (pull == j)].mean() if (mask & (pull == j)).any()
                                             else np.nan for j in range(first)])
    return out


def _ci(x: np.ndarray) -> tuple[float, float, int]:
    x = x[np.isfinite(x)]
    return float(x.mean()), float(1.96 * x.std(ddof=1) / np.sqrt(len(x))), int(len(x))


def main(a: Args) -> dict:
    import jax

    import sim
    from meta_rl.evaluate import eval_tasks, run_trials
    from proteus.runs import load_agent

    spec, agent = load_agent(a.run, deterministic=False)
    bspec, base = load_agent(a.baseline, deterministic=False)
    if spec.env != bspec.env:
        raise SystemExit(f"error: {a.run} is trained on {spec.env} but {a.baseline} on {bspec.env}")
    env = sim.make(spec.env, batch_size=a.worlds, mode="trial")
    if "recurring" not in getattr(env.unwrapped, "family", ""):
        raise SystemExit(f"error: {spec.env} is not a recurring-task env (its steps report no 'recurring' metric)")
    play = jax.jit(lambda ag, p, k: run_trials(env, ag, p, k, record_metrics=True))
    report = {"run": str(a.run), "baseline": str(a.baseline), "env": spec.env, "worlds": a.worlds, "first": a.first,
              "splits": {}}
    curves = {}
    for split in a.split:
        worlds = eval_tasks(env, a.worlds, split)
        mine = per_world(play(agent, worlds, jax.random.key(1)).metrics, a.first)
        theirs = per_world(play(base, worlds, jax.random.key(1)).metrics, a.first)
        row = {}
        for kind in ("recurring", "novel"):
            m, ci, n = _ci(mine[kind])
            bm, bci, _ = _ci(theirs[kind])
            d, dci, dn = _ci(mine[kind] - theirs[kind])
            row[kind] = {"run": m, "run_ci95": ci, "baseline": bm, "baseline_ci95": bci, "run_minus_baseline": d,
                         "ci95": dci, "lifetimes": dn}
            print(f"{split:7s} {kind:9s} regret over the first {a.first} pulls: {spec.algo} {m:.3f} ± {ci:.3f}, "
                  f"{bspec.algo} {bm:.3f} ± {bci:.3f}, difference {d:+.3f} ± {dci:.3f} ({dn} lifetimes)")
        report["splits"][split] = row
        curves[split] = (mine, theirs)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), sharey=True, squeeze=False)
    for ax, (split, (mine, theirs)) in zip(axes[0], curves.items()):
        for label, res, color in ((spec.algo, mine, "C0"), (bspec.algo, theirs, "C1")):
            ax.plot(res["recurring_by_pull"], color=color, label=f"{label}, recurring")
            ax.plot(res["novel_by_pull"], color=color, ls="--", label=f"{label}, novel")
        ax.set_title(split)
        ax.set_xlabel("pull in the episode")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("regret per pull")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{spec.env}: regret per pull, {a.worlds} held-out lifetimes per split")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}")
    return report


if __name__ == "__main__":
    main(tyro.cli(Args))
