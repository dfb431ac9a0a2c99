"""ONNX export of an agent's deterministic step, traced from the JAX function, with an onnxruntime-vs-JAX parity check.

What is exported is :meth:`meta_rl.agent.Agent.policy_step` (a :class:`~meta_rl.networks.Policy` is
exported as the deterministic :class:`~meta_rl.agent.PolicyAgent` over its params). The graph comes
from the function itself: ``jax.make_jaxpr`` over a symbolic batch axis, then each equation written
as ONNX nodes by a small tracer (:class:`_Tracer`; the primitives it knows are
:data:`SUPPORTED_PRIMITIVES`, any other raises :class:`UnsupportedPrimitive` naming it). The params
are closed-over constants: whatever is computed from them alone (``sqrt(var + 1e-8)``, ``exp(log_std)``,
broadcast biases) is evaluated by JAX at export time and stored as initializers. Equations no output
needs (the value head, the distribution's unused parts) are skipped. Two rewrites keep the graph
lean: ``x @ W + b`` with constant ``W``, ``b`` becomes one ``Gemm``, and ``jnp.clip``'s ``max``/``min``
one ``Clip``.

The ONNX contract (DESIGN.md)::

    inputs   obs            float32 [B, obs_dim]   (raw sensor units; normalization is in the graph);
                            a dict observation: ``obs.<part>`` per part (float32 [B, n], uint8 [B, H, W, C])
             <path>_in      one per leaf of ``agent.initial_state(B)``, named by its pytree path
                            (GRU: ``h_in``; LSTM: ``c_in``, ``h_in``; a learner's ``{"latent", "mem":
                            {"keys"}}``: ``latent_in``, ``mem.keys_in``; MLP: none), in tree order
    outputs  action         float32 [B, act_dim]   continuous: deterministic, in actuator units
                            int64   [B]            discrete: the chosen index
             <path>_out     the next state, leaf for leaf

An agent with an episodic memory (MFEC, NEC: ``memory_inputs()`` not empty, and
``policy_step_with(memory, state, obs) -> (action, state, outputs)``) takes the memory as inputs
instead of constants, one for the whole batch, so that it can grow on the robot
(:mod:`deploy.memory` writes it in NumPy)::

    inputs   memory.keys    float32 [A, C, D]      not batched: one memory per controller
             memory.values  float32 [A, C, V]
             memory.stamps  int32   [A, C]         -1: an empty slot
    outputs  q              float32 [B, A]         (the names and order of ``outputs``)
             memory_key     float32 [B, D]         the key the lookup used (what a write stores)

and the metadata's ``memory`` entry: ``inputs``, ``outputs``, ``shapes``, ``dtypes``, ``actions``,
``capacity``, ``key_dim``, ``value_dim``, and the caller's keys (how to write it: ``learner``,
``rule``, ``gamma``, ``match_tol``, ``alpha``, ``n_step``; ``run_id``, the run the memory came from).

The metadata (``metadata_props``, JSON values) states everything a robot needs to build the inputs:
observation and action names, ``state`` (per leaf: path, input and output names, per-row shape,
dtype, initial value), ``control_dt``, ``episodes_per_trial`` / ``episode_length`` /
``max_trial_steps`` (the denominator of ``trial_time``), action bounds and scale.

Every export runs the parity check *before* anything is written: the onnxruntime session built from
the exact bytes to be written and the jitted JAX ``policy_step`` are both stepped ``steps`` times
over random observations (and over recorded ``parity_obs`` when given), each side feeding its own
state forward from the initial state (the ONNX side's built from the metadata, as a robot would).
Any error above ``tol`` raises :class:`ParityError`.

JAX is imported lazily (only by :func:`export_onnx` and :func:`build_onnx`), so :func:`read_metadata`
works on a robot computer that has ``onnx`` but no JAX.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploy.files import write_atomic
from deploy.runtime import EXPLORATION_OUTPUTS  # optional outputs: agents with an ``exploration(state, obs)``

OPSET = 17
CONTRACT_VERSION = 2  # 2: state inputs named from the agent state's pytree paths
TRIAL_TIME = "trial_time"  # the RL² input read as trial steps / max_trial_steps (sim.wrappers.TRIAL_TIME)
PARITY_BATCH = 4  # observations per parity step (the batch axis is dynamic in the graph)

__all__ = ["EPISODE_INPUTS", "EXPLORATION_OUTPUTS", "OPSET", "SUPPORTED_PRIMITIVES", "AdaptReport", "ExportReport",
           "ParityError", "UnsupportedPrimitive", "build_adapt_onnx", "build_onnx", "export_adapt", "export_agent",
           "export_onnx", "initial_state", "obs_inputs", "obs_layout", "random_episodes", "read_metadata"]


class ParityError(RuntimeError):
    """onnxruntime and JAX disagree by more than the tolerance; nothing was written."""


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime matched JAX.

    Attributes:
        path: the ONNX file written.
        kind: policy kind (``mlp``, ``gru``, ``lstm``).
        discrete: whether ``action`` is an int64 argmax.
        max_action_error: continuous: max |action_onnx - action_jax| in actuator units over every
            step and input checked. Discrete: max over inputs of ``logit[argmax_jax] -
            logit[argmax_onnx]`` (JAX logits), i.e. 0 unless the chosen actions differ, and then
            how far from a tie the disagreement was (an agent without logits: 0 or inf).
        max_carry_error: max |state_out - state_jax| over every state leaf; 0.0 for stateless agents.
        output_errors: a memory agent's other outputs (``q``, ``memory_key``), the memory fed as
            inputs: max over elements of ``|onnx - jax| / max(1, |jax|)`` (float32's rounding: absolute
            below 1, relative above) of each; ``{}`` for other agents.
        steps: recurrent steps checked (random sequence + recorded sequence).
        inputs_checked: observations checked in all (steps × batch, summed over sequences).
        tol: the tolerance the errors were checked against.
        opset: ONNX opset of the graph.
        metadata: the decoded metadata written into the model.
    """

    path: Path
    kind: str
    discrete: bool
    max_action_error: float
    max_carry_error: float
    steps: int
    inputs_checked: int
    tol: float
    opset: int
    metadata: dict
    output_errors: dict = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# The tracer: jaxpr -> ONNX
# --------------------------------------------------------------------------------------------------


class UnsupportedPrimitive(NotImplementedError):
    """The traced function uses a JAX primitive the exporter cannot write as ONNX."""


_ONNX_DTYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
               np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int8): TensorProto.INT8,
               np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.bool_): TensorProto.BOOL}
_UNARY = {"neg": "Neg", "tanh": "Tanh", "logistic": "Sigmoid", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
          "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil", "sin": "Sin", "cos": "Cos",
          "erf": "Erf", "not": "Not", "round": "Round"}
_BINARY = {"add": "Add", "add_any": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
           "pow": "Pow", "and": "And", "or": "Or", "xor": "Xor", "eq": "Equal", "lt": "Less", "gt": "Greater",
           "le": "LessOrEqual", "ge": "GreaterOrEqual"}
_IDENTITY = {"stop_gradient", "copy", "copy_p", "reduce_precision"}
_CALLS = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
          "checkpoint", "remat"}
_REDUCE_ATTR = {"reduce_max": "ReduceMax", "reduce_min": "ReduceMin", "reduce_prod": "ReduceProd"}
_OTHER = {"dot_general", "reduce_sum", "argmax", "argmin", "convert_element_type", "broadcast_in_dim", "reshape",
          "squeeze", "expand_dims", "concatenate", "slice", "gather", "transpose", "select_n", "clamp", "integer_pow",
          "square", "rsqrt", "exp2", "log1p", "expm1", "ne", "is_finite", "split", "conv_general_dilated", "top_k", "stack"}
SUPPORTED_PRIMITIVES = tuple(sorted(set(_UNARY) | set(_BINARY) | _IDENTITY | _CALLS | set(_REDUCE_ATTR) | _OTHER))


def _onnx_dtype(dtype) -> int:
    try:
        return _ONNX_DTYPE[np.dtype(dtype)]
    except KeyError:
        raise UnsupportedPrimitive(f"dtype {np.dtype(dtype)} has no ONNX export") from None


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _concrete(shape) -> bool:
    return all(isinstance(d, (int, np.integer)) for d in shape)


def _same_dim(a, b) -> bool:
    return str(a) == str(b)


