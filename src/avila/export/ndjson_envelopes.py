"""Reading NDJSON import lines into event envelopes for the columnar validator
(:mod:`avila.export.columnar`): one msgspec call per batch, falling back to chunks and then to
single lines, and the lines that are not even JSON objects."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from avila.export.checked import Rejected
from avila.export.flat_events import row_to_event, with_json_bytes
from avila.ingest.validation import MAX_EVENT_BYTES
from avila.schemas.events import ENVELOPE_DECODER, EventEnvelope

_ENVELOPES = msgspec.json.Decoder(list[EventEnvelope])

#: Lines per decoder call when a batch's single call fails (see :func:`read_envelopes`).
_LINE_CHUNK = 32


def read_envelopes(
    lines: Sequence[bytes], rows: Sequence[int]
) -> tuple[list[EventEnvelope | None], list[bytes], list[Rejected]]:
    """Each line's envelope (None: for the per-event path), the event bytes the API would
    see, and the lines that are not even JSON objects. One C call for the batch; when any line
    fails it, one per chunk of :data:`_LINE_CHUNK` lines and, in a failing chunk, one per
    line (0.1 % bad lines used to send every line of every batch down the per-line path)."""
    events = list(lines)
    found = _envelopes(lines)
    if found is not None:
        return found, events, []
    envelopes: list[EventEnvelope | None] = []
    unreadable: list[Rejected] = []
    for start in range(0, len(lines), _LINE_CHUNK):
        chunk = lines[start : start + _LINE_CHUNK]
        found = _envelopes(chunk)
        if found is not None:
            envelopes.extend(found)
            continue
        for i, line in enumerate(chunk, start=start):
            envelope, event, problem = _one_line(line)
            if problem is not None:
                unreadable.append(Rejected(rows[i], "malformed_json", problem))
            events[i] = event
            envelopes.append(envelope)
    return envelopes, events, unreadable


def _envelopes(lines: Sequence[bytes]) -> list[EventEnvelope | None] | None:
    """The envelopes of all ``lines`` with one decoder call, or None when any line fails."""
    if any(len(line) > MAX_EVENT_BYTES for line in lines):
        return None
    try:
        found = _ENVELOPES.decode(b"[" + b",".join(lines) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return list(found) if len(found) == len(lines) else None  # "{},{}" is two values


def _one_line(line: bytes) -> tuple[EventEnvelope | None, bytes, str | None]:
    """One NDJSON line: its envelope when it decodes, the event bytes the API would see, and why
    it is unreadable (not JSON, not an object)."""
    if len(line) > MAX_EVENT_BYTES:
        return None, line, None  # the API's path rejects it as too large
    try:
        return ENVELOPE_DECODER.decode(line), line, None
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    try:
        row = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return None, line, f"line is not valid JSON: {exc}"
    if not isinstance(row, dict):
        return None, line, "line is not a JSON object"
    if isinstance(row.get("event_type"), dict):
        return None, line, None  # seed-shaped but invalid: the API's path says why
    event = row_to_event(with_json_bytes(line, row))
    if len(event) > MAX_EVENT_BYTES:
        return None, event, None
    try:
        return ENVELOPE_DECODER.decode(event), event, None
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None, event, None
