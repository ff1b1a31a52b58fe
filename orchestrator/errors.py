"""Error hierarchy. The exception type decides what happens next.

::

    HeliosError
    ├── ConfigError          bad configuration: reported with field paths, exit code 2
    │   └── RunbookError     a runbook is invalid, or its parameters do not render
    ├── UsageError           bad command-line use or arguments: exit code 2
    ├── SandboxError         the local sandbox cannot do what was asked: exit code 1
    ├── UnsafePlan           a plan breaks a safety rail; nothing was changed: exit code 4
    └── OperationError       a provider call failed
        ├── TransientError   worth retrying (timeouts, 5xx, 429 with ``retry_after``)
        │   └── OperationTimeout
        └── PermanentError   retrying cannot help (auth, permission, not found, bad request)

Only the CLI maps these to exit codes; nothing below it calls ``sys.exit``.
"""

from __future__ import annotations


class HeliosError(Exception):
    """Base of every error the orchestrator raises on purpose."""

    exit_code = 1


class ConfigError(HeliosError):
    """The configuration is invalid. ``problems`` holds one ``path: message`` line each."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class RunbookError(ConfigError):
    """A runbook is invalid (``steps[2] (promote).timeout: field required``) or one of its
    parameter templates could not be rendered against the plan context."""


class UsageError(HeliosError):
    """The command line asked for something that cannot be done as asked."""

    exit_code = 2


class NotFound(HeliosError):
    """No record with that id (incident, drill, report)."""


class SandboxError(HeliosError):
    """The local sandbox could not carry out a command."""


class UnsafePlan(HeliosError):
    """A plan breaks a safety rail and was refused before anything changed."""

    exit_code = 4


class Busy(UnsafePlan):
    """Another run or drill holds the topology; nothing was changed (try again later)."""


class OperationError(HeliosError):
    """A call to a provider (database, DNS, notifications) failed."""


class TransientError(OperationError):
    """Retrying may help. ``retry_after`` (seconds) is a hint from the provider, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OperationTimeout(TransientError):
    """The call did not finish within its deadline."""


class PermanentError(OperationError):
    """Retrying cannot help: authentication, permission, missing object, invalid request."""
