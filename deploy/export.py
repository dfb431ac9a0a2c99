"""ONNX export of a :class:`~meta_rl.networks.Policy`, with an onnxruntime-vs-JAX parity check.

The ONNX contract (DESIGN.md)::

    inputs   obs   float32 [B, obs_dim]        (raw sensor units; normalization is in the graph)
             h_in  float32 [B, core_size]      (gru, lstm)
             c_in  float32 [B, core_size]      (lstm)
    outputs  action  float32 [B, act_dim]      continuous: deterministic, in actuator units
                     int64   [B]               discrete: argmax of the logits
             h_out float32 [B, core_size]      (gru, lstm)
             c_out float32 [B, core_size]      (lstm)

The graph is written op by op with :mod:`onnx.helper` from the policy's own params, so nothing is
declared twice: observation normalization (``clip((obs - mean) / sqrt(var + 1e-8), ±obs_clip)``),
the tanh torso (``Gemm`` + ``Tanh``), the recurrent core as elementary ops (``Gemm``, ``Split``,
``Add``, ``Mul``, ``Sub``, ``Sigmoid``, ``Tanh``: exactly flax's ``GRUCell``/``LSTMCell`` equations,
gate matrices concatenated so each step is two matrix products), and the action mapping
``offset + scale * clip(mean, -1, 1)`` (or ``ArgMax`` for discrete policies).

flax cell equations reproduced here (``flax.linen.recurrent``)::

    GRUCell   r = σ(x W_ir + b_ir + h W_hr)            z = σ(x W_iz + b_iz + h W_hz)
              n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))      h' = (1 - z) ⊙ n + z ⊙ h
    LSTMCell  carry (c, h); i, f, o = σ(x W_i* + h W_h* + b_h*), g = tanh(x W_ig + h W_hg + b_hg)
              c' = f ⊙ c + i ⊙ g       h' = o ⊙ tanh(c')

Every export runs the parity check *before* anything is written: the onnxruntime session built from
the exact bytes to be written and the jitted JAX ``Policy.deterministic`` step are both stepped
``steps`` times over random observations (and over recorded ``parity_obs`` when given), each side
feeding its own carry forward. Any error above ``tol`` raises :class:`ParityError`.

JAX is imported lazily (only by :func:`export_onnx`), so :func:`read_metadata` works on a robot
computer that has ``onnx`` but no JAX.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:  # pragma: no cover
    from meta_rl.networks import Policy

OPSET = 17
CONTRACT_VERSION = 1
PARITY_BATCH = 4  # observations per parity step (the batch axis is dynamic in the graph)

__all__ = ["OPSET", "ExportReport", "ParityError", "build_onnx", "export_onnx", "obs_layout", "read_metadata"]


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
            how far from a tie the disagreement was.
        max_carry_error: max |h_out - h_jax| (and |c_out - c_jax|); 0.0 for MLP policies.
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


# --------------------------------------------------------------------------------------------------
# Graph construction
# --------------------------------------------------------------------------------------------------


class _Graph:
    """A small builder around ``onnx.helper``: float32 initializers and uniquely named nodes."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype)), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | list[str] | None = None, **attrs) -> Any:
        self._n += 1
        outs = [out] if isinstance(out, str) else (out or [f"{op_type.lower()}_{self._n}"])
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", **attrs))
        return outs[0] if len(outs) == 1 else outs


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _dense(g: _Graph, x: str, p: dict, name: str, out: str | None = None, bias=None) -> str:
    """``x @ kernel + bias`` as one Gemm (bias optional)."""
    w = g.const(f"{name}.kernel", _f32(p["kernel"]))
    b = p.get("bias") if bias is None else bias
    ins = [x, w] if b is None else [x, w, g.const(f"{name}.bias", _f32(b))]
    return g.op("Gemm", ins, out)


def _gru(g: _Graph, x: str, h: str, p: dict, size: int) -> str:
    """flax ``GRUCell``; returns the name of ``h_out``."""
    wi = np.concatenate([_f32(p[k]["kernel"]) for k in ("ir", "iz", "in")], axis=1)
    bi = np.concatenate([_f32(p[k]["bias"]) for k in ("ir", "iz", "in")])
    wh = np.concatenate([_f32(p[k]["kernel"]) for k in ("hr", "hz", "hn")], axis=1)
    bh = np.concatenate([np.zeros(2 * size, np.float32), _f32(p["hn"]["bias"])])  # + 0 is exact
    gi = _dense(g, x, {"kernel": wi, "bias": bi}, "core.input")
    gh = _dense(g, h, {"kernel": wh, "bias": bh}, "core.hidden")
    split = g.const("core.split_rz_n", [2 * size, size], np.int64)
    gi_rz, gi_n = g.op("Split", [gi, split], ["core.gi_rz", "core.gi_n"], axis=1)
    gh_rz, gh_n = g.op("Split", [gh, split], ["core.gh_rz", "core.gh_n"], axis=1)
    rz = g.op("Sigmoid", [g.op("Add", [gi_rz, gh_rz])])
    r, z = g.op("Split", [rz, g.const("core.split_r_z", [size, size], np.int64)], ["core.r", "core.z"], axis=1)
    n = g.op("Tanh", [g.op("Add", [gi_n, g.op("Mul", [r, gh_n])])])
    one_minus_z = g.op("Sub", [g.const("core.one", 1.0), z])
    return g.op("Add", [g.op("Mul", [one_minus_z, n]), g.op("Mul", [z, h])], "h_out")


