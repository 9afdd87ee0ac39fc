"""``Content-Encoding: gzip`` on the event routes, through a real server process.

The standard (docs/ingestion.md, "Compressed bodies"): a gzip body is inflated and ingested as
if sent plain, retries stay duplicates, the route's size limit holds for the inflated body
(a zip bomb is refused, not inflated whole), a body that is not gzip is 400, and an encoding
the server does not read is 415 (400 on the Segment routes, as Segment answers).
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        Path(tmp_path_factory.mktemp("ingest-gzip")),
        env={"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0"},
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def api(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers={"x-api-key": TEST_KEY}, timeout=60) as c:
        yield c


def _events(user: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{user}-{i}",
            "user_id": user,
            "event_type": {"type": "PageView", "data": {"url": f"/ç/{i}", "title": "Ünï 東京"}},
        }
        for i in range(n)
    ]


def _gzip(body: Any) -> bytes:
    # mtime=0: the bytes (and so the test ids of parametrized bodies) must not depend on the
    # second they were made, or two pytest-xdist workers collect different tests.
    return gzip.compress(json.dumps(body).encode(), mtime=0)


GZIP = {"content-encoding": "gzip", "content-type": "application/json"}


def test_a_gzip_batch_is_stored_as_if_sent_plain(api: httpx.Client) -> None:
    user = f"gz-{uuid.uuid4().hex[:8]}"
    body = _gzip({"events": _events(user, 3)})
    r = api.post("/api/v1/events/batch", content=body, headers=GZIP)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 3 and r.json()["rejected"] == []
    again = api.post("/api/v1/events/batch", content=body, headers=GZIP)
    assert again.status_code == 202 and again.json()["duplicates"] == 3
    single = api.post("/api/v1/events", content=_gzip({"event": _events(user, 4)[3]}), headers=GZIP)
    assert single.status_code == 202 and single.json()["accepted"] == 1
    profile = api.get(f"/api/v1/users/{user}")
    assert profile.status_code == 200
    assert profile.json()["total_events"] == 4
    assert sorted(p["url"] for p in profile.json()["top_pages"]) == [f"/ç/{i}" for i in range(4)]


def test_a_gzip_body_is_limited_after_inflating(api: httpx.Client) -> None:
    # 11 MB of JSON whitespace inflates past the batch route's 10 MB; ~11 KB compressed
    bomb = gzip.compress(b'{"events": [' + b" " * (11 * 1024 * 1024) + b"]}")
    assert len(bomb) < 100_000
    r = api.post("/api/v1/events/batch", content=bomb, headers=GZIP)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["details"][0]["limit_bytes"] == 10 * 1024 * 1024
    small = gzip.compress(b'{"event": ' + b" " * (200 * 1024) + b"}")
    r = api.post("/api/v1/events", content=small, headers=GZIP)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b'{"events": []}', "plain JSON labelled gzip"),
        (_gzip({"events": []})[:-9], "a gzip stream cut short"),
        (zlib.compress(b'{"events": []}'), "zlib, not gzip"),
    ],
)
def test_a_body_that_is_not_gzip_is_400(api: httpx.Client, body: bytes, what: str) -> None:
    r = api.post("/api/v1/events/batch", content=body, headers=GZIP)
    assert r.status_code == 400, what
    assert r.json()["error"]["code"] == "malformed_json"
    assert "gzip" in r.json()["error"]["message"]


def test_an_encoding_the_server_does_not_read_is_refused(api: httpx.Client) -> None:
    user = f"br-{uuid.uuid4().hex[:8]}"
    r = api.post(
        "/api/v1/events/batch",
        content=json.dumps({"events": _events(user, 1)}).encode(),
        headers={"content-encoding": "br", "content-type": "application/json"},
    )
    assert r.status_code == 415
    error = r.json()["error"]
    assert error["code"] == "unsupported_content_encoding"
    assert error["details"][0]["header"] == "Content-Encoding"
    assert api.get(f"/api/v1/users/{user}").status_code == 404  # nothing stored
    identity = api.post(
        "/api/v1/events",
        content=json.dumps({"event": _events(user, 1)[0]}).encode(),
        headers={"content-encoding": "identity", "content-type": "application/json"},
    )
    assert identity.status_code == 202


def test_segment_answers_400_for_an_encoding_it_does_not_read(srv: ServerProcess) -> None:
    message = {"userId": "seg-1", "event": "Signed Up", "messageId": uuid.uuid4().hex}
    with httpx.Client(base_url=srv.url, auth=(TEST_KEY, ""), timeout=60) as seg:
        r = seg.post(
            "/v1/track",
            content=zlib.compress(json.dumps(message).encode()),
            headers={"content-encoding": "deflate", "content-type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "unsupported_content_encoding"
        ok = seg.post("/v1/track", content=_gzip(message), headers=GZIP)
        assert ok.status_code == 200 and ok.json()["success"] is True
