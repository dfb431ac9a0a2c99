"""Fixed-rate controller runtime for exported ONNX policies, with a safety layer.

Runs on the robot computer: imports ``numpy`` and ``onnxruntime`` only (no JAX, no MuJoCo).

One control step (:meth:`Controller.step`)::

    robot.read_observation() ─► watchdog (missing / stale / repeated / backwards / future timestamp)
        ─► finite check ─► ONNX policy (its state, e.g. the recurrent carry, kept across steps)
        ─► finite check ─► clip to bounds ─► rate limit ─► robot.write_command()

A fault step is one with a stale, future or missing timestamp, a non-finite observation, a
non-finite policy output, or an exception from ``read_observation`` / ``write_command``. On a fault
step the controller writes the configured safe action (best effort: if that write raises too, it is
counted and not retried) and keeps the previous recurrent carry (a bad input never poisons the
memory). After more than ``SafetyConfig.max_stale_steps`` fault steps in a row it writes the safe
action one last time and stops (:class:`ControllerStopped`; :meth:`Controller.run` returns with
``stopped=True``). Every intervention is counted in :class:`SafetyEvents`; no robot-interface
exception escapes :meth:`Controller.step`.

The models themselves are checked at load (:class:`OnnxPolicy`): input and output types and ranks,
state shapes, one action column per actuator; any difference is a :class:`ContractMismatch`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

__all__ = [
    "ContractMismatch", "Controller", "ControllerStopped", "OnnxAdapter", "OnnxPolicy", "RobotInterface", "SafetyConfig",
    "SafetyEvents", "SystemClock",
]

EXPLORATION_OUTPUTS = ("action_mean", "action_std")  # a gradient learner's policy: its Gaussian, unclipped
_any, _sum = np.logical_or.reduce, np.add.reduce  # the ufuncs themselves: no per-call Python wrapper
SPIN_S = 0.0005  # the last stretch before a deadline is busy-waited: time.sleep overshoots by ~0.1 ms


class ContractMismatch(ValueError):
    """The exported policy's contract (metadata) does not match the robot. ``mismatches`` lists each one."""

    def __init__(self, mismatches: Sequence[str], path=None):
        self.mismatches = list(mismatches)
        where = f" ({path})" if path is not None else ""
        super().__init__(f"policy/robot contract mismatch{where}:\n  - " + "\n  - ".join(self.mismatches))


class ControllerStopped(RuntimeError):
    """The controller stopped itself (too many fault steps in a row); the safe action was written last."""


class SystemClock:
    """The controller's clock: ``time.monotonic`` (the clock :class:`RobotInterface` timestamps are
    in), and sleeping until a deadline on it. A simulated clock (same two methods) lets the fixed-rate
    loop and the watchdog run in simulated time (``deploy.bench.SimClock``)."""

    now = staticmethod(time.monotonic)

    @staticmethod
    def sleep_until(deadline: float) -> None:
        """Sleep until ``now() >= deadline``: ``time.sleep`` for most of it, then spin."""
        remaining = deadline - time.monotonic()
        if remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)
        while time.monotonic() < deadline:
            pass


@runtime_checkable
class RobotInterface(Protocol):
    """What the controller needs from a robot (real hardware, or a simulated stand-in).

    Attributes:
        obs_names: names of the observation elements, in the order :meth:`read_observation` returns them.
        action_names: actuator names, in the order :meth:`write_command` expects (joint order).
        control_dt: control period in seconds.
    """

    obs_names: Sequence[str]
    action_names: Sequence[str]
    control_dt: float

    def read_observation(self) -> tuple[np.ndarray, float]:
        """The latest observation [obs_dim] and the ``time.monotonic()`` time (s) it was measured."""
        ...

    def write_command(self, action: np.ndarray) -> None:
        """Send one command: float [act_dim] in actuator units (discrete policies: a 0-d int64 index)."""
        ...


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """Safety layer settings. ``None`` means "derive from the policy's metadata" unless stated.

    Attributes:
        action_low, action_high: per-actuator (or one scalar) bounds every command is clipped to;
            default: the metadata's ``action_low``/``action_high`` (the bounds trained with).
        max_rate: maximum change of each command per control step, in actuator units (scalar or one
            per actuator); ``None`` turns rate limiting off. The first command after construction
            is not rate limited (the actuators' state is unknown).
        stale_after_s: an observation older than this (``time.monotonic() - timestamp``) is stale;
            a timestamp equal to or earlier than the last accepted one, or missing (``None``, NaN),
            is stale too. Default: 3 × ``control_dt``; ``math.inf`` disables the age check (not the
            repeat check).
        future_tolerance_s: a timestamp more than this ahead of the controller's clock is a fault
            (counted as ``future``); it is not used and does not become the reference the next
            timestamps are compared with. Default: ``control_dt``.
        max_stale_steps: fault steps (stale, future or missing timestamp, non-finite observation,
            non-finite policy output, robot-interface exception) tolerated in a row; the next one
            stops the controller.
        safe_action: command written on a fault step (then clipped and rate limited like every
            other); default: the metadata's ``action_offset`` (mid-range; 0 for unbounded
            actuators), or index 0 for a discrete policy.
    """

    action_low: float | Sequence[float] | None = None
    action_high: float | Sequence[float] | None = None
    max_rate: float | Sequence[float] | None = None
    stale_after_s: float | None = None
    future_tolerance_s: float | None = None
    max_stale_steps: int = 5
    safe_action: float | Sequence[float] | None = None