def _lstm(g: _Graph, x: str, h: str, c: str, p: dict, size: int) -> tuple[str, str]:
    """flax ``LSTMCell`` (carry order (c, h)); returns the names of ``h_out``, ``c_out``."""
    order = ("i", "f", "o", "g")  # sigmoid gates first, so one Sigmoid covers i, f, o
    wi = np.concatenate([_f32(p[f"i{k}"]["kernel"]) for k in order], axis=1)
    wh = np.concatenate([_f32(p[f"h{k}"]["kernel"]) for k in order], axis=1)
    bh = np.concatenate([_f32(p[f"h{k}"]["bias"]) for k in order])
    gi = g.op("Gemm", [x, g.const("core.input.kernel", wi)])
    gh = _dense(g, h, {"kernel": wh, "bias": bh}, "core.hidden")
    pre = g.op("Add", [gi, gh])
    ifo_pre, g_pre = g.op("Split", [pre, g.const("core.split_ifo_g", [3 * size, size], np.int64)],
                          ["core.ifo_pre", "core.g_pre"], axis=1)
    ifo = g.op("Sigmoid", [ifo_pre])
    i, f, o = g.op("Split", [ifo, g.const("core.split_i_f_o", [size] * 3, np.int64)],
                   ["core.i", "core.f", "core.o"], axis=1)
    gg = g.op("Tanh", [g_pre])
    c_out = g.op("Add", [g.op("Mul", [f, c]), g.op("Mul", [i, gg])], "c_out")
    h_out = g.op("Mul", [o, g.op("Tanh", [c_out])], "h_out")
    return h_out, c_out


def obs_layout(obs_names) -> list[dict]:
    """Group consecutive observation names by their prefix before the first ``.``.

    ``("qpos.a", "qpos.b", "qvel.a", "goal")`` -> ``[{"name": "qpos", "start": 0, "stop": 2},
    {"name": "qvel", "start": 2, "stop": 3}, {"name": "goal", "start": 3, "stop": 4}]``.
    """
    layout: list[dict] = []
    for i, n in enumerate(obs_names):
        group = n.split(".", 1)[0]
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


