"""``proteus render``: what a pixel env's camera shows, per split.

For a pixel env (a MuJoCo task observed through a camera, :class:`robots.task.PixelSpec`) it writes

* ``OUT/ENV-grid-SPLIT.png`` per split: the first observation images of ``worlds`` randomized worlds
  drawn from that split, in a grid (the same keys in every split, so tile ``i`` is the same draw
  moved into each split's ranges);
* ``OUT/ENV-rollout.gif``: ``steps`` control steps under uniform random actions in the first
  ``gif_worlds`` training-split worlds, their images side by side in each frame (a world whose
  episode ends starts a new episode in the same world).

Every image is the env's own observation: rendered in the world's appearance from inside the jitted
step and passed through its pixel effects (noise, colour gain, blur) and observation latency, exactly
what a learner sees. Nothing here changes the env; a size other than the env's own (``height``,
``width``) builds the same task at that size (:func:`pixel_base`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

SPLITS = ("train", "interp", "extrap")
PAD = 2  # pixels between tiles
BACKGROUND = (40, 40, 40)  # the padding's colour
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""XLA options for code run a few times only (drawing worlds, resets, a short rollout): about half the
compile time of the default optimization on CPU (drawing a pixel env's worlds: 4 s instead of 9 s
here), at no cost that matters when the program runs once."""


def quick_jit(fn, **kw):
    """``jax.jit(fn)`` compiled with :data:`QUICK_COMPILE`."""
    import jax

    return jax.jit(fn, compiler_options=QUICK_COMPILE, **kw)


def pixel_envs() -> list[str]:
    """The registered envs observed through a camera (builds each MuJoCo robot env once, no rendering)."""
    import sim

    out = []
    for env_id in sim.registered():
        e = sim.entry(env_id)
        if "native" in e.backends and getattr(e.factory("native").unwrapped, "pixels", None) is not None:
            out.append(env_id)
    return out


def not_a_pixel_env(env_id: str) -> str:
    """The refusal naming ``env_id`` and listing the pixel envs."""
    return (f"{env_id} is not a pixel env (it observes a state vector, not a camera image); "
            f"pixel envs: {', '.join(pixel_envs()) or 'none registered'}")


def pixel_base(env_id: str, height: int | None = None, width: int | None = None, threads: int | None = None):
    """The base (unbatched) native env of the pixel env ``env_id``, its images ``height x width`` and its
    renderer on ``threads`` GL contexts (``None``: the env's own); ``ValueError`` for a non-pixel env."""
    import sim
    from sim.registry import robot_env

    e = sim.entry(env_id)  # an unknown id raises naming the closest and the known ones
    if "native" not in e.backends:
        raise ValueError(not_a_pixel_env(env_id))
    base = e.factory("native")
    px = getattr(base.unwrapped, "pixels", None)
    if px is None:
        raise ValueError(not_a_pixel_env(env_id))
    want = {"height": px.height if height is None else height, "width": px.width if width is None else width,
            "threads": px.threads if threads is None else threads}
    if all(getattr(px, k) == v for k, v in want.items()):
        return base
    task = base.unwrapped.task
    return robot_env(dataclasses.replace(task, pixels=dataclasses.replace(px, **want)), "native")


def physics_base(pixel_env):
    """The same task as the base pixel env ``pixel_env`` without its camera: the robot's physics, task
    and effects alone (e.g. ``cartpole-balance-pixels`` without its camera steps as ``cartpole-balance``)."""
    from sim.registry import robot_env

    task = pixel_env.unwrapped.task
    return robot_env(dataclasses.replace(task, pixels=None), "native")


def inner_params(params: dict) -> dict:
    """The MuJoCo env's own params (``dynamics``, ``task``, ``visual``) inside a wrapper's."""
    while "dynamics" not in params and "env" in params:
        params = params["env"]
    return params


