"""Alerts end to end on a real server: a telemetry rule fires into a real HTTP receiver, Slack
receiver and SMTP server within 5 s, signed; the cooldown holds; dead, failing and hanging
destinations are retried and recorded as failed while the others deliver."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from websockets.sync.client import connect

from avila.testing import ServerProcess
from tests.alerts.conftest import DELIVERY_ATTEMPTS, DELIVERY_TIMEOUT_SECONDS, SMTP_FROM
from tests.alerts.receivers import HttpReceiver, Mail, SmtpSink, dead_port, wait_for
from tests.conftest import TEST_KEY

#: The issue's bound from the reading that crosses the threshold to the alert's arrival.
ARRIVAL_SECONDS = 5.0
SECRET = "s3cr3t-ключ"


def _rule(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/alerts/rules", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _history(client: httpx.Client, rule_id: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/alerts/history", params={"rule_id": rule_id})
    assert response.status_code == 200, response.text
    return list(response.json()["firings"])


def _reading(client: httpx.Client, metric: str, value: float, device: str = "furnace-1") -> None:
    response = client.post(
        "/api/v1/industry40/iot/ingest",
        json={"device_id": device, "device_type": "furnace", "metrics": {metric: value}},
    )
    assert response.status_code == 202, response.text


def _settled(firing: dict[str, Any]) -> bool:
    return all(d["status"] != "pending" for d in firing["deliveries"])


def test_telemetry_rule_fires_to_webhook_slack_and_email_once(
    new_project: Callable[..., httpx.Client],
    alerts_server: ServerProcess,
    receiver: HttpReceiver,
    smtp: SmtpSink,
) -> None:
    client = new_project()
    tag = uuid.uuid4().hex[:8]
    metric = f"temperature_{tag}"
    recipients = [f"ops-{tag}@example.com", f"ünïcode-{tag}@example.org"]
    rule = _rule(
        client,
        name=f"Furnace hot {tag}",
        metric={"kind": "telemetry", "metric": metric, "aggregate": "max"},
        condition={"op": ">", "threshold": 90},
        window_seconds=300,
        destinations=[
            {"type": "webhook", "url": receiver.url(f"/hook/{tag}"), "secret": SECRET},
            {"type": "slack", "url": receiver.url(f"/slack/{tag}")},
            {"type": "email", "to": recipients},
            {"type": "webhook", "url": f"http://127.0.0.1:{dead_port()}/gone"},
        ],
    )
    assert rule["cooldown_seconds"] == 300  # the default is the window
    assert rule["destinations"][0] == {
        "type": "webhook",
        "url": receiver.url(f"/hook/{tag}"),
        "secret_set": True,
    }

    def mails() -> list[Mail]:
        return [m for m in smtp.inbox if tag in m.message["Subject"]]

    with connect(
        alerts_server.url.replace("http://", "ws://") + "/ws",
        additional_headers={"x-api-key": client.headers["x-api-key"]},
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "Subscribe", "payload": {"channels": ["alerts"]}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "Subscribed"

        # Below the threshold: nothing fires (two evaluation rounds at least).
        _reading(client, metric, 85.0)
        time.sleep(2.5)
        assert _history(client, rule["id"]) == []
        assert not receiver.on(f"/hook/{tag}")

        crossed = time.monotonic()
        _reading(client, metric, 95.5)
        assert wait_for(lambda: receiver.on(f"/hook/{tag}"), ARRIVAL_SECONDS)
        assert wait_for(lambda: receiver.on(f"/slack/{tag}"), ARRIVAL_SECONDS)
        assert wait_for(mails, ARRIVAL_SECONDS)
        hook = receiver.on(f"/hook/{tag}")[0]
        slack = receiver.on(f"/slack/{tag}")[0]
        mail = mails()[0]
        for arrival in (hook.at, slack.at, mail.at):
            assert arrival - crossed <= ARRIVAL_SECONDS

        alert = json.loads(ws.recv(timeout=ARRIVAL_SECONDS))
        assert alert["type"] == "Alert"
        assert alert["payload"]["rule_id"] == rule["id"]
        assert alert["payload"]["value"] == 95.5

    # The webhook: API.md's fields, signed over the exact body.
    expected = "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-avila-signature"] == expected
    assert hook.headers["content-type"] == "application/json"
    body = json.loads(hook.body)
    assert body["rule"] == f"Furnace hot {tag}"
    assert body["value"] == 95.5
    assert body["threshold"] == 90
    assert body["project"].startswith("p-")
    fired_at = datetime.fromisoformat(body["fired_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - fired_at).total_seconds()) < 60
    tampered = hmac.new(SECRET.encode(), hook.body + b" ", hashlib.sha256).hexdigest()
    assert hook.headers["x-avila-signature"] != "sha256=" + tampered

    # Slack: an incoming-webhook payload is an object with a text field.
    slack_body = json.loads(slack.body)
    assert set(slack_body) == {"text"} and isinstance(slack_body["text"], str)
    assert f"Furnace hot {tag}" in slack_body["text"] and "95.5" in slack_body["text"]
    assert "x-avila-signature" not in slack.headers

    # Email: from the configured sender to every recipient.
    assert mail.sender == SMTP_FROM
    assert sorted(mail.recipients) == sorted(recipients)
    assert mail.message["From"] == SMTP_FROM
    payload = mail.message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    text = payload.decode()
    assert "95.5" in text and "> 90" in text

    # The cooldown: still breaching (and worse), but one incident sends one alert.
    _reading(client, metric, 99.0)
    time.sleep(3)
    assert len(receiver.on(f"/hook/{tag}")) == 1
    assert len(receiver.on(f"/slack/{tag}")) == 1
    assert len(mails()) == 1

    # History: one firing; the dead destination was retried and recorded as failed.
    assert wait_for(lambda: _settled(_history(client, rule["id"])[0]), 10)
    (firing,) = _history(client, rule["id"])
    assert firing["value"] == 95.5 and firing["threshold"] == 90 and firing["op"] == ">"
    statuses = [(d["type"], d["status"], d["attempts"]) for d in firing["deliveries"]]
    assert statuses == [
        ("webhook", "delivered", 1),
        ("slack", "delivered", 1),
        ("email", "delivered", 1),
        ("webhook", "failed", DELIVERY_ATTEMPTS),
    ]
    assert firing["deliveries"][3]["error"]
    assert all(d["error"] is None for d in firing["deliveries"][:3])
    assert SECRET not in json.dumps(firing)


def test_failing_and_hanging_destinations_do_not_hold_up_the_others_or_ingest(
    new_project: Callable[..., httpx.Client], receiver: HttpReceiver
) -> None:
    client = new_project()
    tag = uuid.uuid4().hex[:8]
    rule = _rule(
        client,
        name=f"signups {tag}",
        metric={"kind": "event_count", "condition_type": "custom", "condition_value": tag},
        condition={"op": ">=", "threshold": 1},
        window_seconds=600,
        destinations=[
            {"type": "webhook", "url": receiver.url(f"/hang/{tag}")},
            {"type": "webhook", "url": receiver.url(f"/fail/{tag}")},
            {"type": "webhook", "url": receiver.url(f"/ok/{tag}")},
        ],
    )
    crossed = time.monotonic()
    event = {"user_id": "u1", "event_type": {"type": "Custom", "data": {"name": tag}}}
    assert client.post("/api/v1/events", json={"event": event}).status_code == 202
    assert wait_for(lambda: receiver.on(f"/ok/{tag}"), ARRIVAL_SECONDS)
    assert receiver.on(f"/ok/{tag}")[0].at - crossed <= ARRIVAL_SECONDS
    assert wait_for(lambda: receiver.on(f"/hang/{tag}"), ARRIVAL_SECONDS)

    # While a delivery hangs, ingestion answers (a generous functional bound, not a benchmark).
    with httpx.Client(base_url=str(client.base_url), headers=client.headers, timeout=5) as quick:
        for i in range(5):
            batch = [{"user_id": f"u{i}-{j}", "event_type": {"type": "Login"}} for j in range(50)]
            response = quick.post("/api/v1/events/batch", json={"events": batch})
            assert response.status_code == 202, response.text

    # Each try is cut at the timeout; after the last one both bad destinations are failed.
    longest = DELIVERY_ATTEMPTS * DELIVERY_TIMEOUT_SECONDS + 0.5 * (2**DELIVERY_ATTEMPTS)
    assert wait_for(lambda: _settled(_history(client, rule["id"])[0]), longest + 10)
    (firing,) = _history(client, rule["id"])
    hang, fail, ok = firing["deliveries"]
    assert (ok["status"], ok["attempts"]) == ("delivered", 1)
    assert (fail["status"], fail["attempts"]) == ("failed", DELIVERY_ATTEMPTS)
    assert "500" in fail["error"]
    assert (hang["status"], hang["attempts"]) == ("failed", DELIVERY_ATTEMPTS)
    assert hang["error"] == "timed out"
    assert len(receiver.on(f"/fail/{tag}")) == DELIVERY_ATTEMPTS
    assert len(receiver.on(f"/hang/{tag}")) == DELIVERY_ATTEMPTS


def test_a_rule_fires_again_once_its_cooldown_has_passed(
    new_project: Callable[..., httpx.Client], receiver: HttpReceiver
) -> None:
    client = new_project()
    tag = uuid.uuid4().hex[:8]
    metric = f"pressure_{tag}"
    rule = _rule(
        client,
        name=f"low pressure {tag}",
        metric={"kind": "telemetry", "metric": metric, "aggregate": "min", "device_id": "p1"},
        condition={"op": "<", "threshold": 2},
        window_seconds=300,
        cooldown_seconds=2,
        destinations=[{"type": "webhook", "url": receiver.url(f"/hook/{tag}")}],
    )
    _reading(client, metric, 1.0, device="p1")
    _reading(client, metric, 0.5, device="other")  # another device: not this rule's
    assert wait_for(lambda: len(receiver.on(f"/hook/{tag}")) >= 2, 10)
    first, second = receiver.on(f"/hook/{tag}")[:2]
    assert second.at - first.at >= 2 - 0.1  # not before the cooldown (clock granularity)
    assert {json.loads(r.body)["value"] for r in (first, second)} == {1.0}
    assert len(_history(client, rule["id"])) >= 2


def test_telemetry_nudges_evaluation_and_rules_history_cooldown_survive_a_restart(
    make_server: Callable[..., ServerProcess], receiver: HttpReceiver, tmp_path: Any
) -> None:
    """The first server evaluates on its schedule only once an hour: the alert can only come
    from the evaluation that committed telemetry triggers ("as data arrives")."""
    tag = uuid.uuid4().hex[:8]
    metric = f"temperature_{tag}"
    data = tmp_path / "restart"
    server = make_server(data, AVILA_ALERTS_INTERVAL_SECONDS="3600")
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        rule = _rule(
            c,
            name=f"persisted {tag}",
            metric={"kind": "telemetry", "metric": metric},
            condition={"op": ">=", "threshold": 90},
            window_seconds=600,
            destinations=[{"type": "webhook", "url": receiver.url(f"/hook/{tag}")}],
        )
        time.sleep(1)  # let the evaluation that creating the rule triggers pass
        crossed = time.monotonic()
        _reading(c, metric, 90.0)  # the edge: >= 90 breaches
        assert wait_for(lambda: receiver.on(f"/hook/{tag}"), ARRIVAL_SECONDS)
        assert receiver.on(f"/hook/{tag}")[0].at - crossed <= ARRIVAL_SECONDS
        assert wait_for(lambda: _settled(_history(c, rule["id"])[0]), 10)
    assert server.stop() == 0

    again = make_server(data)  # default schedule: every second
    with httpx.Client(base_url=again.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        assert [r["id"] for r in c.get("/api/v1/alerts/rules").json()["rules"]] == [rule["id"]]
        time.sleep(3)  # still breaching, but inside the remembered cooldown
        assert len(receiver.on(f"/hook/{tag}")) == 1
        (firing,) = _history(c, rule["id"])
        assert firing["deliveries"][0]["status"] == "delivered"
