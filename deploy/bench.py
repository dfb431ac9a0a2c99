"""``bench export``: per-control-step latency of exported policies in onnxruntime vs the jitted JAX step.

Robot-sized policies (17 observations, 6 actuators): an MLP with a (64, 64) tanh torso and a GRU
(the same torso, a 128-wide core). Each is exported with :func:`deploy.export.export_onnx` (parity
checked), then stepped ``steps`` times at batch 1 with its carry fed forward:

- onnxruntime: :class:`deploy.runtime.OnnxPolicy` (the controller's own call), 1 intra-op thread;
- JAX: ``jax.jit`` of ``Policy.apply`` + ``Policy.deterministic``, ``block_until_ready`` every step;
- the whole :meth:`deploy.runtime.Controller.step` (read, guards, inference, clip, rate limit,
  write) on an in-memory robot, to show the safety layer's overhead.

Targets (median, onnxruntime): MLP < 20 µs, GRU < 50 µs.
"""

from __future__ import annotations

import tempfile
import time
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
