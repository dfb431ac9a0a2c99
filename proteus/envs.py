"""``proteus envs``: the registry as a table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from proteus.console import make_console
from rich.table import Table

import sim
from randomization.ranges import SplitRange


def _describe(space) -> str:
    """``Box(n)`` for a vector; ``Dict(image: Box(64x64x3 uint8), ...)`` for a dict observation."""
    if hasattr(space, "items"):
        return "Dict(" + ", ".join(f"{n}: {sp.describe()}" for n, sp in space.items()) + ")"
    return space.describe()


def env_rows() -> list[dict]:
    """One dict per registered env (id, backend, spaces, family, trial, randomized params, splits)."""
    rows = []
    for env_id in sim.registered():
        e = sim.entry(env_id)
        env = sim.make(env_id)
        base = env.unwrapped
        params = base.param_ranges()
        rows.append({
            "id": env_id,
            "backend": "/".join(e.backends),
            "family": base.family,
            "obs": _describe(base.observation_space),
            "trial_obs": _describe(env.observation_space),
            "action": base.action_space.describe(),
            "trial": f"{e.episodes_per_trial} × {base.episode_length} steps",
            "randomized": list(params),
            "splits": base.split_description(),
            "ranges": {k: (v.describe() if isinstance(v, SplitRange) else v) for k, v in params.items()},
            "labels": {k: v.name for k, v in params.items() if isinstance(v, SplitRange) and v.name != k},
            "description": e.description,
        })
    return rows


def print_envs(verbose: bool = False, console: Console | None = None) -> None:
    console = console or make_console()
    rows = env_rows()
    table = Table(title="registered envs: sim.make(ID) · proteus train ALGO --env ID")
    table.add_column("id", no_wrap=True)
    table.add_column("backend")
    table.add_column("family")
    table.add_column("obs (+RL² inputs)")
    table.add_column("action")
    table.add_column("trial")
    table.add_column("randomized")
    for r in rows:
        table.add_row(r["id"], r["backend"], r["family"], f"{r['obs']} → {r['trial_obs']}", r["action"],
                      r["trial"], escape(", ".join(r["randomized"])))
    console.print(table)
    console.print("Any MuJoCo robot with task parameters also runs as ID+task (e.g. cheetah-dir+task): its task "
                  "parameters appended to the observation, to train an oracle for proteus eval --oracle.", soft_wrap=True)
    if not verbose:
        console.print("proteus envs --verbose shows each family's parameter ranges per split.")
        return
    seen = set()
    for r in rows:
        if r["family"] in seen:
            continue
        seen.add(r["family"])
        ids = [x["id"] for x in rows if x["family"] == r["family"]]
        console.print(f"\n[bold]{r['family']}[/bold] ({', '.join(ids)})", soft_wrap=True)
        for name, rng in r["ranges"].items():
            if isinstance(rng, dict):
                if len(set(rng.values())) == 1:
                    text = next(iter(rng.values()))
                else:
                    text = " · ".join(f"{split} {v}" for split, v in rng.items())
            else:
                text = rng
            label = f" ({r['labels'][name]})" if name in r["labels"] else ""
            console.print(escape(f"  {name}{label}: {text}"), soft_wrap=True)
