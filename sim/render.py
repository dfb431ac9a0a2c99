"""Batched CPU rendering of per-world appearances (MuJoCo's OpenGL renderer, headless).

:class:`BatchRenderer` draws a batch of worlds, each in its own appearance (a
:class:`randomization.visual.ResolvedVisual` world, written into the render model just before that
world is drawn) and pose (``qpos``), from one camera, into ``uint8`` images. It is what a pixel env's
observation calls from inside the jitted step (:class:`sim.mujoco_env.MujocoEnv`, through
:func:`sim.host_call.host_call`), on both physics backends: rendering needs only the pose, so the
physics model and the render model share nothing but the ``qpos`` layout.

Speed on a CPU comes from what is drawn and how:

* a lean scene: no shadows, reflections or skybox, no multisampling (``offsamples = 0``) and coarse
  curved surfaces (``numslices``); each costs a software rasterizer more than the geometry itself
  (measured: the suite's default cart-pole scene draws about 10 frames/s at 64×64 here, the lean
  one several thousand);
* tiles: up to ``tiles`` worlds are drawn into viewports of one framebuffer and read back with a
  single ``mjr_readPixels``, so the per-frame costs of the GL pipeline (clear, finish, read-back)
  are paid once per tile sheet, not once per world;
* tiles do not change what is drawn, up to the rasterizer's sub-pixel snapping: a world drawn in
  another tile can differ by one level on a few edge pixels (measured: 1 pixel of 4096 at 64×64).
  The same worlds in the same batch positions give the same images, bit for bit;
* workers: ``threads`` GL contexts, each on its own thread with its own model copy, draw disjoint
  slices of the batch (MuJoCo's rasterizing calls release the GIL).

``MUJOCO_GL`` picks the OpenGL backend (``egl`` by default, set by the project's packages; ``osmesa``
and ``glfw`` also work where installed). A machine where the backend cannot make a context gets a
:class:`RenderError` naming the backend(s) tried and what to install, never a crash.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import copy
import dataclasses
import math
import os
import queue
import threading
import weakref

import mujoco
import numpy as np

from randomization.visual import HIDDEN_GROUP, ResolvedVisual

os.environ.setdefault("MUJOCO_GL", "egl")

MAX_RESOLUTION = 1024
"""The largest image side accepted (pixels)."""
BACKENDS = ("egl", "osmesa", "glfw")


class RenderError(RuntimeError):
    """No OpenGL backend could make a rendering context."""


@dataclasses.dataclass(frozen=True)
class SceneOptions:
    """What the renderer draws (each off by default: they cost a software rasterizer the most).

    Attributes:
        shadows, reflections, skybox: MuJoCo's scene flags.
        multisamples: anti-aliasing samples (``model.vis.quality.offsamples``).
        slices: facets of curved surfaces (``model.vis.quality.numslices``; MuJoCo's default is 28).
    """

    shadows: bool = False
    reflections: bool = False
    skybox: bool = False
    multisamples: int = 0
    slices: int = 8

    def __post_init__(self):
        if not 0 <= int(self.multisamples) <= 16:
            raise ValueError(f"SceneOptions.multisamples must be in [0, 16], got {self.multisamples}")
        if not 3 <= int(self.slices) <= 64:
            raise ValueError(f"SceneOptions.slices must be in [3, 64], got {self.slices}")


def check_resolution(height, width) -> tuple[int, int]:
    """``(height, width)`` as ints when each is an integer in ``[1, MAX_RESOLUTION]``; else a
    ``ValueError`` naming the bad one."""
    out = []
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= int(v) <= MAX_RESOLUTION:
            raise ValueError(f"image {name} must be an integer in [1, {MAX_RESOLUTION}] pixels, got {v!r}")
        out.append(int(v))
    return out[0], out[1]


def gl_context(width: int, height: int):
    """A current OpenGL context of the ``MUJOCO_GL`` backend, with a framebuffer of at least
    ``width x height``; :class:`RenderError` when it cannot be made."""
    backend = os.environ.get("MUJOCO_GL", "egl").lower().strip() or "egl"
    if backend not in BACKENDS:
        raise RenderError(f"MUJOCO_GL={backend!r} is not a rendering backend Proteus can use; set it to one of {', '.join(BACKENDS)}")
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        elif backend == "osmesa":
            from mujoco.osmesa import GLContext
        else:
            from mujoco.glfw import GLContext
        ctx = GLContext(width, height)
        ctx.make_current()
    except Exception as err:  # noqa: BLE001 - every backend failure becomes one clear message
        others = [b for b in BACKENDS if b != backend]
        raise RenderError(
            f"no OpenGL context for rendering: tried MUJOCO_GL={backend} and it failed ({type(err).__name__}: {err}). "
            f"Install the backend's libraries (egl: libegl1 libgl1-mesa-dri; osmesa: libosmesa6) or set MUJOCO_GL "
            f"to one of {', '.join(others)} before starting Proteus") from None
    return ctx


class _Thread:
    """One daemon thread running the calls submitted to it, in order: a GL context is current on one
    thread only. Daemon, unlike a ``ThreadPoolExecutor``'s workers (which Python stops before the
    ``atexit`` handlers run), so the exit handler can still free the contexts on their threads."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="proteus-render", daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                future.set_exception(err)

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        self._queue.put(None)


