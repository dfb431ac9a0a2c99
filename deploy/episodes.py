"""Recorded episodes: what a robot runs with an exploring gradient-learner policy, saved for adaptation.

The controller (:class:`~deploy.runtime.Controller` with ``explore=True``) samples each action from
the policy's Gaussian (the ``action_mean`` and ``action_std`` outputs of a MAML/ProMP ``policy.onnx``);
an :class:`EpisodeRecorder` keeps each step's observation, unclipped sample and reward, and saves the
episodes as one ``.npz`` file. ``proteus adapt RUN --episodes FILE`` (JAX) or ``adapt.onnx``
(onnxruntime alone, on the robot) turns them into adapted weights.

The file (``FORMAT``)::

    obs      float32 [E, H, obs_dim]   the policy's input at each step (zeros after the episode's end)
    action   float32 [E, H, act_dim]   the sampled action before the clip to the bounds, actuator units
    reward   float32 [E, H]
    mask     float32 [E, H]            1 on the steps that happened (a prefix of each row)
    latent   float32 [E, L]            optional: the latent ``z`` each episode was played with (a MAESN
                                       policy explores by drawing one per episode)
    obs_names, action_names            str arrays: the policy's names, checked by every reader
    format, control_dt                 the format tag and the control period (s)

NumPy only: this module runs on a robot computer.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deploy.files import write_atomic

FORMAT = "proteus-episodes/1"
ARRAYS = ("obs", "action", "reward", "mask")

__all__ = ["ARRAYS", "FORMAT", "EpisodeRecorder", "check_episodes", "load_episodes"]


class EpisodeRecorder:
    """Collects a robot's episodes step by step (see the module docstring).

    Args:
        obs_names, action_names: the policy's (its metadata's ``obs_names`` / ``action_names``).
        horizon: the longest episode kept (the rows' length H); a longer episode raises.
        control_dt: the control period (s), written to the file.

    Call :meth:`add` after every control step with the step's observation, the action sampled (before
    any clip) and the reward that followed; :meth:`end_episode` when an episode ends;
    :meth:`discard_episode` to drop one cut short by a fault (its steps are not the policy's).
    """

    def __init__(self, obs_names: Sequence[str], action_names: Sequence[str], horizon: int,
                 control_dt: float | None = None):
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        self.obs_names = tuple(str(n) for n in obs_names)
        self.action_names = tuple(str(n) for n in action_names)
        self.horizon = int(horizon)
        self.control_dt = None if control_dt is None else float(control_dt)
        self._episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._latents: list[np.ndarray | None] = []
        self._obs: list[np.ndarray] = []
        self._act: list[np.ndarray] = []
        self._rew: list[float] = []

    @property
    def episodes(self) -> int:
        """Finished episodes kept."""
        return len(self._episodes)

    @property
    def steps_in_episode(self) -> int:
        return len(self._rew)

    def add(self, obs, action, reward: float) -> None:
        """One step: the observation the policy read, the action it sampled (actuator units, unclipped)
        and the reward."""
        obs = np.asarray(obs, np.float32).reshape(-1)
        action = np.asarray(action, np.float32).reshape(-1)
        if obs.shape != (len(self.obs_names),):
            raise ValueError(f"observation has {obs.size} values, the policy reads {len(self.obs_names)}")
        if action.shape != (len(self.action_names),):
            raise ValueError(f"action has {action.size} values, the policy has {len(self.action_names)} actuators")
        reward = float(reward)
        if not (math.isfinite(reward) and np.all(np.isfinite(obs)) and np.all(np.isfinite(action))):
            raise ValueError(f"step {len(self._rew)} of episode {len(self._episodes)} holds NaN or inf "
                             f"(reward {reward}); discard the episode instead")
        if len(self._rew) >= self.horizon:
            raise ValueError(f"episode {len(self._episodes)} is longer than the horizon ({self.horizon} steps); "
                             "call end_episode() at each episode's end")
        self._obs.append(obs)
        self._act.append(action)
        self._rew.append(reward)

    def end_episode(self, latent=None) -> None:
        """Close the episode in progress (nothing happens if it has no step). ``latent``: the latent
        ``z`` the episode was played with (a MAESN policy's), recorded for every episode or for none."""
        if self._rew:
            if latent is not None:
                latent = np.asarray(latent, np.float32).reshape(-1)
                if not np.all(np.isfinite(latent)):
                    raise ValueError(f"episode {len(self._episodes)}'s latent holds NaN or inf")
            known = [x for x in self._latents if x is not None]
            if self._episodes and (latent is None) != (not known):
                raise ValueError(f"episode {len(self._episodes)}: a latent must be recorded for every episode or for "
                                 f"none ({'got none' if latent is None else 'the earlier episodes had none'})")
            if latent is not None and known and latent.shape != known[0].shape:
                raise ValueError(f"episode {len(self._episodes)}'s latent has {latent.size} values, the earlier "
                                 f"ones {known[0].size}")
            self._episodes.append((np.stack(self._obs), np.stack(self._act), np.asarray(self._rew, np.float32)))
            self._latents.append(latent)
        self.discard_episode()

    def discard_episode(self) -> None:
        """Drop the episode in progress (its latent, if any, is never recorded)."""
        self._obs, self._act, self._rew = [], [], []

    def arrays(self) -> dict[str, np.ndarray]:
        """The finished episodes as ``obs``, ``action``, ``reward``, ``mask`` [E, H, ...] (zero-padded)."""
        E, H = len(self._episodes), self.horizon
        out = {"obs": np.zeros((E, H, len(self.obs_names)), np.float32),
               "action": np.zeros((E, H, len(self.action_names)), np.float32),
               "reward": np.zeros((E, H), np.float32), "mask": np.zeros((E, H), np.float32)}
        for e, (o, a, r) in enumerate(self._episodes):
            n = len(r)
            out["obs"][e, :n], out["action"][e, :n], out["reward"][e, :n], out["mask"][e, :n] = o, a, r, 1.0
        if self._latents and self._latents[0] is not None:
            out["latent"] = np.stack(self._latents).astype(np.float32)
        return out

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the finished episodes to ``path`` (``.npz``, atomically); refuses an empty recording."""
        if not self._episodes:
            raise ValueError("no finished episode to save (call end_episode() at each episode's end)")
        buf = io.BytesIO()
        np.savez(buf, **self.arrays(), obs_names=np.asarray(self.obs_names), action_names=np.asarray(self.action_names),
                 format=np.asarray(FORMAT), control_dt=np.asarray(np.nan if self.control_dt is None else self.control_dt))
        return write_atomic(Path(path), buf.getvalue(), overwrite=overwrite)


def load_episodes(path) -> dict:
    """Read an episode file: ``{"obs", "action", "reward", "mask"}`` arrays plus ``obs_names``,
    ``action_names`` (tuples) and ``control_dt`` (``None`` if not recorded).

    Raises:
        FileNotFoundError: no file.
        ValueError: not an episode file, or its arrays disagree with each other (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no episode file at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 (zip and format errors alike)
        raise ValueError(f"{path} is not an episode file (.npz from EpisodeRecorder.save): {type(e).__name__}: {e}") from e
    missing = [k for k in (*ARRAYS, "obs_names", "action_names") if k not in data]
    if missing:
        raise ValueError(f"{path} lacks {missing} (an episode file holds {', '.join(ARRAYS)}, obs_names, action_names)")
    out = {k: np.asarray(data[k], np.float32) for k in ARRAYS}
    if "latent" in data:
        out["latent"] = np.asarray(data["latent"], np.float32)
    out["obs_names"] = tuple(str(n) for n in data["obs_names"].reshape(-1))
    out["action_names"] = tuple(str(n) for n in data["action_names"].reshape(-1))
    dt = float(data["control_dt"]) if "control_dt" in data else math.nan
    out["control_dt"] = None if not math.isfinite(dt) else dt
    _check_shapes(out, path)
    return out


def _check_shapes(ep: dict, where) -> None:
    obs, act, rew, mask = (ep[k] for k in ARRAYS)
    if rew.ndim != 2 or rew.shape[0] < 1 or rew.shape[1] < 1:
        raise ValueError(f"{where}: reward must be [episodes, steps], got shape {rew.shape}")
    E, H = rew.shape
    want = {"obs": (E, H, len(ep["obs_names"])), "action": (E, H, len(ep["action_names"])), "mask": (E, H)}
    for k, shape in want.items():
        if ep[k].shape != shape:
            raise ValueError(f"{where}: {k} has shape {ep[k].shape}, expected {shape} (reward is {rew.shape}; "
                             f"{len(ep['obs_names'])} obs_names, {len(ep['action_names'])} action_names)")
    if "latent" in ep and (ep["latent"].ndim != 2 or ep["latent"].shape[0] != E or not np.all(np.isfinite(ep["latent"]))):
        raise ValueError(f"{where}: latent must be [episodes, latent_dim] = [{E}, L] and finite, got shape "
                         f"{ep['latent'].shape}")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{where}: mask holds values other than 0 and 1")
    if np.any(np.diff(mask, axis=1) > 0):
        e = int(np.argmax(np.any(np.diff(mask, axis=1) > 0, axis=1)))
        raise ValueError(f"{where}: episode {e}'s mask is not a prefix (a step after the episode's end is marked)")
    if np.any(mask[:, 0] == 0):
        raise ValueError(f"{where}: episode {int(np.argmin(mask[:, 0]))} is empty (mask all 0)")
    for k in ("obs", "action", "reward"):
        if not np.all(np.isfinite(ep[k])):
            raise ValueError(f"{where}: {k} holds NaN or inf")


def check_episodes(ep: dict, obs_names: Sequence[str], action_names: Sequence[str], horizon: int,
                   control_dt: float | None = None, where="episodes") -> None:
    """Refuse episodes that do not fit a policy, naming each difference: observation and action names
    (count, missing, extra, order), episodes longer than ``horizon`` steps, another control period.
    Episodes shorter than ``horizon`` are fine (:func:`pad_to`)."""
    from deploy.runtime import _names_mismatch

    errs = _names_mismatch("observation", ep["obs_names"], obs_names)
    errs += _names_mismatch("action", ep["action_names"], action_names)
    H = ep["reward"].shape[1]
    if H > horizon:
        longest = int(ep["mask"].sum(1).max())
        if longest > horizon:
            errs.append(f"episodes of up to {longest} steps, longer than the policy's horizon ({horizon} steps)")
    if control_dt is not None and ep.get("control_dt") is not None and not abs(ep["control_dt"] - control_dt) <= 1e-9 * control_dt:
        errs.append(f"control_dt: recorded at {ep['control_dt']!r} s, the policy runs at {control_dt!r} s")
    if errs:
        raise ValueError(f"{where} do not fit the policy:\n  - " + "\n  - ".join(errs))


def pad_to(ep: dict, horizon: int) -> dict[str, np.ndarray]:
    """The arrays of ``ep`` with exactly ``horizon`` steps per row (zero-padded, or cut after the last
    recorded step)."""
    H = ep["reward"].shape[1]
    out = {}
    for k in ARRAYS:
        x = ep[k][:, :horizon]
        if H < horizon:
            pad = [(0, 0), (0, horizon - H)] + [(0, 0)] * (x.ndim - 2)
            x = np.pad(x, pad)
        out[k] = np.ascontiguousarray(x, np.float32)
    if "latent" in ep:
        out["latent"] = np.ascontiguousarray(ep["latent"], np.float32)
    return out
