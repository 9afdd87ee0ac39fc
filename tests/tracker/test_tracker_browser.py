"""avila.js in headless Chromium on a page of another origin, read back from the store."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import httpx
import pytest

from .conftest import TrackedServer

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shop home</title>
<script>window.avila = [["track", "Preloaded", {{"early": true}}]];</script>
<script src="{server}/avila.js" data-api-key="{key}" defer></script>
</head><body>
<a id="product" href="/products/42">Product 42</a>
<script>
document.getElementById("product").addEventListener("click", function (e) {{
  e.preventDefault();
  history.pushState({{}}, "", "/products/42");
  document.title = "Product 42";
}});
</script>
</body></html>
"""


def accepted_events(server_url: str) -> int:
    text = httpx.get(server_url + "/metrics", timeout=10).text
    found = re.search(r'^avila_events_total\{outcome="accepted"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def wait_for_accepted(server_url: str, expected: int, timeout: float = 20.0) -> None:
    """Poll /metrics until ``expected`` events were accepted (the browser sends on its own)."""
    deadline = time.monotonic() + timeout
    while (count := accepted_events(server_url)) < expected:
        if time.monotonic() > deadline:
            pytest.fail(f"the server accepted {count} of {expected} events from the browser")
        time.sleep(0.1)


def test_tracker_records_page_views_spa_navigation_custom_events_and_identify(
    tracked_server: TrackedServer, site: Callable[[str], str], browser: Any
) -> None:
    server = tracked_server
    origin = site(PAGE.format(server=server.url, key=server.ingest_key))
    assert origin != server.url  # another origin: the requests are cross-origin (CORS)

    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if msg.type in ("error", "warning") else None,
    )

    page.goto(origin + "/")
    page.wait_for_function("window.avila && window.avila.__avila")
    page.click("#product")  # SPA navigation: pushState
    page.wait_for_function("document.title === 'Product 42'")
    page.evaluate("avila.track('Added To Wishlist', {product_id: '42', price: 9.5})")
    page.evaluate("history.back()")  # popstate
    page.wait_for_function("location.pathname === '/'")
    anonymous_id = page.evaluate("avila.anonymousId()")
    page.evaluate("avila.identify('shopper-1', {plan: 'gold'})")
    page.evaluate("avila.flush()")
    # Not flushed: must leave with the page (keepalive request on pagehide).
    page.evaluate("avila.track('Left Page')")
    page.goto("about:blank")
    page.close()
    wait_for_accepted(server.url, 7)
    assert problems == []

    # Read back through the REST API: the profile of the identified user holds the anonymous
    # history too (identity stitching), 3 page views and 4 custom events.
    profile = httpx.get(
        f"{server.url}/api/v1/users/shopper-1", headers={"x-api-key": server.read_key}, timeout=30
    )
    assert profile.status_code == 200, profile.text
    body = profile.json()
    assert body["total_events"] == 7
    assert body["events_by_type"] == {"page_view": 3, "custom": 4}
    assert body["sessions"] == 1

    conn = server.stored()
    cursor = conn.execute("SELECT * FROM events ORDER BY ts, event_id")
    names = [d[0] for d in cursor.description]
    events = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    views = [e for e in events if e["event_type"] == "page_view"]
    assert [e["url"] for e in views] == [origin + "/", origin + "/products/42", origin + "/"]
    assert views[1]["title"] == "Product 42"
    assert views[1]["referrer"] == origin + "/"  # the SPA's previous route
    customs = [
        (e["event_name"], json.loads(e["data"])["properties"])
        for e in events
        if e["event_type"] == "custom"
    ]
    assert customs == [
        ("Preloaded", {"early": True}),
        ("Added To Wishlist", {"product_id": "42", "price": 9.5}),
        ("$identify", {"plan": "gold"}),
        ("Left Page", {}),
    ]

    # One browser, one session; anonymous until identify, then the known user.
    assert len({e["session_id"] for e in events}) == 1 and events[0]["session_id"]
    before, after = events[:5], events[5:]
    assert {e["user_id"] for e in before} == {anonymous_id}
    assert {e["user_id"] for e in after} == {"shopper-1"}
    assert {json.loads(e["metadata"])["anonymous_id"] for e in events} == {anonymous_id}

    first = events[0]
    assert (first["browser"], first["os"], first["device_type"]) == ("Chrome", "Linux", "desktop")
    assert "HeadlessChrome" in first["user_agent"]
    context = json.loads(first["context"])
    assert context["viewport"]["width"] > 0 and context["viewport"]["height"] > 0
    assert len(context["device"]["screen_resolution"]) == 2
    assert context["location"]["timezone"]

    # identify stitched the anonymous history to the user.
    links = conn.execute("SELECT anonymous_id, user_id, source FROM identities").fetchall()
    assert links == [(anonymous_id, "shopper-1", "identify")]
    resolved = conn.execute("SELECT DISTINCT user_id FROM events_resolved").fetchall()
    assert resolved == [("shopper-1",)]
    conn.close()


