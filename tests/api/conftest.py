"""Fixtures of the control-API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import Daemon, start_daemon, stop_daemon, tokens


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("api"), tokens())
    try:
        yield d
    finally:
        code = stop_daemon(d)
        assert code == 0, d.log.read_text()[-3000:]
