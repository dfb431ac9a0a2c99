"""Brax bridges: a brax env as a Proteus env, a Proteus env under Brax's wrappers and trainer."""

from __future__ import annotations

import brax.envs as brax_envs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from sim.brax_bridge import FromBrax, ToBrax, brax_training_compat
from sim.wrappers import AutoReset, VmapEnv


def test_brax_env_behind_the_proteus_contract():
    env = AutoReset(VmapEnv(FromBrax(brax_envs.get_environment("fast"), episode_length=5, env_id="fast"), 3),
                    episodes_per_world=None)
    assert env.observation_space.shape == (2,) and env.action_space.shape == (1,)
    params = env.sample_params(jax.random.key(0), "extrap")
    step = jax.jit(env.step)

    def run():
        s = env.reset(jax.random.key(1), params)
        out = []
        for _ in range(12):
            s = step(s, jnp.ones((3, 1)))
            out.append((np.asarray(s.obs), np.asarray(s.truncated)))
        return s, out

    s, a = run()
    _, b = run()
    for (oa, ta), (ob, tb) in zip(a, b):
        np.testing.assert_array_equal(oa, ob)
    truncs = np.stack([t for _, t in a])
    assert truncs[4].all() and truncs[9].all() and not truncs[:4].any()  # the time limit, as truncation
    assert s.info["episode"].tolist() == [2, 2, 2]


def test_proteus_env_under_brax_training_wrappers():
    from brax.envs.wrappers.training import wrap

    env = wrap(ToBrax(sim.entry("pendulum-swingup").factory("native")), episode_length=10)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    s = reset(jax.random.split(jax.random.PRNGKey(0), 4))  # Brax works with raw uint32 keys
    assert s.obs.shape == (4, 3)
    dones = []
    for _ in range(12):
        s = step(s, jnp.zeros((4, 1)))
        dones.append(np.asarray(s.done))
    assert np.stack(dones)[9].all() and np.isfinite(np.asarray(s.obs)).all()
    # each env drew its own world at reset
    masses = np.asarray(s.pipeline_state.params["env"]["dynamics"]["body_mass[pole]"])
    assert len(np.unique(masses)) == 4


def test_bad_bridge_input():
    with pytest.raises(ValueError, match="ToBrax takes an unbatched env"):
        ToBrax(sim.make("point-goal", batch_size=2, trial=False))
    with pytest.raises(ValueError, match="episode_length must be >= 1"):
        FromBrax(brax_envs.get_environment("fast"), episode_length=0)


@pytest.mark.slow
def test_brax_ppo_trains_a_proteus_mjx_env():
    from brax.training.agents.ppo import train as ppo

    brax_training_compat()
    env = ToBrax(sim.entry("pendulum-swingup").factory("mjx"))
    _, _, metrics = ppo.train(environment=env, num_timesteps=2000, episode_length=50, num_envs=8, batch_size=8,
                              num_minibatches=2, unroll_length=10, num_updates_per_batch=1, num_evals=2, seed=0)
    assert np.isfinite(float(metrics["eval/episode_reward"]))
