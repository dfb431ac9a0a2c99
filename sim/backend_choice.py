"""``backend="auto"`` for MuJoCo robots: native MuJoCo, or MJX where it is faster on this machine.

MJX pays a fixed cost per call that native MuJoCo does not, and native pays one host round trip per
control step that MJX does not. For robots with contacts native wins by 50× and more on a CPU
(``proteus bench sim``); for a tiny model without contacts (the pendulum: one hinge, nothing to
collide) MJX can win. So ``auto`` is native, except for a model with at most :data:`TINY_NV` degrees
of freedom that makes no contact (:func:`contact_free`): there both backends are timed once (a jitted closed
loop of :data:`BATCH` randomized worlds) and the faster kept, cached in
``$PROTEUS_CACHE/backends.json`` (default ``~/.cache/proteus``) per env, MuJoCo and JAX version,
JAX platform and CPU count.

``PROTEUS_AUTO_BACKEND=native`` (or ``mjx``) skips the choice: the test suite sets it, so its
trajectories do not depend on a timing. The CLI records the backend ``auto`` chose in a run's
``config.json``, so a resumed run steps on the backend it started on, on any machine.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TINY_NV = 4  # degrees of freedom up to which MJX is worth timing
BATCH = 64  # worlds in the timed loop
STEPS = 50  # control steps per timed run


def cache_path() -> Path:
    return Path(os.environ.get("PROTEUS_CACHE", Path.home() / ".cache" / "proteus")) / "backends.json"


def contact_free(model, steps: int = 2000, seed: int = 0) -> bool:
    """No explicit contact pair, and no contact in ``steps`` physics steps under random controls
    (uniform over each actuator's range, redrawn every 10 steps) from ``qpos0``. Empirical: a
    pendulum's floor could collide with its pole by the geoms' bits, but the pole never reaches it."""
    import mujoco
    import numpy as np

    if model.npair:
        return False
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    limited = model.actuator_ctrllimited.astype(bool)
    lo, hi = np.where(limited, lo, -1.0), np.where(limited, hi, 1.0)
    for k in range(steps):
        if k % 10 == 0:
            data.ctrl[:] = rng.uniform(lo, hi)
        mujoco.mj_step(model, data)
        if data.ncon:
            return False
    return True


def candidate(model) -> bool:
    """Whether MJX is worth timing for this model (tiny and contact-free)."""
    return model.nv <= TINY_NV and contact_free(model)


def _key(env_id: str) -> str:
    import jax
    import mujoco

    return f"{env_id}|mujoco {mujoco.__version__}|jax {jax.__version__} {jax.default_backend()}|{os.cpu_count()} cpus"


def measure(env_id: str, batch: int = BATCH, steps: int = STEPS) -> dict[str, float]:
    """Seconds per ``steps`` control steps of ``batch`` worlds on each backend (best of 3, compile excluded)."""
    import jax

    import sim

    out = {}
    for backend in ("native", "mjx"):
        env = sim.make(env_id, batch_size=batch, mode="fresh", backend=backend)
        params = env.sample_params(jax.random.key(0))
        s0 = env.reset(jax.random.key(1), params)

        @jax.jit
        def run(s, key):
            def body(s, k):
                return env.step(s, env.action_space.sample(k, env.batch_shape)), None

            return jax.lax.scan(body, s, jax.random.split(key, steps))[0].reward

        jax.block_until_ready(run(s0, jax.random.key(2)))
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(run(s0, jax.random.key(2)))
            best = min(best, time.perf_counter() - t)
        out[backend] = best
    return out


def choose(env_id: str, backends: tuple[str, ...], model_of=None) -> str:
    """The backend ``auto`` means for ``env_id`` (see the module docstring). ``model_of()`` gives the
    env's ``MjModel``; it is called once per env and machine (the decision is cached either way)."""
    if set(backends) != {"native", "mjx"}:
        return backends[0]
    forced = os.environ.get("PROTEUS_AUTO_BACKEND")
    if forced:
        if forced not in backends:
            raise ValueError(f"PROTEUS_AUTO_BACKEND={forced!r}: expected one of {', '.join(backends)}")
        return forced
    path, key = cache_path(), _key(env_id)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        if model_of is None or not candidate(model_of()):
            cache[key] = {"backend": "native", "why": f"more than {TINY_NV} dofs or contacts: not timed"}
        else:
            seconds = measure(env_id)
            cache[key] = {"backend": min(seconds, key=seconds.get), "seconds": seconds, "batch": BATCH, "steps": STEPS}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: decided again next time
    return cache[key]["backend"]
