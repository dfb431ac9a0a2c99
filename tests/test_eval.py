"""``proteus eval``: zero-shot evaluation of run folders (:mod:`proteus.evaluation`)."""

import json
import math

import jax
import pytest

from meta_rl.ppo import PPOConfig
from proteus.checkpoint import save_policy
from proteus.evaluation import evaluate_run
from proteus.runs import RunSpec, _policy_meta, build, train_run

BANDIT = "bandit-k5-n10"
K = 10  # episodes (pulls) per trial of bandit-k5-n10
TASKS = 200
RL2 = PPOConfig(total_steps=1280, num_envs=64, num_steps=10, num_minibatches=2, network="gru", hidden=(),
                core_size=16, normalize_obs=False)
PPO = PPOConfig(total_steps=640, num_envs=64, num_steps=10, num_minibatches=2, network="mlp", hidden=(8,),
                normalize_obs=False)


def _ppo_folder(env_id, out):
    """An untrained DR-PPO run folder, config.json + policy/, from the pieces ``train_run`` uses
    (no PPO compile)."""
    spec = RunSpec("ppo", env_id, "auto", 0, PPO)
    trainer = build(spec)
    ts = trainer.init(jax.random.key(spec.seed))
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(spec.to_json(), indent=2))
    save_policy(out / "policy", spec.learner.policy_spec(spec.config, trainer.env), trainer.agent_params(ts),
                _policy_meta(spec, trainer))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_runs")
    train_run(RunSpec("rl2", BANDIT, "auto", 0, RL2), root / "rl2", progress=False)
    _ppo_folder(BANDIT, root / "ppo")
    _ppo_folder("point-goal", root / "point")
    return root


@pytest.fixture(scope="module")
def bandit_report(runs):
    report = evaluate_run(runs / "rl2", tasks=TASKS, baseline_run=runs / "ppo", json_path=runs / "rows.json",
                          progress=False)
    return report


def test_report_has_every_split_with_baseline_and_gittins_oracle(runs, bandit_report):
    on_disk = json.loads((runs / "rl2" / "eval" / "report.json").read_text())
    assert on_disk == bandit_report
    r = bandit_report
    assert r["env"] == BANDIT and r["algo"] == "rl2" and r["tasks"] == TASKS and r["episodes_per_trial"] == K
    assert r["policy"]["deterministic"] is False  # discrete actions are sampled by default
    assert r["oracle"]["kind"] == "known" and r["oracle"]["label"].startswith("gittins")
    assert r["baseline"]["run"] == str(runs / "ppo")
    assert set(r["references"]) == {"ucb1", "thompson"} and r["references"]["ucb1"].startswith("ucb1")
    assert list(r["splits"]) == ["train", "interp", "extrap"]
    for split, row in r["splits"].items():
        for role in ("policy", "baseline", "oracle"):
            s = row[role]
            assert math.isfinite(s["mean"]) and math.isfinite(s["ci95"]) and s["ci95"] > 0, (split, role)
            assert 0 <= s["mean"] <= K
        for k in ("policy_over_oracle", "policy_over_baseline", "full_information_bound"):
            assert math.isfinite(row[k]), (split, k)
        # UCB1 and Thompson sampling play the same worlds; every difference is paired per world
        assert set(row["references"]) == {"ucb1", "thompson"}
        assert set(row["paired"]) == {"oracle", "baseline", "ucb1", "thompson"}
        for other, d in row["paired"].items():
            ref = row["references"][other] if other in row["references"] else row[other]
            assert d["policy_minus"] == pytest.approx(row["policy"]["mean"] - ref["mean"], abs=1e-9)
            assert 0 <= d["ci95"] < 2 * K, (split, other, d)  # 0 where both play alike on every world
        # Gittins beats a barely trained policy, and nothing beats knowing the arms
        assert row["oracle"]["mean"] > row["policy"]["mean"]
        assert row["oracle"]["mean"] <= row["full_information_bound"] + 3 * row["oracle"]["ci95"]
    # extrapolation (arm probabilities U[0, 0.5]) pays less than training (U[0, 1])
    assert r["splits"]["extrap"]["oracle"]["mean"] < r["splits"]["train"]["oracle"]["mean"]


def test_per_episode_returns_have_one_entry_per_episode(bandit_report):
    for row in bandit_report["splits"].values():
        for role in ("policy", "baseline", "oracle"):
            s = row[role]
            assert len(s["episode_means"]) == len(s["episode_ci95"]) == K
            assert all(0 <= m <= 1 for m in s["episode_means"])  # one Bernoulli pull per episode
            assert sum(s["episode_means"]) == pytest.approx(s["mean"], abs=1e-6)
            assert s["first_episode"] == s["episode_means"][0] and s["last_episode"] == s["episode_means"][-1]
            # the paired gain's mean is the difference of the means; its CI is a real interval
            assert s["adaptation_gain"] == pytest.approx(s["last_episode"] - s["first_episode"], abs=1e-9)
            assert 0 <= s["adaptation_gain_ci95"] < 1


