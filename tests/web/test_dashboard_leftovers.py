"""What a demanding user still noticed on the dashboard, in a real server and Chromium: long ids
in tables, revenue without a currency, the devices donut on a phone, fractional counts on axes
and timestamps that ignored the time zone picked in the range bar.

A small shop of its own (one event per hour, so every count is 1 or 2 and an axis would
happily show 0.5 users; purchases in EUR; nine devices with long names), plus the package's
demo data (purchases in BRL) for the donut as it looks in the demo.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from avila.testing import ServerProcess

from .conftest import Dashboard
from .test_dashboard_pages import sign_in, visit

ADMIN_KEY = "leftovers-admin-key"
#: A user id far wider than any screen, with no place to break it.
LONG_USER = "user_" + "ü" * 10 + "_" + "x" * 200
FEW = "few-events"  # one page view, one purchase
DEVICES = [f"Connected TV set {i} (living room)" for i in range(9)]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event(i: int, user: str, at: datetime, kind: str, data: dict[str, Any], device: str) -> dict:
    return {
        "event_id": f"leftover-{i}",
        "user_id": user,
        "timestamp": _iso(at),
        "event_type": {"type": kind, "data": data},
        "context": {"device": {"device_type": device}},
    }


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, datetime]]:
    """Each event in an hour of its own (hours 1-15 before now, whole seconds)."""
    data_dir = tmp_path_factory.mktemp("leftover-shop")
    process = ServerProcess(
        data_dir, env={"API_KEYS": ADMIN_KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    )
    process.start()
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        hour = [now - timedelta(hours=h, minutes=7) for h in range(16)]
        few_bought = hour[2]
        events = [
            _event(1, FEW, hour[1], "PageView", {"url": "/"}, "Mobile"),
            _event(
                2,
                FEW,
                few_bought,
                "Purchase",
                {"order_id": "o1", "revenue": 12.5, "currency": "EUR"},
                "Mobile",
            ),
            _event(3, "ann", hour[3], "PageView", {"url": "/"}, "Mobile"),
            _event(4, "ann", hour[4], "PageView", {"url": "/p"}, "Mobile"),
            _event(
                5,
                "ann",
                hour[5],
                "Purchase",
                {"order_id": "o2", "revenue": 20.0, "currency": "EUR"},
                "Mobile",
            ),
            _event(
                6,
                LONG_USER,
                hour[6],
                "Purchase",
                {"order_id": "o3", "revenue": 5.0, "currency": "EUR"},
                "Mobile",
            ),
        ]
        events += [
            _event(7 + i, f"tv-{i}", hour[7 + i], "PageView", {"url": f"/tv/{i}"}, name)
            for i, name in enumerate(DEVICES)
        ]
        headers = {"x-api-key": ADMIN_KEY}
        done = httpx.post(
            process.url + "/api/v1/events/batch", json={"events": events}, headers=headers
        )
        assert done.status_code == 202 and not done.json().get("rejected"), done.text
        deadline = time.monotonic() + 30
        while httpx.get(f"{process.url}/api/v1/users/tv-8", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the seeded events never became readable"
            time.sleep(0.1)
        yield process, few_bought
    finally:
        process.stop()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """open_page(url, route, viewport) -> a signed-in page showing that route."""
    contexts: list[Any] = []
    errors: list[str] = []

    def opener(url: str, route: str, viewport: dict[str, int], key: str = ADMIN_KEY) -> Any:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sign_in(page, url, key)
        visit(page, url, route)
        return page

    yield opener
    for context in contexts:
        context.close()
    assert errors == []


# ---- 1. a long user id in a table ----------------------------------------------------------

LINK_FIT = """(user) => {
  const link = [...document.querySelectorAll("[data-chart='recent-buyers'] td[data-col='user_id'] a")]
    .find((a) => a.textContent === user);
  const card = link.closest('.card').getBoundingClientRect();
  const wrap = link.closest('.table-wrap');
  return {
    title: link.title, cut: link.scrollWidth > link.clientWidth + 1,
    right: link.getBoundingClientRect().right, cardRight: card.right,
    tableScroll: wrap.scrollWidth - wrap.clientWidth,
    pageScroll: document.documentElement.scrollWidth - window.innerWidth,
  };
}"""


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_a_long_user_id_in_the_buyers_table_is_cut_with_the_whole_id_in_its_tooltip(
    shop: tuple[ServerProcess, datetime], open_page: Any, viewport: dict[str, int]
) -> None:
    """The id of 200 characters ran out of the card; the table now fits (no sideways scroll
    of the table or the page) and the id is cut with an ellipsis, whole in the title."""
    server, _ = shop
    page = open_page(server.url, "users?preset=7d", viewport)
    fit = page.evaluate(LINK_FIT, LONG_USER)
    assert fit["title"] == LONG_USER, fit
    assert fit["cut"] and fit["right"] <= fit["cardRight"], fit
    assert fit["tableScroll"] <= 1 and fit["pageScroll"] <= 1, fit
    link = page.locator("[data-chart='recent-buyers'] td[data-col='user_id'] a").filter(
        has_text=LONG_USER[:20]
    )
    link.click()  # still the link to the whole id's profile
    # The profile's title is #user-profile's own h2; the buyers card (an h2 inside its card)
    # is there until the profile replaces it, so waiting for any h2 raced the click.
    page.wait_for_selector("#user-profile > h2", timeout=30_000)
    assert page.locator("#user-profile > h2").inner_text() == LONG_USER


# ---- 2. revenue in the currency of the purchases -------------------------------------------


def test_revenue_is_shown_in_the_currency_the_purchases_name(
    shop: tuple[ServerProcess, datetime], open_page: Any
) -> None:
    server, _ = shop
    page = open_page(server.url, "overview?preset=7d", DESKTOP)
    assert page.inner_text("[data-kpi='revenue'] .value") == "€37.50"
    visit(page, server.url, f"users?preset=7d&user={FEW}")
    assert page.inner_text("#user-profile dd[data-field='Revenue']") == "€12.50"
    timeline = page.locator("#user-profile td[data-col='what']").all_inner_texts()
    assert "€12.50" in timeline


def test_amounts_in_mixed_unknown_or_no_currency_say_so(
    shop: tuple[ServerProcess, datetime], open_page: Any
) -> None:
    """A sum over purchases in different currencies is not in any of them."""
    server, _ = shop
    page = open_page(server.url, "keys", DESKTOP)
    shown = page.evaluate(
        """async () => {
          const { fmt, MIXED } = await import('/ui/js/ui.js');
          return [fmt.money(1234.5, 'USD'), fmt.money(3, 'JPY'), fmt.money(7.25, MIXED),
                  fmt.money(7.25, 'XQQ'), fmt.money(7.25, 'E$!'), fmt.money(7.25, null), fmt.money(-0.001, 'EUR')];
        }"""
    )
    assert shown == [
        "$1,234.50",
        "¥3",
        "7.25 (mixed currencies)",
        "XQQ\xa07.25",  # Intl puts a no-break space after a code
        "7.25 E$!",
        "7.25",
        "€0.00",
    ]


# ---- 3. the devices donut on a phone -------------------------------------------------------

DONUT = """() => {
  const el = document.querySelector("[data-chart='devices'] .chart");
  const box = el.getBoundingClientRect();
  return [...el.querySelectorAll('svg text')].map((t) => {
    const r = t.getBoundingClientRect();
    return { text: t.textContent, inside: r.left >= box.left - 1 && r.right <= box.right + 1
      && r.top >= box.top - 1 && r.bottom <= box.bottom + 1 };
  });
}"""


#: The label lines of the pie (three-point polylines) that lead to no name: ECharts drops a
#: label that does not fit the chart and still draws its line.
ORPHAN_LINES = """() => {
  const el = document.querySelector("[data-chart='devices'] .chart");
  const texts = [...el.querySelectorAll('svg text')].map((t) => t.getBoundingClientRect());
  const lines = [...el.querySelectorAll('svg path')]
    .filter((p) => /^M[-\\d.\\s]+L[-\\d.\\s]+L[-\\d.\\s]+$/.test(p.getAttribute('d') || ''))
    .map((p) => p.getBoundingClientRect());
  return lines.filter((l) => !texts.some((t) =>
    (Math.abs(t.left - l.right) < 10 || Math.abs(t.right - l.left) < 10)
      && t.bottom >= l.top - 12 && t.top <= l.bottom + 12))
    .map((l) => [Math.round(l.left), Math.round(l.right)]);
}"""


def test_the_devices_donut_names_every_slice_inside_the_card_on_a_phone(
    dashboard: Dashboard, open_page: Any
) -> None:
    """On the demo data two of the three names around the ring did not fit a phone: their
    lines ran towards the card's edge and ended in nothing."""
    page = open_page(dashboard.url, "overview", PHONE, key=dashboard.admin_key)
    page.wait_for_selector("[data-chart='devices'] .chart svg path", state="attached")
    texts = page.evaluate(DONUT)
    assert [t for t in texts if not t["inside"]] == []
    assert {"Mobile", "Desktop", "Tablet"} <= {t["text"] for t in texts}
    assert page.evaluate(ORPHAN_LINES) == []


