"""``proteus bench learn``: time-to-result of training configurations, side by side in one run.

Each candidate (the learner's preset with some fields overridden) trains from scratch; every
``eval_every`` env steps its current agent is scored on held-out worlds by the evaluation code of
``proteus eval`` (:func:`meta_rl.evaluate.run_trials` on :func:`meta_rl.evaluate.eval_tasks`, the same
worlds and random streams for every candidate), beside a reference strategy on the same worlds:
Gittins-index play on bandits (the env's known optimum), PSRL on tabular MDPs. The bench reports, per
candidate, the training wall-clock seconds (compilation included, evaluation excluded) and env steps
at which the evaluated return first reached each target fraction of the reference, the final ratio
with its paired 95% CI, and the ratio of each time to the first candidate's (the baseline, by default
the unchanged preset). A picture of every candidate's curve against wall-clock and env steps is written
beside the JSON rows.

Candidates are named: a name from :data:`CANDIDATES`, or ``NAME:field=value,field=value`` for any
config fields (widths as ``128`` or ``128x128``; ``heads=`` for none).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

CANDIDATES: dict[str, dict[str, Any]] = {
    "preset": {},
    "embed": {"embed": 128},
    "heads": {"heads": (128,)},
    "peer": {"embed": 128, "heads": (128,)},  # purejaxrl ppo_rnn's network: ReLU embedding, GRU, separate heads
    "minibatches-8": {"num_minibatches": 8},
    "epochs-2": {"update_epochs": 2},
    "core-256": {"core_size": 256},
    "core-norm": {"core_norm": True},  # a layer-normalized GRU (Ba et al. 2016)
    "popart": {"value_norm": True, "reward_scale": 1.0},
    "peer+popart": {"embed": 128, "heads": (128,), "value_norm": True, "reward_scale": 1.0},
}
"""Named candidate changes for RL² (issue 19): config fields overridden on the learner's preset."""

TUPLE_FIELDS = ("hidden", "heads")


@dataclasses.dataclass(frozen=True)
class Point:
    """One evaluation of a candidate during training."""

    wall_s: float  # training wall-clock so far (compilation included, evaluation excluded)
    env_steps: int
    mean: float  # mean trial return over the evaluation worlds
    ratio: float  # mean / the reference's mean on the same worlds
    ratio_ci: float  # 95% CI half-width of the ratio (paired: per-world differences over the reference mean)

    def when(self) -> str:
        """Where this evaluation came: ``"149 s, 5.4M"`` (training seconds, env steps)."""
        return f"{self.wall_s:.0f} s, {self.env_steps / 1e6:.1f}M"


@dataclasses.dataclass
class Curve:
    name: str
    overrides: dict
    points: list[Point]
    steps_per_s: float  # env steps per training second (compilation excluded)

    def first(self, target: float) -> Point | None:
        """The first evaluation at or above ``target`` (a fraction of the reference), or None."""
        return next((p for p in self.points if p.ratio >= target), None)


