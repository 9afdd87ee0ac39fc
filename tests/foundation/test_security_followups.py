"""Follow-ups of a security review, against real server processes on free ports.

- An open ``/ws`` stops streaming once its key is revoked (over HTTP, by ``avila keys revoke``
  from another process, or on another replica sharing Redis): the server sends the Error
  ``invalid_api_key`` and closes with 4401, as it does for a connection opened with that key.
- A refused CORS preflight answers in the API's one error shape, not Litestar's plain text.
- Every response whose CORS headers depend on the request's ``Origin`` says ``Vary: Origin``,
  so a shared cache never hands an answer meant for one origin to another.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from avila.security.keys import KeyStore
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.foundation.helpers import assert_error, page_view
from tests.live.ws_client import collect_events, events_of, open_ws, recv, subscribe

ADMIN = {"x-api-key": TEST_KEY}
#: How long a test waits for something the server does "within about a second".
DEADLINE_S = 20.0


# -- 1. live sockets of a revoked key ----------------------------------------------------------


class _Ingester:
    """Sends one event every few tenths of a second (with the bootstrap key) until stopped,
    so a socket that still streams after its key was revoked has something to show."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=ADMIN, timeout=30) as client:
            while not self._stop.is_set():
                event_id = f"after-revoke-{uuid.uuid4().hex}"
                response = client.post(
                    "/api/v1/events", json={"event": page_view(event_id=event_id)}
                )
                assert response.status_code == 202, response.text
                self.sent.append(event_id)
                self._stop.wait(0.2)

    def __enter__(self) -> _Ingester:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _closed_after_revoke(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Read until the server closes the socket: (messages read, close code). Fails when the
    socket still streams at the deadline."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            streamed = sum(len(events_of(m)) for m in messages)
            pytest.fail(f"socket still open {DEADLINE_S:g} s after the revoke; {streamed} events")
        try:
            messages.append(recv(ws, timeout=left))
        except TimeoutError:
            continue
        except ConnectionClosed as closed:
            return messages, closed.rcvd.code if closed.rcvd is not None else None


def _assert_refused_as_revoked(ws: ClientConnection) -> None:
    messages, code = _closed_after_revoke(ws)
    assert code == 4401
    errors = [m for m in messages if m["type"] == "Error"]
    assert len(errors) == 1 and messages[-1] is errors[0], messages[-3:]
    assert errors[0]["payload"]["code"] == "invalid_api_key"
    assert "revoked" in errors[0]["payload"]["message"]


def _streaming(server: ServerProcess, key: str, stack: ExitStack) -> ClientConnection:
    ws = stack.enter_context(open_ws(server, key))
    assert subscribe(ws, "events", "metrics")["payload"]["channels"] == ["events", "metrics"]
    return ws


def test_live_socket_is_closed_with_4401_once_its_key_is_revoked(
    cors_server: ServerProcess,
) -> None:
    server = cors_server  # the only test of this module that revokes keys or opens sockets
    keys = KeyStore(server.data_dir / "keys.sqlite")  # what `avila keys` uses, from this process
    over_http, http_info = keys.create("default", ["read"], "revoked over HTTP")
    by_cli, cli_info = keys.create("default", ["read"], "revoked by avila keys revoke")
    kept, _ = keys.create("default", ["read"], "kept")
    with ExitStack() as stack:
        sockets = [_streaming(server, key, stack) for key in (over_http, by_cli, kept, TEST_KEY)]
        first = f"before-revoke-{uuid.uuid4().hex}"
        response = httpx.post(
            server.url + "/api/v1/events", json={"event": page_view(event_id=first)}, headers=ADMIN
        )
        assert response.status_code == 202
        for ws in sockets:  # every key streams while it is valid
            collect_events(ws, {first})

        revoked = httpx.delete(server.url + f"/api/v1/keys/{http_info.key_id}", headers=ADMIN)
        assert revoked.json() == {"key_id": http_info.key_id, "revoked": True}
        assert keys.revoke(cli_info.key_id)  # another process, like `avila keys revoke`
        with _Ingester(server.url) as ingester:
            for ws in sockets[:2]:
                _assert_refused_as_revoked(ws)
            # The socket of a key still valid (managed or bootstrap) keeps streaming.
            while not ingester.sent:
                time.sleep(0.05)
            latest = ingester.sent[-1]
            for ws in sockets[2:]:
                collect_events(ws, {latest}, timeout=DEADLINE_S)

        # A new connection with a revoked key is refused the same way, at once.
        with open_ws(server, over_http) as again:
            error = recv(again)
            assert error["payload"]["code"] == "invalid_api_key"
            with pytest.raises(ConnectionClosed) as closed:
                again.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    metrics = httpx.get(server.url + "/metrics").text
    assert 'avila_live_closed_connections_total{project="default",reason="key_revoked"} 2.0' in (
        metrics
    )


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from tests.scaleout.conftest import RedisServer

    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        yield redis_server.url
    finally:
        redis_server.stop()


def test_key_revoked_on_another_replica_closes_the_live_socket(
    make_server: Any, redis_url: str
) -> None:
    shared = {"AVILA_REDIS_URL": redis_url, "AVILA_LIVE_FLUSH_MS": "50"}
    first = make_server(**shared)
    second = make_server(**shared)
    created = httpx.post(
        first.url + "/api/v1/keys", json={"scopes": ["read"], "name": "viewer"}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["key_id"]
    with ExitStack() as stack:
        ws = _streaming(second, key, stack)
        event_id = f"before-revoke-{uuid.uuid4().hex}"
        response = httpx.post(
            second.url + "/api/v1/events",
            json={"event": page_view(event_id=event_id)},
            headers=ADMIN,
        )
        assert response.status_code == 202
        collect_events(ws, {event_id})
        assert httpx.delete(first.url + f"/api/v1/keys/{key_id}", headers=ADMIN).status_code == 200
        with _Ingester(second.url):
            _assert_refused_as_revoked(ws)


# -- 2. refused CORS preflights in the error shape ---------------------------------------------


ALLOWED = "https://shop.example"
OTHER = "https://evil.example"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """CORS on for a list of origins. Also the server of the live test of section 1 (its
    sockets are no CORS requests): live frames flushed every 50 ms."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("cors-server"),
        env={
            "API_KEYS": TEST_KEY,
            "RATE_LIMIT_PER_MINUTE": "0",
            "ENABLE_CORS": "true",
            "CORS_ORIGINS": f"{ALLOWED},https://admin.example",
            "AVILA_LIVE_FLUSH_MS": "50",
        },
    )
    proc.start()
    yield proc
    proc.stop()


def _preflight(server: ServerProcess, origin: str, headers: str = "content-type") -> httpx.Response:
    return httpx.options(
        server.url + "/api/v1/events",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def test_refused_preflight_of_an_origin_answers_in_the_error_shape(
    cors_server: ServerProcess,
) -> None:
    response = _preflight(cors_server, OTHER)
    assert response.headers["content-type"].startswith("application/json")
    error = assert_error(response, 400, "cors_not_allowed")
    assert OTHER in error["message"] and "origin" in error["message"].lower()
    assert {"header": "Origin", "value": OTHER} in [
        {k: d[k] for k in ("header", "value")} for d in error["details"]
    ]
    assert "access-control-allow-origin" not in response.headers
    # The allowed origin's preflight is still answered as before.
    allowed = _preflight(cors_server, ALLOWED, "content-type,x-api-key")
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()


def test_refused_preflight_of_a_header_answers_in_the_error_shape(
    cors_server: ServerProcess, server: ServerProcess
) -> None:
    for target in (cors_server, server):  # a list of origins, and "*"
        response = _preflight(target, ALLOWED, "content-type, X-Evil-Header")
        error = assert_error(response, 400, "cors_not_allowed")
        assert "X-Evil-Header" in error["message"]
        (detail,) = error["details"]
        assert detail["header"] == "Access-Control-Request-Headers"
        assert detail["value"] == "X-Evil-Header"
        assert "x-api-key" in detail["allowed"]


def test_refused_preflight_of_a_method_answers_in_the_error_shape(server: ServerProcess) -> None:
    response = httpx.options(
        server.url + "/api/v1/events",
        headers={"Origin": ALLOWED, "Access-Control-Request-Method": "PATCH"},
    )
    error = assert_error(response, 400, "cors_not_allowed")
    assert "PATCH" in error["message"]
    assert error["details"][0]["header"] == "Access-Control-Request-Method"


# -- 3. Vary: Origin ---------------------------------------------------------------------------


def _vary(response: httpx.Response) -> set[str]:
    values = response.headers.get_list("vary")
    return {v.strip().lower() for value in values for v in value.split(",") if v.strip()}


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


REQUESTS = [
    ("GET", "/health", {}),
    ("GET", "/api/v1/me", ADMIN),
    ("GET", "/api/v1/no-such-route", ADMIN),
    ("POST", "/api/v1/events", ADMIN),  # the fast ingest path when there is no Origin
    ("GET", "/", {}),  # the dashboard: Vary: Accept-Encoding of its own
]


@pytest.mark.parametrize(("method", "path", "headers"), REQUESTS)
def test_answers_of_a_list_of_origins_vary_on_origin(
    cors_server: ServerProcess, method: str, path: str, headers: dict[str, str]
) -> None:
    answers = {}
    for origin in (OTHER, None, ALLOWED):  # the refused origin first: the review's case
        sent = {**headers, **({"Origin": origin} if origin else {})}
        body = {"event": page_view()} if method == "POST" else None
        answers[origin] = response = httpx.request(
            method, cors_server.url + path, headers=sent, json=body
        )
        # Whoever asked: the answer depends on the Origin, and says so.
        assert "origin" in _vary(response), (origin, dict(response.headers))
    assert answers[ALLOWED].headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-origin" not in answers[OTHER].headers
    assert "access-control-allow-origin" not in answers[None].headers
    if path == "/":  # the dashboard's own Vary is kept beside Origin
        assert {"accept-encoding", "origin"} <= _vary(answers[ALLOWED])
        assert {"accept-encoding", "origin"} <= _vary(answers[OTHER])


def test_refused_preflight_varies_on_origin(cors_server: ServerProcess) -> None:
    assert "origin" in _vary(_preflight(cors_server, OTHER))
    assert "origin" in _vary(_preflight(cors_server, ALLOWED, "x-evil"))
    assert "origin" in _vary(_preflight(cors_server, ALLOWED))


@pytest.mark.parametrize(("method", "path", "headers"), REQUESTS)
def test_answers_of_any_origin_are_the_same_for_every_origin_or_vary(
    server: ServerProcess, method: str, path: str, headers: dict[str, str]
) -> None:
    """With ``CORS_ORIGINS=*`` a cached answer may be served to anyone: its CORS headers must be
    the same whatever the Origin (or its absence, or a cookie), unless it says Vary: Origin."""
    seen = []
    for extra in ({}, {"Origin": ALLOWED}, {"Origin": OTHER}, {"Origin": OTHER, "Cookie": "a=b"}):
        body = {"event": page_view()} if method == "POST" else None
        response = httpx.request(method, server.url + path, headers={**headers, **extra}, json=body)
        if "origin" not in _vary(response):
            seen.append(_cors_headers(response))
        assert _cors_headers(response).get("access-control-allow-origin") == "*" or (
            "origin" in _vary(response)
        )
    assert all(s == seen[0] for s in seen), seen
