"""Classic baselines for the pure-JAX meta-RL tasks, scored on the learners' own trial envs.

Bandits: random, greedy, epsilon-greedy, UCB1, Thompson sampling, Gittins index.
Tabular MDPs: random, PSRL, the oracle that knows the MDP.
"""

from meta_rl.baselines.bandit import BanditStrategy, make_strategy
from meta_rl.baselines.gittins import gittins_table
from meta_rl.baselines.mdp import MDPStrategy, finite_horizon_q
from meta_rl.baselines.tuned import tuned, tuned_strategy

__all__ = ["BanditStrategy", "MDPStrategy", "finite_horizon_q", "gittins_table", "make_strategy", "tuned", "tuned_strategy"]
