"""A MuJoCo stand-in for the robot hardware, and the sim2sim report (``proteus deploy POLICY.onnx --standin ENV``).

:class:`MujocoStandIn` is a :class:`~deploy.runtime.RobotInterface` over the project's own native
MuJoCo env: one unbatched :class:`sim.mujoco_env.MujocoEnv` (``backend="native"``, the physics in
MuJoCo C), stepped once per control step by its jitted ``step``, so the task's observation, reward,
termination and instability rule are the training env's. What the stand-in adds are the deployment
overrides, none of which the training env draws:

* hidden dynamics: a friction scale (sliding friction of every geom), a mass scale (mass and inertia
  of every body) and an actuator gain scale (gain and bias of every actuator: motor strength), each
  ``None`` for nominal, written into the env's model (a task copy whose ``load_model`` applies them;
  the randomization spec then sits at its nominal values on top, as :meth:`MujocoEnv.nominal_params`
  gives them);
* an optional physics timestep other than the training one; the control period is kept
  (``substeps = round(control_dt / timestep)``, the timestep used is ``control_dt / substeps``);
* sensor latency: :meth:`~MujocoStandIn.read_observation` returns the env's observation from
  ``latency`` ago, at physics-step resolution (the env is built to step ``gcd(substeps,
  latency_steps)`` physics steps per call and is called as often as a control period needs; with
  no latency, or a whole number of control periods of it, that is one call of the training env's
  own ``n_substeps``), with a timestamp that old (``time.monotonic()`` minus the sample's age: the
  simulation runs faster than real time and is mapped onto the wall clock at the moment of each
  read, so the controller's stale check sees the true age);
* Gaussian observation noise (NumPy, on the observation read, not on the RL² inputs);
* a tracking error per control step where the task has a natural one.

When the policy is an RL² policy (its ``obs_names`` end with the inputs :class:`sim.wrappers.Trial`
appends), the stand-in appends them with :class:`deploy.rl2_inputs.RL2Inputs` (what a real robot's
driver uses too) and runs trials of ``episodes_per_trial`` episodes (from the registry): the physics
state is reset at every episode end (the next observation carries ``prev_done = 1``), the RL² inputs
are zeroed and :attr:`MujocoStandIn.trial_done` is raised only at trial ends, where the driver calls
:meth:`Controller.reset() <deploy.runtime.Controller.reset>` (:func:`run_episodes`). A policy without
RL² inputs sees one-episode "trials" (the controller's carry resets every episode, as the learner's
does on the domain-randomized env).

Everything runs in simulated time: :func:`run_episodes` calls :meth:`Controller.step` back to back.

:func:`run_standin` runs several such worlds, latency and dynamics drawn from the given ranges, and
writes ``sim2sim.json`` and ``sim2sim.png``. :func:`jax_episode_returns` gives the in-training
return of the same JAX policy on nominal dynamics (the reference the stand-in is checked against).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.files import write_atomic
from deploy.rl2_inputs import RL2Inputs, is_rl2, rl2_input_names
from deploy.runtime import ContractMismatch, Controller, ControllerStopped, SafetyConfig

__all__ = [
    "MujocoStandIn", "is_rl2", "jax_episode_returns", "rl2_input_names", "run_episodes", "run_standin",
]

REPORT_JSON, REPORT_PNG = "sim2sim.json", "sim2sim.png"


# --------------------------------------------------------------------------------------------------
# The robot of an env id, and the native env of one deployment world
# --------------------------------------------------------------------------------------------------


def _tracking_fn(env_id: str):
    """``(label, fn(view, task) -> scalar)`` for tasks with a natural tracking error, else ``None``."""
    import jax.numpy as jnp

    if env_id == "cheetah-vel":
        from robots.cheetah import forward_velocity

        return "|v - target_vel| (m/s)", lambda view, task: jnp.abs(forward_velocity(view) - task["target_vel"])
    if env_id == "reacher-goal":
        from robots.reacher import fingertip, goal_xy

        return "|fingertip - goal| (m)", lambda view, task: jnp.linalg.norm(fingertip(view.qpos) - goal_xy(task))
    if env_id == "ant-goal":
        from robots.ant import goal_xy

        return "|torso xy - goal| (m)", lambda view, task: jnp.linalg.norm(view.qpos[:2] - goal_xy(task))
    return None


class _Robot:
    """What every stand-in of one env id shares: the registry entry and the training env's contract."""

    def __init__(self, env_id: str):
        import sim
        from sim.mujoco_env import MujocoEnv

        entry = sim.entry(env_id)
        if "native" not in entry.backends:
            raise ValueError(f"{env_id} is not a MuJoCo robot (backends: {', '.join(entry.backends)}); "
                             "the stand-in needs one")
        env = entry.factory("native")
        base = env.unwrapped
        if not isinstance(base, MujocoEnv):
            raise TypeError(f"{env_id}: expected a MuJoCo env, got {type(base).__name__}")
        self.env_id = env_id
        self.task = base.task
        self.model = base.model  # the training model (its timestep is the training one)
        self.episodes_per_trial = int(entry.episodes_per_trial)
        self.trial_time = bool(entry.trial_time)
        self.episode_length = int(base.episode_length)
        self.control_dt = float(base.control_dt)
        self.n_substeps = int(base.task.n_substeps)
        space = env.observation_space
        # a pixel robot: a dict observation (its image, its vector "state" part); the names are the
        # vector parts' elements as "part.element", as the policy's and the exported metadata's
        self.pixels = base.pixels is not None
        self.parts = tuple((n, tuple(sp.shape), np.dtype(sp.dtype)) for n, sp in space.items()) if self.pixels else ()
        self.obs_names = space.vector_names if self.pixels else tuple(space.names)
        self.action_names = tuple(env.action_space.names)
        self.nominal_task = {n: float(v) for n, v in base.nominal_params()["task"].items()}
        self.tracking = _tracking_fn(env_id)
        self.tracking_label = self.tracking[0] if self.tracking else None


@functools.cache
def _robot(env_id: str) -> _Robot:
    return _Robot(env_id)


