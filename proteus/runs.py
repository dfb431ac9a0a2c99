"""Training runs: the run folder, chunked jitted training, checkpoints, resume, logs and plots.

A run folder (DESIGN.md) holds::

    config.json          learner (``algo``), env, backend, seed and the full learner config
    metrics.jsonl        one line per update (env steps, wall time, returns, losses)
    tb/                  TensorBoard events (tensorboardX)
    checkpoints/         orbax checkpoints of the whole train state (the last two)
    policy/              the latest policy: spec.json + params.msgpack (what eval and export read)
    learning_curve.png   return against env steps

Everything learner-specific comes from the learner registry (:mod:`meta_rl.learners`): its config
class, the env mode it trains in, its trainer and its agent; nothing here branches on a learner's name.
Training runs in chunks of ``checkpoint_every`` updates, each one jitted ``lax.scan`` of the trainer's
pure ``run``; after each chunk the state is checkpointed. Started again with the same command, a run resumes from its last
checkpoint and ends exactly where an uninterrupted run would have (same chunks, same keys).
A chunk with a non-finite loss is not saved: the run stops, the last good checkpoint stays.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

import sim
from meta_rl import learners
from meta_rl.learners import Learner, Trainer
from proteus.checkpoint import Checkpoints, save_policy


class NonFiniteLoss(RuntimeError):
    """Training met a non-finite loss; the run folder keeps its last good checkpoint."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a run is: learner (``algo``, a registered name), env, backend, seed and the learner's
    config (``config.json``)."""

    algo: str
    env: str
    backend: str
    seed: int
    config: Any

    @property
    def learner(self) -> Learner:
        return learners.get(self.algo)

    def to_json(self) -> dict:
        return {"algo": self.algo, "env": self.env, "backend": self.backend, "seed": self.seed,
                "config": dataclasses.asdict(self.config)}


def _normalize_json(d):
    return json.loads(json.dumps(d))


def make_env(spec: RunSpec, batch_size: int | None = None, mode: str | None = None):
    """The run's env in the mode its learner trains in (or ``mode``), batched when asked."""
    mode = mode or spec.learner.env_mode(spec.config)
    return sim.make(spec.env, batch_size=batch_size, mode=mode, backend=spec.backend)


def build(spec: RunSpec) -> Trainer:
    """The env and trainer a run spec describes."""
    learner = spec.learner
    return learner.make_train(spec.config, make_env(spec, learner.env_batch(spec.config)))


@functools.lru_cache(maxsize=32)
def compiled_run(trainer: Trainer):
    """``jit(trainer.run)`` with the number of updates static, one per trainer (cached)."""
    return jax.jit(trainer.run, static_argnums=1)


def run_chunk(trainer: Trainer, ts: Any, num_updates: int) -> tuple[Any, dict]:
    """``num_updates`` updates of ``trainer`` from ``ts`` in one jitted call.

    The state is committed to the device first: jit's cache tells uncommitted inputs (a fresh init, a
    restored checkpoint) from the committed outputs of a previous chunk, and an MJX train step takes
    minutes to compile twice on CPU.
    """
    ts = jax.device_put(ts, jax.devices()[0])
    return compiled_run(trainer)(ts, int(num_updates))


def _check_folder(out: Path, spec: RunSpec) -> None:
    cfg = out / "config.json"
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"run folder {out} exists and is not a folder")
    if not cfg.exists():
        if any(out.iterdir()):
            raise ValueError(f"{out} is not empty and holds no config.json: not a run folder, refusing to write there")
        return
    try:
        old = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt {cfg}: {e}") from None
    new = _normalize_json(spec.to_json())
    diff = [k for k in new if k != "config" and old.get(k) != new[k]]
    diff += [f"config.{k}" for k in new["config"] if old.get("config", {}).get(k) != new["config"][k]]
    if diff:
        raise ValueError(
            f"{out} holds a run with a different setup ({', '.join(diff)}); "
            "resume it with the same arguments or choose another --out"
        )


