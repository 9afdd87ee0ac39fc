"""Idempotency claims of a request that does not end normally: its wait on another request's
write fails, or it is cancelled while its own write is in flight. Whatever the request itself
wrote durably is still marked stored in Redis, so a retry on another replica is a duplicate
there, not a second copy.

Real parts: a DuckDB file per replica, a real ``redis-server`` both replicas share, and for the
failed write the ingest log on a small tmpfs filled up (a real ENOSPC) for exactly one log
group. Which requests share a group is not left to timing: the log's writer thread is held in
its ``on_group`` hook (called after each durable group) while the next requests queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import redis
import redis.asyncio as aioredis

from avila.errors import IngestLogUnavailable
from avila.ingest.idempotency import event_key
from avila.ingest.service import IngestService
from avila.shared import async_client
from avila.shared.claims import DONE, RedisClaims
from avila.shared.claims import PREFIX as CLAIM_PREFIX
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import IngestLog, IngestLogConfig
from tests.ingest.small_filesystems import mounted_tmpfs
from tests.scaleout.conftest import RedisServer

PROJECT = "p"
WAIT_S = 30.0  # a guard against a hang, never a measurement


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "logfs", "3m") as mount:
        yield mount


def _fill(mount: Path) -> Path:
    """A file that takes every free byte of ``mount``. Unbuffered: a buffered file would fail
    again at close, flushing what the full disk refused (``small_filesystems.fill`` does when
    the space in use is not a multiple of its 64 KiB writes)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _raws(ids: list[str]) -> list[bytes]:
    return [
        json.dumps(
            {
                "event_id": event_id,
                "user_id": f"user-{n % 7}",
                "timestamp": "2026-01-15T10:00:00Z",
                "event_type": {"type": "PageView", "data": {"url": f"/page/{event_id}"}},
            }
        ).encode()
        for n, event_id in enumerate(ids)
    ]


@dataclass
class Replica:
    """One replica's ingest path: its own DuckDB file and log, claims in the shared Redis."""

    store: DuckDBStore
    service: IngestService
    log: IngestLog
    redis: aioredis.Redis

    @classmethod
    async def start(cls, directory: Path, redis_url: str, log_dir: Path | None = None) -> Replica:
        directory.mkdir()
        store = DuckDBStore(directory / "avila.duckdb")
        if log_dir is not None:
            store.ingest_log_config = IngestLogConfig(log_dir)
        client = async_client(redis_url)
        service = IngestService(store, claims=RedisClaims(client, 3600))
        await service.start()
        assert service.log is not None
        return cls(store, service, service.log, client)

    async def close(self) -> list[str]:
        """Stop; the event ids the replica stored (its loader drains the log at close)."""
        await self.service.close()
        await self.redis.aclose()
        await asyncio.to_thread(self.store.close)
        with duckdb.connect(str(self.store.path), read_only=True) as conn:
            return [row[0] for row in conn.execute("SELECT event_id FROM events").fetchall()]


class HeldWriter:
    """Holds the log's writer thread after its first durable group until ``release`` is set:
    what requests append meanwhile waits, in the order they appended."""

    def __init__(self, log: IngestLog) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._calls = 0
        original = log.on_group

        def hook(events: int, requests: int, seconds: float) -> None:
            if original is not None:
                original(events, requests, seconds)
            self._calls += 1
            if self._calls == 1:
                self.entered.set()
                self.release.wait(WAIT_S)

        log.on_group = hook


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.001)


def _block_until(condition: Callable[[], bool], what: str) -> None:
    """Wait without yielding to the event loop: what the writer thread reports to the loop
    meanwhile is not seen by any request yet."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.001)


def _claims(url: str, ids: list[str]) -> list[bytes | None]:
    with redis.Redis.from_url(url) as client:
        return list(client.mget([CLAIM_PREFIX + event_key(PROJECT, i) for i in ids]))


def test_a_failed_wait_on_another_write_still_marks_the_requests_own_events_stored(
    tmp_path: Path, small_fs: Path, redis_server: RedisServer
) -> None:
    """Request A writes ``x-*``; request B carries ``x-0`` (a duplicate of A's write in flight)
    and its own new ``y-*``. A's log group fails (disk full), B's own group is durable: B
    answers 503 (``x-0`` is not stored) but its ``y-*`` are stored, so a retry of B anywhere
    must find them duplicates."""
    xs = [f"x-{i}" for i in range(200)]
    ys = [f"y-{i}" for i in range(200)]

    async def scenario() -> tuple[list[str], list[str]]:
        one = await Replica.start(tmp_path / "one", redis_server.url, log_dir=small_fs / "log")
        held = HeldWriter(one.log)
        warm = asyncio.create_task(one.service.ingest(_raws(["w-0"]), PROJECT))
        assert await asyncio.to_thread(held.entered.wait, WAIT_S)
        first = asyncio.create_task(one.service.ingest(_raws(xs), PROJECT))
        await _until(lambda: event_key(PROJECT, xs[0]) in one.service._inflight, "A's append")
        filler = _fill(small_fs)
        held.release.set()
        # A's group alone is written, on a full disk; B arrives before the loop hears of it
        _block_until(lambda: one.log.failed_appends == 1, "A's group to fail")
        os.unlink(filler)
        with pytest.raises(IngestLogUnavailable):
            await one.service.ingest(_raws([xs[0], *ys]), PROJECT)
        with pytest.raises(IngestLogUnavailable):
            await first
        assert (await warm).accepted == 1
        assert one.log.failed_appends == 1  # B's own group was durable

        # the client retries B on another replica
        two = await Replica.start(tmp_path / "two", redis_server.url)
        retried = await two.service.ingest(_raws([xs[0], *ys]), PROJECT)
        assert (retried.accepted, retried.duplicates) == (1, len(ys)), "y-* stored again"
        assert set(_claims(redis_server.url, [xs[0], *ys])) == {DONE}
        return await one.close(), await two.close()

    stored_one, stored_two = asyncio.run(scenario())
    assert sorted(stored_one) == sorted(["w-0", *ys])
    assert stored_two == [xs[0]]


def test_a_request_cancelled_while_its_write_is_in_flight_still_marks_its_events_stored(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The request's task is cancelled (its client went away) while its own write waits for
    the group commit; the write goes on and is durable, so its claims must end ``done``, not
    stay pending until they expire and let a retry elsewhere store the events again."""
    zs = [f"z-{i}" for i in range(20)]

    async def scenario() -> tuple[list[str], list[str]]:
        one = await Replica.start(tmp_path / "one", redis_server.url)
        held = HeldWriter(one.log)
        warm = asyncio.create_task(one.service.ingest(_raws(["w-0"]), PROJECT))
        assert await asyncio.to_thread(held.entered.wait, WAIT_S)
        request = asyncio.create_task(one.service.ingest(_raws(zs), PROJECT))
        key = event_key(PROJECT, zs[0])
        await _until(lambda: key in one.service._inflight, "the request's append")
        write = one.service._inflight[key]
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        held.release.set()
        await write  # the shared write itself was not cancelled
        assert (await warm).accepted == 1

        two = await Replica.start(tmp_path / "two", redis_server.url)
        retried = await two.service.ingest(_raws(zs), PROJECT)
        assert (retried.accepted, retried.duplicates) == (0, len(zs)), "z-* stored again"
        assert set(_claims(redis_server.url, zs)) == {DONE}
        return await one.close(), await two.close()

    stored_one, stored_two = asyncio.run(scenario())
    assert sorted(stored_one) == sorted(["w-0", *zs])
    assert stored_two == []
