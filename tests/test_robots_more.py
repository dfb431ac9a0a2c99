"""Cheetah, ant and reacher: models, task functions, randomization and backend parity.

Everything runs on the native backend except one native-vs-MJX parity test per robot (MJX compiles
are slow on CPU).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from robots import ant, cheetah, reacher
from robots.common import suite_model
from robots.task import PhysicsView
from sim.mujoco_env import MujocoEnv
from sim.wrappers import VmapEnv
from tests.helpers import robot_batch, robot_rollout, smooth_actions, with_values

TASKS = {t.name: t for t in (cheetah.VEL, cheetah.DIR, ant.DIR, ant.GOAL, reacher.GOAL)}
ROBOTS = {"cheetah": cheetah.VEL, "ant": ant.GOAL, "reacher": reacher.GOAL}














def _view(qpos, qvel) -> PhysicsView:
    return PhysicsView(qpos=jnp.asarray(qpos, jnp.float32), qvel=jnp.asarray(qvel, jnp.float32), time=jnp.zeros((), jnp.float32))


# -- models -----------------------------------------------------------------------------------------


def test_cheetah_model_equals_the_deprecated_settotalmass_model():
    """Dropping ``settotalmass`` and calling ``mj_setTotalmass`` + ``mj_setConst`` gives the model the
    deprecated compiler path gives: every numeric array and the mass statistics agree."""
    new, old = cheetah.load_model(), suite_model("cheetah")  # the latter logs MuJoCo's deprecation warning
    assert np.allclose(new.body_mass, old.body_mass, rtol=1e-12, atol=0)
    assert new.body_mass.sum() == pytest.approx(14.0)
    differ = []
    for name in dir(old):
        if name.startswith("_"):
            continue
        a = getattr(old, name)
        if isinstance(a, np.ndarray) and a.dtype.kind in "fiu":
            b = getattr(new, name)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-10, atol=1e-12):
                differ.append(name)
    assert differ == []
    for field in ("meanmass", "meaninertia", "meansize", "extent"):
        assert getattr(new.stat, field) == pytest.approx(getattr(old.stat, field), rel=1e-10), field


def test_reacher_forward_kinematics_matches_mujoco():
    """The analytic fingertip equals MuJoCo's position of the ``finger`` body (and of its sphere)."""
    m = reacher.load_model()
    d = mujoco.MjData(m)
    finger = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "finger")
    finger_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "finger")
    rng = np.random.default_rng(0)
    tip = jax.jit(reacher.fingertip)
    for _ in range(50):
        d.qpos[:] = rng.uniform(-np.pi, np.pi, m.nq)
        mujoco.mj_forward(m, d)
        analytic = np.asarray(tip(jnp.asarray(d.qpos, jnp.float32)))
        np.testing.assert_allclose(analytic, d.xpos[finger][:2], atol=1e-5)
        np.testing.assert_allclose(analytic, d.geom_xpos[finger_geom][:2], atol=1e-5)
    # the reach is the sum of the link lengths
    assert np.linalg.norm(reacher.UPPER) + np.linalg.norm(reacher.LOWER) == pytest.approx(0.24)


def test_ant_model_is_sound():
    m = ant.load_model()
    assert m.nq == 15 and m.nv == 14 and m.nu == 8
    assert np.all(m.dof_damping[6:] > 0) and np.all(m.actuator_gear[:, 0] == 150)
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor") >= 0
    # only robot-floor contacts are possible
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    robot = [g for g in range(m.ngeom) if g != floor]
    assert all(m.geom_conaffinity[g] == 0 for g in robot)
    # left alone, it stands: settles on its feet, upright, inside the healthy height range
    d = mujoco.MjData(m)
    for _ in range(300):
        mujoco.mj_step(m, d)
    assert ant.HEALTHY_Z[0] < d.qpos[2] < ant.HEALTHY_Z[1] and d.qpos[3] > 0.99


# -- task functions -------------------------------------------------------------------------------


def test_every_task_resets_and_steps_on_native_with_named_finite_obs():
    for name, task in TASKS.items():
        env = robot_batch(task, "native", 2)
        for split in ("train", "interp", "extrap"):
            params = env.sample_params(jax.random.key(1), split)
            for pname, r in task.task_ranges.items():
                assert bool(jnp.all(r.contains(params["task"][pname], split if not r.shared else "train"))), (name, pname, split)
            obs, reward, term = robot_rollout(env, 5)(params, jax.random.split(jax.random.key(2), 2), smooth_actions(5, 2, env.action_space.shape[-1]))
            assert obs.shape == (5, 2, len(task.obs_names)), name
            assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all(), name
            assert not bool(term.any()), name