class _Tracer:
    """Writes the equations of a jaxpr as ONNX nodes.

    Values are either ``np.ndarray`` (known at export time: the closed-over params and everything
    computed from them alone, evaluated by JAX itself, so folded constants are JAX's own numbers) or
    ``str`` (the name of an ONNX tensor computed at run time). Call-like primitives (``jit``,
    ``custom_jvp_call``...) are inlined; equations whose results are unused are skipped.
    """

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.producer: dict[str, onnx.NodeProto] = {}
        self.const_value: dict[str, np.ndarray] = {}
        self.shape: dict[str, tuple] = {}
        self.dims: dict[str, tuple[str, int]] = {}  # symbolic dim -> (graph input, axis)
        self._const_names: dict[int, str] = {}
        self._keep: list[np.ndarray] = []  # keeps the cached constants alive (their ids are the cache keys)
        self._dim_tensors: dict[str, str] = {}
        self._n = 0

    # ---- building blocks -------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value) -> str:
        arr = np.asarray(value)
        key = id(value) if isinstance(value, np.ndarray) else None
        if key is not None and key in self._const_names:
            return self._const_names[key]
        name = self.fresh("const")
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        self.const_value[name] = arr
        if key is not None:
            self._const_names[key] = name
            self._keep.append(value)
        return name

    def name(self, v) -> str:
        return v if isinstance(v, str) else self.const(v)

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        node = helper.make_node(op_type, [self.name(i) for i in inputs], outs, name=self.fresh(op_type), **attrs)
        self.nodes.append(node)
        for o in outs:
            self.producer[o] = node
        return outs[0] if n_out == 1 else outs

    def dim_tensor(self, d) -> str:
        """int64 [1]: the run-time size of symbolic dimension ``d`` (read off the graph input that has it)."""
        key = str(d)
        if key not in self._dim_tensors:
            if key not in self.dims:
                raise UnsupportedPrimitive(f"dimension {d} is not the size of any input's axis")
            src, axis = self.dims[key]
            self._dim_tensors[key] = self.op("Shape", [src], start=axis, end=axis + 1)
        return self._dim_tensors[key]

    def shape_tensor(self, shape, minus_one: bool = False) -> str:
        """int64 [rank]: ``shape``, with symbolic dims read at run time (or -1 for Reshape's one unknown)."""
        if _concrete(shape):
            return self.const(np.array([int(d) for d in shape], np.int64))
        symbolic = [i for i, d in enumerate(shape) if not isinstance(d, (int, np.integer))]
        if minus_one and len(symbolic) == 1:
            return self.const(np.array([-1 if i in symbolic else int(d) for i, d in enumerate(shape)], np.int64))
        parts = [self.dim_tensor(d) if i in symbolic else np.array([int(d)], np.int64) for i, d in enumerate(shape)]
        return self.op("Concat", parts, axis=0)

    def scalar_const(self, v) -> np.ndarray | None:
        """The value of ``v`` when it is a known scalar (a folded constant or a scalar initializer)."""
        arr = v if isinstance(v, np.ndarray) else self.const_value.get(v)
        return arr if arr is not None and arr.size == 1 else None

    # ---- jaxpr evaluation ------------------------------------------------------------------------

    def run(self, jaxpr, consts, args, needed):
        from jax.extend.core import DropVar, Literal

        env = {}

        def read(a):
            if isinstance(a, Literal):
                return np.asarray(a.val, dtype=a.aval.dtype)
            return env[a]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = np.asarray(c)
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        need = {v for v, n in zip(jaxpr.outvars, needed) if n and not isinstance(v, Literal)}
        live = []
        for eqn in reversed(jaxpr.eqns):  # skip what no output needs (e.g. the value head)
            if any(v in need for v in eqn.outvars if not isinstance(v, DropVar)):
                live.append(eqn)
                need.update(v for v in eqn.invars if not isinstance(v, Literal))
        for eqn in reversed(live):
            outs = self.eqn(eqn, [read(a) for a in eqn.invars], [v in need for v in eqn.outvars])
            for v, o in zip(eqn.outvars, outs):
                if not isinstance(v, DropVar) and o is not None:
                    env[v] = o
                    if isinstance(o, str):
                        self.shape[o] = tuple(v.aval.shape)
        return [read(v) if n else None for v, n in zip(jaxpr.outvars, needed)]

    def eqn(self, eqn, ins, out_needed):
        import jax.numpy as jnp
        from jax.extend.core import ClosedJaxpr

        prim = eqn.primitive.name
        p = eqn.params
        if prim in _CALLS:
            sub = next((p[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in p), None)
            if sub is None:
                raise UnsupportedPrimitive(f"call primitive {prim!r} without a jaxpr")
            jaxpr, consts = (sub.jaxpr, sub.consts) if isinstance(sub, ClosedJaxpr) else (sub, [])
            return self.run(jaxpr, consts, ins[len(ins) - len(jaxpr.invars):], out_needed)
        if all(isinstance(x, np.ndarray) for x in ins) and all(_concrete(v.aval.shape) for v in eqn.outvars):
            out = eqn.primitive.bind(*[jnp.asarray(x) for x in ins], **p)  # folded by JAX itself
            out = out if eqn.primitive.multiple_results else [out]
            return [np.asarray(o) for o in out]
        in_avals = [v.aval for v in eqn.invars]
        out_aval = eqn.outvars[0].aval
        handler = getattr(self, f"_p_{prim}", None)
        if prim in _UNARY:
            return [self.op(_UNARY[prim], ins)]
        if prim in _BINARY:
            return [self._binary(prim, ins)]
        if prim in _IDENTITY:
            return list(ins)
        if prim in _REDUCE_ATTR:
            return [self.op(_REDUCE_ATTR[prim], ins, axes=[int(a) for a in p["axes"]], keepdims=0)]
        if handler is None:
            raise UnsupportedPrimitive(
                f"the exporter cannot write JAX primitive {prim!r} as ONNX (in {eqn}); supported primitives: "
                f"{', '.join(SUPPORTED_PRIMITIVES)}")
        out = handler(ins, p, in_avals, out_aval)
        return out if isinstance(out, list) else [out]

    # ---- primitives ------------------------------------------------------------------------------

    def _binary(self, prim, ins):
        a, b = ins
        if prim == "min":  # jnp.clip is max(lo, x) then min(hi, ·): one Clip
            for t, hi in ((a, b), (b, a)):
                hi_v = self.scalar_const(hi)
                node = self.producer.get(t) if isinstance(t, str) else None
                if hi_v is not None and node is not None and node.op_type == "Max":
                    x, lo = node.input
                    if self.scalar_const(x) is not None:
                        x, lo = lo, x
                    lo_v = self.scalar_const(lo)
                    if lo_v is not None and lo_v.dtype.kind == "f" and float(lo_v) <= float(hi_v):
                        return self.op("Clip", [x, lo_v.reshape(()), hi_v.reshape(()).astype(lo_v.dtype)])
        if prim == "add":  # x @ W + b with constant W, b: one Gemm
            for t, bias in ((a, b), (b, a)):
                node = self.producer.get(t) if isinstance(t, str) else None
                if (node is not None and node.op_type == "MatMul" and isinstance(bias, np.ndarray)
                        and len(self.shape.get(node.input[0], ())) == 2 and node.input[1] in self.const_value):
                    n = self.const_value[node.input[1]].shape[1]
                    row = bias.ndim < 2 or (bias.ndim == 2 and bias.shape[0] == 1)
                    if bias.dtype == np.float32 and bias.size in (1, n) and row:
                        c = np.broadcast_to(bias.reshape(-1), (n,)).copy()
                        return self.op("Gemm", [node.input[0], node.input[1], c])
        return self.op(_BINARY[prim], [a, b])

    def _p_ne(self, ins, p, in_avals, out_aval):
        return self.op("Not", [self.op("Equal", ins)])

    def _p_is_finite(self, ins, p, in_avals, out_aval):
        return self.op("Not", [self.op("Or", [self.op("IsNaN", ins), self.op("IsInf", ins)])])

    def _p_square(self, ins, p, in_avals, out_aval):
        return self.op("Mul", [ins[0], ins[0]])

    def _p_integer_pow(self, ins, p, in_avals, out_aval):
        x, y = ins[0], int(p["y"])
        if y == 2:
            return self.op("Mul", [x, x])
        if y == 3:
            return self.op("Mul", [self.op("Mul", [x, x]), x])
        return self.op("Pow", [x, np.array(y, np.dtype(in_avals[0].dtype))])

    def _p_rsqrt(self, ins, p, in_avals, out_aval):
        return self.op("Reciprocal", [self.op("Sqrt", ins)])

    def _p_exp2(self, ins, p, in_avals, out_aval):
        return self.op("Pow", [np.array(2, np.dtype(out_aval.dtype)), ins[0]])

    def _p_log1p(self, ins, p, in_avals, out_aval):
        return self.op("Log", [self.op("Add", [ins[0], np.array(1, np.dtype(out_aval.dtype))])])

    def _p_expm1(self, ins, p, in_avals, out_aval):
        return self.op("Sub", [self.op("Exp", ins), np.array(1, np.dtype(out_aval.dtype))])

    def _p_convert_element_type(self, ins, p, in_avals, out_aval):
        if np.dtype(in_avals[0].dtype) == np.dtype(out_aval.dtype):
            return ins[0]
        return self.op("Cast", ins, to=_onnx_dtype(out_aval.dtype))

    def _p_clamp(self, ins, p, in_avals, out_aval):
        lo, x, hi = ins
        lo_v, hi_v = self.scalar_const(lo), self.scalar_const(hi)
        if lo_v is not None and hi_v is not None:
            return self.op("Clip", [x, lo_v.reshape(()), hi_v.reshape(())])
        return self.op("Min", [self.op("Max", [x, lo]), hi])

    def _p_select_n(self, ins, p, in_avals, out_aval):
        pred, *cases = ins
        if len(cases) == 1:
            return cases[0]
        if len(cases) != 2:
            raise UnsupportedPrimitive(f"select_n with {len(cases)} cases (2 are supported)")
        if np.dtype(in_avals[0].dtype) != np.bool_:
            pred = self.op("Cast", [pred], to=TensorProto.BOOL)
        return self.op("Where", [pred, cases[1], cases[0]])

    def _p_dot_general(self, ins, p, in_avals, out_aval):
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        lhs, rhs = ins
        lr, rr = len(in_avals[0].shape), len(in_avals[1].shape)
        out_dt = np.dtype(out_aval.dtype)
        lhs, rhs = [x if np.dtype(a.dtype) == out_dt else
                    (x.astype(out_dt) if isinstance(x, np.ndarray) else self.op("Cast", [x], to=_onnx_dtype(out_dt)))
                    for x, a in zip((lhs, rhs), in_avals)]
        if not lb and rr == 2 and tuple(lc) == (lr - 1,) and tuple(rc) in ((0,), (1,)):
            if tuple(rc) == (1,):
                rhs = rhs.T.copy() if isinstance(rhs, np.ndarray) else self.op("Transpose", [rhs], perm=[1, 0])
            return self.op("MatMul", [lhs, rhs])
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        ls = [next(letters) for _ in range(lr)]
        rs = [None] * rr
        for i, j in zip(lc, rc):
            rs[j] = ls[i]
        for i, j in zip(lb, rb):
            rs[j] = ls[i]
        rs = [r or next(letters) for r in rs]
        out = ([ls[i] for i in lb] + [ls[i] for i in range(lr) if i not in lc and i not in lb]
               + [rs[j] for j in range(rr) if j not in rc and j not in rb])
        return self.op("Einsum", [lhs, rhs], equation=f"{''.join(ls)},{''.join(rs)}->{''.join(out)}")

    def _p_reduce_sum(self, ins, p, in_avals, out_aval):
        return self.op("ReduceSum", [ins[0], np.array(p["axes"], np.int64)], keepdims=0)

    def _arg(self, op_type, ins, p, out_aval):
        (axis,) = p["axes"]
        out = self.op(op_type, ins, axis=int(axis), keepdims=0)
        if np.dtype(out_aval.dtype) != np.int64:
            out = self.op("Cast", [out], to=_onnx_dtype(out_aval.dtype))
        return out

    def _p_argmax(self, ins, p, in_avals, out_aval):
        return self._arg("ArgMax", ins, p, out_aval)

    def _p_argmin(self, ins, p, in_avals, out_aval):
        return self._arg("ArgMin", ins, p, out_aval)

    def _p_top_k(self, ins, p, in_avals, out_aval):
        # ONNX TopK, like lax.top_k, puts the lower index first among equal values (opset >= 11)
        axis = int(p.get("axis", len(in_avals[0].shape) - 1))
        values, index = self.op("TopK", [ins[0], np.array([int(p["k"])], np.int64)], n_out=2, axis=axis,
                                largest=1, sorted=1)
        return [values, self.op("Cast", [index], to=_onnx_dtype(np.int32))]

    def _p_broadcast_in_dim(self, ins, p, in_avals, out_aval):
        x, shape, bdims = ins[0], tuple(p["shape"]), tuple(p["broadcast_dimensions"])
        in_shape = tuple(in_avals[0].shape)
        mid = tuple(in_shape[bdims.index(i)] if i in bdims else 1 for i in range(len(shape)))
        if isinstance(x, np.ndarray):
            x = x.reshape(mid) if _concrete(mid) else x
        elif len(mid) != len(in_shape):
            x = self.op("Unsqueeze", [x, np.array([i for i in range(len(shape)) if i not in bdims], np.int64)])
        if all(_same_dim(a, b) for a, b in zip(mid, shape)):
            return x if isinstance(x, str) else self.const(x)
        target = tuple(1 if _same_dim(m, s) else s for m, s in zip(mid, shape))
        return self.op("Expand", [x, self.shape_tensor(target)])

    def _p_reshape(self, ins, p, in_avals, out_aval):
        if p.get("dimensions") is not None:
            raise UnsupportedPrimitive("reshape with dimensions (a transposing reshape)")
        return self.op("Reshape", [ins[0], self.shape_tensor(tuple(p["new_sizes"]), minus_one=True)])

    def _p_squeeze(self, ins, p, in_avals, out_aval):
        return self.op("Squeeze", [ins[0], np.array(p["dimensions"], np.int64)])

    def _p_expand_dims(self, ins, p, in_avals, out_aval):
        return self.op("Unsqueeze", [ins[0], np.array(p["dimensions"], np.int64)])

    def _p_concatenate(self, ins, p, in_avals, out_aval):
        return self.op("Concat", ins, axis=int(p["dimension"]))

    def _p_stack(self, ins, p, in_avals, out_aval):
        axis = np.array([int(p["axis"])], np.int64)
        return self.op("Concat", [self.op("Unsqueeze", [x, axis]) for x in ins], axis=int(p["axis"]))

    def _p_split(self, ins, p, in_avals, out_aval):
        sizes = [int(s) for s in p["sizes"]]
        return self.op("Split", [ins[0], np.array(sizes, np.int64)], n_out=len(sizes), axis=int(p["axis"]))

    def _p_slice(self, ins, p, in_avals, out_aval):
        shape = in_avals[0].shape
        starts = [int(s) for s in p["start_indices"]]
        ends = []
        for lim, dim in zip(p["limit_indices"], shape):
            if isinstance(lim, (int, np.integer)):
                ends.append(int(lim))
            elif _same_dim(lim, dim):
                ends.append(np.iinfo(np.int64).max)
            else:
                raise UnsupportedPrimitive(f"slice to a symbolic limit {lim}")
        steps = [1] * len(starts) if p.get("strides") is None else [int(s) for s in p["strides"]]
        axes = [i for i in range(len(starts))
                if not (starts[i] == 0 and steps[i] == 1 and _same_dim(p["limit_indices"][i], shape[i]))]
        if not axes:
            return ins[0]
        pick = lambda v: np.array([v[i] for i in axes], np.int64)  # noqa: E731
        return self.op("Slice", [ins[0], pick(starts), pick(ends), np.array(axes, np.int64), pick(steps)])

    def _p_gather(self, ins, p, in_avals, out_aval):
        """The gather of static basic indexing (``x[:, 2:5]``, ``x[..., 0]`` with a symbolic batch): a
        Slice (and a Squeeze of the indexed-away axes); and a table lookup ``x[idx]`` along the first
        axis with run-time indices: a Gather. Other gathers are not supported."""
        x, idx = ins
        dn = p["dimension_numbers"]
        shape = in_avals[0].shape
        rank = len(shape)
        collapsed = tuple(dn.collapsed_slice_dims)
        idx_shape = tuple(in_avals[1].shape)
        if (not isinstance(idx, np.ndarray) and collapsed == (0,) and tuple(dn.start_index_map) == (0,)
                and not getattr(dn, "operand_batching_dims", ()) and idx_shape and idx_shape[-1] == 1
                and tuple(p["slice_sizes"])[1:] == tuple(shape[1:]) and p["slice_sizes"][0] == 1
                and tuple(dn.offset_dims) == tuple(range(len(idx_shape) - 1, len(idx_shape) - 1 + rank - 1))):
            # x[idx] along the first axis with run-time indices (a table lookup): one Gather. ONNX
            # refuses an index out of range where JAX would clamp it; lookups index in range
            flat = self.op("Squeeze", [idx, np.array([len(idx_shape) - 1], np.int64)])
            return self.op("Gather", [x, flat], axis=0)
        if (not isinstance(idx, np.ndarray) or idx.ndim != 1 or getattr(dn, "operand_batching_dims", ())
                or tuple(dn.offset_dims) != tuple(range(rank - len(collapsed)))):
            raise UnsupportedPrimitive("gather other than static basic indexing (x[:, a:b], x[..., i])")
        axes, starts, ends = [], [], []
        for axis, start in zip(dn.start_index_map, idx.tolist()):
            size, dim = p["slice_sizes"][axis], shape[axis]
            if not isinstance(size, (int, np.integer)) or not isinstance(dim, (int, np.integer)):
                raise UnsupportedPrimitive("gather along a symbolic axis")
            start = min(max(int(start), 0), int(dim) - int(size))  # JAX clamps constant indices into range
            axes.append(int(axis)), starts.append(start), ends.append(start + int(size))
        for axis in range(rank):
            if axis not in dn.start_index_map and not _same_dim(p["slice_sizes"][axis], shape[axis]):
                raise UnsupportedPrimitive("gather with a partial slice along an unindexed axis")
        y = self.op("Slice", [x, np.array(starts, np.int64), np.array(ends, np.int64), np.array(axes, np.int64)])
        return self.op("Squeeze", [y, np.array(collapsed, np.int64)]) if collapsed else y

    def _p_transpose(self, ins, p, in_avals, out_aval):
        return self.op("Transpose", ins, perm=[int(i) for i in p["permutation"]])

    def _p_conv_general_dilated(self, ins, p, in_avals, out_aval):
        lhs, rhs = ins
        dn = p["dimension_numbers"]
        if p.get("batch_group_count", 1) != 1 or p.get("lhs_dilation") and any(d != 1 for d in p["lhs_dilation"]):
            raise UnsupportedPrimitive("conv_general_dilated with batch groups or input dilation")
        lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec  # (batch/out, feature/in, spatial...)
        if list(lhs_spec) != list(range(len(lhs_spec))):
            lhs = self.op("Transpose", [lhs], perm=list(lhs_spec))
        rhs = (np.transpose(rhs, rhs_spec).copy() if isinstance(rhs, np.ndarray)
               else self.op("Transpose", [rhs], perm=list(rhs_spec)))
        pads = [int(lo) for lo, _ in p["padding"]] + [int(hi) for _, hi in p["padding"]]
        y = self.op("Conv", [lhs, rhs], strides=[int(s) for s in p["window_strides"]], pads=pads,
                    dilations=[int(d) for d in (p.get("rhs_dilation") or [1] * (len(lhs_spec) - 2))],
                    group=int(p.get("feature_group_count", 1)))
        if list(out_spec) != list(range(len(out_spec))):
            y = self.op("Transpose", [y], perm=[int(i) for i in np.argsort(out_spec)])
        return y


def _path_name(path) -> str:
    """``h`` for ``{"h": ..}``, ``mem.keys`` for ``{"mem": {"keys": ..}}``, ``0.c`` for a tuple's first dict."""
    import jax

    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(getattr(k, "key", k)))
    return ".".join(parts)


