"""``proteus adapt RUN --episodes FILE``: a gradient learner's inner step on episodes a robot recorded.

The episodes (:mod:`deploy.episodes`: observations, the exploring policy's unclipped actions and the
rewards, recorded by ``proteus deploy POLICY --explore --record FILE`` or by a robot's own
:class:`~deploy.episodes.EpisodeRecorder`) are checked against the run's policy (names, horizon,
control period: every difference named), then the learner's inner step (the same function the
agent takes in evaluation and ``adapt.onnx`` runs on a robot) gives adapted weights, exported as a
parity-checked ``policy.onnx`` (default ``RUN/adapted/policy.onnx``) with an ``adapt.json`` report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def adapt_run(run_dir: Path, episodes_path: Path, out: Path | None = None, overwrite: bool = False,
              console=None) -> dict:
    """Adapt a MAML/ProMP/MAESN run's policy on recorded episodes and export it (see the module docstring;
    MAESN fits its latent distribution from the prior, and its weights when it adapts them).

    Returns the report written to ``adapt.json`` beside the policy.

    Raises:
        ValueError: the run's learner does not adapt by gradient, or the episodes do not fit its
            policy (each difference named).
        FileExistsError: an output exists and ``overwrite`` is false (checked before any work).
    """
    import jax
    import jax.numpy as jnp

    from deploy.episodes import check_episodes, load_episodes, pad_to
    from deploy.export import export_agent
    from deploy.files import write_atomic
    from proteus.console import make_console
    from proteus.export import export_agent_of, policy_metadata, run_metadata
    from proteus.runs import load_agent_params, make_env

    console = console or make_console()
    run_dir, episodes_path = Path(run_dir), Path(episodes_path)
    out = Path(out) if out is not None else run_dir / "adapted" / "policy.onnx"
    report_path = out.with_name("adapt.json")
    for p in (out, report_path):
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    spec, params, meta = load_agent_params(run_dir)
    L = spec.learner
    if L.adapt_function is None and L.adapt_params is None:
        raise ValueError(f"{run_dir} is a {spec.algo} run; proteus adapt needs a learner that adapts by gradient "
                         "(maml, promp, maesn)")
    env = make_env(spec)
    agent = export_agent_of(spec, env, params)
    s = agent.policy_spec
    metadata = run_metadata(spec, meta, env)
    H = metadata["episode_length"]
    ep = load_episodes(episodes_path)
    check_episodes(ep, s.obs_names, s.action_names, H, control_dt=metadata["control_dt"], where=str(episodes_path))
    arrays = pad_to(ep, H)
    if L.adapt_params is not None:  # the learner steps its own parameters (MAESN: the latent too)
        new_params = L.adapt_params(spec.config, env, params, arrays)
    else:
        arrays.pop("latent", None)
        fn = jax.jit(L.adapt_function(spec.config, s, params["obs_norm"]))
        state = fn(agent.initial_state(1), {k: jnp.asarray(v)[None] for k, v in arrays.items()})
        new_params = {**params, "net": jax.tree.map(lambda x: x[0], state["net"])}
    before, after = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)]) for t in (params["net"], new_params["net"]))
    adapted = export_agent_of(spec, env, new_params)
    E = int(arrays["mask"].shape[0])
    returns = (arrays["reward"] * arrays["mask"]).sum(1)
    # MAESN's metadata now holds the fitted latent, the one a robot explores with next
    metadata = {**policy_metadata(spec, meta, env, adapted), "adapted_from": str(episodes_path), "adapt_episodes": E}
    with console.status(f"exporting {out} (parity check against JAX)"):
        rep = export_agent(adapted, out, metadata, overwrite=overwrite)
    report = {
        "run": str(run_dir), "episodes_file": str(episodes_path), "policy": str(out), "episodes": E,
        "steps": int(arrays["mask"].sum()), "episode_returns": returns.tolist(),
        "mean_return": float(returns.mean()), "inner_lr": float(spec.config.inner_lr),
        "estimator": spec.config.estimator, "weight_change_l2": float(np.linalg.norm(after - before)),
        "weight_change_max": float(np.abs(after - before).max()), "max_action_error": rep.max_action_error,
    }
    if "adapted_latent" in new_params:  # MAESN: the latent distribution fitted (policy.onnx acts with its mean)
        lat = jax.device_get(new_params["adapted_latent"])
        report["latent"] = {k: [float(x) for x in np.ravel(v)] for k, v in lat.items()}
    write_atomic(report_path, (json.dumps(report, indent=2) + "\n").encode(), overwrite=overwrite)
    console.print(f"adapted {run_dir} on {E} recorded episode(s) of {episodes_path} (mean return "
                  f"{report['mean_return']:.2f}): one inner step (alpha {spec.config.inner_lr:g}), weights moved by "
                  f"{report['weight_change_l2']:.3g} (L2)"
                  + (f"; latent mean {np.round(report['latent']['mu'], 3).tolist()}, log sigma "
                     f"{np.round(report['latent']['log_sigma'], 3).tolist()}" if "latent" in report else ""))
    console.print(f"wrote {out} (max |action error| vs JAX {rep.max_action_error:.2g}) and {report_path}")
    return report