def train_run(spec: RunSpec, out: Path, checkpoint_every: int | None = None, progress: bool = True,
              max_updates: int | None = None, console=None, trainer: Trainer | None = None) -> dict:
    """Train (or resume) the run ``spec`` in folder ``out``.

    Args:
        checkpoint_every: updates per jitted chunk and checkpoint (default: about 50 chunks per run).
        max_updates: stop after this many updates in total (the run stays resumable; for tests).
        trainer: use this trainer instead of building one from ``spec`` (tests inject envs).

    Returns:
        a summary: updates done, env steps, final return, wall time, whether it resumed.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from tensorboardX import SummaryWriter

    from proteus.console import make_console

    out = Path(out)
    _check_folder(out, spec)
    learner = spec.learner
    num_updates = learner.num_updates(spec.config)
    total = num_updates if max_updates is None else min(num_updates, int(max_updates))
    every = max(1, int(checkpoint_every or math.ceil(num_updates / 50)))
    trainer = trainer or build(spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(spec.to_json(), indent=2))
    ckpt = Checkpoints(out / "checkpoints")
    console = console or make_console()

    ts = trainer.init(jax.random.key(spec.seed))
    start = ckpt.latest_step()
    resumed = start is not None
    if resumed:
        ts = ckpt.restore(ts)
        done = int(ts.update)
        if done >= total:
            console.print(f"{out} is already trained ({done}/{num_updates} updates): nothing to do")
        else:
            console.print(f"resuming {out} from its checkpoint at update {done}/{num_updates}")
        _truncate_metrics(out / "metrics.jsonl", done)
    else:
        done = 0
        (out / "metrics.jsonl").write_text("")
    writer = SummaryWriter(str(out / "tb"))
    t0 = time.time()
    last_return = float("nan")
    if resumed:  # the latest return already logged (a finished run has nothing more to add)
        logged = [r["episode_return"] for r in read_metrics(out) if r.get("episode_return") is not None]
        last_return = logged[-1] if logged else last_return
    steps_per_update = learner.steps_per_update(spec.config)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} steps"),
                      TextColumn("{task.fields[rate]}"), TextColumn("return {task.fields[ret]}"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not progress) as bar:
            task = bar.add_task(f"{spec.algo} {spec.env}", total=total * steps_per_update,
                                completed=done * steps_per_update, rate="", ret="-")
            while done < total:
                n = min(every, total - done)
                tc = time.time()
                new_ts, metrics = run_chunk(trainer, ts, n)
                metrics = jax.device_get(metrics)
                dt = time.time() - tc
                bad = int(np.sum(metrics.get("nonfinite", 0)))
                rows = _rows(metrics, done, steps_per_update, time.time() - t0)
                _append_metrics(out / "metrics.jsonl", writer, rows)
                if bad:
                    kept = ckpt.latest_step()
                    raise NonFiniteLoss(
                        f"non-finite loss in {bad} minibatch(es) during updates {done + 1}-{done + n}: training stopped; "
                        + (f"the last good checkpoint (update {kept}) is kept in {ckpt.directory}" if kept is not None
                           else "no checkpoint had been saved yet")
                    )
                ts = new_ts
                done += n
                ckpt.save(done, ts)
                save_policy(out / "policy", learner.policy_spec(spec.config, trainer.env), trainer.agent_params(ts),
                            _policy_meta(spec, trainer))
                rets = [r["episode_return"] for r in rows if r.get("episode_return") is not None]
                if rets:
                    last_return = rets[-1]
                bar.update(task, completed=done * steps_per_update,
                           rate=f"{n * steps_per_update / dt:,.0f} steps/s", ret=f"{last_return:.2f}")
    finally:
        writer.close()
        ckpt.close()
        plot_learning_curve(out)
    return {"updates": done, "env_steps": done * steps_per_update, "final_return": last_return,
            "wall_s": time.time() - t0, "resumed": resumed, "out": str(out)}


def _policy_meta(spec: RunSpec, trainer: Trainer) -> dict:
    env = trainer.env.unwrapped
    meta = {"env": spec.env, "algo": spec.algo, "backend": spec.backend}
    if hasattr(env, "control_dt"):
        meta["control_dt"] = float(env.control_dt)
    return meta


def _rows(metrics: dict, done: int, steps_per_update: int, wall: float) -> list[dict]:
    n = len(next(iter(metrics.values()))) if metrics else 0
    rows = []
    for i in range(n):
        row = {"update": done + i + 1, "env_steps": (done + i + 1) * steps_per_update, "wall_s": round(wall, 3)}
        for k, v in metrics.items():
            x = float(v[i])
            row[k] = None if math.isnan(x) else x
        rows.append(row)
    return rows


def _append_metrics(path: Path, writer, rows: list[dict]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if v is not None and k not in ("update", "env_steps"):
                    writer.add_scalar(k, v, row["env_steps"])
    writer.flush()


def _truncate_metrics(path: Path, updates: int) -> None:
    """Drop metric lines past the checkpoint a resumed run restarts from (nothing is counted twice)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["update"] <= updates]
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(out: Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in run folder {out}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_learning_curve(out: Path) -> Path | None:
    """``learning_curve.png``: episode (trial) return against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        rows = read_metrics(out)
    except FileNotFoundError:
        return None
    cfg = json.loads((Path(out) / "config.json").read_text())
    try:
        spec = read_run_spec(out)
        unit = "trial" if spec.learner.env_mode(spec.config) == "trial" else "episode"
    except (KeyError, ValueError, FileNotFoundError):
        unit = "episode"
    pts = [(r["env_steps"], r["episode_return"]) for r in rows if r.get("episode_return") is not None]
    ylabel = f"{unit} return"
    if not pts:  # no episode has finished yet (a short run): the mean reward per step instead
        pts = [(r["env_steps"], r["reward"]) for r in rows if r.get("reward") is not None]
        ylabel = f"mean reward per step (no {unit} finished yet)"
    if not pts:
        return None
    x, y = np.array(pts).T
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(x, y, lw=0.8, alpha=0.4, color="C0")
    w = max(1, len(y) // 20)
    if len(y) >= w:
        smooth = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(x[w - 1:], smooth, color="C0", lw=2, label=f"mean of {w}")
        ax.legend(loc="lower right")
    ax.set(xlabel="env steps", ylabel=ylabel, title=f"{cfg['algo']} on {cfg['env']} (seed {cfg['seed']})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(out) / "learning_curve.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def read_run_spec(out: Path) -> RunSpec:
    """The :class:`RunSpec` in a run folder's ``config.json``; errors name the path."""
    out = Path(out)
    if not out.exists():
        raise FileNotFoundError(f"run folder {out} does not exist")
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder: not a run folder")
    cfg = out / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{cfg} is missing: {out} is not a run folder")
    try:
        d = json.loads(cfg.read_text())
        learner = learners.get(str(d["algo"]))
        spec = RunSpec(str(d["algo"]), str(d["env"]), str(d["backend"]), int(d["seed"]),
                       learner.config_from_dict(dict(d["config"])))
    except KeyError as e:
        msg = e.args[0] if e.args else str(e)
        if isinstance(msg, str) and msg.startswith("unknown learner"):
            raise ValueError(f"{cfg} names a learner this installation does not know: {msg}") from None
        raise ValueError(f"corrupt {cfg}: missing {e}") from None
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"corrupt {cfg}: {e}") from None
    try:
        sim.entry(spec.env)
    except KeyError as e:
        raise ValueError(f"{cfg} names an env this version does not know: {e.args[0]}") from None
    return spec


