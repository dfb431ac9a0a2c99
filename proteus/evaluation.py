"""``proteus eval runs/NAME``: zero-shot evaluation of a trained run on held-out worlds.

The run's latest policy (``policy/``) plays whole trials (K episodes per world) of the run's env on
its backend, on the shared evaluation tasks of :func:`meta_rl.evaluate.eval_tasks`, for each split.
Every method is scored on the same worlds with the same random streams (common random numbers):

* the **policy**: the run's agent, whatever its learner (:class:`meta_rl.agent.Agent`: an RL² agent
  keeps its memory through the trial; a DR-PPO policy sees the base observation only, see
  :class:`meta_rl.agent.PolicyAgent`);
* optional **baseline** runs on the same env (``baseline_run``: one folder or several);
* the **oracle**: a policy trained on the exact world (``oracle_run``) when given, else the known
  optimum where there is one: Gittins-index play for Bernoulli bandits (tuned discount, the
  Bayes-optimal baseline of Duan et al. 2016), the planner that knows the MDP for tabular MDPs, and
  the exact optimum (the point moving at full speed towards the target, clipped per axis) for
  point navigation. MuJoCo robots have no known optimum: without ``oracle_run`` it is reported as
  unavailable.

It writes ``RUN/eval/report.json``, ``RUN/eval/returns.npz`` (every world's return in each episode
of its trial, [worlds, episodes] per ``split/player``, the players named as in the report; the same
worlds row by row for every player), ``RUN/eval/adaptation.png`` (mean return per episode of the trial,
per split) and one ``RUN/eval/sweep_<param>.png`` per randomized scalar parameter (trial return
against the parameter's value over every evaluated world, coloured by split, the training range
shaded), and prints a table. A previous report is never overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

import sim
from meta_rl.baselines.oracles import known_oracle, known_references
from meta_rl.agent import ForgetfulAgent
from meta_rl.evaluate import EVAL_SEED, compiled_run_trials, eval_tasks, mean_ci95
from proteus.report import BenchRow
from randomization.ranges import SPLITS, SplitRange, check_split
from sim.registry import TASK_SUFFIX

DEFAULT_TASKS_ROBOT = 256
DEFAULT_TASKS_CHEAP = 1000
MAX_PLOTTED_ELEMENTS = 8  # vector-valued parameters with more elements are not swept (noted in the report)
SPLIT_COLORS = {"train": "C0", "interp": "C1", "extrap": "C3"}


# -- run folders -----------------------------------------------------------------------------------
def read_run_config(run_dir: Path) -> dict:
    """``config.json`` of a run folder (algo, env, backend, seed, config); errors name the path."""
    from proteus.runs import read_run_spec

    spec = read_run_spec(run_dir)
    return {"algo": spec.algo, "env": spec.env, "backend": spec.backend, "seed": spec.seed,
            "config": dataclasses.asdict(spec.config)}


def _load(run_dir: Path, role: str) -> dict:
    """A run folder's config and latest agent parameters (``policy/``), ready to evaluate (any learner)."""
    from proteus.runs import read_agent

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    spec, env, params, _ = read_agent(run_dir)
    policy_spec = spec.learner.policy_spec(spec.config, env)
    progress: dict[str, Any] = {}
    try:
        from proteus.runs import read_metrics

        rows = read_metrics(run_dir)
        if rows:
            progress = {"updates": rows[-1].get("update"), "env_steps": rows[-1].get("env_steps")}
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return {"dir": run_dir, "role": role, "cfg": cfg, "spec": spec, "env": env, "policy_spec": policy_spec,
            "params": params, **progress}


def _agent(loaded: dict, deterministic: bool | None):
    """``(agent, deterministic)`` of a loaded run: by default the mode for continuous actions and a
    sample for discrete ones."""
    spec = loaded["spec"]
    det = (not loaded["policy_spec"].discrete) if deterministic is None else bool(deterministic)
    return spec.learner.make_agent(spec.config, loaded["env"], loaded["params"], det), det


