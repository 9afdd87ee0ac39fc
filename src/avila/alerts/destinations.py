"""Where a firing goes: a signed webhook, a Slack incoming webhook, or email over SMTP.

Each ``send_*`` makes one attempt and raises :class:`DeliveryFailed` (or the transport's own
error) when the destination did not take the alert; retries, timeouts and history belong to
:mod:`avila.alerts.delivery`.

- **Webhook**: ``POST`` of the JSON payload (see :meth:`avila.alerts.repository.Firing.payload`)
  with ``Content-Type: application/json``; with a secret, ``X-Avila-Signature: sha256=<hex>``
  where ``<hex>`` is HMAC-SHA256(secret, the exact body bytes). Any 2xx is success; redirects
  are not followed.
- **Slack**: ``POST {"text": ...}`` to the incoming-webhook URL (Slack's documented payload;
  ``&``, ``<`` and ``>`` escaped as Slack asks).
- **Email**: one plain-text message to every address of the destination, sent with the stdlib
  ``smtplib`` in a worker thread (one SMTP conversation per firing is all an alert needs, so an
  async SMTP library would add a dependency for nothing). ``tls``: ``none``, ``starttls`` or
  ``tls`` (implicit TLS, port 465).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import msgspec

from avila.alerts.rules import EmailDestination, SlackDestination, WebhookDestination

if TYPE_CHECKING:
    import httpx

SIGNATURE_HEADER = "X-Avila-Signature"
USER_AGENT = "avila-alerts/1"


class DeliveryFailed(Exception):
    """A destination refused or could not take an alert (the message says why)."""


@dataclass(frozen=True)
class SmtpConfig:
    """SMTP settings (``AVILA_SMTP_*``); ``host`` empty means email is not configured."""

    host: str
    port: int = 587
    tls: str = "starttls"
    user: str = ""
    password: str = field(default="", repr=False)
    sender: str = "avila@localhost"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Avila-Signature`` value of ``body``: ``sha256=`` + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def summary(payload: dict[str, Any]) -> str:
    """One human line about a firing (Slack text, email subject and first line)."""
    return (
        f"Alert {payload['rule']}: value {payload['value']:g} {payload['op']}"
        f" {payload['threshold']:g} over the last {payload['window_seconds']} s"
        f" (project {payload['project']}, fired {payload['fired_at']})"
    )


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _check(response: httpx.Response) -> None:
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"HTTP {response.status_code} from the destination")


async def send_webhook(
    client: httpx.AsyncClient, destination: WebhookDestination, payload: dict[str, Any]
) -> None:
    body = msgspec.json.encode(payload)
    headers = {"content-type": "application/json", "user-agent": USER_AGENT}
    if destination.secret is not None:
        headers[SIGNATURE_HEADER] = sign(destination.secret, body)
    _check(await client.post(destination.url, content=body, headers=headers))


async def send_slack(
    client: httpx.AsyncClient, destination: SlackDestination, payload: dict[str, Any]
) -> None:
    body = msgspec.json.encode({"text": ":rotating_light: " + slack_escape(summary(payload))})
    headers = {"content-type": "application/json", "user-agent": USER_AGENT}
    _check(await client.post(destination.url, content=body, headers=headers))


def email_message(
    smtp: SmtpConfig, destination: EmailDestination, payload: dict[str, Any]
) -> EmailMessage:
    message = EmailMessage()
    # Header values must not carry line breaks (a rule name could): fold them to spaces.
    subject = " ".join(f"[Avila] {summary(payload)}".split())
    message["Subject"] = subject[:900]
    message["From"] = smtp.sender
    message["To"] = ", ".join(destination.to)
    message.set_content(
        summary(payload)
        + "\n\n"
        + msgspec.json.format(msgspec.json.encode(payload), indent=2).decode()
        + "\n"
    )
    return message


def _send_mail_blocking(smtp: SmtpConfig, message: EmailMessage, timeout: float) -> None:
    if not smtp.host:
        raise DeliveryFailed("SMTP is not configured (AVILA_SMTP_HOST is empty)")
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if smtp.tls == "tls":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
    with client:
        if smtp.tls == "starttls":
            client.starttls(context=context)
        if smtp.user:
            client.login(smtp.user, smtp.password)
        refused = client.send_message(message)
    if refused:
        raise DeliveryFailed(f"SMTP server refused {', '.join(sorted(refused))}")


async def send_email(
    smtp: SmtpConfig, destination: EmailDestination, payload: dict[str, Any], timeout: float
) -> None:
    message = email_message(smtp, destination, payload)
    await asyncio.to_thread(_send_mail_blocking, smtp, message, timeout)
