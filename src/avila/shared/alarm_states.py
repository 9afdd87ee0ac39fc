"""Which threshold alarms are raised: one answer for every replica.

With an MQTT share group (or a load balancer) the readings of one device reach several
replicas. If each replica kept its own set of raised alarms, replica A would raise an alarm,
replica B, seeing the next reading in breach, would raise it again, and a reading back inside
the limits on replica A would leave B's copy raised for good. So the set lives here:

* :class:`LocalAlarmStates`: a dict, the single-replica behaviour.
* :class:`RedisAlarmStates`: one hash per project, ``avila:alarms:<project>``, field
  ``device \\x1f metric \\x1f bound``, value the raised alert (JSON). A replica reads the
  states of the keys a batch touches in one ``HMGET``, judges the batch's readings in time
  order, and applies its transitions in one script call: a raise is ``HSETNX``, a clear is
  ``HDEL``, and a replacement (a clear then a raise of one alarm: a change of severity) takes
  only when the hash still holds the alert the replica judged against (or none). Only the
  replica whose command changed the hash publishes the alert. Two replicas that judge the
  same breach, or the same change of severity, at once therefore announce it once.

Order across replicas is arrival order at Redis, not reading time: two readings of one device
judged on two replicas within a millisecond of each other may be applied in either order.

Redis down: the replica judges against its own copy (a warning is logged once a minute), so
alarms are per replica until Redis answers again; nothing is raised twice by the same replica.
The copy holds what the replica last read or wrote of each alarm. The transitions made while
Redis was down are written to Redis by the replica's first call after it answers again, each
only where the hash still holds what the replica had before the outage (else what another
replica wrote in the meantime stays): the alarm a replica raised or cleared while alone is
not raised or cleared a second time afterwards, and every replica lists it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis

log = logging.getLogger("avila.shared")

PREFIX = "avila:alarms:"
_SEP = "\x1f"
_WARN_EVERY_S = 60.0

# Transitions in order; per transition KEYS[i] is the project's hash and ARGV holds op, field,
# value, expected: 'r' raise (HSETNX), 'c' clear (HDEL), 'x' replace: 2 when the hash held the
# expected alert (replaced), 1 when it held none (raised), 0 when it held another (left).
_APPLY = """
local out = {}
for i, hash in ipairs(KEYS) do
  local op, field, value = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i - 1]
  if op == 'r' then
    out[i] = redis.call('HSETNX', hash, field, value)
  elseif op == 'c' then
    out[i] = redis.call('HDEL', hash, field)
  else
    local current = redis.call('HGET', hash, field)
    if not current then
      redis.call('HSET', hash, field, value)
      out[i] = 1
    elseif current == ARGV[4 * i] then
      redis.call('HSET', hash, field, value)
      out[i] = 2
    else
      out[i] = 0
    end
  end
end
return out
"""
# After an outage: per alarm (field, before, after; '' is "not raised"), set it to `after`
# where the hash still holds `before`; returns what each alarm is now ('' for none).
_RECONCILE = """
local out = {}
for i, hash in ipairs(KEYS) do
  local field, before, after = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local current = redis.call('HGET', hash, field) or ''
  if current == before and after ~= before then
    if after == '' then
      redis.call('HDEL', hash, field)
    else
      redis.call('HSET', hash, field, after)
    end
    current = after
  end
  out[i] = current
