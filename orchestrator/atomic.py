"""Atomic files for the daemon's state (controls, decision memory, DNS desired state,
incidents, drill records) and its reports: a reader sees the old or the new document, never
half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, fsync it, rename it over
    ``path`` and fsync the directory (so the rename survives a crash). Creates the directory;
    the temporary file is removed when anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` as indented JSON (values JSON cannot hold as their ``str``), atomically
    as :func:`write_text` does."""
    return write_text(path, json.dumps(doc, indent=2, default=str))
