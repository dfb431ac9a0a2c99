"""``proteus eval-loss RUN``: score an evolved loss (an ``epg`` run) by the lifetimes it gives fresh agents.

EPG's product is a loss, not a policy, so it is scored the way the paper scores it: in each held-out
world a freshly initialised agent lives ``lifetime_steps`` steps learning from the loss alone, and its
final policy's return is the score. On the same worlds, with the same initialisations and random
streams, the same agent learns from PPO's loss with the inner-loop step size and Adam steps per update
tuned for this lifetime on separate worlds (:data:`meta_rl.evaluate.TUNE_SEED`), and from a randomly
initialised loss network (what evolution started from). The worlds are :func:`meta_rl.evaluate.eval_tasks`'s,
the ones ``proteus eval --tasks N`` scores other learners on.

Writes ``RUN/eval-loss/report.json`` and ``RUN/eval-loss/lifetimes.png`` (return over the lifetime,
per split and loss).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_LRS = (1e-3, 3e-3, 1e-2)
DEFAULT_MINIBATCHES = (2, 8)
CURVE_BINS = 32


def _curve(r: dict, bins: int = CURVE_BINS) -> list[float]:
    """Mean finished-episode return per bin of the lifetime (pooled over worlds)."""
    ret, eps = r["returns"], r["episodes"]
    edges = np.linspace(0, ret.shape[1], bins + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        n = eps[:, a:b].sum()
        out.append(float((ret[:, a:b] * eps[:, a:b]).sum() / n) if n else float("nan"))
    return out


def evaluate_loss(run_dir: Path, splits=("train", "extrap"), tasks: int = 200, tune_tasks: int = 64,
                  lrs=DEFAULT_LRS, minibatches=DEFAULT_MINIBATCHES, overwrite: bool = False, console=None,
                  progress: bool = True) -> dict:
    """Score ``run_dir``'s evolved loss on ``splits`` (module docstring); returns the report it writes."""
    import jax
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    import sim
    from meta_rl.epg import Lifetime, Policy, lifetime_env, policy_spec, score_lifetimes
    from meta_rl.evaluate import EVAL_SEED, TUNE_SEED, eval_tasks, mean_ci95
    from proteus.console import make_console
    from proteus.runs import read_agent
    from randomization.ranges import SPLITS, check_split

    console = console or make_console()
    run_dir = Path(run_dir)
    spec, _, phi, _ = read_agent(run_dir)
    if spec.algo != "epg":
        raise ValueError(f"{run_dir} is a {spec.algo} run; eval-loss scores an epg run's evolved loss "
                         f"(proteus eval scores a {spec.algo} policy)")
    splits = tuple(dict.fromkeys(check_split(s) for s in splits))
    if int(tasks) < 2 or int(tune_tasks) < 2:
        raise ValueError(f"tasks ({tasks}) and tune_tasks ({tune_tasks}) must be >= 2 (a confidence interval "
                         "needs two worlds)")
    if not lrs or not minibatches or any(float(x) <= 0 for x in lrs):
        raise ValueError(f"the PPO grid needs positive learning rates and Adam-step counts, got lrs={lrs}, "
                         f"minibatches={minibatches}")
    c = spec.config
    for m in minibatches:
        if int(m) < 1 or c.update_every % int(m):
            raise ValueError(f"minibatches {m} must divide the run's update_every ({c.update_every})")
    out = run_dir / "eval-loss"
    if (out / "report.json").exists() and not overwrite:
        raise FileExistsError(f"{out / 'report.json'} already holds an evaluation; pass --overwrite to replace it")
    backend = spec.backend if spec.backend != "auto" else sim.entry(spec.env).backends[0]
    env = lifetime_env(spec.env, backend, c)
    sampler = sim.make(spec.env, batch_size=int(tasks), mode="trial", backend=backend)
    tuner = sim.make(spec.env, batch_size=int(tune_tasks), mode="trial", backend=backend)
    random_phi = Lifetime(c, env, Policy(policy_spec(c, env))).init_loss(jax.random.PRNGKey(0))
    grid = [(float(lr), int(m)) for lr in lrs for m in minibatches]

    results: dict[str, dict[str, dict]] = {}
    tuning: dict[str, float] = {}
    total = len(grid) + 3 * len(splits)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not progress) as bar:
        t = bar.add_task("eval-loss", total=total)
        tune_worlds = eval_tasks(tuner, int(tune_tasks), "train", seed=TUNE_SEED)
        for lr, m in grid:
            bar.update(t, description=f"tuning PPO: inner lr {lr:g}, {m} Adam steps per update")
            cfg = dataclasses.replace(c, inner_lr=lr, inner_minibatches=m)
            r = score_lifetimes(cfg, env, random_phi, tune_worlds, jax.random.key(TUNE_SEED), 1.0)
            tuning[f"lr={lr:g},minibatches={m}"] = float(r["final"].mean())
            bar.advance(t)
        best = max(tuning, key=tuning.get)
        lr, m = grid[list(tuning).index(best)]
        ppo_cfg = dataclasses.replace(c, inner_lr=lr, inner_minibatches=m)
        players = {"evolved loss": (c, phi, 0.0), f"PPO (tuned: inner lr {lr:g}, {m} Adam steps/update)":
                   (ppo_cfg, random_phi, 1.0), "random loss (evolution's start)": (c, random_phi, 0.0)}
        for split in splits:
            worlds = eval_tasks(sampler, int(tasks), split)
            key = jax.random.fold_in(jax.random.key(EVAL_SEED), SPLITS.index(split))
            results[split] = {}
            for name, (cfg, p, alpha) in players.items():
                bar.update(t, description=f"eval-loss {spec.env}: {split} · {name}")
                results[split][name] = score_lifetimes(cfg, env, p, worlds, key, alpha)
                bar.advance(t)

    names = list(players)
    evolved, ppo = names[0], names[1]
    report: dict[str, Any] = {"run": str(run_dir), "env": spec.env, "tasks": int(tasks), "tune_tasks": int(tune_tasks),
                              "lifetime_steps": c.lifetime_steps, "final_steps": c.final_steps,
                              "env_steps_per_lifetime": c.envs_per_lifetime * (c.lifetime_steps + c.final_steps),
                              "ppo_tuning": tuning, "ppo_best": best, "splits": {}}
    for split, per in results.items():
        row = {}
        for name, r in per.items():
            mean, ci = mean_ci95(r["final"])
            row[name] = {"mean": mean, "ci95": ci, "curve": _curve(r)}
        d, dci = mean_ci95(per[evolved]["final"] - per[ppo]["final"])
        row["evolved minus PPO"] = {"mean": d, "ci95": dci}
        report["splits"][split] = row
    if "train" in results:
        for split in [s for s in results if s != "train"]:
            for name in names:
                a, b = results["train"][name]["final"], results[split][name]["final"]
                drop = (b.mean() - a.mean()) / abs(a.mean())
                se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) / abs(a.mean())
                report["splits"][split][name]["change_vs_train"] = {"fraction": float(drop), "ci95": float(1.96 * se)}

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _plot(report, out / "lifetimes.png", c)

    table = Table(title=f"eval-loss {spec.env}: final return of fresh agents after a {c.lifetime_steps:,}-step "
                        f"lifetime ({tasks} worlds per split)")
    table.add_column("loss")
    for split in report["splits"]:
        table.add_column(split, justify="right")
    for name in names + ["evolved minus PPO"]:
        cells = []
        for split in report["splits"]:
            v = report["splits"][split][name]
            cell = f"{v['mean']:.2f} ± {v['ci95']:.2f}"
            if "change_vs_train" in v:
                cell += f" ({100 * v['change_vs_train']['fraction']:+.1f}% vs train)"
            cells.append(cell)
        table.add_row(name, *cells)
    console.print(table)
    console.print(f"PPO tuned on {tune_tasks} other train worlds: {best} "
                  f"({', '.join(f'{k}: {v:.1f}' for k, v in tuning.items())})")
    console.print(f"report: {out / 'report.json'}; curves: {out / 'lifetimes.png'}")
    return report


def _plot(report: dict, path: Path, c) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(report["splits"])
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), sharey=True, squeeze=False)
    for ax, split in zip(axes[0], splits):
        for i, (name, v) in enumerate((k, v) for k, v in report["splits"][split].items() if "curve" in v):
            x = (np.arange(len(v["curve"])) + 0.5) * c.lifetime_steps / len(v["curve"])
            ax.plot(x, v["curve"], label=name, color=f"C{i}")
        ax.set(title=f"{report['env']}: {split} worlds", xlabel="env steps of the lifetime")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("episode return (mean over worlds)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
