"""An episodic controller's memory on the robot (MFEC, NEC): NumPy writes, the memory file, and the
act / reward / write loop around an exported ``policy.onnx``.

Runs on the robot computer: imports ``numpy`` (and ``onnxruntime`` through :mod:`deploy.runtime`) only.

An MFEC or NEC export (:mod:`deploy.export`) has the k-nearest-neighbour lookup inside the graph and
the memory as inputs, one memory per controller (not per batch row)::

    inputs   obs             float32 [B, obs_dim]
             memory.keys     float32 [A, C, D]     one DND per action: C slots of D-wide keys
             memory.values   float32 [A, C, V]
             memory.stamps   int32   [A, C]        each slot's last write (-1: empty)
    outputs  action          int64   [B]           argmax_a q
             q               float32 [B, A]
             memory_key      float32 [B, D]        the key the lookup used (MFEC's projection, NEC's embedding)

and its metadata's ``memory`` entry says how the memory is written: ``rule`` (``max``: MFEC, ``q``:
NEC's ``v += alpha (target - v)``), ``gamma``, ``match_tol`` (squared distance under which a key is
already stored), ``alpha`` and ``n_step`` (NEC), ``run_id`` (the run the memory came from) and
``actions`` / ``capacity`` / ``key_dim`` / ``value_dim``.

The writes are not in the graph (a DND write is a sequential scan: each key looks for a duplicate
among the keys before it, then takes an empty or the least recently used slot): :func:`write` does
them in NumPy with exactly :func:`meta_rl.dnd.write`'s semantics (tests/test_memory_export.py checks
it against the JAX write). A full memory never errors: it replaces.

* :class:`EpisodicMemory`: the arrays of one controller, saved to and loaded from an ``.npz`` file
  (``proteus export`` writes ``policy.memory.npz`` beside ``policy.onnx``); a file from another run,
  or of another size, is refused naming the field.
* :class:`MemoryController`: ``act(obs)`` -> action; ``observe_reward(r)``; ``end_episode()``. NEC
  (``n_step`` set) writes each step's N-step target ``sum_{j<N} γ^j r_{t+j} + γ^N max_a Q(s_{t+N}, a)``
  as soon as the N later steps are known, and the rest at the episode's end with fewer steps (no
  bootstrap after a terminal step; after a truncated one, the final observation's value), as
  :func:`meta_rl.value.n_step_targets`. MFEC (no ``n_step``) writes the discounted returns-to-go of
  the episode at its end, with no bootstrap (:func:`meta_rl.mfec.discounted_returns`). Each step's target goes into its
  action's memory, in step order.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from deploy.files import write_atomic

__all__ = ["MEMORY_INPUTS", "MEMORY_OUTPUTS", "RULES", "EpisodicMemory", "MemoryController", "memory_path", "write"]

RULES = ("max", "q", "replace")
MEMORY_INPUTS = ("memory.keys", "memory.values", "memory.stamps")
MEMORY_OUTPUTS = ("q", "memory_key")
FILE_VERSION = 1
CHECKED = ("run_id", "actions", "capacity", "key_dim", "value_dim")  # what a memory file must share with its model


def memory_path(onnx_path) -> Path:
    """``policy.memory.npz`` for ``policy.onnx``: where ``proteus export`` puts the memory."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".memory.npz")


