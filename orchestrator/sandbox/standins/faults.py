"""Switchable faults for the HTTP stand-ins, and a log of the requests they served.

A :class:`FaultPlan` holds a list of injected faults. For each API request the stand-in asks the
plan for the first fault that matches (method and path filter) and still has uses left; that
use is consumed. The stand-in then renders the fault in its provider's own shape (status and
error envelope, ``Retry-After``, delay, hang, malformed body, Cloudflare's ``"success": false``).

Thread-safe: the stand-ins serve every request on its own thread, and tests inject and clear
faults from theirs.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request a stand-in received.

    ``path`` is the raw request target (query string included); ``at`` is ``time.monotonic()``
    when the request arrived; ``status`` is the HTTP status sent, or 0 when no answer was sent
    (a hung request released by ``stop()``).
    """

    method: str
    path: str
    at: float
    status: int


@dataclass(slots=True)
class Fault:
    """One injected fault; see :meth:`FaultPlan.inject`. ``remaining`` None means unlimited."""

    status: int | None = None
    remaining: int | None = 1
    retry_after: float | None = None
    delay: float = 0.0
    hang: bool = False
    malformed: bool = False
    success_false: bool = False
    methods: frozenset[str] | None = None
    path_contains: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass(slots=True)
class _Release:
    """Set when hung requests must stop waiting; ``stopping`` says whether to answer at all."""

    event: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False


class FaultPlan:
    """Faults to apply to matching requests, and the request log (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._log: list[RequestRecord] = []
        self._release = _Release()
        self._hung = 0

    def inject(
        self,
        status: int | None = None,
        count: int | None = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
        hang: bool = False,
        malformed: bool = False,
        success_false: bool = False,
        methods: set[str] | None = None,
        path_contains: str | None = None,
    ) -> Fault:
        """Apply a fault to the next ``count`` matching requests (None: until :meth:`clear`).

        * ``status``: answer with this HTTP status and the provider's error envelope;
        * ``retry_after``: add a ``Retry-After: <seconds>`` header (with ``status``, or alone on
          an otherwise normal answer);
        * ``delay``: sleep this long before answering (then answer normally, or with the fault);
        * ``hang``: never answer until :meth:`clear` (then the request is served normally) or the
          stand-in stops (then the connection is closed without an answer);
        * ``malformed``: HTTP 200 whose body is not valid JSON;
        * ``success_false``: HTTP 200 with ``"success": false`` (Cloudflare's envelope);
        * ``methods`` / ``path_contains``: only requests with one of these methods and whose
          raw path (query included) contains this text.

        Faults are tried in injection order; the first that matches is used. Returns the fault,
        whose ``hits`` and ``remaining`` can be inspected.
        """
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for 'until cleared'")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status")
        if delay < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError("delay and retry_after must not be negative")
        fault = Fault(
            status=status,
            remaining=count,
            retry_after=retry_after,
            delay=delay,
            hang=hang,
            malformed=malformed,
            success_false=success_false,
            methods=frozenset(m.upper() for m in methods) if methods is not None else None,
            path_contains=path_contains,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault and let hung requests go on (they are then served normally)."""
        with self._lock:
            self._faults.clear()
            release, self._release = self._release, _Release()
        release.event.set()

    def release_all(self) -> None:
        """Used by ``stop()``: remove every fault; hung requests end without an answer."""
        with self._lock:
            self._faults.clear()
            release = self._release
            release.stopping = True
        release.event.set()

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, in arrival order. A request is logged just before its answer
        is sent (or when it is dropped), so one still delayed or hung is not in it yet."""
        with self._lock:
            return list(self._log)

    # --- used by the stand-ins ------------------------------------------------------------

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, consuming one use of it (None: serve normally)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.hits += 1
                    return fault
        return None

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` (a fault's delay), cut short by :meth:`clear` or ``stop()``;
        False when the stand-in is stopping (drop the request)."""
        with self._lock:
            release = self._release
        release.event.wait(seconds)
        return not release.stopping

    @property
    def hung(self) -> int:
        """How many requests are hanging right now (to wait until a client is stuck)."""
        with self._lock:
            return self._hung

    def wait_hung(self) -> bool:
        """Block a hung request until released; True to serve it, False to drop it."""
        with self._lock:
            release = self._release
            self._hung += 1
        try:
            release.event.wait()
        finally:
            with self._lock:
                self._hung -= 1
        return not release.stopping

    def record(self, method: str, path: str, at: float, status: int) -> None:
        with self._lock:
            bisect.insort(self._log, RequestRecord(method, path, at, status), key=_arrival)


def _arrival(record: RequestRecord) -> float:
    return record.at