def _as_agent(policy, params):
    """An Agent (``policy_step``/``initial_state``) as given, or a Policy + params as a deterministic PolicyAgent."""
    if hasattr(policy, "policy_step") and hasattr(policy, "initial_state"):
        if params is not None:
            raise ValueError("export an Agent with params=None (its params are inside it)")
        return policy
    from meta_rl.agent import PolicyAgent

    return PolicyAgent(params, policy, deterministic=True)


def _state_layout(agent) -> list[dict]:
    """One entry per leaf of ``agent.initial_state``: its path name, ONNX input/output names, per-row shape,
    dtype and initial value (``"zeros"`` or the batch-1 row as nested lists)."""
    import jax

    one = agent.initial_state(1)
    two = agent.initial_state(2)
    leaves = jax.tree_util.tree_flatten_with_path(one)[0]
    if jax.tree.structure(one) != jax.tree.structure(two):
        raise ValueError("the agent's initial_state structure depends on the batch size")
    out = []
    for (path, leaf), leaf2 in zip(leaves, jax.tree.leaves(two)):
        arr, arr2 = np.asarray(leaf), np.asarray(leaf2)
        if arr.ndim < 1 or arr.shape[0] != 1 or arr2.shape[0] != 2:
            raise ValueError(f"state leaf {_path_name(path) or '<root>'} has no leading batch axis (shape {arr.shape})")
        if not np.array_equal(arr2, np.broadcast_to(arr, arr2.shape)):
            raise ValueError(f"state leaf {_path_name(path)}: initial_state differs between batch rows")
        name = _path_name(path) or "state"
        out.append({"path": name, "input": f"{name}_in", "output": f"{name}_out", "shape": list(arr.shape[1:]),
                    "dtype": str(arr.dtype), "init": "zeros" if not np.any(arr) else arr[0].tolist()})
    names = [s["input"] for s in out] + [s["output"] for s in out]
    if len(set(names)) != len(names) or {"obs", "action"} & set(names):
        raise ValueError(f"state leaf names collide: {[s['path'] for s in out]}")
    return out