class _World:
    """The native env of one deployment world (a task copy: the overridden model, ``chunk`` physics
    steps per env step) with its jitted reset and control step."""

    def __init__(self, robot: _Robot, substeps: int, chunk: int, friction, mass, gain):
        import jax
        import jax.numpy as jnp

        from robots.task import PhysicsView
        from sim.mujoco_env import MujocoEnv

        task = robot.task
        timestep = robot.control_dt / substeps

        def load_model():
            m = task.load_model()
            if substeps != task.n_substeps:
                m.opt.timestep = timestep
            if friction is not None:
                m.geom_friction[:, 0] *= friction
            if mass is not None:
                m.body_mass[1:] *= mass
                m.body_inertia[1:] *= mass
            if gain is not None:
                m.actuator_gainprm[:, 0] *= gain
                m.actuator_biasprm[:, :3] *= gain
            return m

        # the env's pool writes the spec's (nominal) values into its simulations' fields and runs mj_setConst
        self.env = env = MujocoEnv(dataclasses.replace(task, load_model=load_model, n_substeps=chunk), "native")
        nq, nv = env.model.nq, env.model.nv
        calls = substeps // chunk
        tracking = robot.tracking

        def view(physics):  # the native env's physics layout (mjSTATE_FULLPHYSICS: time, qpos, qvel, ...)
            return PhysicsView(qpos=physics[1:1 + nq], qvel=physics[1 + nq:1 + nq + nv], time=physics[0])

        def control_step(state, action):
            def call(s, _):
                s = env.step(s, action)
                return s, s.obs

            state, obs = jax.lax.scan(call, state, None, length=calls)
            unstable = state.metrics["unstable"] > 0
            err = jnp.float32(jnp.nan)
            if tracking is not None:
                err = jnp.where(unstable, jnp.nan, tracking[1](view(state.env_state["physics"]), state.params["task"]))
            return state, (obs, state.reward, state.terminated, unstable, err.astype(jnp.float32))

        def reset_to(key, params, qpos, qvel):
            from sim.mujoco_env import VISUAL_KEY

            s = env.reset(key, params)
            physics = s.env_state["physics"].at[1:1 + nq].set(qpos).at[1 + nq:1 + nq + nv].set(qvel)
            obs = env._observe(view(physics), params, jax.random.fold_in(key, VISUAL_KEY) if env.pixels else None)
            return s.replace(obs=obs, env_state={**s.env_state, "physics": physics})

        self.step = jax.jit(control_step)
        self.reset = jax.jit(env.reset)
        self.reset_to = jax.jit(reset_to)


@functools.lru_cache(maxsize=8)  # worlds with the same overrides share an env and its compiled functions
def _world(env_id: str, substeps: int, chunk: int, friction, mass, gain) -> _World:
    return _World(_robot(env_id), substeps, chunk, friction, mass, gain)


# --------------------------------------------------------------------------------------------------
# The options of a stand-in run, checked before anything is built
# --------------------------------------------------------------------------------------------------


MAX_LATENCY_MS = 1000.0
"""The largest sensor latency the stand-in models, in ms (and never more than one episode): the
stand-in keeps every physics step's observation of the latency line in memory."""
MAX_SUBSTEPS = 1000
"""Physics steps per control step at most: the smallest physics timestep is ``control_dt / MAX_SUBSTEPS``."""
MAX_WORLDS = 1024
"""Stand-in worlds of one report at most (each runs its episodes one after the other, in Python)."""


@dataclasses.dataclass(frozen=True)
class StandinOptions:
    """The options of a stand-in run, checked (:func:`check_options`) before anything is built.

    Attributes:
        latency_ms: sensor latency range ``(low, high)`` in ms, ``0 <= low <= high <= MAX_LATENCY_MS``.
        friction, mass, gain: scale ranges ``(low, high)``, ``0 < low <= high``, or ``None`` (nominal).
        noise_std: observation noise std, ``>= 0``.
        timestep: physics timestep in s, ``> 0``, or ``None`` (the training one).
        worlds: number of worlds, an integer in ``[1, MAX_WORLDS]``.
    """

    latency_ms: tuple[float, float] = (0.0, 0.0)
    friction: tuple[float, float] | None = None
    mass: tuple[float, float] | None = None
    gain: tuple[float, float] | None = None
    noise_std: float = 0.0
    timestep: float | None = None
    worlds: int = 8


def _label(name: str, cli: bool) -> str:
    """How an error names an option: ``latency_ms`` (Python), ``--latency-ms`` (``proteus deploy``)."""
    return "--" + name.replace("_", "-") if cli else name


def _number(value, what: str) -> float:
    """``value`` as a finite float; anything else is refused naming ``what``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return v


def _scalar(value, what: str, positive: bool) -> float:
    """A finite number ``> 0`` (``positive``) or ``>= 0``; errors name ``what`` and the value."""
    v = _number(value, what)
    if v <= 0 if positive else v < 0:
        raise ValueError(f"{what} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


def _range(value, what: str, positive: bool = False, high: float | None = None) -> tuple[float, float]:
    """A number ``v`` (-> ``(v, v)``) or a ``(low, high)`` pair of finite numbers, ``low <= high``,
    each ``> 0`` (``positive``) or ``>= 0`` and at most ``high``; errors name ``what`` and the value."""
    if isinstance(value, (str, bytes)) or np.ndim(value) not in (0, 1):
        raise ValueError(f"{what} must be a number or a (low, high) pair, got {value!r}")
    vals = [value] * 2 if np.ndim(value) == 0 else list(value)
    if len(vals) != 2:
        raise ValueError(f"{what} must be a number or a (low, high) pair, got {value!r}")
    lo, hi = (_scalar(v, what, positive) for v in vals)
    if lo > hi:
        raise ValueError(f"{what} must be a (low, high) pair with low <= high, got {value!r}")
    if high is not None and hi > high:
        raise ValueError(f"{what} must be at most {high:g}, got {value!r}")
    return lo, hi


def check_options(*, latency_ms=(0.0, 0.0), friction=None, mass=None, gain=None, noise_std=0.0, timestep=None,
                  worlds=8, env_id: str | None = None, cli: bool = False) -> StandinOptions:
    """Check every range option of a stand-in run before anything is built or compiled.

    Ranges are numbers or ``(low, high)`` pairs (see :class:`StandinOptions` for what each may be);
    NaN, inf, ``low > high``, negative values, zero scales, a latency above :data:`MAX_LATENCY_MS`,
    a fractional or out-of-range world count are refused. With ``env_id`` the robot's own limits are
    checked too (:func:`check_robot_options`: latency within one episode, timestep within
    ``[control_dt / MAX_SUBSTEPS, control_dt]``); that builds the env's model, nothing is compiled.

    Args:
        cli: name options as ``proteus deploy`` spells them (``--latency-ms``) in errors.

    Raises:
        ValueError: naming the option and the value refused.
    """
    opts = StandinOptions(
        latency_ms=_range(latency_ms, _label("latency_ms", cli), high=MAX_LATENCY_MS),
        **{name: None if v is None else _range(v, _label(name, cli), positive=True)
           for name, v in (("friction", friction), ("mass", mass), ("gain", gain))},
        noise_std=_scalar(noise_std, _label("noise_std", cli), positive=False),
        timestep=None if timestep is None else _scalar(timestep, _label("timestep", cli), positive=True),
        worlds=_count(worlds, _label("worlds", cli), MAX_WORLDS),
    )
    if env_id is not None:
        check_robot_options(env_id, opts.latency_ms[1], opts.timestep, cli=cli)
    return opts


def _count(value, what: str, most: int | None = None) -> int:
    """An integer ``>= 1`` (and ``<= most``): ``2.0`` is 2; ``2.5``, ``True`` and ``"2"`` are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value != int(value):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if int(value) < 1 or (most is not None and int(value) > most):
        raise ValueError(f"{what} must be {'>= 1' if most is None else f'in [1, {most}]'}, got {value!r}")
    return int(value)


