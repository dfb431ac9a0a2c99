"""Meta-RL: evaluation over shared task sets and the classic baselines (learners build on these)."""
