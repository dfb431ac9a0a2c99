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

import contextlib
import dataclasses
import functools
import json
import math
import os
import shlex
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import sim
from meta_rl.learners import Trainer
from deploy.files import write_atomic
from proteus.checkpoint import Checkpoints, save_policy, saved_steps
from proteus.runspec import RunSpec, read_run_spec  # noqa: F401 (re-exported)


class NonFiniteLoss(RuntimeError):
    """Training met a non-finite loss; the run folder keeps its last good checkpoint."""


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


@functools.lru_cache(maxsize=32)
def compiled_update(trainer: Trainer):
    """``jit(trainer.update)``, one per trainer (cached)."""
    return jax.jit(trainer.update)


def run_chunk(trainer: Trainer, ts: Any, num_updates: int) -> tuple[Any, dict]:
    """``num_updates`` updates of ``trainer`` from ``ts`` in one jitted call (or, for a trainer that
    asks for it, ``trainer.step_on_host``: one jitted update per call, the same updates).

    The state is committed to the device first: jit's cache tells uncommitted inputs (a fresh init, a
    restored checkpoint) from the committed outputs of a previous chunk, and an MJX train step takes
    minutes to compile twice on CPU.
    """
    ts = jax.device_put(ts, jax.devices()[0])
    if getattr(trainer, "step_on_host", False) and num_updates > 0:
        update, metrics = compiled_update(trainer), []
        for _ in range(int(num_updates)):
            ts, m = update(ts)
            metrics.append(m)
        return ts, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)
    return compiled_run(trainer)(ts, int(num_updates))


class RunLocked(ValueError):
    """Another process is training in the run folder (its ``.lock`` names the PID)."""


class RunFolderError(ValueError):
    """The run folder cannot be made or written (a read-only folder, a parent that is a file, a full disk)."""


class RunInterrupted(RuntimeError):
    """Training was interrupted (Ctrl-C); the message names the update the run resumes from and the command."""


LOCK_FILE = ".lock"


def _cannot_write(out: Path, e: OSError) -> str:
    path = e.filename or out
    return f"cannot write the run folder {out}: {path}: {e.strerror or e}"


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent that is a file, a read-only parent
        raise RunFolderError(_cannot_write(out, e)) from None
    if not out.is_dir():
        raise RunFolderError(f"cannot write the run folder {out}: it exists and is not a folder")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder(text: str) -> dict:
    try:
        d = json.loads(text)
        return d if isinstance(d, dict) else {}
    except ValueError:
        return {}


def _describe_holder(h: dict) -> str:
    if not h:
        return "a process that left no record"
    return f"PID {h.get('pid')} on host {h.get('host')}, started {h.get('started')}"


