"""The run journal: an append-only JSON-lines file, one per state directory.

Guarantees:

* :meth:`Journal.append` returns only after the record is on disk: the line is written with
  one ``write``, then the file is ``fsync``-ed, and when the call created the file the directory
  is ``fsync``-ed too. Any failure raises :class:`OSError` to the caller, which must not go on as
  if the record had been written. Records are never rewritten or removed.
* Every record has ``run``, ``seq`` (strictly increasing over the whole file, also across
  restarts), ``at`` (wall-clock seconds) and ``kind`` (one of :data:`KINDS`).
* Reading tolerates a torn last line (a crash in the middle of a write): it is ignored and
  reported in :attr:`Journal.warnings` and the log. The next append first terminates such a
  line, so the new record is never glued to it. Any other unparsable line is skipped the same
  way.
* Thread-safe within one process (the executor appends through ``asyncio.to_thread``); one
  process writes a journal at a time (the daemon holding the leadership lease).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import structlog

log = structlog.get_logger("helios.journal")

Kind = Literal[
    "run_started",
    "step_started",
    "step_finished",
    "step_failed",
    "run_finished",
    "run_aborted",
    "note",
]
KINDS: Final[frozenset[str]] = frozenset(Kind.__args__)  # type: ignore[attr-defined]
JOURNAL_FILE: Final = "journal.jsonl"


def new_run_id(runbook: str, now: float | None = None) -> str:
    """``<utc yyyymmddThhmmss>-<runbook>-<6 hex>``, e.g. ``20250101T120000-failover-a1b2c3``."""
    when = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    return f"{when:%Y%m%dT%H%M%S}-{runbook}-{secrets.token_hex(3)}"


def _default(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path | datetime):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object, *, sort_keys: bool = False) -> str:
    """Compact JSON (dataclasses, enums, sets and paths converted); TypeError if the value
    cannot be represented. ``sort_keys`` gives a canonical form for checksums."""
    return json.dumps(
        value,
        default=_default,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
        sort_keys=sort_keys,
    )


def to_jsonable(value: object) -> Any:
    """``value`` as it reads back from the journal (tuples become lists, dataclasses dicts)."""
    return json.loads(dumps(value))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Everything the journal holds about one run, in file order."""

    run_id: str
    records: tuple[dict[str, Any], ...]

    def _first(self, kind: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r["kind"] == kind), None)

    @property
    def started(self) -> dict[str, Any] | None:
        """The ``run_started`` record (None if it was lost)."""
        return self._first("run_started")

    @property
    def runbook(self) -> str | None:
        return self.started.get("runbook") if self.started else None

    @property
    def checksum(self) -> str | None:
        return self.started.get("checksum") if self.started else None

    @property
    def context(self) -> dict[str, Any]:
        return dict(self.started.get("context") or {}) if self.started else {}

    @property
    def started_at(self) -> float | None:
        return self.started.get("at") if self.started else None

    @property
    def finished(self) -> bool:
        """True once a ``run_finished`` or ``run_aborted`` record exists."""
        return any(r["kind"] in ("run_finished", "run_aborted") for r in self.records)

    @property
    def status(self) -> str:
        """completed | aborted | awaiting_approval | running (started, not ended: in flight or
        interrupted)."""
        for r in reversed(self.records):
            if r["kind"] == "run_finished":
                return "completed"
            if r["kind"] == "run_aborted":
                return "aborted"
            if r["kind"] == "note" and r.get("event") == "awaiting_approval":
                return "awaiting_approval"
            if r["kind"] == "note" and r.get("event") == "resumed":
                break
            if r["kind"] != "note":
                break
        return "running"

    def step_states(self) -> dict[str, dict[str, Any]]:
        """Step name -> its latest step record (``step_started`` means started, not ended)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.records:
            if r["kind"] in ("step_started", "step_finished", "step_failed"):
                out[r["step"]] = r
        return out

    def approved_steps(self) -> set[str]:
        return {
            r["step"] for r in self.records if r["kind"] == "note" and r.get("event") == "approved"
        }


class Journal:
    """An append-only JSON-lines journal; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._next_seq: int | None = None
        self._checked_tail = False
        self.warnings: list[str] = []
        """What the last read (or the first append) had to ignore or repair."""

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str]) -> Journal:
        return cls(Path(state_dir) / JOURNAL_FILE)

    # --- writing ---------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record durably; returns it with ``seq`` (and ``at`` if absent) filled in.

        ``record`` needs ``run`` and a ``kind`` from :data:`KINDS`; ValueError otherwise,
        TypeError if it is not JSON-serialisable, OSError if it could not be made durable.
        """
        run, kind = record.get("run"), record.get("kind")
        if not isinstance(run, str) or not run or kind not in KINDS:
            raise ValueError(f"a journal record needs a run id and a kind, got {run!r}/{kind!r}")
        with self._lock:
            if self._next_seq is None:
                self._next_seq = self._max_seq() + 1
            full = {"run": run, "seq": self._next_seq, "at": record.get("at", self._clock())}
            full["kind"] = kind
            full.update({k: v for k, v in record.items() if k not in full})
            line = (dumps(full) + "\n").encode("utf-8")
            self._write(line)
            self._next_seq += 1
        return full

    def _write(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o640)
            created = True
        except FileExistsError:
            fd = os.open(self.path, flags)
            created = False
        try:
            if not self._checked_tail:
                line = self._terminate_torn_tail(fd) + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._checked_tail = True
        if created:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _terminate_torn_tail(self, fd: int) -> bytes:
        """b"\\n" when the file ends in a torn line (so the next record starts on its own)."""
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        with self.path.open("rb") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return b""
        msg = f"{self.path}: terminated a torn last line (an earlier crash mid-write)"
        self.warnings.append(msg)
        log.warning(msg, reason="JOURNAL_TORN_LINE")
        return b"\n"

    def _max_seq(self) -> int:
        return max((r["seq"] for r in self._read()), default=0)

    # --- reading ---------------------------------------------------------------------------

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        last = len(lines) - 1  # the text after the final newline ("" when the file is whole)
        out: list[dict[str, Any]] = []
        warnings: list[str] = []
        for n, raw in enumerate(lines):
            if not raw.strip():
                continue
            record = _parse(raw)
            if record is not None:
                out.append(record)
            elif n == last:
                warnings.append(
                    f"{self.path}: ignored a torn last line ({len(raw)} bytes; a crash mid-write)"
                )
            else:
                warnings.append(f"{self.path}:{n + 1}: ignored a line that is not a valid record")
        for w in warnings:
            log.warning(w, reason="JOURNAL_BAD_LINE")
        self.warnings = warnings
        return out

    def records(self) -> list[dict[str, Any]]:
        """Every valid record in file order."""
        with self._lock:
            return self._read()

    def runs(self) -> dict[str, RunRecord]:
        """Every run in the journal, by run id, in order of first appearance."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for r in self.records():
            grouped.setdefault(r["run"], []).append(r)
        return {run: RunRecord(run, tuple(recs)) for run, recs in grouped.items()}

    def unfinished(self) -> list[RunRecord]:
        """Runs that started and have neither ``run_finished`` nor ``run_aborted``: interrupted
        (the process died) or waiting for approval. Oldest first."""
        return [r for r in self.runs().values() if r.started is not None and not r.finished]


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    if not (
        isinstance(value, dict)
        and isinstance(value.get("run"), str)
        and isinstance(value.get("seq"), int)
        and value.get("kind") in KINDS
    ):
        return None
    return value
