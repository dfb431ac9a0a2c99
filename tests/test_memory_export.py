"""An episodic controller's memory on the robot (deploy/memory.py): the NumPy write against the JAX DND
write, an MFEC/NEC export with its memory as graph inputs (onnxruntime vs JAX, before and after the
memory grows), the memory file's round trip and refusals, and a controller's episode writes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from deploy.export import export_agent
from deploy.memory import EpisodicMemory, MemoryController, memory_path, write
from deploy.runtime import OnnxPolicy
from meta_rl import dnd, mfec, nec, value
from meta_rl.configs import MFECConfig, NECConfig
from meta_rl.mfec import discounted_returns
from meta_rl.value import n_step_targets
from proteus.export import memory_metadata, run_id
from proteus.runspec import RunSpec

ENV = "cartpole-balance-discrete"  # obs_dim 5, 2 actions
CONFIGS = {"mfec": MFECConfig(capacity=16, key_dim=3, k=3, gamma=0.9, match_tol=1e-8),
           "nec": NECConfig(capacity=16, key_dim=4, k=3, hidden=(8,), gamma=0.9, n_step=3, alpha=0.5, match_tol=1e-8)}
LEARNERS = {"mfec": mfec, "nec": nec}


@pytest.mark.parametrize("capacity, n, rule, tolerance", [
    (16, 10, "max", 0.0), (6, 10, "q", 0.01), (5, 12, "replace", 0.0), (8, 12, "max", 0.01)])
def test_numpy_write_equals_the_jax_dnd_write(capacity, n, rule, tolerance):
    """Duplicates within a batch and against the memory (exact, or within the tolerance), masked
    writes, a touched entry, more writes than slots (LRU replacement): the same memory, bit for bit."""
    rng = np.random.default_rng(capacity * n)
    pool = rng.integers(-2, 3, (12, 3)).astype(np.float32)  # few distinct keys: many duplicates

    def draw(m):
        keys = pool[rng.integers(0, 12, m)]
        return keys + (0.02 * rng.random(keys.shape).astype(np.float32) if tolerance else 0.0)

    jax_write = jax.jit(lambda m, k, v, on: dnd.write(m, k, v, rule=rule, alpha=0.25, tolerance=tolerance, mask=on))
    mem = jax_write(dnd.init(capacity, 3), jnp.asarray(draw(n)), jnp.asarray(rng.standard_normal((n, 1)), jnp.float32),
                    jnp.asarray(rng.random(n) > 0.5))
    mem = dnd.touch(mem, jnp.asarray([0]))
    got = tuple(np.asarray(x) for x in (mem.keys, mem.values, mem.stamps, mem.clock))
    for _ in range(3):
        keys, values, mask = draw(n), rng.standard_normal((n, 1)).astype(np.float32), rng.random(n) > 0.2
        mem = jax_write(mem, jnp.asarray(keys), jnp.asarray(values), jnp.asarray(mask))
        got = write(*got, keys, values, rule, 0.25, tolerance, mask)
        np.testing.assert_array_equal(got[0], np.asarray(mem.keys))
        np.testing.assert_allclose(got[1], np.asarray(mem.values), rtol=1e-6)
        np.testing.assert_array_equal(got[2], np.asarray(mem.stamps))
        assert int(got[3]) == int(mem.clock)
    if capacity < 10:  # fewer slots than distinct keys: full, it replaced (never refused)
        assert np.all(got[2] >= 0) and int(got[3]) > capacity


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An MFEC and an NEC agent with a few memories written by hand, exported (parity inside)."""
    env = sim.make(ENV, batch_size=1, mode="fresh", backend="native")
    out = {}
    for algo, c in CONFIGS.items():
        L = LEARNERS[algo]
        params = L.init_agent_params(c, env, jax.random.key(1))
        rng = np.random.default_rng(2)
        obs = jnp.asarray(rng.standard_normal((24, 5)), jnp.float32)
        keys = value.memory_key(L.make_agent(c, env, params, True).head, params, obs)
        memory = value.write_per_action(params["memory"], keys, jnp.asarray(rng.integers(0, 2, 24)),
                                        jnp.asarray(rng.standard_normal(24) * 3, jnp.float32),
                                        rule="max", chunk=8, tolerance=c.match_tol)
        params = {**params, "memory": memory}
        agent = L.make_agent(c, env, params, True)
        spec = RunSpec(algo, ENV, "auto", 0, c)
        path = tmp_path_factory.mktemp(algo) / "policy.onnx"
        meta = {"control_dt": 0.02, "memory": memory_metadata(spec, agent, memory_path(path).name)}
        report = export_agent(agent, path, meta, steps=16)
        EpisodicMemory(*(np.asarray(x) for x in (memory.keys, memory.values, memory.stamps, memory.clock)),
                       run_id=run_id(spec), learner=algo).save(memory_path(path))
        out[algo] = (agent, path, report)
    return out


