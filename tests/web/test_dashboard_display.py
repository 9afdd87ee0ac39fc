"""What the dashboard shows on the demo data, checked against the API's answer and the screen:
periods that have not happened yet, controls that must redraw, labels on a phone-sized screen,
and a funnel with nobody in it."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx

from avila.security.keys import KeyStore

from .conftest import Dashboard, Watch
from .test_dashboard_pages import sign_in, visit, wait_for_charts


def _number(value: float) -> str:
    """fmt.num of the dashboard: at most 2 decimals (no trailing zeros), thousands with commas."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def test_retention_leaves_the_periods_after_the_range_blank_instead_of_zero(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    """The API answers 0 for the weeks a cohort has not lived yet (the 30 Nov cohort's week 1
    is next week); the heatmap drew them as "0" — retention fell to nothing — and the table
    said "0 % (0)". Those cells are now empty; every other cell is the API's number."""
    page, watch = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    with page.expect_response(lambda r: r.url.endswith("/api/v1/analytics/cohort")) as answer:
        visit(page, dashboard.url, "retention?preset=30d&tz=UTC&period=week&periods=8")
    cohort = answer.value.json()
    end = datetime.fromisoformat(answer.value.request.post_data_json["end_time"])
    wait_for_charts(page, 1)
    page.locator('[data-chart="retention"]').get_by_role("button", name="Table").click()
    rows = page.locator('[data-chart="retention"] tbody tr')
    assert rows.count() == len(cohort["cohorts"])
    future_cells = 0
    for y, one in enumerate(cohort["cohorts"]):
        first = date.fromisoformat(one["cohort_start"])
        lived = 0
        for k, (rate, retained) in enumerate(zip(one["rates"], one["retained"], strict=True)):
            starts = datetime(*(first + timedelta(weeks=k)).timetuple()[:3], tzinfo=end.tzinfo)
            shown = rows.nth(y).locator(f'td[data-col="p{k}"]').inner_text()
            if starts >= end:
                future_cells += 1
                assert shown == "", (one["cohort_start"], k, shown)
            else:
                lived += 1
                assert shown == f"{_number(rate * 100)} % ({retained})", (one["cohort_start"], k)
        # The server says the same: the weeks that began before the end of the range.
        assert one["periods_observed"] == lived, one["cohort_start"]
    assert future_cells > 0  # the demo's last cohort began this week
    drawn = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-chart="retention"] .chart'))
             .getOption().series[0].data.length"""
    )
    cells = sum(len(one["rates"]) for one in cohort["cohorts"])
    assert drawn == cells - future_cells
    assert watch.console_errors == []


def test_retention_blanks_the_periods_the_server_did_not_observe(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    """The page blanks what the API's ``periods_observed`` says was not lived, not what its own
    calendar says: the real answer is passed through with each cohort's count lowered by one
    (to at least 1), and exactly those cells go empty."""
    page, watch = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    seen: list[dict[str, Any]] = []

    def lower(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for one in body["cohorts"]:
            one["periods_observed"] = max(1, one["periods_observed"] - 1)
        seen.append(body)
        route.fulfill(response=answer, json=body)

    page.route("**/api/v1/analytics/cohort", lower)
    visit(page, dashboard.url, "retention?preset=30d&tz=UTC&period=day&periods=10")
    wait_for_charts(page, 1)
    page.locator('[data-chart="retention"]').get_by_role("button", name="Table").click()
    rows = page.locator('[data-chart="retention"] tbody tr')
    cohort = seen[-1]
    assert rows.count() == len(cohort["cohorts"]) > 1
    for y, one in enumerate(cohort["cohorts"]):
        for k, (rate, retained) in enumerate(zip(one["rates"], one["retained"], strict=True)):
            shown = rows.nth(y).locator(f'td[data-col="p{k}"]').inner_text()
            if k >= one["periods_observed"]:
                assert shown == "", (one["cohort_start"], k, shown)
            else:
                assert shown == f"{_number(rate * 100)} % ({retained})", (one["cohort_start"], k)
    drawn = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-chart="retention"] .chart'))
             .getOption().series[0].data.length"""
    )
    assert drawn == sum(one["periods_observed"] for one in cohort["cohorts"])
    page.unroute("**/api/v1/analytics/cohort")
    assert watch.console_errors == []


