"""Where each agent goes in its first episode on held-out goals: point-navigation runs side by side.

For each run (any learner on a 2-D point env: maesn, maml, rl2 ...), the first episode of a trial in
``--worlds`` worlds of ``--split`` (the evaluation's worlds, ``proteus eval``'s seed), sampling as
``proteus eval`` does for gradient learners; one panel per run, the goals and their sparse radius
drawn. Runs on ``point-arc`` and ``point-arc-sparse`` meet the same goals (the two draw the same goal
from the same key).

    python scripts/first_episode_paths.py runs/maesn runs/maml runs/rl2 --label MAESN MAML RL² \\
        --split extrap --out docs/img/arc_first_episode.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def paths(run: Path, split: str, worlds: int, seed_offset: int = 0):
    """([worlds, H, 2] positions of the first episode, [worlds, 2] goals, sparse radius)."""
    import jax

    from meta_rl.evaluate import EVAL_SEED, eval_tasks, run_trials
    from proteus.evaluation import _agent, _load, eval_env
    from randomization.ranges import SPLITS

    loaded = _load(run, "policy")
    spec = loaded["spec"]
    env = eval_env(spec.env, spec.backend, worlds)
    agent, _ = _agent(loaded, False)  # sampling, as proteus eval --actions sample (gradient learners always sample)
    params = eval_tasks(env, worlds, split)
    key = jax.random.fold_in(jax.random.key(EVAL_SEED), SPLITS.index(split) + seed_offset)
    res = jax.jit(lambda a, p, k: run_trials(env, a, p, k, record_obs=True))(agent, params, key)
    H = env.unwrapped.episode_length
    obs = np.asarray(res.obs)[:H, :, :2]  # [H, W, 2]: the position acted from at each step
    return np.transpose(obs, (1, 0, 2)), np.asarray(params.target), float(getattr(env.unwrapped, "sparse_radius", 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--label", nargs="+", default=None)
    ap.add_argument("--split", default="extrap")
    ap.add_argument("--worlds", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    labels = a.label or [r.name for r in a.runs]
    if len(labels) != len(a.runs):
        ap.error(f"{len(a.runs)} runs but {len(labels)} labels")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(a.runs), figsize=(4.2 * len(a.runs), 4.2), squeeze=False)
    for ax, run, label in zip(axes[0], a.runs, labels):
        try:
            xy, goals, radius = paths(run, a.split, a.worlds)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {run}: {e}", file=sys.stderr)
            return 2
        th = np.linspace(0, 2 * np.pi, 200)
        ax.plot(2 * np.cos(th), 2 * np.sin(th), color="0.85", lw=0.8)
        for i, (p, g) in enumerate(zip(xy, goals)):
            c = f"C{i % 10}"
            ax.plot(p[:, 0], p[:, 1], color=c, lw=1.0, alpha=0.8)
            if radius > 0:
                ax.add_patch(plt.Circle(g, radius, color=c, alpha=0.25))
            ax.plot(*g, marker="*", color=c, ms=9)
        ax.plot(0, 0, "ko", ms=4)
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_title(f"{label}: first episode, {a.split} goals")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