def load_run(out: Path) -> tuple[RunSpec, Any]:
    """``(RunSpec, TrainState)`` of a run folder's last checkpoint; errors name the path."""
    out = Path(out)
    spec = read_run_spec(out)
    trainer = build(spec)
    ckpt = Checkpoints(out / "checkpoints")
    try:
        ts = ckpt.restore(trainer.init(jax.random.key(spec.seed)))
    finally:
        ckpt.close()
    return spec, ts


def read_agent(out: Path) -> tuple[RunSpec, Any, Any, dict]:
    """``(RunSpec, env, agent params, saved metadata)`` of a run folder's latest agent."""
    from proteus.checkpoint import read_policy_meta, read_policy_params

    out = Path(out)
    spec = read_run_spec(out)
    directory = out / "policy"
    meta, params_file = read_policy_meta(directory, f" (has {out} finished a training chunk?)")
    if meta.get("env", spec.env) != spec.env:
        raise ValueError(f"{directory} was trained on {meta['env']!r} but {out / 'config.json'} names {spec.env!r}: "
                         "corrupt run folder")
    env = make_env(spec)
    template = spec.learner.init_agent_params(spec.config, env, jax.random.key(0))
    return spec, env, read_policy_params(template, params_file), meta


def load_agent_params(out: Path) -> tuple[RunSpec, Any, dict]:
    """``(RunSpec, agent params, saved metadata)`` of a run folder's latest agent (``policy/``).

    The params are read against the learner's own template, so any learner's agent loads; errors
    name the file.
    """
    spec, _, params, meta = read_agent(out)
    return spec, params, meta


def load_agent(out: Path, deterministic: bool = True):
    """``(RunSpec, Agent)``: a run folder's latest agent, acting with its mode or sampling."""
    spec, env, params, _ = read_agent(out)
    return spec, spec.learner.make_agent(spec.config, env, params, bool(deterministic))
