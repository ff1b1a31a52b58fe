"""What the retry engines share: error classes and Retry-After-aware exponential backoff.

Used by the DNS switch (per provider) and the runbook executor (per step); both retry only
:class:`~orchestrator.errors.TransientError` with tenacity.
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState

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
