"""The episodic LSTM (meta_rl/networks.py EpisodicLSTMCore) and its recurring-task bandit
(sim/tasks/recurring.py): recurrence, the reinstatement gate closed at init, cell states written at
episode ends and read back by cue, export with the memory in the state, and the regret analysis."""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from meta_rl import learners
from meta_rl.networks import REINSTATE_BIAS, Policy, PolicySpec
from meta_rl.ppo import make_agent, policy_spec
from sim.tasks.recurring import RecurringBandit

ENV = "recurring-bandit"


def test_recurring_lifetimes_repeat_earlier_tasks_with_their_cue():
    env = RecurringBandit(arms=3, pulls=2, episodes=12, cue_dim=16)
    p = jax.vmap(lambda k: env.sample_params(k, "extrap"))(jax.random.split(jax.random.key(0), 64))
    probs, cue, rec = (np.asarray(x) for x in (p.arm_probs, p.cue, p.recurring))
    assert not rec[:, 0].any() and rec.any() and (~rec[:, 1:]).any()
    assert np.all((np.asarray(p.recur_prob) > 0.75) & (np.asarray(p.recur_prob) <= 0.9))
    for b in range(64):
        for e in range(12):
            same = [j for j in range(e) if np.array_equal(cue[b, j], cue[b, e])]
            if rec[b, e]:  # a recurring episode is an earlier task: its cue and its arms
                assert same and all(np.array_equal(probs[b, j], probs[b, e]) for j in same)
            else:  # a novel one has its own cue (16 random bits: a collision is 1 in 65536 per pair)
                assert not same
    # observation: the cue, and the flag on each episode's first pull; the lifetime ends after its last
    params = jax.tree.map(lambda x: x[0], p)
    s = env.reset(jax.random.key(1), params)
    flags = []
    for t in range(24):
        flags.append(float(s.obs[-1]))
        np.testing.assert_array_equal(np.asarray(s.obs[:-1]), cue[0, t // 2])
        s = env.step(s, jnp.int32(0))
        assert bool(s.terminated) == (t == 23)
        np.testing.assert_allclose(float(s.metrics["regret"]), probs[0, t // 2].max() - probs[0, t // 2, 0], rtol=1e-6)
    assert flags == [1.0, 0.0] * 12


@pytest.fixture(scope="module")
def small():
    c = learners.get("episodic-lstm").default_config(ENV, num_envs=4, core_size=8, memory_capacity=4)
    env = sim.make(ENV, batch_size=4, mode="trial")
    policy = Policy(policy_spec(c, env))
    return c, env, policy, policy.init(jax.random.key(0))


def test_the_reinstatement_gate_is_closed_at_init_and_cell_states_are_stored_by_cue(small):
    c, env, policy, params = small
    gate = params["net"]["params"]["core"]["reinstate"]
    assert np.all(np.asarray(gate["kernel"]) == 0.0)
    assert np.all(jax.nn.sigmoid(np.asarray(gate["bias"])) < 0.02) and REINSTATE_BIAS == -4.0
    s = env.reset(jax.random.key(1), env.sample_params(jax.random.key(2), "train"))
    carry = policy.init_carry(4)
    step = jax.jit(lambda carry, obs: policy.apply(params, carry, obs))
    for t in range(35):  # episodes start at t = 0, 10, 20, 30: the ends of three are written
        ends_c = carry["c"]
        carry, dist, _ = step(carry, s.obs)
        if t in (10, 20, 30):  # the cell state the previous episode ended with, in the newest entry
            newest = np.argmax(np.asarray(carry["mem"]["stamps"]), -1)
            np.testing.assert_allclose(np.asarray(carry["mem"]["values"])[np.arange(4), newest], np.asarray(ends_c),
                                       rtol=1e-6)
            np.testing.assert_array_equal(np.asarray(carry["mem"]["keys"])[np.arange(4), newest],
                                          np.asarray(prev_cue))
        if t % 10 == 0:  # an episode starts: its cue keys the entry written when it ends
            prev_cue = s.obs[:, :16]
        s = env.step(s, dist.sample(seed=jax.random.key(t)))
    assert np.all(np.asarray(carry["mem"]["clock"]) == 3)
    # a recurring task's cue replaces its own entry: at most one entry per write
    assert np.all((np.asarray(carry["mem"]["stamps"]) >= 0).sum(-1) <= 3)


def test_spec_refuses_an_env_without_a_cue():
    env = sim.make("bandit-k5-n10", batch_size=2, mode="trial")
    with pytest.raises(ValueError, match="episodic_lstm needs context cue"):
        PolicySpec.for_env(env, "episodic_lstm", hidden=())


def test_the_episodic_lstm_exports_with_its_memory_in_the_state(small, tmp_path):
    from deploy.export import export_agent

    c, env, policy, params = small
    rep = export_agent(make_agent(c, env, params, True), tmp_path / "p.onnx",
                       {"control_dt": 0.02, "max_trial_steps": env.max_trial_steps})
    assert rep.max_action_error == 0.0 and rep.max_carry_error <= 1e-5
    inputs = {s["input"] for s in rep.metadata["state"]}
    assert {"mem.keys_in", "mem.values_in", "mem.stamps_in", "c_in", "h_in"} <= inputs


def test_regret_is_split_into_recurring_and_novel_episodes():
    spec = importlib.util.spec_from_file_location(
        "recurring_regret", Path(__file__).resolve().parents[1] / "scripts" / "recurring_regret.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    # one lifetime of 3 episodes x 2 pulls: novel, recurring, novel; the last step is past the trial
    m = {"regret": np.asarray([[0.4], [0.2], [0.1], [0.0], [0.6], [0.9]]),
         "recurring": np.asarray([[False], [False], [True], [True], [False], [False]]),
         "pull": np.asarray([[0], [1], [0], [1], [0], [1]]),
         "live": np.asarray([[True], [True], [True], [True], [True], [False]])}
    out = mod.per_world(m, first=2)
    np.testing.assert_allclose(out["recurring"], [0.1])
    np.testing.assert_allclose(out["novel"], [(0.4 + 0.2 + 0.6) / 2])
    np.testing.assert_allclose(out["novel_by_pull"], [0.5, 0.2])
