"""Structured JSON logs on stderr, one object per line, with secrets redacted.

Every line passes :func:`redact` before it is written: API keys in query strings
(``/ws?api_key=...``, logged by uvicorn for WebSockets), ``x-api-key`` / ``Authorization``
header values, ``writeKey`` fields, ``avila.key.*`` WebSocket subprotocols, and any key
configured in ``API_KEYS`` wherever it appears (messages, extras, tracebacks).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
_encode = msgspec.json.Encoder(enc_hook=str).encode


REDACTED = "[redacted]"
_SECRET_PATTERNS = (
    # ?api_key=K / &token=K in URLs and query strings
    re.compile(
        r"(?i)((?:[?&;]|\b)(?:api[_-]?key|apikey|access_token|token|write_?key|key)=)"
        r"[^&\s\"'#\\]+"
    ),
    # "writeKey": "K", "api_key": "K" in JSON text (also with escaped quotes)
    re.compile(
        r"(?i)((?:\\?\")(?:write_?key|api[_-]?key|apikey|x-api-key|authorization)(?:\\?\")\s*:\s*(?:\\?\"))"
        r"[^\"\\]+"
    ),
    # x-api-key: K, Authorization: Bearer K / Basic K (header dumps, reprs)
    re.compile(
        r"(?i)((?:x-api-key|authorization)['\"]?\s*[:=,]\s*['\"]?(?:bearer\s+|basic\s+)?)"
        r"[^\s'\",}\\]+"
    ),
    # WebSocket subprotocol carrying the key
    re.compile(r"(avila\.key\.)[^\s,'\"\\]+"),
)
_known_secrets: tuple[str, ...] = ()


def register_secrets(secrets: Iterable[str]) -> None:
    """Also redact these exact strings (the configured API keys) wherever they appear."""
    global _known_secrets
    _known_secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every API key it carries replaced by ``[redacted]``."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    register_secrets(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Per-request access lines would dominate the log at tens of thousands of requests/s;
    # request counts and latencies are in /metrics instead.
    logging.getLogger("uvicorn.access").setLevel(max(logging.WARNING, root.level))
