"""The live relay logs each Redis outage once when it starts and once when it ends (real
redis-server stopped and started again, twice), never once per failed call."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from avila.shared import async_client
from avila.shared.live import RedisLiveBus, close_quietly
from tests.scaleout.conftest import RedisServer
from tests.waiting import until

DOWN = "live bus: Redis unreachable"
UP = "live bus: Redis reachable again"


def test_each_outage_is_logged_when_it_starts_and_when_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="avila.shared")
    server = RedisServer(tmp_path / "redis").start()

    def count(text: str) -> int:
        return sum(1 for r in caplog.records if r.name == "avila.shared" and text in r.message)

    async def scenario() -> None:
        client = async_client(server.url)
        bus = RedisLiveBus(client)
        bus.subscribe("p", ["events"])
        bus.start()
        try:
            await asyncio.sleep(1.0)  # relaying: the loops talk to Redis
            assert count(DOWN) == count(UP) == 0
            for outage in (1, 2):
                await asyncio.to_thread(server.stop)
                await until(lambda: count(DOWN) == outage, timeout=20.0)  # noqa: B023
                # the loops keep failing (each retries every second): no more lines
                await asyncio.sleep(3.0)
                assert count(DOWN) == outage
                assert count(UP) == outage - 1
                await asyncio.to_thread(server.start)
                await until(lambda: count(UP) == outage, timeout=20.0)  # noqa: B023
                await asyncio.sleep(2.0)  # every loop back at work: still one line each
                assert (count(DOWN), count(UP)) == (outage, outage), [
                    (r.message, getattr(r, "error", None), getattr(r, "loop", None), r.created)
                    for r in caplog.records
                ]
        finally:
            await bus.stop()
            await close_quietly(client)

    try:
        # Bounded: a shutdown that hung once (inside the Redis client's pub/sub cleanup) must
        # fail this test, not stall the suite.
        asyncio.run(asyncio.wait_for(scenario(), 180))
    finally:
        server.stop()
