"""``POST /api/v1/alerts/evaluate`` at the edges of the calendar: an ``at`` whose window (or, for
an anomaly score, whose 24 baseline windows) would begin before year 1 is a bad request, a 422
naming ``at`` as every other field error does (docs/alerts.md), never a 500."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.foundation.helpers import assert_error

EVENTS = {"kind": "event_count", "condition_type": "page_view"}


@pytest.mark.parametrize(
    ("metric", "window", "at"),
    [
        (EVENTS, 86_400 * 30, "0001-01-02T00:00:00Z"),  # the window starts before year 1
        ({"kind": "anomaly"}, 86_400, "0001-01-10T00:00:00Z"),  # the baseline does
        (EVENTS, 60, "0001-01-01T00:00:00+05:00"),  # `at` itself is before year 1 in UTC
    ],
)
def test_evaluate_before_year_one_is_a_422_at_at(
    new_project: Callable[..., httpx.Client], metric: dict[str, str], window: int, at: str
) -> None:
    client = new_project(scopes=("read",))
    response = client.post(
        "/api/v1/alerts/evaluate", json={"metric": metric, "window_seconds": window, "at": at}
    )
    error = assert_error(response, 422, "validation_failed")
    assert "at" in [d["path"] for d in error["details"]], error


def test_evaluate_at_the_earliest_possible_window_still_answers(
    new_project: Callable[..., httpx.Client],
) -> None:
    client = new_project(scopes=("read",))
    response = client.post(
        "/api/v1/alerts/evaluate",
        json={"metric": EVENTS, "window_seconds": 86_400, "at": "0001-01-02T00:00:00Z"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["value"] == 0.0
    assert response.json()["window_start"] == "0001-01-01T00:00:00.000Z"