def obs_inputs(spec) -> list[tuple[str, str | None, tuple[int, ...], np.dtype]]:
    """The graph's observation inputs of a policy spec: ``(input name, part, per-row shape, dtype)``.
    A flat observation is one ``obs`` input [B, obs_dim]; a dict one (``spec.obs_parts``) is one input
    per part named ``obs.<part>`` (an image part keeps its uint8 H x W x C)."""
    if getattr(spec, "obs_parts", ()):
        return [(f"obs.{n}", n, tuple(shape), np.dtype(np.uint8 if k == "image" else np.float32))
                for n, shape, k in spec.obs_parts]
    return [("obs", None, (spec.obs_dim,), np.dtype(np.float32))]


def _obs_feed(spec, obs) -> dict[str, np.ndarray]:
    """ONNX feed of one step's observation (an array, or a dict of parts)."""
    feed = {}
    for name, part, _, dtype in obs_inputs(spec):
        feed[name] = np.ascontiguousarray(obs if part is None else obs[part], dtype)
    return feed




def _trace(agent, state_layout, spec):
    """``agent.policy_step`` as ONNX nodes over a symbolic batch: (tracer, input infos, output infos).
    An agent with an ``exploration(state, obs) -> (mean, std)`` method also gets the outputs
    :data:`EXPLORATION_OUTPUTS` (what a robot samples its exploring actions from). An agent with a
    memory (``memory_inputs()``) has ``policy_step_with(memory, state, obs)`` traced instead: its memory
    inputs after the state's (not batched), its extra outputs (``q``, ``memory_key``) after the state's."""
    import jax
    from jax import export as jax_export

    (batch,) = jax_export.symbolic_shape("batch")
    init = agent.initial_state(1)
    treedef = jax.tree.structure(init)
    state_specs = [jax.ShapeDtypeStruct((batch, *s["shape"]), np.dtype(s["dtype"])) for s in state_layout]
    obs_in = obs_inputs(spec)
    obs_specs = [jax.ShapeDtypeStruct((batch, *shape), dtype) for _, _, shape, dtype in obs_in]
    explore = callable(getattr(agent, "exploration", None))

    def flat_step(*leaves):
        obs_leaves, state_leaves = leaves[: len(obs_in)], leaves[len(obs_in):]
        obs = obs_leaves[0] if obs_in[0][1] is None else {part: x for (_, part, _, _), x in zip(obs_in, obs_leaves)}
        state = jax.tree.unflatten(treedef, state_leaves)
        action, new_state = agent.policy_step(state, obs)
        if jax.tree.structure(new_state) != treedef:
            raise ValueError(f"policy_step returned a state of structure {jax.tree.structure(new_state)}, "
                             f"not initial_state's {treedef}")
        extra = list(agent.exploration(state, obs)) if explore else []
        return [action, *jax.tree.leaves(new_state), *extra]

    names = [n for n, _, _, _ in obs_in] + [s["input"] for s in state_layout]
    out_names = ["action"] + [s["output"] for s in state_layout] + (list(EXPLORATION_OUTPUTS) if explore else [])
    memory = _memory_inputs(agent)
    if memory:  # the memory as (unbatched) inputs; the step's extra outputs after the state
        mem_specs = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in memory.values()]
        extra_names = _memory_outputs(agent, state_specs, obs_specs, obs_in, treedef, memory)

        def mem_step(*leaves):
            n_obs, n_state = len(obs_in), len(state_layout)
            obs_leaves, state_leaves = leaves[:n_obs], leaves[n_obs:n_obs + n_state]
            obs = obs_leaves[0] if obs_in[0][1] is None else {part: x for (_, part, _, _), x in zip(obs_in, obs_leaves)}
            state = jax.tree.unflatten(treedef, state_leaves)
            action, new_state, extra = agent.policy_step_with(dict(zip(memory, leaves[n_obs + n_state:])), state, obs)
            if jax.tree.structure(new_state) != treedef:
                raise ValueError(f"policy_step_with returned a state of structure {jax.tree.structure(new_state)}, "
                                 f"not initial_state's {treedef}")
            return [action, *jax.tree.leaves(new_state), *[extra[n] for n in extra_names]]

        return _trace_graph(mem_step, names + list(memory), [*obs_specs, *state_specs, *mem_specs],
                            ["action"] + [s["output"] for s in state_layout] + extra_names)
    return _trace_graph(flat_step, names, [*obs_specs, *state_specs], out_names)


