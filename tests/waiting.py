"""Waiting in async tests for something that happens in the background (a relay loop, a prune
task): poll a condition, fail with a clear message past a generous timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopTicks:
    """Counts turns of the running event loop (one per ``interval``) inside ``async with``: a
    count that stands still means something blocked the loop."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> LoopTicks:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