def test_figures_are_written(runs, bandit_report):
    figs = bandit_report["figures"]
    assert "adaptation.png" in figs
    assert {f"sweep_arm_probs_{i}.png" for i in range(5)} <= set(figs)  # a vector parameter: one sweep per arm
    for f in figs:
        path = runs / "rl2" / "eval" / f
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f


def test_json_rows_in_bench_style(runs, bandit_report):
    data = json.loads((runs / "rows.json").read_text())
    rows = data["rows"]
    assert len(rows) == 12  # 3 splits x (vs oracle, vs DR baseline, vs UCB1, vs Thompson sampling)
    for row in rows:
        assert {"name", "value", "baseline", "baseline_name", "ratio", "ci95", "unit"} <= set(row)
        assert row["ratio"] == pytest.approx(row["value"] / row["baseline"])
    train = bandit_report["splits"]["train"]
    vs_oracle = next(r for r in rows if "train" in r["name"] and r["name"].endswith("vs oracle"))
    assert vs_oracle["value"] == train["policy"]["mean"] and vs_oracle["baseline"] == train["oracle"]["mean"]


def test_an_existing_report_is_never_overwritten_silently(runs, bandit_report):
    path = runs / "rl2" / "eval" / "report.json"
    before = path.read_text()
    with pytest.raises(FileExistsError, match=r"report\.json.*--overwrite"):
        evaluate_run(runs / "rl2", tasks=TASKS, progress=False)
    assert path.read_text() == before


def test_evaluating_twice_gives_identical_numbers(runs, bandit_report):
    again = evaluate_run(runs / "rl2", tasks=TASKS, baseline_run=runs / "ppo", json_path=runs / "rows.json",
                         overwrite=True, progress=False)
    assert again["splits"] == bandit_report["splits"]


def test_baseline_on_another_env_is_refused(runs):
    with pytest.raises(ValueError, match=r"baseline run .*point.* is on 'point-goal'.*'bandit-k5-n10'"):
        evaluate_run(runs / "rl2", tasks=TASKS, baseline_run=runs / "point", overwrite=True, progress=False)
    with pytest.raises(ValueError, match=r"oracle run .*is on 'point-goal'"):
        evaluate_run(runs / "rl2", tasks=TASKS, oracle_run=runs / "point", overwrite=True, progress=False)