class RunLock:
    """An exclusive lock on a run folder: ``<out>/.lock``, held with ``flock`` and holding the
    writer's PID, host and start time.

    The kernel frees an ``flock`` when its holder dies, so a lock file left by a killed run is
    stale and taken over (``note`` says whose it was). Where the file system has no ``flock``, the
    PID decides: a holder on this host that is no longer alive is stale. Released (and the file
    removed) on exit, exceptions included.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self.note: str | None = None
        self._fd: int | None = None

    def _refuse(self, holder: dict) -> RunLocked:
        pid = holder.get("pid", "PID")
        return RunLocked(
            f"{self.out} is being trained by another process ({_describe_holder(holder)}; lock file {self.path}): "
            f"wait for it to finish, or stop it (kill {pid}) and run the same command again to resume; "
            "or choose another --out"
        )

    def acquire(self) -> RunLock:
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:  # the folder is read-only: nothing of the run could be written
                raise RunFolderError(_cannot_write(self.out, e)) from None
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse(holder) from None
            except OSError:  # no flock on this file system: the recorded PID decides
                if holder and holder.get("host") == socket.gethostname() and holder.get("pid") != os.getpid() \
                        and _pid_alive(int(holder.get("pid", 0))):
                    os.close(fd)
                    raise self._refuse(holder) from None
            try:  # a releasing holder may have removed the file between open and flock: lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if holder:
            self.note = (f"took over the stale lock {self.path} of {_describe_holder(holder)}: "
                         "that process is gone (killed?) and had stopped writing")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # frees the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _started(out: Path) -> bool:
    """Whether a run folder holds any completed update (a checkpoint); one holding only the
    config.json (and logs) of a run refused or killed before its first checkpoint has not started."""
    return bool(saved_steps(out / "checkpoints"))


def _check_folder(out: Path, spec: RunSpec, console=None) -> None:
    """Refuse a folder that is not this run's; a folder whose run never completed an update is free
    to take a corrected command (its config.json is replaced, with a note)."""
    cfg = out / "config.json"
    if not out.exists():
        return
    if not out.is_dir():
        raise RunFolderError(f"run folder {out} exists and is not a folder")
    if not cfg.exists():
        if any(p.name != LOCK_FILE for p in out.iterdir()):
            raise ValueError(f"{out} is not empty and holds no config.json: not a run folder, refusing to write there")
        return
    try:
        old = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        if _started(out):
            raise ValueError(f"corrupt {cfg}: {e}") from None
        old = {}
    new = _normalize_json(spec.to_json())
    if old.get("backend") == "auto" and new["backend"] != "auto":  # a run recorded before auto was resolved
        from sim.registry import resolve_backend

        if resolve_backend(spec.env) == new["backend"]:
            old = {**old, "backend": new["backend"]}
    diff = [k for k in new if k != "config" and old.get(k) != new[k]]
    diff += [f"config.{k}" for k in new["config"] if old.get("config", {}).get(k) != new["config"][k]]
    if diff and _started(out):
        raise ValueError(
            f"{out} holds a run with a different setup ({', '.join(diff)}); "
            "resume it with the same arguments or choose another --out"
        )
    if diff and console is not None:
        console.print(f"{out} holds the config.json of a run that never completed an update "
                      f"(differs in {', '.join(diff)}): starting this run there instead")


def _checkpoint_every(checkpoint_every: Any, num_updates: int) -> int:
    """Updates per chunk: ``checkpoint_every`` (an integer >= 1) or about 50 chunks per run (None)."""
    if checkpoint_every is None:
        return max(1, math.ceil(num_updates / 50))
    ok = isinstance(checkpoint_every, (int, np.integer)) and not isinstance(checkpoint_every, bool)
    if not ok or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r}: must be an integer >= 1 (updates per checkpoint)")
    return int(checkpoint_every)


def resume_command(spec: RunSpec, out: Path, checkpoint_every: int | None = None) -> str:
    """The ``proteus train`` command that resumes ``spec`` in ``out``: the env, folder, and every
    option that differs from its defaults (the learner's preset for the env)."""
    learner = spec.learner
    argv = ["proteus", "train", spec.algo, "--env", spec.env, "--out", str(out)]
    if spec.backend != "auto":
        argv += ["--backend", spec.backend]
    if spec.seed != 0:
        argv += ["--seed", str(spec.seed)]
    if checkpoint_every is not None:
        argv += ["--checkpoint-every", str(checkpoint_every)]
    try:
        default = learner.default_config(spec.env)
    except (KeyError, ValueError, TypeError):
        default = None
    for f in dataclasses.fields(spec.config):
        value = getattr(spec.config, f.name)
        if default is not None and getattr(default, f.name) == value:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{f.name.replace('_', '-')}")
        elif isinstance(value, (tuple, list)):
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C until the block is done (a checkpoint and its policy are written whole): the
    KeyboardInterrupt is raised when the block ends. Only the main thread receives signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class _Rate:
    """Env steps/s averaged over every chunk this process has run (a short last chunk, or one that
    compiles, does not make the figure jump)."""

    def __init__(self):
        self.steps, self.seconds = 0, 0.0

    def add(self, steps: int, seconds: float) -> str:
        self.steps += int(steps)
        self.seconds += max(float(seconds), 0.0)
        return f"{self.steps / self.seconds:,.0f} steps/s" if self.seconds > 0 else ""


def _summary(done: int, steps_per_update: int, last_return: float, wall: float, resumed: bool, out: Path) -> dict:
    return {"updates": done, "env_steps": done * steps_per_update, "final_return": last_return,
            "wall_s": wall, "resumed": resumed, "out": str(out)}


def _last_return(rows: list[dict]) -> float:
    logged = [r["episode_return"] for r in rows if r.get("episode_return") is not None]
    return logged[-1] if logged else float("nan")


def _finished(spec: RunSpec, out: Path, total: int, num_updates: int, console) -> dict | None:
    """The summary of a run already trained to ``total`` updates (read from its checkpoint folder
    and metrics, before anything is built or compiled), or None."""
    t0 = time.time()
    steps = saved_steps(out / "checkpoints")
    if not steps or steps[-1] < total:
        return None
    done = steps[-1]
    try:
        rows = read_metrics(out)
    except (FileNotFoundError, ValueError):
        rows = []
    console.print(f"{out} is already trained ({done}/{num_updates} updates): nothing to do")
    return _summary(done, spec.learner.steps_per_update(spec.config), _last_return(rows), time.time() - t0, True, out)


def train_run(spec: RunSpec, out: Path, checkpoint_every: int | None = None, progress: bool = True,
              max_updates: int | None = None, console=None, trainer: Trainer | None = None) -> dict:
    """Train (or resume) the run ``spec`` in folder ``out``.

    Everything that can be refused (the learner's config, the trainer, ``checkpoint_every``, the
    folder) is checked before the folder is made or written. One process trains in a folder at a
    time (:class:`RunLock`). A torn last metrics line is dropped and an unreadable checkpoint is
    set aside for the newest readable one, each with a note. Ctrl-C raises :class:`RunInterrupted`
    naming the update the run resumes from and the command; a failed write, :class:`RunFolderError`.

    Args:
        checkpoint_every: updates per jitted chunk and checkpoint (default: about 50 chunks per run).
        max_updates: stop after this many updates in total (the run stays resumable; for tests).
        trainer: use this trainer instead of building one from ``spec`` (tests inject envs).

    Returns:
        a summary: updates done, env steps, final return, wall time, whether it resumed.
    """
    from proteus.console import make_console

    out = Path(out)
    console = console or make_console()
    learner = spec.learner
    num_updates = learner.num_updates(spec.config)
    total = num_updates if max_updates is None else min(num_updates, int(max_updates))
    every = _checkpoint_every(checkpoint_every, num_updates)
    _check_folder(out, spec)
    finished = _finished(spec, out, total, num_updates, console)
    if finished is not None:
        return finished
    trainer = trainer or build(spec)  # refusals of the config come here, before the folder exists
    policy_spec = learner.policy_spec(spec.config, trainer.env)
    _make_folder(out)
    with RunLock(out) as lock:
        if lock.note:
            console.print(f"[yellow]{lock.note}")
        _check_folder(out, spec, console)  # again, now that no other process can write here
        try:
            return _train_locked(spec, out, trainer, policy_spec, total, every, progress, console,
                                 resume=resume_command(spec, out, checkpoint_every))
        except OSError as e:
            raise RunFolderError(_cannot_write(out, e)) from None


def _train_locked(spec: RunSpec, out: Path, trainer: Trainer, policy_spec, total: int, every: int, progress: bool,
                  console, resume: str) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from tensorboardX import SummaryWriter

    learner = spec.learner
    num_updates = learner.num_updates(spec.config)
    steps_per_update = learner.steps_per_update(spec.config)
    metrics_file = out / "metrics.jsonl"
    (out / "config.json").write_text(json.dumps(spec.to_json(), indent=2))
    ckpt = Checkpoints(out / "checkpoints")
    t0 = time.time()
    writer = None
    try:
        ts = trainer.init(jax.random.key(spec.seed))
        resumed = bool(ckpt.steps())
        if resumed:
            ts, step, damaged = ckpt.restore_latest(ts)
            for bad_step, message in damaged:
                aside = ckpt.set_aside(bad_step)
                console.print(f"[yellow]{message}; it is moved to {aside} and the run goes on from the checkpoint "
                              f"at update {step}")
            done = int(ts.update)
            console.print(f"resuming {out} from its checkpoint at update {done}/{num_updates}")
            rows = _truncate_metrics(metrics_file, done, console)
        else:
            done, rows = 0, []
            metrics_file.write_text("")
        last_return = _last_return(rows)
        wall0 = float(rows[-1].get("wall_s") or 0.0) if rows else 0.0  # wall time continues across resumes
        writer = SummaryWriter(str(out / "tb"))
        rate = _Rate()
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
                rows = _rows(metrics, done, steps_per_update, wall0 + time.time() - t0)
                with _interrupts_deferred():  # the metrics, checkpoint and policy of a chunk are written whole
                    _append_metrics(metrics_file, writer, rows)
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
                    save_policy(out / "policy", policy_spec, trainer.agent_params(ts), _policy_meta(spec, trainer))
                rets = [r["episode_return"] for r in rows if r.get("episode_return") is not None]
                if rets:
                    last_return = rets[-1]
                bar.update(task, completed=done * steps_per_update, rate=rate.add(n * steps_per_update, dt),
                           ret=f"{last_return:.2f}")
    except KeyboardInterrupt:
        kept = ckpt.latest_step()
        where = (f"it resumes from its checkpoint at update {kept}/{num_updates}" if kept is not None
                 else "no update had been checkpointed yet, so it starts over")
        raise RunInterrupted(f"training interrupted: {where}. Run again to resume: {resume}") from None
    finally:
        if writer is not None:
            writer.close()
        ckpt.close()
        try:
            plot_learning_curve(out)
        except (OSError, ValueError) as e:  # the plot is a convenience: never hide why the run ended
            console.print(f"[yellow]learning curve not written: {e}")
    return _summary(done, steps_per_update, last_return, time.time() - t0, resumed, out)


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


def _parse_metrics(path: Path) -> tuple[list[dict], str | None]:
    """``(rows, torn)``: the rows of a metrics file, and the torn last line a kill mid-write leaves
    (dropped; None if there is none). A bad line before the last is corruption and raises naming
    the file and line."""
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows, torn = [], None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("update"), int):
                raise ValueError("not a metrics row (no integer 'update')")
        except ValueError as e:
            if i == len(lines) - 1:
                torn = line
                break
            raise ValueError(f"corrupt {path}, line {i + 1}: {e}") from None
        rows.append(row)
    return rows, torn


