"""A request cancelled (its client went away) while it waits for the answer of the claim script
in Redis: the script may already have taken the request's event ids, pending under this
replica. They must be given back once the script answers, or every retry of those events, on
any replica, waits until the claims expire (:data:`~avila.shared.claims.PENDING_MS`).

Real parts: a real ``redis-server`` both replicas share and a DuckDB file per replica. Which
moment the cancellation hits is not left to timing: replica one reaches Redis through a TCP
relay that can hold Redis' answers back, so the script has run in Redis (seen there directly)
and its answer has not reached the replica when the request is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from avila.ingest.idempotency import event_key
from avila.shared import async_client
from avila.shared.claims import DONE, PENDING_MS, RedisClaims
from avila.shared.claims import PREFIX as CLAIM_PREFIX
from tests.ingest.test_claims_after_failed_wait import Replica
from tests.scaleout.conftest import RedisServer

PROJECT = "p"
WAIT_S = 30.0  # a guard against a hang, never a measurement
#: A retry that is not held up answers after a few round trips; one held up by a pending claim
#: answers after PENDING_MS. A generous bound between the two.
PROMPT_S = PENDING_MS / 1000 / 3


class HoldingRelay:
    """A TCP relay to a real Redis. Commands always pass; Redis' answers wait in the relay,
    in order, while ``hold`` is in force, and go on at ``flow``."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def hold(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]
        for pump in (self._pump(reader, up_writer, None), self._pump(up_reader, writer, True)):
            task = asyncio.get_running_loop().create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gated: bool | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gated:
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # the other side went away
        finally:
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _raws(ids: list[str]) -> list[bytes]:
    return [
        json.dumps(
            {
                "event_id": event_id,
                "user_id": "user-1",
                "timestamp": "2026-01-15T10:00:00Z",
                "event_type": {"type": "PageView", "data": {"url": f"/page/{event_id}"}},
            }
        ).encode()
        for event_id in ids
    ]


def _claims(url: str, keys: list[str]) -> list[bytes | None]:
    with redis.Redis.from_url(url) as client:
        return list(client.mget([CLAIM_PREFIX + k for k in keys]))


def _script_calls(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.005)


def test_a_request_cancelled_while_claiming_gives_its_claims_back(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    """The claim script took ``c-*`` (pending under replica one) when the request is
    cancelled, before its answer arrived. Once the answer arrives, replica one releases them:
    the client's retry on replica two is accepted at once and the events are stored once."""
    cs = [f"c-{i}" for i in range(20)]
    keys = [event_key(PROJECT, c) for c in cs]

    async def scenario() -> tuple[list[str], list[str]]:
        relay = HoldingRelay(own_redis.port)
        one = await Replica.start(tmp_path / "one", await relay.start())
        two = await Replica.start(tmp_path / "two", own_redis.url)
        try:
            # the claim script is loaded and replica one's connection open
            assert (await one.service.ingest(_raws(["w-0"]), PROJECT)).accepted == 1

            relay.hold()
            request = asyncio.create_task(one.service.ingest(_raws(cs), PROJECT))
            await _until(
                lambda: all(v not in (None, DONE) for v in _claims(own_redis.url, keys)),
                "the claim script to take the request's events",
            )
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            relay.flow()
            await one.service.claims.close()  # what the replica does after a request ended
            assert _claims(own_redis.url, keys) == [None] * len(keys), "claims left pending"

            retried = await asyncio.wait_for(two.service.ingest(_raws(cs), PROJECT), PROMPT_S)
            assert (retried.accepted, retried.duplicates) == (len(cs), 0)
            assert set(_claims(own_redis.url, keys)) == {DONE}
        finally:
            stored = await one.close(), await two.close()
            await relay.close()
        return stored

    stored_one, stored_two = asyncio.run(scenario())
    assert stored_one == ["w-0"]
    assert sorted(stored_two) == sorted(cs)


def test_a_cancelled_claim_gives_back_only_what_it_took(own_redis: RedisServer) -> None:
    """Another request of the same replica holds ``held`` (same token). A request claiming
    ``held`` and ``new`` is cancelled while its script call is in flight: the script took
    nothing (``held`` was pending, so it gave ``new`` back), and the other request's claim
    must survive the cancellation."""

    async def scenario() -> None:
        relay = HoldingRelay(own_redis.port)
        client = async_client(await relay.start())
        claims = RedisClaims(client, 3600)
        try:
            assert await claims.claim(["held"]) == frozenset()  # the other request's claim
            pending = _claims(own_redis.url, ["held"])
            assert pending[0] not in (None, DONE)

            calls = _script_calls(own_redis.url)
            relay.hold()
            request = asyncio.create_task(claims.claim(["held", "new"]))
            await _until(lambda: _script_calls(own_redis.url) > calls, "the claim script")
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            relay.flow()
            await claims.close()
            assert _claims(own_redis.url, ["held", "new"]) == [pending[0], None]

            claims.release(["held"])  # the other request ends
            await claims.close()
            assert _claims(own_redis.url, ["held"]) == [None]
        finally:
            await claims.close()
            await client.aclose()
            await relay.close()

    asyncio.run(scenario())