def _add_finetuned(main: dict, others: dict, players: dict, baseline_names: dict, meta: dict) -> dict:
    """``--finetune``: each baseline's policy, and a random initialization of the run's own policy,
    adapted by the run's test-time step (the learner's ``finetune_agent``), added as baselines.
    Returns ``{baseline name: why}`` for the baselines the step cannot adapt."""
    spec = main["spec"]
    hook = spec.learner.finetune_agent
    if hook is None:
        raise ValueError(f"--finetune needs a learner that adapts by gradient; {spec.algo} does not")
    skipped = {}
    for i, role in enumerate([r for r in baseline_names if r.startswith("baseline")]):
        lo = others[role]
        name = f"{baseline_names[role]} + {spec.algo} step"
        if lo["spec"].learner.finetune_agent is not None:  # a MAML-family run adapts by its own step already
            skipped[baseline_names[role]] = f"{lo['spec'].algo} adapts by its own gradient step"
            continue
        try:
            players[f"finetune{i}"] = hook(spec.config, main["env"], lo["policy_spec"], lo["params"])
        except ValueError as e:  # a policy the step cannot adapt (a recurrent RL² agent): said, not scored
            skipped[baseline_names[role]] = str(e)
            continue
        baseline_names[f"finetune{i}"] = name
        meta[name] = {"run": str(lo["dir"]), "algo": lo["cfg"]["algo"], "deterministic": False,
                      "updates": lo.get("updates"), "env_steps": lo.get("env_steps"), "finetuned_by": spec.algo}
    fresh = spec.learner.init_agent_params(spec.config, main["env"], jax.random.key(0))
    name = f"random init + {spec.algo} step"
    players["random_init"] = hook(spec.config, main["env"], main["policy_spec"], fresh)
    baseline_names["random_init"] = name
    meta[name] = {"run": None, "algo": spec.algo, "deterministic": False, "updates": 0, "env_steps": 0,
                  "finetuned_by": spec.algo, "init_seed": 0}
    return skipped


def _observe_task_wrapper(env):
    from sim.wrappers import ObserveTask, find_wrapper

    return find_wrapper(env, ObserveTask, f"{env.id} has no ObserveTask wrapper")


def _task_observing(agent, loaded: dict):
    """An oracle run of ``<id>+task`` as an agent of ``<id>`` (:class:`meta_rl.agent.TaskObservingAgent`)."""
    from meta_rl.agent import TaskObservingAgent

    wrapper = _observe_task_wrapper(loaded["env"])
    T = len(wrapper.task_names)
    return TaskObservingAgent(agent, wrapper.task_vector, loaded["policy_spec"].obs_dim - T, T)


def _check_spaces(loaded: dict, env, task_observed: bool = False) -> None:
    """The agent reads the env's (base) observation and writes its actions, by name (an oracle of
    ``<id>+task``: the base observation, then ``task.<name>`` for each task parameter)."""
    spec = loaded["policy_spec"]
    space = env.observation_space
    if task_observed:
        wrapper = _observe_task_wrapper(loaded["env"])
        task = tuple(f"task.{n}" for n in wrapper.task_names)
        want = tuple(space.names[: spec.obs_dim - len(task)]) + task
        if tuple(spec.obs_names) != want or tuple(env.action_space.names) != tuple(spec.action_names):
            raise ValueError(f"the oracle in {loaded['dir'] / 'policy'} does not fit {env.id} with its task observed "
                             f"(policy obs {list(spec.obs_names)}; expected {list(want)})")
        return
    if spec.structured:  # a dict observation: every part the policy reads, by name and shape
        have = dict(space.items()) if hasattr(space, "items") else {}
        bad = [n for n, shape, _ in spec.obs_parts if n not in have or tuple(have[n].shape) != tuple(shape)]
        if bad or tuple(env.action_space.names) != tuple(spec.action_names):
            raise ValueError(f"the policy in {loaded['dir'] / 'policy'} does not fit {env.id} as this version builds it "
                             f"(policy parts {[(n, s) for n, s, _ in spec.obs_parts]}, env {space.describe()})")
        return
    obs = tuple(space.names[: spec.obs_dim])
    act = tuple(env.action_space.names)
    if obs != tuple(spec.obs_names) or act != tuple(spec.action_names):
        raise ValueError(
            f"the policy in {loaded['dir'] / 'policy'} does not fit {env.id} as this version builds it "
            f"(policy obs {list(spec.obs_names)}, actions {list(spec.action_names)}; env obs {list(obs)}, actions {list(act)})"
        )


