"""A discrete-action 2-D grid maze, for value-based learners (MFEC, NEC, DQN) and PPO.

One fixed 9x9 maze (:data:`LAYOUT`) with one fixed goal ``G`` at row 4, column 5. Walls are ``#``;
the agent starts somewhere in column 1, a dead-end corridor along the left wall that opens at the
top (``t``, ``i``, ``e`` mark the start rows of the three splits, see below)::

          col 0 1 2 3 4 5 6 7 8
      row 0   # # # # # # # # #
          1   # t . . . . . . #
          2   # t # # # # # . #
          3   # i # . . . # . #
          4   # t # . # G # . #
          5   # t # . # . # . #
          6   # e # . # . . . #
          7   # e # . . . . . #
          8   # # # # # # # # #

The goal is four cells from the corridor as the crow flies, but walled off: every route runs up the
corridor, along row 1, down column 7 and back in along row 6 (or row 7 and up column 3 to enter from
above). Shortest paths from the start cells (row ``r``, column 1) are ``14 + r`` steps: 15, 16, 18,
19 (training rows 1, 2, 4, 5), 17 (interp row 3), 20, 21 (extrap rows 6, 7), against Manhattan
distances of 4 to 7.

* Actions: :data:`ACTIONS` (up, down, left, right), one cell per step; a move into a wall leaves the
  agent where it is.
* Observation: the agent's ``(row, col)``, each divided by the grid size minus one (so in [0, 1]).
  The maze and the goal are fixed, so the position alone is Markov.
* Reward: :data:`GOAL_REWARD` (+1) on the step that enters the goal, which ends the episode
  (``terminated``); :data:`STEP_REWARD` (-0.01) on every other step. Episodes are cut after 100
  steps (``truncated``, never together with ``terminated``).
* Slip: with probability ``slip`` (a world parameter) the executed move is replaced by one drawn
  uniformly from the four (possibly the intended one). The draws come from ``state.key``, so a
  rollout is a deterministic function of its keys.

A world (:class:`MazeParams`) is the start row and the slip probability, drawn per split with
:class:`randomization.ranges.SplitRange`:

* ``start_row`` (column 1; a ``discrete`` range: the integer part of a uniform draw): ``train`` rows
  1, 2, 4, 5; ``interp`` row 3, between training starts (and on the optimal path from rows 4 and 5);
  ``extrap`` rows 6, 7, below every training start, in the dead end no optimal training path enters;
* ``slip``: ``train`` [0, 0.1] minus (0.04, 0.06); ``interp`` (0.04, 0.06); ``extrap`` (0.1, 0.2],
  slipperier than anything trained on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from randomization.ranges import SPLITS, SplitRange, check_split
from sim.core import Box, Discrete, Env, new_state

WALL, OPEN, GOAL_MARK = "#", ".", "G"
LAYOUT: tuple[str, ...] = (
    "#########",
    "#.......#",
    "#.#####.#",
    "#.#...#.#",
    "#.#.#G#.#",
    "#.#.#.#.#",
    "#.#.#...#",
    "#.#.....#",
    "#########",
)
"""The maze, row 0 at the top: ``#`` wall, ``.`` open, ``G`` the goal (open)."""

ACTIONS: tuple[str, ...] = ("up", "down", "left", "right")
MOVES: dict[str, tuple[int, int]] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
"""``(d_row, d_col)`` of each action; row 0 is the top of :data:`LAYOUT`."""

START_COL = 1
"""The start cells are ``(start_row, START_COL)``, rows ``START_ROWS[0]..START_ROWS[1]`` (inclusive)."""
START_ROWS = (1, 7)
GOAL_REWARD = 1.0
STEP_REWARD = -0.01
EPISODE_LENGTH = 100


def _parse(layout: tuple[str, ...]) -> tuple[np.ndarray, tuple[int, int]]:
    """``(walls [H, W] bool, goal (row, col))``, after checking the layout is a walled rectangle with
    one goal and an open start column."""
    width = len(layout[0])
    if any(len(row) != width for row in layout):
        raise ValueError(f"maze layout rows must all have {width} cells")
    if set("".join(layout)) - {WALL, OPEN, GOAL_MARK}:
        raise ValueError(f"maze layout may only use {WALL!r}, {OPEN!r} and {GOAL_MARK!r}")
    walls = np.array([[ch == WALL for ch in row] for row in layout])
    if not (walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()):
        raise ValueError("maze layout must be enclosed by walls (moves never leave the grid)")
    goals = [(r, c) for r, row in enumerate(layout) for c, ch in enumerate(row) if ch == GOAL_MARK]
    if len(goals) != 1:
        raise ValueError(f"maze layout needs exactly one goal {GOAL_MARK!r}, found {len(goals)}")
    if walls[START_ROWS[0] : START_ROWS[1] + 1, START_COL].any():
        raise ValueError(f"maze start cells (rows {START_ROWS}, column {START_COL}) must be open")
    return walls, goals[0]