def _truncate_metrics(path: Path, updates: int, console=None) -> list[dict]:
    """Drop metric lines past the checkpoint a resumed run restarts from (nothing is counted twice)
    and a torn last line (with a note); returns the rows kept."""
    if not path.exists():
        return []
    rows, torn = _parse_metrics(path)
    if torn is not None and console is not None:
        console.print(f"[yellow]{path}: dropped a torn last line (a run killed while writing it): {torn[:60]!r}")
    keep = [r for r in rows if r["update"] <= updates]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep).encode(), overwrite=True)
    return keep


def read_metrics(out: Path) -> list[dict]:
    """The rows of a run folder's ``metrics.jsonl`` (a torn last line, left by a killed run, is skipped)."""
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in run folder {out}")
    return _parse_metrics(path)[0]


def plot_learning_curve(out: Path) -> Path | None:
    """``learning_curve.png``: episode (trial) return against env steps; where a run learns its discount
    and trace (``--meta-gradient``: ``gamma`` and ``gae_lambda`` move in ``metrics.jsonl``), a second
    panel shows them."""
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
    hyper = [(r["env_steps"], r["gamma"], r["gae_lambda"]) for r in rows
             if r.get("gamma") is not None and r.get("gae_lambda") is not None]
    learned = len({(g, lam) for _, g, lam in hyper}) > 1
    if learned:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 5.5), dpi=120, sharex=True)
        hx, hg, hl = np.array(hyper).T
        ax2.plot(hx, hg, color="C1", label="gamma")
        ax2.plot(hx, hl, color="C2", label="gae_lambda")
        ax2.set(xlabel="env steps", ylabel="meta-learned value", ylim=(0, 1.02))
        ax2.legend(loc="lower right")
        ax2.grid(alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(x, y, lw=0.8, alpha=0.4, color="C0")
    w = max(1, len(y) // 20)
    if len(y) >= w:
        smooth = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(x[w - 1:], smooth, color="C0", lw=2, label=f"mean of {w}")
        ax.legend(loc="lower right")
    ax.set(xlabel="" if learned else "env steps", ylabel=ylabel,
           title=f"{cfg['algo']} on {cfg['env']} (seed {cfg['seed']})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(out) / "learning_curve.png"
    fig.savefig(path)
    plt.close(fig)
    return path


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
