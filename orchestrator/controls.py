"""Operator controls (pause, resume, ack) and the decision engine's memory, on disk.

Both live in the configured ``state_dir`` so that the CLI and the daemon agree without a network
call: the CLI writes ``controls.json``; the daemon reads it every tick and persists its own
``decision.json`` (so a restart keeps the cooldown of the last automatic failover). Writes are
atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import time
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
    lock = active_drill(state_dir)
    return Controls(
        paused=bool(doc.get("paused", False)),
        acked_at=float(acked) if acked is not None else None,
        drill=lock["id"] if lock else None,
    )


def save_controls(state_dir: str | os.PathLike[str], controls: Controls) -> None:
    doc = asdict(controls)
    doc.pop("drill", None)  # the drill lock lives in drill.json
    _write(Path(state_dir) / "controls.json", doc)


def _drill_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / "drill.json"


def active_drill(
    state_dir: str | os.PathLike[str], now: float | None = None
) -> dict[str, Any] | None:
    """The drill lock if a drill holds it and it has not expired (a crashed drill's lock
    lapses at ``expires_at``), else None."""
    doc = _read(_drill_path(state_dir))
    if not doc or "id" not in doc:
        return None
    now = time.time() if now is None else now
    if float(doc.get("expires_at", 0.0)) <= now:
        return None
    return doc


def acquire_drill(state_dir: str | os.PathLike[str], drill_id: str, expires_at: float) -> None:
    """Take the drill lock; raises HeliosError when another live drill holds it."""
    current = active_drill(state_dir)
    if current is not None and current["id"] != drill_id:
        raise HeliosError(f"drill {current['id']} is already running")
    _write(
        _drill_path(state_dir),
        {"id": drill_id, "pid": os.getpid(), "started_at": time.time(), "expires_at": expires_at},
    )


def release_drill(state_dir: str | os.PathLike[str], drill_id: str) -> None:
    """Drop the lock if ``drill_id`` holds it."""
    doc = _read(_drill_path(state_dir))
    if doc and doc.get("id") == drill_id:
        _drill_path(state_dir).unlink(missing_ok=True)


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