def test_missing_or_corrupt_run_folders_name_the_path(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_run(tmp_path / "nope", progress=False)
    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_run(runs / "rl2", baseline_run=tmp_path / "nope", overwrite=True, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*config\.json"):
        evaluate_run(tmp_path / "empty", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"corrupt .*bad.*config\.json"):
        evaluate_run(bad, progress=False)
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.json").write_text((runs / "rl2" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"untrained.*policy.*spec\.json"):
        evaluate_run(untrained, progress=False)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        evaluate_run(runs / "rl2", splits=("test",), overwrite=True, progress=False)


def test_continuous_policy_against_the_exact_point_goal_optimum(runs):
    report = evaluate_run(runs / "point", tasks=32, splits=("train", "extrap"), progress=False)
    assert report["policy"]["deterministic"] is True  # continuous actions: the mode by default
    assert report["baseline"] is None and report["oracle"]["kind"] == "known"
    assert list(report["splits"]) == ["train", "extrap"]
    for row in report["splits"].values():
        assert len(row["policy"]["episode_means"]) == 2
        assert row["baseline"] is None and row["policy_over_baseline"] is None
        # an untrained policy barely moves; the optimum reaches any goal (radius <= 0.5) within 5 steps
        # of at most 0.1 per axis, losing at most 0.4 + 0.3 + 0.2 + 0.1 = 1.0 per episode
        assert row["oracle"]["mean"] > row["policy"]["mean"]
        assert -2.0 <= row["oracle"]["mean"] < 0
    assert set(report["parameters"]) == {"goal_radius", "goal_angle_deg"}
    assert report["parameters"]["goal_angle_deg"]["train"] == [[0.0, 150.0], [180.0, 300.0]]
    for f in ("sweep_goal_radius.png", "sweep_goal_angle_deg.png", "adaptation.png"):
        assert (runs / "point" / "eval" / f).is_file()
    assert any("negative" in n for n in report["notes"])


def test_cli_actions_flag_chooses_mode_or_samples(runs, tmp_path):
    import shutil

    from proteus.cli import Eval

    run = tmp_path / "point"
    shutil.copytree(runs / "point", run, ignore=shutil.ignore_patterns("eval"))
    modes = {}
    for actions in ("mode", "sample"):
        Eval(run, split=("train",), tasks=16, actions=actions, overwrite=True).run()
        report = json.loads((run / "eval" / "report.json").read_text())
        modes[actions] = report
    assert modes["mode"]["policy"]["deterministic"] is True
    assert modes["sample"]["policy"]["deterministic"] is False
    # the untrained policy's Gaussian (std e^-0.5) moves the point where its mean does not
    assert modes["mode"]["splits"]["train"]["policy"]["mean"] != modes["sample"]["splits"]["train"]["policy"]["mean"]


def test_several_baselines_are_each_paired_on_the_same_worlds(runs, tmp_path):
    other = _ppo_folder(BANDIT, tmp_path / "ppo-b")
    r = evaluate_run(runs / "rl2", tasks=TASKS, splits=("train",), baseline_run=[runs / "ppo", other],
                     overwrite=True, progress=False)
    row = r["splits"]["train"]
    assert list(r["baselines"]) == ["ppo", "ppo-b"] and r["baseline"]["run"] == str(runs / "ppo")
    assert set(row["baselines"]) == {"ppo", "ppo-b"} and row["baseline"] == row["baselines"]["ppo"]
    assert {"baseline", "baseline ppo-b"} <= set(row["paired"])
    # the same untrained policy twice: the same returns world by world
    assert row["baselines"]["ppo"]["mean"] == row["baselines"]["ppo-b"]["mean"]
    assert row["paired"]["baseline ppo-b"]["policy_minus"] == pytest.approx(row["paired"]["baseline"]["policy_minus"])


@pytest.fixture(scope="module")
def memory_evals(runs, tmp_path_factory):
    """Copies of the RL² and PPO runs (other tests of this module rewrite ``runs``'s eval folders, on
    whichever worker they land), scored on train with and without ``reset_memory``."""
    import shutil

    root = tmp_path_factory.mktemp("memory_evals")
    for name in ("rl2", "ppo"):
        shutil.copytree(runs / name, root / name, ignore=shutil.ignore_patterns("eval*"))
    kept = evaluate_run(root / "rl2", splits="train", tasks=TASKS, baseline_run=root / "ppo", progress=False)
    fresh = evaluate_run(root / "rl2", splits="train", tasks=TASKS, baseline_run=root / "ppo", reset_memory=True,
                         progress=False)
    return root, kept, fresh


def test_reset_memory_forgets_between_episodes_and_leaves_stateless_policies_alone(memory_evals):
    import numpy as np

    from meta_rl.agent import ForgetfulAgent
    from meta_rl.evaluate import compiled_run_trials, eval_tasks
    from proteus.evaluation import _agent, _load, eval_env

    root, _, report = memory_evals
    assert report["reset_memory"] is True and any("--reset-memory" in n for n in report["notes"])
    fresh = np.load(root / "rl2" / "eval-reset-memory" / "returns.npz")
    kept = np.load(root / "rl2" / "eval" / "returns.npz")
    # the feed-forward baseline has no state: the same worlds and streams give the same returns
    np.testing.assert_array_equal(fresh["train/ppo"], kept["train/ppo"])
    # RL² acting on its mode: the first pull is the same, the rest of the trial is not (its carry is forgotten)
    agent, _ = _agent(_load(root / "rl2", "policy"), True)
    env = eval_env(BANDIT, "jax", TASKS, None)
    params, run = eval_tasks(env, TASKS, "train"), compiled_run_trials(env)
    a = np.asarray(run(agent, params, jax.random.key(0)).episode_returns)
    b = np.asarray(run(ForgetfulAgent(agent), params, jax.random.key(0)).episode_returns)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    assert not np.array_equal(a, b)
    # the wrapper puts the carry back to the initial state, batched
    state = jax.tree.map(lambda x: x + 1.0, agent.initial_state(3))
    for x, y in zip(jax.tree.leaves(ForgetfulAgent(agent).end_episode(state)), jax.tree.leaves(agent.initial_state(3))):
        np.testing.assert_array_equal(x, y)


def test_episode_scripts_ablate_the_boundary_and_split_gains_by_parameter(memory_evals, capsys):
    """scripts/episode_boundary_ablation.py: four rows on the evaluation's worlds, the fresh start a
    control; scripts/episode_gain_by_param.py: the gain per parameter bin, refusing an unknown name."""
    import importlib.util
    import sys
    from pathlib import Path

    def script(name):
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    root = memory_evals[0]
    assert script("episode_boundary_ablation").main([str(root / "rl2"), "--split", "train", "--tasks", "50"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") == 5 and "| nothing (fresh start, the control) |" in out
    gain = script("episode_gain_by_param")
    assert gain.main([str(root / "rl2" / "eval"), "--param", "arm_probs", "--split", "train", "--bins", "2"]) == 0
    out = capsys.readouterr().out
    assert "policy: ep 1 → ep 2" in out and out.count("\n| [") == 2
    assert gain.main([str(root / "rl2" / "eval"), "--param", "nope", "--split", "train"]) == 2
    assert "no parameter 'nope'" in capsys.readouterr().err
