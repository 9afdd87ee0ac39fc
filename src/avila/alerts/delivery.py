"""Delivering one firing to all of its destinations: concurrently, each with its own timeout
and retries with exponential backoff, each result recorded in the history as it ends.

A destination gets up to ``attempts`` tries; try ``n`` (from 1) that fails is followed by a
pause of ``backoff * 2**(n-1)`` seconds. Every try is bounded by ``timeout`` seconds. A dead or
slow destination therefore costs only its own task: the others deliver at their own pace, and
nothing here runs on the ingest path (firings are delivered by tasks the scheduler starts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from avila.alerts.destinations import SmtpConfig, send_email, send_slack, send_webhook
from avila.alerts.repository import DeliveryResult, Firing, utc_now
from avila.alerts.rules import Destination, EmailDestination, SlackDestination

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("avila.alerts")

Recorder = Callable[[Firing, DeliveryResult], Awaitable[None]]


class Deliverer:
    """Sends firings; owns the HTTP connection pool (``start``/``close``)."""

    def __init__(
        self,
        smtp: SmtpConfig,
        *,
        attempts: int = 3,
        timeout: float = 10.0,
        backoff: float = 0.5,
    ) -> None:
        self.smtp = smtp
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self._started = False
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._started = True

    def _http(self) -> httpx.AsyncClient:
        """The pool shared by every delivery, made at the first webhook or Slack message: most
        servers never send one, and httpx costs ~0.3 CPU-s to import at every start."""
        if not self._started:
            raise RuntimeError("the deliverer is not started")
        if self._client is None:
            import httpx

            # An async client with per-request timeouts and a pool shared by every delivery.
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    async def close(self) -> None:
        self._started = False
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, firing: Firing, record: Recorder) -> list[DeliveryResult]:
        """Deliver to every destination of ``firing``'s rule at once; ``record`` is awaited
        with each result as soon as that destination is done."""
        payload = firing.payload()

        async def one(position: int, destination: Destination) -> DeliveryResult:
            result = await self._attempt(position, destination, payload)
            try:
                await record(firing, result)
            except Exception:
                log.exception("could not record an alert delivery")
            return result

        return list(
            await asyncio.gather(*(one(i, d) for i, d in enumerate(firing.rule.spec.destinations)))
        )

    async def _attempt(
        self, position: int, destination: Destination, payload: dict[str, Any]
    ) -> DeliveryResult:
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                await asyncio.wait_for(self._send(destination, payload), self.timeout)
            except Exception as exc:  # any failure of the destination is a failed try
                error = _describe(exc)
                log.warning(
                    "alert delivery failed",
                    extra={"destination": position, "attempt": attempt, "error": error},
                )
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            return DeliveryResult(position, "delivered", attempt, None, utc_now())
        return DeliveryResult(position, "failed", self.attempts, error, utc_now())

    async def _send(self, destination: Destination, payload: dict[str, Any]) -> None:
        if isinstance(destination, EmailDestination):
            await send_email(self.smtp, destination, payload, self.timeout)
            return
        client = self._http()
        if isinstance(destination, SlackDestination):
            await send_slack(client, destination, payload)
        else:
            await send_webhook(client, destination, payload)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
