"""Users API edge cases against a real server: GDPR erase of a stitched person
(docs/users.md: "nothing of the user remains")."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx


def _event(user: str, etype: str = "PageView", data: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        # now: the events also feed the in-memory live session state of the predictions
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "event_type": {"type": etype, "data": data if data is not None else {"url": "/"}},
    }
    body.update(extra)
    return body


def _post(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    response = client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


def test_erasing_a_stitched_person_leaves_nothing_of_their_anonymous_id(
    client: httpx.Client,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    anon, person = f"anon-{suffix}", f"person-{suffix}"
    anonymous = [
        _event(anon, session_id=f"s-{suffix}"),
        _event(
            anon,
            "Purchase",
            {"order_id": f"o-{suffix}", "revenue": 12.5, "currency": "EUR"},
            session_id=f"s-{suffix}",
        ),
    ]
    identify = _event(
        person,
        "Custom",
        {"name": "$identify", "properties": {}},
        metadata={"anonymous_id": anon},
    )
    _post(client, anonymous)
    _post(client, [identify])
    sent = anonymous + [identify]
    assert client.get(f"/api/v1/users/{person}").json()["total_events"] == len(sent)
    # the anonymous id had its own (live) predictions before the erase
    assert client.get(f"/api/v1/users/{anon}/predictions").status_code == 200

    erased = client.delete(f"/api/v1/users/{person}")
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"deleted_events": len(sent)}

    for user in (person, anon):
        for path in ("", "/sessions", "/segment", "/predictions"):
            response = client.get(f"/api/v1/users/{user}{path}")
            assert response.status_code == 404, (user, path, response.text)
            assert response.json()["error"]["code"] == "user_not_found"
