"""MuJoCo robots behind the Env contract, on two backends.

* ``native``: MuJoCo C. Physics state is a plain array in ``mj_getState``'s ``mjSTATE_FULLPHYSICS``
  layout; the step is a batched host callback (``jax.pure_callback``) inside the jitted step, which
  runs every env of the batch on its own ``MjModel`` copy carrying that env's randomized values,
  through ``mujoco.rollout`` and its thread pool. A model copy is re-randomized (and
  ``mj_setConst`` recomputes what MuJoCo derives) only when its env's params change, i.e. at world
  resampling, never on ordinary steps.
* ``mjx``: MuJoCo-MJX in JAX; the randomized fields are written into a per-env ``mjx.Model`` (a ``vmap``
  over params gives a batch of models). MJX has no ``mj_setConst``: quantities MuJoCo derives at
  compile time (``*_invweight0``, ``actuator_acc0``), which only set constraint softness, keep their
  nominal values.

Task code (observation, reward, termination) is written once, in jnp, over :class:`PhysicsView`.
Actions are normalized to ``[-1, 1]`` per actuator and mapped onto the actuator's ``ctrlrange``.
A simulation that goes unstable (non-finite or runaway velocities), and a non-finite action (which
is not applied: the neutral action steps instead), end the episode as ``terminated`` with
``metrics["unstable"] = 1``, reward 0 and a zeroed observation, the same on both backends, so nothing
non-finite reaches the learner. On ``native``, MuJoCo's automatic reset of a diverged state
(``mjDSBL_AUTORESET``) is off in the pool's models, so a blow-up comes back as the non-finite state
MJX gives, instead of a silent jump back to the initial pose.
"""

from __future__ import annotations

import copy
import os
import threading
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from randomization.ranges import check_split
from robots.task import MujocoTask, PhysicsView
from sim.core import Box, Env, State, guard_action, new_state

UNSTABLE_QVEL = 1e4


def prepare_model(model: mujoco.MjModel) -> mujoco.MjModel:
    """Settings both backends share: energy computation off (MJX does not support it)."""
    model.opt.enableflags &= ~int(mujoco.mjtEnableBit.mjENBL_ENERGY)
    return model


