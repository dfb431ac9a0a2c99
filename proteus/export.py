"""``proteus export runs/NAME``: the run's policy as ONNX, checked against JAX on recorded rollouts.

Writes ``policy.onnx`` (default: in the run folder) and ``policy_parity.png`` beside it: the ONNX and
JAX actions along a recorded rollout and their difference. An episodic controller (MFEC, NEC) takes
its memory as graph inputs, so that it can grow on the robot (:mod:`deploy.memory`): the trained
memory goes to ``policy.memory.npz`` beside the policy, tagged with the run's id (:func:`run_id`),
which the model's metadata also holds. Nothing existing is overwritten unless asked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import numpy as np

import sim


def randomization_summary(env) -> dict:
    """Every randomized parameter's ranges per split (what ``proteus envs --verbose`` prints)."""
    out = {}
    for name, r in env.param_ranges().items():
        out[name] = r.describe() if hasattr(r, "describe") else str(r)
    return out


def record_observations(spec, params, steps: int = 64, batch: int = 8, seed: int = 0) -> np.ndarray:
    """Observations [steps, batch, obs_dim] the run's agent reads while acting (sampled) through trials
    of its env (the evaluation's loop, :func:`meta_rl.evaluate.run_trials`)."""
    from meta_rl.evaluate import run_trials
    from proteus.runs import make_env

    env = make_env(spec, batch_size=batch, mode="trial")
    agent = spec.learner.make_agent(spec.config, make_env(spec), params, False)
    worlds = env.sample_params(jax.random.key(seed))
    r = jax.jit(lambda a, w, k: run_trials(env, a, w, k, record_obs=True))(agent, worlds, jax.random.key(seed + 1))
    obs = agent.policy_spec.select_obs(r.obs)
    if isinstance(obs, dict):  # a dict observation: every part, its own dtype (uint8 images)
        return {k: np.asarray(v)[:steps] for k, v in obs.items()}
    return np.asarray(obs, np.float32)[:steps]


def run_metadata(spec, meta: dict, env) -> dict:
    """The ONNX metadata of a run's policy (what ``proteus export`` and ``proteus adapt`` write)."""
    mode = spec.learner.env_mode(spec.config)
    return {
        # abstract tasks (bandits, MDPs) have no clock: one decision per step
        "control_dt": float(meta.get("control_dt", 1.0)),
        "env_id": spec.env,
        "algo": spec.algo,
        "randomization": randomization_summary(env),
        # agents that adapt within a trial: the runtime resets their state every trial, not every episode
        "episodes_per_trial": int(sim.entry(spec.env).episodes_per_trial) if mode in ("trial", "fixed") else 1,
        # control steps of one episode at most; with episodes_per_trial it gives max_trial_steps, the
        # denominator of the trial_time input
        "episode_length": int(env.unwrapped.episode_length),
    }


def policy_metadata(spec, meta: dict, env, agent) -> dict:
    """:func:`run_metadata` plus what the exported ``agent`` itself carries: a MAESN policy's latent
    distribution (``latent``: the one its z is drawn from on the robot)."""
    metadata = run_metadata(spec, meta, env)
    if callable(getattr(agent, "latent_metadata", None)):
        metadata["latent"] = agent.latent_metadata()
    return metadata


def export_agent_of(spec, env, params):
    """The agent whose ``policy_step`` a run exports (the learner's ``export_agent``, else its
    deterministic ``make_agent``)."""
    L = spec.learner
    if L.export_agent is not None:
        return L.export_agent(spec.config, env, params)
    return L.make_agent(spec.config, env, params, True)


def run_id(spec) -> str:
    """A run's id, stable for its folder: learner, env, seed and a hash of its whole ``config.json``."""
    blob = json.dumps(spec.to_json(), sort_keys=True, default=str).encode()
    return f"{spec.algo}-{spec.env}-seed{spec.seed}-{hashlib.sha256(blob).hexdigest()[:12]}"


def memory_metadata(spec, agent, file: str) -> dict:
    """How the robot writes an episodic controller's memory (the metadata's ``memory`` entry, beside
    the sizes the exporter derives): the learner's write rule and settings, and the run id."""
    c = spec.config
    out = {"learner": spec.algo, "run_id": run_id(spec), "file": file, "gamma": float(c.gamma),
           "match_tol": float(getattr(c, "match_tol", 0.0)), "n_step": getattr(c, "n_step", None)}
    rule = getattr(getattr(agent, "head", None), "memory_rule", None)  # the learner's Q head says how it writes
    if rule is not None:
        out["rule"] = rule
    if hasattr(c, "alpha"):
        out["alpha"] = float(c.alpha)
    return out


def adapt_metadata(spec) -> dict:
    """What ``adapt.onnx`` records of the inner step it computes."""
    c = spec.config
    return {"env_id": spec.env, "algo": spec.algo, "inner_lr": c.inner_lr, "estimator": c.estimator,
            "gamma": c.gamma, "gae_lambda": c.gae_lambda, "baseline_horizon": c.horizon}


