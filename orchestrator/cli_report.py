"""`orchestrator report` (being built)."""

from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:
    """Register the command."""
