"""MQTT bridge: broker topics into the telemetry path, acknowledged only once durable.

Started by the Industry 4.0 component when ``AVILA_MQTT_URL`` (``mqtt://user:pass@host:1883``)
is set. Subscriptions, all QoS 1:

* ``avila/<project>/<device>/telemetry`` — the HTTP body (one reading or ``{"readings": [...]}``);
  ``device_id`` defaults to the topic's device.
* ``spBv1.0/<group>/NBIRTH|DBIRTH|NDATA|DDATA/<edge>[/<device>]`` — Sparkplug B
  (:mod:`avila.industry40.sparkplug`). The group id is the project; the device id is ``<edge>``
  for node messages and ``<edge>:<device>`` for device messages. BIRTH messages teach the
  metric aliases that DATA messages may use instead of names; metrics sharing a timestamp make
  one reading.

**Delivery.** The client keeps a persistent session (``clean_session=False``, a fixed client id
``AVILA_MQTT_CLIENT_ID``, default ``avila-bridge``) and acknowledges manually (paho's
``manual_ack``): a PUBACK is sent only after the readings of that message were committed by the
group commit, and PUBACKs go out in the order the messages arrived. A message that is not
acknowledged (server crash, broker restart) is redelivered by the broker, so no acknowledged
reading is lost; delivery is at least once, so a redelivered message can store its readings
twice (same device, metric, time and value). A commit that fails is retried with backoff
until it succeeds or the server stops. Readings are validated one by one as over HTTP (Sparkplug
ones too): a bad reading is logged and rejected, the others are stored. Malformed messages (and
topics with an empty project, group, edge node or device) are logged and acknowledged (they
would fail again), as is a message of more than :data:`~avila.industry40.telemetry.MAX_READINGS`
readings (Sparkplug: distinct timestamps), HTTP's cap: it stores nothing (``code``
``batch_limit_exceeded`` in the log line), since a publisher gets no answer and would not learn
that the rest was left out. :attr:`MqttBridge.dropped` counts the messages dropped whole, and
``/metrics`` has them as ``avila_mqtt_messages_dropped_total`` by ``reason``
(:data:`DROP_REASONS`). Reconnects use paho's exponential backoff (1 s to 30 s). Anyone who may
publish to these topics may write telemetry into the named project: restrict publishers with
the broker's ACLs.

**Several replicas.** With ``AVILA_MQTT_SHARE_GROUP`` set the bridge subscribes with MQTT
shared subscriptions (``$share/<group>/<filter>``, MQTT 5 and mosquitto >= 1.6 also for 3.1.1
clients): the broker hands each message to one member of the group, so each reading is stored
once however many replicas run. Each replica needs its own, stable ``AVILA_MQTT_CLIENT_ID``
(one id per replica: the broker keeps each member's session). Sparkplug aliases are learnt per
replica from the BIRTH messages it receives: with a share group, publish metric names in DATA
messages (or one replica handles Sparkplug).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from avila.errors import AvilaError
from avila.industry40.ingestion import TelemetryService
from avila.industry40.sparkplug import decode_payload
from avila.industry40.telemetry import MAX_READINGS, Reading, Rejection, check_item, loads_lenient
from avila.metrics import Metrics

log = logging.getLogger("avila.industry40.mqtt")

TOPICS = ("avila/+/+/telemetry", "spBv1.0/+/+/+", "spBv1.0/+/+/+/+")
_SPARKPLUG_TYPES = {"NBIRTH", "DBIRTH", "NDATA", "DDATA"}

Parsed = tuple[str, list[tuple[int, Reading]], list[Rejection]]

#: ``reason`` labels of ``avila_mqtt_messages_dropped_total``: a message past
#: :data:`MAX_READINGS` readings (the log line's ``code``), or one that cannot be read at all
#: (not JSON, not a Sparkplug payload, a topic with an empty project, group, edge or device).
DROP_REASONS = ("batch_limit_exceeded", "malformed")


class TooManyReadings(ValueError):
    """A message carries more readings than one HTTP request may: dropped whole."""

    code = "batch_limit_exceeded"

    def __init__(self, count: int) -> None:
        super().__init__(
            f"the message has {count} readings; a message takes at most {MAX_READINGS}: "
            "split it (nothing of it was stored)"
        )
        self.count = count


def _check_count(count: int) -> None:
    if count > MAX_READINGS:
        raise TooManyReadings(count)


def parse_avila(project: str, device: str, payload: bytes) -> Parsed:
    """The HTTP body: decoded as leniently as HTTP does (``NaN`` / ``Infinity`` tokens, numbers
    past a double) so that such a reading is rejected on its own, not the whole message."""
    if not project:
        raise ValueError("the topic names no project")
    obj = loads_lenient(payload)  # MalformedJSON (logged, acknowledged) when not JSON at all
    single = not (isinstance(obj, dict) and "readings" in obj)
    items = [obj] if single else obj["readings"]
    if not isinstance(items, list):
        raise ValueError("readings must be a list")
    _check_count(len(items))
    readings: list[tuple[int, Reading]] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            item.setdefault("device_id", device)
        checked = check_item(item, index, single)
        if isinstance(checked, Rejection):
            rejected.append(checked)
        else:
            readings.append((index, checked))
    return project, readings, rejected


def _log_rejection(r: Rejection, topic: str | None = None) -> None:
    # ``message`` is a LogRecord attribute: passed in ``extra`` it raises, and the message
    # that carried the reading was then never acknowledged.
    fields = {"index": r.index, "code": r.code, "reason": r.message, "path": r.path}
    log.warning("mqtt reading rejected", extra={"topic": topic, **fields} if topic else fields)


def message_digest(topic: str, payload: bytes) -> str:
    """A message's identity for redelivery dedup: equal topic and payload, equal id."""
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).hexdigest()


