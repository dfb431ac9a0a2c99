"""Wrappers shared by every backend: batching, auto-reset, trials, observation normalization.

Wrappers work on unbatched envs and on :class:`VmapEnv` batches alike: per-env flags have the batch
shape and selections broadcast over trailing dims. On a batch, resets run under one
``lax.cond(any(done))``, so steps where no env finished pay nothing for them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from randomization.ranges import check_split
from sim.core import Box, Discrete, Env, State, key_batch_shape, split_key, where_done
from sim.normalize import RunningStats, normalize, update_stats


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

    def sample_params(self, key, split="train"):
        return self.env.sample_params(key, split)

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

    ``reset`` and ``sample_params`` accept one key (split into ``batch_size``) or a batch of keys.
    """

    def __init__(self, env: Env, batch_size: int):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(env)
        self.batch_size = int(batch_size)

    @property
    def batch_shape(self):
        return (self.batch_size,) + self.env.batch_shape

    def _keys(self, key):
        shape = key_batch_shape(key)
        if shape == ():
            return jax.random.split(key, self.batch_size)
        if shape != (self.batch_size,):
            raise ValueError(f"{self.id}: expected one key or {self.batch_size} keys, got key batch {shape}")
        return key

    def sample_params(self, key, split="train"):
        check_split(split)
        return jax.vmap(lambda k: self.env.sample_params(k, split))(self._keys(key))

    def reset(self, key, params):
        return jax.vmap(self.env.reset)(self._keys(key), params)

    def step(self, state, action):
        action = self.check_action(action)
        return jax.vmap(self.env.step)(state, action)


class AutoReset(Wrapper):
    """Starts a new episode, from a fresh key, wherever one ends; resamples the world periodically.

    Args:
        env: the env (unbatched or a :class:`VmapEnv`).
        split: which split new worlds are drawn from.
        episodes_per_world: resample params after this many episodes in one world (1: a new world
            every episode, the usual domain randomization); ``None`` keeps the world forever.

    ``terminated`` and ``truncated`` pass through unchanged; the observation that ended the episode
    is kept in ``info["final_obs"]`` (for bootstrapping truncated episodes); ``info["episode"]`` counts
    finished episodes in the current world and ``info["world_done"]`` marks steps after which the world
    was resampled.
    """

    def __init__(self, env: Env, split: str = "train", episodes_per_world: int | None = 1):
        super().__init__(env)
        self.split = check_split(split)
        if episodes_per_world is not None and int(episodes_per_world) < 1:
            raise ValueError(f"episodes_per_world must be >= 1 or None, got {episodes_per_world}")
        self.episodes_per_world = None if episodes_per_world is None else int(episodes_per_world)

    def reset(self, key, params):
        s = self.env.reset(key, params)
        zeros = jnp.zeros(self.batch_shape, jnp.int32)
        info = {**s.info, "final_obs": s.obs, "episode": zeros, "world_done": zeros.astype(bool)}
        return s.replace(info=info)

    def step(self, state, action):
        s = self.env.step(state, action)
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
                fresh = self.env.sample_params(k_params, self.split)
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
        return s.replace(obs=obs, env_state=env_state, params=params, key=key, info=info)


RL2_TAIL = ("prev_reward", "prev_done")
TRIAL_TIME = "trial_time"


def rl2_input_names(action_names, discrete: bool = False, time_input: bool = False) -> tuple[str, ...]:
    """Names of the RL² inputs :class:`Trial` appends to the observation: the previous action (one
    element per choice, one-hot, when ``discrete``), the previous reward, the done flag and, with
    ``time_input``, the fraction of the trial elapsed (``trial_time``)."""
    sep = "=" if discrete else "."
    return tuple(f"prev_action{sep}{n}" for n in action_names) + RL2_TAIL + ((TRIAL_TIME,) if time_input else ())