_LIVE: "weakref.WeakSet[BatchRenderer]" = weakref.WeakSet()
_AT_EXIT = []


def _close_all() -> None:
    for r in list(_LIVE):
        try:
            r.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


def _close_at_exit() -> None:
    """Free every renderer's contexts before the GL backend's own exit handler tears the display down
    (registered after the backend is imported, so it runs first)."""
    if not _AT_EXIT:
        atexit.register(_close_all)
        _AT_EXIT.append(True)


class _Worker:
    """One GL context and everything drawn with it, living on its own thread."""

    def __init__(self, renderer: "BatchRenderer"):
        r = renderer
        self.r = r
        self.pool = _Thread()
        self.pool.submit(self._init).result()

    def _init(self):
        r = self.r
        self.model = m = copy.copy(r.model)  # this context's own model: appearances are written into it
        m.vis.global_.offwidth = r.cols * r.width
        m.vis.global_.offheight = r.rows * r.height
        m.vis.quality.offsamples = r.scene.multisamples
        m.vis.quality.numslices = r.scene.slices
        m.vis.quality.numquads = 1
        self.ctx = gl_context(m.vis.global_.offwidth, m.vis.global_.offheight)
        _close_at_exit()
        self.con = mujoco.MjrContext(m, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.con)
        self.data = mujoco.MjData(m)
        self.scn = mujoco.MjvScene(m, maxgeom=max(1000, 2 * m.ngeom))
        self.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = r.scene.shadows
        self.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = r.scene.reflections
        self.scn.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = r.scene.skybox
        self.opt = mujoco.MjvOption()
        self.opt.geomgroup[HIDDEN_GROUP] = 0
        self.pert = mujoco.MjvPerturb()
        self.cam = mujoco.MjvCamera()
        self.cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self.cam.fixedcamid = r.camera_id
        self.sheet = np.empty((r.rows * r.height, r.cols * r.width, 3), np.uint8)

    def draw(self, qpos: np.ndarray, appearance: np.ndarray, markers: np.ndarray, out: np.ndarray) -> None:
        """Draw worlds ``qpos[i]`` in appearance ``appearance[i]`` into ``out[i]``."""
        r, m, d = self.r, self.model, self.data
        per_sheet = r.rows * r.cols
        for start in range(0, len(qpos), per_sheet):
            n = min(per_sheet, len(qpos) - start)
            for j in range(n):
                i = start + j
                if r.visual is not None and r.visual.size:
                    r.visual.write(m, r.visual.unflatten(appearance[i]), self.con)
                if len(r.marker_geoms):
                    m.geom_pos[r.marker_geoms] = markers[i].reshape(-1, 3)
                d.qpos[:] = qpos[i]
                mujoco.mj_kinematics(m, d)
                mujoco.mj_camlight(m, d)
                mujoco.mjv_updateScene(m, d, self.opt, self.pert, self.cam, mujoco.mjtCatBit.mjCAT_ALL, self.scn)
                row, col = divmod(j, r.cols)
                # viewports count rows from the bottom of the framebuffer
                rect = mujoco.MjrRect(col * r.width, (r.rows - 1 - row) * r.height, r.width, r.height)
                mujoco.mjr_render(rect, self.scn, self.con)
            mujoco.mjr_readPixels(self.sheet, None, mujoco.MjrRect(0, 0, r.cols * r.width, r.rows * r.height), self.con)
            sheet = self.sheet[::-1]  # GL's first row is the bottom one
            for j in range(n):
                row, col = divmod(j, r.cols)
                out[start + j] = sheet[row * r.height:(row + 1) * r.height, col * r.width:(col + 1) * r.width]

    def close(self):
        def free():
            self.con.free()
            self.ctx.free()
            del self.ctx
        try:
            self.pool.submit(free).result()
        finally:
            self.pool.shutdown()


