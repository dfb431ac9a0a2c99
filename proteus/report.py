"""Benchmark rows and their JSON form (``--json PATH``)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class BenchRow:
    """One measured figure beside its named baseline."""

    name: str
    value: float
    baseline: float | None
    baseline_name: str
    unit: str = ""
    ci95: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or not math.isfinite(self.baseline):
            return None
        return self.value / self.baseline


def write_json(rows: list[BenchRow], path: Path, extra: dict | None = None) -> None:
    """Write rows (name, value, baseline, ratio, ...) to ``path``; never silently overwrites a directory."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--json {path} is a directory; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows],
        **(extra or {}),
    }
    path.write_text(json.dumps(data, indent=2))