def export_run(run_dir: Path, out: Path | None = None, overwrite: bool = False, console=None) -> dict:
    """Export a run folder's latest agent (any learner: its deterministic ``policy_step``); returns the
    export report as a dict. A learner that adapts by gradient (MAML, ProMP) also gets ``adapt.onnx``
    beside the policy: its inner step (:func:`deploy.export.export_adapt`)."""
    from deploy.export import export_adapt, export_agent
    from deploy.memory import EpisodicMemory, memory_path
    from proteus.console import make_console
    from proteus.runs import load_agent_params, make_env

    console = console or make_console()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    spec, params, meta = load_agent_params(run_dir)
    env = make_env(spec)
    agent = export_agent_of(spec, env, params)
    out = Path(out) if out is not None else run_dir / "policy.onnx"
    plot = out.with_name(out.stem + "_parity.png")
    adapt_fn = spec.learner.adapt_function
    adapt_out = out.with_name("adapt.onnx") if adapt_fn is not None else None
    memory = agent.memory_inputs() if callable(getattr(agent, "memory_inputs", None)) else {}
    memory_out = memory_path(out) if memory else None
    for p in (out, plot, adapt_out, memory_out):
        if p is not None and p.exists() and not overwrite:
            raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    with console.status(f"recording a rollout of {run_dir} for the parity check"):
        recorded = record_observations(spec, params)
    metadata = policy_metadata(spec, meta, env, agent)
    if memory:
        metadata["memory"] = memory_metadata(spec, agent, memory_out.name)
    with console.status(f"exporting {out} (parity check against JAX)"):
        report = export_agent(agent, out, metadata, parity_obs=recorded, overwrite=overwrite)
    stored = None
    if memory:
        m = report.metadata["memory"]
        stored = EpisodicMemory(memory["memory.keys"], memory["memory.values"], memory["memory.stamps"],
                                np.asarray(params["memory"].clock), run_id=m["run_id"], learner=spec.algo)
        stored.save(memory_out)
    _plot_parity(agent, out, recorded, plot, stored)
    console.print(f"wrote {out}: {report.kind} policy, max |action error| {report.max_action_error:.2g}, "
                  f"max |carry error| {report.max_carry_error:.2g} over {report.steps} steps "
                  f"({report.inputs_checked} observations; tolerance {report.tol:g})")
    result = {"path": str(out), "plot": str(plot), "kind": report.kind, "max_action_error": report.max_action_error,
              "max_carry_error": report.max_carry_error, "steps": report.steps, "inputs_checked": report.inputs_checked}
    if memory:
        errs = ", ".join(f"max {k} error {e:.2g}" for k, e in report.output_errors.items())
        console.print(f"memory: {memory_out} ({stored.actions} actions x {stored.capacity} slots, "
                      f"{int(stored.size().sum())} entries; run id {stored.run_id}); the graph takes it as inputs "
                      f"({errs}, relative above 1)")
        result["memory"] = {"path": str(memory_out), "run_id": stored.run_id, "entries": int(stored.size().sum()),
                            "output_errors": dict(report.output_errors)}
    console.print(f"parity plot: {plot}")
    if adapt_fn is not None:
        fn = adapt_fn(spec.config, agent.policy_spec, params["obs_norm"])
        with console.status(f"exporting {adapt_out} (the inner step; parity check against JAX)"):
            rep = export_adapt(agent, fn, adapt_out, metadata["episode_length"], adapt_metadata(spec),
                               overwrite=overwrite)
        console.print(f"wrote {adapt_out}: the inner step ({rep.nodes} ONNX nodes), max |adapted weight error| "
                      f"{rep.max_param_error:.2g} over {rep.worlds_checked} worlds ({rep.episodes_checked} episodes; "
                      f"tolerance {rep.tol:g})")
        result["adapt"] = {"path": str(adapt_out), "max_param_error": rep.max_param_error, "nodes": rep.nodes}
    return result


def _plot_parity(agent, onnx_path: Path, recorded: np.ndarray, path: Path, memory=None) -> None:
    """ONNX vs JAX deterministic actions along the first recorded trajectory (a memory model fed
    ``memory``, the agent's own)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deploy.runtime import OnnxPolicy

    ort_pol = OnnxPolicy(onnx_path, memory=memory)
    obs = jax.tree.map(lambda x: np.asarray(x)[:, :1], recorded)  # [T, 1, ...]
    carry_j, carry_o = agent.initial_state(1), ort_pol.init_carry(1)
    step = jax.jit(lambda a, c, o: a.policy_step(c, o)[::-1])
    a_j, a_o = [], []
    for t in range(jax.tree.leaves(obs)[0].shape[0]):
        o = jax.tree.map(lambda x: x[t], obs)
        carry_j, aj = step(agent, carry_j, o)
        ao, carry_o = ort_pol.step(o, carry_o)
        a_j.append(np.asarray(aj, np.float64).reshape(-1))
        a_o.append(np.asarray(ao, np.float64).reshape(-1))
    a_j, a_o = np.array(a_j), np.array(a_o)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 4.5), dpi=120, sharex=True)
    for i in range(a_j.shape[1]):
        ax1.plot(a_j[:, i], lw=2, alpha=0.5, color=f"C{i}")
        ax1.plot(a_o[:, i], lw=0.8, ls="--", color=f"C{i}")
    ax1.set(ylabel="action", title=f"ONNX (dashed) vs JAX (solid): {agent.policy_spec.kind}, recorded rollout")
    err = np.abs(a_j - a_o).max(axis=1)
    ax2.semilogy(np.maximum(err, 1e-12))
    ax2.axhline(1e-5, color="r", ls=":", label="tolerance 1e-5")
    ax2.set(xlabel="step", ylabel="max |error|")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
