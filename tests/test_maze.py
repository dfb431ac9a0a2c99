"""The discrete grid maze (``maze-discrete``, :mod:`sim.tasks.maze`): walls, goal, time limit, slip,
splits, and shortest paths checked against a plain-Python BFS over the layout."""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from sim.tasks import maze
from sim.wrappers import MODES

ENV = maze.Maze()
UP, DOWN, LEFT, RIGHT = (maze.ACTIONS.index(a) for a in ("up", "down", "left", "right"))
START_CELLS = [(r, maze.START_COL) for r in range(maze.START_ROWS[0], maze.START_ROWS[1] + 1)]
step = jax.jit(ENV.step)


# -- a plain-Python model of the layout ---------------------------------------------------------------
def is_open(cell) -> bool:
    return maze.LAYOUT[cell[0]][cell[1]] != "#"


def moved(cell, action: str):
    """Where ``action`` takes the agent from ``cell`` (a wall leaves it in place)."""
    target = (cell[0] + maze.MOVES[action][0], cell[1] + maze.MOVES[action][1])
    return target if is_open(target) else cell


def open_cells():
    return [(r, c) for r in range(len(maze.LAYOUT)) for c in range(len(maze.LAYOUT[0])) if is_open((r, c))]


def bfs_distances() -> dict:
    """Steps from every open cell to the goal."""
    dist, queue = {maze.GOAL: 0}, deque([maze.GOAL])
    while queue:
        cell = queue.popleft()
        for a in maze.ACTIONS:
            n = moved(cell, a)
            if n not in dist:
                dist[n] = dist[cell] + 1
                queue.append(n)
    return dist


def params(start_row=1, slip=0.0) -> maze.MazeParams:
    return maze.MazeParams(start_row=jnp.int32(start_row), slip=jnp.float32(slip))


def placed(cell, t=0, slip=0.0, key=0):
    """A state with the agent at ``cell`` after ``t`` steps."""
    s = ENV.reset(jax.random.key(key), params(slip=slip))
    return s.replace(env_state={"pos": jnp.asarray(cell, jnp.int32), "t": jnp.int32(t)})


def cell_of(pos) -> tuple[int, int]:
    return tuple(int(v) for v in pos)


# -- tests ------------------------------------------------------------------------------------------
def test_registered_with_named_spaces_and_start_observation():
    assert "maze-discrete" in sim.registered()
    env = sim.make("maze-discrete", mode="fresh").unwrapped
    assert env.family == "maze" and env.episode_length == 100
    assert env.action_space.names == ("up", "down", "left", "right")
    assert env.observation_space.names == ("row", "col")
    s = ENV.reset(jax.random.key(0), params(start_row=4))
    assert s.obs.dtype == jnp.float32
    np.testing.assert_allclose(s.obs, [4 / 8, maze.START_COL / 8])
    assert is_open(maze.GOAL) and all(is_open(c) for c in START_CELLS)


def test_every_move_from_every_cell_matches_the_layout():
    """Under slip 0 each action moves one cell, and a wall leaves the agent in place."""
    cells = open_cells()
    pairs = [(c, a) for c in cells for a in maze.ACTIONS]
    base = placed(cells[0])
    move = jax.jit(jax.vmap(lambda pos, a: ENV.step(base.replace(env_state={"pos": pos, "t": jnp.int32(0)}), a)))
    out = np.asarray(move(jnp.asarray([c for c, _ in pairs], jnp.int32),
                          jnp.asarray([maze.ACTIONS.index(a) for _, a in pairs], jnp.int32)).env_state["pos"])
    assert [tuple(p) for p in out.tolist()] == [moved(c, a) for c, a in pairs]
    # a few by hand: the corner above the corridor, and a wall inside the maze
    assert cell_of(step(placed((1, 1)), UP).env_state["pos"]) == (1, 1)
    assert cell_of(step(placed((1, 1)), LEFT).env_state["pos"]) == (1, 1)
    assert cell_of(step(placed((2, 1)), RIGHT).env_state["pos"]) == (2, 1)
    assert cell_of(step(placed((1, 1)), RIGHT).env_state["pos"]) == (1, 2)