def write(keys: np.ndarray, values: np.ndarray, stamps: np.ndarray, clock, new_keys: np.ndarray,
          new_values: np.ndarray, rule: str = "max", alpha: float = 0.1, tolerance: float = 0.0,
          mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int32]:
    """Write ``new_keys [B, D]`` with ``new_values [B, V]`` (or ``[B]``) into one memory (``keys [C, D]``,
    ``values [C, V]``, ``stamps [C]``, ``clock``), in order, where ``mask`` (default: all).

    :func:`meta_rl.dnd.write` one key at a time: a key within ``tolerance`` (squared distance) of its
    nearest stored key updates that entry's value by ``rule`` (``max``, ``q``: ``v += alpha (new - v)``,
    ``replace``; the stored key stays); any other takes an empty slot, else the least recently used
    one (lowest stamp, ties to the lowest slot). Each written key stamps its slot with the clock and
    ticks it once. Returns new arrays ``(keys, values, stamps, clock)``; the inputs are not changed.
    """
    if rule not in RULES:
        raise ValueError(f"memory write rule must be one of {', '.join(RULES)}, got {rule!r}")
    keys, values = np.array(keys, np.float32), np.array(values, np.float32)
    stamps = np.array(stamps, np.int32)
    new_keys = np.asarray(new_keys, np.float32)
    new_values = np.asarray(new_values, np.float32)
    if new_values.ndim == 1:
        new_values = new_values[:, None]
    if keys.ndim != 2 or values.shape != (keys.shape[0], values.shape[-1]) or stamps.shape != keys.shape[:1]:
        raise ValueError(f"a memory is keys [C, D], values [C, V], stamps [C]; got {keys.shape}, {values.shape}, "
                         f"{stamps.shape}")
    if new_keys.ndim != 2 or new_keys.shape[1] != keys.shape[1]:
        raise ValueError(f"memory keys must be [batch, key_dim={keys.shape[1]}], got shape {new_keys.shape}")
    if new_values.shape != (new_keys.shape[0], values.shape[1]):
        raise ValueError(f"memory values must be [batch={new_keys.shape[0]}, value_dim={values.shape[1]}], "
                         f"got shape {new_values.shape}")
    mask = np.ones(new_keys.shape[0], bool) if mask is None else np.asarray(mask, bool).reshape(-1)
    alpha, clock = np.float32(alpha), int(clock)
    held = stamps >= 0
    for key, value, on in zip(new_keys, new_values, mask):
        if not on:
            continue
        d = np.where(held, np.square(keys - key).sum(-1), np.inf)
        slot = int(np.argmin(d))
        if held[slot] and d[slot] <= tolerance:  # already stored: update its value in place
            old = values[slot]
            values[slot] = (np.maximum(old, value) if rule == "max" else old + alpha * (value - old) if rule == "q"
                            else value)
        else:  # an empty slot (stamp -1) first, else the least recently used
            slot = int(np.argmin(stamps))
            keys[slot], values[slot], held[slot] = key, value, True
        stamps[slot] = clock
        clock += 1
    return keys, values, stamps, np.int32(clock)