def tile(images: np.ndarray, cols: int | None = None, pad: int = PAD) -> np.ndarray:
    """``images`` ``(N, H, W, 3)`` uint8 in a grid of ``cols`` columns (default: as square as possible),
    ``pad`` pixels of :data:`BACKGROUND` around and between them: ``(rows*(H+pad)+pad, cols*(W+pad)+pad, 3)``."""
    n, h, w = images.shape[:3]
    cols = max(1, min(n, cols or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    out = np.empty((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.uint8)
    out[:] = BACKGROUND
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = images[i]
    return out


def grid_size(n: int, height: int, width: int, cols: int | None = None, pad: int = PAD) -> tuple[int, int]:
    """``(width, height)`` in pixels of :func:`tile`'s image of ``n`` tiles (PIL's order)."""
    cols = max(1, min(n, cols or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    return cols * (width + pad) + pad, rows * (height + pad) + pad


def render_env(env_id: str, out: Path = Path("renders"), worlds: int = 16, seed: int = 0,
               splits: tuple[str, ...] = SPLITS, steps: int = 100, height: int | None = None,
               width: int | None = None, gif: bool = True, gif_worlds: int = 4, console=None) -> list[Path]:
    """Write the per-split grids and the rollout GIF of ``env_id`` (module docstring); return the paths."""
    from proteus.console import make_console
    from randomization.ranges import check_split

    console = console or make_console()
    for s in splits:
        check_split(s)
    base = pixel_base(env_id, height, width)
    try:
        return _render(base, env_id, Path(out), worlds, seed, splits, steps, gif, gif_worlds, console)
    finally:  # free the GL contexts now, while the interpreter (and its thread pools) still runs
        base.unwrapped._renderer.close()


def _render(base, env_id, out, worlds, seed, splits, steps, gif, gif_worlds, console) -> list[Path]:
    import jax
    from PIL import Image

    from sim.core import where_done
    from sim.wrappers import VmapEnv

    px = base.unwrapped.pixels
    out.mkdir(parents=True, exist_ok=True)
    env = VmapEnv(base, worlds)
    needed = tuple(dict.fromkeys(splits + (("train",) if gif else ())))  # train for the rollout, drawn once
    # every split's worlds from one program: compiling it costs about half of one program per split
    sample = quick_jit(lambda key: {split: env.sample_params(key, split) for split in needed})
    reset = quick_jit(env.reset)
    k_params, k_reset, k_roll = jax.random.split(jax.random.key(seed), 3)
    written: list[Path] = []
    states = {}
    with console.status(f"{env_id}: {worlds} worlds at {px.height}x{px.width} (compiling, then rendering)"):
        drawn = sample(k_params)
        for split in needed:
            s = reset(k_reset, drawn.pop(split))
            if split in splits:
                path = out / f"{env_id}-grid-{split}.png"
                Image.fromarray(tile(np.asarray(s.obs["image"]))).save(path)
                written.append(path)
            if gif and split == "train":
                states[split] = s
    if gif:
        n = min(gif_worlds, worlds)
        small = VmapEnv(base, n)
        first = quick_jit(lambda s: jax.tree.map(lambda x: x[:n], s))  # one program, not one per leaf
        s = first(states.pop("train"))  # the first n training worlds, just reset
        step = quick_jit(lambda s, k: small.step(s, small.action_space.sample(k, small.batch_shape)))
        reset_small = None
        frames = [_gif_frame(np.asarray(s.obs["image"]))]
        keys = jax.random.split(k_roll, 2 * steps).reshape(steps, 2)
        with console.status(f"{env_id}: {steps} steps in {n} training worlds (compiling, then stepping)"):
            for t in range(steps):
                s = step(s, keys[t, 0])
                frames.append(_gif_frame(np.asarray(s.obs["image"])))
                done = np.asarray(s.done)
                if done.any():  # a new episode in the same world where one ended
                    reset_small = reset_small or quick_jit(small.reset)
                    fresh = reset_small(keys[t, 1], s.params)
                    s = s.replace(obs=where_done(s.done, fresh.obs, s.obs),
                                  env_state=where_done(s.done, fresh.env_state, s.env_state))
        path = out / f"{env_id}-rollout.gif"
        ms = max(20, int(round(1000 * base.unwrapped.control_dt)))  # real time where GIF viewers allow it
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0, optimize=False)
        written.append(path)
    return written


def _gif_frame(images: np.ndarray):
    """One GIF frame: the worlds' images side by side, as a 256-colour palette image (a byte a pixel)."""
    from PIL import Image

    return Image.fromarray(tile(images, cols=len(images))).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
