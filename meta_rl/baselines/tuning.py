"""Hyperparameter tuning of the bandit baselines on tuning tasks disjoint from the evaluation tasks.

Duan et al. tuned their baselines' hyperparameters (the Gittins discount, UCB1's exploration constant
and prior counts). Here every (k, n) setting is tuned by grid search: each candidate runs one trial on
``num_tasks`` bandits drawn with :data:`meta_rl.evaluate.TUNE_SEED` (never the evaluation seed), all
candidates on the same tasks and the same random stream, and the best mean trial return wins.
The chosen values are stored in :mod:`meta_rl.baselines.tuned`; ``proteus bench baselines --tune``
reruns this search.
"""

from __future__ import annotations

import itertools
from typing import Callable

import jax

import sim
from meta_rl.baselines.bandit import make_strategy
from meta_rl.evaluate import TUNE_SEED, compiled_run_trials, eval_tasks

GRIDS: dict[str, list[dict[str, float]]] = {
    "epsilon_greedy": [{"epsilon": e} for e in (0.01, 0.02, 0.05, 0.1, 0.2)],  # eps = 0 is "greedy"
    "ucb1": [
        {"c": c, "prior": p}
        for c, p in itertools.product((0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0), (0.0, 0.5, 1.0, 2.0))
    ],
    "gittins": [{"gamma": g} for g in (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)],
}


def tune_bandit(
    num_arms: int, pulls: int, num_tasks: int = 2000, on_candidate: Callable[[], None] | None = None
) -> dict[str, dict[str, float]]:
    """Best hyperparameters per tuned strategy for ``bandit-k{num_arms}-n{pulls}``."""
    env = sim.make(f"bandit-k{num_arms}-n{pulls}", batch_size=num_tasks)
    params = eval_tasks(env, num_tasks, seed=TUNE_SEED)
    run = compiled_run_trials(env)
    key = jax.random.key(TUNE_SEED)
    best = {}
    for kind, grid in GRIDS.items():
        scores = []
        for hp in grid:
            ret = run(make_strategy(kind, num_arms, pulls, **hp), params, key).trial_return
            scores.append(float(ret.mean()))
            if on_candidate:
                on_candidate()
        best[kind] = grid[max(range(len(grid)), key=scores.__getitem__)]
    return best


def num_candidates() -> int:
    return sum(len(g) for g in GRIDS.values())