def check_robot_options(env_id: str, latency_ms: float, timestep: float | None, cli: bool = False) -> None:
    """The limits that depend on the robot: a latency of at most one episode (and
    :data:`MAX_LATENCY_MS`), a timestep in ``[control_dt / MAX_SUBSTEPS, control_dt]``.

    Raises:
        ValueError: naming the option, the value and the robot's limit.
    """
    r = _robot(env_id)
    episode_ms = r.episode_length * r.control_dt * 1e3
    if not latency_ms <= min(MAX_LATENCY_MS, episode_ms):
        raise ValueError(f"{_label('latency_ms', cli)} must be at most {min(MAX_LATENCY_MS, episode_ms):g} ms "
                         f"(the stand-in's maximum of {MAX_LATENCY_MS:g} ms, and one {env_id} episode of "
                         f"{episode_ms:g} ms), got {latency_ms!r}")
    if timestep is not None and not (math.isfinite(timestep)
                                     and r.control_dt / MAX_SUBSTEPS <= timestep <= r.control_dt):
        raise ValueError(f"{_label('timestep', cli)} must be in [control_dt / {MAX_SUBSTEPS}, control_dt] = "
                         f"[{r.control_dt / MAX_SUBSTEPS:g}, {r.control_dt:g}] s for {env_id}, got {timestep!r}")


def _draw(value, rng: np.random.Generator, what: str, positive: bool, high: float | None = None) -> float | None:
    """A fixed value, a uniform draw from ``(lo, hi)``, or ``None`` (nominal); checked as :func:`_range`."""
    if value is None:
        return None
    lo, hi = _range(value, what, positive, high)
    return float(rng.uniform(lo, hi)) if hi > lo else lo


# --------------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------------


