"""Success rate and return after n adaptation steps, from ``proteus eval``'s ``returns.npz``.

A gradient learner's agent (maml, promp, maesn, and ``--finetune``'s random initialization) takes an
inner step after every ``--every`` episodes (``proteus eval --adapt-episodes K``). Episodes
``[n K, (n + 1) K)`` of a trial are therefore played after ``n`` steps. For each player of the eval
and each ``n`` of ``--after``, this prints (markdown) the mean episode return in that window and the
success rate, the fraction of its episodes whose return is above ``--success-above`` (on a sparse
task, one that reached the goal). Both come with 95% CIs over the worlds, and with the policy minus the player,
paired over the same worlds (every player of one eval plays the same worlds). ``--plot`` draws the success rate
against the steps taken.

    python scripts/adaptation_table.py runs/maesn/eval --split interp extrap --every 20 --after 0 1 5 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def ci95(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(1.96 * x.std(ddof=1) / np.sqrt(len(x)))


def windows(ep: np.ndarray, every: int, n: int) -> np.ndarray:
    """[worlds, every] the episodes played after ``n`` steps."""
    if (n + 1) * every > ep.shape[1]:
        raise ValueError(f"{n} steps of {every} episodes need {(n + 1) * every} episodes per trial; the eval "
                         f"has {ep.shape[1]} (proteus eval --episodes)")
    return ep[:, n * every:(n + 1) * every]


def load(eval_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    path = eval_dir / "returns.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: run proteus eval (it writes returns.npz beside report.json)")
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            split, _, player = key.partition("/")
            out.setdefault(split, {})[player] = z[key]
    return out


def table(data: dict[str, np.ndarray], every: int, after: list[int], threshold: float) -> list[str]:
    lines = ["| player | steps | success rate | return | policy minus player: success | policy minus player: return |",
             "|---|---|---|---|---|---|"]
    pol = data["policy"]
    for player, ep in data.items():
        if player == "oracle":
            continue
        for n in after:
            w, wp = windows(ep, every, n), windows(pol, every, n)
            s, r = (w > threshold).mean(1), w.mean(1)
            sm, sc = ci95(s)
            rm, rc = ci95(r)
            if player == "policy":
                ds = dr = "–"
            else:
                dm, dc = ci95((wp > threshold).mean(1) - s)
                em, ec = ci95(wp.mean(1) - r)
                ds, dr = f"{dm:+.3f} ± {dc:.3f}", f"{em:+.2f} ± {ec:.2f}"
            lines.append(f"| {player} | {n} | {sm:.3f} ± {sc:.3f} | {rm:.2f} ± {rc:.2f} | {ds} | {dr} |")
    if "oracle" in data:
        o = data["oracle"][:, :every]
        lines.append(f"| oracle (knows the goal) | – | {ci95((o > threshold).mean(1))[0]:.3f} | {ci95(o.mean(1))[0]:.2f} | | |")
    return lines


def plot(per_split: dict[str, dict[str, np.ndarray]], every: int, threshold: float, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_split), figsize=(5.5 * len(per_split), 4), squeeze=False)
    for ax, (split, data) in zip(axes[0], per_split.items()):
        for player, ep in data.items():
            n = ep.shape[1] // every
            steps = np.arange(n)
            rates = np.stack([(windows(ep, every, i) > threshold).mean(1) for i in steps], 1)  # [worlds, n]
            m = rates.mean(0)
            c = 1.96 * rates.std(0, ddof=1) / np.sqrt(rates.shape[0])
            style = dict(ls="--", color="k") if player == "oracle" else {}
            ax.plot(steps, m, label=player, **style)
            ax.fill_between(steps, m - c, m + c, alpha=0.2, **({"color": "k"} if player == "oracle" else {}))
        ax.set_title(f"{split}")
        ax.set_xlabel(f"adaptation steps ({every} episodes each)")
        ax.set_ylabel("success rate (episodes reaching the goal)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", type=Path, help="RUN/eval of a proteus eval (holding returns.npz)")
    ap.add_argument("--split", nargs="+", default=None, help="splits to report (default: all in the file)")
    ap.add_argument("--every", type=int, required=True, help="episodes per adaptation step (--adapt-episodes)")
    ap.add_argument("--after", type=int, nargs="+", default=[0, 1, 5, 20], help="steps taken (0: before any)")
    ap.add_argument("--success-above", type=float, default=0.0, help="an episode succeeds when its return exceeds this")
    ap.add_argument("--plot", type=Path, default=None, help="write the success-rate curves to this PNG")
    ap.add_argument("--title", default="success rate after each adaptation step (mean ± 95% CI over worlds)")
    a = ap.parse_args(argv)
    if a.every < 1:
        ap.error(f"--every must be >= 1, got {a.every}")
    if any(n < 0 for n in a.after):
        ap.error(f"--after takes steps >= 0, got {a.after}")
    try:
        per_split = load(a.eval_dir)
        splits = a.split or list(per_split)
        missing = [s for s in splits if s not in per_split]
        if missing:
            raise ValueError(f"split(s) {missing} are not in {a.eval_dir / 'returns.npz'} (it has {list(per_split)})")
        for split in splits:
            worlds = per_split[split]["policy"].shape[0]
            print(f"\n**{split}** ({worlds} worlds; {a.every} episodes per step)\n")
            print("\n".join(table(per_split[split], a.every, a.after, a.success_above)))
        if a.plot:
            plot({s: per_split[s] for s in splits}, a.every, a.success_above, a.plot, a.title)
            print(f"\nwrote {a.plot}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
