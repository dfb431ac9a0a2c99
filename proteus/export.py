"""``proteus export runs/NAME``: the run's policy as ONNX, checked against JAX on recorded rollouts.

Writes ``policy.onnx`` (default: in the run folder) and ``policy_parity.png`` beside it: the ONNX and
JAX actions along a recorded rollout and their difference. Nothing existing is overwritten unless
asked.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

import sim
from meta_rl.rollout import collect, start
from proteus.checkpoint import load_policy


def randomization_summary(env) -> dict:
    """Every randomized parameter's ranges per split (what ``proteus envs --verbose`` prints)."""
    out = {}
    for name, r in env.param_ranges().items():
        out[name] = r.describe() if hasattr(r, "describe") else str(r)
    return out


def record_rollout(policy, params, env_id: str, mode: str, backend: str, steps: int = 64, batch: int = 8,
                   seed: int = 0) -> np.ndarray:
    """Observations [steps, batch, obs_dim] of the policy acting (sampled) in its own env (``mode``:
    the env mode its learner trains in)."""
    env = sim.make(env_id, batch_size=batch, mode=mode, backend=backend)
    runner = start(env, policy, jax.random.key(seed))
    _, traj, _ = jax.jit(lambda r, k: collect(env, policy, params, r, k, steps))(runner, jax.random.key(seed + 1))
    return np.asarray(traj.obs[..., : policy.spec.obs_dim], np.float32)


def export_run(run_dir: Path, out: Path | None = None, overwrite: bool = False, console=None) -> dict:
    """Export a run folder's latest policy; returns the export report as a dict."""
    from deploy.export import export_onnx
    from proteus.console import make_console

    console = console or make_console()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    policy, params, meta = load_policy(run_dir / "policy")
    from proteus.runs import make_env, read_run_spec

    spec = read_run_spec(run_dir)
    env_id, algo, backend = meta["env"], meta["algo"], meta.get("backend", "auto")
    mode = spec.learner.env_mode(spec.config)
    out = Path(out) if out is not None else run_dir / "policy.onnx"
    plot = out.with_name(out.stem + "_parity.png")
    for p in (out, plot):
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    env = make_env(spec, mode=mode)
    with console.status(f"recording a rollout of {run_dir} for the parity check"):
        recorded = record_rollout(policy, params, env_id, mode, backend)
    metadata = {
        # abstract tasks (bandits, MDPs) have no clock: one decision per step
        "control_dt": float(meta.get("control_dt", 1.0)),
        "env_id": env_id,
        "algo": algo,
        "randomization": randomization_summary(env),
        # agents that adapt within a trial: the runtime resets their state every trial, not every episode
        "episodes_per_trial": int(sim.entry(env_id).episodes_per_trial) if mode in ("trial", "fixed") else 1,
    }
    with console.status(f"exporting {out} (parity check against JAX)"):
        report = export_onnx(policy, params, out, metadata, parity_obs=recorded, overwrite=overwrite)
    _plot_parity(policy, params, out, recorded, plot)
    console.print(f"wrote {out}: {policy.spec.kind} policy, max |action error| {report.max_action_error:.2g}, "
                  f"max |carry error| {report.max_carry_error:.2g} over {report.steps} steps "
                  f"({report.inputs_checked} observations; tolerance {report.tol:g})")
    console.print(f"parity plot: {plot}")
    return {"path": str(out), "plot": str(plot), "kind": report.kind, "max_action_error": report.max_action_error,
            "max_carry_error": report.max_carry_error, "steps": report.steps, "inputs_checked": report.inputs_checked}


def _plot_parity(policy, params, onnx_path: Path, recorded: np.ndarray, path: Path) -> None:
    """ONNX vs JAX deterministic actions along the first recorded trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deploy.runtime import OnnxPolicy

    ort_pol = OnnxPolicy(onnx_path)
    obs = recorded[:, :1]  # [T, 1, obs_dim]
    carry_j, carry_o = policy.init_carry(1), ort_pol.init_carry(1)
    step = jax.jit(lambda c, o: (lambda c2, d, v: (c2, policy.deterministic(d)))(*policy.apply(params, c, o)))
    a_j, a_o = [], []
    for t in range(obs.shape[0]):
        carry_j, aj = step(carry_j, obs[t])
        ao, carry_o = ort_pol.step(obs[t], carry_o)
        a_j.append(np.asarray(aj, np.float64).reshape(-1))
        a_o.append(np.asarray(ao, np.float64).reshape(-1))
    a_j, a_o = np.array(a_j), np.array(a_o)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 4.5), dpi=120, sharex=True)
    for i in range(a_j.shape[1]):
        ax1.plot(a_j[:, i], lw=2, alpha=0.5, color=f"C{i}")
        ax1.plot(a_o[:, i], lw=0.8, ls="--", color=f"C{i}")
    ax1.set(ylabel="action", title=f"ONNX (dashed) vs JAX (solid): {policy.spec.kind}, recorded rollout")
    err = np.abs(a_j - a_o).max(axis=1)
    ax2.semilogy(np.maximum(err, 1e-12))
    ax2.axhline(1e-5, color="r", ls=":", label="tolerance 1e-5")
    ax2.set(xlabel="step", ylabel="max |error|")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