class MujocoStandIn:
    """The robot of a registered MuJoCo env id, its native env with deployment overrides, behind
    :class:`~deploy.runtime.RobotInterface`.

    Args:
        env_id: a registered MuJoCo robot env (``proteus envs``).
        rl2: the policy takes the RL² inputs; observations gain ``prev_action.*``, ``prev_reward``,
            ``prev_done`` (and ``trial_time`` where the env has it) and episodes run in trials of the
            registry's ``episodes_per_trial``.
        friction: sliding-friction scale of every geom; a number, a ``(lo, hi)`` range drawn from
            with ``seed``, or ``None`` (nominal).
        mass: mass-and-inertia scale of every body (same forms).
        gain: actuator gain scale (gain and bias terms: motor strength) of every actuator (same forms).
        latency_ms: sensor latency in ms (number or range); rounded to whole physics steps.
        noise_std: std of Gaussian noise added to the robot's observation (not to the RL² inputs).
        timestep: physics timestep in s (``None``: the training one); the control period is kept.
        task: task parameters (e.g. ``{"target_vel": 1.5}``); missing ones take the middle of their
            training range (the env's nominal task).
        initial_states: ``(qpos, qvel)`` per episode, used in order (e.g. recorded from the JAX env);
            then, or without them, each episode starts from the env's own reset with a key folded
            from ``seed`` and the episode's index.
        appearance: a pixel robot's appearance: ``None`` for the nominal one, or a split
            (``train``, ``interp``, ``extrap``) to draw it from with ``seed`` (its colours, textures,
            lights, camera pose, sky, distractors and pixel effects: :mod:`randomization.visual`).
            The camera image is rendered from the hidden world and is what the controller reads
            (with the ``state`` part and the RL² inputs, a dict observation).
        seed: seeds the range draws, the observation noise, the appearance and the initial states.

    Attributes:
        obs_names, action_names, control_dt: the contract the controller checks against the policy.
        env: the native :class:`~sim.mujoco_env.MujocoEnv` of this world; ``model`` its ``MjModel``.
        world: the hidden values in use (``friction``, ``mass``, ``gain``, ``latency_ms``,
            ``latency_steps``, ``noise_std``, ``timestep``, ``substeps``, ``task``).
        episodes: one dict per finished episode (``return``, ``length``, ``terminated``,
            ``unstable``, ``tracking_error``, ``action_change``, ``trial``, ``episode_in_trial``).
        episode_done, trial_done: set by the last :meth:`write_command` (an episode, a trial ended).
        last_reward: the task reward of the last :meth:`write_command` (what a robot's own reward
            function gives an :class:`~deploy.episodes.EpisodeRecorder`).
        last_sample_age_s: age of the sample the last :meth:`read_observation` returned.
    """

    def __init__(self, env_id: str, *, rl2: bool = False, friction=None, mass=None, gain=None, latency_ms=0.0,
                 noise_std: float = 0.0, timestep: float | None = None, task: dict | None = None,
                 initial_states: Sequence[tuple[Any, Any]] | None = None, seed: int = 0, appearance: str | None = None):
        import jax
        import jax.numpy as jnp

        r = self._robot = _robot(env_id)
        self.env_id = env_id
        self.rl2 = bool(rl2)
        self.episodes_per_trial = r.episodes_per_trial if self.rl2 else 1
        self.rl2_inputs = (RL2Inputs(r.action_names, r.episodes_per_trial, time_input=r.trial_time,
                                     episode_length=r.episode_length) if self.rl2 else None)
        self.action_names = r.action_names
        self.pixels = r.pixels
        if appearance is not None and not r.pixels:
            raise ValueError(f"appearance={appearance!r}: {env_id} has no camera (not a pixel env)")
        if appearance is not None:
            from randomization.ranges import check_split

            check_split(appearance)
        rl2_names = self.rl2_inputs.names if self.rl2 else ()
        if r.pixels:  # the RL² inputs are a part of their own, as sim.wrappers.Trial adds them
            from sim.wrappers import RL2_PART

            rl2_names = tuple(f"{RL2_PART}.{n}" for n in rl2_names)
        self.obs_names = r.obs_names + rl2_names
        self.control_dt = r.control_dt
        self.episode_length = r.episode_length
        rng = np.random.default_rng(seed)
        self._rng = rng
        self._seed = int(seed)

        # hidden dynamics
        friction = _draw(friction, rng, "friction", True)
        mass = _draw(mass, rng, "mass", True)
        gain = _draw(gain, rng, "gain", True)
        latency_ms = _draw(latency_ms, rng, "latency_ms", False, MAX_LATENCY_MS) or 0.0
        self.noise_std = _scalar(noise_std, "noise_std", positive=False)
        timestep = None if timestep is None else _scalar(timestep, "timestep", positive=True)
        check_robot_options(env_id, latency_ms, timestep)  # before the latency line is allocated
        substeps = r.n_substeps if timestep is None else max(1, round(self.control_dt / timestep))
        self.substeps = substeps
        self.timestep = self.control_dt / substeps  # exactly the training timestep when substeps match
        self.latency_steps = math.floor(latency_ms * 1e-3 / self.timestep + 0.5)
        self.latency_s = self.latency_steps * self.timestep
        chunk = math.gcd(substeps, self.latency_steps)  # physics steps per env step (substeps without latency)

        unknown = sorted(set(task or {}) - set(r.nominal_task))
        if unknown:
            raise ValueError(f"{env_id} has no task parameter(s) {unknown}; its task parameters: "
                             f"{sorted(r.nominal_task) or 'none'}")
        self.task = {**r.nominal_task, **{k: float(v) for k, v in (task or {}).items()}}

        self._world = w = _world(env_id, substeps, chunk, friction, mass, gain)
        self.env, self.model = w.env, w.env.model
        params = w.env.nominal_params()  # the spec's nominal dynamics on the overridden model
        if appearance is not None:
            from sim.mujoco_env import VISUAL_KEY

            params["visual"] = w.env.visual.sample(jax.random.fold_in(jax.random.key(int(seed)), VISUAL_KEY), appearance)
        self._params = {**params, "task": {k: jnp.float32(v) for k, v in self.task.items()}}
        self.world = {"friction": friction, "mass": mass, "gain": gain, "latency_ms": self.latency_s * 1e3,
                      "latency_ms_requested": float(latency_ms), "latency_steps": self.latency_steps,
                      "noise_std": self.noise_std, "timestep": self.timestep, "substeps": substeps, "task": dict(self.task),
                      **({"appearance": appearance or "nominal"} if r.pixels else {})}

        self._initial_states = list(initial_states or [])
        # the observations of the last latency_steps physics steps (one per env step of `chunk` of them)
        self._buf: collections.deque = collections.deque(maxlen=self.latency_steps // chunk + 1)
        self._age = (self._buf.maxlen - 1) * chunk * self.timestep
        self._last_ts = -math.inf
        self.last_sample_age_s = 0.0
        self.episodes: list[dict] = []
        self.steps = 0
        self.trials = 0
        self._episode_index = 0
        self._episode_in_trial = 0
        self.episode_done = self.trial_done = False
        self.last_reward = 0.0
        self._start_episode()

    # -- episodes and trials ------------------------------------------------------------------------

    def _start_episode(self) -> None:
        import jax
        import jax.numpy as jnp

        i = self._episode_index
        self._episode_index += 1
        key = jax.random.fold_in(jax.random.key(self._seed), i)
        if i < len(self._initial_states):
            q, v = self._initial_states[i]
            self._state = self._world.reset_to(key, self._params, jnp.asarray(q, jnp.float32), jnp.asarray(v, jnp.float32))
        else:
            self._state = self._world.reset(key, self._params)
        # the latency line starts full of the initial observation: as if the robot had rested there
        # for the whole latency (what the env's latency wrapper sees)
        obs = _host_obs(self._state.obs)
        self._buf.clear()
        self._buf.extend([obs] * self._buf.maxlen)
        self._t = 0
        self._ret = 0.0
        self._tracking: list[float] = []
        self._dact: list[float] = []
        self._prev_cmd: np.ndarray | None = None

    def current_episode(self) -> dict:
        """The episode in progress so far: ``return``, ``length`` (control steps taken),
        ``tracking_error``, ``action_change``, ``trial``, ``episode_in_trial`` (what a finished
        episode's entry in :attr:`episodes` holds, less ``terminated`` and ``unstable``)."""
        return {
            "return": self._ret,
            "length": self._t,
            "tracking_error": float(np.mean(self._tracking)) if self._tracking else None,
            "action_change": float(np.mean(self._dact)) if self._dact else None,
            "trial": self.trials,
            "episode_in_trial": self._episode_in_trial,
        }

    # -- RobotInterface ------------------------------------------------------------------------------

    def read_observation(self) -> tuple[np.ndarray, float]:
        """The observation sampled ``latency`` ago (noise added; RL² inputs appended) and its time."""
        obs = self._buf[0]
        if isinstance(obs, dict):  # a camera robot: noise on the state part, the RL² inputs a part
            from sim.wrappers import RL2_PART

            obs = {k: v.copy() for k, v in obs.items()}
            if self.noise_std > 0 and "state" in obs:
                obs["state"] = (obs["state"] + self.noise_std * self._rng.standard_normal(obs["state"].shape)).astype(np.float32)
            if self.rl2:
                obs[RL2_PART] = self.rl2_inputs.inputs.astype(np.float32)
            ts = self._timestamp()
            return obs, ts
        if self.noise_std > 0:
            obs = (obs + self.noise_std * self._rng.standard_normal(obs.shape)).astype(np.float32)
        if self.rl2:
            obs = self.rl2_inputs.append(obs)
        return np.array(obs, np.float32), self._timestamp()

    def _timestamp(self) -> float:
        ts = time.monotonic() - self._age
        if ts <= self._last_ts:  # two reads within the clock's resolution: keep timestamps increasing
            ts = math.nextafter(self._last_ts, math.inf)
        self._last_ts = ts
        self.last_sample_age_s = self._age
        return ts

    def write_command(self, action: np.ndarray) -> None:
        """Apply ``action`` (env action units) for one control period; reward, termination, auto-reset."""
        import jax

        a = np.asarray(action, np.float32).reshape(len(self.action_names))
        self._state, out = self._world.step(self._state, a)
        obs, reward, terminated, unstable, err = jax.device_get(out)
        if isinstance(obs, dict):  # one observation per env call of this control period
            self._buf.extend({k: v[i] for k, v in _host_obs(obs).items()} for i in range(len(next(iter(obs.values())))))
        else:
            self._buf.extend(np.asarray(obs, np.float32))
        self.steps += 1
        self._t += 1
        reward, terminated, unstable, err = float(reward), bool(terminated), bool(unstable), float(err)
        self.last_reward = reward
        self._ret += reward
        if math.isfinite(err):
            self._tracking.append(err)
        if self._prev_cmd is not None:
            self._dact.append(float(np.mean((a.astype(np.float64) - self._prev_cmd) ** 2)))
        self._prev_cmd = a.astype(np.float64)
        done = terminated or self._t >= self.episode_length
        trial_done = self.rl2_inputs.step(a, reward, done) if self.rl2 else done
        self.episode_done, self.trial_done = done, trial_done
        if not done:
            return
        self.episodes.append({**self.current_episode(), "terminated": terminated, "unstable": unstable})
        self._episode_in_trial += 1
        if trial_done:
            self.trials += 1
            self._episode_in_trial = 0
        self._start_episode()


def _host_obs(obs):
    """An observation as host arrays: float32 for a vector, a dict of arrays (uint8 images) for a camera robot."""
    if isinstance(obs, dict):
        return {k: np.array(v) for k, v in obs.items()}
    return np.asarray(obs, np.float32)


def run_episodes(controller: Controller, standin: MujocoStandIn, episodes: int, recorder=None) -> dict:
    """Step ``controller`` on ``standin`` (simulated time, back to back) until ``episodes`` more
    episodes have finished, resetting the controller at trial ends only.

    With a ``recorder`` (:class:`~deploy.episodes.EpisodeRecorder`) every step's observation, action
    (:attr:`~deploy.runtime.Controller.last_sample`) and reward are recorded, one row per episode
    (with its latent, for a MAESN policy); an episode with a fault step (the safe action, not the
    policy's) is discarded.

    A :class:`~deploy.runtime.ControllerStopped` (the safety layer gave up) ends the run early: the
    episodes finished before it are returned, and the one it cut short as ``partial_episode``.

    Returns ``{"episodes": [...] (this call's finished ones), "steps", "stopped", "stop_reason",
    "stop_step" (control steps of this call when it stopped), "partial_episode" (the episode in
    progress at the stop, :meth:`MujocoStandIn.current_episode`; ``None`` if it had not started),
    "events"}``.
    """
    start_ep, start_steps = len(standin.episodes), standin.steps
    before = dataclasses.replace(controller.events)
    stop_reason = None
    faulted = False
    while len(standin.episodes) - start_ep < episodes:
        try:
            controller.step()
        except ControllerStopped as e:
            stop_reason = str(e)
            break
        if recorder is not None:
            faulted = faulted or controller.last_sample is None
            if not faulted:
                recorder.add(controller.last_obs, controller.last_sample, standin.last_reward)
            if standin.episode_done:
                recorder.discard_episode() if faulted else recorder.end_episode(controller.episode_latent)
                faulted = False
        if standin.trial_done:
            controller.reset()
        elif standin.episode_done:
            controller.begin_episode()  # a MAESN policy's next latent
    if recorder is not None:
        recorder.discard_episode()  # the one a stop cut short
    stopped = stop_reason is not None
    partial = standin.current_episode() if stopped else None
    return {"episodes": standin.episodes[start_ep:], "steps": standin.steps - start_steps,
            "stopped": stopped, "stop_reason": stop_reason,
            "stop_step": standin.steps - start_steps if stopped else None,
            "partial_episode": partial if partial is not None and partial["length"] > 0 else None,
            "events": dataclasses.asdict(controller.events.minus(before))}


# --------------------------------------------------------------------------------------------------
# In-training (JAX) returns of the same policy
# --------------------------------------------------------------------------------------------------


@functools.cache
def _jax_env(env_id: str, batch: int, trial: bool):
    import sim

    return sim.make(env_id, batch_size=batch, trial=trial, backend="native")


def _base_of(env):
    """The env inside the ``VmapEnv`` of a ``sim.make`` stack."""
    from sim.wrappers import VmapEnv

    e = env
    while not isinstance(e, VmapEnv):
        e = e.env
    return e.env


def _nominal(base) -> dict:
    import jax
    import jax.numpy as jnp

    from sim.effects import SensorActuator
    from sim.mujoco_env import MujocoEnv

    if isinstance(base, SensorActuator):
        effects = base.sample_params(jax.random.key(0))["effects"]
        return {"env": _nominal(base.env), "effects": jax.tree.map(jnp.zeros_like, effects)}
    if isinstance(base, MujocoEnv):
        return base.nominal_params()
    raise ValueError(f"no nominal params for {type(base).__name__}")


def _find_physics(env_state):
    if isinstance(env_state, dict):
        if "physics" in env_state:
            return env_state["physics"]
        for v in env_state.values():
            found = _find_physics(v)
            if found is not None:
                return found
    return None


@functools.cache
def _jax_rollout(env, policy, steps: int, trial: bool):
    import jax

    def run(keys, env_params, params):
        s0 = env.reset(keys, env_params)

        def body(carry, _):
            s, c = carry
            c, dist, _ = policy.apply(params, c, s.obs)
            s = env.step(s, policy.deterministic(dist))
            if trial:
                done = s.info["episode_terminated"] | s.info["episode_truncated"]
                trial_done = s.info["trial_done"]
            else:
                done = trial_done = s.terminated | s.truncated
            return (s, c), (s.reward, done, trial_done, _find_physics(s.env_state))

        _, out = jax.lax.scan(body, (s0, policy.init_carry(keys.shape[0])), None, length=steps)
        return _find_physics(s0.env_state), out

    return jax.jit(run)


def jax_episode_returns(policy, params, env_id: str, episodes: int, seed: int = 0, *,
                        return_initial_states: bool = False):
    """Per-episode returns of ``policy``'s deterministic actions on the training env, nominal dynamics.

    Runs ``sim.make(env_id, batch_size=B, trial=<RL² policy>, backend="native")`` with every world
    pinned to nominal values (dynamics at their nominal values, task parameters at the middle of
    their training range, sensor/actuator effects off). An RL² policy runs the first trial of each
    of ``B = ceil(episodes / episodes_per_trial)`` batch elements (episodes in trial order); any other
    policy the first episode of each of ``B = episodes`` elements. Deterministic given ``seed``.

    Args:
        policy, params: the :class:`~meta_rl.networks.Policy` and its params.
        return_initial_states: also return each episode's initial ``(qpos, qvel)`` (float32, as the
            env drew them), to start a :class:`MujocoStandIn` from the same states.

    Returns:
        float64 returns [episodes], or ``(returns, initial_states)``.
    """
    import jax
    import jax.numpy as jnp

    import sim

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    rl2 = is_rl2(policy.spec.obs_names)
    K = sim.entry(env_id).episodes_per_trial if rl2 else 1
    B = -(-int(episodes) // K)
    env = _jax_env(env_id, B, rl2)
    space = env.observation_space
    names = space.vector_names if hasattr(space, "vector_names") else tuple(space.names)
    if tuple(policy.spec.obs_names) != names:
        raise ValueError(f"policy observation names {list(policy.spec.obs_names)} do not match "
                         f"{env_id}{' (trial)' if rl2 else ''}: {list(names)}")
    base = _base_of(env)
    unwrapped = base.unwrapped
    nq, nv = unwrapped.model.nq, unwrapped.model.nv
    env_params = jax.tree.map(lambda x: jnp.broadcast_to(x, (B,) + jnp.shape(x)), _nominal(base))
    steps = K * unwrapped.episode_length
    keys = jax.random.split(jax.random.key(seed), B)
    phys0, (reward, done, trial_done, phys) = _jax_rollout(env, policy, steps, rl2)(keys, env_params, params)
    reward, done, trial_done = np.asarray(reward, np.float64), np.asarray(done), np.asarray(trial_done)
    phys0, phys = np.asarray(phys0), np.asarray(phys)
    returns, starts = [], []
    for b in range(B):
        starts.append(phys0[b])
        ret = 0.0
        for t in range(steps):
            ret += reward[t, b]
            if done[t, b]:
                returns.append(ret)
                ret = 0.0
                if trial_done[t, b]:
                    break
                starts.append(phys[t, b])  # the auto-reset's fresh episode
    returns = np.asarray(returns[:episodes], np.float64)
    if not return_initial_states:
        return returns
    states = [(s[1:1 + nq].copy(), s[1 + nq:1 + nq + nv].copy()) for s in starts[:episodes]]
    return returns, states


# --------------------------------------------------------------------------------------------------
# The sim2sim report
# --------------------------------------------------------------------------------------------------


def _latin(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` values stratified over ``[lo, hi]`` (one per equal slice, shuffled): even coverage for plots."""
    if hi <= lo:
        return np.full(n, lo)
    return lo + (hi - lo) * (rng.permutation(n) + rng.uniform(size=n)) / n


def _finite_or_none(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def run_standin(onnx_path, env_id: str, *, worlds: int = 8, episodes: int | None = None, latency_ms=(0.0, 0.0),
                friction=None, mass=None, gain=None, noise_std: float = 0.0, timestep: float | None = None,
                task: dict | None = None, seed: int = 0, out_dir=None, training_return: float | None = None,
                overwrite: bool = False, safety: SafetyConfig | None = None, console=None, explore: bool = False,
                record=None, appearance: str | None = None) -> dict:
    """Run an exported policy on ``worlds`` MuJoCo stand-ins of ``env_id`` and write the sim2sim report.

    Each world draws its latency and its friction, mass and gain scales from the given ranges
    (stratified: every range is covered evenly across worlds), then runs ``episodes`` episodes
    through a :class:`~deploy.runtime.Controller` in simulated time.

    Args:
        onnx_path: a policy written by :func:`deploy.export.export_onnx`.
        env_id: the registered MuJoCo env the stand-in plays (the policy's names and control period
            must match it; an RL² policy is recognised by its ``prev_*`` inputs).
        worlds: number of worlds.
        episodes: episodes per world (default: one trial of ``episodes_per_trial`` for an RL²
            policy, 2 otherwise).
        latency_ms, friction, mass, gain: ``(lo, hi)`` ranges or single values; ``None``
            (friction, mass, gain) is nominal.
        noise_std: observation noise std (observation units).
        timestep: physics timestep (``None``: the training one); the control period is kept.
        task: task parameters (default: the middle of their training range, as ``jax_episode_returns``).
        seed: seeds worlds, noise and initial states.
        out_dir: where ``sim2sim.json`` and ``sim2sim.png`` go (default ``<onnx stem>_sim2sim/``
            beside the ONNX file).
        training_return: the policy's in-training mean episode return (e.g. from
            :func:`jax_episode_returns`): drawn as a line and reported as a ratio.
        overwrite: replace existing report files (otherwise ``FileExistsError``, before any work).
        safety: the controller's :class:`SafetyConfig`; default: the metadata's bounds and a stale
            limit of ``3 control_dt`` plus the largest latency (a slow sensor is what is measured
            here, not a watchdog trip).
        console: a ``rich`` console (default: a new one).
        explore: the controller samples its actions (:class:`~deploy.runtime.Controller` ``explore``;
            MAML/ProMP policies only).
        appearance: a pixel robot's appearance per world: ``None`` (nominal) or the split each world
            draws its own from (:class:`MujocoStandIn`).
        record: save every episode (observations, sampled actions, rewards) to this ``.npz``
            (:class:`~deploy.episodes.EpisodeRecorder`) for ``proteus adapt``; one world only (the
            episodes of one world adapt one policy).

    Returns:
        The report (what ``sim2sim.json`` holds) plus ``json`` and ``png`` paths (and ``recorded``:
        the episode file and its episode count, when recording).

    Raises:
        ValueError: a bad option (:func:`check_options`, :func:`check_robot_options`: the option and
            the value named), before the policy is read.
        FileNotFoundError / ValueError: no file, or not a readable exported ONNX policy (the path named).
        FileExistsError: a report file exists and ``overwrite`` is false.
        ContractMismatch: the policy's metadata does not fit ``env_id`` (each mismatch listed).

    A world whose controller stops (:class:`~deploy.runtime.ControllerStopped`: the safety layer
    gave up) is reported, not raised: ``stopped``, ``stop_reason``, ``stop_step`` and the
    ``partial_episode`` it cut short; its finished episodes (if any) count in the summary as every
    other world's, and ``summary["stopped"]`` lists every stop. When no episode finished anywhere
    the return figures are ``None`` and the plot says so.
    """
    import sim
    from deploy.export import read_metadata

    opts = check_options(latency_ms=latency_ms, friction=friction, mass=mass, gain=gain, noise_std=noise_std,
                         timestep=timestep, worlds=worlds)
    if training_return is not None:
        _number(training_return, "training_return")
    path = Path(onnx_path)
    meta = read_metadata(path)  # FileNotFoundError / ValueError naming the path
    if "obs_names" not in meta:
        raise ContractMismatch(["metadata lacks obs_names (not exported by deploy.export?)"], path)
    out_dir = Path(out_dir) if out_dir is not None else path.parent / f"{path.stem}_sim2sim"
    json_path, png_path = out_dir / REPORT_JSON, out_dir / REPORT_PNG
    for p in (json_path, png_path):
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} exists; pass overwrite=True (--overwrite) to replace it")
    if record is not None:
        record = Path(record)
        if opts.worlds != 1:
            raise ValueError(f"recording episodes needs worlds=1 (the episodes of one world adapt one policy), "
                             f"got worlds={opts.worlds}")
        if record.exists() and not overwrite:
            raise FileExistsError(f"{record} exists; pass overwrite=True (--overwrite) to replace it")
    sim.entry(env_id)  # unknown ids raise, naming the known ones
    check_robot_options(env_id, opts.latency_ms[1], opts.timestep)
    lat = opts.latency_ms
    ranges = {"latency_ms": lat, "friction": opts.friction, "mass": opts.mass, "gain": opts.gain}
    noise_std, timestep = opts.noise_std, opts.timestep

    robot = _robot(env_id)
    rl2 = is_rl2(meta["obs_names"])
    K = robot.episodes_per_trial if rl2 else 1
    episodes = (K if rl2 else 2) if episodes is None else _count(episodes, "episodes")
    if safety is None:
        safety = SafetyConfig(stale_after_s=3 * robot.control_dt + lat[1] * 1e-3)
    notes = []
    if rl2 and meta.get("episodes_per_trial") not in (None, K):
        notes.append(f"the policy's metadata says {meta['episodes_per_trial']} episodes per trial; the stand-in runs "
                     f"the registry's {K} for {env_id}")
    if meta.get("env_id") not in (None, env_id):
        notes.append(f"the policy was exported for {meta['env_id']!r}; the stand-in plays {env_id!r}")

    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:
            console.width = 160
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")

    recorder = None
    if record is not None:
        from deploy.episodes import EpisodeRecorder

        recorder = EpisodeRecorder(meta["obs_names"], meta["action_names"], robot.episode_length, robot.control_dt)
    rng = np.random.default_rng(seed)
    W = opts.worlds
    draws = {name: (None if r is None else _latin(rng, r[0], r[1], W)) for name, r in ranges.items()}
    policy_env = meta.get("env_id")
    results = []
    t_start = time.perf_counter()
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        job = bar.add_task(f"sim2sim {path.name} on {env_id}", total=W)
        for w in range(W):
            standin = MujocoStandIn(
                env_id, rl2=rl2, latency_ms=float(draws["latency_ms"][w]), noise_std=noise_std, timestep=timestep,
                task=task, seed=int(rng.integers(2**31)), appearance=appearance,
                **{k: (None if draws[k] is None else float(draws[k][w])) for k in ("friction", "mass", "gain")})
            try:
                controller = Controller(path, standin, safety, explore=explore, seed=int(rng.integers(2**31)))
            except ContractMismatch as e:
                extra = []
                if policy_env is not None and policy_env != env_id:
                    extra.append(f"the policy was exported for env {policy_env!r}; the stand-in plays {env_id!r}")
                raise ContractMismatch(e.mismatches + extra, path) from None
            out = run_episodes(controller, standin, episodes, recorder)
            eps = out["episodes"]
            rets = [e["return"] for e in eps]
            trk = [e["tracking_error"] for e in eps if e["tracking_error"] is not None]
            dact = [e["action_change"] for e in eps if e["action_change"] is not None]
            results.append({
                "world": w,
                **{k: v for k, v in standin.world.items()},
                "episodes": eps,
                "mean_return": float(np.mean(rets)) if rets else None,
                "mean_tracking_error": float(np.mean(trk)) if trk else None,
                "mean_action_change": float(np.mean(dact)) if dact else None,
                "steps": out["steps"],
                "stopped": out["stopped"],
                "stop_reason": out["stop_reason"],
                "stop_step": out["stop_step"],
                "partial_episode": out["partial_episode"],
                "safety_events": out["events"],
            })
            bar.advance(job)
    wall = time.perf_counter() - t_start

    all_rets = np.array([e["return"] for r in results for e in r["episodes"]], np.float64)
    trk = [r["mean_tracking_error"] for r in results if r["mean_tracking_error"] is not None]
    dact = [r["mean_action_change"] for r in results if r["mean_action_change"] is not None]
    events = {k: int(sum(r["safety_events"][k] for r in results)) for k in results[0]["safety_events"]}
    mean_ret = float(all_rets.mean()) if all_rets.size else None
    ratio = None
    if training_return is not None and mean_ret is not None and float(training_return) != 0:
        ratio = mean_ret / float(training_return)
    summary = {
        "mean_return": mean_ret,
        "std_return": float(all_rets.std()) if all_rets.size else None,
        "min_return": float(all_rets.min()) if all_rets.size else None,
        "max_return": float(all_rets.max()) if all_rets.size else None,
        "episodes": int(all_rets.size),
        "training_return": None if training_return is None else float(training_return),
        "return_ratio": ratio,
        "tracking_error": robot.tracking_label,
        "mean_tracking_error": float(np.mean(trk)) if trk else None,
        "mean_action_change": float(np.mean(dact)) if dact else None,
        "safety_events": events,
        "stopped_worlds": int(sum(r["stopped"] for r in results)),
        "stopped": [{"world": r["world"], "step": r["stop_step"], "reason": r["stop_reason"],
                     "finished_episodes": len(r["episodes"])} for r in results if r["stopped"]],
        "wall_s": wall,
    }
    report = {
        "onnx": str(path),
        "env": env_id,
        "policy_env": policy_env,
        "policy_kind": meta.get("policy_kind"),
        "rl2": rl2,
        "episodes_per_trial": K,
        "episodes_per_world": episodes,
        "explore": bool(explore),
        "notes": notes,
        "worlds": W,
        "seed": int(seed),
        "control_dt": robot.control_dt,
        "ranges": {
            "latency_ms": list(lat),
            "friction": None if ranges["friction"] is None else list(ranges["friction"]),
            "mass": None if ranges["mass"] is None else list(ranges["mass"]),
            "gain": None if ranges["gain"] is None else list(ranges["gain"]),
            "noise_std": float(noise_std),
            "timestep": results[0]["timestep"],
            "substeps": results[0]["substeps"],
            "training_timestep": float(robot.model.opt.timestep),
            "task": results[0]["task"],
            "appearance": appearance,
        },
        "summary": summary,
        "results": results,
    }
    report = json.loads(json.dumps(report, default=_finite_or_none), parse_constant=lambda c: None)
    write_atomic(json_path, (json.dumps(report, indent=2) + "\n").encode(), overwrite=overwrite)
    recorded = None
    if recorder is not None:
        if recorder.episodes == 0:
            raise ValueError(f"no whole episode without a fault step was recorded; {record} was not written")
        recorder.save(record, overwrite=overwrite)
        recorded = {"path": str(record), "episodes": recorder.episodes}
        console.print(f"recorded {recorder.episodes} episode(s) to {record}")
    _plot(report, png_path, overwrite)
    _print_table(report, console, json_path, png_path)
    return {**report, "json": str(json_path), "png": str(png_path), "recorded": recorded}


def _returns(episodes: list[dict]) -> list[float]:
    """The episodes' returns that are numbers (a non-finite return is ``None`` in the JSON report)."""
    return [e["return"] for e in episodes if e["return"] is not None]


def _plot(report: dict, path: Path, overwrite: bool) -> None:
    """``sim2sim.png``: episode returns against latency and friction; stopped worlds marked (a dotted
    red line at the world, a red ``x`` at the return of the episode it cut short), the stops listed."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res, s = report["results"], report["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4 if s["stopped"] else 4), dpi=110, sharey=True)
    xs = {"latency_ms": ("sensor latency (ms)", [r["latency_ms"] for r in res]),
          "friction": ("friction scale", [1.0 if r["friction"] is None else r["friction"] for r in res])}
    for ax, (key, (label, x)) in zip(axes, xs.items()):
        for r, xi in zip(res, x):
            rets = _returns(r["episodes"])
            ax.scatter([xi] * len(rets), rets, s=10, color="C0", alpha=0.35, lw=0)
            if rets:
                ax.scatter([xi], [np.mean(rets)], s=40, color="C0", edgecolor="k", zorder=3,
                           marker="X" if r["stopped"] else "o")
            if r["stopped"]:
                ax.axvline(xi, color="C3", ls=":", lw=1, alpha=0.6)
                part = r["partial_episode"]
                if part is not None and part["return"] is not None:
                    ax.scatter([xi], [part["return"]], s=30, color="C3", marker="x", zorder=3)
        handles = []
        if s["training_return"] is not None:
            handles.append(ax.axhline(s["training_return"], color="C3", ls="--", label="training return (JAX, nominal)"))
        if s["stopped"]:
            handles.append(ax.scatter([], [], s=30, color="C3", marker="x",
                                      label="stopped world: return until the stop (partial episode)"))
        if handles:
            ax.legend(handles=handles, loc="best", fontsize=8)
        ax.set(xlabel=label + ("" if report["ranges"][key] is not None else " (nominal)"))
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="episode return (dots) · world mean (circles)")
    ratio = f", {s['return_ratio']:.2f}× training" if s["return_ratio"] is not None else ""
    ret = (f"mean return {s['mean_return']:.1f}{ratio}" if s["mean_return"] is not None
           else "no episode finished")
    fig.suptitle(f"sim2sim: {Path(report['onnx']).name} ({report['policy_kind']}{', RL²' if report['rl2'] else ''}) "
                 f"on {report['env']}: {ret}", fontsize=10)
    if s["stopped"]:
        first = s["stopped"][0]
        reason = str(first["reason"])
        reason = reason if len(reason) <= 90 else reason[:87] + "..."
        fig.text(0.01, 0.01, f"{len(s['stopped'])} of {report['worlds']} worlds stopped by the safety layer "
                 f"(dotted red lines); world {first['world']} at step {first['step']}: {reason}",
                 fontsize=7, color="C3", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04 if s["stopped"] else 0, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue(), overwrite=overwrite)


def _fmt(v, spec=".2f", none="nominal") -> str:
    return none if v is None else format(v, spec)


def _print_table(report: dict, console, json_path: Path, png_path: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    s = report["summary"]
    table = Table(title=f"sim2sim: {Path(report['onnx']).name} on {report['env']} "
                        f"({report['worlds']} worlds × {report['episodes_per_world']} episodes, "
                        f"dt {report['ranges']['timestep']:g} s × {report['ranges']['substeps']})")
    for col in ("world", "latency ms", "friction ×", "mass ×", "gain ×", "mean return", "tracking err", "Δaction²",
                "safety events"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        ev = r["safety_events"]
        ev_s = ", ".join(f"{k} {v}" for k, v in ev.items() if v) or "-"
        table.add_row(str(r["world"]), f"{r['latency_ms']:.0f}", _fmt(r["friction"]), _fmt(r["mass"]), _fmt(r["gain"]),
                      _fmt(r["mean_return"], ".1f", "-") + (" (stopped)" if r["stopped"] else ""),
                      _fmt(r["mean_tracking_error"], ".3f", "-"), _fmt(r["mean_action_change"], ".3g", "-"), ev_s)
    console.print(table)
    line = f"mean return {_fmt(s['mean_return'], '.2f', '-')} ± {_fmt(s['std_return'], '.2f', '-')} over {s['episodes']} episodes"
    if s["training_return"] is not None:
        line += f"; training {s['training_return']:.2f}"
        if s["return_ratio"] is not None:
            line += f" (ratio {s['return_ratio']:.3f})"
    console.print(line)
    for stop in s["stopped"]:
        console.print(f"[red]world {stop['world']} stopped[/] at step {stop['step']} after "
                      f"{stop['finished_episodes']} finished episode(s): {escape(str(stop['reason']))}", highlight=False)
    console.print(f"wrote {json_path} and {png_path}")
