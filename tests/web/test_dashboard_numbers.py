"""What the dashboard shows equals what the API answers for the same query; edits round-trip.

The expected API bodies are built here from the page's URL state (whole local days in the
chosen time zone, converted with zoneinfo), independently of the page's own JavaScript.
"""

from __future__ import annotations

import json
import time as time_module
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest

from .conftest import Dashboard, Watch
from .test_dashboard_pages import a_buyer, server_speaks_key_subprotocol, sign_in, visit

TZ = "America/Sao_Paulo"


def local_range(days: int) -> tuple[str, str, str, str]:
    """``from``/``to`` (local dates, today included) and the UTC instants they stand for."""
    zone = ZoneInfo(TZ)
    today = datetime.now(zone).date()
    first = today - timedelta(days=days)
    start = datetime.combine(first, time(0), zone).astimezone(UTC)
    end = datetime.combine(today + timedelta(days=1), time(0), zone).astimezone(UTC)
    return first.isoformat(), today.isoformat(), start.isoformat(), end.isoformat()


def api(dashboard: Dashboard, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = httpx.request(
        method,
        dashboard.url + path,
        headers={"x-api-key": dashboard.admin_key, **kwargs.pop("headers", {})},
        timeout=60,
        **kwargs,
    )
    assert response.status_code < 300, response.text
    return response


def cells(page: Any, card: str, column: str) -> list[str]:
    texts: list[str] = page.locator(
        f'[data-chart="{card}"] td[data-col="{column}"]'
    ).all_inner_texts()
    return texts


def percent(rate: float) -> float:
    return round(rate * 100, 2)


def parse_percent(text: str) -> float:
    return float(text.split("%")[0].replace(",", "").strip())


@pytest.mark.parametrize("mode", ["ordered", "strict_increase"])
def test_funnel_numbers_equal_the_api_for_the_same_query(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch], mode: str
) -> None:
    page, watch = page_and_watch
    first, last, start, end = local_range(20)
    steps = [
        ["page_view", "/", "exact"],
        ["product_view", "", "exact"],
        ["add_to_cart", "", "exact"],
        ["purchase", "", "exact"],
    ]
    route = (
        f"funnels?from={first}&to={last}&tz={quote(TZ, safe='')}&steps={quote(json.dumps(steps))}"
        f"&window=604800&mode={mode}"
    )
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, route)
    shown_counts = [int(c.replace(",", "")) for c in cells(page, "funnel", "count")]
    shown_rates = [parse_percent(c) for c in cells(page, "funnel", "conversion_rate")]

    body = {
        "steps": [{"condition_type": t, "condition_value": v, "match": m} for t, v, m in steps],
        "conversion_window_seconds": 604800,
        "mode": mode,
        "start_time": start,
        "end_time": end,
        "timezone": TZ,
    }
    expected = api(dashboard, "POST", "/api/v1/analytics/funnel", json=body).json()
    assert shown_counts == [s["count"] for s in expected["steps"]]
    assert shown_rates == [percent(s["conversion_rate"]) for s in expected["steps"]]
    assert shown_counts[0] > shown_counts[-1] > 0  # a real funnel, not all zeros
    assert watch.console_errors == [] and watch.failed == []

    # The drop-off after step 2 (the third row's "Dropped"): the list the page shows has the
    # API's total for the same query, its users link to their profiles, its CSV holds them.
    funnel_card = page.locator('[data-chart="funnel"]')
    funnel_card.get_by_role("button", name="Table").click()
    page.click('[data-chart="funnel"] [data-dropped="2"]')
    page.wait_for_selector("#funnel-dropped")
    dropped = api(
        dashboard, "POST", "/api/v1/analytics/funnel/dropped", json={**body, "step": 2}
    ).json()
    shown_total = int(page.inner_text("#funnel-dropped-total").replace(",", ""))
    assert shown_total == dropped["total"] == shown_counts[1] - shown_counts[2] > 0
    links = page.locator('#funnel-dropped td[data-col="user_id"] a')
    assert links.count() == min(dropped["total"], 1000)
    first_user = dropped["users"][0]["user_id"]
    assert links.first.inner_text() == first_user
    assert links.first.get_attribute("href") == f"#/users?user={quote(first_user, safe='')}"
    with page.expect_download() as download:
        page.locator("#funnel-dropped").get_by_role("button", name="CSV").click()
    with open(download.value.path(), encoding="utf-8", newline="") as csv_file:  # noqa: PTH123
        csv_lines = csv_file.read().splitlines()
    assert csv_lines[0] == "User" and csv_lines[1] == first_user
    assert len(csv_lines) == links.count() + 1
    assert "dropped=2" in page.url
    assert watch.console_errors == [] and watch.failed == []

    # The URL alone reproduces the page (no key in it): a new tab signs in and shows the same.
    shared = page.url
    assert dashboard.admin_key not in shared
    other = page.context.browser.new_page()
    try:
        other.goto(shared)
        other.fill("#signin-key", dashboard.admin_key)
        other.press("#signin-key", "Enter")
        other.wait_for_selector('main[data-page="funnels"][aria-busy="false"]')
        again = [int(c.replace(",", "")) for c in cells(other, "funnel", "count")]
        assert again == shown_counts
        other.wait_for_selector("#funnel-dropped")
        assert other.get_attribute("#funnel-dropped", "data-total") == str(dropped["total"])
    finally:
        other.close()


