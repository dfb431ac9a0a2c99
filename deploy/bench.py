"""``bench export``: per-control-step latency of exported policies in onnxruntime vs the jitted JAX step.

Robot-sized policies (17 observations, 6 actuators): an MLP with a (64, 64) tanh torso and a GRU
(the same torso, a 128-wide core). Each is exported with :func:`deploy.export.export_onnx` (parity
checked), then stepped ``steps`` times at batch 1 with its carry fed forward:

- onnxruntime: :class:`deploy.runtime.OnnxPolicy` (the controller's own call), 1 intra-op thread;
- JAX: ``jax.jit`` of ``Policy.apply`` + ``Policy.deterministic``, ``block_until_ready`` every step;
- the whole :meth:`deploy.runtime.Controller.step` (read, guards, inference, clip, rate limit,
  write) on an in-memory robot, to show the safety layer's overhead.

Targets (median, onnxruntime): MLP < 20 µs, GRU < 50 µs.

``bench deploy`` (:func:`bench_deploy`): the controller soak (:func:`soak`: :class:`FaultyRobot`
injects faults at random around the MuJoCo stand-in; every command is checked, every fault must be
counted, the controller must stop exactly where the thresholds say) in real time at 500 Hz, with
the loop's jitter and overruns, then ``Controller.step`` against raw onnxruntime inference.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from proteus.console import make_console
from proteus.report import BenchRow, write_json

console = make_console()

OBS_DIM, ACT_DIM = 17, 6
TARGETS_US = {"mlp": 20.0, "gru": 50.0}


def _stats_us(seconds: np.ndarray) -> tuple[float, float]:
    us = np.asarray(seconds) * 1e6
    return float(np.median(us)), float(np.percentile(us, 99))


def _time_steps(step, n: int, warmup: int) -> np.ndarray:
    for i in range(warmup):
        step(i)
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        step(i)
        out[i] = time.perf_counter() - t
    return out


def _ort_stepper(policy, obs_seq):
    """One onnxruntime step per call, carry fed forward (as the controller calls it)."""
    carry = policy.init_carry(1)

    def step(i):
        nonlocal carry
        _, carry = policy.step(obs_seq[i % len(obs_seq)], carry)

    return step


def _jax_stepper(policy, params, obs_seq):
    """One jitted JAX step per call (``Policy.apply`` + ``deterministic``), blocked on, carry fed forward."""
    import jax

    @jax.jit
    def fn(params, carry, obs):
        carry, dist, _ = policy.apply(params, carry, obs)
        return carry, policy.deterministic(dist)

    carry = policy.init_carry(1)

    def step(i):
        nonlocal carry
        carry, action = fn(params, carry, obs_seq[i % len(obs_seq)])
        jax.block_until_ready(action)

    return step


class _MemoryRobot:
    """A robot that replays fixed observations and discards commands (for Controller.step timing)."""

    def __init__(self, obs_names, action_names, control_dt, obs):
        self.obs_names, self.action_names, self.control_dt = obs_names, action_names, control_dt
        self._obs, self._i = obs, 0

    def read_observation(self):
        self._i += 1
        return self._obs[self._i % len(self._obs)], time.monotonic()

    def write_command(self, action):
        pass


def bench_export(json_path: Path | None = None, steps: int = 2000, warmup: int = 200) -> list[BenchRow]:
    """Time onnxruntime vs JAX per control step for an MLP and a GRU policy; print a table; return rows.

    Rows (value = onnxruntime, baseline = JAX jitted step, µs): median and p99 per policy, then the
    full ``Controller.step`` median against the bare onnxruntime median.
    """
    import jax
    import jax.numpy as jnp

    from deploy.export import export_onnx
    from deploy.runtime import Controller, OnnxPolicy, SafetyConfig
    from meta_rl.networks import Policy, PolicySpec
    from sim.normalize import RunningStats

    if steps < 10 or warmup < 0:
        raise ValueError(f"steps must be >= 10 and warmup >= 0, got {steps}, {warmup}")
    obs_names = tuple(f"obs{i}" for i in range(OBS_DIM))
    action_names = tuple(f"joint{i}" for i in range(ACT_DIM))
    dt = 0.02
    rng = np.random.default_rng(0)
    obs_seq = rng.standard_normal((steps + warmup, 1, OBS_DIM)).astype(np.float32)
    rows: list[BenchRow] = []
    results = {}
    table = Table(title=f"policy step latency, batch 1, 1 thread, {steps} steps (µs)")
    for col in ("policy", "onnxruntime median", "p99", "JAX jit median", "p99", "JAX / ORT",
                "Controller.step median", "target", ""):
        table.add_column(col)

    with tempfile.TemporaryDirectory() as tmp:
        for kind, label in (("mlp", "MLP (64, 64)"), ("gru", "GRU (64, 64) + core 128")):
            spec = PolicySpec(kind=kind, obs_names=obs_names, action_names=action_names, discrete=False,
                              hidden=(64, 64), core_size=128, action_low=(-1.0,) * ACT_DIM, action_high=(1.0,) * ACT_DIM)
            policy = Policy(spec)
            params = policy.init(jax.random.key(0))
            params["obs_norm"] = RunningStats(jnp.asarray(rng.standard_normal(OBS_DIM), jnp.float32),
                                              jnp.asarray(rng.uniform(0.5, 2.0, OBS_DIM), jnp.float32), jnp.float32(1e4))
            with console.status(f"exporting the {label} policy (parity check)"):
                path = Path(tmp) / f"{kind}.onnx"
                export_onnx(policy, params, path, {"control_dt": dt, "env_id": "bench"})

            with console.status(f"timing {label}: onnxruntime"):
                ort_t = _time_steps(_ort_stepper(OnnxPolicy(path, threads=1), obs_seq), steps, warmup)
            with console.status(f"timing {label}: JAX jit"):
                jax_t = _time_steps(_jax_stepper(policy, params, obs_seq), steps, warmup)
            with console.status(f"timing {label}: Controller.step"):
                robot = _MemoryRobot(obs_names, action_names, dt, obs_seq[:, 0])
                ctl = Controller(path, robot, SafetyConfig(max_rate=0.5, stale_after_s=1.0), threads=1)
                ctl_t = _time_steps(lambda _, ctl=ctl: ctl.step(), steps, warmup)

            o_med, o_p99 = _stats_us(ort_t)
            j_med, j_p99 = _stats_us(jax_t)
            c_med, _ = _stats_us(ctl_t)
            ok = o_med < TARGETS_US[kind]
            results[kind] = {"onnxruntime_median_us": o_med, "onnxruntime_p99_us": o_p99, "jax_median_us": j_med,
                             "jax_p99_us": j_p99, "controller_step_median_us": c_med, "target_us": TARGETS_US[kind],
                             "meets_target": ok}
            table.add_row(label, f"{o_med:.1f}", f"{o_p99:.1f}", f"{j_med:.1f}", f"{j_p99:.1f}", f"{j_med / o_med:.1f}x",
                          f"{c_med:.1f}", f"< {TARGETS_US[kind]:g}", "[green]✓[/green]" if ok else "[red]✗[/red]")
            rows += [
                BenchRow(f"export {kind} onnxruntime step median", o_med, j_med, "JAX jitted step median", "us"),
                BenchRow(f"export {kind} onnxruntime step p99", o_p99, j_p99, "JAX jitted step p99", "us"),
                BenchRow(f"export {kind} Controller.step median", c_med, o_med, "bare onnxruntime step median", "us"),
            ]

    console.print(table)
    console.print("✓: onnxruntime median under target (MLP < 20 µs, GRU < 50 µs). Controller.step = read + "
                  "guards + inference + clip + rate limit + write on an in-memory robot.")
    if json_path:
        write_json(rows, json_path, {"results": results, "steps": steps, "threads": 1, "batch": 1})
        console.print(f"wrote {json_path}")
    return rows


# --------------------------------------------------------------------------------------------------
# bench deploy: the controller soak (fault injection) and Controller.step against raw onnxruntime
# --------------------------------------------------------------------------------------------------

FAULT_KINDS = ("nan_obs", "inf_obs", "stale_ts", "future_ts", "missing_ts", "read_error", "write_error",
               "write_error_safe", "slow_read", "slow_write", "nan_policy")
"""What :class:`FaultyRobot` injects, one kind per step: NaN / inf in the observation; a timestamp
too old, 100 s in the future or missing (``None``); an exception from ``read_observation``, from
``write_command`` (the policy's command), or from both writes of the step (the command and the safe
action); a read that returns after ``stale_after_s + control_dt`` (its sample is stale by then); a
write that takes two control periods; a NaN policy output (the policy is wrapped)."""

DETECTED_AS = {
    "nan_obs": ("nan_obs",), "inf_obs": ("nan_obs",), "stale_ts": ("stale",), "future_ts": ("future",),
    "missing_ts": ("stale",), "read_error": ("read_error",), "write_error": ("write_error",),
    "write_error_safe": ("write_error", "write_error"), "slow_read": ("stale", "overruns"),
    "slow_write": ("overruns",), "nan_policy": ("nan_action",),
}
"""The :class:`~deploy.runtime.SafetyEvents` counter(s) one injected fault must raise."""

FAULT_STEP_KINDS = frozenset(FAULT_KINDS) - {"slow_write"}  # a slow write is late, not a fault step
FUTURE_S = 100.0  # how far ahead an injected future timestamp is (the case)


class InjectedFault(RuntimeError):
    """The robot-interface exception :class:`FaultyRobot` raises."""


class SimClock:
    """Simulated time for :class:`~deploy.runtime.Controller` (``now``, ``sleep_until``) and the
    robot (``sleep``): it moves only when slept on, so a soak runs as fast as the code and every
    deadline and age is exact."""

    def __init__(self, start: float = 1000.0):
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def sleep_until(self, deadline: float) -> None:
        self.t = max(self.t, float(deadline))

    def sleep(self, seconds: float) -> None:
        self.t += float(seconds)


def fault_schedule(steps: int, fault_rate: float, max_faults: int, seed: int) -> list[str | None]:
    """The fault kind of each step (``None``: none). With probability ``fault_rate`` a step starts a
    burst of 1 .. ``max_faults + 2`` faulty steps of random kinds, so runs of faults both shorter
    and longer than the stop threshold occur."""
    if not 0 <= fault_rate <= 1:
        raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
    rng = np.random.default_rng(seed)
    out: list[str | None] = [None] * steps
    i = 0
    while i < steps:
        if rng.random() < fault_rate:
            n = int(rng.integers(1, max_faults + 3))
            for j in range(i, min(i + n, steps)):
                out[j] = FAULT_KINDS[int(rng.integers(len(FAULT_KINDS)))]
            i += n
        else:
            i += 1
    return out


def expected_stops(schedule: Sequence[str | None], max_faults: int) -> list[int]:
    """The steps at which a controller stops (then is reset): where more than ``max_faults`` fault
    steps in a row end (what ``SafetyConfig.max_stale_steps`` says)."""
    stops, row = [], 0
    for i, kind in enumerate(schedule):
        row = row + 1 if kind in FAULT_STEP_KINDS else 0
        if row > max_faults:
            stops.append(i)
            row = 0
    return stops


class FaultyRobot:
    """A :class:`~deploy.runtime.RobotInterface` around another that injects the faults of a
    schedule (one kind per control step, :data:`FAULT_KINDS`) and checks every command that reaches
    the robot: finite, inside ``[low, high]`` and within ``max_rate`` of the previous one.

    Args:
        robot: the robot driven (e.g. :class:`deploy.standin.MujocoStandIn`).
        schedule: the fault kind of each step (:func:`fault_schedule`); steps beyond it are clean.
        low, high, max_rate: the command limits checked (``max_rate=None``: not checked).
        stale_after_s: the controller's stale limit (how old a stale injection makes a sample).
        clock: the controller's clock (``now``; ``sleep`` is used for slow reads and writes).
        control_dt: the control period presented to the controller (default the robot's).

    Attributes:
        injected: faults injected so far, by kind. commands: commands passed to the robot.
        unsafe: commands that broke a limit (each as ``(step, reason)``).
    """

    def __init__(self, robot, schedule: Sequence[str | None], *, low, high, max_rate, stale_after_s: float,
                 clock, control_dt: float | None = None):
        self.robot = robot
        self.obs_names, self.action_names = tuple(robot.obs_names), tuple(robot.action_names)
        self.control_dt = float(robot.control_dt if control_dt is None else control_dt)
        self.schedule = list(schedule)
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.max_rate = None if max_rate is None else np.asarray(max_rate, np.float64)
        self.stale_after_s = float(stale_after_s)
        self.clock = clock
        self._sleep = getattr(clock, "sleep", time.sleep)
        self.step = -1
        self.kind: str | None = None
        self.injected = dict.fromkeys(FAULT_KINDS, 0)
        self.commands = 0
        self.unsafe: list[tuple[int, str]] = []
        self._writes = 0
        self._last: np.ndarray | None = None
        self._rng = np.random.default_rng(len(self.schedule))

    def _inject(self, kind: str) -> None:
        self.injected[kind] += 1

    def read_observation(self):
        self.step += 1
        self._writes = 0
        kind = self.kind = self.schedule[self.step] if self.step < len(self.schedule) else None
        if kind == "read_error":
            self._inject(kind)
            raise InjectedFault(f"injected read error at step {self.step}")
        obs, ts = self.robot.read_observation()
        now = self.clock.now()
        if self.clock is not _WallClock:  # simulated time: the sample's age (latency) on that clock
            ts = now - float(getattr(self.robot, "last_sample_age_s", 0.0))
        if kind in ("nan_obs", "inf_obs"):
            obs = np.array(obs, np.float32)
            obs[int(self._rng.integers(obs.size))] = np.nan if kind == "nan_obs" else -np.inf
        elif kind == "stale_ts":
            ts = now - 2 * self.stale_after_s
        elif kind == "future_ts":
            ts = now + FUTURE_S
        elif kind == "missing_ts":
            ts = None
        elif kind == "slow_read":
            self._sleep(self.stale_after_s + self.control_dt)
        if kind is not None and kind.endswith(("_obs", "_ts", "slow_read")):
            self._inject(kind)
        return obs, ts

    def write_command(self, action) -> None:
        self._writes += 1
        kind = self.kind
        if (kind == "write_error" and self._writes == 1) or kind == "write_error_safe":
            if self._writes == 1:
                self._inject(kind)
            raise InjectedFault(f"injected write error at step {self.step} (write {self._writes})")
        if kind == "slow_write" and self._writes == 1:
            self._inject(kind)
            self._sleep(2 * self.control_dt)
        self._check(np.asarray(action))
        self.robot.write_command(action)

    def _check(self, a: np.ndarray) -> None:
        self.commands += 1
        a64 = a.astype(np.float64)
        if not np.all(np.isfinite(a64)):
            self.unsafe.append((self.step, f"non-finite command {a.tolist()}"))
        elif np.any(a64 < self.low) or np.any(a64 > self.high):
            self.unsafe.append((self.step, f"command {a.tolist()} outside [{self.low.tolist()}, {self.high.tolist()}]"))
        elif (self.max_rate is not None and self._last is not None
              and np.any(np.abs(a64 - self._last) > self.max_rate * (1 + 1e-6) + 1e-7)):
            self.unsafe.append((self.step, f"command {a.tolist()} moved more than {self.max_rate.tolist()} "
                                           f"from {self._last.tolist()}"))
        self._last = a64


def _nan_policy(step, robot: FaultyRobot):
    """Wrap ``OnnxPolicy.step``: a NaN action on the steps the schedule says ``nan_policy``."""

    def wrapped(obs, carry):
        action, new = step(obs, carry)
        if robot.kind == "nan_policy":
            robot._inject("nan_policy")
            action = np.full_like(action, np.nan)
        return action, new

    return wrapped


def soak(onnx_path, robot, steps: int, *, safety=None, fault_rate: float = 0.02, seed: int = 0,
         realtime: bool = False, control_dt: float | None = None) -> dict:
    """Run a :class:`~deploy.runtime.Controller` on ``robot`` for ``steps`` control steps while
    :class:`FaultyRobot` injects faults at random (:func:`fault_schedule`); reset it after each stop.

    Args:
        onnx_path: the policy (its metadata's ``control_dt`` must be ``control_dt``).
        robot: a :class:`~deploy.runtime.RobotInterface` (e.g. the MuJoCo stand-in).
        steps: control steps in all.
        safety: :class:`~deploy.runtime.SafetyConfig` (default: ``max_rate`` 0.1, 2 faults in a row).
        fault_rate: probability that a step starts a burst of faults.
        seed: seeds the schedule.
        realtime: pace at ``control_dt`` in wall-clock time (slow reads and writes really sleep);
            otherwise in simulated time (:class:`SimClock`), as fast as the code runs and exact.
        control_dt: the period presented to the controller (default the robot's).

    Returns:
        ``{"steps", "injected" (by kind), "expected" and "detected" (by SafetyEvents counter),
        "missed" (expected - detected per counter, clipped at 0), "extra" (detected beyond expected:
        in real time a busy machine adds overruns and stale samples of its own), "commands",
        "unsafe_commands", "unsafe" (the first 10), "stops", "expected_stops", "stops_match",
        "events", "jitter_us", "latency_us", "wall_s", "realtime", "control_dt"}``.
    """
    from deploy.runtime import Controller, SafetyConfig

    safety = SafetyConfig(max_rate=0.1, max_stale_steps=2) if safety is None else safety
    clock = None if realtime else SimClock()
    schedule = fault_schedule(steps, fault_rate, safety.max_stale_steps, seed)
    dt = float(robot.control_dt if control_dt is None else control_dt)
    stale_after = 3.0 * dt if safety.stale_after_s is None else float(safety.stale_after_s)
    # the limits checked come from the metadata and the config, not from the controller under test
    from deploy.export import read_metadata

    meta = read_metadata(onnx_path)
    low = meta.get("action_low") if safety.action_low is None else safety.action_low
    high = meta.get("action_high") if safety.action_high is None else safety.action_high
    faulty = FaultyRobot(robot, schedule, low=-np.inf if low is None else low, high=np.inf if high is None else high,
                         max_rate=safety.max_rate, stale_after_s=stale_after,
                         clock=clock if clock is not None else _WallClock, control_dt=dt)
    ctl = Controller(onnx_path, faulty, safety, clock=clock)
    ctl.policy.step = _nan_policy(ctl.policy.step, faulty)
    done, stops = 0, []
    lat, late = [], []
    start = time.perf_counter()
    while done < steps:
        out = ctl.run(steps - done, realtime=True, timings=True)
        done += out["steps"]
        lat.append(out["latency_s"])
        late.append(out["lateness_s"])
        if out["stopped"]:
            stops.append(done - 1)
            ctl.reset()
    wall = time.perf_counter() - start
    if faulty.step != steps - 1:
        raise RuntimeError(f"soak: the controller read {faulty.step + 1} observations in {steps} steps")
    events = dataclasses.asdict(ctl.events)
    expected = dict.fromkeys(sorted({c for cs in DETECTED_AS.values() for c in cs}), 0)
    for kind, n in faulty.injected.items():
        for counter in DETECTED_AS[kind]:
            expected[counter] += n
    want_stops = expected_stops(schedule, safety.max_stale_steps)
    # a step that stops the controller ends the run there: it is not paced, so not an overrun
    expected["overruns"] -= sum(schedule[i] == "slow_read" for i in want_stops)
    detected = {c: events[c] for c in expected}
    lat_s, late_s = np.concatenate(lat), np.concatenate(late)
    return {
        "steps": done,
        "injected": dict(faulty.injected),
        "injected_total": sum(faulty.injected.values()),
        "expected": expected,
        "detected": detected,
        "missed": {c: max(0, expected[c] - detected[c]) for c in expected},
        "extra": {c: max(0, detected[c] - expected[c]) for c in expected},
        "commands": faulty.commands,
        "unsafe_commands": len(faulty.unsafe),
        "unsafe": faulty.unsafe[:10],
        "stops": stops,
        "expected_stops": want_stops,
        "stops_match": stops == want_stops,
        "events": events,
        "jitter_us": {"p50": float(np.percentile(late_s, 50) * 1e6), "p99": float(np.percentile(late_s, 99) * 1e6),
                      "max": float(late_s.max() * 1e6)},
        "latency_us": {"p50": float(np.percentile(lat_s, 50) * 1e6), "p99": float(np.percentile(lat_s, 99) * 1e6),
                       "max": float(lat_s.max() * 1e6)},
        "wall_s": wall,
        "realtime": realtime,
        "control_dt": dt,
    }


class _WallClock:
    """Wall-clock time for :class:`FaultyRobot` in a real-time soak (the controller's default clock)."""

    now = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)


def _step_vs_raw(path, robot_names, dt: float, steps: int, rounds: int) -> dict:
    """``Controller.step`` (in-memory robot) against a bare ``session.run`` of the same model, in
    interleaved rounds; the round with the lowest medians is kept (best of ``rounds``)."""
    from deploy.runtime import Controller, OnnxPolicy, SafetyConfig

    obs_names, action_names = robot_names
    obs = np.random.default_rng(0).standard_normal((256, len(obs_names))).astype(np.float32)
    robot = _MemoryRobot(obs_names, action_names, dt, obs)
    ctl = Controller(path, robot, SafetyConfig(max_rate=0.5, stale_after_s=1.0), threads=1)
    policy = OnnxPolicy(path, threads=1)
    sess, names, opts = policy.session, [policy.action_name], ort_run_options()
    feeds = [{"obs": o[None]} for o in obs]
    best = None
    for _ in range(rounds):
        c = _time_steps(lambda _: ctl.step(), steps, steps // 10)
        r = _time_steps(lambda i: sess.run(names, feeds[i % len(feeds)], opts), steps, steps // 10)
        (c_med, c_p99), (r_med, r_p99) = _stats_us(c), _stats_us(r)
        if best is None or c_med / r_med < best["ratio"]:
            best = {"controller_median_us": c_med, "controller_p99_us": c_p99, "raw_median_us": r_med,
                    "raw_p99_us": r_p99, "ratio": c_med / r_med}
    return best


def ort_run_options():
    import onnxruntime as ort

    return ort.RunOptions()


def bench_deploy(json_path: Path | None = None, steps: int = 20_000, rate_hz: float = 500.0,
                 fault_rate: float = 0.01, seed: int = 0, timing_steps: int = 5000, rounds: int = 5,
                 env_id: str = "pendulum-swingup") -> list[BenchRow]:
    """The controller soak in real time at ``rate_hz`` on the MuJoCo stand-in of ``env_id`` (a
    (64, 64) MLP exported with :func:`deploy.export.build_onnx`), then ``Controller.step`` against
    raw onnxruntime inference of the same model. Prints a table; returns rows (``--json`` as
    :func:`bench_export`). ``steps=100_000`` is the issue's full soak."""
    for name, value, low in (("steps", steps, 1), ("timing_steps", timing_steps, 10), ("rounds", rounds, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    import jax

    from deploy.export import build_onnx
    from deploy.standin import MujocoStandIn
    from meta_rl.networks import Policy, PolicySpec

    dt = 1.0 / rate_hz
    robot = MujocoStandIn(env_id)
    spec = PolicySpec(kind="mlp", obs_names=tuple(robot.obs_names), action_names=tuple(robot.action_names),
                      discrete=False, hidden=(64, 64), action_low=(-1.0,) * len(robot.action_names),
                      action_high=(1.0,) * len(robot.action_names))
    policy = Policy(spec)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.onnx"
        model = build_onnx(policy, policy.init(jax.random.key(seed)), {"control_dt": dt, "env_id": env_id})
        path.write_bytes(model.SerializeToString())
        with console.status(f"soak: {steps} steps at {rate_hz:g} Hz with faults"):
            s = soak(path, robot, steps, fault_rate=fault_rate, seed=seed, realtime=True, control_dt=dt)
        with console.status("Controller.step vs raw onnxruntime"):
            t = _step_vs_raw(path, (robot.obs_names, robot.action_names), dt, timing_steps, rounds)
    injected, detected = s["injected_total"], sum(s["detected"].values()) - s["events"]["overruns"]
    rows = [
        BenchRow("deploy jitter p50", s["jitter_us"]["p50"], None, "", "us"),
        BenchRow("deploy jitter p99", s["jitter_us"]["p99"], None, "", "us"),
        BenchRow("deploy jitter max", s["jitter_us"]["max"], None, "", "us"),
        BenchRow("deploy overruns", float(s["events"]["overruns"]), float(s["expected"]["overruns"]),
                 "injected slow reads/writes", "steps"),
        BenchRow("deploy faults detected (non-overrun)", float(detected),
                 float(sum(s["expected"].values()) - s["expected"]["overruns"]), "expected from injected", ""),
        BenchRow("deploy unsafe commands", float(s["unsafe_commands"]), None, "", ""),
        BenchRow("deploy Controller.step median", t["controller_median_us"], t["raw_median_us"],
                 "raw onnxruntime median", "us"),
        BenchRow("deploy Controller.step p99", t["controller_p99_us"], t["raw_p99_us"], "raw onnxruntime p99", "us"),
    ]
    table = Table(title=f"bench deploy: {s['steps']} steps at {rate_hz:g} Hz, {injected} faults injected")
    for col in ("figure", "value", "baseline", "ratio"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, f"{r.value:.1f} {r.unit}", "" if r.baseline is None else f"{r.baseline:.1f} ({r.baseline_name})",
                      "" if r.ratio is None else f"{r.ratio:.2f}x")
    console.print(table)
    console.print(f"stops {len(s['stops'])} (as the thresholds say: {s['stops_match']}); missed {s['missed']}; "
                  f"extra (the machine's own) {s['extra']}")
    if json_path:
        write_json(rows, json_path, {"soak": {k: v for k, v in s.items() if k != "unsafe"}, "step_cost": t,
                                     "rate_hz": rate_hz})
        console.print(f"wrote {json_path}")
    return rows
