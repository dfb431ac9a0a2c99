"""Wrappers shared by every backend: batching, auto-reset, the three env modes, normalization.

Wrappers work on unbatched envs and on :class:`VmapEnv` batches (of any leading batch shape) alike:
per-env flags have the batch shape and selections broadcast over trailing dims. On a batch, resets
run under one ``lax.cond(any(done))``, so steps where no env finished pay nothing for them.

The env modes (:data:`MODES`, :func:`with_mode`), one per evaluation protocol:

* ``trial``: :class:`Trial`, K episodes per world with the RL² inputs (RL², episodic memory);
* ``fixed``: :class:`FixedWorld`, K episodes per world without them (MAML, MAESN, EPG); the same
  bookkeeping (``info["episode"]``, ``info["trial_done"]``, ``episodes_per_trial``,
  ``max_trial_steps``) and the same worlds and initial states as ``trial`` for the same keys;
* ``fresh``: :class:`AutoReset` with a fresh world every episode (domain randomization).

Randomization ranges as data: auto-resetting wrappers draw new worlds with the ranges held in
``state.info["ranges"]`` (set at ``reset`` from ``env.default_ranges()`` when that is not ``None``;
replace it, e.g. with :func:`set_ranges`, to move them). The ranges are shared by the whole batch:
they stay at batch level and never pass through an inner ``vmap``, so changing them inside a jitted
loop recompiles nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from randomization.ranges import check_split
from sim.core import (Box, Dict, Discrete, Env, State, check_batch_size, draw_params, guard_action, key_batch_shape,
                      split_key, where_done)
from sim.normalize import Stats, create_stats, normalize, update_stats

MODES = ("trial", "fixed", "fresh")
"""The env modes of :func:`with_mode` and ``sim.make(mode=...)``."""

RANGES = "ranges"
"""``state.info`` key of the batch-level randomization ranges (see the module docstring)."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`; otherwise raise naming the valid ones."""
    if mode not in MODES:
        raise ValueError(f"unknown env mode {mode!r}; valid modes: {', '.join(MODES)}")
    return mode


def set_ranges(state: State, ranges) -> State:
    """``state`` whose next world resamplings draw from ``ranges`` (a pytree shaped like the env's
    ``default_ranges()``); in a jitted loop this recompiles nothing."""
    return state.replace(info={**state.info, RANGES: jax.tree.map(jnp.asarray, ranges)})


class Wrapper(Env):
    """Delegates everything it does not override to ``env``."""

    def __init__(self, env: Env):
        self.env = env

    def __getattr__(self, name):
        if name == "env":  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def id(self):  # type: ignore[override]
        return self.env.id

    @property
    def observation_space(self):  # type: ignore[override]
        return self.env.observation_space

    @property
    def action_space(self):  # type: ignore[override]
        return self.env.action_space

    @property
    def batch_shape(self):
        return self.env.batch_shape

    @property
    def unwrapped(self) -> Env:
        return self.env.unwrapped

    @property
    def mode(self):  # type: ignore[override]
        return self.env.mode

    def sample_params(self, key, split="train", ranges=None):
        return draw_params(self.env, key, split, ranges)

    def default_ranges(self):
        return self.env.default_ranges()

    def reset(self, key, params):
        return self.env.reset(key, params)

    def step(self, state, action):
        return self.env.step(state, action)

    def param_ranges(self):
        return self.env.param_ranges()

    def split_description(self):
        return self.env.split_description()

    def param_values(self, params):
        return self.env.param_values(params)

    def __repr__(self):
        return f"{type(self).__name__}({self.env!r})"


class VmapEnv(Wrapper):
    """A batch of ``batch_size`` worlds: every function is vmapped over params, keys and states.

    ``batch_size`` may be a tuple, a leading batch shape (e.g. ``(tasks, envs)``): the env is then a
    nest of VmapEnvs, the outermost over the first axis (``batch_size`` is that axis, ``batch_shape``
    the whole shape). ``reset`` and ``sample_params`` accept one key (split over the batch) or keys
    whose batch shape is a prefix of ``batch_shape``. ``sample_params``'s ``ranges`` are shared by the
    whole batch (not vmapped).
    """

    def __init__(self, env: Env, batch_size: int | tuple[int, ...]):
        shape = check_batch_size(batch_size)
        if len(shape) > 1:
            env = VmapEnv(env, shape[1:])
        super().__init__(env)
        self.batch_size = int(shape[0])

    @property
    def batch_shape(self):
        return (self.batch_size,) + self.env.batch_shape

    def _keys(self, key):
        shape = key_batch_shape(key)
        if shape == ():
            return jax.random.split(key, self.batch_size)
        if shape != self.batch_shape[: len(shape)]:
            whole = f" (or keys of batch shape {self.batch_shape})" if len(self.batch_shape) > 1 else ""
            raise ValueError(f"{self.id}: expected one key or {self.batch_size} keys{whole}, got key batch {shape}")
        return key

    def sample_params(self, key, split="train", ranges=None):
        check_split(split)
        return jax.vmap(lambda k: draw_params(self.env, k, split, ranges))(self._keys(key))

    def reset(self, key, params):
        return jax.vmap(self.env.reset)(self._keys(key), params)

    def step(self, state, action):
        action = self.check_action(action)
        return jax.vmap(self.env.step)(state, action)


