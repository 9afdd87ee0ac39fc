"""Edge cases of the dashboard and the tracker a user hits, in a real server and Chromium.

The dashboard tests use their own server (not the package's demo store): a small shop whose
user and device ids carry the characters that break links and markup (``+ / % # ? " '``,
HTML, unicode), so the shared demo's figures checked elsewhere stay untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import httpx
import pytest

from avila.security.keys import KeyStore
from avila.testing import ServerProcess

from .test_dashboard_pages import sign_in, visit

ADMIN_KEY = "edge-admin-key"
HTML_DEVICE = '<b class="pwn">press</b>'
ODD_USERS = [
    "ann+promo@example.com",  # '+' is a space in a query string unless encoded as %2B
    "a/b%c#d?e&f=g",
    "\"quoted\" 'user'",
    "ünï 用户",
]
#: A user id far wider than any screen, with no place to break it.
LONG_USER = "user_" + "ü" * 10 + "_" + "x" * 200


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _seed(url: str) -> None:
    now = datetime.now(UTC)
    events = []
    for i, user in enumerate(ODD_USERS):
        at = now - timedelta(hours=2 + i)
        events.append(
            {
                "event_id": f"edge-view-{i}",
                "user_id": user,
                "timestamp": _iso(at - timedelta(minutes=5)),
                "event_type": {"type": "PageView", "data": {"url": "/", "title": "Home"}},
            }
        )
        events.append(
            {
                "event_id": f"edge-buy-{i}",
                "user_id": user,
                "timestamp": _iso(at),
                "event_type": {
                    "type": "Purchase",
                    "data": {"order_id": f"o-{i}", "revenue": 10.0 + i},
                },
            }
        )
    events.append(
        {
            "event_id": "edge-buy-long",
            "user_id": LONG_USER,
            "timestamp": _iso(now - timedelta(hours=1)),
            "event_type": {"type": "Purchase", "data": {"order_id": "o-long", "revenue": 5.0}},
        }
    )
    headers = {"x-api-key": ADMIN_KEY}
    done = httpx.post(url + "/api/v1/events/batch", json={"events": events}, headers=headers)
    assert done.status_code == 202 and not done.json().get("rejected"), done.text
    readings = [
        {
            "device_id": HTML_DEVICE,
            "device_type": "press",
            "timestamp": _iso(now - timedelta(minutes=10 - m)),
            "metrics": {"state": 1, "temperature": 70.0 + m, "units_good": 10, "offset_mm": -0.001},
            "attributes": {"ideal_cycle_time_ms": 2000},
        }
        for m in range(5)
    ]
    done = httpx.post(
        url + "/api/v1/industry40/iot/ingest", json={"readings": readings}, headers=headers
    )
    assert done.status_code == 202 and not done.json().get("rejected"), done.text
    # Acknowledged events are readable within about a second.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = httpx.get(url + "/api/v1/users/ann%2Bpromo%40example.com", headers=headers)
        if found.status_code == 200:
            return
        time.sleep(0.1)
    pytest.fail("the seeded events never became readable")


@pytest.fixture(scope="module")
def odd_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("odd-shop")
    process = ServerProcess(
        data_dir,
        env={"API_KEYS": ADMIN_KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"},
    )
    process.start()
    try:
        _seed(process.url)
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.errors = errors
    yield opened
    context.close()


# ---- ids in links ---------------------------------------------------------------------------


def test_user_links_open_the_profile_of_ids_with_plus_slash_percent_and_quotes(
    odd_shop: ServerProcess, page: Any
) -> None:
    """Each recent buyer's link opens that user's profile (not a 404 for 'ann promo@...')."""
    sign_in(page, odd_shop.url, ADMIN_KEY)
    for user in ODD_USERS:
        visit(page, odd_shop.url, "users?preset=7d")
        link = page.locator("[data-chart='recent-buyers'] td[data-col='user_id'] a").filter(
            has_text=user
        )
        assert link.count() == 1, user
        link.first.click()
        # the profile's own title or error (the buyers card's h2 is there until they replace it)
        page.wait_for_selector("#user-profile > h2, #user-profile > .error", timeout=30_000)
        shown = page.locator("#user-profile").inner_text()
        assert page.locator("#user-profile > h2").first.inner_text() == user, shown
        assert page.evaluate("document.getElementById('user-id').value") == user
    assert page.errors == []


# ---- long ids ----------------------------------------------------------------------------------

BAR_ROOM = """(name) => {
  const el = document.querySelector(`[data-chart="${name}"] .chart`);
  const chart = echarts.getInstanceByDom(el);
  const box = el.getBoundingClientRect();
  const outside = [...el.querySelectorAll('svg text')].filter((t) => {
    const r = t.getBoundingClientRect();
    return r.width > 0 && (r.left < box.left - 1 || r.right > box.right + 1);
  }).map((t) => t.textContent);
  const zero = chart.convertToPixel({ xAxisIndex: 0 }, 0);
  const end = chart.getModel().getComponent('xAxis', 0).axis.scale.getExtent()[1];
  const top = chart.convertToPixel({ xAxisIndex: 0 }, end);
  return { width: box.width, bars: top - zero, outside };
}"""


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize(("route", "chart"), [("users", "recent-buyers"), ("ml", "churn-risk")])
def test_a_long_user_id_leaves_the_bars_room_and_stays_in_the_chart(
    odd_shop: ServerProcess, browser: Any, width: int, route: str, chart: str
) -> None:
    """One buyer id of 200 characters took the whole chart for its axis label: the bars of
    every buyer shrank to a few pixels and the labels ran out of the card."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        sign_in(page, odd_shop.url, ADMIN_KEY)
        visit(page, odd_shop.url, f"{route}?preset=7d")
        page.wait_for_selector(f"[data-chart='{chart}'] .chart svg path", state="attached")
        room = page.evaluate(BAR_ROOM, chart)
        assert room["outside"] == [] and room["bars"] >= 0.4 * room["width"], room
    finally:
        context.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_the_profile_of_a_long_user_id_does_not_scroll_sideways(
    odd_shop: ServerProcess, browser: Any, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        sign_in(page, odd_shop.url, ADMIN_KEY)
        visit(page, odd_shop.url, f"users?preset=7d&user={quote(LONG_USER)}")
        assert page.locator("#user-profile h2").first.inner_text() == LONG_USER
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1
    finally:
        context.close()


# ---- markup in chart tooltips ---------------------------------------------------------------

SHOW_TIP = """(name) => {
  const chart = echarts.getInstanceByDom(document.querySelector(`[data-chart="${name}"] .chart`));
  chart.dispatchAction({type: 'showTip', seriesIndex: 0, dataIndex: 0});
}"""


def test_a_device_id_with_markup_is_shown_as_text_in_the_schedule_tooltip(
    odd_shop: ServerProcess, page: Any
) -> None:
    """ECharts renders a string tooltip formatter as HTML: ids must be escaped in it."""
    sign_in(page, odd_shop.url, ADMIN_KEY)
    visit(page, odd_shop.url, "factory?preset=1d")
    page.wait_for_selector("[data-chart='schedule'] .chart svg", timeout=60_000)
    assert page.locator("main .pwn").count() == 0
    page.evaluate(SHOW_TIP, "schedule")
    tooltip = page.locator("[data-chart='schedule'] .chart > div").filter(has_text="order-")
    tooltip.first.wait_for(timeout=10_000)
    assert page.locator(".pwn").count() == 0
    assert HTML_DEVICE in tooltip.first.inner_text()
    assert page.errors == []


def test_a_tiny_negative_reading_is_shown_as_0_not_minus_0(
    odd_shop: ServerProcess, page: Any
) -> None:
    """Rounded to 2 decimals, -0.001 is 0: Intl.NumberFormat writes "-0" unless told not to."""
    sign_in(page, odd_shop.url, ADMIN_KEY)
    visit(page, odd_shop.url, "factory?preset=1d")
    page.wait_for_selector("#twin td[data-col='metric']", timeout=60_000)
    rows = page.locator("#twin tbody tr").filter(has_text="offset_mm")
    assert rows.count() == 1
    assert rows.first.locator("td[data-col='value']").inner_text() == "0"
    assert page.errors == []


# ---- errors: a revoked key ------------------------------------------------------------------


def test_a_key_revoked_while_signed_in_signs_out_on_the_users_page(
    odd_shop: ServerProcess, page: Any
) -> None:
    """'A 401 from any call signs you out and says why' — also the export behind Users."""
    keys = KeyStore(odd_shop.data_dir / "keys.sqlite")
    key, info = keys.create("default", ["read"], name="revoked soon")
    sign_in(page, odd_shop.url, key)
    visit(page, odd_shop.url, "overview")
    assert keys.revoke(info.key_id)
    deadline = time.monotonic() + 20
    while httpx.get(odd_shop.url + "/api/v1/me", headers={"x-api-key": key}).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.1)
    page.goto(f"{odd_shop.url}/#/users?preset=7d")
    page.wait_for_selector("#signin:not([hidden])", timeout=30_000)
    assert "Signed out" in page.inner_text("#signin-error")
    assert "invalid_api_key" in page.inner_text("#signin-error")
    assert page.evaluate("sessionStorage.getItem('avila.key')") is None