def test_queued_events_survive_a_failed_send_and_are_not_duplicated(
    tracked_server: TrackedServer, site: Callable[[str], str], browser: Any
) -> None:
    """A send that fails keeps the events in localStorage; the next page load sends them, and
    a re-send of events already stored counts as duplicates (event ids are idempotency keys)."""
    server = tracked_server
    origin = site(PAGE.format(server=server.url, key=server.ingest_key))
    context = browser.new_context()
    page = context.new_page()
    page.route(server.url + "/api/v1/events/batch", lambda route: route.abort())
    page.goto(origin + "/")
    page.wait_for_function("window.avila && window.avila.__avila")
    page.evaluate("avila.track('While Offline')")
    page.evaluate("avila.flush()")
    queued = page.evaluate("JSON.parse(localStorage.getItem('avila_queue')).length")
    assert queued == 3  # Preloaded, the page view, While Offline
    page.unroute(server.url + "/api/v1/events/batch")
    page.reload()  # a new page load: 3 old + Preloaded + page view
    page.wait_for_function("window.avila && window.avila.__avila")
    page.evaluate("avila.flush()")
    wait_for_accepted(server.url, 5)
    page.wait_for_function("localStorage.getItem('avila_queue') === null")
    context.close()

    conn = server.stored()
    names = [
        r[0] for r in conn.execute("SELECT coalesce(event_name, event_type) FROM events").fetchall()
    ]
    assert sorted(names) == sorted(
        ["Preloaded", "page_view", "While Offline", "Preloaded", "page_view"]
    )
    conn.close()


def test_script_is_served_public_cacheable_with_javascript_type(
    tracked_server: TrackedServer,
) -> None:
    response = httpx.get(tracked_server.url + "/avila.js", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "public" in response.headers["cache-control"]
    assert response.content == resources.files("avila").joinpath("static/avila.js").read_bytes()
    again = httpx.get(
        tracked_server.url + "/avila.js", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304


def test_an_id_the_server_would_refuse_is_refused_at_identify_and_the_old_one_kept(
    tracked_server: TrackedServer, site: Callable[[str], str], browser: Any
) -> None:
    """identify() keeps its id for every later event; one over the server's 256 characters
    used to be kept and make each later event of the browser invalid. Characters, as the
    server counts them: 256 emoji (512 UTF-16 code units) are a valid id."""
    server = tracked_server
    origin = site(PAGE.format(server=server.url, key=server.ingest_key))
    page = browser.new_page()
    page.goto(origin + "/")
    page.wait_for_function("window.avila && window.avila.__avila")
    page.evaluate("avila.identify('shopper-2')")
    refused = page.evaluate(
        """() => { try { avila.identify('x'.repeat(257)); return null; }
                   catch (e) { return e.name + ': ' + e.message; } }"""
    )
    assert refused == "RangeError: avila.identify: a user id is at most 256 characters"
    too_long_name = page.evaluate(
        """() => { try { avila.track('n'.repeat(257)); return null; }
                   catch (e) { return e.name; } }"""
    )
    assert too_long_name == "RangeError"
    page.evaluate("avila.track('After Refusal')")
    page.evaluate("avila.identify('\\u{1F600}'.repeat(256))")
    page.evaluate("avila.track('Emoji User')")
    page.evaluate("avila.flush()")
    # Preloaded, page view, 2 x $identify, After Refusal, Emoji User: none refused
    wait_for_accepted(server.url, 6)
    page.close()
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'avila_events_total{outcome="rejected"}' not in metrics

    conn = server.stored()
    users = dict(
        conn.execute(
            "SELECT event_name, user_id FROM events WHERE event_name IN"
            " ('After Refusal', 'Emoji User')"
        ).fetchall()
    )
    conn.close()
    assert users == {"After Refusal": "shopper-2", "Emoji User": "\U0001f600" * 256}