UNSTABLE = "unstable"
"""``state.metrics`` key counting steps that ended their episode on a fault (the simulation went
unstable, or the action or the env's outputs were not valid): see :func:`end_on_fault`."""


def _finite(x: jax.Array, batch_ndim: int) -> jax.Array:
    """Per env (the leading ``batch_ndim`` dims): every element of ``x`` is finite."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.ones(x.shape[:batch_ndim], bool)
    return jnp.all(jnp.isfinite(x).reshape(x.shape[:batch_ndim] + (-1,)), -1)


def end_on_fault(s: State, fault: jax.Array) -> State:
    """``s`` with the episodes that hit a fault ended: where ``fault`` (an invalid action, see
    :func:`sim.core.guard_action`) or where the reward or the observation is not finite, the step is
    ``terminated`` (not ``truncated``), its reward is 0, non-finite observation elements are 0, and
    ``metrics["unstable"]`` is 1 (it keeps the env's own count where the env reports one). So nothing
    non-finite reaches the learner, whichever env it comes from."""
    batch_ndim = s.reward.ndim
    bad = fault | ~_finite(s.reward, batch_ndim)
    for leaf in jax.tree.leaves(s.obs):
        bad = bad | ~_finite(leaf, batch_ndim)
    obs = jax.tree.map(
        lambda x: jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else x, s.obs
    )
    unstable = bad.astype(jnp.float32)
    if UNSTABLE in s.metrics:
        unstable = jnp.maximum(s.metrics[UNSTABLE].astype(jnp.float32), unstable)
    return s.replace(
        obs=obs,
        reward=jnp.where(bad, jnp.zeros_like(s.reward), s.reward),
        terminated=s.terminated | bad,
        truncated=s.truncated & ~bad,
        metrics={**s.metrics, UNSTABLE: unstable},
    )


class AutoReset(Wrapper):
    """Starts a new episode, from a fresh key, wherever one ends; resamples the world periodically.

    Args:
        env: the env (unbatched or a :class:`VmapEnv`).
        split: which split new worlds are drawn from.
        episodes_per_world: resample params after this many episodes in one world (1: a new world
            every episode, the usual domain randomization); ``None`` keeps the world forever.

    Faults end episodes here, for every env and mode: a non-finite (NaN, inf) or out-of-range
    action is replaced by a neutral one before the env sees it (:func:`sim.core.guard_action`), and
    that step, like any step whose reward or observation is not finite, is ``terminated`` with
    reward 0 and counted in ``metrics["unstable"]`` (:func:`end_on_fault`). Otherwise ``terminated``
    and ``truncated`` pass through unchanged; the observation that ended the episode
    is kept in ``info["final_obs"]`` (for bootstrapping truncated episodes); ``info["episode"]`` counts
    finished episodes in the current world and ``info["world_done"]`` marks steps after which the world
    was resampled. New worlds are drawn with the batch-level ranges in ``info["ranges"]`` when present
    (set at reset from ``env.default_ranges()`` when that is not ``None``).
    """

    def __init__(self, env: Env, split: str = "train", episodes_per_world: int | None = 1):
        super().__init__(env)
        self.split = check_split(split)
        if episodes_per_world is not None and int(episodes_per_world) < 1:
            raise ValueError(f"episodes_per_world must be >= 1 or None, got {episodes_per_world}")
        self.episodes_per_world = None if episodes_per_world is None else int(episodes_per_world)

    @property
    def mode(self):  # type: ignore[override]
        return "fresh" if self.episodes_per_world == 1 else None

    def reset(self, key, params):
        s = self.env.reset(key, params)
        zeros = jnp.zeros(self.batch_shape, jnp.int32)
        info = {**s.info, "final_obs": s.obs, "episode": zeros, "world_done": zeros.astype(bool)}
        ranges = self.env.default_ranges()
        if ranges is not None:
            info[RANGES] = jax.tree.map(jnp.asarray, ranges)
        metrics = {UNSTABLE: jnp.zeros(self.batch_shape, jnp.float32), **s.metrics}
        return s.replace(info=info, metrics=metrics)

    def step(self, state, action):
        info = dict(state.info)
        ranges = info.pop(RANGES, None)  # batch-level, so it must not pass through an inner vmap
        action, fault = guard_action(self.action_space, self.check_action(action))
        # ours unless the env reports it: an env that passes its metrics through must not see the last one
        metrics = {k: v for k, v in state.metrics.items() if k != UNSTABLE}
        s = end_on_fault(self.env.step(state.replace(info=info, metrics=metrics), action), fault)
        done = s.done
        episode = state.info["episode"] + done.astype(jnp.int32)
        if self.episodes_per_world is None:
            world_done = jnp.zeros_like(done)
        else:
            world_done = done & (episode >= self.episodes_per_world)
        episode = jnp.where(world_done, 0, episode)

        def reset_done():
            # Keys advance only where an episode ended, so each env's random stream depends on its
            # own history alone (the same under this batch-level cond and under an outer vmap).
            k_next, k_reset = split_key(s.key)

            def new_world():
                k_r, k_params = split_key(k_reset)
                fresh = draw_params(self.env, k_params, self.split, ranges)
                return where_done(world_done, fresh, s.params), where_done(world_done, k_r, k_reset)

            params, k_reset = jax.lax.cond(jnp.any(world_done), new_world, lambda: (s.params, k_reset))
            fresh = self.env.reset(k_reset, params)
            return (
                where_done(done, fresh.obs, s.obs),
                where_done(done, fresh.env_state, s.env_state),
                params,
                where_done(done, k_next, s.key),
            )

        obs, env_state, params, key = jax.lax.cond(
            jnp.any(done), reset_done, lambda: (s.obs, s.env_state, s.params, s.key)
        )
        info = {**s.info, "final_obs": s.obs, "episode": episode, "world_done": world_done}
        if ranges is not None:
            info[RANGES] = ranges
        return s.replace(obs=obs, env_state=env_state, params=params, key=key, info=info)


RL2_TAIL = ("prev_reward", "prev_done")
TRIAL_TIME = "trial_time"


def rl2_input_names(action_names, discrete: bool = False, time_input: bool = False) -> tuple[str, ...]:
    """Names of the RL² inputs :class:`Trial` appends to the observation: the previous action (one
    element per choice, one-hot, when ``discrete``), the previous reward, the done flag and, with
    ``time_input``, the fraction of the trial elapsed (``trial_time``)."""
    sep = "=" if discrete else "."
    return tuple(f"prev_action{sep}{n}" for n in action_names) + RL2_TAIL + ((TRIAL_TIME,) if time_input else ())


RL2_PART = "rl2"
"""On a :class:`sim.core.Dict` observation, the part :class:`Trial` adds holding the RL² inputs."""


def _episodes(episodes_per_trial) -> int:
    if int(episodes_per_trial) < 1:
        raise ValueError(f"episodes_per_trial must be >= 1, got {episodes_per_trial}")
    return int(episodes_per_trial)


class Trial(Wrapper):
    """Meta-RL trials: ``episodes_per_trial`` episodes in one sampled world (Duan et al. 2016).

    The world is drawn from ``split`` at trial start and kept for the whole trial; episodes inside it
    auto-reset from fresh keys with the same params. The observation gains the RL² inputs: the previous
    action (one-hot when discrete), the previous reward and the previous episode-done flag (all zero at
    trial start; the previous action reads as all zeros after an invalid one, on which
    :class:`AutoReset` ended the episode). With ``time_input`` it also gains ``trial_time``: the steps taken in this trial over
    :attr:`max_trial_steps` (0 at trial start). A trial of fixed length is a finite-horizon problem
    whose optimal policy and value depend on the time left (Pardo et al. 2018, "Time limits in RL");
    without this input the recurrent core has to count the steps itself. The registry turns it on for
    the tabular tasks (bandits, MDPs). Measured, it is a small help at most: RL² on bandit-k5-n100
    (10M steps, gamma 1) scores 76.9 with it and 76.7 without, inside the 95% CI of ±0.7.

    Where the RL² inputs go: on a 1-D :class:`Box` observation they are appended after the base
    elements (names from :func:`rl2_input_names`); on a :class:`sim.core.Dict` observation they are a
    new vector part named :data:`RL2_PART` (``"rl2"``), so every base part (an image, a state vector)
    stays as it was.

    For the learner the trial is the episode: ``terminated`` marks the trial's last step (the same
    flag is ``info["trial_done"]``: recurrent carries reset after it, and only there), and
    ``truncated`` is always false. The inner episodes' own flags stay apart in
    ``info["episode_terminated"]`` and ``info["episode_truncated"]``.
    """

    mode = "trial"

    def __init__(self, env: Env, episodes_per_trial: int, split: str = "train", time_input: bool = False):
        episodes = _episodes(episodes_per_trial)
        super().__init__(AutoReset(env, split=split, episodes_per_world=episodes))
        self.episodes_per_trial = episodes
        self.split = split
        self.time_input = bool(time_input)
        base, act = env.observation_space, env.action_space
        if isinstance(act, Discrete):
            act_low, act_high = (0.0,) * act.n, (1.0,) * act.n
        else:
            act_low, act_high = act.low, act.high
        rl2 = Box(
            names=rl2_input_names(act.names, isinstance(act, Discrete), self.time_input),
            low=act_low + (-float("inf"), 0.0) + ((0.0,) if self.time_input else ()),
            high=act_high + (float("inf"), 1.0) + ((1.0,) if self.time_input else ()),
        )
        self._rl2_dim = rl2.shape[0]
        if isinstance(base, Dict):
            if RL2_PART in base:
                raise ValueError(f"{env.id}: the observation already has a part named {RL2_PART!r}, where the "
                                 f"RL² inputs go; parts are {list(base.keys())}")
            self._obs_space = Dict(base.items() + ((RL2_PART, rl2),))
        elif isinstance(base, Box) and base.is_vector:
            self._obs_space = Box(names=base.names + rl2.names, low=base.low + rl2.low, high=base.high + rl2.high)
        else:
            raise ValueError(f"{env.id}: trials need a 1-D float Box or a Dict observation, got "
                             f"{base.describe()}; put images in a Dict part")

    @property
    def observation_space(self):  # type: ignore[override]
        return self._obs_space

    @property
    def max_trial_steps(self) -> int:
        """Upper bound on the steps of one trial."""
        return self.episodes_per_trial * self.unwrapped.episode_length

    def _trial_inputs(self, action, reward, done):
        act = self.env.action_space
        action, fault = guard_action(act, action)
        if isinstance(act, Discrete):
            a = jax.nn.one_hot(action, act.n, dtype=jnp.float32)
        else:
            a = action.astype(jnp.float32)
        a = jnp.where(fault[..., None], 0.0, a)  # an invalid action (the episode ended on it) reads as none
        return jnp.concatenate([a, reward[..., None].astype(jnp.float32), done[..., None].astype(jnp.float32)], -1)

    def _with_inputs(self, obs, extra):
        """The base observation with the RL² inputs ``extra`` [..., rl2 dim] added."""
        if isinstance(self._obs_space, Dict):
            return {**obs, RL2_PART: extra}
        return jnp.concatenate([obs, extra], -1)

    def reset(self, key, params):
        s = self.env.reset(key, params)
        obs = self._with_inputs(s.obs, jnp.zeros(self.batch_shape + (self._rl2_dim,), jnp.float32))
        false = jnp.zeros(self.batch_shape, bool)
        info = {
            **s.info,
            "final_obs": obs,
            "trial_done": false,
            "episode_terminated": false,
            "episode_truncated": false,
        }
        if self.time_input:
            info["trial_step"] = jnp.zeros(self.batch_shape, jnp.int32)
        return s.replace(obs=obs, terminated=false, truncated=false, info=info)

    def step(self, state, action):
        action = self.check_action(action)
        info = dict(state.info)
        trial_step = info.pop("trial_step", None)  # ours: not passed through the inner wrappers
        s = self.env.step(state.replace(info=info), action)
        extra = self._trial_inputs(action, s.reward, s.done)
        trial_done = s.info["world_done"]
        if self.time_input:
            trial_step = trial_step + 1
            extra = jnp.concatenate([extra, (trial_step.astype(jnp.float32) / self.max_trial_steps)[..., None]], -1)
            trial_step = jnp.where(trial_done, 0, trial_step)
        # a new trial starts from zero RL² inputs, as after reset (the policy's carry resets there too)
        first_extra = jnp.where(trial_done[..., None], 0.0, extra)
        info = {
            **s.info,
            "final_obs": self._with_inputs(s.info["final_obs"], extra),
            "trial_done": trial_done,
            "episode_terminated": s.terminated,
            "episode_truncated": s.truncated,
        }
        if self.time_input:
            info["trial_step"] = trial_step
        return s.replace(
            obs=self._with_inputs(s.obs, first_extra),
            terminated=trial_done,
            truncated=jnp.zeros_like(trial_done),
            info=info,
        )


class FixedWorld(Wrapper):
    """``episodes_per_trial`` episodes in one sampled world, without RL² inputs (the ``fixed`` mode:
    MAML, MAESN, EPG adapt across the episodes of one world by gradient or latent, not by inputs).

    The same world and initial-state random streams as :class:`Trial` for the same keys (both run
    :class:`AutoReset` with ``episodes_per_world = episodes_per_trial``), so agents evaluated in either
    mode meet the same worlds; and the same bookkeeping: ``info["episode"]`` (finished episodes in the
    trial), ``info["trial_done"]`` (the trial's last step: the world is resampled after it),
    ``info["episode_terminated"]`` / ``info["episode_truncated"]``, :attr:`episodes_per_trial` and
    :attr:`max_trial_steps`. Unlike :class:`Trial`, the observation is the base env's and
    ``terminated`` / ``truncated`` are the episodes' own (for the learner the episode is the episode).
    """

    mode = "fixed"

    def __init__(self, env: Env, episodes_per_trial: int, split: str = "train"):
        episodes = _episodes(episodes_per_trial)
        super().__init__(AutoReset(env, split=split, episodes_per_world=episodes))
        self.episodes_per_trial = episodes
        self.split = split

    @property
    def max_trial_steps(self) -> int:
        """Upper bound on the steps of one trial (``episodes_per_trial`` episodes)."""
        return self.episodes_per_trial * self.unwrapped.episode_length

    def reset(self, key, params):
        s = self.env.reset(key, params)
        false = jnp.zeros(self.batch_shape, bool)
        info = {**s.info, "trial_done": false, "episode_terminated": false, "episode_truncated": false}
        return s.replace(info=info)

    def step(self, state, action):
        s = self.env.step(state, action)
        info = {
            **s.info,
            "trial_done": s.info["world_done"],
            "episode_terminated": s.terminated,
            "episode_truncated": s.truncated,
        }
        return s.replace(info=info)


def find_wrapper(env: Env, cls: type, what: str) -> Env:
    """The outermost layer of ``env`` (itself or a wrapped ``.env``) that is a ``cls``; else a ValueError
    saying ``what`` needs it (``what``: e.g. "maml needs a batched env (...)")."""
    e = env
    while e is not None and not isinstance(e, cls):
        e = getattr(e, "env", None)
    if e is None:
        raise ValueError(f"{what}, got {env}")
    return e


def with_mode(env: Env, mode: str, episodes_per_trial: int, split: str = "train", time_input: bool = False) -> Env:
    """``env`` (unbatched or a :class:`VmapEnv`) in one of the :data:`MODES`.

    Args:
        mode: ``trial`` (:class:`Trial`), ``fixed`` (:class:`FixedWorld`) or ``fresh`` (:class:`AutoReset`
            with a new world every episode).
        episodes_per_trial: episodes per world in ``trial`` and ``fixed`` (ignored by ``fresh``).
        split: where worlds are drawn from on resampling.
        time_input: ``trial`` only: add ``trial_time`` to the RL² inputs.
    """
    check_mode(mode)
    if mode == "trial":
        return Trial(env, episodes_per_trial, split=split, time_input=time_input)
    if mode == "fixed":
        return FixedWorld(env, episodes_per_trial, split=split)
    return AutoReset(env, split=split, episodes_per_world=1)


class NormalizeObs(Wrapper):
    """Running mean/variance observation normalization, statistics in ``info["obs_norm"]``.

    Put it on a batched env so the statistics are shared across the batch. ``update=False`` freezes
    them (evaluation). ``final_obs`` is normalized with the same statistics. On a
    :class:`sim.core.Dict` observation the vector parts are normalized (one statistics per part) and
    the others (images) pass through.
    """

    def __init__(self, env: Env, clip: float = 10.0, update: bool = True):
        super().__init__(env)
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.clip = float(clip)
        self.update = update

    def _norm(self, s: State, stats: Stats) -> State:
        if self.update:
            stats = update_stats(stats, s.obs)
        info = {**s.info, "obs_norm": stats}
        if "final_obs" in s.info:
            info["final_obs"] = normalize(stats, s.info["final_obs"], self.clip)
        return s.replace(obs=normalize(stats, s.obs, self.clip), info=info)

    def reset(self, key, params):
        s = self.env.reset(key, params)
        return self._norm(s, create_stats(self.observation_space))

    def step(self, state, action):
        info = dict(state.info)
        stats = info.pop("obs_norm")  # batch-level, so it must not pass through an inner vmap
        return self._norm(self.env.step(state.replace(info=info), action), stats)


TASK_OBS_PREFIX = "task."
"""Observation names of the task parameters an :class:`ObserveTask` env appends (``task.direction``)."""


class ObserveTask(Wrapper):
    """The world's task parameters appended to a MuJoCo robot's observation, named ``task.<name>``:
    the privileged env ``<id>+task`` (``sim.make("cheetah-dir+task")``) on which an *oracle* is
    trained, a policy that knows the task as the MAML paper's oracle does. ``proteus eval --oracle``
    plays such a run on the plain env by reading each world's task (:class:`meta_rl.agent.TaskObservingAgent`).

    Wraps the base (unbatched) env, below batching and the env modes.
    """

    def __init__(self, env: Env):
        super().__init__(env)
        base = env.unwrapped
        ranges = getattr(getattr(base, "task", None), "task_ranges", None)
        if not ranges:
            raise ValueError(f"{base.id if hasattr(base, 'id') else base} has no task parameters to observe "
                             "(only MuJoCo robot tasks with task parameters have a '+task' variant)")
        self.task_names = tuple(ranges)
        space = env.observation_space
        if not isinstance(space, Box) or len(space.shape) != 1:
            raise ValueError(f"ObserveTask needs a flat observation, got {space}")
        names = tuple(f"{TASK_OBS_PREFIX}{n}" for n in self.task_names)
        inf = (float("inf"),) * len(names)
        self._space = Box(space.names + names, space.low + tuple(-x for x in inf), space.high + inf)

    @property
    def observation_space(self):  # type: ignore[override]
        return self._space

    def task_vector(self, params) -> jax.Array:
        """[..., T] the task parameters of ``params`` (any batch shape), in :attr:`task_names` order."""
        values = self.env.param_values(params)
        return jnp.stack([jnp.asarray(values[n], jnp.float32) for n in self.task_names], -1)

    def _with_task(self, s: State) -> State:
        return s.replace(obs=jnp.concatenate([s.obs, self.task_vector(s.params)], -1))

    def reset(self, key, params):
        return self._with_task(self.env.reset(key, params))

    def step(self, state, action):
        return self._with_task(self.env.step(state, action))


class DiscreteActions(Wrapper):
    """A continuous one-actuator env driven by a :class:`Discrete` choice among fixed action levels.

    Choice ``i`` applies ``levels[i]`` (in the env's action units, within its ``Box``); the value-based
    learners (MFEC, NEC, DQN) act this way, as on the classic discrete cart-pole (push left or right).
    A choice outside ``[0, n)`` under ``jit`` becomes a non-finite action, which the env refuses as it
    refuses any: the neutral action steps, and the episode ends as terminated, counted unstable.
    """

    def __init__(self, env: Env, levels: tuple[float, ...] = (-1.0, 1.0)):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, Box) or space.shape != (1,):
            raise ValueError(f"DiscreteActions needs a one-element Box action space, {env.id} has {space.describe()}")
        levels = tuple(float(v) for v in levels)
        lo, hi = float(jnp.asarray(space.low).reshape(-1)[0]), float(jnp.asarray(space.high).reshape(-1)[0])
        if len(levels) < 2 or any(not lo <= v <= hi for v in levels):
            raise ValueError(f"DiscreteActions levels must be at least two values within [{lo}, {hi}], got {levels}")
        self.levels = levels
        name = space.names[0]
        self._space = Discrete(names=tuple(f"{name}={v:+g}" for v in levels))
        self._table = jnp.asarray(levels, jnp.float32)

    @property
    def action_space(self):  # type: ignore[override]
        return self._space

    def step(self, state, action):
        choice = self.check_action(action)
        fault = (choice < 0) | (choice >= self._space.n)
        value = jnp.where(fault, jnp.nan, self._table[jnp.clip(choice, 0, self._space.n - 1)])
        return self.env.step(state, value[..., None])