def test_the_co2_factor_redraws_the_energy_figures_with_the_api_answer(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    """The "kg CO₂ per kWh" box only rewrote the URL ("reload to apply"): typing a factor
    changed nothing on the screen."""
    page, watch = page_and_watch
    sign_in(page, dashboard.url, dashboard.admin_key)
    visit(page, dashboard.url, "factory?preset=7d")
    page.wait_for_selector('[data-chart="energy"] [data-kpi="co2"]')
    with page.expect_response(
        lambda r: "/energy/consumption" in r.url and "co2_kg_per_kwh=1.5" in r.url
    ) as answer:
        page.fill("#co2-factor", "1.5")
        page.press("#co2-factor", "Enter")
    co2 = answer.value.json()["devices"][0]["co2_kg"]
    tile = page.locator('[data-chart="energy"] [data-kpi="co2"] .value')
    page.wait_for_function(
        '(want) => document.querySelector(\'[data-chart="energy"] [data-kpi="co2"] .value\')'
        "?.textContent === want",
        arg=_number(co2),
        timeout=10_000,
    )
    assert tile.inner_text() == _number(co2)
    assert page.input_value("#co2-factor") == "1.5"
    assert "co2=1.5" in page.url
    assert page.locator('[data-chart="energy"]').count() == 1
    assert watch.console_errors == [] and watch.failed == []


OVERLAPS = """(names) => names.map((name) => {
  const svg = document.querySelector(`[data-chart="${name}"] .chart svg`);
  const box = svg.getBoundingClientRect();
  const texts = [...svg.querySelectorAll('text')].filter((t) => t.textContent.trim())
    .map((t) => ({ text: t.textContent, r: t.getBoundingClientRect() })).filter((t) => t.r.width > 0);
  const found = [];
  for (const t of texts) {
    if (t.r.left < box.left - 1 || t.r.right > box.right + 1) found.push(`cut off: ${t.text}`);
  }
  for (let i = 0; i < texts.length; i++) {
    for (let j = i + 1; j < texts.length; j++) {
      const a = texts[i].r;
      const b = texts[j].r;
      const wide = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const high = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (wide > 2 && high > 2) found.push(`${texts[i].text} over ${texts[j].text}`);
    }
  }
  return [name, found];
})"""


def test_chart_labels_do_not_overlap_on_a_phone(browser: Any, dashboard: Dashboard) -> None:
    """At 390 px the value axis of the bar charts read "0 2,0004,0006,0008,000" and the funnel's
    step names ran into each other ("1. page2. view product3. view...")."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, dashboard.url, dashboard.admin_key)
        wait_for_charts(page, 5)
        found = dict(page.evaluate(OVERLAPS, ["top-pages", "referrers", "countries"]))
        visit(page, dashboard.url, "funnels")
        wait_for_charts(page, 1)
        found |= dict(page.evaluate(OVERLAPS, ["funnel"]))
        assert {name: texts for name, texts in found.items() if texts} == {}
    finally:
        context.close()


def test_a_funnel_nobody_entered_says_so_instead_of_drawing_zeros(
    dashboard: Dashboard, page_and_watch: tuple[Any, Watch]
) -> None:
    page, watch = page_and_watch
    key, _ = KeyStore(dashboard.process.data_dir / "keys.sqlite").create("empty-funnel", ["read"])
    funnel = httpx.post(
        dashboard.url + "/api/v1/analytics/funnel",
        headers={"x-api-key": key},
        json={"steps": [{"condition_type": "page_view"}, {"condition_type": "purchase"}]},
        timeout=30,
    )
    assert funnel.status_code == 200 and funnel.json()["total_users"] == 0, funnel.text
    sign_in(page, dashboard.url, key)
    visit(page, dashboard.url, "funnels")
    results = page.locator("#funnel-results")
    assert results.locator("[data-empty]").count() == 1
    assert "No user" in results.inner_text()
    assert results.locator('[data-chart="funnel"]').count() == 0
    assert watch.console_errors == [] and watch.failed == []
