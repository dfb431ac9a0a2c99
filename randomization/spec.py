"""Declarative randomization of MuJoCo model fields.

A :class:`RandomizationSpec` is a list of :class:`Term` objects. Each names a MuJoCo model field and
the elements it touches by name (``body_mass["pole"]``), how values are drawn per split
(:class:`~randomization.ranges.SplitRange`) and how they combine with the nominal model value
(``scale``, ``add`` or ``set``). Resolved against a model (:meth:`RandomizationSpec.resolve`), the same
spec

* samples a world's values from a key and a split (pure JAX, vmappable, resampled per trial);
* applies them to an ``mjx.Model`` (batched model fields, jittable);
* applies them to a native ``MjModel`` copy (NumPy writes followed by ``mj_setConst``, so that
  everything MuJoCo derives from the changed fields is recomputed).

Every name is checked at construction; errors list the valid names. Ranges that could make a mass,
inertia, friction, damping, armature or friction loss negative are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from randomization.effects import Effects
from randomization.ranges import SplitRange, check_split

Mode = Literal["scale", "add", "set"]
MODES = ("scale", "add", "set")

# field -> (element kind, column or None for all columns, must stay >= 0)
FIELDS: dict[str, tuple[str, bool]] = {
    "body_mass": ("body", True),
    "body_inertia": ("body", True),
    "body_ipos": ("body", False),
    "geom_friction": ("geom", True),
    "dof_damping": ("joint", True),
    "dof_armature": ("joint", True),
    "dof_frictionloss": ("joint", True),
    "jnt_range": ("joint", False),
    "actuator_gainprm": ("actuator", False),
    "actuator_biasprm": ("actuator", False),
    "actuator_gear": ("actuator", False),
    "opt.gravity": ("option", False),
}
_OBJ = {
    "body": mujoco.mjtObj.mjOBJ_BODY,
    "geom": mujoco.mjtObj.mjOBJ_GEOM,
    "joint": mujoco.mjtObj.mjOBJ_JOINT,
    "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR,
}


@dataclasses.dataclass(frozen=True)
class Term:
    """One randomized quantity.

    Attributes:
        field: a MuJoCo model field from ``FIELDS`` (``"opt.gravity"`` for gravity).
        elements: element names (bodies, geoms, joints or actuators, after the field's prefix);
            empty for ``opt.gravity``.
        range: values per split (factors for ``scale``, offsets for ``add``, values for ``set``).
        mode: how a drawn value ``v`` combines with the nominal value ``x0``: ``x0 * v``, ``x0 + v`` or ``v``.
        columns: which columns of a multi-column field (``geom_friction`` column 0 is sliding friction;
            ``opt.gravity`` column 2 is z); ``None`` means every column.
        per_element: draw one value per element (``True``) or one shared by all listed elements.
    """

    field: str
    elements: tuple[str, ...]
    range: SplitRange
    mode: Mode = "scale"
    columns: tuple[int, ...] | None = None
    per_element: bool = False

    def __post_init__(self):
        if self.field not in FIELDS:
            raise ValueError(f"unknown randomized field {self.field!r}; valid fields: {', '.join(FIELDS)}")
        if self.mode not in MODES:
            raise ValueError(f"{self.name}: unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        object.__setattr__(self, "elements", tuple(self.elements))
        if self.field != "opt.gravity" and not self.elements:
            raise ValueError(f"{self.field}: name at least one {FIELDS[self.field][0]}")
        if FIELDS[self.field][1]:
            low = min(lo for lo, _ in self.range.declared_intervals())
            if (self.mode in ("scale", "set") and low < 0) or (self.mode == "scale" and low == 0 and self.field in ("body_mass", "body_inertia")):
                raise ValueError(f"{self.name}: range low {low} would make {self.field} negative or zero")

    @property
    def name(self) -> str:
        el = ",".join(self.elements)
        col = "" if self.columns is None else "[" + ",".join(map(str, self.columns)) + "]"
        return f"{self.field}[{el}]{col}" if el else f"{self.field}{col}"

    @property
    def size(self) -> int:
        return len(self.elements) if self.per_element and self.elements else 1


@dataclasses.dataclass(frozen=True)
class RandomizationSpec:
    """A robot's randomized quantities (see the module docstring): dynamics terms and sensor/actuator
    effects (:mod:`randomization.effects`)."""

    terms: tuple[Term, ...] = ()
    effects: Effects = Effects()

    def __post_init__(self):
        object.__setattr__(self, "terms", tuple(self.terms))
        names = [t.name for t in self.terms]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"randomization terms named twice: {sorted(dup)}")

    def resolve(self, model: mujoco.MjModel) -> "ResolvedSpec":
        return ResolvedSpec(self, model)

    def ranges(self) -> dict[str, SplitRange]:
        """Dynamics terms only (the effects wrapper lists its own)."""
        return {t.name: t.range for t in self.terms}


@dataclasses.dataclass(frozen=True)
class _Index:
    rows: np.ndarray  # [n] element rows of the field
    cols: np.ndarray  # [c] columns (or [1] = 0 for 1-D fields)
    nominal: np.ndarray  # [n, c] nominal values


class ResolvedSpec:
    """A spec bound to one model: element names resolved to rows, nominal values recorded."""

    def __init__(self, spec: RandomizationSpec, model: mujoco.MjModel):
        self.spec = spec
        self.index: dict[str, _Index] = {}
        for term in spec.terms:
            kind = FIELDS[term.field][0]
            if kind == "option":
                rows = np.zeros(1, np.int64)
                full = np.asarray(model.opt.gravity, np.float64)[None, :]
            else:
                rows = np.array([self._element_id(model, kind, term, e) for e in term.elements], np.int64)
                if kind == "joint" and term.field.startswith("dof_"):
                    rows = np.asarray(model.jnt_dofadr)[rows]
                full = np.asarray(getattr(model, term.field), np.float64)
                full = full[:, None] if full.ndim == 1 else full
                full = full[rows]
            ncol = full.shape[1]
            cols = np.arange(ncol) if term.columns is None else np.asarray(term.columns, np.int64)
            if cols.size and (cols.min() < 0 or cols.max() >= ncol):
                raise ValueError(f"{term.name}: columns {[int(c) for c in cols]} out of range for {term.field} with {ncol} columns")
            self.index[term.name] = _Index(rows=rows, cols=cols, nominal=full[:, cols])

    @staticmethod
    def _element_id(model, kind, term, name) -> int:
        i = mujoco.mj_name2id(model, _OBJ[kind], name)
        if i < 0:
            count = {"body": model.nbody, "geom": model.ngeom, "joint": model.njnt, "actuator": model.nu}[kind]
            valid = [mujoco.mj_id2name(model, _OBJ[kind], j) for j in range(count)]
            valid = [v for v in valid if v]
            raise ValueError(f"{term.field}: no {kind} named {name!r}; valid {kind} names: {', '.join(valid)}")
        return i

    @property
    def terms(self) -> tuple[Term, ...]:
        return self.spec.terms

    def bounds(self) -> dict[str, dict[str, jax.Array]]:
        """The ranges as data: term name -> :meth:`SplitRange.bounds` (what :meth:`sample` reads)."""
        return {term.name: term.range.bounds() for term in self.terms}

    def sample(self, key: jax.Array, split: str = "train", bounds: dict | None = None) -> dict[str, jax.Array]:
        """Draw one world's values: term name -> [size] array, from ``bounds`` (the layout of
        :meth:`bounds`, traced or not; ``None``: the declared ranges)."""
        check_split(split)
        keys = jax.random.split(key, max(len(self.terms), 1))
        out = {}
        for k, term in zip(keys, self.terms):
            b = None if bounds is None else bounds[term.name]
            out[term.name] = term.range.sample(k, split, (term.size,), b)  # shared ranges ignore the split
        return out

    def nominal_values(self) -> dict[str, jax.Array]:
        """Values that leave the model unchanged."""
        ident = {"scale": 1.0, "add": 0.0}
        out = {}
        for term in self.terms:
            if term.mode == "set":
                out[term.name] = jnp.asarray(self.index[term.name].nominal[:, 0][: term.size], jnp.float32)
            else:
                out[term.name] = jnp.full((term.size,), ident[term.mode], jnp.float32)
        return out

    def _combine(self, term: Term, nominal, v):
        v = v[:, None] if term.size > 1 else v.reshape(1, 1)
        if term.mode == "scale":
            return nominal * v
        if term.mode == "add":
            return nominal + v
        return jnp.broadcast_to(v, nominal.shape) if isinstance(nominal, jax.Array) else np.broadcast_to(v, nominal.shape)

    def apply_mjx(self, model, values: dict[str, jax.Array]):
        """Return an ``mjx.Model`` with the randomized fields replaced (jittable, vmappable)."""
        for term in self.terms:
            idx = self.index[term.name]
            new = self._combine(term, jnp.asarray(idx.nominal, jnp.float32), values[term.name].astype(jnp.float32))
            if term.field == "opt.gravity":
                g = model.opt.gravity.at[idx.cols].set(new[0])
                model = model.replace(opt=model.opt.replace(gravity=g))
                continue
            field = getattr(model, term.field)
            if field.ndim == 1:
                field = field.at[idx.rows].set(new[:, 0].astype(field.dtype))
            else:
                field = field.at[idx.rows[:, None], idx.cols[None, :]].set(new.astype(field.dtype))
            model = model.replace(**{term.field: field})
        return model

    def native_writes(self, values: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """What one world's values write into a native model: ``(field, rows, cols, new)`` per term, ``new``
        float64 ``(len(rows), len(cols))``; ``field`` is an ``MjModel`` field name or ``opt.gravity``
        (one row). :meth:`apply_native` writes them into an ``MjModel``, the native pool into the
        per-simulation fields of a ``mujoco.batch.Batch``; both then run ``mj_setConst``."""
        out = []
        for term in self.terms:
            idx = self.index[term.name]
            new = self._combine(term, idx.nominal, np.asarray(values[term.name], np.float64))
            out.append((term.field, idx.rows, idx.cols, new))
        return out

    def apply_native(self, model: mujoco.MjModel, data: mujoco.MjData, values: dict[str, np.ndarray]) -> None:
        """Write one world's values into a native model copy, then recompute derived quantities."""
        for field, rows, cols, new in self.native_writes(values):
            if field == "opt.gravity":
                model.opt.gravity[cols] = new[0]
                continue
            arr = getattr(model, field)
            if arr.ndim == 1:
                arr[rows] = new[:, 0]
            else:
                arr[rows[:, None], cols[None, :]] = new
        mujoco.mj_setConst(model, data)