def _memory_inputs(agent) -> dict[str, np.ndarray]:
    """An agent's memory inputs by name (``agent.memory_inputs()``; ``{}`` for an agent without)."""
    fn = getattr(agent, "memory_inputs", None)
    memory = fn() if callable(fn) else {}
    if memory and not callable(getattr(agent, "policy_step_with", None)):
        raise ValueError(f"{type(agent).__name__} has memory_inputs but no policy_step_with(memory, state, obs)")
    return {k: np.asarray(v) for k, v in (memory or {}).items()}


def _memory_outputs(agent, state_specs, obs_specs, obs_in, treedef, memory) -> list[str]:
    """The names of ``policy_step_with``'s extra outputs, in its order (shapes only: no compute)."""
    import jax

    extra: list[str] = []

    def names(obs_leaves, state_leaves, mem):
        obs = obs_leaves[0] if obs_in[0][1] is None else {part: x for (_, part, _, _), x in zip(obs_in, obs_leaves)}
        out = agent.policy_step_with(mem, jax.tree.unflatten(treedef, state_leaves), obs)[2]
        extra[:] = list(out)  # the agent's order (a dict pytree comes back sorted)
        return out

    mem_specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in memory.items()}
    jax.eval_shape(names, obs_specs, state_specs, mem_specs)
    clash = {"obs", "action", *memory} & set(extra)
    if clash:
        raise ValueError(f"policy_step_with's outputs {sorted(clash)} collide with the graph's other names")
    return extra


def _memory_layout(memory: dict[str, np.ndarray], out_names: list[str]) -> dict:
    """The metadata ``memory`` entry the exporter derives (the caller adds how to write it)."""
    out = {"inputs": list(memory), "outputs": out_names,
           "shapes": {k: list(v.shape) for k, v in memory.items()},
           "dtypes": {k: str(v.dtype) for k, v in memory.items()}}
    keys, values = memory.get("memory.keys"), memory.get("memory.values")
    if keys is not None and values is not None and keys.ndim == 3 and values.ndim == 3:  # a DND per action
        out.update(actions=int(keys.shape[0]), capacity=int(keys.shape[1]), key_dim=int(keys.shape[2]),
                   value_dim=int(values.shape[2]))
    return out


def _trace_graph(flat_fn, names: list[str], specs: list, out_names: list[str]):
    """Any JAX function of named inputs (``ShapeDtypeStruct`` s, symbolic dims allowed) as ONNX nodes:
    (tracer, input infos, output infos), outputs named ``out_names`` (``action`` of an integer type is
    written as int64, the contract's discrete action)."""
    import jax

    closed = jax.make_jaxpr(flat_fn)(*specs)
    t = _Tracer()
    inputs = []
    for name, spec in zip(names, specs):
        for axis, d in enumerate(spec.shape):
            if not isinstance(d, (int, np.integer)):
                t.dims.setdefault(str(d), (name, axis))
        t.shape[name] = tuple(spec.shape)
        dims = [d if isinstance(d, (int, np.integer)) else str(d) for d in spec.shape]
        inputs.append(helper.make_tensor_value_info(name, _onnx_dtype(spec.dtype), dims))
    results = t.run(closed.jaxpr, closed.consts, names, [True] * len(closed.jaxpr.outvars))

    outputs, claimed = [], set(names)
    renamed: dict[str, str] = {}
    for name, value, var in zip(out_names, results, closed.jaxpr.outvars):
        aval = var.aval
        if isinstance(value, str):
            value = renamed.get(value, value)
        dtype = np.dtype(aval.dtype)
        if name == "action" and dtype.kind in "iu":
            dtype = np.dtype(np.int64)  # the contract: a discrete action is int64
        if isinstance(value, np.ndarray):  # a constant output: broadcast to the batch
            value = t.op("Expand", [value, t.shape_tensor(tuple(aval.shape))]) if not _concrete(aval.shape) else \
                t.op("Identity", [value])
        if np.dtype(aval.dtype) != dtype:
            cast = t.producer.get(value)
            src = t.producer.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
            if src is not None and src.op_type in ("ArgMax", "ArgMin") and dtype == np.int64:
                value = cast.input[0]  # ArgMax is int64 already: drop the int64 -> int32 -> int64 round trip
            else:
                value = t.op("Cast", [value], to=_onnx_dtype(dtype))
        node = t.producer.get(value)
        if node is not None and value not in claimed:
            for n in t.nodes:  # rename the producing node's output (no Identity on the hot path)
                n.output[:] = [name if o == value else o for o in n.output]
                n.input[:] = [name if i == value else i for i in n.input]
            t.producer[name] = node
            renamed[value] = name
        else:
            t.nodes.append(helper.make_node("Identity", [value], [name], name=t.fresh("Identity")))
        claimed.add(name)
        dims = [d if isinstance(d, (int, np.integer)) else str(d) for d in aval.shape]
        outputs.append(helper.make_tensor_value_info(name, _onnx_dtype(dtype), dims))
    _prune(t, out_names)
    return t, inputs, outputs


def _prune(t: _Tracer, outputs: list[str]) -> None:
    """Drop nodes and initializers no output depends on (e.g. a fused MatMul whose Add became a Gemm)."""
    need = set(outputs)
    keep = []
    for node in reversed(t.nodes):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(node.input)
    t.nodes = keep[::-1]
    t.inits = [i for i in t.inits if i.name in need]


_GROUP_SEP = re.compile(r"[.=]")  # "qpos.hinge" (a vector's element), "prev_action=arm_2" (a one-hot's choice)


def obs_layout(obs_names) -> list[dict]:
    """Group consecutive observation names by their prefix before the first ``.`` or ``=``.

    ``.`` names a vector's element, ``=`` a one-hot block's choice (the discrete previous action of
    an RL² policy, ``prev_action=arm_0 ... prev_action=arm_4``, or a tabular state ``state=3``), so
    either is one entry: ``("qpos.a", "qpos.b", "qvel.a", "goal")`` -> ``[{"name": "qpos", "start": 0,
    "stop": 2}, {"name": "qvel", "start": 2, "stop": 3}, {"name": "goal", "start": 3, "stop": 4}]``.
    """
    layout: list[dict] = []
    for i, n in enumerate(obs_names):
        group = _GROUP_SEP.split(str(n), maxsplit=1)[0]
        if layout and layout[-1]["name"] == group and layout[-1]["stop"] == i:
            layout[-1]["stop"] = i + 1
        else:
            layout.append({"name": group, "start": i, "stop": i + 1})
    return layout


def _package_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("proteus-rl")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.asdict(v)
    if hasattr(v, "tolist"):  # jax arrays
        return v.tolist()
    raise TypeError(f"metadata value of type {type(v).__name__} is not JSON-serializable")


