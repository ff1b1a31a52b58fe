"""Structured JSON logging (structlog), one object per line, with contextvars merged in.

Standard-library loggers (asyncio, botocore, ...) are rendered as the same JSON. Tracebacks are
structured too, but without the frames' local variables (structlog's default shows them): a
local may hold a password, a token or a webhook URL, and a traceback must never print it.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

_TRACEBACKS_WITHOUT_LOCALS = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment of writing (a redirected or replaced
    stderr, as under a test runner, never leaves the handler writing to a closed file)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (the current stderr by default) as JSON
    lines."""
    out: TextIO | _CurrentStderr = stream if stream is not None else _CurrentStderr()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _TRACEBACKS_WITHOUT_LOCALS,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_helios", False):
            root.removeHandler(h)
    handler._helios = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("botocore", "urllib3", "httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
