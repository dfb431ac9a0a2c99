"""Auto-reset, trial, batching and normalization semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from sim.core import Box, Env, new_state
from sim.tasks.point_nav import PointNav
from sim.wrappers import AutoReset, NormalizeObs, Trial, VmapEnv
from tests.helpers import compiled_rollout, fixed_actions


class RandomStart(Env):
    """Test env: the first observation is drawn from the reset key; a fixed 3-step time limit;
    terminates when the action exceeds 0.9 (so both end reasons occur)."""

    id = "random-start"
    family = "test"
    episode_length = 3
    observation_space = Box(names=("x",), low=-1.0, high=1.0)
    action_space = Box(names=("a",), low=-1.0, high=1.0)

    def sample_params(self, key, split="train"):
        return {"offset": jax.random.uniform(key, (), jnp.float32, 0.0, 10.0)}

    def reset(self, key, params):
        x = jax.random.uniform(key, (1,), jnp.float32, -1.0, 1.0)
        return new_state(x, params, {"x": x, "t": jnp.zeros((), jnp.int32)}, key)

    def step(self, state, action):
        action = self.check_action(action)
        t = state.env_state["t"] + 1
        x = state.env_state["x"] + 0.01
        return state.replace(
            obs=x,
            reward=params_reward(state.params, action),
            terminated=action[0] > 0.9,
            truncated=t >= self.episode_length,
            env_state={"x": x, "t": t},
        )


def params_reward(params, action):
    return (params["offset"] + action[0]).astype(jnp.float32)


STEPS = 30


def _run(env, steps=STEPS, actions=None, seed=0):
    params = env.sample_params(jax.random.key(seed))
    if actions is None:
        actions = jnp.zeros((steps,) + env.batch_shape + env.action_space.shape)
    return compiled_rollout(env, steps)(jax.random.key(seed + 1), params, actions)


def test_autoreset_uses_fresh_key_every_episode():
    env = AutoReset(RandomStart(), episodes_per_world=None)
    s0, traj = _run(env)
    done = np.asarray(traj.done)
    starts = np.concatenate([np.asarray(s0.obs)[None], np.asarray(traj.obs)[done]])[:, 0]
    assert done.sum() == STEPS // 3
    assert len(np.unique(np.round(starts, 6))) == len(starts), "an episode restarted from a cached state"


def test_autoreset_keeps_final_obs_and_truncation_apart():
    env = AutoReset(RandomStart(), episodes_per_world=None)
    s0, traj = _run(env)
    done = np.asarray(traj.truncated)
    assert not np.asarray(traj.terminated).any()
    # the final observation is the pre-reset one (start + 3 * 0.01), the new obs is a fresh start
    first_end = int(np.argmax(done))
    np.testing.assert_allclose(traj.info["final_obs"][first_end, 0], s0.obs[0] + 0.03, atol=1e-6)
    assert not np.isclose(traj.obs[first_end, 0], s0.obs[0] + 0.03)
    # termination stays termination
    actions = jnp.ones((STEPS, 1))
    _, traj = _run(env, actions=actions)
    assert np.asarray(traj.terminated).all() and not np.asarray(traj.truncated).any()


def test_autoreset_resamples_world_every_k_episodes():
    env = AutoReset(RandomStart(), episodes_per_world=2)
    s0, traj = _run(env)
    offsets = np.asarray(traj.params["offset"])
    world_done = np.asarray(traj.info["world_done"])
    assert world_done.sum() == STEPS // 6
    # params change exactly after world_done steps
    prev = np.concatenate([[float(s0.params["offset"])], offsets[:-1]])
    changed = ~np.isclose(prev, offsets)
    np.testing.assert_array_equal(changed, world_done)


def test_trial_params_constant_inside_and_resampled_across():
    K, H = 3, 4
    env = Trial(PointNav("goal", episode_length=H), episodes_per_trial=K)
    steps = 3 * K * H
    s0, traj = _run(env, steps=steps, actions=fixed_actions(env, jax.random.key(9), steps))
    goals = np.concatenate([np.asarray(s0.params.target)[None], np.asarray(traj.params.target)])
    for trial in range(3):
        block = goals[trial * K * H + 1 : (trial + 1) * K * H + 1]  # params in force for that trial's steps
        block = np.concatenate([goals[trial * K * H][None], block[:-1]])
        assert np.allclose(block, block[0]), f"params changed inside trial {trial}"
    trial_goals = [goals[i * K * H] for i in range(3)]
    assert not np.allclose(trial_goals[0], trial_goals[1]) and not np.allclose(trial_goals[1], trial_goals[2])


def test_trial_done_flag_and_rl2_inputs():
    K, H = 3, 4
    env = Trial(PointNav("goal", episode_length=H), episodes_per_trial=K)
    steps = 2 * K * H
    actions = fixed_actions(env, jax.random.key(9), steps)
    s0, traj = _run(env, steps=steps, actions=actions)
    trial_done = np.asarray(traj.info["trial_done"])
    expected = np.zeros(steps, bool)
    expected[K * H - 1 :: K * H] = True
    np.testing.assert_array_equal(trial_done, expected)  # carries reset after these steps only
    np.testing.assert_array_equal(np.asarray(traj.terminated), expected)
    assert not np.asarray(traj.truncated).any()
    # inner episodes end by time limit: truncated, never terminated
    ep_trunc = np.asarray(traj.info["episode_truncated"])
    np.testing.assert_array_equal(ep_trunc, (np.arange(steps) % H) == H - 1)
    assert not np.asarray(traj.info["episode_terminated"]).any()
    names = env.observation_space.names
    assert names == ("x", "y", "prev_action.vx", "prev_action.vy", "prev_reward", "prev_done")
    obs = np.asarray(traj.obs)
    live = ~expected[:, None]  # the first obs of a new trial carries zero RL² inputs, as after reset
    np.testing.assert_allclose(obs[:, 2:4], np.where(live, actions, 0.0), atol=1e-6)
    np.testing.assert_allclose(obs[:, 4], np.where(expected, 0.0, traj.reward), atol=1e-6)
    np.testing.assert_array_equal(obs[:, 5] > 0.5, ep_trunc & ~expected)
    np.testing.assert_array_equal(obs[expected, 2:], 0.0)
    final = np.asarray(traj.info["final_obs"])  # the trial's real last inputs stay in final_obs
    np.testing.assert_allclose(final[:, 2:4], actions, atol=1e-6)
    np.testing.assert_allclose(final[:, 4], traj.reward, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(s0.obs)[2:], 0.0)  # trial start: no previous step
    # after an inner episode ends the point is back at the origin, the final obs is not
    i = H - 1
    np.testing.assert_array_equal(obs[i, :2], 0.0)
    assert np.abs(np.asarray(traj.info["final_obs"])[i, :2]).sum() > 0


def test_trial_time_input_counts_the_trial_and_restarts_with_it():
    K, H = 3, 4
    env = Trial(PointNav("goal", episode_length=H), episodes_per_trial=K, time_input=True)
    assert env.observation_space.names[-3:] == ("prev_reward", "prev_done", "trial_time")
    steps = 2 * K * H
    s0, traj = _run(env, steps=steps, actions=fixed_actions(env, jax.random.key(3), steps))
    t = np.arange(steps) % (K * H) + 1  # steps taken in the trial after each step
    final = np.asarray(traj.info["final_obs"])[:, -1]
    np.testing.assert_allclose(final, t / (K * H), atol=1e-6)  # reaches 1 at the trial's last step
    np.testing.assert_allclose(np.asarray(traj.obs)[:, -1], (t % (K * H)) / (K * H), atol=1e-6)  # 0 at a new trial
    assert float(np.asarray(s0.obs)[-1]) == 0.0
    # the other inputs are where they were without it
    plain = Trial(PointNav("goal", episode_length=H), episodes_per_trial=K)
    _, tp = _run(plain, steps=steps, actions=fixed_actions(env, jax.random.key(3), steps))
    np.testing.assert_allclose(np.asarray(traj.obs)[:, :-1], np.asarray(tp.obs), atol=1e-6)


def test_registry_gives_the_time_input_to_tabular_tasks_only():
    assert sim.make("bandit-k5-n100").observation_space.names[-1] == "trial_time"
    assert sim.make("mdp-s10-a5-n10").observation_space.names[-1] == "trial_time"
    assert sim.make("point-goal").observation_space.names[-1] == "prev_done"


def test_trial_discrete_action_is_one_hot():
    env = sim.make("bandit-k5-n10")
    s0, traj = _run(env, steps=10, actions=jnp.full((10,), 3, jnp.int32))
    obs = np.asarray(traj.obs)
    np.testing.assert_array_equal(obs[:9, 1:6], np.tile(np.eye(5)[3], (9, 1)))
    np.testing.assert_array_equal(obs[:9, 7], 1.0)  # every pull is a finished one-step episode
    np.testing.assert_array_equal(obs[9, 1:], 0.0)  # ...until the trial ends: a new one starts blank
    assert np.asarray(traj.info["trial_done"]).tolist() == [False] * 9 + [True]


def test_batched_trial_matches_unbatched():
    K, B = 2, 3
    single = Trial(RandomStart(), episodes_per_trial=K)
    batched = Trial(VmapEnv(RandomStart(), B), episodes_per_trial=K)
    params = batched.sample_params(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), B)
    actions = fixed_actions(batched, jax.random.key(2), 20)
    _, tb = compiled_rollout(batched, 20)(keys, params, actions)
    for i in range(B):
        p = jax.tree.map(lambda x: x[i], params)
        _, ts = compiled_rollout(single, 20)(keys[i], p, actions[:, i])
        np.testing.assert_allclose(tb.obs[:, i], ts.obs, atol=1e-6)
        np.testing.assert_array_equal(tb.info["trial_done"][:, i], ts.info["trial_done"])


def test_vmap_env_key_errors_name_the_shape():
    env = VmapEnv(RandomStart(), 4)
    with pytest.raises(ValueError, match="expected one key or 4 keys"):
        env.sample_params(jax.random.split(jax.random.key(0), 3))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        VmapEnv(RandomStart(), 0)


def test_normalize_obs_matches_numpy_statistics():
    B = 8
    env = NormalizeObs(AutoReset(VmapEnv(PointNav("goal", episode_length=5), B)))
    steps = 12
    actions = fixed_actions(env, jax.random.key(3), steps)
    s0, traj = compiled_rollout(env, steps)(jax.random.key(1), env.sample_params(jax.random.key(0)), actions)
    raw = AutoReset(VmapEnv(PointNav("goal", episode_length=5), B))
    r0, rtraj = compiled_rollout(raw, steps)(jax.random.key(1), raw.sample_params(jax.random.key(0)), actions)
    seen = np.concatenate([np.asarray(r0.obs)[None], np.asarray(rtraj.obs)]).reshape(-1, 2)
    stats = jax.tree.map(lambda x: x[-1], traj.info["obs_norm"])
    np.testing.assert_allclose(stats.mean, seen.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats.var, seen.var(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        traj.obs[-1], (rtraj.obs[-1] - seen.mean(0)) / np.sqrt(seen.var(0) + 1e-8), rtol=1e-4, atol=1e-4
    )


def test_wrapper_argument_errors():
    with pytest.raises(ValueError, match="episodes_per_trial must be >= 1, got 0"):
        Trial(RandomStart(), 0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        AutoReset(RandomStart(), split="test")
    with pytest.raises(ValueError, match="clip must be > 0"):
        NormalizeObs(RandomStart(), clip=0)


def test_env_modes_meet_the_same_worlds_with_the_same_bookkeeping():
    """``fixed`` (MAML/MAESN/EPG) and ``trial`` (RL²) see the same worlds and initial states for the
    same keys and count episodes alike; only ``trial`` appends the RL² inputs; ``fresh`` redraws the
    world every episode."""
    import sim

    trial = sim.make("point-goal", batch_size=3, mode="trial")
    fixed = sim.make("point-goal", batch_size=3, mode="fixed")
    fresh = sim.make("point-goal", batch_size=3, mode="fresh")
    assert (trial.mode, fixed.mode, fresh.mode) == ("trial", "fixed", "fresh")
    assert fixed.episodes_per_trial == trial.episodes_per_trial == 2
    assert fixed.max_trial_steps == trial.max_trial_steps
    params = trial.sample_params(jax.random.key(0))
    st, sf = trial.reset(jax.random.key(1), params), fixed.reset(jax.random.key(1), params)
    n = fixed.observation_space.shape[0]
    assert trial.observation_space.shape[0] > n
    step_t, step_f = jax.jit(trial.step), jax.jit(fixed.step)
    act = jnp.full((3, 2), 0.3)
    for _ in range(trial.max_trial_steps):
        np.testing.assert_allclose(st.obs[:, :n], sf.obs, atol=1e-6)
        np.testing.assert_array_equal(st.info["episode"], sf.info["episode"])
        st, sf = step_t(st, act), step_f(sf, act)
        np.testing.assert_array_equal(st.info["trial_done"], sf.info["trial_done"])
        np.testing.assert_array_equal(st.info["episode_truncated"], sf.info["episode_truncated"])
        np.testing.assert_array_equal(sf.truncated, sf.info["episode_truncated"])
    assert bool(sf.info["trial_done"].all())
    with pytest.raises(ValueError, match="unknown env mode 'meta'; valid modes: trial, fixed, fresh"):
        sim.make("point-goal", mode="meta")
    with pytest.raises(ValueError, match="trial=False contradicts mode='trial'"):
        sim.make("point-goal", mode="trial", trial=False)


def test_any_leading_batch_shape():
    import sim

    env = sim.make("point-goal", batch_size=(2, 3), mode="fresh")
    assert env.batch_shape == (2, 3)
    params = env.sample_params(jax.random.key(0))
    assert params.target.shape == (2, 3, 2)
    s = env.reset(jax.random.key(1), params)
    s = jax.jit(env.step)(s, jnp.zeros((2, 3, 2)))
    assert s.obs.shape == (2, 3) + env.observation_space.shape and s.reward.shape == (2, 3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sim.make("point-goal", batch_size=(2, 0))


def test_make_takes_episodes_per_trial():
    """``sim.make(..., episodes_per_trial=K)`` overrides the entry's K (``proteus eval --episodes``);
    a non-integer or K < 1 is refused naming the value."""
    import pytest

    import sim

    env = sim.make("point-goal", mode="trial", episodes_per_trial=4)
    assert env.episodes_per_trial == 4 and env.max_trial_steps == 400
    assert sim.make("point-goal", mode="fixed", episodes_per_trial=3).episodes_per_trial == 3
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"episodes_per_trial must be an integer >= 1, got {bad!r}"):
            sim.make("point-goal", episodes_per_trial=bad)


def test_discrete_actions_apply_their_levels_and_refuse_bad_choices():
    from sim.wrappers import DiscreteActions

    cont = sim.make("cartpole-balance", batch_size=2, mode="fresh", backend="native")
    disc = sim.make("cartpole-balance-discrete", batch_size=2, mode="fresh")
    assert disc.action_space.names == ("slide=-1", "slide=+1")
    params = cont.sample_params(jax.random.key(0))
    sc, sd = cont.reset(jax.random.key(1), params), disc.reset(jax.random.key(1), params)
    choices = jnp.asarray([[0, 1], [1, 1], [1, 0]], jnp.int32)
    for c in choices:
        sc = cont.step(sc, jnp.where(c == 1, 1.0, -1.0)[:, None])
        sd = disc.step(sd, c)
        np.testing.assert_array_equal(np.asarray(sc.obs), np.asarray(sd.obs))
    # out of range under jit: the env refuses it like a NaN action (terminated, counted unstable)
    bad = jax.jit(disc.step)(sd, jnp.asarray([0, 2], jnp.int32))
    assert bad.terminated.tolist() == [False, True] and bad.metrics["unstable"].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="action 2 is out of range"):
        disc.step(sd, jnp.asarray([0, 2], jnp.int32))
    with pytest.raises(ValueError, match="one-element Box action space"):
        DiscreteActions(sim.make("reacher-goal", backend="native").unwrapped)
    with pytest.raises(ValueError, match="levels must be at least two values within"):
        DiscreteActions(sim.make("cartpole-balance", backend="native").unwrapped, levels=(-2.0, 1.0))
