"""Fixed-rate controller runtime for exported ONNX policies, with a safety layer.

Runs on the robot computer: imports ``numpy`` and ``onnxruntime`` only (no JAX, no MuJoCo).

One control step (:meth:`Controller.step`)::

    robot.read_observation() ─► watchdog (stale / repeated / backwards timestamp)
        ─► finite check ─► ONNX policy (its state, e.g. the recurrent carry, kept across steps)
        ─► finite check ─► clip to bounds ─► rate limit ─► robot.write_command()

On a stale or non-finite observation, or a non-finite policy output, the controller writes the
configured safe action and keeps the previous recurrent carry (a bad input never poisons the
memory). After more than ``SafetyConfig.max_stale_steps`` such fault steps in a row it writes the
safe action one last time and stops (:class:`ControllerStopped`; :meth:`Controller.run` returns with
``stopped=True``). Every intervention is counted in :class:`SafetyEvents`.
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
    "ContractMismatch", "Controller", "ControllerStopped", "OnnxPolicy", "RobotInterface", "SafetyConfig",
    "SafetyEvents",
]

SPIN_S = 0.0005  # the last stretch before a deadline is busy-waited: time.sleep overshoots by ~0.1 ms


class ContractMismatch(ValueError):
    """The exported policy's contract (metadata) does not match the robot. ``mismatches`` lists each one."""

    def __init__(self, mismatches: Sequence[str], path=None):
        self.mismatches = list(mismatches)
        where = f" ({path})" if path is not None else ""
        super().__init__(f"policy/robot contract mismatch{where}:\n  - " + "\n  - ".join(self.mismatches))