# ---- the live page after a server restart -----------------------------------------------------


def test_the_live_page_reconnects_its_websocket_after_the_server_restarts(
    tmp_path: Path, page: Any
) -> None:
    env = {"API_KEYS": ADMIN_KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    first = ServerProcess(tmp_path / "live", env=env).start()
    second: ServerProcess | None = None
    try:
        sign_in(page, first.url, ADMIN_KEY)
        visit(page, first.url, "live")
        page.wait_for_selector('#live-status[data-mode="websocket"]', timeout=20_000)
        assert first.stop() == 0
        page.wait_for_selector('#live-status:not([data-mode="websocket"])', timeout=20_000)
        second = ServerProcess(tmp_path / "live", env=env, port=first.port).start()
        page.wait_for_selector('#live-status[data-mode="websocket"]', timeout=60_000)
        deadline = time.monotonic() + 30
        sent = 0
        # The page subscribes when the socket opens; events sent after that are pushed to it.
        while "/back-again" not in page.inner_text("#live-feed"):
            assert time.monotonic() < deadline, page.inner_text("#live-status")
            sent += 1
            event = {
                "event_id": f"after-restart-{sent}",
                "user_id": "u1",
                "event_type": {"type": "PageView", "data": {"url": "/back-again"}},
            }
            httpx.post(
                second.url + "/api/v1/events",
                json={"event": event},
                headers={"x-api-key": ADMIN_KEY},
            )
            page.wait_for_timeout(500)
        assert "/back-again" in page.inner_text("#live-feed")
    finally:
        if second is not None:
            second.stop()
        first.stop()


# ---- the tracker ------------------------------------------------------------------------------

TRACKED_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script src="{server}/avila.js" data-api-key="{key}" defer></script>
</head><body><p>shop</p></body></html>
"""


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A server with CORS on and an ingest-only key (the kind a web page embeds)."""
    data_dir = tmp_path / "collector"
    data_dir.mkdir()
    ingest_key, _ = KeyStore(data_dir / "keys.sqlite").create("default", ["ingest"])
    process = ServerProcess(
        data_dir,
        env={"API_KEYS": ADMIN_KEY, "RATE_LIMIT_PER_MINUTE": "0", "ENABLE_CORS": "true"},
    )
    process.start()
    try:
        yield process, ingest_key
    finally:
        process.stop()


def accepted(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('avila_events_total{outcome="accepted"} '):
            return int(float(line.split()[-1]))
    return 0


def wait_for_accepted(url: str, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := accepted(url)) < expected:
        assert time.monotonic() < deadline, f"the server accepted {count} of {expected} events"
        time.sleep(0.1)
    return count


def test_tracker_unload_delivers_unicode_events_within_the_keepalive_byte_limit(
    collector: tuple[ServerProcess, str], site: Callable[[str], str], browser: Any
) -> None:
    """The 64 KiB keepalive cap counts UTF-8 bytes: a queue of CJK text measured in characters
    made one request over the cap, which the browser refuses whole, so nothing left with the
    page. Now what fits leaves with the page, the rest with the next page load, once each."""
    server, key = collector
    origin = site(TRACKED_PAGE.format(title="Shop", server=server.url, key=key))
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(origin + "/")
    page.wait_for_function("() => window.avila && window.avila.__avila")
    page.evaluate("() => avila.flush()")
    wait_for_accepted(server.url, 1)  # the page view
    # 10 events of about 8.5 KB each in UTF-8 (2,500 three-byte characters): 85 KB in all,
    # but only 35,000 characters. Queued (the flush waits a second) when the page goes away.
    page.evaluate(
        """() => { for (let i = 0; i < 10; i++) avila.track('Review ' + i, {text: '漢'.repeat(2500)}); }"""
    )
    page.goto("about:blank")
    wait_for_accepted(server.url, 2)  # some left with the page (keepalive)
    page.goto(origin + "/")  # the rest is sent by the next page load, with its page view
    page.wait_for_function("() => window.avila && window.avila.__avila")
    page.evaluate("() => avila.flush()")
    page.wait_for_function("() => localStorage.getItem('avila_queue') === null")
    assert wait_for_accepted(server.url, 12) == 12
    context.close()
    assert problems == []


def test_tracker_clips_long_urls_and_titles_and_warns_of_refused_events(
    collector: tuple[ServerProcess, str], site: Callable[[str], str], browser: Any
) -> None:
    """A page whose URL holds 40,000 characters of state (and a long title) still records its
    page view: url, path, title and referrer are clipped under the 32 KB event limit. An event
    the server refuses in its 202 (a custom event too large) is named in a console warning."""
    server, key = collector
    title = "長いタイトル" * 1000  # 6,000 characters, 18 KB in UTF-8
    origin = site(TRACKED_PAGE.format(title=title, server=server.url, key=key))
    context = browser.new_context()
    page = context.new_page()
    warnings: list[str] = []
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: warnings.append(msg.text) if msg.type == "warning" else None)
    state = "s" * 40_000
    page.goto(f"{origin}/?state={state}")
    page.wait_for_function("() => window.avila && window.avila.__avila")
    page.evaluate("() => avila.flush()")
    wait_for_accepted(server.url, 1)
    page.evaluate("() => avila.track('Huge', {blob: 'x'.repeat(40000)})")
    page.evaluate("() => avila.flush()")
    page.wait_for_function("() => localStorage.getItem('avila_queue') === null")
    deadline = time.monotonic() + 10
    while not any("event_too_large" in w for w in warnings):
        assert time.monotonic() < deadline, warnings
        page.wait_for_timeout(100)
    context.close()
    assert problems == []

    assert server.stop() == 0
    conn = duckdb.connect(str(server.data_dir / "avila.duckdb"), read_only=True)
    rows = conn.execute("SELECT url, title FROM events WHERE event_type = 'page_view'").fetchall()
    conn.close()
    assert len(rows) == 1
    url, stored_title = rows[0]
    assert url.startswith(f"{origin}/?state=sss") and len(url) == 4096
    assert stored_title == title[:1024]
