"""Classic baselines: golden values, what theory says, and the RL² paper's figures."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from meta_rl.baselines import MDPStrategy, finite_horizon_q, gittins_table, make_strategy, tuned_strategy
from meta_rl.evaluate import compiled_run_trials, eval_tasks, mean_ci95
from proteus.bench import PAPER_BANDIT, PAPER_MDP, paper_tolerance
from randomization.sampling import beta_ge1, dirichlet, gamma
from tests.helpers import made


def _score(env_id, strategy, tasks, seed=0):
    env = made(env_id, batch_size=tasks)
    return compiled_run_trials(env)(strategy, eval_tasks(env, tasks), jax.random.key(seed))


def test_gittins_golden_values():
    # Gittins (1989) tables: Beta(1, 1) index is 0.7029 at discount 0.9 and 0.8699 at 0.99
    assert abs(gittins_table(0.9, 10)[1, 1] - 0.7029) < 5e-4
    assert abs(gittins_table(0.99, 100)[1, 1] - 0.8699) < 5e-4
    g = gittins_table(0.95, 40)
    a, b = np.meshgrid(np.arange(1, 20), np.arange(1, 20), indexing="ij")
    idx = g[a, b]
    assert (idx > a / (a + b)).all()  # optimism: index above the posterior mean
    assert (np.diff(idx, axis=0) > 0).all() and (np.diff(idx, axis=1) < 0).all()
    assert gittins_table(0.99, 40)[3, 4] > g[3, 4] > gittins_table(0.5, 40)[3, 4]


def test_finite_horizon_q_golden():
    # 2 states, 2 actions. Action 0 stays, action 1 swaps. State 1 pays 1 for staying, state 0 pays 0.2.
    T = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    R = jnp.array([[0.2, 0.0], [1.0, 0.0]])
    q = np.asarray(finite_horizon_q(T, R, 3))
    # one step to go: Q = R
    np.testing.assert_allclose(q[2], R)
    # two steps: from 0, swap (0) then stay in 1 (1) = 1.0 beats stay twice = 0.4
    np.testing.assert_allclose(q[1], [[0.4, 1.0], [2.0, 0.2]], atol=1e-6)
    # three steps: stay in 0 then best two-step value from 0 = 0.2 + 1.0
    np.testing.assert_allclose(q[0], [[1.2, 2.0], [3.0, 1.0]], atol=1e-6)


def test_samplers_are_exact_in_moments():
    a = jnp.array([0.3, 1.0, 2.5, 40.0])
    x = np.asarray(jax.jit(lambda k: gamma(k, jnp.broadcast_to(a, (100000, 4))))(jax.random.key(0)))
    np.testing.assert_allclose(x.mean(0), a, rtol=0.03)
    np.testing.assert_allclose(x.var(0), a, rtol=0.06)
    b = np.asarray(beta_ge1(jax.random.key(1), jnp.full((100000,), 2.0), jnp.full((100000,), 5.0)))
    assert abs(b.mean() - 2 / 7) < 0.003
    d = np.asarray(dirichlet(jax.random.key(2), jnp.full((50000, 4), 0.1)))
    np.testing.assert_allclose(d.sum(-1), 1.0, atol=1e-5)
    assert abs(d[:, 0].var() - (0.25 * 0.75) / 1.4) < 0.01


def test_mdp_oracle_beats_psrl_beats_random():
    scores = {k: mean_ci95(_score("mdp-s10-a5-n10", MDPStrategy(k), 300).trial_return) for k in ("random", "psrl", "oracle")}
    (r, rci), (p, pci), (o, oci) = scores["random"], scores["psrl"], scores["oracle"]
    assert o - oci > p + pci and p - pci > r + rci, scores


def test_oracle_matches_its_plan_value():
    """The oracle's mean return equals n times the optimal 10-step value from state 0."""
    env = made("mdp-s10-a5-n10", batch_size=400)
    params = eval_tasks(env, 400)
    v0 = finite_horizon_q(params.transition, params.reward_mean, 10)[:, 0, 0].max(-1)
    ret = _score("mdp-s10-a5-n10", MDPStrategy("oracle"), 400).trial_return
    diff = np.asarray(ret - 10 * v0)
    assert abs(diff.mean()) < 3 * diff.std() / np.sqrt(len(diff)) + 0.5


@pytest.mark.parametrize("kind", ["ucb1", "thompson"])
def test_bandit_regret_grows_sublinearly(kind):
    regret = {}
    for n in (10, 100, 500):
        env_id = f"bandit-k5-n{n}"
        env = made(env_id, batch_size=500)
        best = np.asarray(eval_tasks(env, 500).arm_probs).max(-1)
        ret = np.asarray(_score(env_id, tuned_strategy(kind, 5, n), 500).trial_return)
        regret[n] = float((n * best - ret).mean())
    assert regret[10] > 0
    assert regret[100] / regret[10] < 0.5 * 10, regret
    assert regret[500] / regret[100] < 0.5 * 5, regret


@pytest.mark.parametrize("kind", ["thompson", "gittins"])
def test_bandit_baselines_reproduce_rl2_table_1(kind):
    n, k = 100, 10
    mean, ci = mean_ci95(_score(f"bandit-k{k}-n{n}", tuned_strategy(kind, k, n), 2000).trial_return)
    paper = PAPER_BANDIT[(n, k)][kind]
    assert abs(mean - paper) <= paper_tolerance(paper, n, bandit=True), (mean, ci, paper)


def test_psrl_reproduces_rl2_table_2():
    mean, ci = mean_ci95(_score("mdp-s10-a5-n10", MDPStrategy("psrl"), 1000).trial_return)
    paper = PAPER_MDP[10]["psrl"]
    assert abs(mean - paper) <= paper_tolerance(paper, 10, bandit=False), (mean, ci, paper)


def test_baselines_use_the_same_tasks_as_learners():
    a = made("bandit-k5-n10", batch_size=64)
    b = sim.make("bandit-k5-n10", batch_size=64)
    np.testing.assert_array_equal(eval_tasks(a, 64).arm_probs, eval_tasks(b, 64).arm_probs)


def test_strategy_errors_name_the_value():
    with pytest.raises(ValueError, match="unknown bandit strategy 'ucb2'"):
        make_strategy("ucb2", 5, 10)
    with pytest.raises(ValueError, match=r"ucb1 takes hyperparameters \('c', 'prior'\), got \['gamma'\]"):
        make_strategy("ucb1", 5, 10, gamma=0.9)
    with pytest.raises(ValueError, match="epsilon must be in"):
        make_strategy("epsilon_greedy", 5, 10, epsilon=1.5)
    with pytest.raises(ValueError, match="unknown MDP strategy 'qlearning'"):
        MDPStrategy("qlearning")
    with pytest.raises(ValueError, match="gamma must be in"):
        gittins_table(1.0, 10)


@pytest.mark.slow
def test_full_baseline_tables_reproduce_the_paper():
    from proteus.bench import bench_baselines

    rows = bench_baselines()
    assert rows
    from proteus.bench import CHECKED

    for r in rows:
        kind = r.name.split("/")[1].split(" ")[0]
        if kind in CHECKED and r.baseline is not None:
            n = int(r.name.split("-n")[1].split("/")[0]) if r.name.startswith("bandit") else int(r.name.split("-n")[1].split("/")[0])
            assert abs(r.value - r.baseline) <= paper_tolerance(r.baseline, n, r.name.startswith("bandit")), r
