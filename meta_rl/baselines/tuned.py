"""Tuned bandit-baseline hyperparameters, per (k arms, n pulls).

Produced by :func:`meta_rl.baselines.tuning.tune_bandit` (2000 tuning bandits per setting, seed
``TUNE_SEED``, disjoint from the evaluation tasks); ``proteus bench baselines --tune`` reruns it.
"""

from meta_rl.baselines.bandit import make_strategy

BANDIT_TUNED: dict[tuple[int, int], dict[str, dict[str, float]]] = {
    (5, 10): {"epsilon_greedy": {"epsilon": 0.01}, "ucb1": {"c": 0.1, "prior": 1.0}, "gittins": {"gamma": 0.8}},
    (5, 100): {"epsilon_greedy": {"epsilon": 0.01}, "ucb1": {"c": 0.2, "prior": 1.0}, "gittins": {"gamma": 0.98}},
    (5, 500): {"epsilon_greedy": {"epsilon": 0.05}, "ucb1": {"c": 0.3, "prior": 2.0}, "gittins": {"gamma": 0.995}},
    (10, 10): {"epsilon_greedy": {"epsilon": 0.01}, "ucb1": {"c": 0.1, "prior": 1.0}, "gittins": {"gamma": 0.8}},
    (10, 100): {"epsilon_greedy": {"epsilon": 0.01}, "ucb1": {"c": 0.2, "prior": 1.0}, "gittins": {"gamma": 0.99}},
    (10, 500): {"epsilon_greedy": {"epsilon": 0.05}, "ucb1": {"c": 0.2, "prior": 1.0}, "gittins": {"gamma": 0.995}},
    (50, 10): {"epsilon_greedy": {"epsilon": 0.01}, "ucb1": {"c": 0.02, "prior": 0.5}, "gittins": {"gamma": 0.5}},
    (50, 100): {"epsilon_greedy": {"epsilon": 0.02}, "ucb1": {"c": 0.15, "prior": 1.0}, "gittins": {"gamma": 0.98}},
    (50, 500): {"epsilon_greedy": {"epsilon": 0.05}, "ucb1": {"c": 0.2, "prior": 1.0}, "gittins": {"gamma": 0.995}},
}


def tuned(num_arms: int, pulls: int, kind: str) -> dict[str, float]:
    """Tuned hyperparameters of ``kind`` for a setting ({} for untuned kinds or unknown settings)."""
    return dict(BANDIT_TUNED.get((num_arms, pulls), {}).get(kind, {}))


def tuned_strategy(kind: str, num_arms: int, pulls: int):
    """The bandit strategy ``kind`` with its tuned hyperparameters for ``num_arms`` and ``pulls``."""
    return make_strategy(kind, num_arms, pulls, **tuned(num_arms, pulls, kind))