def test_funnel_builder_edits_steps_and_mode(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, watch = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, "funnels?preset=30d")
    page.locator('[data-step="4"] button').click()  # remove the 5th (purchase) step
    page.locator('[data-step="0"] [data-field="value"]').fill("/product")
    page.locator('[data-step="0"] [data-field="match"]').select_option("prefix")
    page.select_option("#funnel-mode", "unordered")
    page.select_option("#funnel-breakdown", "context.device.device_type")
    page.click("#funnel-run")
    page.wait_for_selector('[data-chart="funnel-breakdown"] svg path', state="attached")
    params = page.evaluate("Object.fromEntries(new URLSearchParams(location.hash.split('?')[1]))")
    assert json.loads(params["steps"]) == [
        ["page_view", "/product", "prefix"],
        ["product_view", "", "exact"],
        ["add_to_cart", "", "exact"],
        ["checkout", "", "exact"],
    ]
    assert params["mode"] == "unordered" and params["breakdown"] == "context.device.device_type"
    assert len(cells(page, "funnel", "count")) == 4
    assert watch.console_errors == [] and watch.failed == []


def test_funnel_api_error_is_shown_in_words(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, _ = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    steps = [["page_view", "(", "regex"], ["purchase", "", "exact"]]
    visit(page, dashboard.url, f"funnels?steps={quote(json.dumps(steps))}")
    error = page.locator("#funnel-results .error").inner_text()
    assert "invalid_regex" in error and "HTTP 422" in error


@pytest.mark.parametrize(("period", "mode"), [("day", "on_or_after"), ("week", "exact")])
def test_retention_numbers_equal_the_api_for_the_same_query(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch], period: str, mode: str
) -> None:
    page, watch = page_and_watch
    first, last, start, end = local_range(25)
    route = (
        f"retention?from={first}&to={last}&tz={quote(TZ, safe='')}&period={period}&periods=6"
        f"&mode={mode}&return=page_view"
    )
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, route)
    expected = api(
        dashboard,
        "POST",
        "/api/v1/analytics/cohort",
        json={
            "period": period,
            "periods": 6,
            "mode": mode,
            "return_event": {"condition_type": "page_view", "condition_value": ""},
            "start_time": start,
            "end_time": end,
            "timezone": TZ,
        },
    ).json()
    assert expected["cohorts"], "the demo data must give cohorts"
    assert cells(page, "retention", "cohort") == [
        c["cohort_start"][:10] for c in expected["cohorts"]
    ]
    assert [int(s.replace(",", "")) for s in cells(page, "retention", "size")] == [
        c["size"] for c in expected["cohorts"]
    ]
    # A period that begins after the range's end has not happened: its cell is empty (the
    # API's 0 there is no measurement).
    ends = datetime.fromisoformat(end)
    step = timedelta(days=7 if period == "week" else 1)
    for k in range(6):
        shown = cells(page, "retention", f"p{k}")
        want = []
        for c in expected["cohorts"]:
            first_day = date.fromisoformat(c["cohort_start"][:10])
            begins = datetime.combine(first_day + k * step, time(0), ZoneInfo(TZ))
            if begins >= ends:
                want.append("")
            else:
                want.append(
                    f"{percent(c['rates'][k]):g} % ({c['retained'][k]})".replace(".0 %", " %")
                )
        assert [(parse_percent(s), s.split("(")[1]) if s else s for s in shown] == [
            (parse_percent(w), w.split("(")[1]) if w else w for w in want
        ]
        # The API's own count of the periods each cohort lived agrees with the local calendar.
        assert [k < c["periods_observed"] for c in expected["cohorts"]] == [w != "" for w in want]
    assert watch.console_errors == [] and watch.failed == []


