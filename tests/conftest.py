"""Suite-wide checks: no async test may leave a task running behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio


@pytest_asyncio.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail an async test that returns while tasks it started are still pending."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [
        t
        for t in asyncio.all_tasks()
        if t not in before and t is not asyncio.current_task() and not t.done()
    ]
    for t in leaked:
        t.cancel()
    assert not leaked, f"tasks left running: {[t.get_name() for t in leaked]}"