end
return out
"""

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
        from redis import RedisError  # only a replica that shares state loads the client

        self._failure: type[Exception] = RedisError
        self._redis = client
        self._apply = client.register_script(_APPLY)
        self._reconcile_script = client.register_script(_RECONCILE)
        #: What this replica last read or wrote of each alarm: judged against while Redis does
        #: not answer, and the alert a replacement expects to replace.
        self._fallback = LocalAlarmStates()
        #: Alarms changed while Redis did not answer -> their state before (JSON, None: not
        #: raised); written to Redis by the first call that reaches it again.
        self._outage: dict[AlarmKey, str | None] = {}
        self._outage_lock = threading.Lock()
        self._warned_at = -_WARN_EVERY_S

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("alarm states judged per replica: Redis unreachable", extra={
                "error": str(exc)})  # fmt: skip

    def _remember(self, key: AlarmKey, raw: str | bytes | None) -> None:
        if raw:
            self._fallback._active[key] = json.loads(raw)
        else:
            self._fallback._active.pop(key, None)

    def _known(self, key: AlarmKey) -> str | None:
        alert = self._fallback._active.get(key)
        return None if alert is None else json.dumps(alert)

    def _write_outage(self) -> None:
        """Write the transitions made while Redis did not answer (raises a RedisError while
        it still does not)."""
        if not self._outage:
            return
        with self._outage_lock:
            keys = list(self._outage)
            if not keys:
                return
            args: list[str] = []
            for key in keys:
                args += [_field(key), self._outage[key] or "", self._known(key) or ""]
            now = self._reconcile_script(keys=[PREFIX + k[0] for k in keys], args=args)
            for key, raw in zip(keys, now, strict=True):
                self._remember(key, raw)
                del self._outage[key]

    def current(self, keys: Iterable[AlarmKey]) -> dict[AlarmKey, dict[str, Any]]:
        by_project: dict[str, list[AlarmKey]] = {}
        for key in keys:
            by_project.setdefault(key[0], []).append(key)
        if not by_project:
            return {}
        try:
            self._write_outage()
            pipe = self._redis.pipeline(transaction=False)
            for project, project_keys in by_project.items():
                pipe.hmget(PREFIX + project, [_field(k) for k in project_keys])
            answers = pipe.execute()
        except self._failure as exc:
            self._unreachable(exc)
            return self._fallback.current(k for ks in by_project.values() for k in ks)
        out: dict[AlarmKey, dict[str, Any]] = {}
        for project_keys, values in zip(by_project.values(), answers, strict=True):
            for key, raw in zip(project_keys, values, strict=True):
                if raw is None:
                    self._fallback._active.pop(key, None)
                else:
                    out[key] = self._fallback._active[key] = json.loads(raw)
        return out

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        if not transitions:
            return []
        # One operation per transition, or per clear-then-raise of one alarm (a replacement,
        # which expects the alert this replica judged against: read, or written earlier in
        # the batch).
        ops: list[tuple[str, AlarmKey, str | None]] = []
        believed: dict[AlarmKey, str | None] = {}
        args: list[str] = []
        i = 0
        while i < len(transitions):
            key, alert = transitions[i]
            raw = None if alert is None else json.dumps(alert)
            before = believed[key] if key in believed else self._known(key)
            if alert is None and i + 1 < len(transitions) and transitions[i + 1][0] == key:
                replacement = transitions[i + 1][1]
                if replacement is not None:
                    raw = json.dumps(replacement)
                    ops.append(("x", key, raw))
                    args += ["x", _field(key), raw, before or ""]
                    believed[key] = raw
                    i += 2
                    continue
            if raw is None:
                ops.append(("c", key, None))
                args += ["c", _field(key), "", ""]
                believed[key] = None
            else:
                ops.append(("r", key, raw))
                args += ["r", _field(key), raw, ""]
                believed[key] = raw if before is None else before
            i += 1
        try:
            self._write_outage()
            results = self._apply(keys=[PREFIX + key[0] for _, key, _ in ops], args=args)
        except self._failure as exc:
            self._unreachable(exc)
            with self._outage_lock:
                for key, _ in transitions:
                    if key not in self._outage:
                        self._outage[key] = self._known(key)
                return self._fallback.apply(transitions)
        changed: list[bool] = []
        for (op, key, raw), result in zip(ops, results, strict=True):
            if op == "x":
                changed += [result == 2, result >= 1]
            else:
                changed.append(bool(result))
            if op == "c":
                self._remember(key, None)
            elif result:
                self._remember(key, raw)
        return changed

    def raised(self, project_id: str) -> list[dict[str, Any]]:
        try:
            self._write_outage()
            entries = self._redis.hgetall(PREFIX + project_id)
        except self._failure as exc:
            self._unreachable(exc)
            return self._fallback.raised(project_id)
        return [json.loads(v) for _, v in sorted(entries.items())]


def _field(key: AlarmKey) -> str:
    return _SEP.join(key[1:])