class BatchRenderer:
    """Draws batches of worlds (module docstring).

    Args:
        model: the render model (``ResolvedVisual.model``, or the robot's own model).
        height, width: image size in pixels (each in ``[1, MAX_RESOLUTION]``).
        camera: the camera's name in ``model``.
        visual: the appearance terms (``None``: the model as it is).
        markers: geoms placed per world (a goal shown in the image): their names; :meth:`render`'s
            ``markers`` holds their positions.
        scene: what is drawn (:class:`SceneOptions`).
        threads: GL contexts drawing slices of a batch in parallel.
        tiles: worlds per framebuffer read (a square-ish grid).
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, camera: str, visual: ResolvedVisual | None = None,
                 markers: tuple[str, ...] = (), scene: SceneOptions = SceneOptions(), threads: int = 1, tiles: int = 16):
        self.height, self.width = check_resolution(height, width)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"render threads must be an integer >= 1, got {threads!r}")
        if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
            raise ValueError(f"render tiles must be an integer >= 1, got {tiles!r}")
        self.model, self.visual, self.scene = model, visual, scene
        cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) if isinstance(camera, str) else -1
        if cam < 0:
            valid = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"no camera named {camera!r}; the model's cameras: {', '.join(v for v in valid if v) or 'none'}")
        self.camera_id = cam
        ids = []
        for name in markers:
            g = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
            if g < 0:
                raise ValueError(f"marker: no geom named {name!r}")
            if model.geom_bodyid[g] != 0:
                raise ValueError(f"marker geom {name!r} must belong to the world body to be placed per world")
            ids.append(g)
        self.marker_geoms = np.asarray(ids, np.intp)
        # the tile sheet: as square as the framebuffer limit allows
        side = max(1, min(int(math.ceil(math.sqrt(tiles))), MAX_RESOLUTION * 4 // max(self.height, self.width)))
        self.cols = side
        self.rows = max(1, min(side, int(math.ceil(tiles / side))))
        self.threads = threads
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    @property
    def nq(self) -> int:
        return self.model.nq

    def _start(self) -> list[_Worker]:
        with self._lock:
            if not self._workers:
                self._workers = [_Worker(self) for _ in range(self.threads)]
                _LIVE.add(self)
            return self._workers

    def render(self, qpos: np.ndarray, appearance: np.ndarray | None = None, markers: np.ndarray | None = None) -> np.ndarray:
        """Images ``(B, height, width, 3)`` uint8 of worlds ``qpos`` ``(B, nq)`` in appearances
        ``appearance`` ``(B, visual.size)`` (see ``ResolvedVisual.flatten``) with marker positions
        ``markers`` ``(B, 3 * len(markers))``."""
        qpos = np.asarray(qpos, np.float64).reshape(-1, self.model.nq)
        b = qpos.shape[0]
        size = self.visual.size if self.visual is not None else 0
        appearance = np.zeros((b, size), np.float32) if appearance is None else np.asarray(appearance).reshape(b, size)
        markers = np.zeros((b, 3 * len(self.marker_geoms)), np.float32) if markers is None else np.asarray(markers).reshape(b, -1)
        out = np.empty((b, self.height, self.width, 3), np.uint8)
        workers = self._start()
        chunks = np.array_split(np.arange(b), len(workers))
        futures = [w.pool.submit(w.draw, qpos[c], appearance[c], markers[c], out[c[0]:c[-1] + 1] if len(c) else out[:0])
                   for w, c in zip(workers, chunks) if len(c)]
        for f in futures:
            f.result()
        return out

    def close(self) -> None:
        with self._lock:
            for w in self._workers:
                w.close()
            self._workers = []

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
