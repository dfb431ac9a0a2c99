"""MuJoCo robots: randomization changes the physics, backends agree, bad input is named."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from randomization.ranges import SplitRange
from randomization.spec import RandomizationSpec, Term
from robots import ant, cartpole, cheetah, pendulum, reacher
from sim.mujoco_env import MujocoEnv
from sim.wrappers import VmapEnv
from tests.helpers import robot_batch, robot_rollout, smooth_actions, with_values

ROBOTS = {"pendulum": pendulum.SWINGUP, "cartpole": cartpole.BALANCE}
# every robot model, for the per-term physics test (tasks of one robot share its randomization)
ALL_ROBOTS = {**ROBOTS, "reacher": reacher.GOAL, "cheetah": cheetah.VEL, "ant": ant.GOAL}








def _period(obs_angle_cos, obs_angle_sin, dt):
    angle = np.unwrap(np.arctan2(obs_angle_sin, obs_angle_cos))
    swing = angle - angle.mean()
    crossings = np.where(np.diff(np.sign(swing)) != 0)[0]
    return 2 * np.mean(np.diff(crossings)) * dt


def test_pendulum_physics_meaning():
    """A longer pendulum swings slower; more damping dissipates faster; a weaker motor moves it less."""
    task = dataclasses.replace(pendulum.SWINGUP, init_fn=lambda key, q, v: (q.at[0].set(jnp.pi - 0.3), v))
    env = robot_batch(task, "native", 5)
    values = [{}, {"body_ipos[pole][2]": 1.3}, {"dof_damping[hinge]": 3.0}, {}, {"actuator_gainprm[torque][0]": 0.8}]
    params = with_values(env.env, values)
    keys = jnp.stack([jax.random.key(0)] * 5)
    acts = jnp.zeros((150, 5, 1)).at[:, 3:, 0].set(0.3)
    obs, *_ = robot_rollout(env, 150)(params, keys, acts)
    obs = np.asarray(obs)
    dt = env.env.control_dt
    p_nom, p_long = _period(obs[:, 0, 0], obs[:, 0, 1], dt), _period(obs[:, 1, 0], obs[:, 1, 1], dt)
    assert p_long > 1.05 * p_nom, (p_nom, p_long)
    amp = lambda k: np.abs(obs[100:, k, 2]).max()  # noqa: E731 angular speed late in the swing
    assert amp(2) < 0.8 * amp(0)
    # constant torque: a weaker motor shifts the hanging equilibrium less
    shift = lambda k: np.abs(np.arctan2(obs[-50:, k, 1], obs[-50:, k, 0]) - np.pi % (2 * np.pi)).mean()  # noqa: E731
    assert abs(obs[:, 4, 2] - obs[:, 3, 2]).max() > 1e-3 and shift(4) != pytest.approx(shift(3))


EXTRA_TERMS = [
    Term("dof_armature", ("hinge",), SplitRange("armature +", (0.0, 0.2)), mode="add"),
    Term("dof_frictionloss", ("hinge",), SplitRange("friction loss +", (0.0, 0.3)), mode="add"),
    Term("jnt_range", ("hinge",), SplitRange("hinge range", (-0.5, 0.5)), mode="set", columns=(0,)),
    Term("actuator_biasprm", ("torque",), SplitRange("bias", (-2.0, -0.0001)), mode="set", columns=(1,)),
    Term("actuator_gear", ("torque",), SplitRange("gear ×", (0.3, 3.0)), columns=(0,)),
    Term("opt.gravity", (), SplitRange("gravity ×", (0.5, 1.5)), columns=(2,)),
]


@pytest.mark.parametrize("term", EXTRA_TERMS, ids=lambda t: t.name)
def test_other_dynamics_terms_change_the_physics(term):
    task = dataclasses.replace(pendulum.SWINGUP, name=f"pendulum-{term.field}", randomization=RandomizationSpec((term,)))
    if term.field == "jnt_range":  # a limited hinge, so its range matters
        base = task.load_model

        def load():
            m = base()
            m.jnt_limited[0] = 1
            m.jnt_range[0] = (-3.0, 3.0)
            return m

        task = dataclasses.replace(task, load_model=load)
    if term.field == "actuator_biasprm":  # an affine-bias (position-servo-like) actuator
        base2 = task.load_model

        def load2():
            m = base2()
            m.actuator_biastype[0] = 1
            return m

        task = dataclasses.replace(task, load_model=load2)
    env = VmapEnv(MujocoEnv(task, "native"), 2)
    lo, hi = term.range.train
    params = with_values(env.env, [{term.name: lo}, {term.name: hi}])
    keys = jnp.stack([jax.random.key(3)] * 2)
    obs, *_ = robot_rollout(env, 60)(params, keys, smooth_actions(60, 2, 1, seed=1) * 0 + 0.8)
    assert np.abs(np.asarray(obs[:, 0] - obs[:, 1])).max() > 1e-3, term.name


def test_geom_friction_changes_contact_physics():
    """A box sliding on a plane stops sooner with more friction (MuJoCo takes the larger friction
    of the two geoms, so the box's own is low)."""
    import mujoco

    from robots.task import MujocoTask

    xml = """<mujoco><option timestep="0.01"/><worldbody><geom name="floor" type="plane" size="5 5 .1"/>
    <body name="box" pos="0 0 .05"><freejoint/><geom name="box" type="box" size=".1 .1 .05" mass="1" friction=".1"/>
    </body></worldbody></mujoco>"""
    task = MujocoTask(
        name="slide", family="test", load_model=lambda: mujoco.MjModel.from_xml_string(xml), obs_names=("x", "vx"),
        obs_fn=lambda v, t: jnp.stack([v.qpos[0], v.qvel[0]]), reward_fn=lambda v, a, t: jnp.zeros(()),
        init_fn=lambda k, q, v: (q, v.at[0].set(2.0)),
        n_substeps=5, episode_length=100,
        randomization=RandomizationSpec((Term("geom_friction", ("floor",), SplitRange("mu ×", (0.2, 0.8)), columns=(0,)),)),
    )
    env = VmapEnv(MujocoEnv(task, "native"), 2)
    params = with_values(env.env, [{"geom_friction[floor][0]": 0.2}, {"geom_friction[floor][0]": 0.8}])
    obs, *_ = robot_rollout(env, 20)(params, jnp.stack([jax.random.key(0)] * 2), jnp.zeros((20, 2, 0)))
    x_low, x_high = float(obs[-1, 0, 0]), float(obs[-1, 1, 0])
    assert x_low > x_high + 0.1, (x_low, x_high)


@pytest.mark.parametrize("robot", list(ROBOTS))
def test_native_and_mjx_agree(robot):
    """Same params, same actions: native MuJoCo C and MJX trajectories agree over 40 control steps."""
    task = ROBOTS[robot]
    trajs = {}
    for backend in ("native", "mjx"):
        env = robot_batch(task, backend, 3)
        params = env.sample_params(jax.random.key(7), "train")
        keys = jax.random.split(jax.random.key(8), 3)
        trajs[backend] = np.asarray(robot_rollout(env, 40)(params, keys, smooth_actions(40, 3, env.action_space.shape[0], 0.3))[0])
    np.testing.assert_allclose(trajs["native"], trajs["mjx"], atol=2e-3)


def test_native_models_are_rerandomized_only_when_params_change():
    env = VmapEnv(MujocoEnv(pendulum.SWINGUP, "native"), 3)
    pool = env.env._pool
    params = env.sample_params(jax.random.key(0))
    s = env.reset(jax.random.key(1), params)
    step = jax.jit(env.step)
    for _ in range(5):
        s = step(s, jnp.zeros((3, 1)))
    jax.block_until_ready(s.obs)
    assert pool.resamples == 3
    s = step(s.replace(params=env.sample_params(jax.random.key(2))), jnp.zeros((3, 1)))
    jax.block_until_ready(s.obs)
    assert pool.resamples == 6
    # the worlds' models hold the sampled masses; mj_setConst refreshed the derived subtree mass
    masses = np.asarray(s.params["dynamics"]["body_mass[pole]"])[:, 0]
    for i in range(3):
        m = pool.model_of(i)
        assert m.body_mass[1] == pytest.approx(masses[i], rel=1e-6)
        assert m.body_subtreemass[1] == pytest.approx(masses[i], rel=1e-6)
    with pytest.raises(IndexError, match="world 3 out of range"):
        pool.model_of(3)


@pytest.mark.parametrize("backend", ["native", "mjx"])
def test_unstable_simulation_is_reset_and_counted(backend):
    spec = RandomizationSpec((Term("actuator_gear", ("torque",), SplitRange("gear ×", (1e9, 2e9)), columns=(0,)),))
    task = dataclasses.replace(pendulum.SWINGUP, name="pendulum-unstable", randomization=spec)
    env = sim.AutoReset(VmapEnv(MujocoEnv(task, backend), 2), episodes_per_world=None)
    params = env.sample_params(jax.random.key(0))
    s = env.reset(jax.random.key(1), params)
    step = jax.jit(env.step)
    unstable = 0.0
    for _ in range(5):
        s = step(s, jnp.ones((2, 1)))
        unstable += float(s.metrics["unstable"].sum())
        assert np.isfinite(np.asarray(s.obs)).all() and np.isfinite(np.asarray(s.info["final_obs"])).all()
        assert np.isfinite(np.asarray(s.reward)).all()
    assert unstable >= 2
    assert bool(jnp.all(s.terminated | ~(s.metrics["unstable"] > 0)))


def test_bad_specs_and_backends_are_named():
    with pytest.raises(ValueError, match="no body named 'polee'; valid body names: world, pole"):
        RandomizationSpec((Term("body_mass", ("polee",), SplitRange("m", (0.5, 1.5))),)).resolve(pendulum.SWINGUP.load_model())
    with pytest.raises(ValueError, match="unknown randomized field 'body_masses'; valid fields: body_mass"):
        Term("body_masses", ("pole",), SplitRange("m", (0.5, 1.5)))
    with pytest.raises(ValueError, match=r"body_mass\[pole\]: range low -0.5 would make body_mass negative"):
        Term("body_mass", ("pole",), SplitRange("m", (-0.5, 1.5)))
    with pytest.raises(ValueError, match=r"geom_friction\[floor\]: range low -0.1 would make geom_friction negative"):
        Term("geom_friction", ("floor",), SplitRange("mu", (-0.1, 1.5)), mode="set")
    with pytest.raises(ValueError, match="train range has low 2.0 >= high 1.0"):
        Term("body_mass", ("pole",), SplitRange("m", (2.0, 1.0)))
    with pytest.raises(ValueError, match=r"columns \[5\] out of range for body_ipos with 3 columns"):
        RandomizationSpec((Term("body_ipos", ("pole",), SplitRange("c", (0.5, 1.5)), columns=(5,)),)).resolve(pendulum.SWINGUP.load_model())
    with pytest.raises(ValueError, match="unknown MuJoCo backend 'gpu'"):
        MujocoEnv(pendulum.SWINGUP, "gpu")
    with pytest.raises(ValueError, match=r"pendulum-swingup runs on backend\(s\) native, mjx, not 'jax'"):
        sim.make("pendulum-swingup", backend="jax")


def test_native_pool_keeps_the_faster_plan_with_identical_states():
    """The pool times its thread pool against the caller's thread alone once per batch shape; both give
    bit-identical states."""
    env = sim.make("pendulum-swingup", batch_size=4, trial=False, backend="native")
    pool = env.unwrapped._pool
    params = env.sample_params(jax.random.key(0))
    s = env.reset(jax.random.key(1), params)
    step = jax.jit(env.step)
    a = jnp.full((4, 1), 0.3)
    s1 = step(s, a)
    (plan,) = [p for k, p in pool.plan.items() if k[0] == 4]
    pool.plan = {k: (1 if p > 1 else max(2, pool.nthread)) for k, p in pool.plan.items()}  # force the other plan
    s2 = step(s, a)
    np.testing.assert_array_equal(np.asarray(s1.obs), np.asarray(s2.obs))
    for x, y in zip(jax.tree.leaves(s1.env_state), jax.tree.leaves(s2.env_state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert plan in (1, pool.nthread)


def test_rollout_collector_vmapped_over_tasks_on_the_native_backend():
    """Tasks x envs on native MuJoCo: ``vmap`` of the shared collector over a task axis (nested
    host-callback batches) equals running each task's batch on its own."""
    from meta_rl.networks import Policy, PolicySpec
    from meta_rl.rollout import collect, start

    env = sim.make("pendulum-swingup", batch_size=3, mode="fixed", backend="native")
    policy = Policy(PolicySpec.for_env(env, "mlp", hidden=(8,), normalize_obs=False))
    params = policy.init(jax.random.key(0))

    def one(key):
        _, traj, _ = collect(env, policy, params, start(env, policy, key), key, 12)
        return traj.reward

    keys = jax.random.split(jax.random.key(1), 2)
    both = jax.jit(jax.vmap(one))(keys)
    assert both.shape == (2, 12, 3)
    for i in range(2):
        np.testing.assert_allclose(np.asarray(both[i]), np.asarray(jax.jit(one)(keys[i])), rtol=1e-5, atol=1e-5)
    grid = sim.make("pendulum-swingup", batch_size=(2, 3), mode="fresh", backend="native")
    s = grid.reset(jax.random.key(0), grid.sample_params(jax.random.key(1)))
    s = jax.jit(grid.step)(s, jnp.zeros((2, 3, 1)))
    assert s.obs.shape[:2] == (2, 3) and np.isfinite(np.asarray(s.obs)).all()


def test_randomization_ranges_are_data_moved_without_recompiling():
    """Guided randomization moves the ranges inside a jitted loop: new worlds follow the moved
    bounds and nothing is traced again."""
    from sim.wrappers import RANGES, set_ranges

    env = sim.make("pendulum-swingup", batch_size=8, mode="fresh", backend="native")
    ranges = env.default_ranges()
    term = next(iter(ranges["env"]["dynamics"]))  # the pole's mass scale
    traces = []

    @jax.jit
    def draw(key, r):
        traces.append(1)
        return env.sample_params(key, ranges=r)

    same = draw(jax.random.key(0), ranges)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(env.sample_params(jax.random.key(0)))):
        np.testing.assert_array_equal(a, b)
    b = ranges["env"]["dynamics"][term]
    moved = jax.tree.map(jnp.asarray, ranges)
    moved["env"]["dynamics"][term] = {**b, "train": jnp.asarray([7.0, 7.5]), "interp": jnp.asarray([7.2, 7.3])}
    vals = np.asarray(draw(jax.random.key(1), moved)["env"]["dynamics"][term])
    assert len(traces) == 1 and vals.min() >= 7.0 and vals.max() <= 7.5
    # in the auto-resetting env: worlds redrawn after set_ranges use the moved bounds, same compile
    s = env.reset(jax.random.key(2), env.sample_params(jax.random.key(3)))
    assert RANGES in s.info
    step = jax.jit(env.step)
    s = step(set_ranges(s, moved), jnp.zeros((8, 1)))
    n = step._cache_size()
    for _ in range(env.unwrapped.episode_length):
        s = step(s, jnp.zeros((8, 1)))
    assert step._cache_size() == n
    assert np.asarray(s.params["env"]["dynamics"][term]).min() >= 7.0