# -- evaluation ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def eval_env(env_id: str, backend: str, tasks: int, episodes: int | None = None):
    """The batched trial env the evaluation runs on, one per (env, backend, tasks, episodes): the compiled
    :func:`compiled_run_trials` is cached per env object, so this cache shares it across calls."""
    return sim.make(env_id, batch_size=tasks, mode="trial", backend=backend, episodes_per_trial=episodes)


def default_tasks(env_id: str) -> int:
    """Worlds per split by default: fewer for MuJoCo robots (each is a full physics simulation)."""
    return DEFAULT_TASKS_ROBOT if "native" in sim.entry(env_id).backends else DEFAULT_TASKS_CHEAP


def _summary(trial_return: np.ndarray, episode_returns: np.ndarray) -> dict:
    mean, ci = mean_ci95(trial_return)
    eps = [mean_ci95(episode_returns[:, i]) for i in range(episode_returns.shape[1])]
    # paired over worlds (last and first episode of the same trial): far tighter than the two CIs
    gain, gain_ci = mean_ci95(episode_returns[:, -1] - episode_returns[:, 0])
    return {
        "mean": mean,
        "ci95": ci,
        "std": float(np.std(trial_return, ddof=1)),
        "episode_means": [m for m, _ in eps],
        "episode_ci95": [c for _, c in eps],
        "first_episode": eps[0][0],
        "last_episode": eps[-1][0],
        "adaptation_gain": gain,
        "adaptation_gain_ci95": gain_ci,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or not math.isfinite(b):
        return None
    return a / b


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "param"


def _param_table(env, params_by_split: dict) -> tuple[dict, list[str]]:
    """Scalar series to sweep: name -> (range or text, {split: [B] values}); and notes on skipped ones."""
    ranges = env.param_ranges()
    vals = {s: jax.device_get(env.param_values(p)) for s, p in params_by_split.items()}
    names = list(next(iter(vals.values())).keys()) if vals else []
    series, notes = {}, []
    for name in names:
        rng = ranges.get(name)
        shape = np.shape(next(iter(vals.values()))[name])[1:]
        size = int(np.prod(shape)) if shape else 1
        if size == 1:
            series[name] = (rng, {s: np.asarray(v[name], np.float64).reshape(-1) for s, v in vals.items()})
        elif size <= MAX_PLOTTED_ELEMENTS:
            for i in range(size):
                series[f"{name}[{i}]"] = (rng, {s: np.asarray(v[name], np.float64).reshape(len(v[name]), -1)[:, i]
                                               for s, v in vals.items()})
        else:
            notes.append(f"{name}: {size} elements per world {list(shape)}; not swept (more than {MAX_PLOTTED_ELEMENTS})")
    return series, notes


def evaluate_run(
    run_dir: Path | str,
    splits: tuple[str, ...] | list[str] | str = SPLITS,
    tasks: int | None = None,
    baseline_run: Path | str | list | tuple | None = None,
    oracle_run: Path | str | None = None,
    deterministic: bool | None = None,
    json_path: Path | str | None = None,
    overwrite: bool = False,
    console=None,
    progress: bool = True,
    finetune: bool = False,
    episodes: int | None = None,
    adapt_episodes: int | None = None,
    env: str | None = None,
    reset_memory: bool = False,
) -> dict:
    """Evaluate a run's latest policy zero-shot on each split; write ``run_dir/eval/`` and return the report.

    Args:
        run_dir: the run folder (``config.json`` + ``policy/``).
        splits: which splits to evaluate (``train``, ``interp``, ``extrap``).
        tasks: worlds per split (default: 256 for MuJoCo robots, 1000 otherwise); the same worlds for
            every method.
        baseline_run: baseline run folder(s) on the same env (one path or several), scored on the same
            worlds; the first is "the baseline" of the ratios, every one gets a paired difference.
        oracle_run: a run trained on the exact world, used as the oracle (else the env's known optimum).
        deterministic: act with the distribution's mode (default: yes for continuous actions, sample
            for discrete ones, per policy).
        json_path: also write the figures as bench rows (name, value, baseline, ratio) there.
        finetune: for a learner that adapts by gradient (its ``finetune_agent``), also score each
            baseline's policy adapted by the run's own test-time step (``NAME + ALGO step``) and a
            randomly initialized policy adapted the same way (``random init + ALGO step``), as further
            baselines on the same worlds.
        episodes: episodes per trial (default: the env's); a gradient learner adapts after each, so 4
            gives its returns after 0, 1, 2 and 3 inner steps.
        adapt_episodes: every gradient learner's agent (the run's, a baseline's, and ``finetune``'s)
            takes each inner step on this many episodes (default its config's, 1); e.g. 10 with
            ``episodes=11``: the step on 10 episodes as MAML trains, scored in the 11th.
        env: evaluate on this registered env instead of the run's (the same observation and action
            names, the run's backend; every baseline still trained on the run's env), e.g. a run trained
            on ``point-arc`` scored on ``point-arc-sparse``'s sparse training goals; written to
            ``run_dir/eval-ENV/``.
        reset_memory: every player's state returns to its initial state at each episode end
            (:class:`meta_rl.agent.ForgetfulAgent`): the memory ablation, where episode 2 minus
            episode 1 shows what the state carried across the boundary was worth; written to
            ``run_dir/eval-reset-memory/`` (``eval-ENV-reset-memory/`` with ``env``).
        overwrite: replace an existing ``eval/report.json`` (and ``json_path``).
        console: a Rich console (default: :func:`proteus.console.make_console`).

    Returns:
        the report written to ``run_dir/eval/report.json``.

    Raises:
        FileNotFoundError: a run folder or its files are missing (the path is named).
        ValueError: a corrupt run folder, a baseline/oracle on another env, bad arguments.
        FileExistsError: a previous report exists and ``overwrite`` is false.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from proteus.console import make_console

    console = console or make_console()
    run_dir = Path(run_dir)
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(dict.fromkeys(check_split(s) for s in splits))
    if not splits:
        raise ValueError("no split to evaluate; expected some of " + ", ".join(SPLITS))

    main = _load(run_dir, "policy")
    trained_on, backend = main["cfg"]["env"], main["cfg"]["backend"]
    env_id = trained_on if env is None else str(env)
    if env_id != trained_on:
        sim.entry(env_id)  # an unknown id is refused here, naming the known ones
        if backend != "auto" and backend not in sim.entry(env_id).backends:
            raise ValueError(f"{env_id} has no {backend} backend (it has {', '.join(sim.entry(env_id).backends)}); "
                             f"{run_dir} ran on {backend}")
    if backend == "auto":
        backend = sim.entry(env_id).backends[0]
    baseline_paths = [] if baseline_run is None else (
        [baseline_run] if isinstance(baseline_run, (str, Path)) else list(baseline_run))
    others = {}
    for role, path in [(f"baseline{i}", p) for i, p in enumerate(baseline_paths)] + [("oracle", oracle_run)]:
        if path is None:
            continue
        cfg = read_run_config(Path(path))
        if cfg["env"] != trained_on and not (role == "oracle" and cfg["env"] == trained_on + TASK_SUFFIX):
            raise ValueError(f"{role.rstrip('0123456789')} run {path} is on {cfg['env']!r}, but {run_dir} is on "
                             f"{trained_on!r}: a comparison needs the same env")
        others[role] = _load(Path(path), role)
    if adapt_episodes is not None:  # every player that adapts by gradient steps on that many episodes
        stepping = [x for x in (main, *others.values()) if hasattr(x["spec"].config, "adapt_episodes")]
        if not stepping:
            raise ValueError(f"adapt_episodes applies to learners that adapt by gradient (maml, promp), not "
                             f"{main['spec'].algo}" + (" or its baselines" if baseline_paths else ""))
        for x in stepping:
            x["spec"] = dataclasses.replace(x["spec"], config=dataclasses.replace(x["spec"].config,
                                                                                  adapt_episodes=int(adapt_episodes)))
    # baselines are named by folder (made unique); the first is "baseline" in ratios and plots
    baseline_names: dict[str, str] = {}
    for i in range(len(baseline_paths)):
        name = Path(baseline_paths[i]).resolve().name or f"baseline{i}"
        while name in baseline_names.values():
            name += "'"
        baseline_names[f"baseline{i}"] = name

    out_dir = run_dir / (("eval" if env_id == trained_on else f"eval-{env_id}") + ("-reset-memory" if reset_memory else ""))
    report_path = out_dir / "report.json"
    targets = [report_path] + ([Path(json_path)] if json_path else [])
    if json_path and Path(json_path).is_dir():
        raise IsADirectoryError(f"--json {json_path} is a directory; give a file path")
    if not overwrite:
        for p in targets:
            if p.exists():
                raise FileExistsError(f"{p} already holds an evaluation; pass --overwrite (overwrite=True) to replace it")

    tasks = default_tasks(env_id) if tasks is None else int(tasks)
    if tasks < 2:
        raise ValueError(f"tasks must be >= 2 (a confidence interval needs two worlds), got {tasks}")
    env = eval_env(env_id, backend, tasks, episodes)  # a bad episode count is refused by sim.make, named
    run = compiled_run_trials(env)
    K = env.episodes_per_trial

    for loaded in (main, *others.values()):
        _check_spaces(loaded, env, task_observed=loaded["cfg"]["env"].endswith(TASK_SUFFIX))

    # who plays: the policy, the baselines, the oracle (a run, or the known optimum): all Agents
    def run_meta(loaded, det):
        return {"run": str(loaded["dir"]), "algo": loaded["cfg"]["algo"], "deterministic": det,
                "updates": loaded.get("updates"), "env_steps": loaded.get("env_steps"),
                **({"adapt_episodes": loaded["spec"].config.adapt_episodes}
                   if hasattr(loaded["spec"].config, "adapt_episodes") else {})}

    players: dict[str, Any] = {}
    players["policy"], det_policy = _agent(main, deterministic)
    meta: dict[str, Any] = {"policy": run_meta(main, det_policy)}
    meta["baselines"] = {}
    for role, name in baseline_names.items():
        players[role], det = _agent(others[role], deterministic)
        meta["baselines"][name] = run_meta(others[role], det)
    finetune_skipped = _add_finetuned(main, others, players, baseline_names, meta["baselines"]) if finetune else {}
    meta["baseline"] = next(iter(meta["baselines"].values()), None)
    if "oracle" in others:
        players["oracle"], det = _agent(others["oracle"], deterministic)
        o = others["oracle"]
        note = "a policy trained on the exact world (given as oracle_run)"
        if o["cfg"]["env"].endswith(TASK_SUFFIX):
            players["oracle"] = _task_observing(players["oracle"], o)
            note = f"a policy trained on {o['cfg']['env']}: it observes each world's task parameters"
        meta["oracle"] = {"kind": "run", "label": f"run {o['dir']}", "run": str(o["dir"]), "algo": o["cfg"]["algo"],
                          "deterministic": det, "note": note}
    else:
        known = known_oracle(env)
        if known is None:
            meta["oracle"] = {"kind": "unavailable", "label": "unavailable",
                              "note": "no known optimum for this env; pass oracle_run (a policy trained on the exact world)"}
        else:
            players["oracle"], label, note = known
            meta["oracle"] = {"kind": "known", "label": label, "note": note}

    if reset_memory:  # the oracle and the references keep theirs: they are the yardsticks
        for role in [r for r in players if r != "oracle"]:
            players[role] = ForgetfulAgent(players[role])
        meta["reset_memory"] = True

    references = known_references(env)
    ref_role = {name: f"reference:{name}" for name in references}  # their keys among the players
    for name, strat in references.items():
        players[ref_role[name]] = strat
    meta["references"] = {name: strat.label() for name, strat in references.items()}

    # evaluate: same worlds and same random streams for every player on a split
    results: dict[str, dict[str, Any]] = {}
    params_by_split: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not progress) as bar:
        t = bar.add_task(f"eval {env_id} ({tasks} worlds/split)", total=len(splits) * len(players))
        for split in splits:
            try:
                params = eval_tasks(env, tasks, split)
            except ValueError as e:  # a split this env does not declare
                unavailable[split] = str(e)
                bar.advance(t, len(players))
                continue
            params_by_split[split] = params
            key = jax.random.fold_in(jax.random.key(EVAL_SEED), SPLITS.index(split))
            results[split] = {}
            for role, player in players.items():
                bar.update(t, description=f"eval {env_id}: {split} · {role}")
                r = jax.device_get(run(player, params, key))
                results[split][role] = {"trial_return": np.asarray(r.trial_return, np.float64),
                                        "episode_returns": np.asarray(r.episode_returns, np.float64)}
                bar.advance(t)
    if not results:
        raise ValueError(f"{env_id}: none of the splits {', '.join(splits)} can be sampled: "
                         + "; ".join(f"{s}: {m}" for s, m in unavailable.items()))
    for split, per in results.items():
        for role, r in per.items():
            if not np.isfinite(r["trial_return"]).all():
                raise FloatingPointError(f"{role} returns on split {split} are not finite ({run_dir}): "
                                         "the policy or the simulator diverged")

    # the report
    report: dict[str, Any] = {
        "run": str(run_dir),
        "env": env_id,
        "trained_on": trained_on,
        "algo": main["cfg"]["algo"],
        "backend": backend,
        "tasks": tasks,
        "episodes_per_trial": K,
        "adapt_episodes": getattr(main["spec"].config, "adapt_episodes", None),
        "eval_seed": EVAL_SEED,
        **meta,
        "splits": {},
        "unavailable_splits": unavailable,
    }
    notes: list[str] = [f"--finetune: {name} not fine-tuned ({why})" for name, why in finetune_skipped.items()]
    if reset_memory:
        notes.append("--reset-memory: every learner's state (RL²'s carry, a memory, adapted weights) was reset at each "
                     "episode end; episode k minus episode 1 is what the state carried across episodes was worth")
    from sim.tasks.bandit import BernoulliBandit

    is_bandit = isinstance(env.unwrapped, BernoulliBandit)
    for split, per in results.items():
        row: dict[str, Any] = {}
        for role in ("policy", "oracle"):
            row[role] = _summary(per[role]["trial_return"], per[role]["episode_returns"]) if role in per else None
        row["baselines"] = {name: _summary(per[role]["trial_return"], per[role]["episode_returns"])
                            for role, name in baseline_names.items()}
        row["baseline"] = next(iter(row["baselines"].values()), None)
        pm = row["policy"]["mean"]
        row["policy_over_oracle"] = _ratio(pm, row["oracle"] and row["oracle"]["mean"])
        row["policy_over_baseline"] = _ratio(pm, row["baseline"] and row["baseline"]["mean"])
        row["adaptation_gain"] = row["policy"]["adaptation_gain"]
        row["references"] = {name: _summary(per[role]["trial_return"], per[role]["episode_returns"])
                             for name, role in ref_role.items()}
        # policy minus each other player, paired over the same worlds and random streams: the
        # per-world differences cancel most of the between-world spread that the separate CIs carry
        row["paired"] = {}
        pairs = {"oracle": "oracle", **{("baseline" if i == 0 else f"baseline {name}"): role
                                         for i, (role, name) in enumerate(baseline_names.items())}, **ref_role}
        for other, role in pairs.items():
            if role in per:
                m, ci = mean_ci95(per["policy"]["trial_return"] - per[role]["trial_return"])
                # the last episode alone: after the trial's adaptation (K - 1 inner steps for a gradient learner)
                m_last, ci_last = mean_ci95(per["policy"]["episode_returns"][:, -1] - per[role]["episode_returns"][:, -1])
                row["paired"][other] = {"policy_minus": m, "ci95": ci, "last_episode_minus": m_last,
                                        "last_episode_ci95": ci_last}
        if is_bandit:
            vals = jax.device_get(env.param_values(params_by_split[split]))["arm_probs"]
            row["full_information_bound"] = float(np.max(vals, -1).mean() * env.max_trial_steps)
        report["splits"][split] = row
    if any(r["policy"]["mean"] < 0 or (r["oracle"] and r["oracle"]["mean"] < 0) for r in report["splits"].values()):
        notes.append("returns are negative: a ratio above 1 means the policy does worse than the reference")
    if is_bandit:
        notes.append("full_information_bound: n · max arm probability, what a player that knows the arms expects")

    out_dir.mkdir(parents=True, exist_ok=True)
    series, skip_notes = _param_table(env, params_by_split)
    notes += skip_notes
    figures = _plot_sweeps(out_dir, series, results, report) + [_plot_adaptation(out_dir, report)]
    report["figures"] = [p.name for p in figures]
    report["parameters"] = {
        name: ({"train": [list(iv) for iv in rng.intervals("train")], "unit": rng.unit,
                "splits": rng.describe()} if isinstance(rng, SplitRange) else {"description": rng})
        for name, (rng, _) in series.items()
    }
    report["notes"] = notes
    rows = bench_rows(report)
    report["rows"] = [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows]

    # outputs: figures first, the report last (a crash never leaves a report that blocks a rerun)
    names = {"policy": "policy", "oracle": "oracle", **baseline_names}
    np.savez_compressed(out_dir / "returns.npz", **{
        f"{split}/{names.get(role, role)}": r["episode_returns"].astype(np.float32)
        for split, per in results.items() for role, r in per.items()})
    if json_path:
        from proteus.report import write_json

        write_json(rows, Path(json_path), {"report": str(report_path), "env": env_id, "tasks": tasks})
    report_path.write_text(json.dumps(_clean(report), indent=2))
    print_report(report, console)
    console.print(f"wrote {report_path} and {len(figures)} figure(s) in {out_dir}"
                  + (f"; rows in {json_path}" if json_path else ""))
    return _clean(report)


def _clean(x):
    """JSON-ready: numpy scalars to floats, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def bench_rows(report: dict) -> list[BenchRow]:
    """The report as bench rows: per split, the policy against the oracle and against the DR baseline."""
    rows = []
    name = Path(report["run"]).name or report["run"]
    for split, r in report["splits"].items():
        p = r["policy"]
        base = f"{name} {report['env']} {split} trial return"
        refs = []
        if r["oracle"] is not None:
            refs.append(("oracle", r["oracle"]["mean"], f"oracle: {report['oracle']['label']}"))
        for i, (bname, summary) in enumerate((r.get("baselines") or {}).items()):
            tag = "DR baseline" if i == 0 else f"baseline {bname}"
            refs.append((tag, summary["mean"], f"{tag}: {report['baselines'][bname]['run']}"))
        for ref, summary in r.get("references", {}).items():
            refs.append((ref, summary["mean"], f"{ref}: {report['references'][ref]}"))
        if not refs:
            refs.append((None, None, "none"))
        for tag, value, label in refs:
            rows.append(BenchRow(f"{base} vs {tag}" if tag else base, p["mean"], value, label, "return/trial", p["ci95"]))
    return rows


def print_report(report: dict, console) -> None:
    """The report as a Rich table."""
    from rich.table import Table

    K = report["episodes_per_trial"]
    t = Table(title=f"{report['algo']} on {report['env']} ({report['backend']}): mean trial return ± 95% CI over "
                    f"{report['tasks']} worlds per split, {K} episodes per trial")
    for col in ("split", "policy", "DR baseline", f"oracle ({report['oracle']['label']})", "policy / oracle",
                "policy / baseline", f"policy ep 1 → ep {K} (paired gain ± 95% CI)"):
        t.add_column(col)
    fmt = lambda s: "—" if s is None else f"{s['mean']:.2f} ± {s['ci95']:.2f}"  # noqa: E731
    fr = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    for split, r in report["splits"].items():
        p = r["policy"]
        t.add_row(split, fmt(p), fmt(r["baseline"]), fmt(r["oracle"]), fr(r["policy_over_oracle"]),
                  fr(r["policy_over_baseline"]),
                  f"{p['first_episode']:.2f} → {p['last_episode']:.2f} "
                  f"({p['adaptation_gain']:+.2f} ± {p['adaptation_gain_ci95']:.2f})")
    for split, why in report.get("unavailable_splits", {}).items():
        t.add_row(split, f"[dim]unavailable: {why}[/dim]", "", "", "", "", "")
    console.print(t)
    for split, r in report["splits"].items():
        if len(r.get("baselines") or {}) > 1:
            console.print(f"{split}, baselines on the same worlds: " + " · ".join(
                f"{name} {fmt(b)}" for name, b in r["baselines"].items()))
        refs = r.get("references") or {}
        if refs:
            console.print(f"{split}, classic strategies on the same worlds: " + " · ".join(
                f"{name} {fmt(s)}" for name, s in refs.items()))
        if r.get("paired"):
            console.print(f"{split}, policy minus each, paired over the same worlds (± 95% CI): " + " · ".join(
                f"{name} {d['policy_minus']:+.2f} ± {d['ci95']:.2f}" for name, d in r["paired"].items()))
            if K > 1:
                console.print(f"{split}, episode {K} alone (after adaptation), policy minus each: " + " · ".join(
                    f"{name} {d['last_episode_minus']:+.2f} ± {d['last_episode_ci95']:.2f}"
                    for name, d in r["paired"].items()))
    if report["oracle"]["kind"] == "unavailable":
        console.print(f"[dim]oracle: {report['oracle']['note']}[/dim]")
    for n in report.get("notes", []):
        console.print(f"[dim]note: {n}[/dim]")


# -- figures ---------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_sweeps(out_dir: Path, series: dict, results: dict, report: dict) -> list[Path]:
    """One ``sweep_<param>.png`` per scalar series: trial return against the parameter's value."""
    plt = _plt()
    paths = []
    used: set[str] = set()
    for name, (rng, values) in series.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        if isinstance(rng, SplitRange):
            for j, (lo, hi) in enumerate(rng.intervals("train")):
                ax.axvspan(lo, hi, color="0.85", zorder=0, label="training range" if j == 0 else None)
        xs_all, ys_all = [], []
        for split, x in values.items():
            c = SPLIT_COLORS.get(split)
            y = results[split]["policy"]["trial_return"]
            ax.scatter(x, y, s=8, alpha=0.5, color=c, marker="o", label=f"policy · {split}", zorder=2)
            if "baseline0" in results[split]:
                ax.scatter(x, results[split]["baseline0"]["trial_return"], s=12, alpha=0.45, color=c, marker="x",
                           label=f"DR baseline · {split}", zorder=2)
            xs_all.append(x)
            ys_all.append(y)
        x, y = np.concatenate(xs_all), np.concatenate(ys_all)
        if np.unique(x).size > 1:  # binned mean of the policy over all splits
            edges = np.unique(np.quantile(x, np.linspace(0, 1, 13)))
            idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
            cx = [x[idx == b].mean() for b in range(len(edges) - 1) if np.any(idx == b)]
            cy = [y[idx == b].mean() for b in range(len(edges) - 1) if np.any(idx == b)]
            ax.plot(cx, cy, color="k", lw=1.5, label="policy, binned mean", zorder=3)
        unit = f" ({rng.unit})" if isinstance(rng, SplitRange) and rng.unit else ""
        ax.set(xlabel=f"{name}{unit}", ylabel="trial return",
               title=f"{report['algo']} on {report['env']}: return vs {name}")
        if not isinstance(rng, SplitRange) and rng:
            ax.text(0.01, 0.01, str(rng), transform=ax.transAxes, fontsize=7, color="0.4", va="bottom")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", markerscale=1.5)
        fig.tight_layout()
        stem = _slug(name)
        while stem in used:
            stem += "_"
        used.add(stem)
        path = out_dir / f"sweep_{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_adaptation(out_dir: Path, report: dict) -> Path:
    """``adaptation.png``: mean return per episode of the trial, per split (policy, baseline, oracle)."""
    plt = _plt()
    K = report["episodes_per_trial"]
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=110)
    ep = np.arange(1, K + 1)
    styles = {"policy": ("-", "o"), "baseline": ("--", "x"), "oracle": (":", None)}
    names = {"policy": "policy", "baseline": "DR baseline", "oracle": f"oracle ({report['oracle']['label']})"}
    for split, r in report["splits"].items():
        c = SPLIT_COLORS.get(split)
        for role, (ls, mk) in styles.items():
            s = r[role]
            if s is None:
                continue
            m, ci = np.asarray(s["episode_means"]), np.asarray(s["episode_ci95"])
            ax.plot(ep, m, ls=ls, marker=mk if K <= 30 else None, ms=4, color=c)
            if role == "policy":
                ax.fill_between(ep, m - ci, m + ci, color=c, alpha=0.15, lw=0)
    ax.set(xlabel="episode within the trial", ylabel="mean episode return (policy: ± 95% CI)",
           title=f"within-trial adaptation: {report['algo']} on {report['env']}")
    if K <= 20:
        ax.set_xticks(ep)
    ax.grid(alpha=0.3)
    # two legends' worth in one: colours are splits, line styles are players
    from matplotlib.lines import Line2D

    first = next(iter(report["splits"].values()))
    handles = [Line2D([], [], color=SPLIT_COLORS.get(s), lw=2, label=s) for s in report["splits"]]
    handles += [Line2D([], [], color="0.3", ls=ls, marker=mk if K <= 30 else None, label=names[role])
                for role, (ls, mk) in styles.items() if first[role] is not None]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = out_dir / "adaptation.png"
    fig.savefig(path)
    plt.close(fig)
    return path