def test_reaching_the_goal_pays_one_and_terminates():
    for cell, action in (((5, 5), UP), ((3, 5), DOWN)):
        s = step(placed(cell), action)
        assert cell_of(s.env_state["pos"]) == maze.GOAL
        assert float(s.reward) == maze.GOAL_REWARD and bool(s.terminated) and not bool(s.truncated)
    s = step(placed((6, 5)), UP)  # one step short of the goal
    assert float(s.reward) == pytest.approx(maze.STEP_REWARD) and not bool(s.terminated)
    # reaching the goal on the last allowed step is terminal, not a time limit
    s = step(placed((5, 5), t=99), UP)
    assert bool(s.terminated) and not bool(s.truncated)


def test_time_limit_truncates_and_never_terminates():
    def run(state):
        def body(s, _):
            s = ENV.step(s, jnp.int32(UP))
            return s, (s.reward, s.terminated, s.truncated)

        return jax.lax.scan(body, state, None, length=101)[1]

    s0 = ENV.reset(jax.random.key(0), params(start_row=1))  # up is a wall: the agent stays put
    reward, terminated, truncated = (np.asarray(x) for x in jax.jit(run)(s0))
    # entry i is the state after step i + 1: step 100 is cut (and so is any step past it without a reset)
    assert not terminated.any()
    assert np.flatnonzero(truncated).tolist() == [99, 100]
    np.testing.assert_allclose(reward, maze.STEP_REWARD)


def test_slip_zero_is_deterministic_and_slip_one_moves_at_random():
    keys = jax.random.split(jax.random.key(1), 4000)
    cell = (6, 5)  # open up, down and right; a wall on the left
    outcomes = [moved(cell, a) for a in maze.ACTIONS]

    @jax.jit
    def run(slip, action):
        start = placed(cell)
        start = start.replace(params=start.params.replace(slip=slip))
        return jax.vmap(lambda k: ENV.step(start.replace(key=k), action).env_state["pos"])(keys)

    def results(slip, action):
        return [tuple(p) for p in np.asarray(run(jnp.float32(slip), jnp.int32(action))).tolist()]

    assert set(results(0.0, UP)) == {moved(cell, "up")}
    for action in (UP, LEFT):  # under slip 1 the intended action does not matter
        got = results(1.0, action)
        freq = {o: got.count(o) / len(got) for o in set(outcomes)}
        expected = {o: outcomes.count(o) / 4 for o in set(outcomes)}
        assert set(got) == set(outcomes)
        for o, p in expected.items():
            assert abs(freq[o] - p) < 0.03, (action, o, freq, expected)
    # slip p: the intended move happens with probability 1 - p + p / 4
    got = results(0.2, UP)
    assert abs(got.count(moved(cell, "up")) / len(got) - 0.85) < 0.02
    # the slip draw comes from the state's key: the same key gives the same move
    assert results(1.0, UP) == results(1.0, UP)


def test_split_ranges_are_disjoint():
    keys = jax.random.split(jax.random.key(2), 2000)

    def draw(split):
        return ENV.param_values(jax.vmap(lambda k: ENV.sample_params(k, split))(keys))

    values = {split: draw(split) for split in sim.SPLITS}
    assert all(set(v) == set(ENV.param_ranges()) for v in values.values())
    rows = {split: set(np.asarray(v["start_row"]).tolist()) for split, v in values.items()}
    assert rows == {"train": {1, 2, 4, 5}, "interp": {3}, "extrap": {6, 7}}
    slip = {split: np.asarray(v["slip"]) for split, v in values.items()}
    assert slip["train"].min() >= 0 and slip["train"].max() <= 0.1
    assert not ((slip["train"] > 0.04) & (slip["train"] < 0.06)).any(), "training draws fall in the held-out band"
    assert slip["interp"].min() >= 0.04 and slip["interp"].max() <= 0.06
    assert slip["extrap"].min() >= 0.1 and slip["extrap"].max() <= 0.2
    for split, v in values.items():  # each sample lands in its own split's range
        for name, rng in ENV.param_ranges().items():
            assert bool(jnp.all(rng.contains(v[name], split))), (split, name)