def test_twin_edits_round_trip_with_etags(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, _ = page_and_watch
    device = "L1-M2"
    path = f"/api/v1/industry40/twin/{device}"
    before = api(dashboard, "GET", path)
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, f"factory?device={device}")
    assert page.get_attribute("#twin-version", "data-etag") == before.headers["etag"]

    page.fill("#twin-desired", '{"spindle_rpm": 1200, "note": "ação ✓"}')
    page.click("#twin-save")
    page.wait_for_selector("#twin-message:has-text('Saved.')")
    after = api(dashboard, "GET", path)
    assert after.json()["desired"] == {"spindle_rpm": 1200, "note": "ação ✓"}
    assert after.json()["version"] == before.json()["version"] + 1
    assert page.get_attribute("#twin-version", "data-etag") == after.headers["etag"]

    # Someone else writes; the page's ETag is now stale and its save is refused in words.
    api(
        dashboard,
        "PUT",
        path + "/desired",
        json={"spindle_rpm": 900},
        headers={"if-match": after.headers["etag"]},
    )
    page.fill("#twin-desired", '{"spindle_rpm": 1500}')
    page.click("#twin-save")
    message = page.wait_for_selector("#twin-message .error").inner_text()
    assert "twin_version_mismatch" in message and "412" in message
    assert api(dashboard, "GET", path).json()["desired"] == {"spindle_rpm": 900}
    page.click("#twin-message button")  # Reload
    page.wait_for_function(
        "() => JSON.parse(document.getElementById('twin-desired').value).spindle_rpm === 900"
    )


def test_live_page_shows_an_event_sent_after_it_opened(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, watch = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, "live")
    if not server_speaks_key_subprotocol(dashboard):
        # The server does not take the key as a subprotocol yet: the page polls over REST.
        page.wait_for_selector('#live-status[data-mode="polling"]')
        assert page.locator('#live-counters [data-kpi="minute"]').count() == 1
        return
    page.wait_for_selector('#live-status[data-mode="websocket"]')
    event_id = str(uuid.uuid4())
    api(
        dashboard,
        "POST",
        "/api/v1/events",
        json={
            "event": {
                "event_id": event_id,
                "user_id": "live-viewer",
                "event_type": {"type": "PageView", "data": {"url": "/live-check"}},
            }
        },
    )
    page.wait_for_selector(f'#live-feed [data-event-id="{event_id}"]', timeout=5_000)
    assert "/live-check" in page.inner_text(f'#live-feed [data-event-id="{event_id}"]')
    assert watch.console_errors == [] and watch.failed == []


def test_admin_erases_a_user_after_typing_the_id(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, _ = page_and_watch
    api(
        dashboard,
        "POST",
        "/api/v1/events/batch",
        json={
            "events": [
                {
                    "user_id": "erase-me",
                    "event_type": {"type": "PageView", "data": {"url": f"/{i}"}},
                }
                for i in range(3)
            ]
        },
    )
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, "users?user=erase-me")
    page.click('[data-admin-action="erase-user"]')
    page.fill("#confirm-input", "erase-m")
    assert page.is_disabled("#confirm-ok")  # nothing happens until the id is typed exactly
    page.fill("#confirm-input", "erase-me")
    page.click("#confirm-ok")
    page.wait_for_selector("text=Erased 3 events of erase-me.")
    gone = httpx.get(
        dashboard.url + "/api/v1/users/erase-me",
        headers={"x-api-key": dashboard.admin_key},
        timeout=30,
    )
    assert gone.status_code == 404


def test_training_reports_progress_and_its_outcome_in_words(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, _ = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, "ml")
    page.click('[data-admin-action="train-models"]')
    page.wait_for_selector("#train-status progress", state="attached")
    page.wait_for_selector('[data-admin-action="train-models"]:not([disabled])', timeout=120_000)
    status = page.inner_text("#train-status")
    trained = httpx.get(
        dashboard.url + "/api/v1/ml/models", headers={"x-api-key": dashboard.admin_key}, timeout=30
    ).json()
    if trained["versions"]:
        assert status.startswith("Trained ") and page.locator("[data-model]").count() >= 1
    else:  # the small test data set is too small to train on: the page says why
        assert "insufficient_training_data" in status and "HTTP 422" in status


