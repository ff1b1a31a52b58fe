"""What the retry engines share: error classes, Retry-After-aware exponential backoff and the
stop condition for a Retry-After beyond the retry policy's longest delay.

Used by the DNS switch (per provider), the runbook executor (per step) and the notification
channels (per message); all retry only :class:`~orchestrator.errors.TransientError` with
tenacity.
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState
from tenacity.stop import stop_base

from orchestrator.errors import (
    OperationTimeout,
    PermanentError,
    RunbookError,
    TransientError,
    UnsafePlan,
)


def error_class(exc: BaseException) -> str:
    """timeout | transient | permanent | unsafe | template | internal."""
    if isinstance(exc, OperationTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, PermanentError):
        return "permanent"
    if isinstance(exc, UnsafePlan):
        return "unsafe"
    if isinstance(exc, RunbookError):
        return "template"
    return "internal"


def retry_after_hint(state: RetryCallState) -> float | None:
    """The provider's Retry-After (seconds) carried by the last attempt's TransientError."""
    exc = state.outcome.exception() if state.outcome else None
    return exc.retry_after if isinstance(exc, TransientError) else None


def backoff(initial: float, max_delay: float) -> Callable[[RetryCallState], float]:
    """Exponential backoff from ``initial`` capped at ``max_delay``, never shorter than a
    Retry-After hint."""

    def wait(state: RetryCallState) -> float:
        delay = float(min(max_delay, initial * 2 ** (state.attempt_number - 1)))
        hint = retry_after_hint(state)
        return max(delay, hint) if hint else delay

    return wait


class RetryAfterBeyond(stop_base):
    """Stop retrying when the provider asks to wait longer than ``limit`` (the retry policy's
    ``max_delay``): waiting that long would break the caller's time bound."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        hint = retry_after_hint(retry_state)
        return hint is not None and hint > self.limit
