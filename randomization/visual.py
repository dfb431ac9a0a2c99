"""Visual domain randomization: what a camera sees of a world, drawn per world with the split machinery.

A :class:`VisualSpec` lists the appearance terms of a robot's pixel task. Like the dynamics terms
(:mod:`randomization.spec`), each draws its values per world from :class:`~randomization.ranges.SplitRange`s
(``train`` / ``interp`` / ``extrap``), so held-out appearances are held out the same way held-out
dynamics are. Resolved against the robot's model (:meth:`VisualSpec.resolve`), a spec

* builds the *render model*: the robot's model plus what the terms need (a bank of procedural
  textures, extra lights, a backdrop, distractor objects), which only the renderer uses: the physics
  model is untouched and the render model has the same ``qpos`` layout;
* samples a world's appearance (pure JAX, vmappable): :meth:`ResolvedVisual.sample`;
* writes one world's appearance into the render model (and the GL context's material table) before
  that world is drawn: :meth:`ResolvedVisual.write`;
* applies the sensor effects (pixel noise, colour jitter, blur) to the rendered image, in JAX:
  :func:`apply_pixel_effects`.

Terms (each optional):

* :class:`Colors`: materials recoloured, hue / saturation / value drawn per material;
* :class:`Textures`: materials given a procedural texture (``checker``, ``gradient``, ``noise``) from a
  bank generated when the render model is built (``bank`` textures per kind, seeded), tinted by the
  material's colour; the kind is a split-aware discrete draw, so ``extrap`` can hold a kind left out
  of training;
* :class:`Lights`: extra lights switched on per world (a count), all lights moved and re-aimed, and
  their diffuse strength scaled;
* :class:`CameraPose`: the camera moved, rotated (degrees about its own axes) and its field of view
  scaled;
* :class:`Backdrop`: the sky: a large box behind the scene, coloured per world;
* :class:`Distractors`: up to ``max_count`` non-colliding objects at random places, sizes and colours;
* :class:`PixelEffects`: Gaussian pixel noise, a per-channel gain (colour jitter), a brightness
  offset and a Gaussian blur.

A world's appearance is a dict of float32 arrays (names below), ``{}`` when the spec has no terms.
:meth:`ResolvedVisual.nominal` is the unrandomized appearance (the robot's own colours, lights and
camera; no backdrop, no distractors, no pixel effects).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from randomization.ranges import SplitRange, check_split

TEXTURE_KINDS = ("checker", "gradient", "noise")
TEX_RGB = 1  # mjtTextureRole.mjTEXROLE_RGB: the material's colour texture slot
BLUR_RADIUS = 2  # the blur kernel is 2 * BLUR_RADIUS + 1 pixels wide
HIDDEN_GROUP = 5  # geom group the renderer never draws (distractors that are switched off)


def _range(value, what: str) -> SplitRange:
    if not isinstance(value, SplitRange):
        raise ValueError(f"{what} must be a SplitRange, got {value!r}")
    return value


def _names(value, what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what} must name at least one element, got {value!r}")
    return names


@dataclasses.dataclass(frozen=True)
class Colors:
    """Recolour ``materials``: hue, saturation and value drawn per material (hue in turns, [0, 1))."""

    materials: tuple[str, ...]
    hue: SplitRange = SplitRange("hue", (0.0, 0.6), (0.25, 0.3), ((0.6, 1.0),))
    saturation: SplitRange = SplitRange("saturation", (0.2, 0.9))
    value: SplitRange = SplitRange("value", (0.3, 1.0))

    def __post_init__(self):
        object.__setattr__(self, "materials", _names(self.materials, "Colors.materials"))
        for f in ("hue", "saturation", "value"):
            _range(getattr(self, f), f"Colors.{f}")


@dataclasses.dataclass(frozen=True)
class Textures:
    """Give ``materials`` a procedural texture per world: the kind (an index into
    :data:`TEXTURE_KINDS`, a ``discrete`` range) and one of ``bank`` textures of that kind."""

    materials: tuple[str, ...]
    kind: SplitRange = SplitRange("texture kind", (0.0, 2.0), extrap=((2.0, 3.0),), dist="discrete")
    bank: int = 8
    size: int = 32

    def __post_init__(self):
        object.__setattr__(self, "materials", _names(self.materials, "Textures.materials"))
        _range(self.kind, "Textures.kind")
        lo = min(a for a, _ in self.kind.declared_intervals())
        hi = max(b for _, b in self.kind.declared_intervals())
        if self.kind.dist != "discrete" or lo < 0 or hi > len(TEXTURE_KINDS):
            raise ValueError(f"Textures.kind must be a discrete range within [0, {len(TEXTURE_KINDS)}] "
                             f"(indices into {TEXTURE_KINDS}), got {self.kind}")
        if not 1 <= int(self.bank) <= 64:
            raise ValueError(f"Textures.bank must be in [1, 64] textures per kind, got {self.bank}")
        if not 4 <= int(self.size) <= 256:
            raise ValueError(f"Textures.size must be in [4, 256] texels, got {self.size}")


@dataclasses.dataclass(frozen=True)
class Lights:
    """Up to ``extra`` more lights (``count`` of them on, a ``discrete`` range), every light moved by an
    offset (metres, per axis) and re-aimed (direction offset, per axis, then normalized), and the
    diffuse strength of all scaled."""

    extra: int = 2
    count: SplitRange = SplitRange("extra lights", (0.0, 2.0), extrap=((2.0, 3.0),), dist="discrete")
    offset: SplitRange = SplitRange("light offset", (-1.0, 1.0), extrap=((-2.0, -1.0), (1.0, 2.0)), unit="m")
    direction: SplitRange = SplitRange("light aim offset", (-0.3, 0.3), extrap=((-0.6, -0.3), (0.3, 0.6)))
    diffuse: SplitRange = SplitRange("light strength ×", (0.6, 1.2), extrap=((0.3, 0.6), (1.2, 1.5)))

    def __post_init__(self):
        if not 0 <= int(self.extra) <= 6:
            raise ValueError(f"Lights.extra must be in [0, 6], got {self.extra}")
        for f in ("count", "offset", "direction", "diffuse"):
            _range(getattr(self, f), f"Lights.{f}")
        hi = max(b for _, b in self.count.declared_intervals())
        if hi > self.extra + 1:
            raise ValueError(f"Lights.count reaches {int(math.ceil(hi)) - 1} lights but extra={self.extra}")


@dataclasses.dataclass(frozen=True)
class CameraPose:
    """Move the camera (``offset``, metres per axis of the world frame), rotate it (``rotation``,
    degrees about each of its own axes) and scale its vertical field of view (``fovy``)."""

    offset: SplitRange = SplitRange("camera offset", (-0.1, 0.1), extrap=((-0.2, -0.1), (0.1, 0.2)), unit="m")
    rotation: SplitRange = SplitRange("camera rotation", (-3.0, 3.0), extrap=((-6.0, -3.0), (3.0, 6.0)), unit="deg")
    fovy: SplitRange = SplitRange("camera fovy ×", (0.9, 1.1), extrap=((0.8, 0.9), (1.1, 1.2)))

    def __post_init__(self):
        for f in ("offset", "rotation", "fovy"):
            _range(getattr(self, f), f"CameraPose.{f}")
        if min(a for a, _ in self.fovy.declared_intervals()) <= 0:
            raise ValueError(f"CameraPose.fovy scales the field of view and must stay > 0, got {self.fovy}")


@dataclasses.dataclass(frozen=True)
class Backdrop:
    """The sky: a box of half-sizes ``size`` centred at ``pos`` (behind the scene, facing the camera),
    coloured per world (hue, saturation, value)."""

    pos: tuple[float, float, float]
    size: tuple[float, float, float]
    hue: SplitRange = SplitRange("sky hue", (0.0, 0.6), (0.25, 0.3), ((0.6, 1.0),))
    saturation: SplitRange = SplitRange("sky saturation", (0.0, 0.8))
    value: SplitRange = SplitRange("sky value", (0.2, 1.0))


@dataclasses.dataclass(frozen=True)
class Distractors:
    """Up to ``max_count`` non-colliding spheres and boxes (``count`` of them shown, a ``discrete``
    range) placed uniformly in the box ``low``..``high`` (world frame), sized and coloured per world."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    max_count: int = 4
    count: SplitRange = SplitRange("distractors", (0.0, 3.0), extrap=((3.0, 5.0),), dist="discrete")
    size: SplitRange = SplitRange("distractor size", (0.05, 0.15), unit="m")
    hue: SplitRange = SplitRange("distractor hue", (0.0, 0.6), extrap=((0.6, 1.0),))

    def __post_init__(self):
        if not 1 <= int(self.max_count) <= 16:
            raise ValueError(f"Distractors.max_count must be in [1, 16], got {self.max_count}")
        hi = max(b for _, b in self.count.declared_intervals())
        if hi > self.max_count + 1:
            raise ValueError(f"Distractors.count reaches {int(math.ceil(hi)) - 1} objects but max_count={self.max_count}")
        if any(lo > hi for lo, hi in zip(self.low, self.high)) or len(self.low) != 3 or len(self.high) != 3:
            raise ValueError(f"Distractors: low {self.low} and high {self.high} must be xyz with low <= high")


