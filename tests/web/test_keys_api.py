"""The keys admin API over HTTP, and the dashboard's Keys page driving it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from .conftest import Dashboard, Watch
from .test_dashboard_pages import sign_in, visit


def call(dashboard: Dashboard, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, dashboard.url + path, headers={"x-api-key": key}, timeout=30, **kwargs
    )


def test_keys_api_creates_lists_and_revokes_within_the_project(dashboard: Dashboard) -> None:
    created = call(
        dashboard,
        "POST",
        "/api/v1/keys",
        dashboard.admin_key,
        json={"scopes": ["read", "ingest"], "name": "ünïcode ✓"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret, key_id = body.pop("key"), body["key_id"]
    assert body["scopes"] == ["ingest", "read"] and body["project"] == "default"
    assert body["name"] == "ünïcode ✓" and body["revoked_at"] is None
    assert call(dashboard, "GET", "/api/v1/me", secret).json()["scopes"] == ["ingest", "read"]

    listed = call(dashboard, "GET", "/api/v1/keys", dashboard.admin_key).json()["keys"]
    assert body in listed
    assert secret not in str(listed)

    # A read key may not manage keys; bad bodies name the field.
    assert call(dashboard, "GET", "/api/v1/keys", secret).status_code == 403
    bad = call(dashboard, "POST", "/api/v1/keys", dashboard.admin_key, json={"scopes": ["root"]})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_scopes"
    assert bad.json()["error"]["details"][0]["path"] == "scopes[0]"
    extra = call(
        dashboard, "POST", "/api/v1/keys", dashboard.admin_key, json={"scopes": ["read"], "x": 1}
    )
    assert extra.status_code == 422
    empty = call(dashboard, "POST", "/api/v1/keys", dashboard.admin_key, json={"scopes": []})
    assert empty.status_code == 422

    revoked = call(dashboard, "DELETE", f"/api/v1/keys/{key_id}", dashboard.admin_key)
    assert revoked.json() == {"key_id": key_id, "revoked": True}
    deadline = time.monotonic() + 1.0
    while call(dashboard, "GET", "/api/v1/me", secret).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works after 1 s"
        time.sleep(0.05)
    again = call(dashboard, "DELETE", f"/api/v1/keys/{key_id}", dashboard.admin_key)
    assert again.status_code == 404 and again.json()["error"]["code"] == "key_not_found"
    listed = call(dashboard, "GET", "/api/v1/keys", dashboard.admin_key).json()["keys"]
    assert next(k for k in listed if k["key_id"] == key_id)["revoked_at"]


def test_keys_of_another_project_are_invisible_and_cannot_be_revoked(
    dashboard: Dashboard,
) -> None:
    from avila.security.keys import KeyStore

    store = KeyStore(dashboard.process.data_dir / "keys.sqlite")
    other_admin, _ = store.create("other", ["admin", "read"])
    _, mine = store.create("default", ["read"])
    time.sleep(0.05)
    listed = call(dashboard, "GET", "/api/v1/keys", other_admin).json()["keys"]
    assert {k["project"] for k in listed} == {"other"}
    refused = call(dashboard, "DELETE", f"/api/v1/keys/{mine.key_id}", other_admin)
    assert refused.status_code == 404
    assert call(dashboard, "GET", "/api/v1/keys", dashboard.admin_key).json()["keys"]


def test_keys_page_creates_a_key_shows_it_once_and_revokes_it(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, watch = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    assert page.is_visible('nav a[href="#/keys"]')
    visit(page, dashboard.url, "keys")
    page.fill("#key-name", "from the page")
    page.check('[data-scope="ingest"]')
    page.click("#key-create")
    secret = page.wait_for_selector("#key-secret").inner_text()
    me = call(dashboard, "GET", "/api/v1/me", secret)
    assert me.json()["scopes"] == ["ingest", "read"]
    key_id = next(
        k["key_id"]
        for k in call(dashboard, "GET", "/api/v1/keys", dashboard.admin_key).json()["keys"]
        if k["name"] == "from the page"
    )
    page.click(f'[data-admin-action="revoke-key"][data-key-id="{key_id}"]')
    page.fill("#confirm-input", key_id)
    page.click("#confirm-ok")
    page.wait_for_selector(f'[data-key-id="{key_id}"]', state="detached")
    deadline = time.monotonic() + 1.0
    while call(dashboard, "GET", "/api/v1/me", secret).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert watch.console_errors == [] and watch.failed == []
    # A read key sees no Keys link.
    page.click("#signout")
    sign_in(page, dashboard.url, dashboard.read_key)
    assert not page.is_visible('nav a[href="#/keys"]')
