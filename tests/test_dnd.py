"""The differentiable neural dictionary (meta_rl/dnd.py): golden values, LRU order, rules, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_rl import dnd

KEYS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], np.float32)
VALUES = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def _filled(capacity=4):
    return dnd.write(dnd.init(capacity, 2), jnp.asarray(KEYS), jnp.asarray(VALUES))


def test_lookup_golden_values_and_kernel_weights():
    mem = _filled()
    q = jnp.asarray([[0.5, 0.5]])
    out = dnd.lookup(mem, q, k=2, delta=1e-3)
    # squared distances: 0.5, 0.5, 2.5, 12.5 -> neighbours slots 0 and 1 (equal distance, equal weight)
    assert sorted(np.asarray(out.index[0]).tolist()) == [0, 1]
    np.testing.assert_allclose(out.sq_dist[0], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.weights[0], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.value[0], [1.5], rtol=1e-6)
    # an asymmetric query, k = 3: w_i ∝ 1 / (d_i² + δ)
    q = jnp.asarray([[0.0, 1.0]])
    out = dnd.lookup(mem, q, k=3, delta=0.5)
    d = np.array([1.0, 2.0, 1.0])  # slots 0, 1, 2
    w = 1 / (d + 0.5)
    w /= w.sum()
    order = np.asarray(out.index[0])
    assert sorted(order.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(np.asarray(out.weights[0]), w[order], rtol=1e-6)
    np.testing.assert_allclose(out.value[0, 0], float(w @ VALUES[:3]), rtol=1e-6)


def test_lookup_on_a_sparse_memory_gives_zero_weight_to_missing_neighbours():
    empty = dnd.init(5, 2)
    out = dnd.lookup(empty, jnp.ones((1, 2)), k=3)
    assert not np.asarray(out.valid).any() and np.all(np.asarray(out.value) == 0)
    one = dnd.write(empty, jnp.asarray([[1.0, 1.0]]), jnp.asarray([7.0]))
    out = dnd.lookup(one, jnp.zeros((1, 2)), k=3)
    assert np.asarray(out.valid).tolist() == [[True, False, False]]
    np.testing.assert_allclose(out.weights[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(out.value[0], [7.0])


def test_lru_replacement_order_and_touch():
    mem = dnd.write(dnd.init(3, 2), jnp.asarray(KEYS[:3]), jnp.asarray(VALUES[:3]))
    assert int(dnd.size(mem)) == 3
    # use slot 0 (key [0, 0]): slot 1 is now the least recently used
    found = dnd.lookup(mem, jnp.asarray([[0.1, 0.0]]), k=1)
    mem = dnd.touch(mem, found.index, found.valid)
    mem = dnd.write(mem, jnp.asarray([[5.0, 5.0]]), jnp.asarray([9.0]))
    np.testing.assert_array_equal(mem.keys, [[0, 0], [5, 5], [0, 2]])
    mem = dnd.write(mem, jnp.asarray([[6.0, 6.0]]), jnp.asarray([8.0]))  # then slot 2
    np.testing.assert_array_equal(mem.keys, [[0, 0], [5, 5], [6, 6]])
    np.testing.assert_array_equal(mem.values[:, 0], [1, 9, 8])


def test_capacity_overflow_keeps_exactly_capacity_entries():
    keys = jnp.arange(20, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))
    mem = dnd.write(dnd.init(4, 3), keys, jnp.arange(20.0))
    assert int(dnd.size(mem)) == 4 and int(mem.clock) == 20
    assert sorted(np.asarray(mem.values[:, 0]).tolist()) == [16, 17, 18, 19]  # the four latest


@pytest.mark.parametrize("rule, want", [("max", [3.0, 3.0]), ("q", [2.0, 2.0]), ("replace", [3.0, 2.0])])
def test_duplicate_keys_update_in_place(rule, want):
    k = jnp.asarray([[1.0, 2.0]])
    mem = dnd.write(dnd.init(3, 2), k, jnp.asarray([1.0]), rule=rule, alpha=0.5)
    mem = dnd.write(mem, k, jnp.asarray([3.0]), rule=rule, alpha=0.5)
    assert int(dnd.size(mem)) == 1
    assert float(mem.values[jnp.argmax(mem.stamps), 0]) == want[0]
    mem = dnd.write(mem, k, jnp.asarray([2.0]), rule=rule, alpha=0.5)
    assert int(dnd.size(mem)) == 1
    assert float(mem.values[jnp.argmax(mem.stamps), 0]) == want[1]


def test_an_mfec_value_is_the_max_return_written():
    keys = jnp.asarray([[0.0, 1.0]] * 5 + [[2.0, 2.0]])
    mem = dnd.write(dnd.init(8, 2), keys, jnp.asarray([1.0, 5.0, -2.0, 4.0, 0.0, 3.0]), rule="max")
    assert int(dnd.size(mem)) == 2
    out = dnd.lookup(mem, jnp.asarray([[0.0, 1.0]]), k=1)
    assert float(out.value[0, 0]) == 5.0


def test_tolerance_merges_near_keys_and_mask_skips_writes():
    mem = dnd.write(dnd.init(4, 1), jnp.asarray([[0.0], [0.05], [1.0]]), jnp.asarray([1.0, 2.0, 3.0]),
                    rule="max", tolerance=0.01)
    assert int(dnd.size(mem)) == 2
    mem2 = dnd.write(mem, jnp.asarray([[5.0]]), jnp.asarray([1.0]), mask=jnp.asarray([False]))
    assert int(dnd.size(mem2)) == 2 and int(mem2.clock) == int(mem.clock)


def test_gradients_reach_keys_values_and_queries():
    mem = _filled()
    q = jnp.asarray([[0.2, 0.1]])

    def loss(m, q):
        return jnp.sum((dnd.lookup(m, q, k=2).value - 10.0) ** 2)

    g_mem, g_q = jax.grad(loss, argnums=(0, 1), allow_int=True)(mem, q)  # stamps: int, no gradient
    out = dnd.lookup(mem, q, k=2)
    used = np.zeros(4, bool)
    used[np.asarray(out.index[0])] = True
    gk = np.abs(np.asarray(g_mem.keys)).sum(-1)
    assert np.all(gk[used] > 0) and np.all(gk[~used] == 0)  # the neighbours' keys, only they
    # d loss / d value_i = 2 (v - 10) w_i
    resid = 2 * (float(out.value[0, 0]) - 10.0)
    want = np.zeros(4)
    want[np.asarray(out.index[0])] = resid * np.asarray(out.weights[0])
    np.testing.assert_allclose(np.asarray(g_mem.values[:, 0]), want, rtol=1e-5)
    assert np.abs(np.asarray(g_q)).sum() > 0
    # one SGD step on the keys moves them and lowers the loss (NEC trains its keys this way)
    stepped = mem.replace(keys=mem.keys - 0.01 * g_mem.keys, values=mem.values - 0.01 * g_mem.values)
    assert not np.allclose(stepped.keys, mem.keys)
    assert float(loss(stepped, q)) < float(loss(mem, q))


def test_jit_vmap_and_scan_carry():
    capacity, n_env = 6, 3
    mems = jax.vmap(lambda _: dnd.init(capacity, 2))(jnp.arange(n_env))
    keys = jax.random.normal(jax.random.key(0), (n_env, 10, 2))
    vals = jax.random.normal(jax.random.key(1), (n_env, 10))

    @jax.jit
    def run(mems, keys, vals):
        def body(m, kv):
            k, v = kv  # [n_env, 2], [n_env]
            m = jax.vmap(lambda mm, kk, vv: dnd.write(mm, kk[None], vv[None]))(m, k, v)
            out = jax.vmap(lambda mm, kk: dnd.lookup(mm, kk[None], k=2).value[0, 0])(m, k)
            return m, out

        return jax.lax.scan(body, mems, (keys.swapaxes(0, 1), vals.swapaxes(0, 1)))

    mems2, looked = run(mems, keys, vals)
    assert mems2.keys.shape == (n_env, capacity, 2) and looked.shape == (10, n_env)
    np.testing.assert_array_equal(np.asarray(dnd.size(mems2)), [capacity] * n_env)
    # each env's memory is its own: the same as writing that env alone
    alone = dnd.write(dnd.init(capacity, 2), keys[1], vals[1])
    np.testing.assert_allclose(np.asarray(mems2.keys[1]), np.asarray(alone.keys))
    # every write's key was just written: its own lookup finds it at distance 0, with (nearly) all the weight
    assert np.all(np.asarray(looked) != 0)


def test_bad_input_is_refused_by_name():
    mem = dnd.init(3, 4)
    with pytest.raises(ValueError, match="k=5 exceeds the memory's capacity=3"):
        dnd.lookup(mem, jnp.zeros((1, 4)), k=5)
    with pytest.raises(ValueError, match="key_dim=4"):
        dnd.lookup(mem, jnp.zeros((1, 3)), k=1)
    with pytest.raises(ValueError, match="key_dim=4"):
        dnd.write(mem, jnp.zeros((2, 5)), jnp.zeros(2))
    with pytest.raises(ValueError, match="value_dim=1"):
        dnd.write(mem, jnp.zeros((2, 4)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        dnd.init(0, 4)
    with pytest.raises(ValueError, match="rule must be one of"):
        dnd.write(mem, jnp.zeros((1, 4)), jnp.zeros(1), rule="min")


def _reference_write(keys, values, stamps, clock, new_keys, new_values, rule, alpha, mask):
    """The write rule, one key at a time in NumPy (the definition the batched write must match)."""
    keys, values, stamps = keys.copy(), values.copy(), stamps.copy()
    for key, value, on in zip(new_keys, new_values, mask):
        if not on:
            continue
        d = np.where(stamps >= 0, ((keys - key) ** 2).sum(-1), np.inf)
        nearest = int(np.argmin(d))
        if stamps[nearest] >= 0 and d[nearest] <= 0.0:
            old = values[nearest]
            values[nearest] = {"max": np.maximum(old, value), "q": old + alpha * (value - old), "replace": value}[rule]
            slot = nearest
        else:
            slot = int(np.argmin(stamps))
            keys[slot], values[slot] = key, value
        stamps[slot] = clock
        clock += 1
    return keys, values, stamps, clock


@pytest.mark.parametrize("capacity, n, rule", [(16, 10, "max"), (16, 16, "q"), (6, 10, "replace")])
def test_batched_write_matches_one_key_at_a_time(capacity, n, rule):
    """Duplicates within the batch and against the memory, evictions of slots this batch wrote, masked
    writes, a touched (recently used) entry: the batched write gives the sequential result exactly."""
    rng = np.random.default_rng(capacity + n)
    pool = rng.integers(-2, 3, (12, 3)).astype(np.float32)  # few distinct keys: many duplicates
    mem = dnd.write(dnd.init(capacity, 3), jnp.asarray(pool[rng.integers(0, 12, capacity // 2)]),
                    jnp.asarray(rng.standard_normal(capacity // 2).astype(np.float32)))
    mem = dnd.touch(mem, jnp.asarray([0]))
    for _ in range(3):
        new_keys = pool[rng.integers(0, 12, n)]
        new_values = rng.standard_normal((n, 1)).astype(np.float32)
        mask = rng.random(n) > 0.2
        want = _reference_write(np.asarray(mem.keys), np.asarray(mem.values), np.asarray(mem.stamps),
                                int(mem.clock), new_keys, new_values, rule, 0.25, mask)
        mem = dnd.write(mem, jnp.asarray(new_keys), jnp.asarray(new_values), rule=rule, alpha=0.25, mask=jnp.asarray(mask))
        np.testing.assert_array_equal(np.asarray(mem.keys), want[0])
        np.testing.assert_allclose(np.asarray(mem.values), want[1], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(mem.stamps), want[2])
        assert int(mem.clock) == want[3]


def test_lookup_exports_to_onnx_with_the_memory_as_inputs():
    """The kNN lookup inside an ONNX graph (TopK, Gather), the memory fed as inputs: onnxruntime
    matches JAX, neighbours and values, on a partly filled memory."""
    import onnx
    from onnx import helper

    from deploy.export import OPSET, _ort_session, _trace_graph

    cap, dim = 32, 5
    rng = np.random.default_rng(0)
    mem = dnd.write(dnd.init(cap, dim), jnp.asarray(rng.standard_normal((20, dim)), jnp.float32),
                    jnp.asarray(rng.standard_normal(20), jnp.float32))
    q = rng.standard_normal((7, dim)).astype(np.float32)

    def fn(queries, keys, values, stamps, clock):
        m = dnd.Memory(keys=keys, values=values, stamps=stamps, clock=clock)
        out = dnd.lookup(m, queries, k=4)
        return out.value, out.index

    feeds = {"queries": q, "keys": np.asarray(mem.keys), "values": np.asarray(mem.values),
             "stamps": np.asarray(mem.stamps), "clock": np.asarray(mem.clock)}
    specs = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in feeds.values()]
    t, inputs, outputs = _trace_graph(fn, list(feeds), specs, ["value", "index"])
    graph = helper.make_graph(t.nodes, "dnd_lookup", inputs, outputs, t.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    value, index = _ort_session(model.SerializeToString()).run(None, feeds)
    want_value, want_index = fn(*(jnp.asarray(v) for v in feeds.values()))
    np.testing.assert_array_equal(index, np.asarray(want_index))
    np.testing.assert_allclose(value, np.asarray(want_value), atol=1e-5)


def test_lookup_each_equals_lookup_in_each_querys_own_memory():
    keys = jax.random.normal(jax.random.PRNGKey(3), (3, 16, 4))
    mems = [dnd.write(dnd.init(20, 4), keys[m], jnp.arange(16.0) + 100 * m, rule="replace") for m in range(3)]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *mems)
    q = jax.random.normal(jax.random.PRNGKey(4), (5, 4))
    which = jnp.asarray([2, 0, 1, 2, 0])
    each = dnd.lookup_each(batch, which, q, 3)
    for b in range(5):
        one = dnd.lookup(mems[int(which[b])], q[b:b + 1], 3)
        np.testing.assert_array_equal(np.asarray(each.index[b]), np.asarray(one.index[0]))
        np.testing.assert_allclose(np.asarray(each.value[b]), np.asarray(one.value[0]), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(each.weights[b]), np.asarray(one.weights[0]), rtol=1e-6)
    # gradients reach the chosen memories' neighbour keys and values, and nothing else
    g = jax.grad(lambda k: jnp.sum(dnd.lookup_each(batch.replace(keys=k), which, q, 3).value))(batch.keys)
    touched = np.zeros((3, 20), bool)
    for b in range(5):
        touched[int(which[b]), np.asarray(each.index[b])] = True
    assert np.all(np.abs(np.asarray(g)).sum(-1)[~touched] == 0) and np.abs(np.asarray(g)).sum() > 0


def test_write_one_and_read_nearest_equal_write_and_lookup_with_one_key():
    mem = dnd.init(3, 2, value_dim=2)
    keys = jnp.asarray([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [3.0, 3.0], [5.0, 5.0]])
    vals = jnp.arange(12.0).reshape(6, 2)
    mask = [True, True, True, False, True, True]
    ref, one = mem, mem
    assert float(dnd.read_nearest(one, keys[0])[1]) == np.inf  # empty memory: nothing found
    np.testing.assert_array_equal(np.asarray(dnd.read_nearest(one, keys[0])[0]), [0.0, 0.0])
    for i in range(6):  # a duplicate (row 2), a masked write (row 3), then overflow into the LRU slots
        ref = dnd.write(ref, keys[i:i + 1], vals[i:i + 1], rule="replace", mask=jnp.asarray([mask[i]]))
        one = dnd.write_one(one, keys[i], vals[i], mask=mask[i])
        for f in ("keys", "values", "stamps", "clock"):
            np.testing.assert_array_equal(np.asarray(getattr(one, f)), np.asarray(getattr(ref, f)))
    q = jnp.asarray([2.9, 3.2])
    got, d2 = dnd.read_nearest(one, q)
    look = dnd.lookup(one, q[None], 1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(look.value[0]), rtol=1e-6)
    np.testing.assert_allclose(float(d2), float(look.sq_dist[0, 0]), rtol=1e-5)
    g = jax.grad(lambda v: jnp.sum(dnd.read_nearest(one.replace(values=v), q)[0]))(one.values)
    assert np.asarray(g).sum() == 2.0 and np.count_nonzero(np.asarray(g).sum(-1)) == 1  # only the nearest