def _metadata(policy: Policy, metadata: dict) -> dict:
    """The full metadata: what the spec defines, then the caller's keys (which must not contradict it)."""
    s = policy.spec
    metadata = dict(metadata or {})
    if "control_dt" not in metadata:
        raise ValueError("export metadata needs 'control_dt' (seconds per control step)")
    dt = float(metadata["control_dt"])
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"export metadata 'control_dt' must be a positive number of seconds, got {metadata['control_dt']!r}")
    derived = {
        "contract_version": CONTRACT_VERSION,
        "policy_kind": s.kind,
        "discrete": s.discrete,
        "core_size": s.core_size if s.recurrent else 0,
        "obs_names": list(s.obs_names),
        "action_names": list(s.action_names),
        "obs_normalized_in_graph": bool(s.normalize_obs),
        "obs_clip": float(s.obs_clip),
        "inputs": ["obs"] + (["h_in"] if s.recurrent else []) + (["c_in"] if s.kind == "lstm" else []),
        "outputs": ["action"] + (["h_out"] if s.recurrent else []) + (["c_out"] if s.kind == "lstm" else []),
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
    for k, v in metadata.items():
        if k in derived:
            given = json.loads(json.dumps(v, default=_jsonable))
            expected = json.loads(json.dumps(derived[k], default=_jsonable))
            if given != expected:
                raise ValueError(f"export metadata {k!r}={given!r} contradicts the policy spec ({expected!r})")
        else:
            out[k] = v
    out["control_dt"] = dt
    return out


def build_onnx(policy: Policy, params: dict, metadata: dict | None = None, *, opset: int = OPSET) -> onnx.ModelProto:
    """The ONNX model of ``policy``'s deterministic step under ``params`` (no parity check, nothing written).

    ``metadata`` must hold ``control_dt``; see :func:`export_onnx` for the keys written.
    """
    s = policy.spec
    meta = _metadata(policy, metadata or {})
    net = params["net"]["params"]
    g = _Graph()
    batch = "batch"
    inputs = [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [batch, s.obs_dim])]

    x = "obs"
    if s.normalize_obs:
        stats = params["obs_norm"]
        mean, var = _f32(stats.mean), _f32(stats.var)
        std = np.sqrt(var + np.float32(1e-8)).astype(np.float32)  # as sim.normalize, in float32
        x = g.op("Sub", [x, g.const("obs_norm.mean", mean)])
        x = g.op("Div", [x, g.const("obs_norm.std", std)])
        x = g.op("Clip", [x, g.const("obs_norm.lo", -s.obs_clip), g.const("obs_norm.hi", s.obs_clip)], "obs_normalized")
    for i in range(len(s.hidden)):
        x = g.op("Tanh", [_dense(g, x, net[f"torso_{i}"], f"torso_{i}")])

    outputs_carry = []
    if s.kind == "gru":
        inputs.append(helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [batch, s.core_size]))
        x = _gru(g, x, "h_in", net["core"], s.core_size)
        outputs_carry.append(helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [batch, s.core_size]))
    elif s.kind == "lstm":
        inputs.append(helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [batch, s.core_size]))
        inputs.append(helper.make_tensor_value_info("c_in", TensorProto.FLOAT, [batch, s.core_size]))
        x, _ = _lstm(g, x, "h_in", "c_in", net["core"], s.core_size)
        outputs_carry.append(helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [batch, s.core_size]))
        outputs_carry.append(helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [batch, s.core_size]))

    if s.discrete:
        logits = _dense(g, x, net["logits"], "logits")
        g.op("ArgMax", [logits], "action", axis=1, keepdims=0)
        action = helper.make_tensor_value_info("action", TensorProto.INT64, [batch])
    else:
        u = g.op("Clip", [_dense(g, x, net["mean"], "mean"), g.const("action.lo", -1.0), g.const("action.hi", 1.0)])
        scaled = g.op("Mul", [g.const("action.scale", s.action_scale), u])
        g.op("Add", [g.const("action.offset", s.action_offset), scaled], "action")
        action = helper.make_tensor_value_info("action", TensorProto.FLOAT, [batch, s.action_dim])

    graph = helper.make_graph(g.nodes, f"proteus_{s.kind}_policy", inputs, [action, *outputs_carry], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="proteus", producer_version=str(meta["package_version"]))
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime builds on robots
    model.doc_string = f"Proteus {s.kind} policy: obs -> deterministic action (ONNX contract v{CONTRACT_VERSION})"
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


def _parity(policy: Policy, params: dict, model_bytes: bytes, sequences: list[np.ndarray]) -> tuple[float, float, int, int]:
    """Step JAX and onnxruntime side by side over each [T, B, obs_dim] sequence from zero carries.

    Returns (max action error, max carry error, steps, observations checked).
    """
    import jax
    import jax.numpy as jnp

    s = policy.spec

    @jax.jit
    def jax_step(params, carry, obs):
        carry, dist, _ = policy.apply(params, carry, obs)
        action = policy.deterministic(dist)
        return carry, action, (dist.logits if s.discrete else action)

    sess = _ort_session(model_bytes)
    act_err = carry_err = 0.0
    steps = inputs = 0
    for seq in sequences:
        T, B = seq.shape[:2]
        j_carry = policy.init_carry(B)
        zeros = np.zeros((B, s.core_size), np.float32)
        o_h, o_c = zeros, zeros
        for t in range(T):
            obs = np.ascontiguousarray(seq[t], np.float32)
            j_carry, j_act, j_extra = jax_step(params, j_carry, jnp.asarray(obs))
            feed = {"obs": obs}
            if s.recurrent:
                feed["h_in"] = o_h
            if s.kind == "lstm":
                feed["c_in"] = o_c
            out = sess.run(None, feed)
            o_act = out[0]
            j_act = np.asarray(j_act)
            if s.discrete:
                logits = np.asarray(j_extra, np.float64)
                rows = np.arange(B)
                gap = logits[rows, j_act.astype(np.int64)] - logits[rows, o_act.astype(np.int64)]
                err = float(np.max(np.abs(gap)))
            else:
                err = float(np.max(np.abs(o_act.astype(np.float64) - j_act))) if o_act.size else 0.0
            if not np.isfinite(err) or o_act.shape[0] != B:
                err = float("inf")
            act_err = max(act_err, err)
            if s.kind == "gru":
                o_h = out[1]
                carry_err = max(carry_err, float(np.max(np.abs(o_h - np.asarray(j_carry["h"])))))
            elif s.kind == "lstm":
                o_h, o_c = out[1], out[2]
                j_c, j_h = j_carry["c"], j_carry["h"]
                carry_err = max(carry_err, float(np.max(np.abs(o_h - np.asarray(j_h)))),
                                float(np.max(np.abs(o_c - np.asarray(j_c)))))
            if not np.isfinite(carry_err):
                carry_err = float("inf")
            steps += 1
            inputs += B
    return act_err, carry_err, steps, inputs


