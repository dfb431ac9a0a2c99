"""The env registry: ``sim.make("bandit-k10-n100")``.

Each entry builds a base env and says how many episodes make one meta-RL trial. ``make`` composes the
wrappers: ``VmapEnv`` (when ``batch_size`` is given), then the mode wrapper (``Trial``, ``FixedWorld`` or ``AutoReset``: :func:`sim.wrappers.with_mode`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # listing and looking up ids loads no JAX or MuJoCo; make() does
    from sim.core import Env


@dataclasses.dataclass(frozen=True)
class EnvEntry:
    """A registered env.

    Attributes:
        id: the name given to ``make``.
        factory: builds the base (unwrapped, unbatched) env for a backend.
        episodes_per_trial: episodes in one meta-RL trial.
        description: one line for listings.
        backends: the backends it runs on; the first is the default (``backend="auto"``, but see
            :func:`resolve_backend` for MuJoCo robots).
        trial_time: the trial env adds the elapsed fraction of the trial to the RL² inputs
            (:class:`sim.wrappers.Trial`'s ``time_input``).
        info: facts about the env that presets read without building it (``arms`` of a bandit).
    """

    id: str
    factory: Callable[[str], Env]
    episodes_per_trial: int
    description: str
    backends: tuple[str, ...] = ("jax",)
    trial_time: bool = False
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


_REGISTRY: dict[str, EnvEntry] = {}


def register(entry: EnvEntry) -> None:
    if entry.id in _REGISTRY:
        raise ValueError(f"env id {entry.id!r} is already registered")
    _REGISTRY[entry.id] = entry


def registered() -> list[str]:
    """Every registered env id, in registration order."""
    return list(_REGISTRY)


TASK_SUFFIX = "+task"
"""``<id>+task``: the env ``<id>`` with its task parameters observed (:class:`sim.wrappers.ObserveTask`),
for training oracles."""


def _observed_task_entry(base: EnvEntry) -> EnvEntry:
    from sim.wrappers import ObserveTask

    return dataclasses.replace(base, id=base.id + TASK_SUFFIX, factory=lambda backend: ObserveTask(base.factory(backend)),
                               description=f"{base.description}; its task parameters observed (for oracles)")


def entry(env_id: str) -> EnvEntry:
    """The registry entry of ``env_id``; an unknown id raises listing the known ones. ``<id>+task`` is
    the registered ``<id>`` with its task parameters in the observation (:data:`TASK_SUFFIX`)."""
    if env_id.endswith(TASK_SUFFIX) and env_id[: -len(TASK_SUFFIX)] in _REGISTRY:
        return _observed_task_entry(_REGISTRY[env_id[: -len(TASK_SUFFIX)]])
    try:
        return _REGISTRY[env_id]
    except KeyError:
        close = difflib.get_close_matches(env_id, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown env {env_id!r}.{hint} Known envs: {', '.join(_REGISTRY)}") from None


def resolve_backend(env_id: str, backend: str = "auto") -> str:
    """``backend`` itself, or for ``auto`` the entry's first backend; for a MuJoCo robot, native MuJoCo
    unless the model is tiny and contact-free and MJX measured faster here
    (:mod:`sim.backend_choice`)."""
    if backend != "auto":
        return backend
    from sim.backend_choice import choose

    e = entry(env_id)
    return choose(env_id, e.backends, lambda: e.factory("native").unwrapped.model)


def make(
    env_id: str,
    *,
    batch_size: int | tuple[int, ...] | None = None,
    split: str = "train",
    mode: str | None = None,
    trial: bool | None = None,
    backend: str = "auto",
    episodes_per_trial: int | None = None,
) -> Env:
    """Build a registered env.

    Args:
        env_id: a registered id (``proteus envs`` lists them).
        backend: ``auto`` (:func:`resolve_backend`), or one the entry lists (``jax``, ``native``, ``mjx``).
        batch_size: wrap the base env in ``VmapEnv(batch_size)`` (``None``: unbatched); a tuple is a
            leading batch shape, e.g. ``(tasks, envs)``.
        split: where worlds are drawn from on resampling (``train``, ``interp``, ``extrap``).
        mode: ``trial`` (RL² inputs, K episodes per world: the default), ``fixed`` (K episodes per
            world, plain observations: MAML, MAESN, EPG) or ``fresh`` (a new world every episode:
            domain randomization). See :func:`sim.wrappers.with_mode`.
        trial: older spelling: ``True`` is ``mode="trial"``, ``False`` is ``mode="fresh"``.
        episodes_per_trial: episodes per world in ``trial`` and ``fixed`` modes (default: the entry's);
            e.g. four to score a gradient learner after 0, 1, 2 and 3 inner steps.
    """
    from randomization.ranges import check_split
    from sim.wrappers import VmapEnv, check_mode, with_mode

    if trial is not None:
        implied = "trial" if trial else "fresh"
        if mode is not None and mode != implied:
            raise ValueError(f"make({env_id!r}): trial={trial} contradicts mode={mode!r}; pass mode only")
        mode = implied
    mode = check_mode("trial" if mode is None else mode)
    e = entry(env_id)
    check_split(split)
    backend = resolve_backend(env_id, backend)
    if backend not in e.backends:
        raise ValueError(f"{env_id} runs on backend(s) {', '.join(e.backends)}, not {backend!r}")
    env = e.factory(backend)
    env.unwrapped.id = env_id
    if batch_size is not None:
        env = VmapEnv(env, batch_size)
    K = e.episodes_per_trial if episodes_per_trial is None else episodes_per_trial
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"make({env_id!r}): episodes_per_trial must be an integer >= 1, got {K!r}")
    return with_mode(env, mode, K, split=split, time_input=e.trial_time)


def robot_env(task, backend: str, env_id: str | None = None) -> Env:
    """A MuJoCo robot task on a backend, with its sensor/actuator effects when it declares any.

    ``task`` is a :class:`robots.task.MujocoTask` or ``"module:TASK"`` under ``robots/`` (imported now);
    ``env_id``, when given, must be the task's name."""
    from sim.effects import SensorActuator
    from sim.mujoco_env import MujocoEnv

    if isinstance(task, str):  # "module:TASK" under robots/, imported now
        module, _, attr = task.partition(":")
        task = getattr(importlib.import_module(f"robots.{module}"), attr)
    if env_id is not None and task.name != env_id:
        raise RuntimeError(f"env {env_id!r} is registered with the task named {task.name!r}")

    env = MujocoEnv(task, backend)
    effects = task.randomization.effects
    return SensorActuator(env, effects) if effects.any else env


def _discrete(env: Env, levels: tuple[float, ...] = (-1.0, 1.0)) -> Env:
    from sim.wrappers import DiscreteActions

    return DiscreteActions(env, levels)


def _task(module: str, cls: str, *args) -> Env:
    """``sim.tasks.<module>.<cls>(*args)``, imported when an env is built (registering imports nothing)."""
    return getattr(importlib.import_module(f"sim.tasks.{module}"), cls)(*args)


def _register_builtin() -> None:
    for k in (5, 10, 50):
        for n in (10, 100, 500):
            register(EnvEntry(f"bandit-k{k}-n{n}", lambda _, k=k: _task("bandit", "BernoulliBandit", k), n,
                              f"{k}-armed Bernoulli bandit, trials of {n} pulls (RL² §4.1)", trial_time=True,
                              info={"arms": k}))
    for n in (10, 25, 50, 75, 100):
        register(EnvEntry(f"mdp-s10-a5-n{n}", lambda _: _task("tabular_mdp", "TabularMDP", 10, 5, 10), n,
                          f"random tabular MDP (10 states, 5 actions, 10-step episodes), trials of {n} episodes",
                          trial_time=True))
    register(EnvEntry("point-goal", lambda _: _task("point_nav", "PointNav", "goal"), 2,
                      "2-D point navigation to an unseen goal (MAML/ProMP), trials of 2 episodes"))
    register(EnvEntry("point-goal2d", lambda _: _task("point_nav", "PointNav", "goal2d"), 2,
                      "2-D navigation to an unseen goal in [-0.5, 0.5]^2, squared-distance reward (the MAML paper's), "
                      "trials of 2 episodes"))
    register(EnvEntry("point-goal-x", lambda _: _task("point_nav", "PointNav", "goalx"), 2,
                      "2-D navigation to an unseen goal in the half-plane x > 0 (EPG's out-of-distribution protocol: "
                      "extrap holds goals with x < 0), trials of 2 episodes"))
    register(EnvEntry("point-arc", lambda _: _task("point_nav", "PointNav", "arc"), 2,
                      "2-D navigation to an unseen goal on a semicircle of radius 2 (MAESN's protocol): dense reward "
                      "on training goals, sparse (1 within 0.3 of the goal) on the held-out arcs, trials of 2 episodes"))
    register(EnvEntry("point-arc-sparse", lambda _: _task("point_nav", "PointNav", "arc-sparse"), 2,
                      "2-D navigation to an unseen goal on a semicircle of radius 2, sparse reward (1 within 0.3 of "
                      "the goal) on every split: the first episode has to search, trials of 2 episodes"))
    register(EnvEntry("point-vel", lambda _: _task("point_nav", "PointNav", "vel"), 2,
                      "2-D point moving at an unseen target velocity, trials of 2 episodes"))
    register(EnvEntry("maze-discrete", lambda _: _task("maze", "Maze"), 2,
                      "9x9 grid maze, 4 moves, fixed goal; randomized start row and slip probability, "
                      "trials of 2 episodes"))

    register(EnvEntry("recurring-bandit", lambda _: _task("recurring", "RecurringBandit", 5, 10, 20), 1,
                      "recurring-task bandits (Ritter et al. 2018): a lifetime of 20 five-armed bandit episodes of 10 "
                      "pulls, each task identified by a context cue and recurring within the lifetime",
                      trial_time=True, info={"arms": 5}))
    # MuJoCo robots: native MuJoCo C (the CPU path) first, MJX second. Named here, imported when built.
    both, native = ("native", "mjx"), ("native",)
    robots = (
        ("pendulum-swingup", "pendulum:SWINGUP", "pendulum swing-up, randomized mass/COM/inertia/damping/motor"),
        ("cartpole-balance", "cartpole:BALANCE", "cart-pole balance, randomized masses/pole COM/damping/gravity"),
        ("cartpole-swingup", "cartpole:SWINGUP", "cart-pole swing-up, randomized masses/pole COM/damping/gravity"),
        ("reacher-goal", "reacher:GOAL", "2-link reacher to an unseen goal, randomized arm masses/damping/motors"),
        ("cheetah-vel", "cheetah:VEL", "half-cheetah running at an unseen target velocity (MAML/PEARL)"),
        ("cheetah-dir", "cheetah:DIR", "half-cheetah running forward or backward (MAML/PEARL)"),
        ("ant-dir", "ant:DIR", "ant walking in an unseen direction"),
        ("ant-goal", "ant:GOAL", "ant walking to an unseen goal"),
    )
    # variants whose physics is one of the robots above (a sparse reward, a hidden fault or payload):
    # native only, the CPU path their results were measured on
    variants = (
        ("ant-ring", "ant:RING", "ant walking to an unseen goal on a ring of radius 2 m (MAESN), dense reward"),
        ("ant-ring-sparse", "ant:RING_SPARSE", "ant-ring's goals, sparse reward (1 within 0.8 m of the goal)"),
        ("reacher-goal-sparse", "reacher:GOAL_SPARSE", "reacher-goal's hidden goals, sparse reward (1 within 5 cm)"),
        ("reacher-payload", "reacher:PAYLOAD", "reacher to an observed goal carrying a hidden payload (felt only when the arm accelerates)"),
        ("cheetah-fault", "cheetah:FAULT", "half-cheetah running forward with a hidden disabled or sign-flipped motor"),
        ("cartpole-balance-pixels", "cartpole:BALANCE_PIXELS",
         "cart-pole balance from 64x64 camera images, randomized appearance (colours, textures, lights, camera, sky, "
         "distractors, pixel noise) and dynamics"),
        ("cartpole-balance-pixels-nominal", "cartpole:BALANCE_PIXELS_NOMINAL",
         "cartpole-balance-pixels in the nominal appearance in every world (randomized dynamics only)"),
        ("cartpole-balance-pixels-unseen", "cartpole:BALANCE_PIXELS_UNSEEN",
         "cartpole-balance-pixels with every world's appearance drawn from the extrap split (held out of training), "
         "its dynamics from the split asked for: scores transfer to unseen appearance on training dynamics"),
        ("reacher-pixels", "reacher:PIXELS",
         "reacher to a goal seen in a 64x64 top-down image, plus joint angles and velocities; randomized appearance and dynamics"),
    )
    for backends, rows in ((both, robots), (native, variants)):
        for env_id, task, text in rows:
            register(EnvEntry(env_id, lambda backend, task=task, env_id=env_id: robot_env(task, backend, env_id), 2,
                              f"{text}, trials of 2 episodes", backends=backends))
    # the value-based learners' cart-pole: push the cart left or right at full force
    register(EnvEntry("cartpole-balance-discrete", lambda backend: _discrete(robot_env("cartpole:BALANCE", backend)), 2,
                      "cart-pole balance with two actions (full force left or right), randomized as cartpole-balance, "
                      "trials of 2 episodes", backends=("native",)))  # the value learners' CPU path


_register_builtin()
