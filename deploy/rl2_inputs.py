"""The RL² inputs on the robot: what :class:`sim.wrappers.Trial` appends to the observation, built in NumPy.

An RL² policy (Duan et al. 2016) reads, after the robot's own observation, the previous action
(one-hot for a discrete policy), the previous reward, the previous episode-done flag and, where the
env has it, ``trial_time`` (steps taken in the trial over the trial's length). A robot driver keeps
one :class:`RL2Inputs`, appends its :attr:`~RL2Inputs.inputs` to every observation it reads, calls
:meth:`~RL2Inputs.step` after every command with the command, the reward and whether the episode
ended, and resets the controller's recurrent state where :meth:`~RL2Inputs.step` says the trial ended.

Imports ``numpy`` only (no JAX): it runs on the robot computer beside :mod:`deploy.runtime`. The names
and values are those of :class:`sim.wrappers.Trial`, step by step (``tests/test_standin.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RL2_TAIL", "TRIAL_TIME", "RL2Inputs", "is_rl2", "rl2_input_names"]

# the names sim.wrappers.Trial gives its inputs (sim.wrappers.RL2_TAIL / TRIAL_TIME; repeated here so
# that this module needs no JAX; the test checks they agree)
RL2_TAIL = ("prev_reward", "prev_done")
TRIAL_TIME = "trial_time"


def rl2_input_names(action_names: Sequence[str], discrete: bool = False, time_input: bool = False) -> tuple[str, ...]:
    """The RL² input names :class:`sim.wrappers.Trial` appends (as :func:`sim.wrappers.rl2_input_names`)."""
    sep = "=" if discrete else "."
    return tuple(f"prev_action{sep}{n}" for n in action_names) + RL2_TAIL + ((TRIAL_TIME,) if time_input else ())


def is_rl2(obs_names: Sequence[str]) -> bool:
    """Whether observation names end with the RL² inputs (previous action, reward, done flag[, trial_time]);
    a dict observation's names carry their part, ``rl2.prev_reward`` (:data:`sim.wrappers.RL2_PART`)."""
    names = [n[4:] if str(n).startswith("rl2.") else n for n in obs_names]
    if names and names[-1] == TRIAL_TIME:
        names = names[:-1]
    return len(names) >= 3 and tuple(names[-2:]) == RL2_TAIL and str(names[-3]).startswith("prev_action")


class RL2Inputs:
    """The RL² inputs of one robot, updated after every command (see the module docstring).

    Args:
        action_names: the policy's action names (for a discrete policy: one per choice).
        episodes_per_trial: episodes in one trial (the env registry's ``episodes_per_trial``); the
            inputs return to zero, and :meth:`step` reports a trial end, after the last one.
        discrete: the action is a choice index (the previous action is one-hot).
        time_input: append ``trial_time`` (needs ``episode_length`` or ``max_trial_steps``).
        episode_length: control steps of one episode at most (``trial_time`` is the trial's step
            count over ``max_trial_steps = episodes_per_trial * episode_length``).
        max_trial_steps: that denominator given directly (as exported policies' metadata hold it).

    Attributes:
        names: the input names, in order (``prev_action.*`` or ``prev_action=*``, ``prev_reward``,
            ``prev_done``[, ``trial_time``]).
        inputs: the current inputs (float32, a copy).
        episode: episodes finished in the current trial.
        trial_step: steps taken in the current trial.
    """

    def __init__(self, action_names: Sequence[str], episodes_per_trial: int, *, discrete: bool = False,
                 time_input: bool = False, episode_length: int | None = None, max_trial_steps: int | None = None):
        self.action_names = tuple(action_names)
        if not self.action_names:
            raise ValueError("RL2Inputs needs at least one action name")
        if int(episodes_per_trial) < 1:
            raise ValueError(f"episodes_per_trial must be >= 1, got {episodes_per_trial}")
        self.episodes_per_trial = int(episodes_per_trial)
        self.discrete = bool(discrete)
        self.time_input = bool(time_input)
        if max_trial_steps is None and episode_length is not None:
            max_trial_steps = self.episodes_per_trial * int(episode_length)
        elif max_trial_steps is not None and episode_length is not None \
                and int(max_trial_steps) != self.episodes_per_trial * int(episode_length):
            raise ValueError(f"max_trial_steps {max_trial_steps} is not episodes_per_trial {episodes_per_trial} "
                             f"x episode_length {episode_length}")
        if self.time_input and (max_trial_steps is None or int(max_trial_steps) < 1):
            raise ValueError("time_input needs episode_length or max_trial_steps >= 1, got "
                             f"{episode_length} and {max_trial_steps}")
        self.max_trial_steps = None if max_trial_steps is None else int(max_trial_steps)
        self.names = rl2_input_names(self.action_names, self.discrete, self.time_input)
        self._x = np.zeros(len(self.names), np.float32)
        self.reset()

    @classmethod
    def from_metadata(cls, meta: dict) -> RL2Inputs:
        """The inputs an exported RL² policy reads, from its metadata (:func:`deploy.export.read_metadata`:
        ``obs_names``, ``action_names``, ``discrete``, ``episodes_per_trial`` and, for ``trial_time``,
        ``max_trial_steps`` or ``episode_length``)."""
        obs_names = list(meta["obs_names"])
        if not is_rl2(obs_names):
            raise ValueError(f"the policy reads no RL² inputs (its observation names end {obs_names[-3:]})")
        if meta.get("episodes_per_trial") is None:
            raise ValueError("an RL² policy's metadata needs episodes_per_trial")
        out = cls(meta["action_names"], int(meta["episodes_per_trial"]), discrete=bool(meta.get("discrete", False)),
                  time_input=obs_names[-1] == TRIAL_TIME, episode_length=meta.get("episode_length"),
                  max_trial_steps=meta.get("max_trial_steps"))
        if tuple(obs_names[-out.size:]) != out.names:
            raise ValueError(f"the policy's RL² inputs {obs_names[-out.size:]} are not {list(out.names)}")
        return out

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def inputs(self) -> np.ndarray:
        return self._x.copy()

    def reset(self) -> None:
        """A new trial: every input zero (as after :meth:`Trial.reset <sim.wrappers.Trial.reset>`)."""
        self._x[:] = 0.0
        self.episode = 0
        self.trial_step = 0

    def append(self, obs) -> np.ndarray:
        """``obs`` (the robot's own observation) followed by the RL² inputs, float32."""
        return np.concatenate([np.asarray(obs, np.float32).reshape(-1), self._x])

    def step(self, action, reward: float, done: bool) -> bool:
        """Record one control step: the command sent, its reward and whether the episode ended
        (terminated or out of time). Returns whether the trial ended (the inputs are then zero)."""
        n = len(self.action_names)
        if self.discrete:
            a = np.zeros(n, np.float32)
            i = int(np.asarray(action).reshape(()))
            if not 0 <= i < n:
                raise ValueError(f"discrete action {i} is not an index < {n}")
            a[i] = 1.0
        else:
            a = np.asarray(action, np.float32).reshape(-1)
            if a.shape != (n,):
                raise ValueError(f"action has {a.size} values, expected {n} ({', '.join(self.action_names)})")
        done = bool(done)
        self.trial_step += 1
        self.episode += int(done)
        trial_done = done and self.episode >= self.episodes_per_trial
        if trial_done:
            self.reset()  # a new trial starts from zero inputs
            return True
        self._x[:n] = a
        self._x[n] = np.float32(reward)
        self._x[n + 1] = float(done)
        if self.time_input:
            self._x[n + 2] = np.float32(self.trial_step) / np.float32(self.max_trial_steps)
        return False