def _scaled_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


@pytest.mark.parametrize("algo", ["mfec", "nec"])
def test_onnx_with_the_memory_as_inputs_matches_jax_before_and_after_it_grows(exported, algo):
    import onnx

    agent, path, report = exported[algo]
    c = CONFIGS[algo]
    A, C, D = 2, c.capacity, c.key_dim
    assert report.max_action_error == 0.0 and max(report.output_errors.values()) <= 1e-5
    print(f"{algo} export parity: {report.output_errors}")
    model = onnx.load(str(path))
    inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs == {"obs": ["batch", 5], "memory.keys": [A, C, D], "memory.values": [A, C, 1],
                      "memory.stamps": [A, C]}
    assert [o.name for o in model.graph.output] == ["action", "q", "memory_key"]
    for init in model.graph.initializer:  # no memory among the constants (only the empty-slot mask's inf)
        arr = onnx.numpy_helper.to_array(init)
        assert arr.shape not in {(C, D), (C, 1), (A, C, D), (A, C, 1), (A, C)}
        assert arr.shape != (C,) or np.all(np.isinf(arr))
    meta = report.metadata["memory"]
    assert meta["run_id"] == run_id(RunSpec(algo, ENV, "auto", 0, c))
    assert meta["rule"] == {"mfec": "max", "nec": "q"}[algo]
    assert (meta["actions"], meta["capacity"], meta["key_dim"], meta["n_step"]) == (A, C, D, getattr(c, "n_step", None))

    policy = OnnxPolicy(path)  # its policy.memory.npz, beside it
    mem = policy.memory
    np.testing.assert_array_equal(mem.keys, np.asarray(agent.params["memory"].keys))
    q_fn = jax.jit(lambda ag, o: (ag.q(o), ag.policy_step({}, o)[0], ag.memory_key(o)))
    obs = np.random.default_rng(3).standard_normal((64, 5)).astype(np.float32)
    jax_write = jax.jit(functools.partial(value.write_per_action, rule=meta["rule"], chunk=8,
                                          alpha=meta.get("alpha", 0.1), tolerance=c.match_tol))
    errs = []
    for grow in range(3):
        action, q, key = policy.session.run(["action", "q", "memory_key"], {"obs": obs, **mem.feed()})
        j_q, j_action, j_key = q_fn(agent.with_memory(mem.feed()), jnp.asarray(obs))
        errs.append((_scaled_err(q, j_q), _scaled_err(key, j_key)))
        np.testing.assert_array_equal(action, np.asarray(j_action))
        # the robot writes what it saw: NumPy writes (30 keys into 16 slots a memory: it replaces), the
        # same as the JAX per-action write
        acts = np.random.default_rng(grow).integers(0, A, 30)
        targets = np.random.default_rng(grow + 10).standard_normal(30).astype(np.float32)
        snapshot = {k: v.copy() for k, v in mem.feed().items()}  # the NumPy writes below go in place
        want = jax_write(agent.with_memory(snapshot).params["memory"].replace(clock=jnp.asarray(mem.clock.copy())),
                         jnp.asarray(key[:30]), jnp.asarray(acts), jnp.asarray(targets))
        for k, a, t in zip(key[:30], acts, targets):
            mem.write(a, k[None], np.array([t]), meta["rule"], meta.get("alpha", 0.1), meta["match_tol"])
        np.testing.assert_array_equal(mem.keys, np.asarray(want.keys))
        np.testing.assert_allclose(mem.values, np.asarray(want.values), rtol=1e-6)
        np.testing.assert_array_equal(mem.stamps, np.asarray(want.stamps))
        np.testing.assert_array_equal(mem.clock, np.asarray(want.clock))
    print(f"{algo} parity (q, memory_key) as the memory grows: {errs}")
    assert max(max(e) for e in errs) <= 1e-5
    assert np.all(mem.size() == C)


