"""Operator controls (pause, resume, ack) and the decision engine's memory, on disk.

Both live in the configured ``state_dir`` so that the CLI and the daemon agree without a network
call: the CLI writes ``controls.json``; the daemon reads it every tick and persists its own
``decision.json`` (so a restart keeps the cooldown of the last automatic failover). Writes are
atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.atomic import write_json
from orchestrator.decision import Controls, Memory, State
from orchestrator.errors import HeliosError
from orchestrator.lag import PrimaryMark


def _write(path: Path, doc: dict[str, Any]) -> None:
    write_json(path, doc)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HeliosError(f"{path} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise HeliosError(f"{path} is not a JSON object")
    return doc


def load_controls(state_dir: str | os.PathLike[str]) -> Controls:
    doc = _read(Path(state_dir) / "controls.json") or {}
    acked = doc.get("acked_at")
    return Controls(
        paused=bool(doc.get("paused", False)), acked_at=float(acked) if acked is not None else None
    )


def save_controls(state_dir: str | os.PathLike[str], controls: Controls) -> None:
    _write(Path(state_dir) / "controls.json", asdict(controls))


def load_memory(state_dir: str | os.PathLike[str]) -> Memory:
    doc = _read(Path(state_dir) / "decision.json")
    if doc is None:
        return Memory()
    try:
        return Memory(
            state=State(doc["state"]),
            since=float(doc["since"]),
            reason=str(doc["reason"]),
            last_failover_at=doc.get("last_failover_at"),
            last_failover_from=doc.get("last_failover_from"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise HeliosError(f"decision.json in {state_dir} is unreadable: {exc}") from None


def save_memory(state_dir: str | os.PathLike[str], mem: Memory) -> None:
    doc = asdict(mem)
    doc["state"] = mem.state.value
    _write(Path(state_dir) / "decision.json", doc)


def mark_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / "primary-mark.json"


def save_mark(path: Path, mark: PrimaryMark) -> None:
    """The last primary position seen (atomic rename; not fsynced: refreshed every tick)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(mark)), encoding="utf-8")
    tmp.replace(path)


def load_mark(path: Path) -> PrimaryMark | None:
    """The saved mark, or None when absent or unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return PrimaryMark(str(doc["node"]), doc["seq"], doc["lsn"], float(doc["at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