class _NativePool:
    """Per-env ``MjModel`` copies, per-thread ``MjData``, a persistent rollout thread pool and
    preallocated buffers, so one batched step costs one ``mujoco.rollout`` call and nothing else."""

    def __init__(self, model: mujoco.MjModel, resolved, nthread: int | None = None):
        from mujoco import rollout

        # MuJoCo's automatic reset on a bad state would hide a blow-up (the state silently jumps back to
        # qpos0, time 0); without it the non-finite state comes back and MujocoEnv counts it, as on MJX
        self.base = copy.copy(model)
        self.base.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_AUTORESET)
        self.resolved = resolved
        self.nthread = nthread or max(1, os.cpu_count() or 1)
        self.models: list[mujoco.MjModel] = []
        self.values = np.zeros((0, 0), np.float32)  # each model copy's randomized values, flattened
        self.datas = [mujoco.MjData(model) for _ in range(self.nthread)]
        self.rollout = rollout.Rollout(nthread=self.nthread)
        self.serial = rollout.Rollout(nthread=0)  # no pool: cheaper per call for tiny models
        self.plan: dict[tuple[int, int], tuple[bool, int]] = {}  # (batch, nstep) -> (threaded, chunk)
        self.lock = threading.Lock()
        self.resamples = 0
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self.nstate = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS)

    def _buffers_for(self, batch: int, nstep: int):
        if (batch, nstep) not in self._buffers:
            m = self.base
            self._buffers[(batch, nstep)] = (
                np.zeros((batch, self.nstate)),
                np.zeros((batch, nstep, m.nu)),
                np.zeros((batch, nstep, self.nstate)),
                np.zeros((batch, nstep, m.nsensordata)),
            )
        return self._buffers[(batch, nstep)]

    def _randomize(self, values: dict[str, np.ndarray], batch: int) -> None:
        names = list(values)
        flat = np.concatenate([np.asarray(values[n], np.float32).reshape(batch, -1) for n in names], 1) if names else np.zeros((batch, 0), np.float32)
        if len(self.models) < batch or self.values.shape[1] != flat.shape[1]:
            while len(self.models) < batch:
                self.models.append(copy.copy(self.base))  # an independent mj_copyModel copy
            self.values = np.full((len(self.models), flat.shape[1]), np.nan, np.float32)
        changed = np.flatnonzero(np.any(flat != self.values[:batch], axis=1))
        for i in changed:
            self.resolved.apply_native(self.models[i], self.datas[0], {n: np.asarray(values[n][i]) for n in names})
            self.values[i] = flat[i]
        self.resamples += len(changed)

    def step(self, values: dict[str, np.ndarray], physics: np.ndarray, ctrl: np.ndarray, nstep: int) -> np.ndarray:
        with self.lock:
            batch = physics.shape[0]
            self._randomize(values, batch)
            init, control, state, sensordata = self._buffers_for(batch, nstep)
            init[:] = physics
            control[:] = np.asarray(ctrl)[:, None, :]
            plan = self.plan.get((batch, nstep)) or self._calibrate(batch, nstep)
            self._call(plan, batch, nstep)
            return state[:, -1]

    def _call(self, plan: tuple[bool, int], batch: int, nstep: int) -> None:
        init, control, state, sensordata = self._buffers_for(batch, nstep)
        threaded, chunk = plan
        runner, datas = (self.rollout, self.datas) if threaded else (self.serial, self.datas[:1])
        runner.rollout(self.models[:batch], datas, init, control, nstep=nstep, state=state,
                       sensordata=sensordata, skip_checks=True, chunk_size=chunk)

    def _calibrate(self, batch: int, nstep: int, calls: int = 5) -> tuple[bool, int]:
        """Time the thread pool against one serial call on the real inputs and keep the faster.

        Physics per call ranges from microseconds (a pendulum) to milliseconds (an ant); below a
        few hundred microseconds the pool's dispatch costs more than it saves. Every candidate
        computes the same states, so the choice changes speed only, never results.
        """
        candidates = [(True, max(1, batch // (4 * self.nthread))), (False, batch)] if self.nthread > 1 else [(False, batch)]
        best, best_t = candidates[0], float("inf")
        for plan in candidates:
            self._call(plan, batch, nstep)  # warm up
            t = time.perf_counter()
            for _ in range(calls):
                self._call(plan, batch, nstep)
            dt = time.perf_counter() - t
            if dt < best_t:
                best, best_t = plan, dt
        self.plan[(batch, nstep)] = best
        return best


class MujocoEnv(Env):
    """A :class:`MujocoTask` on the ``native`` or ``mjx`` backend (see the module docstring)."""

    def __init__(self, task: MujocoTask, backend: str = "native"):
        if backend not in ("native", "mjx"):
            raise ValueError(f"unknown MuJoCo backend {backend!r}; expected 'native' or 'mjx'")
        self.task = task
        self.backend = backend
        self.id = task.name
        self.family = task.family
        self.episode_length = task.episode_length
        self.model = prepare_model(task.load_model())
        m = self.model
        self.resolved = task.randomization.resolve(m)
        self.observation_space = Box(names=task.obs_names, low=-float("inf"), high=float("inf"))
        names = tuple(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f"actuator_{i}" for i in range(m.nu))
        self.action_space = Box(names=names, low=-1.0, high=1.0)
        lo, hi = m.actuator_ctrlrange[:, 0], m.actuator_ctrlrange[:, 1]
        limited = m.actuator_ctrllimited.astype(bool)
        self._ctrl_mid = jnp.asarray(np.where(limited, (lo + hi) / 2, 0.0), jnp.float32)
        self._ctrl_half = jnp.asarray(np.where(limited, (hi - lo) / 2, 1.0), jnp.float32)
        self.control_dt = float(m.opt.timestep) * task.n_substeps
        self._qpos0 = jnp.asarray(m.qpos0, jnp.float32)
        self.nstate = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        if backend == "native":
            self._pool = _NativePool(m, self.resolved)
        else:
            from mujoco import mjx

            self._mjx = mjx
            self._mx = mjx.put_model(m)

    # -- params ---------------------------------------------------------------------------------
    def default_ranges(self):
        """The randomization and task ranges as data: ``{"dynamics": {term: bounds}, "task": {name: bounds}}``."""
        return {"dynamics": self.resolved.bounds(), "task": {n: r.bounds() for n, r in self.task.task_ranges.items()}}

    def sample_params(self, key, split="train", ranges=None):
        check_split(split)
        k_dyn, k_task = jax.random.split(key)
        keys = jax.random.split(k_task, max(len(self.task.task_ranges), 1))
        task = {
            name: r.sample(k, split, (), None if ranges is None else ranges["task"][name])
            for k, (name, r) in zip(keys, self.task.task_ranges.items())
        }
        dyn = self.resolved.sample(k_dyn, split, None if ranges is None else ranges["dynamics"])
        return {"dynamics": dyn, "task": task}

    def nominal_params(self):
        """The unrandomized world (task parameters at the middle of their training range)."""
        task = {n: jnp.asarray(sum(r.train) / 2, jnp.float32) for n, r in self.task.task_ranges.items()}
        return {"dynamics": self.resolved.nominal_values(), "task": task}

    def param_ranges(self):
        return {**self.task.randomization.ranges(), **self.task.task_ranges}

    def param_values(self, params):
        out = {}
        for term in self.task.randomization.terms:
            out[term.name] = params["dynamics"][term.name]
        out.update(params["task"])
        return out

    def split_description(self):
        return {
            split: " · ".join(f"{n} {r.describe()[split]}" for n, r in self.param_ranges().items())
            for split in ("train", "interp", "extrap")
        }

    # -- physics --------------------------------------------------------------------------------
    def _view(self, physics) -> PhysicsView:
        nq, nv = self.model.nq, self.model.nv
        if self.backend == "native":
            return PhysicsView(qpos=physics[1 : 1 + nq], qvel=physics[1 + nq : 1 + nq + nv], time=physics[0])
        return PhysicsView(qpos=physics.qpos, qvel=physics.qvel, time=physics.time)

    def _initial_physics(self, qpos, qvel):
        if self.backend == "native":
            phys = jnp.zeros((self.nstate,), jnp.float32)
            return phys.at[1 : 1 + self.model.nq].set(qpos).at[1 + self.model.nq : 1 + self.model.nq + self.model.nv].set(qvel)
        data = self._mjx.make_data(self._mx)
        return data.replace(qpos=qpos, qvel=qvel)

    def _physics_step(self, physics, ctrl, dynamics):
        if self.backend == "native":
            pool, nstep = self._pool, self.task.n_substeps
            # one packed float32 array crosses to the host: pure_callback pays per argument
            names = list(dynamics)
            sizes = [int(np.prod(dynamics[n].shape[-1:])) if dynamics[n].ndim else 1 for n in names]
            nphys = physics.shape[-1]
            packed = jnp.concatenate(
                [dynamics[n].reshape(dynamics[n].shape[:-1] + (-1,)).astype(jnp.float32) for n in names]
                + [physics.astype(jnp.float32), ctrl.astype(jnp.float32)], -1)
            splits = np.cumsum(sizes + [nphys])

            def host(packed):
                packed = np.asarray(packed)
                lead = packed.shape[:-1]  # any leading batch shape (nested vmaps: tasks x envs)
                packed = packed.reshape(-1, packed.shape[-1])
                parts = np.split(packed, splits, axis=-1)
                values = dict(zip(names, parts[: len(names)]))
                with np.errstate(over="ignore", invalid="ignore"):  # a blow-up: _finish counts it
                    out = pool.step(values, parts[-2], parts[-1], nstep).astype(np.float32)
                return out.reshape(lead + out.shape[-1:])

            out_type = jax.ShapeDtypeStruct(physics.shape, jnp.float32)
            return jax.pure_callback(host, out_type, packed, vmap_method="expand_dims")
        model = self.resolved.apply_mjx(self._mx, dynamics)
        data = physics.replace(ctrl=ctrl)

        def sub(d, _):
            return self._mjx.step(model, d), None

        data, _ = jax.lax.scan(sub, data, None, length=self.task.n_substeps)
        return data

    def _finish(self, state: State, physics, action, fault) -> State:
        """The State after a physics step; ``fault``: the action was invalid (and not applied)."""
        view = self._view(physics)
        task_params = state.params["task"]
        finite = jnp.all(jnp.isfinite(view.qpos)) & jnp.all(jnp.isfinite(view.qvel))
        unstable = fault | ~finite | jnp.any(jnp.abs(view.qvel) > UNSTABLE_QVEL)
        safe = PhysicsView(
            qpos=jnp.where(unstable, self._qpos0, view.qpos),
            qvel=jnp.where(unstable, 0.0, view.qvel),
            time=view.time,
        )
        obs = jnp.where(unstable, 0.0, self.task.obs_fn(safe, task_params).astype(jnp.float32))
        reward = jnp.where(unstable, 0.0, self.task.reward_fn(safe, action, task_params)).astype(jnp.float32)
        terminated = unstable | self.task.terminated_fn(safe, task_params)
        t = state.env_state["t"] + 1
        return state.replace(
            obs=obs,
            reward=reward,
            terminated=terminated,
            truncated=(t >= self.episode_length) & ~terminated,
            env_state={"physics": physics, "t": t},
            metrics={"unstable": unstable.astype(jnp.float32)},
        )

    def kick(self, env_state, dofs, dqvel):
        """Add ``dqvel`` to the velocities of ``dofs`` (a push)."""
        physics = env_state["physics"]
        if self.backend == "native":
            start = 1 + self.model.nq
            physics = physics.at[start + jnp.asarray(dofs)].add(dqvel.astype(physics.dtype))
        else:
            physics = physics.replace(qvel=physics.qvel.at[jnp.asarray(dofs)].add(dqvel))
        return {**env_state, "physics": physics}

    # -- contract -------------------------------------------------------------------------------
    def reset(self, key, params):
        qpos, qvel = self.task.init_fn(key, self._qpos0, jnp.zeros((self.model.nv,), jnp.float32))
        physics = self._initial_physics(qpos, qvel)
        view = self._view(physics)
        obs = self.task.obs_fn(view, params["task"]).astype(jnp.float32)
        env_state = {"physics": physics, "t": jnp.zeros((), jnp.int32)}
        return new_state(obs, params, env_state, key, metrics={"unstable": jnp.zeros((), jnp.float32)})

    def step(self, state, action):
        action, fault = guard_action(self.action_space, self.check_action(action))
        action = jnp.clip(action, -1.0, 1.0)
        ctrl = self._ctrl_mid + self._ctrl_half * action
        physics = self._physics_step(state.env_state["physics"], ctrl, state.params["dynamics"])
        return self._finish(state, physics, action, fault)