def test_every_device_of_a_long_donut_legend_can_be_reached_on_a_phone(
    shop: tuple[ServerProcess, datetime], open_page: Any
) -> None:
    """Nine long names do not fit a phone's width: the legend pages through them."""
    server, _ = shop
    page = open_page(server.url, "overview?preset=7d", PHONE)
    page.wait_for_selector("[data-chart='devices'] .chart svg path", state="attached")
    for name in ["Mobile", *DEVICES]:
        page.evaluate(
            """(name) => {
              const chart = echarts.getInstanceByDom(document.querySelector("[data-chart='devices'] .chart"));
              const names = chart.getOption().series[0].data.map((d) => d.name);
              chart.dispatchAction({ type: 'legendScroll', scrollDataIndex: names.indexOf(name), legendIndex: 0 });
            }""",
            name,
        )
        # The legend slides to the page holding that name (animated): wait until it is shown.
        page.wait_for_function(
            f"(name) => ({DONUT})().some((t) => t.text === name && t.inside)",
            arg=name,
            timeout=10_000,
        )


# ---- 4. counts on axes are whole numbers ---------------------------------------------------

TICKS = """([name, axis]) => {
  const chart = echarts.getInstanceByDom(document.querySelector(`[data-chart="${name}"] .chart`));
  return chart.getModel().getComponent(axis, 0).axis.scale.getTicks().map((t) => t.value);
}"""


