"""Operator commands (fence, rejoin, a drill's failure command): argv templates filled in and
run as child processes.

Guarantees of :func:`run_command`:

* **No shell.** The argv runs as given, stdin from ``/dev/null``, in a process group of its own.
* **Bounded.** It finishes within ``timeout`` or its whole process group is killed (likewise on
  cancellation, which then propagates); the killed process is reaped for at most 5 more
  seconds.
* **Typed failures.** :class:`~orchestrator.errors.PermanentError` when it cannot start or exits
  non-zero (with the last 600 characters of its output), :class:`OperationTimeout` when it was
  killed for the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Final

from orchestrator.errors import OperationTimeout, PermanentError

OUTPUT_TAIL: Final = 600
"""How much of a failed command's output its error quotes (characters, from the end)."""
REAP_TIMEOUT: Final = 5.0


def fill_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """``template`` with its ``{name}`` fields filled in from ``values``. ValueError naming
    the field that cannot be filled in and the names available."""
    try:
        return [item.format_map(values) for item in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"cannot fill in {exc} (available: {', '.join(sorted(values))})") from None


async def run_command(argv: Sequence[str], timeout: float, *, label: str = "") -> str:
    """Run ``argv`` within ``timeout`` (see the module docstring); its stdout.

    Error messages start with ``label`` (e.g. ``n1: fence_command``), else name the program:
    ``{label} could not start '...'``, ``{label or argv[0]} did not finish within ...``,
    ``{label or argv[0]} exited with status ...``.
    """
    name = label or argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        where = f"{label} could not start" if label else "could not start"
        raise PermanentError(f"{where} {argv[0]!r}: {exc}") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException as exc:  # timeout or cancellation: never leave it running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):  # a second cancellation still propagates
            async with asyncio.timeout(REAP_TIMEOUT):
                await proc.communicate()
        if isinstance(exc, TimeoutError):
            raise OperationTimeout(f"{name} did not finish within {timeout:g}s (killed)") from None
        raise
    if proc.returncode != 0:
        tail = (err or out).decode(errors="replace").strip()[-OUTPUT_TAIL:]
        raise PermanentError(f"{name} exited with status {proc.returncode}: {tail}")
    return out.decode(errors="replace")
