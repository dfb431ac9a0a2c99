"""What a recurrent (RL²) policy takes across the episode boundary, ablated piece by piece.

    python scripts/episode_boundary_ablation.py RUN [--split extrap] [--tasks 1024] [--actions auto]

Scores the run's policy on the evaluation's worlds and random streams (``proteus eval``'s) in four
ways and prints episode 1, episode 2 and their paired difference for each:

* as trained: the carry runs through the trial, and episode 2's first observation holds episode 1's
  last action and reward and the done flag (the RL² inputs);
* carry reset: the carry is put back to its initial state at the boundary (``proteus eval
  --reset-memory``); the inputs are kept;
* carry reset, last action and reward blanked: as above, with episode 2's first ``prev_action`` and
  ``prev_reward`` zeroed (the done flag kept);
* fresh start: carry reset and every RL² input of that first observation zeroed, as at a trial start.

The fresh start is a control: its episode 2 is an episode 1 in a fresh draw, so its difference must
hold 0. The other rows locate a gain or a loss in the carry, in the boundary's inputs, or in neither.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from meta_rl.agent import Agent, ForgetfulAgent


@struct.dataclass
class BoundaryBlanked(Agent):
    """``agent`` with its carry reset at every episode end and the ``mask`` elements of the next
    episode's first observation zeroed."""

    agent: Any
    mask: Any  # [D] bool: the observation elements zeroed at an episode's first step

    def initial_state(self, batch: int):
        return {"inner": self.agent.initial_state(batch), "fresh": jnp.zeros((batch,), bool)}

    def init(self, key, world):
        batch = jax.tree.leaves(world)[0].shape[0]
        return {"inner": self.agent.init(key, world), "fresh": jnp.zeros((batch,), bool)}

    def act(self, state, obs, key):
        obs = jnp.where(state["fresh"][:, None] & self.mask, 0.0, obs)
        action, inner = self.agent.act(state["inner"], obs, key)
        return action, {"inner": inner, "fresh": jnp.zeros_like(state["fresh"])}

    def end_episode(self, state):
        return {"inner": self.agent.initial_state(state["fresh"].shape[0]), "fresh": jnp.ones_like(state["fresh"])}

    def policy_step(self, state, obs):
        raise TypeError("BoundaryBlanked is an evaluation ablation, not an exportable policy")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--split", default="extrap")
    ap.add_argument("--tasks", type=int, default=None, help="worlds (default: proteus eval's)")
    ap.add_argument("--actions", choices=("auto", "mode", "sample"), default="auto")
    a = ap.parse_args(argv)

    from meta_rl.evaluate import EVAL_SEED, compiled_run_trials, eval_tasks
    from proteus.evaluation import _agent, _load, default_tasks, eval_env
    from randomization.ranges import SPLITS, check_split

    split = check_split(a.split)
    loaded = _load(a.run_dir, "policy")
    env_id, backend = loaded["cfg"]["env"], loaded["cfg"]["backend"]
    import sim

    backend = sim.entry(env_id).backends[0] if backend == "auto" else backend
    tasks = default_tasks(env_id) if a.tasks is None else a.tasks
    agent, _ = _agent(loaded, {"auto": None, "mode": True, "sample": False}[a.actions])
    env = eval_env(env_id, backend, tasks, None)
    if env.episodes_per_trial < 2:
        print(f"{env_id} has one episode per trial: there is no boundary to ablate", file=sys.stderr)
        return 2
    names = env.observation_space.names
    rl2 = jnp.asarray([n.startswith(("prev_action", "prev_reward", "prev_done")) for n in names])
    last = jnp.asarray([n.startswith(("prev_action", "prev_reward")) for n in names])
    if not bool(rl2.any()):
        print(f"{a.run_dir}'s env observation has no RL² inputs (prev_action, prev_reward, prev_done)", file=sys.stderr)
        return 2
    params = eval_tasks(env, tasks, split)
    key = jax.random.fold_in(jax.random.key(EVAL_SEED), SPLITS.index(split))
    run = compiled_run_trials(env)
    print(f"{a.run_dir} on {env_id} {split}, {tasks} worlds, paired\n")
    print("| episode 2 starts with | episode 1 | episode 2 | episode 2 − episode 1 |")
    print("|---|---|---|---|")
    for label, player in (("everything (as trained)", agent), ("carry reset", ForgetfulAgent(agent)),
                          ("carry reset, last action and reward blanked", BoundaryBlanked(agent, last)),
                          ("nothing (fresh start, the control)", BoundaryBlanked(agent, rl2))):
        r = np.asarray(jax.device_get(run(player, params, key).episode_returns), np.float64)
        g = r[:, 1] - r[:, 0]
        print(f"| {label} | {r[:, 0].mean():.2f} | {r[:, 1].mean():.2f} | "
              f"{g.mean():+.2f} ± {1.96 * g.std(ddof=1) / np.sqrt(len(g)):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
