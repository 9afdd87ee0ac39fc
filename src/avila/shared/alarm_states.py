"""Which threshold alarms are raised: one answer for every replica.

With an MQTT share group (or a load balancer) the readings of one device reach several
replicas. If each replica kept its own set of raised alarms, replica A would raise an alarm,
replica B, seeing the next reading in breach, would raise it again, and a reading back inside
the limits on replica A would leave B's copy raised for good. So the set lives here:

* :class:`LocalAlarmStates`: a dict, the single-replica behaviour.
* :class:`RedisAlarmStates`: one hash per project, ``avila:alarms:<project>``, field
  ``device \\x1f metric \\x1f bound``, value the raised alert (JSON). A replica reads the
  states of the keys a batch touches in one ``HMGET``, judges the batch's readings in time
  order, and applies its transitions in one pipeline: a raise is ``HSETNX`` and a clear is
  ``HDEL``, and only the replica whose command changed the hash publishes the alert. Two
  replicas that judge the same breach at once therefore announce it once.

Order across replicas is arrival order at Redis, not reading time: two readings of one device
judged on two replicas within a millisecond of each other may be applied in either order.

Redis down: the replica judges against its own copy (a warning is logged once a minute), so
alarms are per replica until Redis answers again; nothing is raised twice by the same replica.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import redis

log = logging.getLogger("avila.shared")

PREFIX = "avila:alarms:"
_SEP = "\x1f"
_WARN_EVERY_S = 60.0

#: (project, device, metric, bound)
AlarmKey = tuple[str, str, str, str]
#: (key, the raised alert) for a raise, (key, None) for a clear.
Transition = tuple[AlarmKey, dict[str, Any] | None]


class AlarmStates(Protocol):
    #: True when ``apply`` may block on the network (the caller keeps it off the event loop).
    remote: bool

    def current(self, keys: Iterable[AlarmKey]) -> dict[AlarmKey, dict[str, Any]]:
        """The raised alerts among ``keys`` (absent keys are not raised)."""
        ...

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        """Apply raises and clears in order; True where this call changed the state (and its
        caller should announce the transition)."""
        ...

    def raised(self, project_id: str) -> list[dict[str, Any]]:
        """Every raised alert of a project, ordered by (device, metric, bound)."""
        ...


class LocalAlarmStates:
    remote = False

    def __init__(self) -> None:
        self._active: dict[AlarmKey, dict[str, Any]] = {}

    def current(self, keys: Iterable[AlarmKey]) -> dict[AlarmKey, dict[str, Any]]:
        return {k: self._active[k] for k in keys if k in self._active}

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        changed = []
        for key, alert in transitions:
            if alert is None:
                changed.append(self._active.pop(key, None) is not None)
            elif key in self._active:
                changed.append(False)
            else:
                self._active[key] = alert
                changed.append(True)
        return changed

    def raised(self, project_id: str) -> list[dict[str, Any]]:
        return [a for k, a in sorted(self._active.items()) if k[0] == project_id]


class RedisAlarmStates:
    remote = True

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        #: Judged against while Redis does not answer (and kept in step while it does).
        self._fallback = LocalAlarmStates()
        self._warned_at = -_WARN_EVERY_S

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("alarm states judged per replica: Redis unreachable", extra={
                "error": str(exc)})  # fmt: skip

    def current(self, keys: Iterable[AlarmKey]) -> dict[AlarmKey, dict[str, Any]]:
        by_project: dict[str, list[AlarmKey]] = {}
        for key in keys:
            by_project.setdefault(key[0], []).append(key)
        if not by_project:
            return {}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for project, project_keys in by_project.items():
                pipe.hmget(PREFIX + project, [_field(k) for k in project_keys])
            answers = pipe.execute()
        except redis.RedisError as exc:
            self._unreachable(exc)
            return self._fallback.current(k for ks in by_project.values() for k in ks)
        out: dict[AlarmKey, dict[str, Any]] = {}
        for project_keys, values in zip(by_project.values(), answers, strict=True):
            for key, raw in zip(project_keys, values, strict=True):
                if raw is not None:
                    out[key] = json.loads(raw)
        return out

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        if not transitions:
            return []
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, alert in transitions:
                if alert is None:
                    pipe.hdel(PREFIX + key[0], _field(key))
                else:
                    pipe.hsetnx(PREFIX + key[0], _field(key), json.dumps(alert))
            changed = [bool(n) for n in pipe.execute()]
        except redis.RedisError as exc:
            self._unreachable(exc)
            return self._fallback.apply(transitions)
        self._fallback.apply([t for t, c in zip(transitions, changed, strict=True) if c])
        return changed

    def raised(self, project_id: str) -> list[dict[str, Any]]:
        try:
            entries = self._redis.hgetall(PREFIX + project_id)
        except redis.RedisError as exc:
            self._unreachable(exc)
            return self._fallback.raised(project_id)
        return [json.loads(v) for _, v in sorted(entries.items())]


def _field(key: AlarmKey) -> str:
    return _SEP.join(key[1:])