def test_moved_ranges_are_clipped_to_valid_worlds():
    ranges = ENV.default_ranges()
    ranges["start_row"]["extrap"] = jnp.asarray([[6.0, 12.0]])
    ranges["slip"]["extrap"] = jnp.asarray([[0.5, 3.0]])
    p = jax.jit(jax.vmap(lambda k: ENV.sample_params(k, "extrap", ranges)))(jax.random.split(jax.random.key(3), 500))
    assert int(p.start_row.max()) == maze.START_ROWS[1] and float(p.slip.max()) == 1.0


def test_shortest_paths_from_every_start_cell():
    dist = bfs_distances()
    paths = {r: dist[(r, c)] for r, c in START_CELLS}
    assert paths == {1: 15, 2: 16, 3: 17, 4: 18, 5: 19, 6: 20, 7: 21}  # the module docstring's numbers
    for r, c in START_CELLS:
        d = paths[r]
        assert 15 <= d <= 25
        assert d > abs(r - maze.GOAL[0]) + abs(c - maze.GOAL[1]), "the walls force a detour"


def test_bfs_policy_reaches_the_goal_in_the_shortest_path_length():
    dist = bfs_distances()
    policy = np.zeros((len(maze.LAYOUT), len(maze.LAYOUT[0])), np.int32)  # greedy on the BFS distance
    for cell in open_cells():
        policy[cell] = min(range(len(maze.ACTIONS)), key=lambda i: dist[moved(cell, maze.ACTIONS[i])])
    table = jnp.asarray(policy)

    @jax.jit
    def episode(row):
        s = ENV.reset(jax.random.key(4), params(start_row=row))

        def body(s, _):
            pos = s.env_state["pos"]
            s = ENV.step(s, table[pos[0], pos[1]])
            return s, (s.reward, s.terminated, s.truncated)

        return jax.lax.scan(body, s, None, length=30)[1]

    rows = jnp.arange(maze.START_ROWS[0], maze.START_ROWS[1] + 1)
    reward, terminated, truncated = (np.asarray(x) for x in jax.vmap(episode)(rows))
    for i, (r, c) in enumerate(START_CELLS):
        d = dist[(r, c)]
        assert int(np.argmax(terminated[i])) + 1 == d and not truncated[i].any()
        np.testing.assert_allclose(reward[i, :d].sum(), maze.GOAL_REWARD + (d - 1) * maze.STEP_REWARD, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_make_batched_in_every_mode(mode):
    env = sim.make("maze-discrete", batch_size=8, mode=mode)
    steps = 120  # past the time limit, so every mode resets at least once

    @jax.jit
    def run(key):
        k_params, k_reset, k_act = jax.random.split(key, 3)
        s = env.reset(k_reset, env.sample_params(k_params))
        actions = jax.random.randint(k_act, (steps, 8), 0, len(maze.ACTIONS), jnp.int32)

        def body(s, a):
            s = env.step(s, a)
            # an episode's own end (in trial mode `done` marks the trial's end)
            done = s.done if mode == "fresh" else s.info["episode_terminated"] | s.info["episode_truncated"]
            return s, (s.obs, s.reward, done)

        return jax.lax.scan(body, s, actions)

    _, (obs, reward, done) = run(jax.random.key(5))
    assert obs.shape == (steps, 8, *env.observation_space.shape) and obs.dtype == jnp.float32
    assert reward.shape == (steps, 8) and bool(jnp.all(jnp.isfinite(obs)))
    assert bool(done.any())
    assert env.observation_space.names[:2] == ("row", "col")
    if mode == "trial":  # the RL² inputs: the previous action one-hot by name, reward, done flag
        assert env.observation_space.names[2:] == ("prev_action=up", "prev_action=down", "prev_action=left",
                                                   "prev_action=right", "prev_reward", "prev_done")
