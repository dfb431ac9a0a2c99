"""MuJoCo robots behind the Env contract, on two backends.

* ``native``: MuJoCo C. The envs of a batch are the simulations of a ``mujoco.batch.Batch``, stepped
  in place on its thread pool from one host call per control step inside the jitted step
  (:mod:`sim.host_call`). They share one model; each env's randomized fields are per-simulation
  (``Batch.expand``), rewritten (and ``mj_setConst`` recomputing what MuJoCo derives, per simulation)
  only when its env's params change, i.e. at world resampling, never on ordinary steps. The state
  lives in the JAX ``State``, exactly: ``env_state["exact"]`` holds MuJoCo's float64
  ``mjSTATE_FULLPHYSICS`` and the solver's warm start (``qacc_warmstart``) as uint32 bits, and ``env_state["physics"]`` their float32 rounding
  (``mjSTATE_FULLPHYSICS`` layout: time, qpos, qvel, act...), which the task functions read and JAX
  code may edit (resets, pushes). A step continues from ``exact`` while ``physics`` is still its
  rounding, and starts from ``physics`` with a cold warm start once JAX changed it. So every step is
  a pure function of the ``State``: the host keeps no state a run depends on (a replayed, restored or
  resumed ``State`` steps bit for bit as the first time), each world steps exactly as its own
  ``MjData`` under ``mj_step`` would, and nothing is rounded or reset between control steps.
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
from mujoco import batch as mujoco_batch

from randomization.ranges import check_split
from robots.task import MujocoTask, PhysicsView
from sim.core import Box, Dict, Env, State, guard_action, new_state
from sim.host_call import host_call

UNSTABLE_QVEL = 1e4
VISUAL_KEY = 0x5649  # folded into a world's key for its appearance: the same key draws the same dynamics


def prepare_model(model: mujoco.MjModel) -> mujoco.MjModel:
    """Settings both backends share: energy computation off (MJX does not support it)."""
    model.opt.enableflags &= ~int(mujoco.mjtEnableBit.mjENBL_ENERGY)
    return model


class _NativePool:
    """The native backend's simulations: ``mujoco.batch.Batch``es of one model whose randomized fields
    are per-simulation (``Batch.expand``).

    One call of :meth:`step` loads each world's exact state (see :class:`MujocoEnv`: float64
    ``mjSTATE_FULLPHYSICS`` + warm start) into the batch's state rows, writes the controls, runs
    ``nstep`` substeps in place on the batch's thread pool and reads the rows back: no state reset,
    no solver warm start lost, nothing recorded per substep. A world's randomized fields are
    rewritten (and ``Batch.set_const`` runs ``mj_setConst`` on it, so what MuJoCo derives follows)
    only when its values change. A world costs its state row and its randomized and derived fields,
    not a whole ``MjModel`` copy (the suite models' textures alone are 11.8 MB).
    """

    EXACT = int(mujoco.mjtState.mjSTATE_FULLPHYSICS) | int(mujoco.mjtState.mjSTATE_WARMSTART)

    def __init__(self, model: mujoco.MjModel, resolved, nthread: int | None = None):
        # MuJoCo's automatic reset on a bad state would hide a blow-up (the state silently jumps back to
        # qpos0, time 0); without it the non-finite state comes back and MujocoEnv counts it, as on MJX
        self.base = copy.copy(model)
        self.base.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_AUTORESET)
        self.resolved = resolved
        self.nthread = nthread or max(1, os.cpu_count() or 1)
        self.values = np.zeros((0, 0), np.float32)  # the latest randomized values of each world, flattened
        self.layout: tuple[tuple[str, int], ...] = ()  # their layout: (name, size) pairs
        self.batches: dict[tuple[int, int], mujoco_batch.Batch] = {}  # (nsim, nthread) -> Batch
        self.written: dict[tuple[int, int], np.ndarray] = {}  # Batch -> the values its fields hold
        self.version = 0  # bumped whenever a world's values change
        self.synced: dict[tuple[int, int], int] = {}  # Batch -> the version its fields were last brought to
        self.plan: dict[tuple[int, int], int] = {}  # (batch, nstep) -> threads (1: the caller's only)
        self.lock = threading.Lock()
        self.resamples = 0
        self.nphys = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.nexact = mujoco.mj_stateSize(model, self.EXACT)
        probe = mujoco_batch.Batch(self.base, 1, 1)
        # the state row's columns that hold the exact snapshot, in mj_getState order (FULLPHYSICS's
        # components, then the warm start), as column indices
        cols = []
        bits = [b for b in range(int(mujoco.mjtState.mjSTATE_INTEGRATION).bit_length()) if (1 << b) & int(mujoco.mjtState.mjSTATE_FULLPHYSICS)]
        bits.append(int(np.log2(int(mujoco.mjtState.mjSTATE_WARMSTART))))
        for b in bits:
            off, size = probe._component(1 << b)
            cols.extend(range(off, off + size))
        self.cols = np.asarray(cols, np.intp)
        self.contiguous = bool(np.array_equal(self.cols, np.arange(len(cols))))
        off, size = probe._component(int(mujoco.mjtState.mjSTATE_CTRL))
        self.ctrl_cols = slice(off, off + size)
        assert len(cols) == self.nexact

    def _randomize(self, layout: tuple[tuple[str, int], ...], flat: np.ndarray) -> None:
        """Record each world's randomized values, ``flat`` (float32, laid out as ``layout``); count the
        worlds whose values changed (each batch rewrites them when next used, :meth:`_batch`)."""
        batch = flat.shape[0]
        if self.values.shape[0] < batch or self.values.shape[1] != flat.shape[1]:
            grown = np.full((max(batch, self.values.shape[0]), flat.shape[1]), np.nan, np.float32)
            if self.values.shape[1] == flat.shape[1]:
                grown[: self.values.shape[0]] = self.values
            self.values = grown
            self.version += 1
        self.layout = layout
        changed = np.any(flat.view(np.uint32) != self.values[:batch].view(np.uint32), axis=1)
        if changed.any():
            self.values[:batch][changed] = flat[changed]
            self.resamples += int(changed.sum())
            self.version += 1

    def _batch(self, nsim: int, threads: int):
        """The batch of ``nsim`` simulations on ``threads`` threads, its per-simulation fields holding
        the worlds' latest values."""
        key = (nsim, threads)
        b = self.batches.get(key)
        if b is None:
            b = self.batches[key] = mujoco_batch.Batch(self.base, nsim, threads)
        if self.synced.get(key) == self.version:
            return b
        written = self.written.get(key)
        want = self.values[:nsim]
        if written is None or written.shape != want.shape:
            written = self.written[key] = np.full(want.shape, np.nan, np.float32)
        changed = np.flatnonzero(np.any(want.view(np.uint32) != written.view(np.uint32), axis=1))
        if len(changed):
            bounds = np.cumsum([0] + [size for _, size in self.layout])
            for i in changed:
                values = {n: want[i, a:z] for (n, _), a, z in zip(self.layout, bounds[:-1], bounds[1:])}
                for field, rows, cols, new in self.resolved.native_writes(values):
                    per_sim = b.expand(field)[i]  # this simulation's row of the field, live
                    if field == "opt.gravity":
                        per_sim[cols] = new[0]
                    elif per_sim.ndim == 1:
                        per_sim[rows] = new[:, 0]
                    else:
                        per_sim[rows[:, None], cols[None, :]] = new
            b.set_const(changed)
            written[changed] = want[changed]
        self.synced[key] = self.version
        return b

    def model_of(self, world: int) -> mujoco.MjModel:
        """A copy of the model ``world`` steps on, its randomized and derived fields included."""
        with self.lock:
            if not 0 <= world < self.values.shape[0]:
                raise IndexError(f"world {world} out of range: the pool has stepped {self.values.shape[0]} worlds")
            key = next((k for k in self.batches if k[0] > world), (self.values.shape[0], 1))
            return self._batch(*key).get_model(world)

    def _load(self, b, exact: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
        """Write the exact states and the controls into batch ``b``'s state rows; return the rows."""
        rows = b.state
        if self.contiguous:
            rows[:, : self.nexact] = exact
        else:
            rows[:, self.cols] = exact
        rows[:, self.ctrl_cols] = ctrl
        return rows

    def step(self, layout, values: np.ndarray, exact: np.ndarray, ctrl: np.ndarray, nstep: int) -> np.ndarray:
        """Advance each world ``nstep`` substeps from its exact state (``(batch, nexact)`` float64) in
        the model its ``values`` (see :meth:`_randomize`) give; return the new exact states. A world
        MuJoCo raised an error in comes back non-finite."""
        with self.lock:
            batch = exact.shape[0]
            self._randomize(layout, values)
            threads = self.plan.get((batch, nstep)) or self._calibrate(exact, ctrl, nstep)
            b = self._batch(batch, threads)
            rows = self._load(b, exact, ctrl)
            try:
                b.step(nstep=nstep)
            except mujoco_batch.SimulationError as err:
                rows[err.ids, :] = np.nan  # those worlds kept their old state: report them unstable
            return rows[:, : self.nexact].copy() if self.contiguous else rows[:, self.cols]

    def _calibrate(self, exact, ctrl, nstep: int, calls: int = 5) -> int:
        """Time the thread pool against the caller's thread alone on the real inputs; keep the faster.

        Physics per call ranges from microseconds (a pendulum) to milliseconds (an ant); below a
        few hundred microseconds the pool's dispatch costs more than it saves. Both compute
        bit-identical states (``mujoco.batch`` guarantees it at any thread count), so the choice
        changes speed only, never results.
        """
        batch = exact.shape[0]
        candidates = [self.nthread, 1] if self.nthread > 1 else [1]
        best, best_t = candidates[0], float("inf")
        for threads in candidates:
            b = self._batch(batch, threads)
            times = []
            for _ in range(calls + 1):  # the first call warms up
                self._load(b, exact, ctrl)
                t = time.perf_counter()
                try:
                    b.step(nstep=nstep)
                except mujoco_batch.SimulationError:
                    pass
                times.append(time.perf_counter() - t)
            dt = sum(times[1:])
            if dt < best_t:
                best, best_t = threads, dt
        self.plan[(batch, nstep)] = best
        return best


class MujocoEnv(Env):
    """A :class:`MujocoTask` on the ``native`` or ``mjx`` backend (see the module docstring)."""

    EXACT_STATE = _NativePool.EXACT  # what ``env_state["exact"]`` holds on native (mj_getState spec)

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
        self.pixels = task.pixels
        self.visual = self._renderer = None
        if task.pixels is not None:
            from sim.render import BatchRenderer

            px = task.pixels
            if px.appearance_split is not None:
                check_split(px.appearance_split)
            self.visual = px.visual.resolve(px.load_spec(), px.camera)
            # checks the resolution, camera and markers now; GL contexts start at the first image
            self._renderer = BatchRenderer(self.visual.model, px.height, px.width, px.camera, self.visual,
                                           markers=px.markers, threads=px.threads, tiles=px.tiles)
            if self.visual.model.nq != m.nq:
                raise ValueError(f"{task.name}: the render model has nq={self.visual.model.nq}, the robot {m.nq}")
            parts = {"image": Box.image(px.height, px.width)}
            if px.proprio:
                parts["state"] = self.observation_space
            self.observation_space = Dict(parts)
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
        if self.visual is not None:  # drawn from a key of its own: the same key, the same dynamics
            visual = self.visual.sample(jax.random.fold_in(key, VISUAL_KEY), self.pixels.appearance_split or split)
            return {"dynamics": dyn, "task": task, "visual": visual}
        return {"dynamics": dyn, "task": task}

    def nominal_params(self):
        """The unrandomized world (task parameters at the middle of their training range; the nominal
        appearance)."""
        task = {n: jnp.asarray(sum(r.train) / 2, jnp.float32) for n, r in self.task.task_ranges.items()}
        if self.visual is not None:
            return {"dynamics": self.resolved.nominal_values(), "task": task, "visual": self.visual.nominal()}
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
        ranges = dict(self.param_ranges())
        if self.visual is not None:
            ranges.update(self.visual.spec.ranges())
        return {
            split: " · ".join(f"{n} {r.describe()[split]}" for n, r in ranges.items())
            for split in ("train", "interp", "extrap")
        }

    # -- pixels ---------------------------------------------------------------------------------
    def render_images(self, qpos: np.ndarray, appearance: np.ndarray, markers: np.ndarray) -> np.ndarray:
        """Host side: the camera images of worlds in poses ``qpos`` ``(B, nq)``, appearances
        ``appearance`` ``(B, visual.size)`` and marker positions ``(B, 3 * markers)`` (uint8)."""
        return self._renderer.render(qpos, appearance, markers)

    def _image(self, qpos, params, key):
        """The camera image of one world (any leading batch shape: the host call is batched), with
        the world's pixel effects."""
        px = self.pixels
        appearance = self.visual.flatten(params["visual"]) if self.visual.size else jnp.zeros((0,), jnp.float32)
        markers = (px.marker_fn(params["task"]).reshape(-1).astype(jnp.float32) if px.markers
                   else jnp.zeros((0,), jnp.float32))
        packed = jnp.concatenate([qpos.astype(jnp.float32), appearance, markers], -1)
        nq, na = self.model.nq, self.visual.size
        renderer = self._renderer

        def host(packed):
            lead = packed.shape[:-1]
            flat = packed.reshape(-1, packed.shape[-1])
            out = renderer.render(flat[:, :nq], flat[:, nq:nq + na], flat[:, nq + na:])
            return out.reshape(lead + out.shape[1:])

        image = host_call(host, jax.ShapeDtypeStruct((px.height, px.width, 3), jnp.uint8), packed)
        if "pixel.noise" in params["visual"]:
            from randomization.visual import apply_pixel_effects

            image = apply_pixel_effects(image, params["visual"], key)
        return image

    def _observe(self, view: PhysicsView, params, key, unstable=None):
        """The observation: the task's vector, or for a pixel task ``{"image", ["state"]}``."""
        obs = self.task.obs_fn(view, params["task"]).astype(jnp.float32)
        if unstable is not None:
            obs = jnp.where(unstable, 0.0, obs)
        if self.pixels is None:
            return obs
        image = self._image(view.qpos, params, key)
        if unstable is not None:
            image = jnp.where(unstable, jnp.zeros_like(image), image)
        return {"image": image, "state": obs} if self.pixels.proprio else {"image": image}

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

    def _initial_env_state(self, physics) -> dict:
        if self.backend == "native":
            # no exact snapshot yet: the first step starts from ``physics`` (see _native_step)
            exact = jnp.zeros((2 * self._pool.nexact,), jnp.uint32)
            return {"physics": physics, "exact": exact, "t": jnp.zeros((), jnp.int32)}
        return {"physics": physics, "t": jnp.zeros((), jnp.int32)}

    def _native_step(self, env_state, ctrl, dynamics):
        """One control step on the host: ``(physics, exact)`` after ``n_substeps`` substeps.

        The world continues from ``env_state["exact"]`` (the float64 ``mjSTATE_FULLPHYSICS`` + warm
        start, as uint32 bits) when ``env_state["physics"]`` is still its float32 rounding; when JAX
        code changed ``physics`` (a reset, a push, a hand-set state) it starts from ``physics`` with
        a cold warm start instead. Either way the step is a pure function of ``env_state``.
        """
        pool, nstep = self._pool, self.task.n_substeps
        physics, exact = env_state["physics"], env_state["exact"]
        # one packed array crosses to the host and one comes back
        names = list(dynamics)
        layout = tuple((n, int(np.prod(dynamics[n].shape[-1:])) if dynamics[n].ndim else 1) for n in names)
        nphys, nexact, nu = physics.shape[-1], pool.nexact, ctrl.shape[-1]
        floats = jnp.concatenate(
            [dynamics[n].reshape(dynamics[n].shape[:-1] + (-1,)).astype(jnp.float32) for n in names]
            + [physics.astype(jnp.float32), ctrl.astype(jnp.float32)], -1)
        packed = jnp.concatenate([jax.lax.bitcast_convert_type(floats, jnp.uint32), exact], -1)
        ndyn = sum(size for _, size in layout)
        phys_at, ctrl_at, exact_at = slice(ndyn, ndyn + nphys), slice(ndyn + nphys, ndyn + nphys + nu), ndyn + nphys + nu

        def host(packed):
            lead = packed.shape[:-1]  # any leading batch shape (nested vmaps: tasks x envs)
            packed = packed.reshape(-1, packed.shape[-1])
            phys_bits = packed[:, phys_at]
            state = packed[:, exact_at:].copy().view(np.float64)  # a copy: XLA's buffer may be read-only
            stale = np.any(state[:, :nphys].astype(np.float32).view(np.uint32) != phys_bits, axis=1)
            if stale.any():
                state[stale, :nphys] = phys_bits[stale].view(np.float32)
                state[stale, nphys:] = 0.0  # cold warm start, as a fresh MjData has
            out = np.empty((packed.shape[0], nphys + 2 * nexact), np.uint32)
            with np.errstate(over="ignore", invalid="ignore"):  # a blow-up: _finish counts it
                state = pool.step(layout, packed[:, :ndyn].view(np.float32), state, packed[:, ctrl_at].view(np.float32), nstep)
                out[:, :nphys] = state[:, :nphys].astype(np.float32).view(np.uint32)
            out[:, nphys:] = state.view(np.uint32)
            return out.reshape(lead + out.shape[-1:])

        out_type = jax.ShapeDtypeStruct(physics.shape[:-1] + (nphys + 2 * nexact,), jnp.uint32)
        out = host_call(host, out_type, packed)
        return jax.lax.bitcast_convert_type(out[..., :nphys], jnp.float32), out[..., nphys:]

    def _physics_step(self, physics, ctrl, dynamics):
        """MJX: ``n_substeps`` of ``mjx.step`` on the world's model."""
        model = self.resolved.apply_mjx(self._mx, dynamics)
        data = physics.replace(ctrl=ctrl)

        def sub(d, _):
            return self._mjx.step(model, d), None

        data, _ = jax.lax.scan(sub, data, None, length=self.task.n_substeps)
        return data

    def _finish(self, state: State, physics, action, fault, extra=None) -> State:
        """The State after a physics step; ``fault``: the action was invalid (and not applied)."""
        view = self._view(physics)
        key = state.key
        if self.pixels is not None:
            key, k_pixels = jax.random.split(key)
        task_params = state.params["task"]
        finite = jnp.all(jnp.isfinite(view.qpos)) & jnp.all(jnp.isfinite(view.qvel))
        unstable = fault | ~finite | jnp.any(jnp.abs(view.qvel) > UNSTABLE_QVEL)
        safe = PhysicsView(
            qpos=jnp.where(unstable, self._qpos0, view.qpos),
            qvel=jnp.where(unstable, 0.0, view.qvel),
            time=view.time,
        )
        obs = self._observe(safe, state.params, k_pixels if self.pixels is not None else None, unstable)
        reward = jnp.where(unstable, 0.0, self.task.reward_fn(safe, action, task_params)).astype(jnp.float32)
        terminated = unstable | self.task.terminated_fn(safe, task_params)
        t = state.env_state["t"] + 1
        return state.replace(
            obs=obs,
            reward=reward,
            terminated=terminated,
            truncated=(t >= self.episode_length) & ~terminated,
            env_state={"physics": physics, **(extra or {}), "t": t},
            metrics={"unstable": unstable.astype(jnp.float32)},
            key=key,
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
        obs = self._observe(view, params, jax.random.fold_in(key, VISUAL_KEY) if self.pixels is not None else None)
        env_state = self._initial_env_state(physics)
        return new_state(obs, params, env_state, key, metrics={"unstable": jnp.zeros((), jnp.float32)})

    def step(self, state, action):
        action, fault = guard_action(self.action_space, self.check_action(action))
        action = jnp.clip(action, -1.0, 1.0)
        applied = self.task.action_fn(action, state.params["task"])  # what the motors receive (a fault)
        ctrl = self._ctrl_mid + self._ctrl_half * applied
        if self.backend == "native":
            physics, exact = self._native_step(state.env_state, ctrl, state.params["dynamics"])
            return self._finish(state, physics, action, fault, {"exact": exact})
        physics = self._physics_step(state.env_state["physics"], ctrl, state.params["dynamics"])
        return self._finish(state, physics, action, fault)
