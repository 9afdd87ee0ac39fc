"""MQTT message ids are remembered for the dedup window (24 h) and then forgotten by a periodic
prune, as event ids are: a real TelemetryService on a real store, its clock moved past the
window instead of waiting a day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
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


def test_ids_loaded_at_a_restart_are_dated_by_their_receive_time(tmp_path: Path) -> None:
    """The ids the store holds come back at start dated by when their message was received
    (``telemetry_messages.received_at``), not by the restart: one received 23 h before it
    leaves with the first prune past its 24 h window, not 24 h after the restart."""
    path = tmp_path / "t.duckdb"
    received_old = datetime.now(UTC) - timedelta(hours=23)
    reading = [(0, Reading(device_id="press-1", metrics={"temp": 20.5}))]

    async def before_the_restart() -> None:
        store = DuckDBStore(path)
        service = TelemetryService(store)
        await service.start()
        try:
            # stored newest first: the start must still date (and keep) them oldest first
            assert (await service.ingest_readings(reading, "p", message_id="m-new")).accepted
            old = await service.ingest_readings(reading, "p", message_id="m-old", now=received_old)
            assert old.accepted == 1

            def loaded() -> bool:
                return store.query("SELECT count(*) FROM telemetry_messages")[0][0] == 2

            await until(loaded)
        finally:
            await service.close()
            store.close()

    async def after_the_restart() -> None:
        store = DuckDBStore(path)
        service = TelemetryService(store)
        now = [5_000_000.0]
        service.clock = lambda: now[0]
        service.message_prune_interval_s = 3600.0  # only the explicit prunes below
        await service.start()
        try:

            async def send(message_id: str) -> bool:
                return (
                    await service.ingest_readings(reading, "p", message_id=message_id)
                ).duplicate

            assert len(service.messages) == 2
            assert service.prune_messages(now=now[0] + 3600 - 60) == 0  # m-old: 24 h - 1 min
            # past m-old's window (received 23 h before the restart), within m-new's
            assert service.prune_messages(now=now[0] + 3600 + 60) == 1
            assert await send("m-new") is True
            assert await send("m-old") is False  # forgotten: stored again
        finally:
            await service.close()
            store.close()

    asyncio.run(before_the_restart())
    asyncio.run(after_the_restart())