@dataclasses.dataclass(frozen=True)
class PixelEffects:
    """Sensor effects on the rendered image (pixel values in [0, 1] here): Gaussian ``noise`` (std),
    a per-channel ``gain`` (colour jitter), a ``bias`` (brightness) and a Gaussian ``blur`` (sigma,
    pixels; at most :data:`BLUR_RADIUS`)."""

    noise: SplitRange = SplitRange("pixel noise std", (0.0, 0.03), extrap=((0.03, 0.06),))
    gain: SplitRange = SplitRange("colour gain", (0.8, 1.2), extrap=((0.6, 0.8), (1.2, 1.4)))
    bias: SplitRange = SplitRange("brightness", (-0.05, 0.05), extrap=((-0.1, -0.05), (0.05, 0.1)))
    blur: SplitRange = SplitRange("blur sigma", (0.0, 0.8), extrap=((0.8, 1.5),), unit="px")

    def __post_init__(self):
        if min(a for a, _ in self.noise.declared_intervals()) < 0:
            raise ValueError(f"PixelEffects.noise is a standard deviation and must be >= 0, got {self.noise}")
        if min(a for a, _ in self.blur.declared_intervals()) < 0 or max(b for _, b in self.blur.declared_intervals()) > BLUR_RADIUS:
            raise ValueError(f"PixelEffects.blur sigma must lie in [0, {BLUR_RADIUS}] pixels, got {self.blur}")