WALLS, GOAL = _parse(LAYOUT)
HEIGHT, WIDTH = WALLS.shape


@struct.dataclass
class MazeParams:
    start_row: jax.Array  # int32: the episode starts in cell (start_row, START_COL)
    slip: jax.Array  # float32: probability that the executed move is a uniformly random one


class Maze(Env):
    """The maze of the module docstring (``sim.make("maze-discrete")``)."""

    family = "maze"

    def __init__(self, episode_length: int = EPISODE_LENGTH):
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.id = "maze-discrete"
        self.episode_length = int(episode_length)
        self.observation_space = Box(names=("row", "col"), low=0.0, high=1.0)
        self.action_space = Discrete(names=ACTIONS)
        self.ranges = {
            "start_row": SplitRange("start_row", train=(1.0, 6.0), interp=(3.0, 4.0), extrap=((6.0, 8.0),),
                                    dist="discrete"),
            "slip": SplitRange("slip", train=(0.0, 0.1), interp=(0.04, 0.06), extrap=((0.1, 0.2),)),
        }

    # -- worlds ---------------------------------------------------------------------------------
    def default_ranges(self):
        """The ranges as data: name -> :meth:`SplitRange.bounds`."""
        return {n: r.bounds() for n, r in self.ranges.items()}

    def sample_params(self, key, split="train", ranges=None):
        check_split(split)
        k_row, k_slip = jax.random.split(key)

        def draw(name, k):
            return self.ranges[name].sample(k, split, (), None if ranges is None else ranges[name])

        row, slip = draw("start_row", k_row), draw("slip", k_slip)
        # moved bounds (guided randomization) may reach past the corridor or [0, 1]: clip to valid worlds
        return MazeParams(start_row=jnp.clip(row, *START_ROWS).astype(jnp.int32), slip=jnp.clip(slip, 0.0, 1.0))

    def param_values(self, params: MazeParams) -> dict[str, jax.Array]:
        """The named parameters of a world (any batch shape)."""
        return {"start_row": params.start_row, "slip": params.slip}

    def param_ranges(self):
        return dict(self.ranges)

    def split_description(self):
        def rows(split):  # the integer rows a discrete range draws in a split
            ivs = self.ranges["start_row"].intervals(split)
            return ", ".join(str(r) for lo, hi in ivs for r in range(int(np.floor(lo)), int(np.ceil(hi))))

        slip = self.ranges["slip"].describe()
        return {split: f"start_row {rows(split)} (column {START_COL}) · slip {slip[split]}" for split in SPLITS}

    # -- dynamics -------------------------------------------------------------------------------
    @staticmethod
    def _obs(pos: jax.Array) -> jax.Array:
        return pos.astype(jnp.float32) / jnp.asarray([HEIGHT - 1, WIDTH - 1], jnp.float32)

    def reset(self, key, params):
        row = jnp.clip(params.start_row, *START_ROWS).astype(jnp.int32)
        pos = jnp.stack([row, jnp.asarray(START_COL, jnp.int32)])
        env_state = {"pos": pos, "t": jnp.zeros((), jnp.int32)}
        return new_state(self._obs(pos), params, env_state, key)

    def step(self, state, action):
        action = self.check_action(action)
        key, k_slip, k_move = jax.random.split(state.key, 3)
        slipped = jax.random.uniform(k_slip) < state.params.slip
        executed = jnp.where(slipped, self.action_space.sample(k_move), action)
        moves = jnp.asarray([MOVES[a] for a in ACTIONS], jnp.int32)
        pos = state.env_state["pos"]
        target = pos + moves[executed]
        pos = jnp.where(jnp.asarray(WALLS)[target[0], target[1]], pos, target)
        t = state.env_state["t"] + 1
        at_goal = jnp.all(pos == jnp.asarray(GOAL, jnp.int32))
        return state.replace(
            obs=self._obs(pos),
            reward=jnp.where(at_goal, GOAL_REWARD, STEP_REWARD).astype(jnp.float32),
            terminated=at_goal,
            truncated=(t >= self.episode_length) & ~at_goal,
            env_state={"pos": pos, "t": t},
            key=key,
        )