def test_a_user_that_does_not_exist_is_said_so(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, _ = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, f"users?user={a_buyer(dashboard)}x")
    assert "No user" in page.inner_text("#user-profile .error")


def test_live_page_lists_the_alert_firings_of_the_api(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, watch = page_and_watch
    rule = api(
        dashboard,
        "POST",
        "/api/v1/alerts/rules",
        json={
            "name": "Páginas ✓ vistas",
            "metric": {"kind": "event_count", "condition_type": "page_view"},
            "condition": {"op": ">", "threshold": 0},
            "window_seconds": 600,
            # A closed local port: the delivery fails, the firing is still recorded.
            "destinations": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
        },
    ).json()
    api(
        dashboard,
        "POST",
        "/api/v1/events",
        json={
            "event": {
                "user_id": "alert-maker",
                "event_type": {"type": "PageView", "data": {"url": "/a"}},
            }
        },
    )
    firings: list[dict[str, Any]] = []
    deadline = time_module.monotonic() + 10
    while not firings:
        assert time_module.monotonic() < deadline, "the rule did not fire within 10 s"
        time_module.sleep(0.2)
        history = api(dashboard, "GET", "/api/v1/alerts/history", params={"rule_id": rule["id"]})
        firings = history.json()["firings"]
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, "live")
    shown = page.inner_text(f'#live-alerts [data-firing="{firings[0]["id"]}"]')
    assert "Páginas ✓ vistas" in shown and "> 0" in shown
    api(dashboard, "DELETE", f"/api/v1/alerts/rules/{rule['id']}")
    errors = watch.console_errors
    if not server_speaks_key_subprotocol(dashboard):  # the refused handshake, until it does
        errors = [e for e in errors if "Sec-WebSocket-Protocol" not in e]
    assert errors == [] and watch.failed == []


FUNNEL_STEPS = [
    {"condition_type": "page_view", "condition_value": "/"},
    {"condition_type": "page_view", "condition_value": "/product", "match": "prefix"},
    {"condition_type": "add_to_cart"},
    {"condition_type": "purchase"},
]


@pytest.mark.parametrize("mode", ["ordered", "strict_increase", "strict_order", "unordered"])
def test_dropped_users_api_total_is_the_report_drop_off(dashboard: Dashboard, mode: str) -> None:
    """Over HTTP on the demo server: per step, the drop-off list's total is the funnel report's
    count difference, the listed users are distinct and at most ``limit``."""
    body = {"steps": FUNNEL_STEPS, "mode": mode, "conversion_window_seconds": 604800}
    counts = [
        s["count"]
        for s in api(dashboard, "POST", "/api/v1/analytics/funnel", json=body).json()["steps"]
    ]
    assert counts[0] > 0
    for k in range(1, len(FUNNEL_STEPS)):
        got = api(
            dashboard,
            "POST",
            "/api/v1/analytics/funnel/dropped",
            json={**body, "step": k, "limit": 5},
        ).json()
        assert got["step"] == k
        assert got["total"] == counts[k - 1] - counts[k]
        ids = [u["user_id"] for u in got["users"]]
        assert len(ids) == min(5, got["total"]) == len(set(ids))
        assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("extra", "code", "path", "bounds"),
    [
        ({"step": 4}, "funnel_step_out_of_range", "step", None),
        ({"step": 1, "limit": 1001}, "validation_failed", "limit", (1, 1000)),
        ({"step": 0}, "validation_failed", "step", (1, 19)),
    ],
)
def test_dropped_users_api_refuses_bad_step_and_limit(
    dashboard: Dashboard, extra: dict[str, Any], code: str, path: str, bounds: Any
) -> None:
    response = httpx.post(
        dashboard.url + "/api/v1/analytics/funnel/dropped",
        headers={"x-api-key": dashboard.admin_key},
        json={"steps": FUNNEL_STEPS, **extra},
        timeout=60,
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    detail = error["details"][0]
    assert detail["path"] == path
    if bounds is not None:
        assert (detail["minimum"], detail["maximum"]) == bounds
