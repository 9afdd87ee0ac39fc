"""The log's writer tells the loader of new durable positions at most every NOTIFY_INTERVAL_S,
and never leaves the last one of a burst untold (a trickle, a burst, close)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from avila.storage.ingest_log import IngestLog, IngestLogConfig, LoadProgress


def test_the_last_durable_position_of_a_burst_reaches_the_loader(tmp_path: Path) -> None:
    told: list[int] = []
    arrived = threading.Event()

    def on_durable(position: int) -> None:
        told.append(position)
        arrived.set()

    log = IngestLog(IngestLogConfig(tmp_path / "log"), LoadProgress(), on_durable)
    log.recover(0)
    log.start()

    async def burst(n: int) -> list[int]:
        return list(await asyncio.gather(*(log.append(b"x" * 100, 1) for _ in range(n))))

    async def appends() -> None:
        for size in (1, 50, 1, 1, 200, 3):
            arrived.clear()
            ends = await burst(size)
            end = max(ends)
            assert end == log.progress.durable
            # the burst's last position arrives by itself (no further append needed)
            await asyncio.to_thread(lambda end=end: _wait_for(lambda: told[-1] == end))
            assert told == sorted(told)  # positions only grow

    asyncio.run(appends())
    log.close()
    assert told[-1] == log.progress.durable


def test_close_tells_the_loader_the_final_position(tmp_path: Path) -> None:
    told: list[int] = []
    log = IngestLog(IngestLogConfig(tmp_path / "log"), LoadProgress(), told.append)
    log.recover(0)
    log.start()

    async def appends() -> None:
        await asyncio.gather(*(log.append(b"y" * 10, 1) for _ in range(20)))
        await log.append(b"z", 1)  # right after another group: within the interval

    asyncio.run(appends())
    log.close()
    assert told and told[-1] == log.progress.durable


def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the loader was never told"
        time.sleep(0.001)
