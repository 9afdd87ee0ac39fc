"""Failed authentications are counted per client address: past the limit, the address is refused
(429 ``rate_limited`` with Retry-After) before any key it sends is looked at (docs/security.md).

The servers run on 127.0.0.1, which uvicorn trusts for ``X-Forwarded-For`` by default, so each
test plays several clients by sending that header. The tests of the limited server share one
server (starting one is most of a test's cost); each plays its own addresses, so no test sees
another's failures.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from avila.security.auth_failures import AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW_S, AuthFailures
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY, server_for
from tests.foundation.helpers import assert_error, page_view
from tests.live.ws_client import open_ws, recv

ATTACKER = "203.0.113.7"
NEIGHBOUR = "203.0.113.8"
#: Fresh client addresses for the tests of the shared limited server (TEST-NET-3, 203.0.113.0/24).
_ADDRESSES = (f"203.0.113.{n}" for n in itertools.count(10))


def _from(address: str, key: str | None = None) -> dict[str, str]:
    headers = {"X-Forwarded-For": address}
    if key is not None:
        headers["x-api-key"] = key
    return headers


def _guess(server: ServerProcess, address: str, guess: int) -> httpx.Response:
    """One wrong key: half through the fast ingest route, half through Litestar's routes."""
    headers = _from(address, f"guess-{guess}")
    if guess % 2:
        event = {"event": page_view()}
        return httpx.post(server.url + "/api/v1/events", json=event, headers=headers)
    return httpx.get(server.url + "/api/v1/me", headers=headers)


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with rate limits on (as ``make_server(RATE_LIMIT_PER_MINUTE="1000")``) for
    the module: the tests use addresses of their own (:func:`attacker`, :func:`neighbour`)."""
    yield from server_for(tmp_path_factory, "auth-failures", RATE_LIMIT_PER_MINUTE="1000")


@pytest.fixture
def attacker() -> str:
    """An address no other test has used on the shared server."""
    return next(_ADDRESSES)


@pytest.fixture
def neighbour() -> str:
    return next(_ADDRESSES)


def test_an_address_guessing_keys_is_refused_before_its_keys_are_checked(
    limited_server: ServerProcess, attacker: str, neighbour: str
) -> None:
    server = limited_server
    for guess in range(AUTH_FAILURE_LIMIT):
        assert_error(_guess(server, attacker, guess), 401, "invalid_api_key")

    blocked = assert_error(_guess(server, attacker, AUTH_FAILURE_LIMIT), 429, "rate_limited")
    assert blocked["details"][0]["limit"] == AUTH_FAILURE_LIMIT
    # A right key from the blocked address is refused as well (nothing tells it apart), on the
    # ingest route as on the others.
    me = httpx.get(server.url + "/api/v1/me", headers=_from(attacker, TEST_KEY))
    assert_error(me, 429, "rate_limited")
    assert 1 <= int(me.headers["Retry-After"]) <= AUTH_FAILURE_WINDOW_S

    # Other addresses are not affected.
    other = httpx.get(server.url + "/api/v1/me", headers=_from(neighbour, TEST_KEY))
    assert other.status_code == 200, other.text
    assert_error(_guess(server, neighbour, 1), 401, "invalid_api_key")
    assert httpx.get(server.url + "/health", headers=_from(attacker)).status_code == 200


def test_a_right_key_from_a_blocked_address_is_refused_on_the_fast_ingest_route(
    limited_server: ServerProcess, attacker: str
) -> None:
    for guess in range(AUTH_FAILURE_LIMIT):
        _guess(limited_server, attacker, guess)
    event = {"event": page_view()}
    response = httpx.post(
        limited_server.url + "/api/v1/events", json=event, headers=_from(attacker, TEST_KEY)
    )
    assert_error(response, 429, "rate_limited")


def test_a_blocked_address_gets_rate_limited_on_the_live_socket(
    limited_server: ServerProcess, attacker: str
) -> None:
    for guess in range(AUTH_FAILURE_LIMIT):
        _guess(limited_server, attacker, guess)
    with open_ws(limited_server, TEST_KEY, additional_headers=_from(attacker)) as ws:
        error = recv(ws)
        assert error["type"] == "Error" and error["payload"]["code"] == "rate_limited"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)


def test_failures_on_the_live_socket_count(limited_server: ServerProcess, attacker: str) -> None:
    for guess in range(AUTH_FAILURE_LIMIT):
        with open_ws(limited_server, f"guess-{guess}", additional_headers=_from(attacker)) as ws:
            assert recv(ws)["payload"]["code"] == "invalid_api_key"
    assert_error(_guess(limited_server, attacker, 0), 429, "rate_limited")


def test_no_limit_when_rate_limiting_is_off(server: ServerProcess) -> None:
    """``RATE_LIMIT_PER_MINUTE=0`` (the shared test server) turns every rate limit off."""
    address = "198.51.100.60"
    for guess in range(AUTH_FAILURE_LIMIT + 2):
        assert_error(_guess(server, address, guess), 401, "invalid_api_key")


def test_a_repeated_unknown_key_does_not_block_its_address(
    limited_server: ServerProcess, attacker: str
) -> None:
    for _ in range(AUTH_FAILURE_LIMIT + 5):
        response = httpx.get(limited_server.url + "/api/v1/me", headers=_from(attacker, "revoked"))
        assert_error(response, 401, "invalid_api_key")
    ok = httpx.get(limited_server.url + "/api/v1/me", headers=_from(attacker, TEST_KEY))
    assert ok.status_code == 200, ok.text


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_block_ends_with_its_window() -> None:
    clock = _Clock()
    failures = AuthFailures(limit=3, window_s=60, clock=clock)
    for guess in range(3):
        assert failures.retry_after(ATTACKER) is None
        failures.record_failure(ATTACKER, f"guess-{guess}")
    assert failures.retry_after(ATTACKER) == 60
    clock.now += 59.5
    assert failures.retry_after(ATTACKER) == 1
    clock.now += 0.5
    assert failures.retry_after(ATTACKER) is None
    assert len(failures) == 0


def test_failures_spread_over_more_than_a_window_are_forgiven() -> None:
    clock = _Clock()
    failures = AuthFailures(limit=3, window_s=60, clock=clock)
    for n in range(4):
        failures.record_failure(ATTACKER, f"guess-{n}-a")
        failures.record_failure(ATTACKER, f"guess-{n}-b")
        clock.now += 61
    assert failures.retry_after(ATTACKER) is None


def test_memory_is_bounded_when_addresses_rotate() -> None:
    failures = AuthFailures(limit=3, window_s=60, max_addresses=100, clock=_Clock())
    for n in range(10_000):
        failures.record_failure(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", "guess")
    assert len(failures) == 100


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),  # one /64: one client
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.1", "192.0.2.1", True),  # IPv4-mapped is the IPv4 address
        ("192.0.2.1", "192.0.2.2", False),
    ],
)
def test_ipv6_clients_are_counted_by_their_64_network(
    first: str, second: str, shared: bool
) -> None:
    failures = AuthFailures(limit=2, window_s=60, clock=_Clock())
    failures.record_failure(first, "guess-1")
    failures.record_failure(second, "guess-2")
    assert (failures.retry_after(first) is not None) is shared


def test_one_key_repeated_is_a_misconfigured_client_not_a_guesser() -> None:
    """A revoked key in a device (or an old dashboard tab) retried every second must not block
    every other client behind the same NAT or proxy address."""
    failures = AuthFailures(limit=3, window_s=60, clock=_Clock())
    for _ in range(1000):
        assert failures.record_failure(ATTACKER, "revoked-key") is False
    assert failures.retry_after(ATTACKER) is None
    failures.record_failure(ATTACKER, "guess-1")
    assert failures.record_failure(ATTACKER, "guess-2") is True
    assert failures.retry_after(ATTACKER) == 60
