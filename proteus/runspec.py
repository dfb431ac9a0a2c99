"""What a run folder is (``config.json``: learner, env, backend, seed, config), read without JAX.

:func:`read_run_spec` is the one reader of ``config.json``; it imports no JAX or MuJoCo, so the CLI
refuses a missing, foreign or corrupt run folder at once, before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import sim
from meta_rl import learners
from meta_rl.learners import Learner


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a run is: learner (``algo``, a registered name), env, backend, seed and the learner's
    config (``config.json``)."""

    algo: str
    env: str
    backend: str
    seed: int
    config: Any

    @property
    def learner(self) -> Learner:
        return learners.get(self.algo)

    def to_json(self) -> dict:
        return {"algo": self.algo, "env": self.env, "backend": self.backend, "seed": self.seed,
                "config": dataclasses.asdict(self.config)}


def read_run_spec(out: Path) -> RunSpec:
    """The :class:`RunSpec` in a run folder's ``config.json``; errors name the path."""
    out = Path(out)
    if not out.exists():
        raise FileNotFoundError(f"run folder {out} does not exist")
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder: not a run folder")
    cfg = out / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{cfg} is missing: {out} is not a run folder")
    try:
        d = json.loads(cfg.read_text())
        learner = learners.get(str(d["algo"]))
        spec = RunSpec(str(d["algo"]), str(d["env"]), str(d["backend"]), int(d["seed"]),
                       learner.config_from_dict(dict(d["config"])))
    except KeyError as e:
        msg = e.args[0] if e.args else str(e)
        if isinstance(msg, str) and msg.startswith("unknown learner"):
            raise ValueError(f"{cfg} names a learner this installation does not know: {msg}") from None
        raise ValueError(f"corrupt {cfg}: missing {e}") from None
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"corrupt {cfg}: {e}") from None
    try:
        sim.entry(spec.env)
    except KeyError as e:
        raise ValueError(f"{cfg} names an env this version does not know: {e.args[0]}") from None
    return spec
