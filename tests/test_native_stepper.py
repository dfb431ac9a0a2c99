"""The native backend's stepper (``mujoco.batch.Batch`` with the exact state in the JAX ``State``):
bit-identical to MuJoCo run directly, and the host holds nothing a run depends on."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from robots import cheetah
from sim.core import where_done
from sim.mujoco_env import MujocoEnv
from sim.wrappers import VmapEnv

N = 3
STEPS = 200
RANDOMIZE_AT, RESET_AT, KICK_AT = 80, 120, 150


def _actions(nu):
    # cheetah's ctrlrange is [-1, 1]: ctrl == action exactly, so the reference applies the same float32
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (STEPS, N, nu)).astype(np.float32)


def _run_env(env, actions):
    """200 steps with a re-randomization (all worlds), a reset (world 1) and a push (world 2)."""
    params = env.sample_params(jax.random.key(0))
    params2 = env.sample_params(jax.random.key(1))
    step = jax.jit(env.step)
    s = env.reset(jax.random.split(jax.random.key(2), N), params)
    fresh = env.reset(jax.random.split(jax.random.key(3), N), params2)
    physics, exact = [], []
    for k in range(STEPS):
        if k == RANDOMIZE_AT:
            s = s.replace(params=params2)
        if k == RESET_AT:
            s = where_done(jnp.arange(N) == 1, fresh, s)
        if k == KICK_AT:
            nv = env.env.model.nv
            kicked = jax.vmap(lambda es: env.env.kick(es, jnp.arange(nv), jnp.full((nv,), 0.5)))(s.env_state)
            s = s.replace(env_state=where_done(jnp.arange(N) == 2, kicked, s.env_state))
        s = step(s, jnp.asarray(actions[k]))
        physics.append(np.asarray(s.env_state["physics"]))
        exact.append(np.asarray(s.env_state["exact"]))
    return (params, params2, fresh), np.stack(physics), np.stack(exact), s


def test_stepper_is_bit_identical_to_mujoco_stepped_directly():
    """Each world's ``MjData`` stepped with ``mj_step`` in float64, warm start kept, on a model
    carrying its values; a reset or a push (a ``physics`` changed in JAX) starts from that float32
    state with a cold warm start; a re-randomization changes the model mid-episode."""
    env = VmapEnv(MujocoEnv(cheetah.DIR, "native"), N)
    base = env.env
    actions = _actions(base.model.nu)
    (params, params2, fresh), physics, exact, _ = _run_env(env, actions)
    m0 = copy.copy(base._pool.base)
    nq, nv = m0.nq, m0.nv

    def model_for(p, i):
        m = copy.copy(m0)
        base.resolved.apply_native(m, mujoco.MjData(m), {n: np.asarray(v[i]) for n, v in p["dynamics"].items()})
        return m

    def load(d, m, phys32):
        mujoco.mj_resetData(m, d)
        mujoco.mj_setState(m, d, phys32.astype(np.float64), mujoco.mjtState.mjSTATE_FULLPHYSICS)

    nstep = base.task.n_substeps
    start = jax.vmap(lambda s: s.env_state["physics"])(env.reset(jax.random.split(jax.random.key(2), N), params))
    for i in range(N):
        m = model_for(params, i)
        d = mujoco.MjData(m)
        load(d, m, np.asarray(start[i]))
        for k in range(STEPS):
            if k == RANDOMIZE_AT:
                m = model_for(params2, i)  # the state (and warm start) carry over
            if k == RESET_AT and i == 1:
                load(d, m, np.asarray(fresh.env_state["physics"][1]))
            if k == KICK_AT and i == 2:
                phys = physics[k - 1, 2].copy()
                phys[1 + nq:1 + nq + nv] += np.float32(0.5)
                load(d, m, phys)
            d.ctrl[:] = actions[k, i]
            for _ in range(nstep):
                mujoco.mj_step(m, d)
            want = np.empty(mujoco.mj_stateSize(m, MujocoEnv.EXACT_STATE))
            mujoco.mj_getState(m, d, want, MujocoEnv.EXACT_STATE)
            np.testing.assert_array_equal(exact[k, i].view(np.float64), want, err_msg=f"world {i}, step {k}")
            np.testing.assert_array_equal(physics[k, i], want[: physics.shape[-1]].astype(np.float32))


def test_a_fresh_process_continues_identically_from_a_saved_state():
    """The host keeps no state a run depends on: a State saved to NumPy and stepped by a new env
    (a new pool, as after a kill and resume) continues bit for bit, and stepping an old State
    again (a replay) gives the same result as the first time."""
    actions = _actions(6)
    env = VmapEnv(MujocoEnv(cheetah.DIR, "native"), N)
    *_, s = _run_env(env, actions)
    saved = jax.tree.map(np.asarray, s.replace(key=jax.random.key_data(s.key)))
    step = jax.jit(env.step)
    a = jnp.asarray(actions[:20])
    run = lambda step, s: [s := step(s, a[k]) for k in range(20)][-1]  # noqa: E731
    first = run(step, s)
    again = run(step, s)  # the pool's rows now hold first's end, not s
    other = VmapEnv(MujocoEnv(cheetah.DIR, "native"), N)
    loaded = jax.tree.map(jnp.asarray, saved)
    resumed = run(jax.jit(other.step), loaded.replace(key=jax.random.wrap_key_data(loaded.key)))
    data = lambda s: jax.tree.leaves(s.replace(key=jax.random.key_data(s.key)))  # noqa: E731
    for x, y, z in zip(data(first), data(again), data(resumed)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        np.testing.assert_array_equal(np.asarray(x), np.asarray(z))


def test_host_call_matches_pure_callback_under_nested_vmap():
    from sim.host_call import FAST, host_call

    assert FAST  # the pinned JAX exposes the fast path
    fn = lambda a: (a.astype(np.float64) * 2 + 1).astype(np.float32)[..., :2]  # noqa: E731
    out = jax.ShapeDtypeStruct((2,), jnp.float32)
    x = jnp.arange(24, dtype=jnp.float32).reshape(2, 4, 3)
    fast = jax.jit(jax.vmap(jax.vmap(lambda v: host_call(fn, out, v))))(x)
    slow = jax.jit(jax.vmap(jax.vmap(lambda v: host_call(fn, out, v, fast=False))))(x)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(slow))
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(x[..., :2] * 2 + 1))


def test_auto_backend_times_mjx_only_for_tiny_contact_free_models(tmp_path, monkeypatch):
    import sim
    from sim import backend_choice

    pend = sim.entry("pendulum-swingup").factory("native").unwrapped.model
    chee = sim.entry("cheetah-dir").factory("native").unwrapped.model
    assert backend_choice.contact_free(pend) and backend_choice.candidate(pend)
    assert not backend_choice.contact_free(chee) and not backend_choice.candidate(chee)
    monkeypatch.delenv("PROTEUS_AUTO_BACKEND", raising=False)
    monkeypatch.setenv("PROTEUS_CACHE", str(tmp_path))
    calls = []

    def fake_measure(env_id, *a, **k):
        calls.append(env_id)
        return {"native": 2.0, "mjx": 1.0}

    monkeypatch.setattr(backend_choice, "measure", fake_measure)
    assert sim.resolve_backend("pendulum-swingup") == "mjx"
    assert sim.resolve_backend("pendulum-swingup") == "mjx"  # cached: measured once
    assert calls == ["pendulum-swingup"] and (tmp_path / "backends.json").exists()
    assert sim.resolve_backend("cheetah-dir") == "native" and calls == ["pendulum-swingup"]
    assert sim.resolve_backend("bandit-k5-n10") == "jax"
    assert sim.resolve_backend("pendulum-swingup", "native") == "native"
    monkeypatch.setenv("PROTEUS_AUTO_BACKEND", "gpu")
    with pytest.raises(ValueError, match="PROTEUS_AUTO_BACKEND='gpu'"):
        sim.resolve_backend("pendulum-swingup")