@dataclasses.dataclass(frozen=True)
class VisualSpec:
    """A robot's appearance randomization (module docstring); every term optional."""

    colors: Colors | None = None
    textures: Textures | None = None
    lights: Lights | None = None
    camera: CameraPose | None = None
    backdrop: Backdrop | None = None
    distractors: Distractors | None = None
    pixels: PixelEffects | None = None
    seed: int = 0  # the texture bank's seed

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self) if f.name != "seed")

    def ranges(self) -> dict[str, SplitRange]:
        """Every drawn quantity's range, by name (listings; the split description)."""
        out = {}
        if self.colors:
            out.update({"color.hue": self.colors.hue, "color.saturation": self.colors.saturation, "color.value": self.colors.value})
        if self.textures:
            out["texture.kind"] = self.textures.kind
        if self.lights:
            out.update({"light.count": self.lights.count, "light.offset": self.lights.offset,
                        "light.direction": self.lights.direction, "light.diffuse": self.lights.diffuse})
        if self.camera:
            out.update({"camera.offset": self.camera.offset, "camera.rotation": self.camera.rotation, "camera.fovy": self.camera.fovy})
        if self.backdrop:
            out.update({"sky.hue": self.backdrop.hue, "sky.saturation": self.backdrop.saturation, "sky.value": self.backdrop.value})
        if self.distractors:
            out.update({"distractor.count": self.distractors.count, "distractor.size": self.distractors.size,
                        "distractor.hue": self.distractors.hue})
        if self.pixels:
            out.update({"pixel.noise": self.pixels.noise, "pixel.gain": self.pixels.gain, "pixel.bias": self.pixels.bias,
                        "pixel.blur": self.pixels.blur})
        return out

    def resolve(self, spec: mujoco.MjSpec, camera: str) -> "ResolvedVisual":
        """Bind to a robot: ``spec`` (its model as an editable ``MjSpec``, consumed) and the camera
        the images come from."""
        return ResolvedVisual(self, spec, camera)