class SparkplugAliases:
    """Alias → metric name per (group, edge, device), learnt from BIRTH messages."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str, str | None], dict[int, str]] = {}

    def parse(self, parts: list[str], payload: bytes) -> Parsed:
        _, group, kind, edge, *rest = parts
        device = rest[0] if rest else None
        if not group or not edge or device == "":
            raise ValueError("the topic has an empty group, edge node or device id")
        scope = (group, edge, device)
        payload_ts, metrics = decode_payload(payload)
        names = self._names.setdefault(scope, {})
        if kind.endswith("BIRTH"):
            names.clear()
        groups: dict[int | None, dict[str, float]] = {}
        for m in metrics:
            if m.name and m.alias is not None:
                names[m.alias] = m.name
            name = m.name or (names.get(m.alias) if m.alias is not None else None)
            if not name:
                continue
            groups.setdefault(m.timestamp_ms or payload_ts, {})[name] = m.value
        _check_count(len(groups))
        device_id = f"{edge}:{device}" if device else edge
        # Each reading is checked as an HTTP one is (device id and metric name lengths, values);
        # a bad one is rejected on its own.
        readings: list[tuple[int, Reading]] = []
        rejected: list[Rejection] = []
        for index, (ts_ms, values) in enumerate(sorted(groups.items(), key=lambda kv: kv[0] or 0)):
            item: dict[str, Any] = {
                "device_id": device_id,
                "device_type": "sparkplug",
                "metrics": values,
                "attributes": {"sparkplug_group": group, "edge_node": edge},
            }
            if ts_ms:
                try:
                    item["timestamp"] = datetime.fromtimestamp(ts_ms / 1000, UTC)
                except (ValueError, OverflowError, OSError):  # past year 9999
                    rejected.append(
                        Rejection(
                            index,
                            "timestamp_in_future",
                            f"timestamp {ts_ms} ms is past year 9999",
                            f"readings[{index}].timestamp",
                        )
                    )
                    continue
            checked = check_item(item, index, False)
            if isinstance(checked, Rejection):
                rejected.append(checked)
            else:
                readings.append((index, checked))
        return group, readings, rejected


def _mqtt_url(url: str) -> tuple[str, int, str | None, str | None, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"AVILA_MQTT_URL must be mqtt://host:port, got {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return (
        parts.hostname or "localhost",
        parts.port or (8883 if tls else 1883),
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        tls,
    )


class MqttBridge:
    def __init__(
        self,
        url: str,
        telemetry: TelemetryService,
        *,
        client_id: str | None = None,
        share_group: str = "",
        retry_initial_s: float = 0.5,
        metrics: Metrics | None = None,
    ) -> None:
        self.url = url
        #: Topic filters; ``$share/<group>/...`` makes the broker give each message to one
        #: member of the group (one replica) instead of to every subscriber.
        self.topics = tuple(f"$share/{share_group}/{t}" if share_group else t for t in TOPICS)
        self.telemetry = telemetry
        self.client_id = client_id or os.environ.get("AVILA_MQTT_CLIENT_ID") or "avila-bridge"
        self.retry_initial_s = retry_initial_s
        self.aliases = SparkplugAliases()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        # [mid, qos, outcome] in arrival order, outcome None (in hand), True (durable or
        # unusable: acknowledge) or False (not stored: leave for redelivery).
        self._unacked: collections.deque[list[Any]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.received = 0
        self.stored_readings = 0
        self.duplicates = 0
        #: Messages dropped whole: unreadable, or past :data:`MAX_READINGS` readings.
        self.dropped = 0
        # Every reason exported from the start (at 0), so a rate() has its first sample.
        self._dropped_by = (
            {reason: metrics.mqtt_dropped.labels(reason) for reason in DROP_REASONS}
            if metrics is not None
            else {}
        )
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        host, port, user, password, tls = _mqtt_url(self.url)
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
        )
        if user:
            client.username_pw_set(user, password)
        if tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        log.info(
            "mqtt bridge started", extra={"broker": f"{host}:{port}", "client_id": self.client_id}
        )

    # -- paho thread ---------------------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt connect refused", extra={"reason": str(reason)})
            return
        client.subscribe([(topic, 1) for topic in self.topics])
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.connected.set)
        log.info("mqtt connected", extra={"session_present": bool(flags.session_present)})

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.connected.clear)
        if not self._stopping:
            log.warning("mqtt disconnected; reconnecting", extra={"reason": str(reason)})

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(
            self._accept,
            message.topic,
            bytes(message.payload),
            message.mid,
            message.qos,
            bool(message.dup),
        )

    # -- event loop ----------------------------------------------------------------------------

    def _accept(self, topic: str, payload: bytes, mid: int, qos: int, dup: bool = False) -> None:
        self.received += 1
        assert self._loop is not None
        entry: list[Any] = [mid, qos, None]
        self._unacked.append(entry)
        task = self._loop.create_task(self._store(topic, payload, entry, dup))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _parse(self, topic: str, payload: bytes) -> Parsed | None:
        parts = topic.split("/")
        if len(parts) == 4 and parts[0] == "avila" and parts[3] == "telemetry":
            return parse_avila(parts[1], parts[2], payload)
        if parts[0] == "spBv1.0" and len(parts) in (4, 5) and parts[2] in _SPARKPLUG_TYPES:
            return self.aliases.parse(parts, payload)
        return None

    async def _store(self, topic: str, payload: bytes, entry: list[Any], dup: bool = False) -> None:
        entry[2] = False
        try:
            try:
                parsed = self._parse(topic, payload)
            except (ValueError, AvilaError) as exc:
                self.dropped += 1
                fields: dict[str, Any] = {"topic": topic, "error": str(exc)}
                reason = "malformed"
                if isinstance(exc, TooManyReadings):
                    fields.update(code=exc.code, readings=exc.count)
                    reason = exc.code
                if reason in self._dropped_by:
                    self._dropped_by[reason].inc()
                log.warning("mqtt message dropped", extra=fields)
                parsed = None
            if parsed is not None:
                project, readings, rejected = parsed
                for r in rejected:
                    _log_rejection(r, topic)
                message_id = message_digest(topic, payload)
                timestamped = all(r.timestamp is not None for _, r in readings)
                await self._commit(project, readings, message_id, dup or timestamped)
            entry[2] = True
        except Exception as exc:  # left unacknowledged: the broker redelivers it
            log.error("mqtt message not stored", extra={"topic": topic, "error": str(exc)})
        finally:
            entry.append("done")
            self._ack_ready()

    async def _commit(
        self,
        project: str,
        readings: list[tuple[int, Reading]],
        message_id: str | None = None,
        check_message: bool = True,
    ) -> None:
        delay = self.retry_initial_s
        while True:
            try:
                result = await self.telemetry.ingest_readings(
                    readings, project, message_id=message_id, check_message=check_message
                )
                if result.duplicate:
                    self.duplicates += 1
                self.stored_readings += result.accepted
                for r in result.rejected:
                    _log_rejection(r)
                return
            except AvilaError as exc:
                if self._stopping and exc.status == 503:
                    raise
                log.warning(
                    "mqtt commit failed; retrying", extra={"error": str(exc), "delay": delay}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _ack_ready(self) -> None:
        while self._unacked and len(self._unacked[0]) > 3:
            mid, qos, ok, _ = self._unacked.popleft()
            if not ok:
                continue  # not durable: leave unacknowledged so the broker redelivers it
            if qos > 0 and self._client is not None:
                self._client.ack(mid, qos)

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish (commit and acknowledge) the messages in hand, then disconnect."""
        self._stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        if self._client is not None:
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)
        log.info("mqtt bridge stopped", extra={"received": self.received})
