"""EnvPool as the peer of ``proteus bench sim``: its jitted loop (XLA interface, ``lax.scan``, an MLP
policy), run in a worker process.

EnvPool's XLA step takes float64 actions, which JAX gives only with ``JAX_ENABLE_X64`` set for the
whole process; the worker sets it so the Proteus rows keep their float32 settings. The parent sends
one line per timed run and the worker answers with the seconds it took, so the bench can interleave
EnvPool's runs with its own and take ratios per round.

Models: cheetah and pendulum run the dm_control suite files EnvPool ships (``CheetahRun-v1``,
``PendulumSwingup-v1``: the same ``cheetah.xml`` and ``pendulum.xml`` Proteus loads). For the ant,
Proteus's own quadruped (:data:`robots.ant.XML`, Gymnasium Ant-v4's layout) replaces EnvPool's
``ant.xml`` in a linked copy of its assets, so ``Ant-v4`` steps the same model; its C++ still
computes Ant-v4's observation and reward. Frame skip is set to the Proteus task's substeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

# robot (the env id's first word) -> (EnvPool task id, the asset to replace with Proteus's model, or None)
PEERS = {
    "cheetah": ("CheetahRun-v1", None),
    "pendulum": ("PendulumSwingup-v1", None),
    "ant": ("Ant-v4", "mujoco/assets_gym/ant.xml"),
}


def available() -> bool:
    """Whether ``envpool`` is installed (the optional ``bench`` extra)."""
    import importlib.util

    return importlib.util.find_spec("envpool") is not None


def peer_for(env_id: str) -> str | None:
    """The EnvPool task that steps ``env_id``'s model, or None."""
    peer = PEERS.get(env_id.split("-")[0])
    return peer[0] if peer else None


def _assets_with(replace: str, xml: str) -> str:
    """A temporary copy of EnvPool's asset tree (symlinks) with ``replace`` holding ``xml``."""
    import envpool_assets

    src = os.path.dirname(envpool_assets.__file__)
    dst = tempfile.mkdtemp(prefix="proteus-envpool-")
    for root, _, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in files:
            os.symlink(os.path.join(root, f), os.path.join(dst, rel, f))
    os.remove(os.path.join(dst, replace))
    with open(os.path.join(dst, replace), "w") as f:
        f.write(xml)
    return dst


class Worker:
    """The EnvPool loop in a child process; :meth:`time` runs it once and returns the seconds."""

    def __init__(self, env_id: str, batch: int, nsub: int, steps: int, threads: int, hidden: int):
        env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
        args = [sys.executable, "-u", "-m", "proteus.bench_envpool", env_id, str(batch), str(nsub), str(steps),
                str(threads), str(hidden)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env)
        self._expect("ready")

    def _expect(self, what: str) -> str:
        line = self.proc.stdout.readline().strip()
        if not line.startswith(what):
            self.close()
            raise RuntimeError(f"EnvPool worker: expected {what!r}, got {line!r}")
        return line

    def time(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self._expect("seconds").split()[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _serve(env_id: str, batch: int, nsub: int, steps: int, threads: int, hidden: int) -> None:
    import time

    import envpool
    import jax
    import jax.numpy as jnp

    robot = env_id.split("-")[0]
    task, replace = PEERS[robot]
    kw = {}
    if replace:
        from robots import ant

        kw["base_path"] = _assets_with(replace, {"ant": ant.XML}[robot])
    env = envpool.make(task, env_type="gymnasium", num_envs=batch, batch_size=batch, num_threads=threads,
                       frame_skip=nsub, seed=0, **kw)
    obs, _ = env.reset()
    handle, _, _, step = env.xla()
    obs_dim = sum(int(v.shape[-1]) for v in jax.tree.leaves(obs))
    nu = env.action_space.shape[0]
    keys = jax.random.split(jax.random.key(1), 3)
    sizes = (obs_dim, hidden, hidden, nu)
    params = [(jax.random.normal(k, (i, o), jnp.float64) / jnp.sqrt(i), jnp.zeros(o, jnp.float64))
              for k, i, o in zip(keys, sizes[:-1], sizes[1:])]

    def policy(obs):
        x = jnp.concatenate([jnp.asarray(v, jnp.float64).reshape(batch, -1) for v in jax.tree.leaves(obs)], -1)
        for w, b in params:
            x = jnp.tanh(x @ w + b)
        return x

    @jax.jit
    def run(handle, obs):
        def body(carry, _):
            handle, obs = carry
            handle, (obs, reward, *_rest) = step(handle, policy(obs))
            return (handle, obs), reward.sum()

        (handle, obs), r = jax.lax.scan(body, (handle, obs), None, length=steps)
        return handle, obs, r.sum()

    obs = jax.tree.map(jnp.asarray, obs)
    handle, obs, r = run(handle, obs)  # compile + warm up
    jax.block_until_ready(r)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t = time.perf_counter()
        handle, obs, r = run(handle, obs)
        jax.block_until_ready(r)
        print(f"seconds {time.perf_counter() - t!r}", flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1], *map(int, sys.argv[2:7]))
