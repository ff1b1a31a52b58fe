"""The desired DNS state: which region's target the owned records should hold.

Written after every applied switch (CLI or daemon) and read by the daemon's reconciler, both from
the configured ``state_dir``. Writes are atomic (temporary file, fsync, rename): a reader sees the
old or the new state, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.atomic import write_json
from orchestrator.errors import HeliosError
from orchestrator.providers.dns import RecordSet

FILENAME = "dns-desired.json"


@dataclass(frozen=True, slots=True)
class DesiredState:
    region: str
    target: str
    records: tuple[RecordSet, ...]
    at: float
    """Wall clock of the switch that set this state."""

    def record(self, key: tuple[str, str]) -> RecordSet | None:
        return next((r for r in self.records if (r.name, r.type) == key), None)


def path_in(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / FILENAME


def save(state_dir: str | os.PathLike[str], state: DesiredState) -> Path:
    """Atomically write the desired state into ``state_dir`` (created if missing)."""
    target = path_in(state_dir)
    doc = {
        "region": state.region,
        "target": state.target,
        "at": state.at,
        "records": [
            {"name": r.name, "type": r.type, "ttl": r.ttl, "values": list(r.values)}
            for r in state.records
        ],
    }
    write_json(target, doc)
    return target


def load(state_dir: str | os.PathLike[str]) -> DesiredState | None:
    """The desired state, or None if no switch was ever recorded. Corrupt files are errors."""
    p = path_in(state_dir)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        return DesiredState(
            region=str(doc["region"]),
            target=str(doc["target"]),
            at=float(doc["at"]),
            records=tuple(
                RecordSet.make(r["name"], r["type"], int(r["ttl"]), list(r["values"]))
                for r in doc["records"]
            ),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeliosError(f"cannot read the desired DNS state {p}: {exc}") from None