def hsv_to_rgb(h, s, v):
    """HSV (hue in turns) to RGB in [0, 1], elementwise over arrays of any shape (jnp)."""
    h = jnp.mod(h, 1.0) * 6.0
    c = v * s
    x = c * (1 - jnp.abs(jnp.mod(h, 2.0) - 1))
    m = v - c
    z = jnp.zeros_like(c)
    sector = jnp.floor(h).astype(jnp.int32)
    rgb = jnp.select(
        [sector[..., None] == i for i in range(6)],
        [jnp.stack(t, -1) for t in ((c, x, z), (x, c, z), (z, c, x), (z, x, c), (x, z, c), (c, z, x))],
        jnp.stack((c, x, z), -1),
    )
    return rgb + m[..., None]


def _texture_bank(kind: str, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` procedural ``size x size`` RGB textures of one kind (uint8), from ``rng``."""
    out = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(n):
        c1, c2 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
        if kind == "checker":
            cells = int(rng.integers(2, 9))
            mask = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2)[..., None]
        elif kind == "gradient":
            angle = rng.uniform(0, 2 * np.pi)
            t = (np.cos(angle) * xx + np.sin(angle) * yy)
            mask = ((t - t.min()) / (np.ptp(t) + 1e-9))[..., None]
        else:  # noise: value noise at a random scale, bilinearly upsampled
            cells = int(rng.integers(3, 9))
            grid = rng.uniform(0, 1, (cells + 1, cells + 1))
            gx, gy = xx * cells, yy * cells
            i, j = np.floor(gx).astype(int), np.floor(gy).astype(int)
            fx, fy = gx - i, gy - j
            mask = (grid[j, i] * (1 - fx) * (1 - fy) + grid[j, i + 1] * fx * (1 - fy)
                    + grid[j + 1, i] * (1 - fx) * fy + grid[j + 1, i + 1] * fx * fy)[..., None]
        out.append(np.clip((c1 * (1 - mask) + c2 * mask) * 255, 0, 255).astype(np.uint8))
    return out


def _element(model: mujoco.MjModel, kind: mujoco.mjtObj, count: int, name: str, what: str) -> int:
    i = mujoco.mj_name2id(model, kind, name)
    if i < 0:
        valid = [mujoco.mj_id2name(model, kind, j) for j in range(count)]
        raise ValueError(f"{what}: no {kind.name[6:].lower()} named {name!r}; valid names: {', '.join(v for v in valid if v) or 'none'}")
    return i


def _quat_from_euler_deg(angles: np.ndarray) -> np.ndarray:
    """The quaternion of intrinsic x-y-z rotations by ``angles`` degrees (``qx * qy * qz``)."""
    hx, hy, hz = (math.radians(float(a)) / 2 for a in angles)
    cx, sx, cy, sy, cz, sz = math.cos(hx), math.sin(hx), math.cos(hy), math.sin(hy), math.cos(hz), math.sin(hz)
    return np.array([cx * cy * cz - sx * sy * sz, sx * cy * cz + cx * sy * sz,
                     cx * sy * cz - sx * cy * sz, cx * cy * sz + sx * sy * cz])


class ResolvedVisual:
    """A :class:`VisualSpec` bound to a robot (see :meth:`VisualSpec.resolve`).

    Attributes:
        model: the render model (the robot's model plus the terms' textures, lights and objects).
        camera_id: the camera images come from.
        layout: ``(name, shape)`` of each appearance array, in the order :meth:`flatten` packs them.
    """

    def __init__(self, visual: VisualSpec, spec: mujoco.MjSpec, camera: str):
        self.spec = visual
        rng = np.random.default_rng(visual.seed)
        base = spec.compile()  # names checked against the robot's own model first
        self.nlight0 = base.nlight
        if visual.textures:
            t = visual.textures
            for name in t.materials:
                _element(base, mujoco.mjtObj.mjOBJ_MATERIAL, base.nmat, name, "Textures.materials")
            for kind in TEXTURE_KINDS:
                for i, img in enumerate(_texture_bank(kind, t.bank, t.size, rng)):
                    tex = spec.add_texture(name=f"proteus_{kind}_{i}", type=mujoco.mjtTexture.mjTEXTURE_2D,
                                           width=t.size, height=t.size, nchannel=3)
                    tex.data = img.tobytes()
        if visual.colors:
            for name in visual.colors.materials:
                _element(base, mujoco.mjtObj.mjOBJ_MATERIAL, base.nmat, name, "Colors.materials")
        if visual.lights:
            for i in range(visual.lights.extra):
                angle = 2 * math.pi * i / max(visual.lights.extra, 1)
                pos = [3 * math.cos(angle), 3 * math.sin(angle), 4.0]
                spec.worldbody.add_light(name=f"proteus_light_{i}", pos=pos, dir=[-p for p in pos],
                                         diffuse=[0.5, 0.5, 0.5], castshadow=False)
        if visual.backdrop:
            b = visual.backdrop
            spec.worldbody.add_geom(name="proteus_sky", type=mujoco.mjtGeom.mjGEOM_BOX, pos=list(b.pos), size=list(b.size),
                                    contype=0, conaffinity=0, rgba=[0, 0, 0, 0], mass=0)
        if visual.distractors:
            for i in range(visual.distractors.max_count):
                kind = mujoco.mjtGeom.mjGEOM_SPHERE if i % 2 == 0 else mujoco.mjtGeom.mjGEOM_BOX
                spec.worldbody.add_geom(name=f"proteus_distractor_{i}", type=kind, size=[0.1, 0.1, 0.1],
                                        contype=0, conaffinity=0, rgba=[1, 1, 1, 1], group=HIDDEN_GROUP, mass=0)
        self.model = spec.compile()
        m = self.model
        if m.nq != base.nq:
            raise RuntimeError(f"the render model has nq={m.nq}, the robot's {base.nq}")
        self.camera_id = _element(m, mujoco.mjtObj.mjOBJ_CAMERA, m.ncam, camera, "camera")
        self.cam_pos0 = m.cam_pos[self.camera_id].copy()
        self.cam_quat0 = m.cam_quat[self.camera_id].copy()
        self.cam_fovy0 = float(m.cam_fovy[self.camera_id])
        self.light_pos0, self.light_dir0 = m.light_pos.copy(), m.light_dir.copy()
        self.light_diffuse0 = m.light_diffuse.copy()
        self.mat_rgba0, self.mat_texid0 = m.mat_rgba.copy(), m.mat_texid.copy()
        ids = lambda names: np.asarray([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, n) for n in names], np.intp)
        self.color_mats = ids(visual.colors.materials) if visual.colors else np.zeros(0, np.intp)
        self.texture_mats = ids(visual.textures.materials) if visual.textures else np.zeros(0, np.intp)
        if visual.textures:
            self.bank = np.asarray([[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_TEXTURE, f"proteus_{k}_{i}")
                                     for i in range(visual.textures.bank)] for k in TEXTURE_KINDS], np.int32)
        self.sky = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "proteus_sky")
        self.distractors = np.asarray([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"proteus_distractor_{i}")
                                       for i in range(visual.distractors.max_count)] if visual.distractors else [], np.intp)
        self.geom_group0 = m.geom_group.copy()
        nominal = self.nominal()
        self.layout = tuple((n, tuple(v.shape)) for n, v in nominal.items())
        self.size = int(sum(int(np.prod(s)) for _, s in self.layout))
        bounds = np.cumsum([0] + [int(np.prod(s)) for _, s in self.layout])
        self._slices = tuple((n, int(a), int(b), s) for (n, s), a, b in zip(self.layout, bounds[:-1], bounds[1:]))
        self._light_ids = np.arange(m.nlight)
        self._distractor_ids = np.arange(len(self.distractors))

    # -- drawing -------------------------------------------------------------------------------
    def nominal(self) -> dict[str, jax.Array]:
        """The unrandomized appearance (module docstring)."""
        v, out = self.spec, {}
        f = lambda x: jnp.asarray(x, jnp.float32)
        if v.colors:
            out["color.rgb"] = f(self.mat_rgba0[self.color_mats, :3])
        if v.textures:
            out["texture.kind"] = f(np.full(len(self.texture_mats), -1.0))  # -1: the material's own texture
            out["texture.index"] = f(np.zeros(len(self.texture_mats)))
        if v.lights:
            n = self.model.nlight
            out.update({"light.count": f(0.0), "light.offset": f(np.zeros((n, 3))), "light.direction": f(np.zeros((n, 3))),
                        "light.diffuse": f(1.0)})
        if v.camera:
            out.update({"camera.offset": f(np.zeros(3)), "camera.rotation": f(np.zeros(3)), "camera.fovy": f(1.0)})
        if v.backdrop:
            out["sky.rgba"] = f(np.zeros(4))
        if v.distractors:
            k = v.distractors.max_count
            out.update({"distractor.count": f(0.0), "distractor.pos": f(np.zeros((k, 3))), "distractor.size": f(np.full(k, 0.1)),
                        "distractor.rgb": f(np.ones((k, 3)))})
        if v.pixels:
            out.update({"pixel.noise": f(0.0), "pixel.gain": f(np.ones(3)), "pixel.bias": f(0.0), "pixel.blur": f(0.0)})
        return out

    def sample(self, key: jax.Array, split: str = "train") -> dict[str, jax.Array]:
        """One world's appearance from ``split`` (pure JAX, vmappable)."""
        check_split(split)
        v, out = self.spec, {}
        keys = iter(jax.random.split(key, 40))
        draw = lambda r, shape=(): r.sample(next(keys), split, shape)
        if v.colors:
            n = len(self.color_mats)
            out["color.rgb"] = hsv_to_rgb(draw(v.colors.hue, (n,)), draw(v.colors.saturation, (n,)), draw(v.colors.value, (n,)))
        if v.textures:
            n = len(self.texture_mats)
            out["texture.kind"] = draw(v.textures.kind, (n,))
            out["texture.index"] = jnp.floor(jax.random.uniform(next(keys), (n,), jnp.float32, 0.0, v.textures.bank))
        if v.lights:
            n = self.model.nlight
            out.update({"light.count": draw(v.lights.count), "light.offset": draw(v.lights.offset, (n, 3)),
                        "light.direction": draw(v.lights.direction, (n, 3)), "light.diffuse": draw(v.lights.diffuse)})
        if v.camera:
            out.update({"camera.offset": draw(v.camera.offset, (3,)), "camera.rotation": draw(v.camera.rotation, (3,)),
                        "camera.fovy": draw(v.camera.fovy)})
        if v.backdrop:
            b = v.backdrop
            rgb = hsv_to_rgb(draw(b.hue), draw(b.saturation), draw(b.value))
            out["sky.rgba"] = jnp.concatenate([rgb, jnp.ones((1,), jnp.float32)])
        if v.distractors:
            d, k = v.distractors, v.distractors.max_count
            lo, hi = jnp.asarray(d.low, jnp.float32), jnp.asarray(d.high, jnp.float32)
            out.update({
                "distractor.count": draw(d.count),
                "distractor.pos": lo + (hi - lo) * jax.random.uniform(next(keys), (k, 3)),
                "distractor.size": draw(d.size, (k,)),
                "distractor.rgb": hsv_to_rgb(draw(d.hue, (k,)), jax.random.uniform(next(keys), (k,), minval=0.4, maxval=1.0),
                                             jax.random.uniform(next(keys), (k,), minval=0.4, maxval=1.0)),
            })
        if v.pixels:
            p = v.pixels
            out.update({"pixel.noise": draw(p.noise), "pixel.gain": draw(p.gain, (3,)), "pixel.bias": draw(p.bias),
                        "pixel.blur": draw(p.blur)})
        return {n: x.astype(jnp.float32) for n, x in out.items()}

    def flatten(self, values: dict[str, jax.Array]) -> jax.Array:
        """One world's appearance as one float32 vector (any leading batch shape), in :attr:`layout` order."""
        if not self.layout:
            return jnp.zeros((0,), jnp.float32)
        parts = []
        for name, shape in self.layout:
            x = jnp.asarray(values[name], jnp.float32)
            lead = x.shape[: x.ndim - len(shape)]
            parts.append(x.reshape(lead + (-1,)))
        return jnp.concatenate(parts, -1)

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The inverse of :meth:`flatten` for one world (NumPy, on the host)."""
        row = np.asarray(flat, np.float64)
        return {name: row[a:b].reshape(shape) for name, a, b, shape in self._slices}

    # -- writing into the render model ---------------------------------------------------------
    def write(self, model: mujoco.MjModel, values: dict[str, np.ndarray], context=None) -> None:
        """Write one world's appearance (host values, :meth:`unflatten`) into ``model`` (a copy of
        :attr:`model`) and, for textures, into the GL ``context``'s material table (``MjrContext``
        copies the materials' textures when it is made)."""
        v = self.spec
        if v.colors:
            model.mat_rgba[self.color_mats, :3] = values["color.rgb"]
        if v.textures:
            texid = self.mat_texid0[:, TEX_RGB].copy()
            for slot, mat in enumerate(self.texture_mats):
                kind = int(values["texture.kind"][slot])
                if kind >= 0:
                    texid[mat] = self.bank[kind, int(values["texture.index"][slot]) % self.bank.shape[1]]
            model.mat_texid[:, TEX_RGB] = texid
            if context is not None:  # the GL context's copy of the table, (nmat x roles) flattened
                roles = model.mat_texid.shape[1]
                for mat in self.texture_mats:
                    context.mat_texid[mat * roles + TEX_RGB] = texid[mat]
        if v.lights:
            active = self._light_ids < self.nlight0 + int(values["light.count"])
            model.light_active[:] = active
            model.light_pos[:] = self.light_pos0 + values["light.offset"]
            d = self.light_dir0 + values["light.direction"]
            model.light_dir[:] = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
            model.light_diffuse[:] = np.clip(self.light_diffuse0 * values["light.diffuse"], 0.0, 1.0)
        if v.camera:
            c = self.camera_id
            model.cam_pos[c] = self.cam_pos0 + values["camera.offset"]
            q = np.empty(4)
            mujoco.mju_mulQuat(q, self.cam_quat0, _quat_from_euler_deg(values["camera.rotation"]))
            model.cam_quat[c] = q
            model.cam_fovy[c] = self.cam_fovy0 * float(values["camera.fovy"])
        if v.backdrop:
            model.geom_rgba[self.sky] = values["sky.rgba"]
        if v.distractors:
            shown = self._distractor_ids < int(values["distractor.count"])
            model.geom_group[self.distractors] = np.where(shown, 0, HIDDEN_GROUP)
            model.geom_pos[self.distractors] = values["distractor.pos"]
            model.geom_size[self.distractors] = values["distractor.size"][:, None]
            model.geom_rgba[self.distractors, :3] = values["distractor.rgb"]


def apply_pixel_effects(image: jax.Array, values: dict[str, jax.Array], key: jax.Array) -> jax.Array:
    """The sensor effects of :class:`PixelEffects` on one uint8 ``H x W x C`` image (jnp); ``values``
    holds the world's ``pixel.*`` entries. Blur, then gain and brightness, then noise, then rounding
    back to uint8."""
    x = image.astype(jnp.float32) / 255.0
    sigma = values["pixel.blur"]
    r = jnp.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=jnp.float32)
    w = jnp.where(sigma > 1e-3, jnp.exp(-0.5 * (r / jnp.maximum(sigma, 1e-3)) ** 2), (r == 0).astype(jnp.float32))
    w = w / w.sum()
    pad = jnp.pad(x, ((BLUR_RADIUS, BLUR_RADIUS), (0, 0), (0, 0)), mode="edge")
    x = sum(w[i] * pad[i: i + x.shape[0]] for i in range(2 * BLUR_RADIUS + 1))
    pad = jnp.pad(x, ((0, 0), (BLUR_RADIUS, BLUR_RADIUS), (0, 0)), mode="edge")
    x = sum(w[i] * pad[:, i: i + x.shape[1]] for i in range(2 * BLUR_RADIUS + 1))
    x = x * values["pixel.gain"] + values["pixel.bias"]
    x = x + values["pixel.noise"] * jax.random.normal(key, x.shape, jnp.float32)
    return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)