def test_memory_round_trips_through_checkpoints_and_files_and_foreign_ones_are_refused(exported, tmp_path):
    from proteus.checkpoint import read_policy_params, save_policy

    agent, path, report = exported["mfec"]
    save_policy(tmp_path / "policy", agent.policy_spec, agent.params)  # what a run's checkpoint of the agent holds
    template = mfec.init_agent_params(CONFIGS["mfec"], sim.make(ENV, batch_size=1, mode="fresh", backend="native"),
                                      jax.random.key(0))
    back = read_policy_params(template, tmp_path / "policy" / "params.msgpack")["memory"]
    mem = EpisodicMemory.load(memory_path(path), expected=report.metadata["memory"])
    for x, y, z in zip((mem.keys, mem.values, mem.stamps, mem.clock), (back.keys, back.values, back.stamps, back.clock),
                       (agent.params["memory"].keys, agent.params["memory"].values, agent.params["memory"].stamps,
                        agent.params["memory"].clock)):
        np.testing.assert_array_equal(x, np.asarray(y))
        np.testing.assert_array_equal(x, np.asarray(z))
    mem.write(1, np.ones((1, 3)), np.array([5.0]), "max")
    mem.save(tmp_path / "grown.npz")
    again = EpisodicMemory.load(tmp_path / "grown.npz", expected_run_id=mem.run_id)
    for f in ("keys", "values", "stamps", "clock"):
        np.testing.assert_array_equal(getattr(again, f), getattr(mem, f))
        assert getattr(again, f).dtype == getattr(mem, f).dtype
    assert (again.run_id, again.learner) == (mem.run_id, "mfec")

    other = EpisodicMemory(mem.keys, mem.values, mem.stamps, mem.clock, run_id="mfec-other-run", learner="mfec")
    other.save(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"run_id is 'mfec-other-run' but the policy's memory has run_id 'mfec-"):
        OnnxPolicy(path, memory=tmp_path / "other.npz")
    with pytest.raises(ValueError, match="run_id"):
        EpisodicMemory.load(tmp_path / "other.npz", expected_run_id=mem.run_id)
    wide = EpisodicMemory.empty(2, 16, 5, run_id=mem.run_id)
    wide.save(tmp_path / "wide.npz")
    with pytest.raises(ValueError, match="key_dim is 5 but the policy's memory has key_dim 3"):
        OnnxPolicy(path, memory=tmp_path / "wide.npz")
    with pytest.raises(ValueError, match="capacity is 8 but the policy's memory has capacity 16"):
        OnnxPolicy(path, memory=EpisodicMemory.empty(2, 8, 3, run_id=mem.run_id))


@pytest.mark.parametrize("algo", ["mfec", "nec"])
def test_a_controller_episode_writes_returns_or_n_step_targets(exported, algo):
    agent, path, report = exported[algo]
    c = CONFIGS[algo]
    ctl = MemoryController(path)
    rng = np.random.default_rng(4)
    jax_write = jax.jit(functools.partial(value.write_per_action, rule=report.metadata["memory"]["rule"], chunk=4,
                                          alpha=getattr(c, "alpha", 0.1), tolerance=c.match_tol))
    for terminated in (True, False):
        before = EpisodicMemory(ctl.memory.keys, ctl.memory.values, ctl.memory.stamps, ctl.memory.clock)
        T = 7
        for t in range(T):
            ctl.act(rng.standard_normal(5))
            if algo == "nec" and t == c.n_step:  # step 0's N-step target is known: written at once
                assert int(ctl.memory.clock.sum()) == int(before.clock.sum()) + 1
            ctl.observe_reward(rng.standard_normal())
        final = None if terminated else rng.standard_normal(5).astype(np.float32)
        if algo == "mfec":
            assert np.array_equal(ctl.memory.clock, before.clock)  # MFEC writes at the episode's end
        ep = ctl.end_episode(terminated, final)
        reward, term = jnp.asarray(ep["rewards"])[:, None], jnp.zeros((T, 1), bool).at[-1].set(terminated)
        done = jnp.zeros((T, 1), bool).at[-1].set(True)
        if algo == "mfec":  # the return so far, truncated or not (MFEC never bootstraps)
            want = discounted_returns(reward, done, c.gamma)[:, 0]
        else:  # bootstrapping from the next step's max_a Q as the model computed it (0 after a terminal step)
            assert (ep["bootstrap"] == 0.0) == terminated
            next_value = jnp.asarray(np.append(ep["q_max"][1:], ep["bootstrap"]))[:, None]
            want = n_step_targets(reward, term, done, next_value, c.gamma, c.n_step)[:, 0]
        np.testing.assert_allclose(ep["targets"], np.asarray(want), rtol=1e-6, atol=1e-6)
        # the memory holds exactly those writes, each in its step's action's memory, in step order
        start = dnd.Memory(*(jnp.asarray(x) for x in (before.keys, before.values, before.stamps, before.clock)))
        want_mem = jax_write(start, jnp.asarray(ep["keys"]), jnp.asarray(ep["actions"]), jnp.asarray(ep["targets"]))
        np.testing.assert_array_equal(ctl.memory.keys, np.asarray(want_mem.keys))
        np.testing.assert_allclose(ctl.memory.values, np.asarray(want_mem.values), rtol=1e-6)
        np.testing.assert_array_equal(ctl.memory.stamps, np.asarray(want_mem.stamps))
    with pytest.raises(RuntimeError, match="observe_reward"):
        ctl.act(np.zeros(5))
        ctl.act(np.zeros(5))