def _metadata(agent, layout: list[dict], metadata: dict) -> dict:
    """The full metadata: what the agent defines, then the caller's keys (which must not contradict it)."""
    s = agent.policy_spec
    metadata = dict(metadata or {})
    if "control_dt" not in metadata:
        raise ValueError("export metadata needs 'control_dt' (seconds per control step)")
    dt = float(metadata["control_dt"])
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"export metadata 'control_dt' must be a positive number of seconds, got {metadata['control_dt']!r}")
    trial = {k: metadata.get(k) for k in ("episodes_per_trial", "episode_length", "max_trial_steps")}
    for k, v in trial.items():
        if v is not None and (int(v) != v or int(v) < 1):
            raise ValueError(f"export metadata {k!r} must be a positive integer, got {v!r}")
    if trial["episodes_per_trial"] is not None and trial["episode_length"] is not None:
        steps = int(trial["episodes_per_trial"]) * int(trial["episode_length"])
        if trial["max_trial_steps"] is not None and int(trial["max_trial_steps"]) != steps:
            raise ValueError(f"export metadata max_trial_steps={trial['max_trial_steps']} is not episodes_per_trial "
                             f"× episode_length = {steps}")
        trial["max_trial_steps"] = steps
    if TRIAL_TIME in s.obs_names and trial["max_trial_steps"] is None:
        raise ValueError(f"the policy reads {TRIAL_TIME!r} (trial steps / max_trial_steps): export metadata needs "
                         "'max_trial_steps' (or 'episodes_per_trial' and 'episode_length')")
    memory = _memory_inputs(agent)
    mem_outputs = []
    if memory:
        import jax
        from jax import export as jax_export

        (batch,) = jax_export.symbolic_shape("batch")
        obs_in = obs_inputs(s)
        mem_outputs = _memory_outputs(agent, [jax.ShapeDtypeStruct((batch, *st["shape"]), np.dtype(st["dtype"]))
                                              for st in layout],
                                      [jax.ShapeDtypeStruct((batch, *shape), dtype) for _, _, shape, dtype in obs_in],
                                      obs_in, jax.tree.structure(agent.initial_state(1)), memory)
    derived = {
        "contract_version": CONTRACT_VERSION,
        "agent": type(agent).__name__,
        "policy_kind": s.kind,
        "discrete": s.discrete,
        "core_size": s.core_size if s.recurrent else 0,
        "obs_names": list(s.obs_names),
        "action_names": list(s.action_names),
        "obs_normalized_in_graph": bool(s.normalize_obs),
        "obs_clip": float(s.obs_clip),
        "inputs": [n for n, _, _, _ in obs_inputs(s)] + [st["input"] for st in layout] + list(memory),
        "outputs": ["action"] + [st["output"] for st in layout]
                   + (list(EXPLORATION_OUTPUTS) if callable(getattr(agent, "exploration", None)) and not memory
                      else []) + mem_outputs,
        "state": layout,
        "policy_spec": s.to_dict(),
    }
    if not s.discrete:
        derived.update(
            action_scale=s.action_scale.tolist(), action_offset=s.action_offset.tolist(),
            action_low=[float(v) for v in s.action_low], action_high=[float(v) for v in s.action_high],
        )
    defaults = {"obs_layout": obs_layout(s.obs_names), "env_id": None, "randomization": None,
                "package_version": _package_version()}
    out = {**defaults, **derived}
    if memory:  # the caller's memory entry adds how to write it (rule, gamma, run_id...) to the derived one
        derived_mem = _memory_layout(memory, mem_outputs)
        given = metadata.pop("memory", None) or {}
        if not isinstance(given, dict):
            raise ValueError(f"export metadata 'memory' must be a dict, got {type(given).__name__}")
        for k, v in given.items():
            if k in derived_mem and json.loads(json.dumps(v, default=_jsonable)) != derived_mem[k]:
                raise ValueError(f"export metadata memory {k!r}={v!r} contradicts the agent's memory "
                                 f"({derived_mem[k]!r})")
        out["memory"] = {**given, **derived_mem}
    for k, v in metadata.items():
        if k in derived:
            given = json.loads(json.dumps(v, default=_jsonable))
            expected = json.loads(json.dumps(derived[k], default=_jsonable))
            if given != expected:
                raise ValueError(f"export metadata {k!r}={given!r} contradicts the policy spec ({expected!r})")
        else:
            out[k] = v
    out.update({k: (None if v is None else int(v)) for k, v in trial.items()})
    out["control_dt"] = dt
    return out


