"""MQTT message ids are remembered for the dedup window (24 h) and then forgotten by a periodic
prune, as event ids are: a real TelemetryService on a real store, its clock moved past the
window instead of waiting a day."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.waiting import until

from avila.industry40.ingestion import MESSAGE_WINDOW_S, TelemetryService
from avila.industry40.telemetry import Reading
from avila.storage.duckdb.store import DuckDBStore


def test_message_ids_are_pruned_once_older_than_the_window(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "t.duckdb")
    now = [1_000_000.0]

    async def scenario() -> None:
        service = TelemetryService(store)
        service.clock = lambda: now[0]
        service.message_prune_interval_s = 0.05
        await service.start()
        try:
            reading = [(0, Reading(device_id="press-1", metrics={"temp": 20.5}))]

            async def send(message_id: str) -> tuple[int, bool]:
                result = await service.ingest_readings(reading, "p", message_id=message_id)
                return result.accepted, result.duplicate

            assert await send("m-old") == (1, False)
            assert await send("m-old") == (0, True)
            now[0] += MESSAGE_WINDOW_S - 60
            assert await send("m-new") == (1, False)
            assert len(service.messages) == 2

            # within the window nothing leaves, however often the prune runs
            await asyncio.sleep(0.3)
            assert len(service.messages) == 2

            # past the window of m-old (not of m-new): the periodic prune forgets it
            now[0] += 120
            await until(lambda: len(service.messages) == 1, interval=0.02)
            assert await send("m-new") == (0, True)
            assert await send("m-old") == (1, False)  # stored again: outside the window

            # the prune itself, at the service's clock or an explicit time
            assert service.prune_messages() == 0
            assert service.prune_messages(now=now[0] + MESSAGE_WINDOW_S + 1) == 2
            assert len(service.messages) == 0
        finally:
            await service.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
