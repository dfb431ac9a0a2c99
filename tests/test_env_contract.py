"""Registry-wide contract tests: every registered env, unbatched and batched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from randomization.ranges import SplitRange
from sim.core import Dict
from tests.helpers import compiled_rollout, fixed_actions, made, tree_allclose

ENV_IDS = sim.registered()
CASES = [(i, b) for i in ENV_IDS for b in sim.entry(i).backends]
STEPS = 24


@pytest.fixture(scope="module", params=CASES, ids=[f"{i}:{b}" for i, b in CASES])
def case(request):
    return request.param


def _rollout(env, seed_params=0, seed_reset=1, seed_actions=2):
    params = env.sample_params(jax.random.key(seed_params), "train")
    actions = fixed_actions(env, jax.random.key(seed_actions), STEPS)
    return compiled_rollout(env, STEPS)(jax.random.key(seed_reset), params, actions)


def test_registry_lists_all_families():
    families = {made(i).unwrapped.family for i in ENV_IDS}
    assert {"bandit", "tabular-mdp", "point-goal", "point-vel", "pendulum", "cartpole"} <= families
    assert len([i for i in ENV_IDS if i.startswith("bandit-")]) == 9
    assert len([i for i in ENV_IDS if i.startswith("mdp-")]) == 5


def _parts(env):
    """``(name, Box)`` per observation part: ``[(None, box)]`` for a flat observation."""
    space = env.observation_space
    return list(space.items()) if isinstance(space, Dict) else [(None, space)]


def test_shapes_dtypes_and_finite(case):
    env_id, backend = case
    env = made(env_id, backend=backend)
    s0, traj = _rollout(env)
    for name, space in _parts(env):  # a vector (float32), or each part of a dict (uint8 images)
        part = (lambda o: o) if name is None else (lambda o: o[name])  # noqa: E731
        assert part(s0.obs).shape == space.shape and part(s0.obs).dtype == space.dtype, name
        assert part(traj.obs).shape == (STEPS,) + space.shape and part(traj.obs).dtype == space.dtype, name
        assert part(traj.info["final_obs"]).shape == (STEPS,) + space.shape
        assert len(space.names) == space.shape[-1]
        assert name is not None or space.dtype == jnp.float32
    assert traj.reward.shape == (STEPS,) and traj.reward.dtype == jnp.float32
    assert traj.terminated.dtype == jnp.bool_ and traj.truncated.dtype == jnp.bool_
    for leaf in jax.tree.leaves((s0, traj)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf))), env_id


def test_same_key_same_trajectory(case):
    env_id, backend = case
    env = made(env_id, backend=backend)
    a = _rollout(env)
    b = _rollout(env)
    assert tree_allclose(a[1].obs, b[1].obs, atol=0) and tree_allclose(a[1].reward, b[1].reward, atol=0)


def _toward_goal(env, seed_params):
    """A sparse-reward env's actions for :func:`test_different_params_change_transitions`: straight at
    the goal of world ``seed_params`` at full speed (random actions never reach a sparse goal, so two
    worlds would look the same)."""
    goal = env.sample_params(jax.random.key(seed_params), "train").target
    return jnp.broadcast_to(goal / jnp.abs(goal).max(), (STEPS,) + goal.shape)


def test_different_params_change_transitions(case):
    env_id, backend = case
    env = made(env_id, backend=backend)
    if getattr(env.unwrapped, "task", None) == "arc-sparse":  # the same actions, aimed at world 0's goal
        p0, p5 = (env.sample_params(jax.random.key(s), "train") for s in (0, 5))
        run = compiled_rollout(env, STEPS)
        _, a = run(jax.random.key(1), p0, _toward_goal(env, 0))
        _, b = run(jax.random.key(1), p5, _toward_goal(env, 0))
        assert float(a.reward.sum()) > 0 and float(b.reward.sum()) == 0, (a.reward, b.reward)
        return
    _, a = _rollout(env, seed_params=0)
    _, b = _rollout(env, seed_params=5)
    differs = (not np.allclose(a.reward, b.reward)) or (not tree_allclose(a.obs, b.obs))
    assert differs, f"{env_id}: two worlds gave identical transitions"


def test_batched_matches_per_env_and_worlds_differ(case):
    env_id, backend = case
    B = 4
    env = made(env_id, batch_size=B, backend=backend)
    single = made(env_id, backend=backend)
    params = env.sample_params(jax.random.key(3), "train")
    keys = jax.random.split(jax.random.key(4), B)
    actions = fixed_actions(env, jax.random.key(5), STEPS)
    _, traj = compiled_rollout(env, STEPS)(keys, params, actions)
    for name, space in _parts(single):
        assert (traj.obs if name is None else traj.obs[name]).shape == (STEPS, B) + space.shape
    assert traj.reward.shape == (STEPS, B)
    # env 2 of the batch runs exactly like the unbatched env given its params, key and actions
    p2 = jax.tree.map(lambda x: x[2], params)
    _, t2 = compiled_rollout(single, STEPS)(keys[2], p2, actions[:, 2])
    # XLA orders the float32 operations of MJX's batched solver differently from the unbatched one:
    # equal up to rounding, which contact-rich robots (the ant) amplify chaotically within ~10 steps,
    # so on MJX the comparison covers the first 6 steps
    n, tol = (6, dict(rtol=1e-3, atol=1e-3)) if backend == "mjx" else (STEPS, dict(rtol=1e-5, atol=1e-6))
    np.testing.assert_allclose(traj.reward[:n, 2], t2.reward[:n], **tol)
    for x, y in zip(jax.tree.leaves(traj.obs), jax.tree.leaves(t2.obs)):
        if x.dtype == jnp.uint8:  # a camera image: the batch draws world 2 in another tile of the sheet, where
            # the rasterizer's sub-pixel snapping may move an edge pixel by a level (sim.render)
            diff = np.abs(np.asarray(x[:n, 2], np.int32) - np.asarray(y[:n], np.int32))
            assert diff.max() <= 8 and diff.mean() < 0.01, (diff.max(), diff.mean())
        else:
            np.testing.assert_allclose(x[:n, 2], y[:n], **tol)
    # and the batch holds different worlds
    leaves = jax.tree.leaves(params)
    assert any(not np.allclose(x[0], x[1]) for x in leaves)


def test_sample_params_respects_split_ranges(case):
    env_id, backend = case
    env = made(env_id, batch_size=256, backend=backend)
    for split in sim.SPLITS:
        params = env.sample_params(jax.random.key(11), split)
        values = env.param_values(params)
        assert set(values) == set(env.param_ranges()), env_id
        for name, rng in env.param_ranges().items():
            if isinstance(rng, SplitRange):
                inside = rng.contains(values[name], split)
                assert bool(jnp.all(inside)), f"{env_id} {split} {name}: {values[name][~inside][:5]}"


def test_wrong_action_shape_fails_at_trace_time_naming_expected(case):
    env_id, backend = case
    env = made(env_id, backend=backend)
    params = env.sample_params(jax.random.key(0))
    s = env.reset(jax.random.key(1), params)
    bad = jnp.zeros((3,) + env.action_space.shape, env.action_space.dtype)
    with pytest.raises(ValueError, match=r"expected \(" ):
        jax.jit(env.step)(s, bad)


def test_extrapolation_never_overlaps_training():
    for env_id in ENV_IDS:
        for name, rng in made(env_id).param_ranges().items():
            if isinstance(rng, SplitRange) and rng.extrap:
                lo, hi = rng.train
                for a, b in rng.extrap:
                    assert b <= lo or a >= hi, f"{env_id} {name}: extrap ({a}, {b}) overlaps train ({lo}, {hi})"