def test_cheetah_vel_reward_is_maximal_at_the_target_velocity():
    m = cheetah.load_model()
    q0, v0 = np.asarray(m.qpos0), np.zeros(m.nv)
    task = {"target_vel": jnp.float32(1.3)}
    speeds = np.linspace(-1.0, 3.0, 41)
    rewards = [float(cheetah.VEL.reward_fn(_view(q0, v0.copy() + np.eye(m.nv)[0] * v), jnp.zeros(6), task)) for v in speeds]
    assert speeds[int(np.argmax(rewards))] == pytest.approx(1.3)
    at_target = _view(q0, np.eye(m.nv)[0] * 1.3)
    assert float(cheetah.VEL.reward_fn(at_target, jnp.zeros(6), task)) == pytest.approx(0.0, abs=1e-6)
    assert float(cheetah.VEL.reward_fn(at_target, jnp.ones(6), task)) == pytest.approx(-0.3, abs=1e-6)
    # other velocity components do not count, only rootx
    sideways = _view(q0, np.ones(m.nv) * 1.3)
    assert float(cheetah.VEL.reward_fn(sideways, jnp.zeros(6), task)) == pytest.approx(0.0, abs=1e-6)


def test_cheetah_dir_reward_follows_the_sign_of_direction():
    m = cheetah.load_model()
    view = _view(m.qpos0, np.eye(m.nv)[0] * 2.0)
    for d, sign in ((0.7, 1.0), (-0.01, -1.0), (0.0, 1.0)):
        assert float(cheetah.DIR.reward_fn(view, jnp.zeros(6), {"direction": jnp.float32(d)})) == pytest.approx(2.0 * sign)
    r = cheetah.DIR.task_ranges["direction"]
    assert r.shared
    draws = np.asarray(cheetah.direction({"direction": r.sample(jax.random.key(0), "train", (4000,))}))
    assert set(np.unique(draws)) == {-1.0, 1.0} and abs(draws.mean()) < 0.05


def test_ant_terminates_when_fallen_or_flying():
    m = ant.load_model()
    q0, v0 = np.asarray(m.qpos0), np.zeros(m.nv)
    term = lambda z: bool(ant.GOAL.terminated_fn(_view(np.r_[q0[:2], z, q0[3:]], v0), {}))  # noqa: E731
    assert term(0.15) and term(1.2) and not term(0.45) and not term(float(q0[2]))
    assert bool(ant.DIR.terminated_fn(_view(q0, np.r_[np.nan, v0[1:]]), {}))
    # in the env: dropped from 1.5 m it is out of range after the first step; standing, it never is
    env = robot_batch(ant.DIR, "native", 2)
    params = with_values(env.env, [{}, {}])
    keys = jnp.stack([jax.random.key(0)] * 2)
    s = env.reset(keys, params)
    phys = s.env_state["physics"].at[0, 1 + 2].set(1.5)  # env 0: torso at 1.5 m (native layout: time, qpos...)
    s = env.step(s.replace(env_state={**s.env_state, "physics": phys}), jnp.zeros((2, 8)))
    assert bool(s.terminated[0]) and not bool(s.truncated[0]) and not bool(s.terminated[1])
    _, _, terminated = robot_rollout(env, 40)(params, keys, jnp.zeros((40, 2, 8)))
    assert not bool(terminated.any())


def test_ant_rewards():
    m = ant.load_model()
    q0 = np.asarray(m.qpos0)
    v = np.zeros(m.nv)
    v[:2] = (1.0, 2.0)
    view = _view(q0, v)
    zero = jnp.zeros(8)
    assert float(ant.DIR.reward_fn(view, zero, {"direction_deg": jnp.float32(0.0)})) == pytest.approx(1.0 + 1.0)
    assert float(ant.DIR.reward_fn(view, zero, {"direction_deg": jnp.float32(90.0)})) == pytest.approx(2.0 + 1.0, abs=1e-5)
    assert float(ant.DIR.reward_fn(view, jnp.ones(8), {"direction_deg": jnp.float32(0.0)})) == pytest.approx(2.0 - 0.5 * 0.01 * 8)
    task = {"goal_radius": jnp.float32(2.0), "goal_angle_deg": jnp.float32(90.0)}
    at_goal = _view(np.r_[0.0, 2.0, q0[2:]], np.zeros(m.nv))
    assert float(ant.GOAL.reward_fn(at_goal, zero, task)) == pytest.approx(1.0, abs=1e-5)
    assert float(ant.GOAL.reward_fn(_view(q0, np.zeros(m.nv)), zero, task)) == pytest.approx(1.0 - 2.0, abs=1e-5)