@dataclasses.dataclass
class SafetyEvents:
    """Counts of safety interventions (steps, not elements).

    Attributes:
        nan_obs: observations with NaN/inf (safe action written, carry kept).
        nan_action: policy outputs with NaN/inf (safe action written, carry kept).
        stale: stale, repeated, backwards or missing observation timestamps (safe action written,
            carry kept).
        future: timestamps ahead of the controller's clock by more than
            ``SafetyConfig.future_tolerance_s`` (safe action written, carry kept).
        read_error: exceptions raised by ``read_observation`` or observations that are not an
            array of numbers (safe action written, carry kept).
        write_error: exceptions raised by ``write_command`` (a policy command that failed is
            answered with the safe action; a safe action that failed is counted and not retried).
        clipped: commands changed by the clip to ``[action_low, action_high]``.
        rate_limited: commands changed by the rate limit.
        overruns: control steps that missed their deadline (:meth:`Controller.run`).
    """

    nan_obs: int = 0
    nan_action: int = 0
    stale: int = 0
    future: int = 0
    read_error: int = 0
    write_error: int = 0
    clipped: int = 0
    rate_limited: int = 0
    overruns: int = 0

    def minus(self, other: SafetyEvents) -> SafetyEvents:
        return SafetyEvents(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)})


class OnnxPolicy:
    """An exported policy in onnxruntime: decoded metadata and a pure ``step(obs, carry)``.

    The state inputs and outputs are read from the metadata's ``state`` entries (one per leaf of the
    agent's state, named after its pytree path: ``h_in``/``h_out`` for a GRU, ``latent_in``... for
    other learners), so any agent's export runs without code here knowing its state. Models without
    ``state`` metadata (contract v1) fall back to the ``h_in``/``c_in`` inputs.

    An episodic controller's export (MFEC, NEC: metadata ``memory``) also takes its memory as inputs,
    one for the whole batch: :attr:`memory` (a :class:`deploy.memory.EpisodicMemory`) is fed on every
    step; :class:`deploy.memory.MemoryController` grows it.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime intra-op threads (1 is fastest for policy-sized graphs).
        memory: a memory model's memory (an ``EpisodicMemory`` or its ``.npz`` file); default: the
            ``policy.memory.npz`` beside ``policy.onnx`` when there is one, else an empty memory.
            Refused (``ValueError`` naming the field) when from another run or of another size.

    Attributes:
        carry_names: the state input names, in graph order.
        state: the metadata's ``state`` entries (path, input, output, shape, dtype, init).
        memory_spec: the metadata's ``memory`` entry (``None`` for a model without memory inputs).

    Raises:
        ContractMismatch: the graph breaks the ONNX contract (:func:`_graph_mismatches`): an
            observation input not float32 (uint8 for image parts) or not ``[B, ...]``, an action
            output of the wrong type or rank (``[B, act_dim]`` float32, or ``[B]`` int64 for a
            discrete policy), a column count other than the metadata's ``action_names``, state
            inputs/outputs whose type or shape differs from the metadata's ``state``.
    """

    def __init__(self, path, threads: int = 1, memory=None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX policy at {path}")
        self.path = path
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ValueError(f"{path} is not a loadable ONNX model ({type(e).__name__}: {e})") from e
        raw = self.session.get_modelmeta().custom_metadata_map
        try:
            self.metadata = {k: json.loads(v) for k, v in raw.items()}
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metadata is not JSON ({e})") from e
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        state = self.metadata.get("state")
        if state is None:  # contract v1: h/c carries of core_size
            size = shapes["h_in"][1] if "h_in" in shapes else 0
            state = [{"path": n[:-3], "input": n, "output": n[:-3] + "_out", "shape": [size], "dtype": "float32",
                      "init": "zeros"} for n in ("h_in", "c_in") if n in self.input_names]
        missing = [s["input"] for s in state if s["input"] not in self.input_names]
        missing += [s["output"] for s in state if s["output"] not in self.output_names]
        if missing:
            raise ValueError(f"{path}: the metadata's state names {missing} are not graph inputs/outputs")
        self.state = state
        self.action_name = "action" if "action" in self.output_names else self.output_names[0]
        spec = self.metadata.get("memory")
        self.memory_spec = spec if isinstance(spec, dict) and isinstance(spec.get("inputs"), list) else None
        errs = _graph_mismatches(self.session, self.metadata, state, self.action_name, self.memory_spec)
        if errs:
            raise ContractMismatch(errs, path)
        self.memory = None
        if self.memory_spec is not None:
            self.set_memory(memory)
        elif memory is not None:
            raise ValueError(f"{path} takes no memory inputs (no metadata 'memory'): not an MFEC/NEC export")
        self.carry_names = [s["input"] for s in state]
        self._carry_out = [s["output"] for s in state]
        self._run_names = [self.action_name, *self._carry_out]
        self._init = []
        for s in state:
            dtype = np.dtype(s["dtype"])
            row = np.zeros(s["shape"], dtype) if s["init"] == "zeros" else np.asarray(s["init"], dtype)
            self._init.append((s["input"], row))
        self.explorable = all(n in self.output_names for n in EXPLORATION_OUTPUTS)
        self.latent = _latent_spec(self.metadata.get("latent"), self._init, path)
        self._explore_names = [*self._run_names, *EXPLORATION_OUTPUTS]
        self.obs_dim = shapes["obs"][1] if "obs" in shapes else None
        # a dict observation: one input per part, ``obs.<part>`` [B, ...] (uint8 images, float32 vectors)
        types = {i.name: i.type for i in self.session.get_inputs()}
        self.obs_parts = {n[4:]: (tuple(shapes[n][1:]), np.dtype(np.uint8 if types[n] == "tensor(uint8)" else np.float32))
                          for n in self.input_names if n.startswith("obs.")}
        self.core_size = int(self.metadata.get("core_size", 0) or 0)
        self._run_opts = ort.RunOptions()
        # the session's C++ binding: InferenceSession.run's Python checks (input names, graph capture)
        # cost 3-4 us a step, as much as the policy; the contract check above has validated the inputs
        binding = getattr(self.session, "_sess", None)
        self._run = binding.run if binding is not None and hasattr(binding, "run") else self.session.run

    @property
    def recurrent(self) -> bool:
        return bool(self.carry_names)

    def draw_latent(self, rng: np.random.Generator) -> np.ndarray:
        """A latent ``z ~ N(mu, sigma)`` of the metadata's ``latent`` entry (a MAESN policy's), [1, L]."""
        mu, sigma = self.latent["mu"], np.exp(self.latent["log_sigma"])
        return (mu + sigma * rng.standard_normal(mu.shape)).astype(np.float32)[None]

    def set_memory(self, memory=None) -> None:
        """Feed ``memory`` (see the ``memory`` argument) from the next step on."""
        from deploy.memory import EpisodicMemory, memory_path

        if memory is None:
            beside = memory_path(self.path)
            memory = (EpisodicMemory.load(beside, self.memory_spec) if beside.is_file()
                      else EpisodicMemory.for_model(self.memory_spec))
        elif isinstance(memory, EpisodicMemory):
            memory.check(self.memory_spec)
        else:
            memory = EpisodicMemory.load(memory, self.memory_spec)
        self.memory = memory

    def _feed(self, obs, carry) -> dict:
        feed = {**({f"obs.{k}": v for k, v in obs.items()} if isinstance(obs, dict) else {"obs": obs}), **carry}
        if self.memory is not None:
            feed.update(self.memory.feed())
        return feed

    def init_carry(self, batch: int = 1) -> dict[str, np.ndarray]:
        """The state at trial start by input name (``{}`` for a stateless policy), from the metadata."""
        return {n: np.ascontiguousarray(np.broadcast_to(row, (batch, *row.shape))) for n, row in self._init}

    def step(self, obs: np.ndarray, carry: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``obs`` [B, obs_dim] float32 (a dict observation: ``{part: [B, ...]}``, fed as ``obs.<part>``),
        state by input name -> (action [B, act_dim] or [B], new state)."""
        out = self._run(self._run_names, self._feed(obs, carry), self._run_opts)
        return out[0], dict(zip(self.carry_names, out[1:]))

    def step_explore(self, obs: np.ndarray, carry: dict[str, np.ndarray]):
        """:meth:`step` plus the policy's Gaussian in actuator units before the clip (``action_mean``,
        ``action_std`` [B, act_dim]): ``(action, new state, mean, std)``. Only for policies that export
        them (:attr:`explorable`: MAML/ProMP)."""
        out = self._run(self._explore_names, self._feed(obs, carry), self._run_opts)
        n = len(self.carry_names)
        return out[0], dict(zip(self.carry_names, out[1:1 + n])), out[1 + n], out[2 + n]


_ORT_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)", "int64": "tensor(int64)",
              "int32": "tensor(int32)", "uint8": "tensor(uint8)", "bool": "tensor(bool)"}


def _parts_mismatch(obs, parts: dict) -> str | None:
    """Why a robot's dict observation does not fit the graph's ``obs.<part>`` inputs, or ``None``."""
    if not isinstance(obs, dict):
        return f"robot returned a {type(obs).__name__} observation, the policy takes the parts {sorted(parts)}"
    if set(obs) != set(parts):
        return f"robot returned observation parts {sorted(obs)}, the policy takes {sorted(parts)}"
    for k, (shape, _) in parts.items():
        got = tuple(np.shape(obs[k]))
        if got != shape and got != (1, *shape):
            return f"robot returned observation part {k!r} of shape {list(got)}, the policy expects {list(shape)}"
    return None


def _latent_spec(entry, init: list, path) -> dict | None:
    """The metadata's ``latent`` entry (``input``: the state input holding ``z``; ``mu``,
    ``log_sigma``: the distribution an exploring controller draws each episode's ``z`` from), checked
    against the state; ``None`` when absent."""
    if entry is None:
        return None
    sizes = {n: row.shape for n, row in init}
    try:
        name = str(entry["input"])
        mu, ls = (np.asarray(entry[k], np.float32).reshape(-1) for k in ("mu", "log_sigma"))
    except (KeyError, TypeError, ValueError) as e:
        raise ContractMismatch([f"metadata latent entry is malformed ({e!r})"], path) from None
    if name not in sizes:
        raise ContractMismatch([f"metadata latent input {name!r} is not a state input ({sorted(sizes) or 'none'})"], path)
    if sizes[name] != mu.shape or mu.shape != ls.shape or not (np.all(np.isfinite(mu)) and np.all(np.isfinite(ls))):
        raise ContractMismatch([f"metadata latent: mu {mu.shape} and log_sigma {ls.shape} must be finite and match "
                                f"the state input {name!r} {sizes[name]}"], path)
    return {"input": name, "mu": mu, "log_sigma": ls}


def _shape_str(shape) -> str:
    return "[" + ", ".join("B" if not isinstance(d, int) else str(d) for d in shape) + "]"


def _graph_mismatches(session, meta: dict, state: list[dict], action_name: str,
                      memory: dict | None = None) -> list[str]:
    """Every way the graph's inputs and outputs break the ONNX contract (see :mod:`deploy.export`).

    Symbolic (named) dimensions match any size; fixed ones must be what the contract says (a memory
    input's: exactly the metadata ``memory`` entry's shape).
    """
    errs = []
    inputs = {i.name: i for i in session.get_inputs()}
    memory_in = list(memory["inputs"]) if memory is not None else []
    for name in memory_in:
        arg = inputs.get(name)
        want_type = _ORT_TYPES.get(str((memory.get("dtypes") or {}).get(name)))
        want_shape = list((memory.get("shapes") or {}).get(name, []))
        if arg is None:
            errs.append(f"memory input {name!r} of the metadata is not a graph input")
        elif arg.type != want_type or list(arg.shape) != want_shape:
            errs.append(f"memory input {name!r}: {arg.type} {_shape_str(arg.shape)}, expected {want_type} "
                        f"{_shape_str(want_shape)} (metadata memory)")
    outputs = {o.name: o for o in session.get_outputs()}
    state_in = {s["input"]: s for s in state}
    state_out = {s["output"]: s for s in state}
    obs_dim = len(meta["obs_names"]) if isinstance(meta.get("obs_names"), list) else None
    for name, arg in inputs.items():
        if name in state_in or name in memory_in:
            continue
        if name == "obs":
            want = ("float32",)
        elif name.startswith("obs."):
            want = ("float32", "uint8")
        else:
            errs.append(f"input {name!r} ({arg.type} {_shape_str(arg.shape)}) is neither an observation "
                        f"(obs, obs.<part>) nor a state input of the metadata ({sorted(state_in) or 'none'})")
            continue
        if arg.type not in [_ORT_TYPES[w] for w in want]:
            errs.append(f"input {name!r}: type {arg.type}, expected {' or '.join(_ORT_TYPES[w] for w in want)}")
        if len(arg.shape) < 2:
            errs.append(f"input {name!r}: shape {_shape_str(arg.shape)}, expected [B, ...] (a batch axis, then the values)")
        elif name == "obs" and (len(arg.shape) != 2 or (obs_dim is not None and isinstance(arg.shape[1], int)
                                                        and arg.shape[1] != obs_dim)):
            errs.append(f"input 'obs': shape {_shape_str(arg.shape)}, expected [B, {obs_dim}] "
                        "(one column per metadata obs_names)")
    act = outputs[action_name]
    discrete = bool(meta.get("discrete", False))
    n = len(meta["action_names"]) if isinstance(meta.get("action_names"), list) else None
    if discrete:
        if act.type != _ORT_TYPES["int64"]:
            errs.append(f"output {action_name!r}: type {act.type}, expected tensor(int64) (a discrete policy's index)")
        if len(act.shape) != 1:
            errs.append(f"output {action_name!r}: shape {_shape_str(act.shape)}, expected [B] (one index per row)")
    else:
        if act.type != _ORT_TYPES["float32"]:
            errs.append(f"output {action_name!r}: type {act.type}, expected tensor(float)")
        if len(act.shape) != 2:
            errs.append(f"output {action_name!r}: shape {_shape_str(act.shape)}, expected [B, {n if n is not None else 'act_dim'}]")
        elif n is not None and isinstance(act.shape[1], int) and act.shape[1] != n:
            errs.append(f"output {action_name!r}: shape {_shape_str(act.shape)}, expected [B, {n}] "
                        f"(one column per actuator: metadata action_names has {n})")
    for names, args, what in ((state_in, inputs, "input"), (state_out, outputs, "output")):
        for name, s in names.items():
            arg = args[name]
            want_type = _ORT_TYPES.get(str(np.dtype(s["dtype"])))
            if arg.type != want_type:
                errs.append(f"state {what} {name!r}: type {arg.type}, expected {want_type} (metadata state dtype)")
            want_shape = [None, *s["shape"]]
            if len(arg.shape) != len(want_shape) or any(isinstance(a, int) and a != b for a, b in
                                                        zip(arg.shape[1:], want_shape[1:])):
                errs.append(f"state {what} {name!r}: shape {_shape_str(arg.shape)}, expected "
                            f"{_shape_str(want_shape)} (metadata state shape)")
    return errs


def _names_mismatch(what: str, robot: Sequence[str], policy: Sequence[str]) -> list[str]:
    robot, policy = [str(n) for n in robot], [str(n) for n in policy]
    if robot == policy:
        return []
    out = []
    if len(robot) != len(policy):
        out.append(f"{what} count: robot has {len(robot)}, policy expects {len(policy)}")
    missing = [n for n in policy if n not in robot]
    extra = [n for n in robot if n not in policy]
    if missing:
        out.append(f"{what} names the policy expects but the robot lacks: {missing}")
    if extra:
        out.append(f"{what} names the robot has but the policy does not expect: {extra}")
    if not missing and not extra:
        i = next(i for i, (a, b) in enumerate(zip(robot, policy)) if a != b)
        out.append(f"{what} order differs from index {i}: robot {robot[i]!r}, policy {policy[i]!r}")
    return out


def _per_action(value, n: int, what: str, dtype=np.float64) -> np.ndarray:
    a = np.asarray(value, dtype)
    if a.ndim == 0:
        a = np.full(n, a, dtype)
    if a.shape != (n,):
        raise ValueError(f"SafetyConfig.{what} needs a scalar or {n} values, got shape {a.shape}")
    return a


class Controller:
    """Runs an exported policy on a :class:`RobotInterface` at a fixed rate, behind a safety layer.

    Args:
        onnx_path: policy exported by :func:`deploy.export.export_onnx`.
        robot: the robot (or stand-in); its names and ``control_dt`` must match the policy's metadata.
        safety: :class:`SafetyConfig`.
        threads: onnxruntime intra-op threads.
        clock: what timestamps are judged by and the loop is paced with (``now()``,
            ``sleep_until(t)``); default :class:`SystemClock` (``time.monotonic``).
        explore: sample each action from the policy's Gaussian (``action_mean + action_std * noise``,
            then the safety clip) instead of taking its mode: how a robot gathers the episodes a
            gradient learner adapts on (:mod:`deploy.episodes`). Only for policies with the
            exploration outputs (MAML/ProMP/MAESN exports). A MAESN policy also draws its latent
            once per episode (:meth:`begin_episode`).
        seed: seeds the exploration noise.

    After every step, :attr:`last_obs` and :attr:`last_sample` hold the observation the policy read and
    the action it chose (the unclipped sample when exploring); both are ``None`` after a fault step.

    Raises:
        ContractMismatch: every mismatch between the metadata and the robot (observation names and
            count, action names and order, ``control_dt`` beyond 1e-9 relative), or between the
            graph and the contract (:class:`OnnxPolicy`), at construction.
    """

    def __init__(self, onnx_path, robot: RobotInterface, safety: SafetyConfig = SafetyConfig(), threads: int = 1,
                 clock=None, explore: bool = False, seed: int | None = None):
        if not isinstance(robot, RobotInterface):
            raise TypeError(f"robot must provide {RobotInterface.__name__} (obs_names, action_names, control_dt, "
                            f"read_observation, write_command); got {type(robot).__name__}")
        self.policy = OnnxPolicy(onnx_path, threads=threads)
        self.robot = robot
        self.safety = safety
        self.metadata = meta = self.policy.metadata
        self._check_contract()
        self.control_dt = float(meta["control_dt"])
        self.discrete = bool(meta["discrete"])
        self.obs_dim = len(meta["obs_names"])
        n = self.action_dim = len(meta["action_names"])

        if self.discrete:
            if safety.max_rate is not None or safety.action_low is not None or safety.action_high is not None:
                raise ValueError("SafetyConfig bounds and max_rate apply to continuous policies only")
            self.safe_action = np.asarray(0 if safety.safe_action is None else int(safety.safe_action), np.int64)
            if not 0 <= int(self.safe_action) < n:
                raise ValueError(f"SafetyConfig.safe_action {int(self.safe_action)} is not an action index < {n}")
            self.low = self.high = self.max_rate = None
        else:
            low = meta.get("action_low") if safety.action_low is None else safety.action_low
            high = meta.get("action_high") if safety.action_high is None else safety.action_high
            self.low = _per_action(-math.inf if low is None else low, n, "action_low").astype(np.float32)
            self.high = _per_action(math.inf if high is None else high, n, "action_high").astype(np.float32)
            if np.any(self.low > self.high) or np.any(np.isnan(self.low)) or np.any(np.isnan(self.high)):
                raise ValueError(f"SafetyConfig: action_low {self.low} must be <= action_high {self.high}")
            safe = meta.get("action_offset", 0.0) if safety.safe_action is None else safety.safe_action
            self.safe_action = _per_action(safe, n, "safe_action").astype(np.float32)
            if not np.all(np.isfinite(self.safe_action)) or np.any(self.safe_action < self.low) or np.any(self.safe_action > self.high):
                raise ValueError(f"SafetyConfig.safe_action {self.safe_action} must be finite and within "
                                 f"[{self.low}, {self.high}]")
            self.max_rate = None
            if safety.max_rate is not None:
                self.max_rate = _per_action(safety.max_rate, n, "max_rate").astype(np.float32)
                if np.any(~(self.max_rate > 0)):
                    raise ValueError(f"SafetyConfig.max_rate must be > 0, got {self.max_rate}")
        self.stale_after_s = 3.0 * self.control_dt if safety.stale_after_s is None else float(safety.stale_after_s)
        if not self.stale_after_s > 0:
            raise ValueError(f"SafetyConfig.stale_after_s must be > 0, got {self.stale_after_s}")
        self.future_tolerance_s = (self.control_dt if safety.future_tolerance_s is None
                                   else float(safety.future_tolerance_s))
        if not self.future_tolerance_s >= 0:
            raise ValueError(f"SafetyConfig.future_tolerance_s must be >= 0, got {self.future_tolerance_s}")
        if safety.max_stale_steps < 0:
            raise ValueError(f"SafetyConfig.max_stale_steps must be >= 0, got {safety.max_stale_steps}")
        self.max_faults = int(safety.max_stale_steps)
        self.clock = SystemClock() if clock is None else clock
        self.explore = bool(explore)
        if self.explore and not self.policy.explorable:
            raise ValueError(f"{self.policy.path} has no exploration outputs ({', '.join(EXPLORATION_OUTPUTS)}): "
                             "only the policies of gradient learners (maml, promp, maesn) can explore")
        self._rng = np.random.default_rng(seed)
        self.last_obs: np.ndarray | None = None
        self.last_sample: np.ndarray | None = None
        self.episode_latent: np.ndarray | None = None  # the latent z of the episode in progress (MAESN)

        self.events = SafetyEvents()
        self.last_action: np.ndarray | None = None  # the last command written (the rate limiter's reference)
        self._window()
        self.last_error: str | None = None  # the last robot-interface exception, as text
        self.last_latency_s = 0.0
        self.steps = 0
        self.reset()

    # ---------------------------------------------------------------------------------------------

    def _check_contract(self) -> None:
        meta, robot = self.metadata, self.robot
        required = ("obs_names", "action_names", "control_dt", "discrete", "policy_kind")
        missing = [k for k in required if k not in meta]
        if missing:
            raise ContractMismatch([f"metadata lacks {missing} (not exported by deploy.export?)"], self.policy.path)
        errs = _names_mismatch("observation", robot.obs_names, meta["obs_names"])
        errs += _names_mismatch("action (joint order)", robot.action_names, meta["action_names"])
        p_dt, r_dt = float(meta["control_dt"]), float(robot.control_dt)
        if not abs(r_dt - p_dt) <= 1e-9 * abs(p_dt):
            errs.append(f"control_dt: robot {r_dt!r} s, policy trained at {p_dt!r} s")
        if self.policy.obs_dim is not None and self.policy.obs_dim != len(meta["obs_names"]):
            errs.append(f"graph input obs has {self.policy.obs_dim} columns but metadata names {len(meta['obs_names'])}")
        if errs:
            raise ContractMismatch(errs, self.policy.path)

    @property
    def carry(self) -> dict[str, np.ndarray]:
        """A copy of the policy's state by input name (``h_in``, ``c_in``, ...; empty for MLP policies)."""
        return {k: v.copy() for k, v in self._carry.items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace the policy's state (e.g. with the adapted weights :class:`OnnxAdapter` returns): the
        same input names, per-row shapes and dtypes as :attr:`carry`, finite. Kept until the next
        :meth:`reset` (which returns to the metadata's initial state: a new world)."""
        want = self.policy.init_carry(1)
        if set(state) != set(want):
            raise ValueError(f"state names {sorted(state)} differ from the policy's {sorted(want)}")
        new = {}
        for name, row in want.items():
            x = np.asarray(state[name])
            if x.shape != row.shape or x.dtype != row.dtype:
                raise ValueError(f"state {name!r}: {x.dtype} {x.shape}, expected {row.dtype} {row.shape}")
            if not _finite(x):
                raise ValueError(f"state {name!r} holds NaN or inf")
            new[name] = np.ascontiguousarray(x)
        self._carry = new

    @property
    def stopped(self) -> bool:
        return self._stopped

    def reset(self) -> None:
        """Zero the recurrent state, forget the last timestamp and re-arm the fault counter (e.g. at
        an episode start).

        The last command is kept as the rate limiter's reference: the actuators have not moved.
        """
        self._carry = self.policy.init_carry(1)
        self._faults_in_row = 0
        self._stopped = False
        self._last_ts: float | None = None
        self.begin_episode()

    def begin_episode(self) -> None:
        """Mark an episode's start. A policy with a latent (a MAESN export, metadata ``latent``) acts
        with the latent's mean ``z = mu``; an exploring controller instead draws ``z ~ N(mu, sigma)``
        once per episode, MAESN's structured exploration (:attr:`episode_latent`, what
        :class:`~deploy.episodes.EpisodeRecorder` records per episode)."""
        lat = self.policy.latent
        if lat is None:
            return
        z = self.policy.draw_latent(self._rng) if self.explore else lat["mu"][None].astype(np.float32)
        self._carry = {**self._carry, lat["input"]: z}
        self.episode_latent = z[0].copy()

    def _limit(self, action: np.ndarray) -> np.ndarray:
        """Clip to the bounds, then rate limit against the last command; counts both events.
        Returns a new float32 array (the robot may keep it).

        One clip to ``[lo, hi]``, the bounds intersected with the rate window around the last command
        (:meth:`_window`, kept from the last write): the same result as clipping twice, since the last
        command lies inside the bounds. Which limit acted is worked out only when one did."""
        if self.discrete:
            return np.array(action, np.int64)
        out = np.minimum(np.maximum(action, self._lo), self._hi, dtype=np.float32)
        if _any(out != action, axis=None):
            clipped = np.minimum(np.maximum(action, self.low), self.high, dtype=np.float32)
            if _any(clipped != action, axis=None):
                self.events.clipped += 1
            if _any(out != clipped, axis=None):
                self.events.rate_limited += 1
        return out

    def _window(self) -> None:
        """``[_lo, _hi]``: the bounds, narrowed to ``last_action +- max_rate`` when rate limiting."""
        if self.discrete:
            return
        if self.max_rate is None or self.last_action is None:
            self._lo, self._hi = self.low, self.high
        else:
            self._lo = np.maximum(self.low, self.last_action - self.max_rate)
            self._hi = np.minimum(self.high, self.last_action + self.max_rate)

    def _send(self, command: np.ndarray) -> bool:
        """``robot.write_command(command)``; on an exception count it and return False (the rate
        limiter's reference stays the last command that was written)."""
        try:
            self.robot.write_command(command)
        except Exception as e:  # noqa: BLE001 (any driver error is answered the same way)
            self.events.write_error += 1
            self.last_error = f"write_command raised {type(e).__name__}: {e}"
            return False
        self.last_action = command
        self._window()
        return True

    def _fault(self, reason: str) -> np.ndarray:
        """Write the safe action (best effort, once); stop after more than ``max_stale_steps`` faults in a row."""
        self._faults_in_row += 1
        action = self._limit(self.safe_action)
        written = self._send(action)
        if not written:
            reason = f"{reason}; writing the safe action failed too ({self.last_error})"
        if self._faults_in_row > self.max_faults:
            self._stopped = True
            raise ControllerStopped(f"stopped after {self._faults_in_row} fault steps in a row (last: {reason}); "
                                    f"safe action {action.tolist()} {'written' if written else 'not written'}")
        return action

    def step(self) -> np.ndarray:
        """One control step: read, guard, infer, clip, rate limit, write. Returns the command written
        (attempted: a failed write is counted in ``events.write_error``).

        No exception of the robot's ``read_observation``/``write_command`` escapes: each is a fault
        step (counted, answered with the safe action).

        Raises:
            ControllerStopped: this step was one fault too many (the safe action was written), the
                controller had stopped before (nothing is written), or the robot returned an
                observation of the wrong size (safe action written).
        """
        if self._stopped:
            raise ControllerStopped("controller is stopped; call reset() to re-arm it")
        t0 = time.perf_counter()
        try:
            return self._step()
        finally:
            self.last_latency_s = time.perf_counter() - t0
            self.steps += 1

    def _step(self) -> np.ndarray:
        self.last_obs = self.last_sample = None
        parts = self.policy.obs_parts
        try:
            obs, ts = self.robot.read_observation()
            if parts:  # a dict observation (a camera image and vectors): each part as the graph takes it
                bad = _parts_mismatch(obs, parts)
                obs = None if bad else {k: np.asarray(obs[k], dt).reshape(1, *shape) for k, (shape, dt) in parts.items()}
            else:
                obs = np.asarray(obs, np.float32).reshape(1, -1)
        except Exception as e:  # noqa: BLE001 (any driver error is answered the same way)
            self.events.read_error += 1
            self.last_error = f"read_observation raised {type(e).__name__}: {e}"
            return self._fault(self.last_error)
        now = self.clock.now()
        if obs is None or (not parts and obs.shape[1] != self.obs_dim):
            action = self._limit(self.safe_action)
            self._send(action)
            self._stopped = True
            got = bad if obs is None else f"robot returned {obs.shape[1]} observation values, policy expects {self.obs_dim}"
            raise ControllerStopped(f"{got}; safe action written")
        fault = None
        ts = _timestamp(ts)
        last = self._last_ts
        if ts != ts:  # NaN: missing or not a number
            self.events.stale += 1
            fault = "missing observation timestamp"
        elif ts > now + self.future_tolerance_s:
            self.events.future += 1
            fault = f"observation timestamp {ts:.6f} is {ts - now:.6g} s ahead of the clock ({now:.6f})"
        else:
            if (last is not None and ts <= last) or now - ts > self.stale_after_s:
                self.events.stale += 1
                fault = f"stale observation (timestamp {ts:.6f}, previous {last}, now {now:.6f})"
            if last is None or ts > last:
                self._last_ts = ts
        if not (all(_finite(v) for v in obs.values() if v.dtype == np.float32) if parts else _finite(obs)):
            self.events.nan_obs += 1
            fault = "non-finite observation" if fault is None else f"{fault}; non-finite observation"
        if fault is not None:
            return self._fault(fault)

        if self.explore:
            _, carry, mean, std = self.policy.step_explore(obs, self._carry)
            action = (mean[0] + std[0] * self._rng.standard_normal(mean.shape[1])).astype(np.float32)
        else:
            action, carry = self.policy.step(obs, self._carry)
            action = action[0]
        if not _finite(action) or not all(_finite(c) for c in carry.values()):
            self.events.nan_action += 1
            return self._fault("non-finite policy output")
        command = self._limit(action)
        if not self._send(command):
            return self._fault(self.last_error)
        self._carry = carry
        self._faults_in_row = 0
        self.last_obs, self.last_sample = ({k: v[0] for k, v in obs.items()} if parts else obs[0]), action
        return command

    # ---------------------------------------------------------------------------------------------

    def run(self, num_steps: int, realtime: bool = True, timings: bool = False) -> dict:
        """Run ``num_steps`` control steps, one every ``control_dt`` (deadlines on :attr:`clock`).

        A step finishing after its deadline is an overrun: no sleep, the next step starts at once
        and its deadline is one period later (no burst of catch-up steps). With ``realtime=False``
        steps run back to back and a step longer than ``control_dt`` counts as an overrun.

        Returns:
            ``{"steps", "stopped", "stop_reason", "events" (this run's counts), "latency_us":
            {"median", "p99", "max", "mean"} (read to write of each step), "jitter_us": {"median",
            "p99", "max", "mean"} (how late each step started against its schedule; NaN without
            ``realtime``), "wall_s", "control_dt", "rate_hz"}``; with ``timings`` also the raw
            ``latency_s`` and ``lateness_s`` arrays (one per step).
        """
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        dt = self.control_dt
        now, sleep_until = self.clock.now, self.clock.sleep_until
        before = dataclasses.replace(self.events)
        lat = np.empty(num_steps)
        late = np.full(num_steps, math.nan)
        done = 0
        stop_reason = None
        start = now()
        deadline = start + dt
        for _ in range(num_steps):
            t0 = now()
            if realtime:
                late[done] = t0 - (deadline - dt)
            try:
                self.step()
            except ControllerStopped as e:
                stop_reason = str(e)
                lat[done] = now() - t0
                done += 1
                break
            t1 = now()
            lat[done] = t1 - t0
            done += 1
            if realtime:
                if t1 > deadline:
                    self.events.overruns += 1
                    deadline = t1 + dt
                else:
                    sleep_until(deadline)
                    deadline += dt
            elif t1 - t0 > dt:
                self.events.overruns += 1
        wall = now() - start
        out = {
            "steps": done,
            "stopped": self._stopped,
            "stop_reason": stop_reason,
            "events": dataclasses.asdict(self.events.minus(before)),
            "latency_us": _stats_us(lat[:done]),
            "jitter_us": _stats_us(late[:done]),
            "wall_s": wall,
            "control_dt": dt,
            "rate_hz": done / wall if wall > 0 else math.nan,
        }
        if timings:
            out["latency_s"], out["lateness_s"] = lat[:done], late[:done]
        return out


def _finite(x: np.ndarray) -> bool:
    """Every value of ``x`` is finite. For a short vector, Python's float sum of its list is 4x faster than
    a NumPy reduction (a NaN or an inf, or inf - inf, makes the sum non-finite; float32 values cannot
    overflow it)."""
    if x.size <= 256:
        return math.isfinite(sum(x.ravel().tolist()))
    return math.isfinite(_sum(x, axis=None, dtype=np.float64))


def _stats_us(seconds: np.ndarray) -> dict[str, float]:
    """``{"median", "p99", "max", "mean"}`` in µs (NaN when empty or not measured)."""
    if not len(seconds) or np.isnan(seconds).all():
        return {"median": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    us = seconds * 1e6
    return {"median": float(np.median(us)), "p99": float(np.percentile(us, 99)), "max": float(us.max()),
            "mean": float(us.mean())}


def _timestamp(ts) -> float:
    """A reading's timestamp as a float; NaN when missing (``None``) or not a number."""
    try:
        return float(ts)
    except (TypeError, ValueError):
        return math.nan


class OnnxAdapter:
    """A gradient learner's ``adapt.onnx`` in onnxruntime: the policy's state (its weights) and one
    world's recorded episodes in, the adapted state out, ready for :meth:`Controller.set_state`.

    Args:
        path: the ``adapt.onnx`` written by ``proteus export`` beside ``policy.onnx``.

    Attributes:
        metadata: the decoded metadata (``obs_names``, ``action_names``, ``horizon``, ``state``...).
    """

    def __init__(self, path, threads: int = 1):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no adapt.onnx at {path}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ValueError(f"{path} is not a loadable ONNX model ({type(e).__name__}: {e})") from e
        self.metadata = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()}
        if self.metadata.get("contract") != "adapt":
            raise ValueError(f"{path} is not an adapt.onnx (its metadata has no adapt contract)")
        self.path = path
        self.horizon = int(self.metadata["horizon"])
        self._state = self.metadata["state"]

    def __call__(self, state: dict[str, np.ndarray], episodes: dict) -> dict[str, np.ndarray]:
        """``state``: the policy's state by input name, rows [1, ...] (``Controller.carry``);
        ``episodes``: ``obs``, ``action``, ``reward``, ``mask`` [E, H', ...] of one world (an
        :class:`~deploy.episodes.EpisodeRecorder`'s ``arrays()``, or :func:`~deploy.episodes.load_episodes`,
        whose names are then checked). Returns the adapted state by input name."""
        from deploy.episodes import check_episodes, pad_to

        if "obs_names" in episodes:
            check_episodes(episodes, self.metadata["obs_names"], self.metadata["action_names"], self.horizon)
        ep = pad_to(episodes, self.horizon)
        feed = {s["input"]: np.asarray(state[s["input"]]) for s in self._state}
        feed.update({f"episodes.{k}": v[None] for k, v in ep.items()})
        out = self.session.run([s["output"] for s in self._state], feed)
        return {s["input"]: x for s, x in zip(self._state, out)}