class EpisodicMemory:
    """The DND memories of one controller, one per action.

    Attributes:
        keys: ``float32 [A, C, D]``; values: ``float32 [A, C, V]``; stamps: ``int32 [A, C]`` (-1:
            empty); clock: ``int32 [A]`` (each action's memory ticks on its own, as in training).
        run_id: the run the memory came from (the exported model's ``memory.run_id``).
        learner: ``mfec`` or ``nec`` (informative).
    """

    def __init__(self, keys, values, stamps, clock=None, run_id: str = "", learner: str = ""):
        self.keys = np.array(keys, np.float32)  # its own copies: writes go in place
        self.values = np.array(values, np.float32)
        self.stamps = np.array(stamps, np.int32)
        if self.values.ndim == 2:
            self.values = self.values[..., None]
        A, C = self.stamps.shape if self.stamps.ndim == 2 else (None, None)
        if (self.keys.ndim != 3 or self.keys.shape[:2] != (A, C) or self.values.ndim != 3
                or self.values.shape[:2] != (A, C)):
            raise ValueError(f"a memory is keys [A, C, D], values [A, C, V], stamps [A, C]; got {self.keys.shape}, "
                             f"{self.values.shape}, {self.stamps.shape}")
        self.clock = (np.asarray(np.max(self.stamps, -1) + 1, np.int32) if clock is None
                      else np.array(np.broadcast_to(np.asarray(clock, np.int32), (A,))))
        self.run_id, self.learner = str(run_id), str(learner)

    @classmethod
    def empty(cls, actions: int, capacity: int, key_dim: int, value_dim: int = 1, run_id: str = "",
              learner: str = "") -> EpisodicMemory:
        return cls(np.zeros((actions, capacity, key_dim), np.float32), np.zeros((actions, capacity, value_dim),
                                                                                  np.float32),
                   np.full((actions, capacity), -1, np.int32), np.zeros(actions, np.int32), run_id, learner)

    @classmethod
    def for_model(cls, spec: dict) -> EpisodicMemory:
        """An empty memory of the size an exported model's metadata ``memory`` entry states."""
        return cls.empty(int(spec["actions"]), int(spec["capacity"]), int(spec["key_dim"]),
                         int(spec.get("value_dim", 1)), str(spec.get("run_id", "")), str(spec.get("learner", "")))

    @property
    def actions(self) -> int:
        return self.keys.shape[0]

    @property
    def capacity(self) -> int:
        return self.keys.shape[1]

    @property
    def key_dim(self) -> int:
        return self.keys.shape[2]

    @property
    def value_dim(self) -> int:
        return self.values.shape[2]

    def size(self) -> np.ndarray:
        """``[A]`` entries held per action."""
        return np.sum(self.stamps >= 0, -1)

    def feed(self) -> dict[str, np.ndarray]:
        """The ONNX inputs :data:`MEMORY_INPUTS`."""
        return dict(zip(MEMORY_INPUTS, (self.keys, self.values, self.stamps)))

    def write(self, action: int, keys, values, rule: str, alpha: float = 0.1, tolerance: float = 0.0) -> None:
        """Write ``keys [B, D]`` with ``values [B]`` (or ``[B, V]``) into action ``action``'s memory
        (:func:`write`), in place (copy :meth:`feed`'s arrays to keep a snapshot)."""
        a = int(action)
        if not 0 <= a < self.actions:
            raise ValueError(f"action {a} is not one of the memory's {self.actions} actions")
        k, v, s, c = write(self.keys[a], self.values[a], self.stamps[a], self.clock[a], np.atleast_2d(keys),
                           np.reshape(values, (-1, self.value_dim)), rule, alpha, tolerance)
        self.keys[a], self.values[a], self.stamps[a], self.clock[a] = k, v, s, c

    def check(self, expected: dict, where: str = "memory", against: str = "the policy's memory") -> None:
        """Refuse (``ValueError`` naming the field and both values) a memory whose ``run_id``,
        ``actions``, ``capacity``, ``key_dim`` or ``value_dim`` differs from ``expected`` (an exported
        model's metadata ``memory`` entry; fields it does not hold, or an empty run id, are not checked)."""
        for field in CHECKED:
            if expected.get(field) not in (None, ""):
                have, want = getattr(self, field), expected[field]
                if (str(have) != str(want)) if field == "run_id" else int(have) != int(want):
                    raise ValueError(f"{where}: {field} is {have!r} but {against} has {field} {want!r}"
                                     + (" (a memory from another run)" if field == "run_id" else ""))

    def save(self, path) -> Path:
        """Write the memory as an ``.npz`` (keys, values, stamps, clock, run_id, learner and the sizes)."""
        buf = io.BytesIO()
        np.savez(buf, keys=self.keys, values=self.values, stamps=self.stamps, clock=self.clock,
                 run_id=np.array(self.run_id), learner=np.array(self.learner), actions=np.int64(self.actions),
                 capacity=np.int64(self.capacity), key_dim=np.int64(self.key_dim), value_dim=np.int64(self.value_dim),
                 version=np.int64(FILE_VERSION))
        return write_atomic(Path(path), buf.getvalue(), overwrite=True)

    @classmethod
    def load(cls, path, expected: dict | None = None, expected_run_id: str | None = None) -> EpisodicMemory:
        """Read :meth:`save`'s file; ``expected`` (a model's metadata ``memory`` entry) and
        ``expected_run_id`` are checked (:meth:`check`). A missing field or arrays that contradict the
        file's sizes raise ``ValueError`` naming the file and the field."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no memory file at {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as e:  # not a zip, a corrupt member...
            raise ValueError(f"{path} is not a readable memory file ({type(e).__name__}: {e})") from e
        for field in ("keys", "values", "stamps", "clock", "run_id", *CHECKED[1:]):
            if field not in data:
                raise ValueError(f"{path}: memory file has no {field!r} field")
        mem = cls(data["keys"], data["values"], data["stamps"], data["clock"], str(data["run_id"]),
                  str(data.get("learner", "")))
        mem.check({f: data[f].item() for f in CHECKED[1:]}, f"{path}'s arrays", "its header")
        want = dict(expected or {})
        if expected_run_id is not None:
            want["run_id"] = expected_run_id
        mem.check(want, str(path))
        return mem


class MemoryController:
    """One episodic controller (MFEC or NEC export) on onnxruntime, its memory growing as it acts.

    Args:
        policy: a :class:`deploy.runtime.OnnxPolicy` of a memory model, or the ``.onnx`` path.
        memory: an :class:`EpisodicMemory` or a memory file; default: the policy's (its
            ``policy.memory.npz`` when present, else empty). It is checked against the model.
        rule, gamma, n_step, alpha, tolerance: override the model's metadata ``memory`` entry
            (``n_step=None`` there: MFEC's returns-to-go, written at the episode's end).

    ``act(obs)`` -> the greedy action (an int), ``observe_reward(r)`` after each, ``end_episode()``
    at the end; the writes go into ``memory`` (also the policy's, so a :class:`deploy.runtime.Controller`
    on the same policy acts on the grown memory). :meth:`save` writes the memory file.
    """

    def __init__(self, policy, memory=None, *, rule: str | None = None, gamma: float | None = None,
                 n_step: int | None = None, alpha: float | None = None, tolerance: float | None = None):
        from deploy.runtime import OnnxPolicy

        if isinstance(policy, OnnxPolicy):
            self.policy = policy
            if memory is not None:
                policy.set_memory(memory)
        else:
            self.policy = OnnxPolicy(policy, memory=memory)
        spec = self.policy.memory_spec
        if spec is None:
            raise ValueError(f"{self.policy.path} has no memory inputs (metadata 'memory'): not an MFEC/NEC export")
        get = lambda given, field, default=None: spec.get(field, default) if given is None else given  # noqa: E731
        self.rule = get(rule, "rule")
        self.gamma = get(gamma, "gamma")
        self.n_step = get(n_step, "n_step")
        self.alpha = float(get(alpha, "alpha", 0.1))
        self.tolerance = float(get(tolerance, "match_tol", 0.0))
        if self.rule not in RULES:
            raise ValueError(f"memory write rule must be one of {', '.join(RULES)}, got {self.rule!r} "
                             f"(the model's metadata memory.rule, or the rule argument)")
        if self.gamma is None or not 0 < float(self.gamma) <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma!r} (metadata memory.gamma, or the argument)")
        if self.n_step is not None and (int(self.n_step) != self.n_step or int(self.n_step) < 1):
            raise ValueError(f"n_step must be a positive integer or None, got {self.n_step!r}")
        self.gamma = np.float32(self.gamma)
        self.n_step = None if self.n_step is None else int(self.n_step)
        self._names = ["action", *MEMORY_OUTPUTS, *self.policy._carry_out]
        self._reset()

    @property
    def memory(self) -> EpisodicMemory:
        return self.policy.memory

    def _reset(self) -> None:
        self.keys: list[np.ndarray] = []
        self.actions: list[int] = []
        self.q_max: list[np.float32] = []
        self.rewards: list[np.float32] = []
        self.targets: list[np.float32] = []  # written so far, in step order
        self.carry = self.policy.init_carry(1)

    def _run(self, obs) -> tuple[int, np.ndarray, np.ndarray]:
        obs = np.ascontiguousarray(obs, np.float32).reshape(1, -1)
        out = self.policy.session.run(self._names, {"obs": obs, **self.carry, **self.memory.feed()})
        self.carry = dict(zip(self.policy.carry_names, out[3:]))
        return int(out[0][0]), out[1][0], out[2][0]

    def act(self, obs) -> int:
        """The greedy action on observation ``[obs_dim]``; NEC writes the step N before this one."""
        if len(self.rewards) != len(self.actions):
            raise RuntimeError("observe_reward(r) must follow each act(obs)")
        action, q, key = self._run(obs)
        self.keys.append(key)
        self.actions.append(action)
        self.q_max.append(np.float32(np.max(q)))
        if self.n_step is not None and len(self.actions) > self.n_step:
            t = len(self.actions) - 1 - self.n_step
            self._write(t, self._target(t, len(self.actions) - 1, self.q_max[-1]))
        return action

    def observe_reward(self, reward: float) -> None:
        if len(self.rewards) != len(self.actions) - 1:
            raise RuntimeError("observe_reward(r) follows an act(obs), once")
        self.rewards.append(np.float32(reward))

    def end_episode(self, terminated: bool = True, final_obs=None) -> dict:
        """Write the steps whose targets were not written yet (every step for MFEC) and start a new
        episode. NEC: a terminated episode adds no bootstrap; a truncated one (``terminated=False``)
        needs ``final_obs`` and bootstraps from its ``max_a Q``. MFEC never bootstraps (the return so
        far, as in training). Returns the episode: ``keys`` (``[T, D]``,
        each step's memory key), ``actions``, ``rewards``, ``q_max`` (max_a Q of each step's
        observation, as the model computed it then) and ``targets`` (what was written for each step),
        arrays ``[T]``, and ``bootstrap``, the value after the last step."""
        if len(self.rewards) != len(self.actions):
            raise RuntimeError("observe_reward(r) must follow the episode's last act(obs)")
        if terminated or self.n_step is None:
            bootstrap = np.float32(0.0)
        elif final_obs is None:
            raise ValueError("a truncated episode (terminated=False) needs final_obs to bootstrap from")
        else:
            bootstrap = np.float32(np.max(self._run(final_obs)[1]))
        T = len(self.actions)
        for t in range(len(self.targets), T):  # NEC wrote the steps before, in order
            end = T if self.n_step is None else min(T, t + self.n_step)
            self._write(t, self._target(t, end, bootstrap if end == T else self.q_max[end]))
        episode = {"keys": np.array(self.keys, np.float32).reshape(T, self.memory.key_dim),
                   "actions": np.array(self.actions, np.int64), "rewards": np.array(self.rewards, np.float32),
                   "q_max": np.array(self.q_max, np.float32), "targets": np.array(self.targets, np.float32),
                   "bootstrap": bootstrap}
        self._reset()
        return episode

    def _target(self, t: int, end: int, bootstrap) -> np.float32:
        """``sum_{t<=j<end} γ^(j-t) r_j + γ^(end-t) bootstrap``, accumulated backwards in float32."""
        g = np.float32(bootstrap)
        for j in range(end - 1, t - 1, -1):
            g = self.rewards[j] + self.gamma * g
        return np.float32(g)

    def _write(self, t: int, target: np.float32) -> None:
        assert t == len(self.targets), "writes go in step order"
        self.targets.append(target)
        self.memory.write(self.actions[t], self.keys[t][None], np.array([target], np.float32), self.rule, self.alpha,
                          self.tolerance)

    def save(self, path=None) -> Path:
        """Write the memory file (default: the policy's ``policy.memory.npz``)."""
        return self.memory.save(memory_path(self.policy.path) if path is None else path)