class Trial(Wrapper):
    """Meta-RL trials: ``episodes_per_trial`` episodes in one sampled world (Duan et al. 2016).

    The world is drawn from ``split`` at trial start and kept for the whole trial; episodes inside it
    auto-reset from fresh keys with the same params. The observation gains the RL² inputs: the previous
    action (one-hot when discrete), the previous reward and the previous episode-done flag (all zero at
    trial start). With ``time_input`` it also gains ``trial_time``: the steps taken in this trial over
    :attr:`max_trial_steps` (0 at trial start). A trial of fixed length is a finite-horizon problem
    whose optimal policy and value depend on the time left (Pardo et al. 2018, "Time limits in RL");
    without this input the recurrent core has to count the steps itself. The registry turns it on for
    the tabular tasks (bandits, MDPs). Measured, it is a small help at most: RL² on bandit-k5-n100
    (10M steps, gamma 1) scores 76.9 with it and 76.7 without, inside the 95% CI of ±0.7.

    For the learner the trial is the episode: ``terminated`` marks the trial's last step (the same
    flag is ``info["trial_done"]``: recurrent carries reset after it, and only there), and
    ``truncated`` is always false. The inner episodes' own flags stay apart in
    ``info["episode_terminated"]`` and ``info["episode_truncated"]``.
    """

    def __init__(self, env: Env, episodes_per_trial: int, split: str = "train", time_input: bool = False):
        if int(episodes_per_trial) < 1:
            raise ValueError(f"episodes_per_trial must be >= 1, got {episodes_per_trial}")
        super().__init__(AutoReset(env, split=split, episodes_per_world=int(episodes_per_trial)))
        self.episodes_per_trial = int(episodes_per_trial)
        self.split = split
        self.time_input = bool(time_input)
        base, act = env.observation_space, env.action_space
        if isinstance(act, Discrete):
            act_low, act_high = (0.0,) * act.n, (1.0,) * act.n
        else:
            act_low, act_high = act.low, act.high
        self._obs_space = Box(
            names=base.names + rl2_input_names(act.names, isinstance(act, Discrete), self.time_input),
            low=base.low + act_low + (-float("inf"), 0.0) + ((0.0,) if self.time_input else ()),
            high=base.high + act_high + (float("inf"), 1.0) + ((1.0,) if self.time_input else ()),
        )

    @property
    def observation_space(self):  # type: ignore[override]
        return self._obs_space

    @property
    def max_trial_steps(self) -> int:
        """Upper bound on the steps of one trial."""
        return self.episodes_per_trial * self.unwrapped.episode_length

    def _trial_inputs(self, action, reward, done):
        act = self.env.action_space
        if isinstance(act, Discrete):
            a = jax.nn.one_hot(action, act.n, dtype=jnp.float32)
        else:
            a = action.astype(jnp.float32)
        return jnp.concatenate([a, reward[..., None].astype(jnp.float32), done[..., None].astype(jnp.float32)], -1)

    def reset(self, key, params):
        s = self.env.reset(key, params)
        zeros = jnp.zeros(self.batch_shape + self._obs_space.shape, jnp.float32)
        obs = zeros.at[..., : s.obs.shape[-1]].set(s.obs)
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
            "final_obs": jnp.concatenate([s.info["final_obs"], extra], -1),
            "trial_done": trial_done,
            "episode_terminated": s.terminated,
            "episode_truncated": s.truncated,
        }
        if self.time_input:
            info["trial_step"] = trial_step
        return s.replace(
            obs=jnp.concatenate([s.obs, first_extra], -1),
            terminated=trial_done,
            truncated=jnp.zeros_like(trial_done),
            info=info,
        )


class NormalizeObs(Wrapper):
    """Running mean/variance observation normalization, statistics in ``info["obs_norm"]``.

    Put it on a batched env so the statistics are shared across the batch. ``update=False`` freezes
    them (evaluation). ``final_obs`` is normalized with the same statistics.
    """

    def __init__(self, env: Env, clip: float = 10.0, update: bool = True):
        super().__init__(env)
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.clip = float(clip)
        self.update = update

    def _norm(self, s: State, stats: RunningStats) -> State:
        if self.update:
            stats = update_stats(stats, s.obs)
        info = {**s.info, "obs_norm": stats}
        if "final_obs" in s.info:
            info["final_obs"] = normalize(stats, s.info["final_obs"], self.clip)
        return s.replace(obs=normalize(stats, s.obs, self.clip), info=info)

    def reset(self, key, params):
        s = self.env.reset(key, params)
        return self._norm(s, RunningStats.create(self.observation_space.shape[-1]))

    def step(self, state, action):
        info = dict(state.info)
        stats = info.pop("obs_norm")  # batch-level, so it must not pass through an inner vmap
        return self._norm(self.env.step(state.replace(info=info), action), stats)
