"""Sensor and actuator effects, declared beside the dynamics terms of a :class:`RandomizationSpec`.

Each effect draws its strength per world from a :class:`SplitRange`, like a dynamics term, and is
applied by the :class:`sim.effects.SensorActuator` wrapper:

* :class:`ObsNoise`: additive Gaussian noise on every observation element, std drawn per world;
* :class:`ObsLatency`: the agent sees the observation from ``k`` control steps ago;
* :class:`ActionDelay`: the action sent now is applied ``k`` control steps later;
* :class:`Push`: with probability ``probability`` per control step, a velocity kick of uniform
  direction and magnitude up to the world's value is added to the named joints' velocities.

Step counts are integer-valued: a draw ``x`` means ``floor(x)`` steps, so a range ``(0, 3)`` gives 0, 1
or 2. Each delay has a buffer of ``max_steps``; a range that could ask for more is refused.
"""

from __future__ import annotations

import dataclasses
import math

from randomization.ranges import SplitRange


def _max_int(r: SplitRange) -> int:
    return int(math.ceil(max(hi for _, hi in r.declared_intervals()))) - 1


def _check_nonneg(r: SplitRange, what: str) -> None:
    low = min(lo for lo, _ in r.declared_intervals())
    if low < 0:
        raise ValueError(f"{what}: range low {low} is negative")


@dataclasses.dataclass(frozen=True)
class ObsNoise:
    """Gaussian observation noise; ``std`` in observation units."""

    std: SplitRange

    def __post_init__(self):
        _check_nonneg(self.std, "obs_noise.std")


@dataclasses.dataclass(frozen=True)
class _Delay:
    steps: SplitRange
    max_steps: int = 4

    def __post_init__(self):
        _check_nonneg(self.steps, f"{self.name}.steps")
        if self.max_steps < 0:
            raise ValueError(f"{self.name}: max_steps must be >= 0, got {self.max_steps}")
        need = _max_int(self.steps)
        if need > self.max_steps:
            raise ValueError(
                f"{self.name}: steps range reaches {need} steps but the buffer holds max_steps={self.max_steps}"
            )


@dataclasses.dataclass(frozen=True)
class ObsLatency(_Delay):
    """The observation is ``k`` control steps old."""

    name = "obs_latency"


@dataclasses.dataclass(frozen=True)
class ActionDelay(_Delay):
    """An action takes effect ``k`` control steps after it is sent."""

    name = "action_delay"


@dataclasses.dataclass(frozen=True)
class Push:
    """Random velocity kicks on the named joints (their dofs), in qvel units."""

    joints: tuple[str, ...]
    magnitude: SplitRange
    probability: float = 0.02

    def __post_init__(self):
        object.__setattr__(self, "joints", tuple(self.joints))
        if not self.joints:
            raise ValueError("push: name at least one joint")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"push: probability must be in [0, 1], got {self.probability}")
        _check_nonneg(self.magnitude, "push.magnitude")


@dataclasses.dataclass(frozen=True)
class Effects:
    """The sensor/actuator effects of one robot (each optional)."""

    obs_noise: ObsNoise | None = None
    obs_latency: ObsLatency | None = None
    action_delay: ActionDelay | None = None
    push: Push | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))

    def ranges(self) -> dict[str, SplitRange]:
        out = {}
        if self.obs_noise:
            out["obs_noise.std"] = self.obs_noise.std
        if self.obs_latency:
            out["obs_latency.steps"] = self.obs_latency.steps
        if self.action_delay:
            out["action_delay.steps"] = self.action_delay.steps
        if self.push:
            out["push.magnitude"] = self.push.magnitude
        return out