class ControllerStopped(RuntimeError):
    """The controller stopped itself (too many fault steps in a row); the safe action was written last."""


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
            a timestamp equal to or earlier than the previous one is stale too. Default:
            3 × ``control_dt``; ``math.inf`` disables the age check (not the repeat check).
        max_stale_steps: fault steps (stale or non-finite observation, non-finite policy output)
            tolerated in a row; the next one stops the controller.
        safe_action: command written on a fault step (then clipped and rate limited like every
            other); default: the metadata's ``action_offset`` (mid-range; 0 for unbounded
            actuators), or index 0 for a discrete policy.
    """

    action_low: float | Sequence[float] | None = None
    action_high: float | Sequence[float] | None = None
    max_rate: float | Sequence[float] | None = None
    stale_after_s: float | None = None
    max_stale_steps: int = 5
    safe_action: float | Sequence[float] | None = None


@dataclasses.dataclass
class SafetyEvents:
    """Counts of safety interventions (steps, not elements).

    Attributes:
        nan_obs: observations with NaN/inf (safe action written, carry kept).
        nan_action: policy outputs with NaN/inf (safe action written, carry kept).
        stale: stale, repeated or backwards observation timestamps (safe action written, carry kept).
        clipped: commands changed by the clip to ``[action_low, action_high]``.
        rate_limited: commands changed by the rate limit.
        overruns: control steps that missed their deadline (:meth:`Controller.run`).
    """

    nan_obs: int = 0
    nan_action: int = 0
    stale: int = 0
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

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime intra-op threads (1 is fastest for policy-sized graphs).

    Attributes:
        carry_names: the state input names, in graph order.
        state: the metadata's ``state`` entries (path, input, output, shape, dtype, init).
    """

    def __init__(self, path, threads: int = 1):
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
        self.carry_names = [s["input"] for s in state]
        self._carry_out = [s["output"] for s in state]
        self._run_names = [self.output_names[0], *self._carry_out]
        self._init = []
        for s in state:
            dtype = np.dtype(s["dtype"])
            row = np.zeros(s["shape"], dtype) if s["init"] == "zeros" else np.asarray(s["init"], dtype)
            self._init.append((s["input"], row))
        self.obs_dim = shapes["obs"][1] if "obs" in shapes else None
        self.core_size = int(self.metadata.get("core_size", 0) or 0)
        self._run_opts = ort.RunOptions()

    @property
    def recurrent(self) -> bool:
        return bool(self.carry_names)

    def init_carry(self, batch: int = 1) -> dict[str, np.ndarray]:
        """The state at trial start by input name (``{}`` for a stateless policy), from the metadata."""
        return {n: np.ascontiguousarray(np.broadcast_to(row, (batch, *row.shape))) for n, row in self._init}

    def step(self, obs: np.ndarray, carry: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``obs`` [B, obs_dim] float32 (a dict observation: ``{part: [B, ...]}``, fed as ``obs.<part>``),
        state by input name -> (action [B, act_dim] or [B], new state)."""
        feed = {**({f"obs.{k}": v for k, v in obs.items()} if isinstance(obs, dict) else {"obs": obs}), **carry}
        out = self.session.run(self._run_names, feed, self._run_opts)
        return out[0], dict(zip(self.carry_names, out[1:]))


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

    Raises:
        ContractMismatch: every mismatch between the metadata and the robot (observation names and
            count, action names and order, ``control_dt`` beyond 1e-9 relative), at construction.
    """

    def __init__(self, onnx_path, robot: RobotInterface, safety: SafetyConfig = SafetyConfig(), threads: int = 1):
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
        if safety.max_stale_steps < 0:
            raise ValueError(f"SafetyConfig.max_stale_steps must be >= 0, got {safety.max_stale_steps}")

        self.events = SafetyEvents()
        self.last_action: np.ndarray | None = None  # the last command written (the rate limiter's reference)
        self.last_latency_s = 0.0
        self.steps = 0
        self._last_ts: float | None = None
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

    @property
    def stopped(self) -> bool:
        return self._stopped

    def reset(self) -> None:
        """Zero the recurrent state and re-arm the fault counter (e.g. at an episode start).

        The last command is kept as the rate limiter's reference: the actuators have not moved.
        """
        self._carry = self.policy.init_carry(1)
        self._faults_in_row = 0
        self._stopped = False

    def _limit(self, action: np.ndarray) -> np.ndarray:
        """Clip to the bounds, then rate limit against the last command; counts both events."""
        if self.discrete:
            return action
        clipped = np.clip(action, self.low, self.high)
        if np.any(clipped != action):
            self.events.clipped += 1
        if self.max_rate is not None and self.last_action is not None:
            limited = np.clip(clipped, self.last_action - self.max_rate, self.last_action + self.max_rate)
            if np.any(limited != clipped):
                self.events.rate_limited += 1
            clipped = limited
        return clipped.astype(np.float32)

    def _write(self, action: np.ndarray) -> np.ndarray:
        action = self._limit(action)
        self.robot.write_command(action)
        self.last_action = action
        return action

    def _fault(self, reason: str) -> np.ndarray:
        """Write the safe action; stop after more than ``max_stale_steps`` faults in a row."""
        self._faults_in_row += 1
        action = self._write(self.safe_action.copy())
        if self._faults_in_row > self.safety.max_stale_steps:
            self._stopped = True
            raise ControllerStopped(f"stopped after {self._faults_in_row} fault steps in a row (last: {reason}); "
                                    f"safe action {action.tolist()} written")
        return action

    def step(self) -> np.ndarray:
        """One control step: read, guard, infer, clip, rate limit, write. Returns the command written.

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
        obs, ts = self.robot.read_observation()
        now = time.monotonic()
        obs = np.asarray(obs, np.float32).reshape(1, -1)
        if obs.shape[1] != self.obs_dim:
            self._write(self.safe_action.copy())
            self._stopped = True
            raise ControllerStopped(f"robot returned {obs.shape[1]} observation values, policy expects {self.obs_dim}; "
                                    "safe action written")
        faults = []
        try:
            ts = float(ts)
        except (TypeError, ValueError):
            ts = math.nan
        if not math.isfinite(ts) or (self._last_ts is not None and ts <= self._last_ts) or now - ts > self.stale_after_s:
            self.events.stale += 1
            faults.append(f"stale observation (timestamp {ts}, previous {self._last_ts}, now {now:.6f})")
        if math.isfinite(ts):
            self._last_ts = ts if self._last_ts is None else max(self._last_ts, ts)
        if not np.all(np.isfinite(obs)):
            self.events.nan_obs += 1
            faults.append("non-finite observation")
        if faults:
            return self._fault("; ".join(faults))

        action, carry = self.policy.step(obs, self._carry)
        action = action[0]
        if not (np.all(np.isfinite(action)) and all(np.all(np.isfinite(c)) for c in carry.values())):
            self.events.nan_action += 1
            return self._fault("non-finite policy output")
        self._carry = carry
        self._faults_in_row = 0
        return self._write(np.asarray(action, np.int64) if self.discrete else action)

    # ---------------------------------------------------------------------------------------------

    def run(self, num_steps: int, realtime: bool = True) -> dict:
        """Run ``num_steps`` control steps, one every ``control_dt`` (``time.perf_counter`` deadlines).

        A step finishing after its deadline is an overrun: no sleep, the next step starts at once
        and its deadline is one period later (no burst of catch-up steps). With ``realtime=False``
        steps run back to back and a step longer than ``control_dt`` counts as an overrun.

        Returns:
            ``{"steps", "stopped", "stop_reason", "events" (this run's counts), "latency_us":
            {"median", "p99", "max", "mean"} (read to write of each step), "wall_s", "control_dt",
            "rate_hz"}``.
        """
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        dt = self.control_dt
        before = dataclasses.replace(self.events)
        lat = np.empty(num_steps)
        done = 0
        stop_reason = None
        start = time.perf_counter()
        deadline = start + dt
        for _ in range(num_steps):
            t0 = time.perf_counter()
            try:
                self.step()
            except ControllerStopped as e:
                stop_reason = str(e)
                lat[done] = time.perf_counter() - t0
                done += 1
                break
            t1 = time.perf_counter()
            lat[done] = t1 - t0
            done += 1
            if realtime:
                if t1 > deadline:
                    self.events.overruns += 1
                    deadline = t1 + dt
                else:
                    _sleep_until(deadline)
                    deadline += dt
            elif t1 - t0 > dt:
                self.events.overruns += 1
        wall = time.perf_counter() - start
        lat_us = lat[:done] * 1e6
        stats = ({"median": float(np.median(lat_us)), "p99": float(np.percentile(lat_us, 99)),
                  "max": float(lat_us.max()), "mean": float(lat_us.mean())} if done else
                 {"median": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan})
        return {
            "steps": done,
            "stopped": self._stopped,
            "stop_reason": stop_reason,
            "events": dataclasses.asdict(self.events.minus(before)),
            "latency_us": stats,
            "wall_s": wall,
            "control_dt": dt,
            "rate_hz": done / wall if wall > 0 else math.nan,
        }


def _sleep_until(deadline: float) -> None:
    """Sleep until ``time.perf_counter() >= deadline``: ``time.sleep`` for most of it, then spin."""
    remaining = deadline - time.perf_counter()
    if remaining > SPIN_S:
        time.sleep(remaining - SPIN_S)
    while time.perf_counter() < deadline:
        pass
