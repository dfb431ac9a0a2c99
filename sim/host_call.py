"""``host_call``: ``jax.pure_callback`` for one array in and one array out, without its per-call cost.

``jax.pure_callback`` wraps the Python function so that it receives ``jax.Array``s: every call pays
a ``jax.device_put`` of its inputs, about 110 µs on this project's 2-core CPU whatever their size
(``proteus bench sim`` steps a batch of robots in ≈ 1.5 ms, so that alone is 7%; a pendulum's
physics costs less than the wrapper). ``host_call`` lowers through the same XLA host-callback
machinery (``emit_python_callback``) but hands the function the NumPy array XLA gives it: ≈ 8 µs.

Semantics are ``pure_callback``'s with ``vmap_method="expand_dims"`` for a single argument: the
function must be pure (XLA may skip or repeat calls), takes an array with any leading batch shape
and returns ``result`` with the same leading shape. It is not differentiable. Where this JAX
version does not expose ``emit_python_callback`` it falls back to ``jax.pure_callback``
(:data:`FAST` says which path is live); both give identical results, as a test checks.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

__all__ = ["FAST", "host_call"]

try:  # internal API: pinned by constraints.txt; the fallback below keeps other versions working
    from jax._src.callback import emit_python_callback
    from jax.extend.core import Primitive
    from jax.interpreters import batching, mlir

    FAST = True
except ImportError:  # pragma: no cover - depends on the JAX version
    FAST = False


class _Fn:
    """The host function and its result type, hashable by identity (a primitive parameter)."""

    def __init__(self, fn, result: jax.ShapeDtypeStruct):
        self.fn, self.result = fn, result

    def __call__(self, x):
        out = np.asarray(self.fn(np.asarray(x)))
        want = self.result
        if out.shape != want.shape or out.dtype != want.dtype:
            raise RuntimeError(f"host_call: {self.fn} returned {out.dtype}{list(out.shape)}, expected {want.dtype}{list(want.shape)}")
        return out


if FAST:
    _host_call_p = Primitive("proteus_host_call")

    @_host_call_p.def_impl
    def _impl(x, *, fn: _Fn):
        return jax.numpy.asarray(fn(np.asarray(x)))

    @_host_call_p.def_abstract_eval
    def _abstract(x, *, fn: _Fn):
        return jax.core.ShapedArray(fn.result.shape, fn.result.dtype)

    def _lower(ctx, x, *, fn: _Fn):
        results, _, _ = emit_python_callback(ctx, lambda a: (fn(a),), None, [x], ctx.avals_in, ctx.avals_out,
                                             has_side_effect=False, returns_token=False, sharding=None)
        return results

    mlir.register_lowering(_host_call_p, _lower)

    def _batch(args, dims, *, fn: _Fn):
        (x,), (d,) = args, dims
        x = jax.numpy.moveaxis(x, d, 0)
        result = jax.ShapeDtypeStruct((x.shape[0],) + fn.result.shape, fn.result.dtype)
        return _host_call_p.bind(x, fn=_Fn(fn.fn, result)), 0

    batching.primitive_batchers[_host_call_p] = _batch


@functools.partial(jax.named_call, name="host_call")
def host_call(fn, result: jax.ShapeDtypeStruct, x: jax.Array, fast: bool | None = None) -> jax.Array:
    """``fn(x)`` on the host inside traced code: ``fn`` maps a NumPy array of ``x``'s dtype (any
    leading batch shape ahead of ``x.shape``) to one of ``result``'s trailing shape and dtype.
    ``fast=False`` forces the ``jax.pure_callback`` path."""
    if FAST and fast is not False:
        return _host_call_p.bind(x, fn=_Fn(fn, result))
    return jax.pure_callback(lambda a: np.asarray(fn(np.asarray(a))), result, x, vmap_method="expand_dims")
