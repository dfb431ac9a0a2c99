"""The sensor/actuator effects wrapper, driven by a spec's :class:`randomization.effects.Effects`.

It sits directly on the base env (below batching and auto-reset), so its buffers live in the env
state and start afresh every episode. The world's params become ``{"env": inner params, "effects":
{...}}``; effect strengths are drawn with the world and held for its whole life (a trial).

Order inside one control step: the action enters the delay line and the delayed one is applied; a
push may kick the joint velocities first; the env steps; the new observation enters the latency line
and the delayed one gets noise added. Rewards and terminations come from the true state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from randomization.effects import Effects
from randomization.ranges import check_split
from sim.core import Env, draw_params
from sim.wrappers import Wrapper


class SensorActuator(Wrapper):
    def __init__(self, env: Env, effects: Effects):
        super().__init__(env)
        self.effects = effects
        self._lat = effects.obs_latency.max_steps if effects.obs_latency else 0
        self._delay = effects.action_delay.max_steps if effects.action_delay else 0
        self._push_dofs = None
        if effects.push:
            base = env.unwrapped
            if not hasattr(base, "kick"):
                raise ValueError(f"{env.id}: pushes need a physics env with kick(); {type(base).__name__} has none")
            m = base.model
            dofs = []
            for name in effects.push.joints:
                j = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
                if j < 0:
                    valid = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, i) for i in range(m.njnt)]
                    raise ValueError(f"push: no joint named {name!r}; valid joint names: {', '.join(valid)}")
                width = {0: 6, 1: 3, 2: 1, 3: 1}[int(m.jnt_type[j])]
                dofs += list(range(m.jnt_dofadr[j], m.jnt_dofadr[j] + width))
            self._push_dofs = np.asarray(dofs, np.int32)

    # -- params ---------------------------------------------------------------------------------
    def default_ranges(self):
        inner = self.env.default_ranges()
        if inner is None:
            return None
        return {"env": inner, "effects": {name: r.bounds() for name, r in self.effects.ranges().items()}}

    def sample_params(self, key, split="train", ranges=None):
        check_split(split)
        k_env, k_eff = jax.random.split(key)
        declared = self.effects.ranges()
        keys = jax.random.split(k_eff, max(len(declared), 1))
        eff = {name: r.sample(k, split, (), None if ranges is None else ranges["effects"][name])
               for k, (name, r) in zip(keys, declared.items())}
        for name in ("obs_latency.steps", "action_delay.steps"):
            if name in eff:  # step counts are discrete whatever the range's distribution
                eff[name] = jnp.floor(eff[name]).astype(jnp.int32)
        return {"env": draw_params(self.env, k_env, split, None if ranges is None else ranges["env"]), "effects": eff}

    def param_ranges(self):
        return {**self.env.param_ranges(), **self.effects.ranges()}

    def param_values(self, params):
        return {**self.env.param_values(params["env"]), **params["effects"]}

    # -- contract -------------------------------------------------------------------------------
    def _inner(self, state):
        return state.replace(params=state.params["env"], env_state=state.env_state["inner"])

    def _observe(self, obs_buf, params, key):
        """The observation the agent gets: from ``obs_latency.steps`` ago, with noise on its floating
        parts (a camera image, uint8, has its own sensor effects: :mod:`randomization.visual`)."""
        eff = params["effects"]
        obs = jax.tree.map(lambda b: b[eff["obs_latency.steps"]] if self.effects.obs_latency else b[0], obs_buf)
        if self.effects.obs_noise:
            def noisy(x):
                if not jnp.issubdtype(x.dtype, jnp.floating):
                    return x
                return x + eff["obs_noise.std"] * jax.random.normal(key, x.shape, x.dtype)
            obs = jax.tree.map(noisy, obs)
        return obs

    def reset(self, key, params):
        k_env, k_noise = jax.random.split(key)
        s = self.env.reset(k_env, params["env"])
        obs_buf = jax.tree.map(lambda o: jnp.broadcast_to(o, (self._lat + 1,) + o.shape), s.obs)
        act_buf = jnp.zeros((self._delay + 1,) + self.action_space.shape, jnp.float32)
        env_state = {"inner": s.env_state, "obs_buf": obs_buf, "act_buf": act_buf}
        return s.replace(obs=self._observe(obs_buf, params, k_noise), params=params, env_state=env_state)

    def step(self, state, action):
        action = self.check_action(action)
        params = state.params
        key, k_noise, k_push, k_dir = jax.random.split(state.key, 4)
        act_buf = jnp.concatenate([action[None].astype(jnp.float32), state.env_state["act_buf"][:-1]])
        applied = act_buf[params["effects"]["action_delay.steps"]] if self.effects.action_delay else action
        inner = self._inner(state).replace(key=key)
        if self.effects.push:
            n = len(self._push_dofs)
            kick = jax.random.uniform(k_push) < self.effects.push.probability
            direction = jax.random.normal(k_dir, (n,))
            direction = direction / (jnp.linalg.norm(direction) + 1e-8)
            dv = jnp.where(kick, params["effects"]["push.magnitude"] * direction, 0.0)
            inner = inner.replace(env_state=self.unwrapped.kick(inner.env_state, self._push_dofs, dv))
        s = self.env.step(inner, applied.astype(self.action_space.dtype))
        obs_buf = jax.tree.map(lambda o, b: jnp.concatenate([o[None], b[:-1]]), s.obs, state.env_state["obs_buf"])
        env_state = {"inner": s.env_state, "obs_buf": obs_buf, "act_buf": act_buf}
        return s.replace(obs=self._observe(obs_buf, params, k_noise), params=params, env_state=env_state)