def parse_candidate(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` (from :data:`CANDIDATES`) or ``NAME:field=value,...`` -> ``(name, overrides)``."""
    text = text.strip()
    if ":" not in text:
        if text not in CANDIDATES:
            raise ValueError(f"unknown candidate {text!r}; named ones: {', '.join(CANDIDATES)}; "
                             "or give NAME:field=value,field=value")
        return text, dict(CANDIDATES[text])
    name, _, body = text.partition(":")
    if not name:
        raise ValueError(f"candidate {text!r}: give it a name before the colon (NAME:field=value)")
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in body.split(","))):
        field, eq, value = item.partition("=")
        if not eq or not field:
            raise ValueError(f"candidate {text!r}: {item!r} is not field=value")
        field = field.strip().replace("-", "_")
        value = value.strip()
        if field in TUPLE_FIELDS:
            try:
                out[field] = tuple(int(w) for w in value.split("x")) if value else ()
            except ValueError:
                raise ValueError(f"candidate {text!r}: {field} takes widths like 128 or 128x128, got {value!r}") from None
            continue
        if value.lower() in ("true", "false"):  # JSON's true/false and Python's True/False
            out[field] = value.lower() == "true"
            continue
        try:
            out[field] = json.loads(value)
        except json.JSONDecodeError:
            out[field] = value
    return name, out


def _reference(env) -> tuple[Any, str]:
    """The strategy a candidate is measured against: PSRL on tabular MDPs, else the known optimum
    (Gittins-index play on bandits)."""
    from meta_rl.baselines.oracles import known_oracle, known_references

    refs = known_references(env)
    if "psrl" in refs:
        return refs["psrl"], "PSRL"
    known = known_oracle(env)
    if known is None:
        raise ValueError(f"{env.id}: no reference strategy to measure time-to-result against (bench learn needs a "
                         "bandit, whose optimum is Gittins-index play, or a tabular MDP, measured against PSRL)")
    return known[0], known[1]


def learn_curve(algo: str, env_id: str, name: str, overrides: dict, *, steps: int | None, max_seconds: float,
                eval_every: int, seed: int, stop_at: float | None, evaluator, console=None,
                progress: bool = True) -> Curve:
    """Train one candidate and evaluate it every ``eval_every`` env steps (see the module docstring)."""
    import jax

    from proteus.runs import build, make_env, run_chunk
    from proteus.runspec import RunSpec
    from meta_rl.presets import default_config
    from sim.registry import entry

    fields = dict(overrides)
    if steps is not None:
        fields["total_steps"] = int(steps)
    config = default_config(algo, env_id, **fields)
    spec = RunSpec(algo, env_id, entry(env_id).backends[0], seed, config)
    learner = spec.learner
    trainer = build(spec)
    agent_env = make_env(spec)
    per_update = learner.steps_per_update(config)
    total = learner.num_updates(config)
    every = max(1, int(eval_every) // per_update)
    ts = trainer.init(jax.random.key(seed))
    points: list[Point] = []
    done, train_s, run_s, run_steps = 0, 0.0, 0.0, 0
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task(f"{name}", total=total * per_update, info="")
        while done < total and train_s < max_seconds:
            n = min(every, total - done)
            t = time.perf_counter()
            ts, _ = run_chunk(trainer, ts, n)
            jax.block_until_ready(ts)
            dt = time.perf_counter() - t
            if done:  # the first chunk compiles: left out of the rate
                run_s, run_steps = run_s + dt, run_steps + n * per_update
            train_s += dt
            done += n
            params = trainer.agent_params(ts)
            agent = learner.make_agent(config, agent_env, params, False)
            mean, ratio, ci = evaluator(agent)
            points.append(Point(train_s, done * per_update, mean, ratio, ci))
            bar.update(task, completed=done * per_update, info=f"{ratio:.3f} of the reference after {train_s:.0f} s")
            if stop_at is not None and ratio >= stop_at:
                break
    rate = run_steps / run_s if run_s else float("nan")
    return Curve(name, overrides, points, rate)


def make_evaluator(env_id: str, tasks: int, split: str):
    """``agent -> (mean, ratio to the reference, paired 95% CI of the ratio)`` on fixed held-out worlds,
    with the reference scored once on the same worlds and random streams; and the reference's label
    and mean."""
    import jax

    from meta_rl.evaluate import EVAL_SEED, compiled_run_trials, eval_tasks
    from proteus.evaluation import eval_env
    from randomization.ranges import SPLITS
    from sim.registry import entry

    env = eval_env(env_id, entry(env_id).backends[0], tasks)
    run = compiled_run_trials(env)
    params = eval_tasks(env, tasks, split)
    key = jax.random.fold_in(jax.random.key(EVAL_SEED), SPLITS.index(split))
    ref_agent, label = _reference(env)
    ref = np.asarray(jax.device_get(run(ref_agent, params, key).trial_return), np.float64)
    ref_mean = float(ref.mean())

    def evaluate(agent):
        r = np.asarray(jax.device_get(run(agent, params, key).trial_return), np.float64)
        diff = (r - ref) / ref_mean
        ci = float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff)))
        return float(r.mean()), float(r.mean() / ref_mean), ci

    return evaluate, label, ref_mean


def plot_curves(curves: list[Curve], targets: tuple[float, ...], label: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for c in curves:
        r = [p.ratio for p in c.points]
        axes[0].plot([p.wall_s for p in c.points], r, marker=".", label=c.name)
        axes[1].plot([p.env_steps / 1e6 for p in c.points], r, marker=".", label=c.name)
    for ax in axes:
        for t in targets:
            ax.axhline(t, color="grey", lw=0.6, ls="--")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("training wall-clock (s, compilation included)")
    axes[1].set_xlabel("env steps (M)")
    axes[0].set_ylabel(f"evaluated return / {label}")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bench_learn(candidates: list[str], env_id: str = "bandit-k10-n100", algo: str = "rl2", *,
                steps: int | None = None, max_seconds: float = 480.0, eval_every: int = 500_000,
                targets: tuple[float, ...] | None = None, tasks: int = 1000, split: str = "train", seed: int = 0,
                stop: bool = True, json_path: Path | None = None, plot_path: Path | None = None,
                progress: bool = True, console=None) -> list[Curve]:
    """Run every candidate in turn and print the time-to-result table (see the module docstring)."""
    from rich.table import Table

    from proteus.console import make_console
    from proteus.report import BenchRow, write_json
    from randomization.ranges import check_split

    console = console or make_console()
    check_split(split)
    parsed = [parse_candidate(c) for c in candidates]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must differ, got {names}")
    from meta_rl.presets import default_config

    for n, o in parsed:  # every config is checked before anything trains
        fields = dict(o, **({"total_steps": int(steps)} if steps is not None else {}))
        try:
            default_config(algo, env_id, **fields)
        except ValueError as e:
            raise ValueError(f"candidate {n!r}: {e}") from None
    if max_seconds <= 0 or eval_every < 1 or tasks < 2:
        raise ValueError(f"need max_seconds > 0, eval_every >= 1 and tasks >= 2; got {max_seconds}, {eval_every}, {tasks}")
    evaluator, label, ref_mean = make_evaluator(env_id, tasks, split)
    if targets is None:
        targets = (1.0,) if label == "PSRL" else (0.90, 0.95, 0.98)
    targets = tuple(sorted(float(t) for t in targets))
    console.print(f"bench learn: {algo} on {env_id}; {tasks} held-out {split} worlds; reference {label} "
                  f"(mean trial return {ref_mean:.2f}); up to {max_seconds:.0f} s of training per candidate")
    curves = []
    for n, o in parsed:
        curves.append(learn_curve(algo, env_id, n, o, steps=steps, max_seconds=max_seconds, eval_every=eval_every,
                                  seed=seed, stop_at=max(targets) if stop else None,
                                  evaluator=evaluator, console=console, progress=progress))
        c = curves[-1]  # one line per finished candidate, so a long run shows where it is
        crossed = "; ".join(f"{t:.0%} at {p.when()}" for t in targets
                            if (p := c.first(t)) is not None) or "no target reached"
        last = c.points[-1]
        console.print(f"  {n}: {c.steps_per_s:,.0f} steps/s; {crossed}; last {last.ratio:.3f} ± {last.ratio_ci:.3f} "
                      f"at {last.when()}")

    base = curves[0]
    table = Table(title=f"time to each fraction of {label} ({env_id}; seconds of training, env steps; "
                        f"× = the candidate's time over {base.name}'s)")
    table.add_column("candidate")
    table.add_column("changes")
    table.add_column("steps/s")
    for t in targets:
        table.add_column(f"{t:.0%} of {label}")
    table.add_column("last evaluation (ratio ± 95% CI)")
    rows: list[BenchRow] = []
    for c in curves:
        cells = []
        for t in targets:
            p, b = c.first(t), base.first(t)
            if p is None:
                cells.append("not reached")
                continue
            times = f" (×{p.wall_s / b.wall_s:.2f})" if b is not None and c is not base else ""
            cells.append(f"{p.when()}{times}")
            rows.append(BenchRow(f"{c.name}: s to {t:.0%} of {label}", p.wall_s, b.wall_s if b else None,
                                 base.name, "s"))
            rows.append(BenchRow(f"{c.name}: env steps to {t:.0%} of {label}", p.env_steps, b.env_steps if b else None,
                                 base.name, "steps"))
        last = c.points[-1]
        changes = ", ".join(f"{k}={v}" for k, v in c.overrides.items()) or "(preset)"
        table.add_row(c.name, changes, f"{c.steps_per_s:,.0f}", *cells,
                      f"{last.ratio:.3f} ± {last.ratio_ci:.3f} at {last.when()}")
        rows.append(BenchRow(f"{c.name}: last ratio to {label}", last.ratio, base.points[-1].ratio, base.name, "",
                             last.ratio_ci))
    console.print(table)
    extra = {"env": env_id, "algo": algo, "reference": label, "reference_mean": ref_mean, "split": split,
             "tasks": tasks, "seed": seed, "curves": [dataclasses.asdict(c) for c in curves]}
    if json_path:
        write_json(rows, Path(json_path), extra)
        console.print(f"wrote {json_path}")
    if plot_path:
        plot_curves(curves, targets, label, f"{algo} on {env_id}: held-out return over training", Path(plot_path))
        console.print(f"wrote {plot_path}")
    return curves
