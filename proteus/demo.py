"""``proteus deploy`` (the sim2sim stand-in from the CLI) and ``proteus demo`` (the whole story).

The demo, on the embedded default (RL² on the randomized cart-pole, native MuJoCo):

1. train RL² under domain randomization (trials of 2 episodes in one sampled world);
2. evaluate zero-shot on the train / interp / extrap splits (report.json, sweeps, adaptation);
3. export the policy to ONNX with the JAX parity check;
4. run the ONNX file in the MuJoCo stand-in for the robot: hidden dynamics, sensor latency
   0-20 ms, friction 0.3-1.2, another physics timestep; report the return against training;
5. print where every artefact is.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

DEMO_ENV = "cartpole-balance"
DEMO_STEPS = 1_000_000


def parse_range(text: str | None, what: str) -> float | tuple[float, float] | None:
    """``"A:B"`` -> ``(A, B)``, one number -> that number, ``None`` -> ``None``; parse errors name the
    option. The values themselves are checked by :func:`deploy.standin.check_options`."""
    if text is None:
        return None
    parts = str(text).split(":")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--{what} must be A:B or a number, got {text!r}") from None
    if len(vals) == 1:
        return vals[0]
    if len(vals) != 2 or vals[0] > vals[1]:
        raise ValueError(f"--{what} must be A:B with A <= B, got {text!r}")
    return vals[0], vals[1]


def training_return_of(onnx_path: Path, env_id: str, episodes: int = 16) -> float | None:
    """Mean in-training episode return (JAX, nominal dynamics) of the run policy beside the ONNX file."""
    from deploy.standin import jax_episode_returns
    from proteus.checkpoint import load_policy

    policy_dir = Path(onnx_path).parent / "policy"
    if not policy_dir.is_dir():
        return None
    policy, params, meta = load_policy(policy_dir)
    if meta.get("env") != env_id:
        return None
    return float(jax_episode_returns(policy, params, env_id, episodes).mean())


def parse_task(items) -> dict[str, float]:
    """``("direction=-1", "target_vel=1.5")`` -> ``{"direction": -1.0, "target_vel": 1.5}`` (``--task``)."""
    out = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not sep or not name or not math.isfinite(v):
            raise ValueError(f"--task takes NAME=NUMBER (e.g. direction=-1), got {item!r}")
        out[name.strip()] = v
    return out


def deploy_standin(onnx_path: Path, env_id: str, latency_ms: str = "0:20", friction: str | None = "0.3:1.2",
                   mass: str | None = None, gain: str | None = None, noise_std: float = 0.0,
                   timestep: float | None = None, worlds: int = 8, training_return: float | None = None,
                   seed: int = 0, out_dir: Path | None = None, overwrite: bool = False,
                   json_path: Path | None = None, console=None, episodes: int | None = None,
                   task: tuple[str, ...] = (), explore: bool = False, record: Path | None = None,
                   appearance: str | None = None) -> dict:
    """The stand-in run behind ``proteus deploy POLICY.onnx --standin ENV``.

    Every option is checked before anything is built or compiled (the training return's JAX
    rollout included): a bad one raises ``ValueError`` naming it (``--latency-ms``) and the value.
    """
    from deploy.standin import check_options, check_robot_options, run_standin

    opts = check_options(latency_ms=parse_range(latency_ms, "latency-ms") or 0.0,
                         friction=parse_range(friction, "friction"), mass=parse_range(mass, "mass"),
                         gain=parse_range(gain, "gain"), noise_std=noise_std, timestep=timestep, worlds=worlds,
                         cli=True)
    if training_return is not None and not math.isfinite(float(training_return)):
        raise ValueError(f"--training-return must be finite, got {training_return!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX policy at {onnx_path}")
    if json_path is not None and Path(json_path).exists() and not overwrite:
        raise FileExistsError(f"{json_path} exists; pass --overwrite to replace it")
    check_robot_options(env_id, opts.latency_ms[1], opts.timestep, cli=True)  # the env's model, no compile
    if episodes is not None and (not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1):
        raise ValueError(f"--episodes must be an integer >= 1, got {episodes!r}")
    task_values = parse_task(task)
    if record is not None and worlds != 1:
        raise ValueError(f"--record needs --worlds 1 (the episodes of one world adapt one policy), got --worlds {worlds}")
    if record is not None and Path(record).exists() and not overwrite:
        raise FileExistsError(f"{record} exists; pass --overwrite to replace it")
    if training_return is None:
        training_return = training_return_of(onnx_path, env_id)
    report = run_standin(
        onnx_path, env_id, worlds=opts.worlds, latency_ms=opts.latency_ms, friction=opts.friction, mass=opts.mass,
        gain=opts.gain, noise_std=opts.noise_std, timestep=opts.timestep, seed=seed, out_dir=out_dir,
        training_return=training_return, overwrite=overwrite, console=console, episodes=episodes,
        task=task_values or None, explore=explore, record=record, appearance=appearance,
    )
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2, default=str))
    return report


def demo(out: Path | None = None, env_id: str = DEMO_ENV, steps: int = DEMO_STEPS, seed: int = 0,
         progress: bool = True, console=None, standin_worlds: int = 8) -> dict:
    """Train, evaluate, export and deploy to the stand-in; returns every artefact's path and figures.

    ``out`` defaults to a fresh ``runs/demo-YYYYmmdd-HHMMSS`` (nothing earlier is overwritten); give
    an existing demo folder to resume a killed demo (training resumes from its checkpoint, finished
    steps are skipped). ``standin_worlds``: worlds the stand-in plays (each compiles its own env).
    """
    from rich.table import Table

    from meta_rl.presets import default_config
    from proteus.console import make_console
    from proteus.evaluation import evaluate_run
    from proteus.export import export_run
    from proteus.runs import RunSpec, train_run

    console = console or make_console()
    t0 = time.time()
    out = Path(out) if out is not None else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    spec = RunSpec("rl2", env_id, "native", seed, default_config("rl2", env_id, total_steps=steps))
    console.rule(f"[bold]1/4 train RL² on {env_id} (native MuJoCo, randomized dynamics)")
    summary = train_run(spec, out, progress=progress, console=console)
    t_train = time.time() - t0

    console.rule("[bold]2/4 evaluate zero-shot on held-out dynamics")
    report_path = out / "eval" / "report.json"
    if report_path.exists():
        console.print(f"{report_path} exists (resumed demo): kept")
        ev = json.loads(report_path.read_text())
    else:
        ev = evaluate_run(out, tasks=64, console=console, progress=progress)

    console.rule("[bold]3/4 export to ONNX (parity-checked against JAX)")
    onnx_path = out / "policy.onnx"
    if onnx_path.exists():
        console.print(f"{onnx_path} exists (resumed demo): kept")
        exp = {"path": str(onnx_path)}
    else:
        exp = export_run(out, console=console)

    console.rule("[bold]4/4 MuJoCo stand-in for the robot: latency 0-20 ms, friction 0.3-1.2, timestep 0.005 s")
    standin_dir = out / "sim2sim"
    if (standin_dir / "sim2sim.json").exists():
        console.print(f"{standin_dir / 'sim2sim.json'} exists (resumed demo): kept")
        dep = json.loads((standin_dir / "sim2sim.json").read_text())
    else:
        dep = deploy_standin(onnx_path, env_id, latency_ms="0:20", friction="0.3:1.2", timestep=0.005,
                             worlds=standin_worlds, out_dir=standin_dir, seed=seed, console=console)
    wall = time.time() - t0

    table = Table(title=f"proteus demo: done in {wall / 60:.1f} min")
    table.add_column("artefact")
    table.add_column("where")
    for name, where in (
        ("run folder (config, metrics.jsonl, TensorBoard tb/, checkpoints/)", out),
        ("learning curve", out / "learning_curve.png"),
        ("evaluation report and plots", out / "eval"),
        ("ONNX policy (+ parity plot)", onnx_path),
        ("sim2sim report", standin_dir),
    ):
        table.add_row(name, str(where))
    console.print(table)
    s = dep.get("summary", {})
    figures = {
        "train_s": t_train,
        "wall_s": wall,
        "final_training_return": summary["final_return"],
        "standin_mean_return": s.get("mean_return"),
        "training_return": s.get("training_return"),
        "standin_return_ratio": s.get("return_ratio"),
        "eval": {k: v.get("policy", {}).get("mean") if isinstance(v, dict) else None
                 for k, v in ev.get("splits", {}).items()} if isinstance(ev, dict) else None,
        "onnx": exp.get("path"),
    }
    if s.get("return_ratio") is not None:
        console.print(f"stand-in return / training return: {s['return_ratio']:.2f} "
                      f"({s['mean_return']:.1f} vs {s['training_return']:.1f} per episode)")
    (out / "demo.json").write_text(json.dumps(figures, indent=2, default=str))
    return figures
