"""One error tree for the whole product.

Every error the API can return is an :class:`AvilaError` subclass that knows its HTTP status
and a stable machine ``code``. One handler (``avila.api.errors``) renders them all as::

    {"error": {"code": "<stable_snake_case>", "message": "<human text>", "details": [...]}}
"""

from __future__ import annotations

from typing import Any


class AvilaError(Exception):
    """Root of every error we raise on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: list[Any] | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigError(AvilaError):
    """A setting has an invalid value; raised at start, names the variable."""

    status = 500
    code = "invalid_configuration"


class BadRequest(AvilaError):
    status = 400
    code = "bad_request"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class Unauthorized(AvilaError):
    status = 401
    code = "unauthorized"


class Forbidden(AvilaError):
    status = 403
    code = "forbidden"


class NotFound(AvilaError):
    status = 404
    code = "not_found"


class PayloadTooLarge(AvilaError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AvilaError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(AvilaError):
    """Schema violation; ``details`` lists ``{"path", "message"}`` per bad field."""

    status = 422
    code = "validation_failed"


class RateLimited(AvilaError):
    status = 429
    code = "rate_limited"


class QueryTimeout(AvilaError):
    """A query ran past ``AVILA_QUERY_TIMEOUT`` and was cancelled; the server stays healthy."""

    status = 504
    code = "query_timeout"

    @classmethod
    def after(cls, seconds: float) -> QueryTimeout:
        """The error for a read cancelled at the ``seconds`` limit (either backend)."""
        return cls(
            f"the query ran longer than the {seconds:g} s limit and was cancelled; narrow the"
            " time range or filters, or raise AVILA_QUERY_TIMEOUT (seconds; 0 turns the limit"
            " off)",
            details=[{"limit_seconds": seconds}],
        )


class StorageUnavailable(AvilaError):
    status = 503
    code = "storage_unavailable"


class SharedStateUnavailable(AvilaError):
    """Redis (``AVILA_REDIS_URL``), which holds the state replicas share, did not answer."""

    status = 503
    code = "shared_state_unavailable"


class ShuttingDown(AvilaError):
    status = 503
    code = "shutting_down"


class IngestLogUnavailable(StorageUnavailable):
    """The ingest log could not be written (code ``disk_full`` for ENOSPC): nothing of the
    request was acknowledged; it recovers by itself when the cause goes away."""

    code = "ingest_log_unavailable"


class BacklogFull(StorageUnavailable):
    """The loader is too far behind the ingest log; sent with ``Retry-After``."""

    code = "ingest_backlog_full"


def all_error_classes() -> list[type[AvilaError]]:
    """Every concrete error class, for the error-shape test."""
    seen: list[type[AvilaError]] = []
    stack: list[type[AvilaError]] = [AvilaError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
