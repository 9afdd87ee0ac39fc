"""User endpoints end to end: profile, segment, sessions, GDPR erase, scopes and isolation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from tests.api.api_data import T0, Api, analytics_server, assert_error

RANGE = {
    "start_time": (T0 - timedelta(days=1)).isoformat(),
    "end_time": (T0 + timedelta(days=9)).isoformat(),
}


@pytest.fixture(scope="module", params=["duckdb", "chdb"])
def api(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Api]:
    """The same server on DuckDB and on embedded ClickHouse (chdb)."""
    data = tmp_path_factory.mktemp("users-api")
    url = f"chdb://{data.resolve() / 'avila.chdb'}" if request.param == "chdb" else ""
    with analytics_server(data, url) as running:
        yield running


@pytest.fixture(scope="module")
def a(api: Api) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


@pytest.fixture(scope="module")
def b(api: Api) -> Iterator[httpx.Client]:
    with api.client(api.key_b) as client:
        yield client


def test_profile(a: httpx.Client) -> None:
    response = a.get("/api/v1/users/u1")
    assert response.status_code == 200, response.text
    got = response.json()
    assert {
        "user_id",
        "first_seen",
        "last_seen",
        "total_events",
        "sessions",
        "total_revenue",
        "events_by_type",
        "top_pages",
        "devices",
        "locations",
        "recent_events",
    } <= set(got)
    assert got["user_id"] == "u1"
    assert got["first_seen"] == T0.replace(tzinfo=None).isoformat() + "Z"
    assert got["total_events"] == 5
    assert got["sessions"] == 2
    assert got["total_revenue"] == pytest.approx(50.0)
    assert got["events_by_type"] == {"page_view": 3, "add_to_cart": 1, "purchase": 1}
    assert got["top_pages"][0] == {"url": "/", "views": 2}
    assert got["devices"][0]["browser"] == "Chrome"
    assert got["locations"][0] == {"country": "BR", "city": "Recife", "events": 5}
    assert got["recent_events"][0]["event_type"] == "page_view"
    assert len(a.get("/api/v1/users/u1", params={"recent": 2}).json()["recent_events"]) == 2


def test_segment(a: httpx.Client) -> None:
    got = a.get("/api/v1/users/u1/segment").json()
    assert set(got) >= {
        "user_id",
        "recency_days",
        "frequency",
        "monetary",
        "r_score",
        "f_score",
        "m_score",
        "rfm_score",
        "segment",
    }
    assert got["frequency"] == 1 and got["monetary"] == pytest.approx(50.0)
    assert all(1 <= got[k] <= 5 for k in ("r_score", "f_score", "m_score"))
    assert got["rfm_score"] == f"{got['r_score']}{got['f_score']}{got['m_score']}"
    assert isinstance(got["segment"], str)
    browser_only = a.get("/api/v1/users/u3/segment").json()
    assert browser_only["frequency"] == 0 and browser_only["segment"] is None


def test_user_sessions(a: httpx.Client) -> None:
    got = a.get("/api/v1/users/u2/sessions", params=RANGE).json()
    assert got["sessions"] == 1
    (item,) = got["items"]
    assert item["session_id"] == "s-2"
    assert item["duration_seconds"] == pytest.approx(300.0)
    assert item["events"] == item["page_views"] == 2
    assert a.get("/api/v1/users/u1/sessions", params=RANGE).json()["sessions"] == 2


@pytest.mark.parametrize("suffix", ["", "/segment", "/sessions"])
def test_unknown_user_is_404(a: httpx.Client, suffix: str) -> None:
    assert_error(a.get(f"/api/v1/users/ghost{suffix}"), 404, "user_not_found")


@pytest.mark.parametrize(
    ("suffix", "params", "code", "path"),
    [
        ("/segment", {"window_days": "0"}, "invalid_query", "window_days"),
        ("/sessions", {"timezone": "Nowhere/City"}, "unknown_timezone", "timezone"),
        ("/sessions", {"limit": "-1"}, "invalid_query", "limit"),
    ],
)
def test_invalid_parameters_are_422(a, suffix, params, code, path) -> None:
    assert_error(a.get(f"/api/v1/users/u1{suffix}", params=params), 422, code, path)


def test_other_projects_users_are_invisible(b: httpx.Client) -> None:
    # B has its own u1 (2 page views) and no access to A's u4.
    assert b.get("/api/v1/users/u1").json()["total_events"] == 2
    assert_error(b.get("/api/v1/users/u4"), 404, "user_not_found")
    assert_error(b.get("/api/v1/users/u4/segment"), 404, "user_not_found")


def test_erase_needs_admin_scope(api: Api) -> None:
    with api.client(api.read_only_key) as reader:
        assert reader.get("/api/v1/users/u3").status_code == 200
        assert_error(reader.delete("/api/v1/users/u3"), 403, "missing_scope")
    with api.client(api.key_b) as project_b:
        assert_error(project_b.delete("/api/v1/users/u1"), 403, "missing_scope")


def test_gdpr_erase(a: httpx.Client, b: httpx.Client) -> None:
    before = a.get("/api/v1/analytics/overview", params=RANGE).json()
    response = a.delete("/api/v1/users/u1")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted_events": 5}
    assert_error(a.get("/api/v1/users/u1"), 404, "user_not_found")
    assert_error(a.get("/api/v1/users/u1/segment"), 404, "user_not_found")
    after = a.get("/api/v1/analytics/overview", params=RANGE).json()
    assert after["total_events"] == before["total_events"] - 5
    assert after["unique_users"] == before["unique_users"] - 1
    assert after["revenue"] == pytest.approx(before["revenue"] - 50.0)
    assert a.delete("/api/v1/users/u1").json() == {"deleted_events": 0}
    # Project B's u1 is another person and keeps every event.
    assert b.get("/api/v1/users/u1").json()["total_events"] == 2