@pytest.mark.parametrize(
    ("route", "chart", "axis"),
    [
        (f"users?preset=7d&user={FEW}", "user-events", "xAxis"),
        ("overview?preset=7d&interval=hour", "trend", "yAxis"),
        ("overview?preset=7d", "top-pages", "xAxis"),
    ],
)
def test_count_axes_have_whole_number_ticks(
    shop: tuple[ServerProcess, datetime], open_page: Any, route: str, chart: str, axis: str
) -> None:
    """1 page view and 1 purchase drew an axis of 0, 0.2, 0.4 … events."""
    server, _ = shop
    page = open_page(server.url, route, DESKTOP)
    page.wait_for_selector(f"[data-chart='{chart}'] .chart svg path", state="attached")
    ticks = page.evaluate(TICKS, [chart, axis])
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


# ---- 5. times in the time zone of the range bar --------------------------------------------


def test_times_follow_the_time_zone_chosen_in_the_range_bar(
    shop: tuple[ServerProcess, datetime], open_page: Any
) -> None:
    """São Paulo is UTC-3 all year: the purchase is shown at its local time, named GMT-3."""
    server, bought = shop
    local = bought - timedelta(hours=3)
    tz = quote("America/Sao_Paulo", safe="")
    page = open_page(server.url, f"users?preset=7d&tz={tz}", PHONE)
    row = page.locator("[data-chart='recent-buyers'] tbody tr").filter(has_text=FEW)
    shown = row.locator("td[data-col='last_purchase']").inner_text().replace("\n", " ")
    assert shown.startswith(f"{local:%d/%m/%Y}, ") and shown.endswith(" GMT-3"), shown
    assert f"{local.hour}:{local:%M:%S}" in shown, shown  # "1:45:06" or "01:45:06"
    visit(page, server.url, f"users?preset=7d&tz={tz}&user={FEW}")
    assert page.inner_text("#user-profile dd[data-field='Last seen']").endswith("GMT-3")
    visit(page, server.url, f"live?tz={tz}")
    assert "America/Sao_Paulo" in page.inner_text("[data-chart='events-per-minute'] h2")


# ---- 6. tiles inside a card ----------------------------------------------------------------

TILE_LINES = """() => [...document.querySelectorAll('[data-chart="energy"] .tile .value')].map((v) => {
  const range = document.createRange();
  range.selectNodeContents(v);
  const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
  return [v.closest('.tile').dataset.kpi, v.textContent, tops.size];
})"""


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_energy_figures_stay_on_one_line(
    dashboard: Dashboard, open_page: Any, viewport: dict[str, int]
) -> None:
    """The energy tiles sit in a half-width card: six columns (the page-wide tiles' layout on
    a wide window) broke "262.26" into "262." and "26"."""
    page = open_page(dashboard.url, "factory?preset=7d", viewport, key=dashboard.admin_key)
    page.wait_for_selector('[data-chart="energy"] [data-kpi="co2"] .value')
    tiles = page.evaluate(TILE_LINES)
    assert len(tiles) == 4 and all(text for _, text, _ in tiles)
    assert [t for t in tiles if t[2] != 1] == []