def test_ant_init_keeps_the_quaternion_and_perturbs_height_and_joints():
    m = ant.load_model()
    q0 = jnp.asarray(m.qpos0, jnp.float32)
    qpos, qvel = jax.jit(jax.vmap(ant.DIR.init_fn, (0, None, None)))(jax.random.split(jax.random.key(0), 64), q0, jnp.zeros(m.nv))
    qpos = np.asarray(qpos)
    np.testing.assert_array_equal(qpos[:, 3:7], np.broadcast_to(np.asarray(q0[3:7]), (64, 4)))
    np.testing.assert_array_equal(qpos[:, :2], 0.0)
    assert np.all(np.abs(qpos[:, 2] - float(q0[2])) <= 0.1) and qpos[:, 2].std() > 0.02
    assert np.all(np.abs(qpos[:, 7:]) <= 0.1) and qpos[:, 7:].std() > 0.02


def test_reacher_reward_and_hidden_goal():
    m = reacher.load_model()
    q = np.array([0.4, -1.1])
    tip = np.asarray(reacher.fingertip(jnp.asarray(q, jnp.float32)))
    radius, angle = float(np.linalg.norm(tip)), float(np.degrees(np.arctan2(tip[1], tip[0])))
    task = {"goal_radius": jnp.float32(radius), "goal_angle_deg": jnp.float32(angle)}
    view = _view(q, np.zeros(m.nv))
    assert float(reacher.GOAL.reward_fn(view, jnp.zeros(2), task)) == pytest.approx(0.0, abs=1e-5)
    assert float(reacher.GOAL.reward_fn(view, jnp.ones(2), task)) == pytest.approx(-0.02, abs=1e-5)
    far = {"goal_radius": jnp.float32(radius), "goal_angle_deg": jnp.float32(angle + 180.0)}
    assert float(reacher.GOAL.reward_fn(view, jnp.zeros(2), far)) == pytest.approx(-2 * radius, abs=1e-5)
    # the goal is not in the observation: same physics, different goals -> same obs
    np.testing.assert_array_equal(np.asarray(reacher.GOAL.obs_fn(view, task)), np.asarray(reacher.GOAL.obs_fn(view, far)))
    np.testing.assert_allclose(np.asarray(reacher.GOAL.obs_fn(view, task))[-2:], tip)


# -- randomization ----------------------------------------------------------------------------------


# -- backends ---------------------------------------------------------------------------------------

# robot -> (control steps, atol, dynamics params); the measured max |obs_native - obs_mjx| is in the
# docstring of test_native_and_mjx_agree
PARITY = {"cheetah": (20, 5e-2, "sampled"), "ant": (12, 2e-2, "nominal"), "reacher": (20, 1e-5, "sampled")}


@pytest.mark.parametrize("robot", list(PARITY))
def test_native_and_mjx_agree(robot):
    """Same params, initial states and small actions (scale 0.2): native MuJoCo (float64, state
    rounded to float32 between control steps) and MJX (float32) observations agree.

    Measured max |obs difference| (3 envs, CPU): cheetah 1.3e-2 over 20 steps with sampled (train)
    dynamics (tolerance 5e-2); reacher 6.6e-7 over 20 steps with sampled dynamics (tolerance 1e-5);
    ant 6.3e-3 over 12 steps with nominal dynamics (tolerance 2e-2). The ant is compared at nominal
    dynamics over 12 steps only: its foot contacts and joint limits amplify small differences (native
    MuJoCo alone goes O(1) apart within 20 steps under 1e-4 velocity noise per step), so float32 MJX
    leaves float64 native after ~12 steps (1.4 by step 20). And with randomized dynamics the two
    backends run different models by design: MJX keeps the nominal ``mj_setConst``-derived
    quantities (``body_invweight0``... which set constraint softness) while native recomputes them;
    for a torso mass ×0.6, native runs with and without that recomputation differ by O(1) in 20 steps.
    """
    task = ROBOTS[robot]
    steps, tol, dynamics = PARITY[robot]
    out = {}
    for backend in ("native", "mjx"):
        venv = VmapEnv(MujocoEnv(task, backend), 3)
        params = venv.sample_params(jax.random.key(7), "train")
        if dynamics == "nominal":
            params = {**params, "dynamics": jax.tree.map(lambda x: jnp.stack([x] * 3), venv.env.nominal_params()["dynamics"])}
        keys = jax.random.split(jax.random.key(8), 3)
        out[backend] = [np.asarray(x) for x in robot_rollout(venv, steps)(params, keys, smooth_actions(steps, 3, venv.action_space.shape[-1], 0.2))]
        assert out[backend][0].shape == (steps, 3, len(task.obs_names)) and np.isfinite(out[backend][0]).all()
    diff = np.abs(out["native"][0] - out["mjx"][0]).max()
    print(f"{robot}: max |native - mjx| obs difference over {steps} steps: {diff:.3g}")
    assert np.allclose(out["native"][0], out["mjx"][0], atol=tol, rtol=0), diff
    np.testing.assert_array_equal(out["native"][2], out["mjx"][2])