def build_onnx(policy, params: dict | None, metadata: dict | None = None, *, opset: int = OPSET) -> onnx.ModelProto:
    """The ONNX model of the deterministic step (no parity check, nothing written).

    ``policy`` is a :class:`~meta_rl.networks.Policy` with its ``params`` (exported as the
    deterministic :class:`~meta_rl.agent.PolicyAgent`), or any :class:`~meta_rl.agent.Agent` with
    ``params=None``: its ``policy_step`` is traced. ``metadata`` must hold ``control_dt``; see
    :func:`export_onnx` for the keys written.
    """
    agent = _as_agent(policy, params)
    s = agent.policy_spec
    layout = _state_layout(agent)
    meta = _metadata(agent, layout, metadata or {})
    t, inputs, outputs = _trace(agent, layout, s)
    graph = helper.make_graph(t.nodes, f"proteus_{type(agent).__name__}_{s.kind}", inputs, outputs, t.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="proteus", producer_version=str(meta["package_version"]))
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime builds on robots
    model.doc_string = (f"Proteus {type(agent).__name__} ({s.kind}) policy_step: obs, state -> deterministic action, "
                        f"state (ONNX contract v{CONTRACT_VERSION})")
    helper.set_model_props(model, {k: json.dumps(v, default=_jsonable) for k, v in meta.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------------


def _ort_session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def initial_state(layout: list[dict], batch: int) -> dict[str, np.ndarray]:
    """The ONNX state inputs at trial start, by input name, from the metadata's ``state`` entries."""
    out = {}
    for st in layout:
        dtype = np.dtype(st["dtype"])
        shape = (batch, *st["shape"])
        out[st["input"]] = (np.zeros(shape, dtype) if st["init"] == "zeros"
                            else np.ascontiguousarray(np.broadcast_to(np.asarray(st["init"], dtype), shape)))
    return out


def _parity(agent, layout: list[dict], model_bytes: bytes, sequences: list[np.ndarray],
            output_errors: dict | None = None) -> tuple[float, float, int, int]:
    """Step JAX and onnxruntime side by side over each [T, B, obs_dim] sequence from the initial state,
    each feeding its own state forward. A memory agent's onnxruntime side is fed its memory as inputs
    (``agent.memory_inputs()``); its extra outputs (``q``, ``memory_key``) are compared with
    ``agent.policy_step_with``'s, their max errors (``|onnx - jax| / max(1, |jax|)``) put in
    ``output_errors`` by name; its actions with ``agent.policy_step``'s, as any agent's.

    Returns (max action error, max state error, steps, observations checked). Discrete actions of a
    policy with logits: the JAX logit gap between the two choices (0 when they agree); of any other
    agent: 0 when they agree, else inf.
    """
    import jax
    import jax.numpy as jnp

    s = agent.policy_spec
    jax_step = jax.jit(lambda state, obs: agent.policy_step(state, obs))
    logits_fn = None
    if s.discrete and hasattr(agent, "policy") and hasattr(agent, "params"):
        logits_fn = jax.jit(lambda state, obs: agent.policy.apply(agent.params, state, s.select_obs(obs))[1].logits)

    sess = _ort_session(model_bytes)
    out_names = ["action"] + [st["output"] for st in layout]
    memory = _memory_inputs(agent)
    extra_names = [o.name for o in sess.get_outputs()][len(out_names):] if memory else []
    out_errs = output_errors if output_errors is not None else {}
    out_errs.update({n: 0.0 for n in extra_names})
    if memory:
        j_memory = {k: jnp.asarray(v) for k, v in memory.items()}
        extra_fn = jax.jit(lambda state, obs: agent.policy_step_with(j_memory, state, obs)[2])
    explore = callable(getattr(agent, "exploration", None)) and not memory
    explore_fn = jax.jit(lambda state, obs: agent.exploration(state, obs)) if explore else None
    act_err = state_err = 0.0
    steps = inputs = 0
    for seq in sequences:
        T, B = jax.tree.leaves(seq)[0].shape[:2]
        j_state = agent.initial_state(B)
        o_state = initial_state(layout, B)
        for t in range(T):
            feed = _obs_feed(s, jax.tree.map(lambda x: x[t], seq))
            obs = (feed["obs"] if "obs" in feed else
                   {part: jnp.asarray(feed[name]) for name, part, _, _ in obs_inputs(s)})
            if logits_fn is not None:
                logits = np.asarray(logits_fn(j_state, jnp.asarray(obs) if "obs" in feed else obs), np.float64)
            j_obs = jnp.asarray(obs) if "obs" in feed else obs
            j_extra = [np.asarray(x) for x in explore_fn(j_state, j_obs)] if explore else []
            if memory:
                j_extra_out = extra_fn(j_state, j_obs)
            j_act, j_state = jax_step(j_state, j_obs)
            out = sess.run(out_names + extra_names, {**feed, **o_state, **memory})
            for name, o in zip(extra_names, out[len(out_names):]):  # float32's error: relative above 1
                j = np.asarray(j_extra_out[name], np.float64)
                e = (float(np.max(np.abs(o - j) / np.maximum(1.0, np.abs(j)), initial=0.0)) if o.shape == j.shape
                     else float("inf"))
                out_errs[name] = max(out_errs[name], e if np.isfinite(e) else float("inf"))
            out = out[:len(out_names)]
            if explore:  # the exploration outputs count as action outputs
                o_extra = sess.run(list(EXPLORATION_OUTPUTS), {**feed, **o_state})
                for o, j in zip(o_extra, j_extra):
                    e = float(np.max(np.abs(o.astype(np.float64) - j))) if o.shape == j.shape else float("inf")
                    act_err = max(act_err, e if np.isfinite(e) else float("inf"))
            o_act, j_act = out[0], np.asarray(j_act)
            if o_act.shape[:1] != (B,) or o_act.shape != j_act.shape:
                err = float("inf")
            elif s.discrete and logits_fn is not None:
                rows = np.arange(B)
                err = float(np.max(np.abs(logits[rows, j_act.astype(np.int64)] - logits[rows, o_act.astype(np.int64)])))
            elif s.discrete:
                err = 0.0 if np.array_equal(o_act, j_act) else float("inf")
            else:
                err = float(np.max(np.abs(o_act.astype(np.float64) - j_act))) if o_act.size else 0.0
            act_err = max(act_err, err if np.isfinite(err) else float("inf"))
            for st, o_leaf, j_leaf in zip(layout, out[1:], jax.tree.leaves(j_state)):
                j_leaf = np.asarray(j_leaf)
                e = (float(np.max(np.abs(o_leaf.astype(np.float64) - j_leaf), initial=0.0))
                     if o_leaf.shape == j_leaf.shape else float("inf"))
                state_err = max(state_err, e if np.isfinite(e) else float("inf"))
                o_state[st["input"]] = o_leaf
            steps += 1
            inputs += B
    return act_err, state_err, steps, inputs


def _random_sequence(agent, steps: int, seed: int = 0):
    """[steps, PARITY_BATCH, obs_dim] observations around the normalizer's statistics (a Policy's, when
    the agent has one): mostly within a few standard deviations, some far enough out to hit the
    normalized-observation clip. A dict observation gets one such array per vector part and uniform
    uint8 pixels per image part."""
    s = agent.policy_spec
    rng = np.random.default_rng(seed)
    stats = getattr(agent, "params", None)
    stats = stats.get("obs_norm") if isinstance(stats, dict) else None

    def vector(dim, st):
        if s.normalize_obs and st is not None and hasattr(st, "mean"):
            # the first dim statistics: a latent policy's (MAESN) normalizer also covers its z inputs
            mean, std = _f32(st.mean)[..., :dim], np.sqrt(_f32(st.var) + np.float32(1e-8))[..., :dim]
        else:
            mean, std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        spread = rng.choice([0.5, 2.0, 4.0, 3 * s.obs_clip], size=(steps, PARITY_BATCH, 1), p=[0.3, 0.4, 0.2, 0.1])
        return (mean + std * spread * rng.standard_normal((steps, PARITY_BATCH, dim))).astype(np.float32)

    if not getattr(s, "obs_parts", ()):
        return vector(s.obs_dim, stats)
    out = {}
    for name, shape, kind in s.obs_parts:
        if kind == "image":
            out[name] = rng.integers(0, 256, (steps, PARITY_BATCH, *shape), dtype=np.uint8)
        else:
            out[name] = vector(shape[0], stats.get(name) if isinstance(stats, dict) else None)
    return out


# --------------------------------------------------------------------------------------------------
# Export / metadata
# --------------------------------------------------------------------------------------------------


def export_onnx(policy, params: dict | None, path, metadata: dict, *, parity_obs: np.ndarray | None = None,
                steps: int = 64, tol: float = 1e-5, overwrite: bool = False) -> ExportReport:
    """Export a policy's deterministic step to ONNX at ``path`` after checking parity with JAX.

    Args:
        policy: a :class:`~meta_rl.networks.Policy` (with ``params``), or any
            :class:`~meta_rl.agent.Agent` (with ``params=None``; see :func:`export_agent`): its
            ``policy_step`` is traced, with one ONNX input/output pair per leaf of
            ``initial_state`` named after the leaf's path (``h_in``/``h_out``, ``mem.keys_in``...).
            An agent with ``memory_inputs()`` (MFEC, NEC) has ``policy_step_with`` traced instead,
            its memory as inputs (see the module docstring); the caller's ``metadata["memory"]``
            (a dict: how to write it, the run id) joins the derived ``memory`` entry.
        params: ``{"net": flax params, "obs_norm": RunningStats}`` for a Policy; ``None`` for an Agent.
        path: where to write the ``.onnx`` file (parent folders are created).
        metadata: must hold ``control_dt`` (seconds); usually also ``env_id``, ``randomization``
            (a JSON-able summary), ``pd_gains`` where the robot uses PD control, ``obs_layout``
            (default: :func:`obs_layout` of the names), and for agents adapting over trials
            ``episodes_per_trial`` and ``episode_length`` (giving ``max_trial_steps``, the
            denominator of ``trial_time``; needed when the policy reads ``trial_time``). Every key
            is written JSON-encoded into the model's ``metadata_props`` next to the keys derived from
            the agent (``obs_names``, ``action_names``, ``action_scale``/``offset``/``low``/``high``,
            ``policy_kind``, ``core_size``, ``discrete``, ``inputs``, ``outputs``, ``state`` (name,
            input, output, per-row shape, dtype and initial value of every state leaf),
            ``package_version``, ``policy_spec``...). A caller key that contradicts a derived one
            raises ``ValueError``.
        parity_obs: optional recorded observations [T, B, obs_dim] (or [T, obs_dim]) also checked,
            from the initial state, after the random sequence.
        steps: recurrent steps of the random parity sequence (batch of ``PARITY_BATCH``).
        tol: max allowed absolute error of actions and state (and error of a memory agent's ``q`` and
            ``memory_key``: relative above 1, see :class:`ExportReport`).
        overwrite: replace an existing file (otherwise ``FileExistsError``).

    Returns:
        An :class:`ExportReport`.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (checked before and at the write).
        ParityError: onnxruntime and JAX differ by more than ``tol``; nothing is written.
        UnsupportedPrimitive: the step uses a JAX primitive with no ONNX translation (named).
    """
    path = Path(path)
    if tol < 0 or not np.isfinite(tol):
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the .onnx file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")

    agent = _as_agent(policy, params)
    s = agent.policy_spec
    model = build_onnx(policy, params, metadata)
    data = model.SerializeToString()
    layout = json.loads(next(p.value for p in model.metadata_props if p.key == "state"))

    sequences = [_random_sequence(agent, steps)]
    if parity_obs is not None and getattr(s, "obs_parts", ()):
        rec = {}
        for name, shape, kind in s.obs_parts:
            x = np.asarray(parity_obs[name]) if isinstance(parity_obs, dict) and name in parity_obs else None
            if x is None or x.ndim != 2 + len(shape) or tuple(x.shape[2:]) != tuple(shape) or 0 in x.shape[:2]:
                raise ValueError(f"parity_obs[{name!r}] must be [T, B, {', '.join(map(str, shape))}], got "
                                 f"{None if x is None else x.shape}")
            if kind == "vector" and not np.all(np.isfinite(x)):
                raise ValueError(f"parity_obs[{name!r}] holds NaN or inf")
            rec[name] = x
        sequences.append(rec)
    elif parity_obs is not None:
        rec = np.asarray(parity_obs, np.float32)
        if rec.ndim == 2:
            rec = rec[:, None]
        if rec.ndim != 3 or rec.shape[-1] != s.obs_dim or rec.shape[0] < 1 or rec.shape[1] < 1:
            raise ValueError(f"parity_obs must be [T, B, {s.obs_dim}], got shape {np.shape(parity_obs)}")
        if not np.all(np.isfinite(rec)):
            raise ValueError("parity_obs holds NaN or inf")
        sequences.append(rec)
    output_errors: dict[str, float] = {}
    act_err, carry_err, n_steps, n_inputs = _parity(agent, layout, data, sequences, output_errors)
    if not (act_err <= tol and carry_err <= tol and all(e <= tol for e in output_errors.values())):
        others = "".join(f", max {k} error {e:.3g}" for k, e in output_errors.items())
        raise ParityError(
            f"ONNX/JAX parity failed for the {type(agent).__name__} ({s.kind}) policy: max action error {act_err:.3g}, "
            f"max carry error {carry_err:.3g}{others} > tolerance {tol:g} over {n_steps} steps "
            f"({n_inputs} observations); {path} was not written"
        )

    write_atomic(path, data, overwrite=overwrite)  # the normal file mode, never a half-written file

    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    return ExportReport(path=path, kind=s.kind, discrete=s.discrete, max_action_error=act_err,
                        max_carry_error=carry_err, steps=n_steps, inputs_checked=n_inputs, tol=tol,
                        opset=OPSET, metadata=meta, output_errors=output_errors)


def export_agent(agent, path, metadata: dict, **kw) -> ExportReport:
    """Export any :class:`~meta_rl.agent.Agent`'s ``policy_step`` (see :func:`export_onnx`)."""
    return export_onnx(agent, None, path, metadata, **kw)


def read_metadata(path) -> dict:
    """The decoded (JSON) ``metadata_props`` of an exported ONNX policy.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable ONNX model, or a metadata value is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX policy at {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ValueError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not model.graph.node and not model.metadata_props:
        raise ValueError(f"{path} is not a readable ONNX model (empty graph)")
    out = {}
    for p in model.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metadata {p.key!r} is not JSON ({e})") from e
    return out


# --------------------------------------------------------------------------------------------------
# adapt.onnx: a gradient learner's inner step, for robots that adapt with onnxruntime alone
# --------------------------------------------------------------------------------------------------

EPISODE_INPUTS = ("episodes.obs", "episodes.action", "episodes.reward", "episodes.mask")
ADAPT_CONTRACT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class AdaptReport:
    """What :func:`export_adapt` wrote and how closely onnxruntime matched JAX.

    Attributes:
        path: the ONNX file written.
        max_param_error: max |adapted weight (onnxruntime) - adapted weight (JAX)| over every weight
            of every world checked.
        worlds_checked, episodes_checked: the parity batch (worlds x episodes per world).
        tol: the tolerance it was checked against.
        nodes: ONNX nodes in the graph.
        metadata: the decoded metadata written into the model.
    """

    path: Path
    max_param_error: float
    worlds_checked: int
    episodes_checked: int
    tol: float
    nodes: int
    metadata: dict


def _adapt_specs(agent, layout: list[dict], horizon: int):
    import jax
    from jax import export as jax_export

    worlds, episodes = jax_export.symbolic_shape("worlds, episodes")
    s = agent.policy_spec
    f32 = np.dtype(np.float32)
    state = [jax.ShapeDtypeStruct((worlds, *st["shape"]), np.dtype(st["dtype"])) for st in layout]
    eps = [jax.ShapeDtypeStruct((worlds, episodes, horizon, s.obs_dim), f32),
           jax.ShapeDtypeStruct((worlds, episodes, horizon, len(s.action_names)), f32),
           jax.ShapeDtypeStruct((worlds, episodes, horizon), f32),
           jax.ShapeDtypeStruct((worlds, episodes, horizon), f32)]
    return state, eps


def _flat_adapt(agent, adapt_fn, n_state: int):
    import jax

    treedef = jax.tree.structure(agent.initial_state(1))
    keys = [n.split(".", 1)[1] for n in EPISODE_INPUTS]

    def flat(*leaves):
        state = jax.tree.unflatten(treedef, leaves[:n_state])
        new = adapt_fn(state, dict(zip(keys, leaves[n_state:])))
        if jax.tree.structure(new) != treedef:
            raise ValueError(f"the adapt function returned a state of structure {jax.tree.structure(new)}, "
                             f"not the policy's {treedef}")
        return jax.tree.leaves(new)

    return flat


def build_adapt_onnx(agent, adapt_fn, horizon: int, metadata: dict | None = None, *,
                     opset: int = OPSET) -> onnx.ModelProto:
    """The ONNX model of ``adapt_fn(state, episodes) -> state`` (no parity check, nothing written).

    The contract (``adapt.onnx``)::

        inputs   <path>_in        the policy's state inputs, [W, ...] per world (the same names as
                                  ``policy.onnx``'s: its weights, for an AdaptivePolicyAgent)
                 episodes.obs     float32 [W, E, H, obs_dim]   E recorded episodes per world, padded to H steps
                 episodes.action  float32 [W, E, H, act_dim]   the policy's unclipped samples, actuator units
                 episodes.reward  float32 [W, E, H]
                 episodes.mask    float32 [W, E, H]            1 on the steps that happened (a prefix of each row)
        outputs  <path>_out       the adapted state: feed it to policy.onnx's <path>_in

    The metadata holds ``obs_names``, ``action_names``, ``horizon`` (H), ``state`` (without initial
    values: those are the policy's) and the caller's keys (the inner step's settings).
    """
    layout = _state_layout(agent)
    s = agent.policy_spec
    state_specs, ep_specs = _adapt_specs(agent, layout, horizon)
    names = [st["input"] for st in layout] + list(EPISODE_INPUTS)
    out_names = [st["output"] for st in layout]
    t, inputs, outputs = _trace_graph(_flat_adapt(agent, adapt_fn, len(layout)), names, [*state_specs, *ep_specs],
                                      out_names)
    meta = {**(metadata or {}), "contract": "adapt", "adapt_contract_version": ADAPT_CONTRACT_VERSION,
            "agent": type(agent).__name__, "obs_names": list(s.obs_names), "action_names": list(s.action_names),
            "horizon": int(horizon), "inputs": names, "outputs": out_names,
            "state": [{k: v for k, v in st.items() if k != "init"} for st in layout],
            "package_version": _package_version()}
    graph = helper.make_graph(t.nodes, f"proteus_adapt_{type(agent).__name__}", inputs, outputs, t.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="proteus", producer_version=str(meta["package_version"]))
    model.ir_version = min(model.ir_version, 8)
    model.doc_string = (f"Proteus {type(agent).__name__} inner step: policy state + recorded episodes -> adapted "
                        f"state (adapt contract v{ADAPT_CONTRACT_VERSION})")
    helper.set_model_props(model, {k: json.dumps(v, default=_jsonable) for k, v in meta.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def random_episodes(agent, horizon: int, worlds: int, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Episodes [W, E, H, ...] for a parity check: observations around the normalizer's statistics,
    actions sampled from the agent's exploration outputs (or standard normal), rewards standard normal,
    one full-length episode per world and the others of random lengths."""
    import jax
    import jax.numpy as jnp

    s = agent.policy_spec
    rng = np.random.default_rng(seed)
    obs = _random_sequence(agent, worlds * episodes * horizon, seed)[:, 0].reshape(worlds, episodes, horizon, -1)
    A = len(s.action_names)
    if callable(getattr(agent, "exploration", None)):
        state = agent.initial_state(worlds)
        mean, std = jax.vmap(lambda o: agent.exploration(state, o), in_axes=1, out_axes=1)(
            jnp.asarray(obs.reshape(worlds, episodes * horizon, -1)))
        action = np.asarray(mean) + np.asarray(std) * rng.standard_normal(np.shape(mean))
        action = action.reshape(worlds, episodes, horizon, A).astype(np.float32)
    else:
        action = rng.standard_normal((worlds, episodes, horizon, A)).astype(np.float32)
    lengths = rng.integers(1, horizon + 1, (worlds, episodes))
    lengths[:, 0] = horizon
    mask = (np.arange(horizon) < lengths[..., None]).astype(np.float32)
    reward = (rng.standard_normal((worlds, episodes, horizon)) * mask).astype(np.float32)
    return {"obs": obs * mask[..., None], "action": action * mask[..., None], "reward": reward, "mask": mask}


def export_adapt(agent, adapt_fn, path, horizon: int, metadata: dict | None = None, *,
                 episodes: dict | None = None, tol: float = 1e-4, overwrite: bool = False) -> AdaptReport:
    """Export a gradient learner's inner step as ``adapt.onnx`` (:func:`build_adapt_onnx`) after
    checking it against the jitted JAX ``adapt_fn`` from the agent's initial state: on random episodes
    (2 worlds x 3 episodes of mixed lengths, :func:`random_episodes`) and on ``episodes`` when given
    (``{"obs", "action", "reward", "mask"}`` [W, E, H, ...]). Any adapted weight further than ``tol``
    raises :class:`ParityError` and nothing is written."""
    import jax
    import jax.numpy as jnp

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    model = build_adapt_onnx(agent, adapt_fn, horizon, metadata)
    data = model.SerializeToString()
    layout = _state_layout(agent)
    sess = _ort_session(data)
    jitted = jax.jit(adapt_fn)
    checks = [random_episodes(agent, horizon, 2, 3)] + ([episodes] if episodes is not None else [])
    err, worlds, n_eps = 0.0, 0, 0
    for ep in checks:
        W, E = np.shape(ep["obs"])[:2]
        state = agent.initial_state(W)
        want = jax.tree.leaves(jitted(state, {k: jnp.asarray(v) for k, v in ep.items()}))
        feed = {st["input"]: np.asarray(x) for st, x in zip(layout, jax.tree.leaves(state))}
        feed.update({n: np.ascontiguousarray(ep[n.split(".", 1)[1]], np.float32) for n in EPISODE_INPUTS})
        got = sess.run([st["output"] for st in layout], feed)
        for g, w in zip(got, want):
            w = np.asarray(w)
            e = float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0)) if g.shape == w.shape else float("inf")
            err = max(err, e if np.isfinite(e) else float("inf"))
        worlds, n_eps = worlds + W, n_eps + W * E
    if not err <= tol:
        raise ParityError(f"adapt.onnx/JAX parity failed: max adapted-weight error {err:.3g} > tolerance {tol:g} "
                          f"over {worlds} worlds ({n_eps} episodes); {path} was not written")
    write_atomic(path, data, overwrite=overwrite)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    return AdaptReport(path=path, max_param_error=err, worlds_checked=worlds, episodes_checked=n_eps, tol=tol,
                       nodes=len(model.graph.node), metadata=meta)