def _random_sequence(policy: Policy, params: dict, steps: int, seed: int = 0) -> np.ndarray:
    """[steps, PARITY_BATCH, obs_dim] observations around the normalizer's statistics: mostly within a
    few standard deviations, some far enough out to hit the normalized-observation clip."""
    s = policy.spec
    rng = np.random.default_rng(seed)
    if s.normalize_obs:
        mean = _f32(params["obs_norm"].mean)
        std = np.sqrt(_f32(params["obs_norm"].var) + np.float32(1e-8))
    else:
        mean, std = np.zeros(s.obs_dim, np.float32), np.ones(s.obs_dim, np.float32)
    spread = rng.choice([0.5, 2.0, 4.0, 3 * s.obs_clip], size=(steps, PARITY_BATCH, 1), p=[0.3, 0.4, 0.2, 0.1])
    return (mean + std * spread * rng.standard_normal((steps, PARITY_BATCH, s.obs_dim))).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Export / metadata
# --------------------------------------------------------------------------------------------------


def export_onnx(policy: Policy, params: dict, path, metadata: dict, *, parity_obs: np.ndarray | None = None,
                steps: int = 64, tol: float = 1e-5, overwrite: bool = False) -> ExportReport:
    """Export ``policy`` under ``params`` to ONNX at ``path`` after checking parity with JAX.

    Args:
        policy: the :class:`~meta_rl.networks.Policy` (its spec defines the graph).
        params: ``{"net": flax params, "obs_norm": RunningStats}``.
        path: where to write the ``.onnx`` file (parent folders are created).
        metadata: must hold ``control_dt`` (seconds); usually also ``env_id``, ``randomization``
            (a JSON-able summary), ``pd_gains`` where the robot uses PD control, and ``obs_layout``
            (default: :func:`obs_layout` of the names). Every key is written JSON-encoded into the
            model's ``metadata_props`` next to the keys derived from the spec (``obs_names``,
            ``action_names``, ``action_scale``/``offset``/``low``/``high``, ``policy_kind``,
            ``core_size``, ``discrete``, ``package_version``, ``policy_spec``...). A caller key that
            contradicts a derived one raises ``ValueError``.
        parity_obs: optional recorded observations [T, B, obs_dim] (or [T, obs_dim]) also checked,
            from zero carries, after the random sequence.
        steps: recurrent steps of the random parity sequence (batch of ``PARITY_BATCH``).
        tol: max allowed absolute error of actions and carries.
        overwrite: replace an existing file (otherwise ``FileExistsError``).

    Returns:
        An :class:`ExportReport`.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (checked before and at the write).
        ParityError: onnxruntime and JAX differ by more than ``tol``; nothing is written.
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

    s = policy.spec
    model = build_onnx(policy, params, metadata)
    data = model.SerializeToString()

    sequences = [_random_sequence(policy, params, steps)]
    if parity_obs is not None:
        rec = np.asarray(parity_obs, np.float32)
        if rec.ndim == 2:
            rec = rec[:, None]
        if rec.ndim != 3 or rec.shape[-1] != s.obs_dim or rec.shape[0] < 1 or rec.shape[1] < 1:
            raise ValueError(f"parity_obs must be [T, B, {s.obs_dim}], got shape {np.shape(parity_obs)}")
        if not np.all(np.isfinite(rec)):
            raise ValueError("parity_obs holds NaN or inf")
        sequences.append(rec)
    act_err, carry_err, n_steps, n_inputs = _parity(policy, params, data, sequences)
    if not (act_err <= tol and carry_err <= tol):
        raise ParityError(
            f"ONNX/JAX parity failed for the {s.kind} policy: max action error {act_err:.3g}, "
            f"max carry error {carry_err:.3g} > tolerance {tol:g} over {n_steps} steps "
            f"({n_inputs} observations); {path} was not written"
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and never clobbers
            except FileExistsError:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
            except OSError:  # a filesystem without hard links
                if path.exists():
                    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    return ExportReport(path=path, kind=s.kind, discrete=s.discrete, max_action_error=act_err,
                        max_carry_error=carry_err, steps=n_steps, inputs_checked=n_inputs, tol=tol,
                        opset=OPSET, metadata=meta)


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
