"""Transfer to unseen appearance: a run's trial return on the same worlds seen two ways, paired.

    python scripts/visual_transfer.py RUN/eval-cartpole-balance-pixels RUN/eval-cartpole-balance-pixels-unseen \
        [--split train] [--player policy] [--label-a trained --label-b unseen]

Both folders are ``proteus eval`` outputs of one run on the same worlds (the same ``--tasks``, split
and seed): ``proteus eval RUN --env cartpole-balance-pixels`` and ``--env cartpole-balance-pixels-unseen``
draw the same dynamics, task and effects per world (one key), the second with every appearance from
the held-out (extrap) visual split. Prints each mean trial return with its 95% CI, the ratio B / A and
the paired difference B - A with its 95% CI (per world).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _returns(folder: Path, split: str, player: str) -> np.ndarray:
    with np.load(folder / "returns.npz") as z:
        key = f"{split}/{player}"
        if key not in z.files:
            raise SystemExit(f"{folder}/returns.npz has no {key!r}; it holds {sorted(z.files)}")
        return z[key].astype(np.float64).sum(axis=1)  # the trial return of each world


def _ci(x: np.ndarray) -> float:
    return float(1.96 * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="eval folder: the appearance trained on")
    ap.add_argument("b", type=Path, help="eval folder: the same worlds in unseen appearances")
    ap.add_argument("--split", default="train")
    ap.add_argument("--player", default="policy")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    args = ap.parse_args(argv)
    a, b = _returns(args.a, args.split, args.player), _returns(args.b, args.split, args.player)
    if a.shape != b.shape:
        raise SystemExit(f"the folders hold {len(a)} and {len(b)} worlds: not the same evaluation")
    d = b - a
    print(f"{args.label_a}: {a.mean():.2f} ± {_ci(a):.2f}   {args.label_b}: {b.mean():.2f} ± {_ci(b):.2f}   "
          f"({len(a)} worlds, split {args.split}, player {args.player})")
    print(f"ratio {args.label_b}/{args.label_a}: {b.mean() / a.mean():.3f}   paired {args.label_b} - {args.label_a}: "
          f"{d.mean():+.2f} ± {_ci(d):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
